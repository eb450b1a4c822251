//! Address rules (docs/specifications.md §1), pure and without I/O.

use chatmail_config::MailDomain;
use chatmail_config::schema::RegistrationConfig;

/// Longest address looked at at all (RFC 5321 §4.5.3.1.3 path limit).
pub(crate) const MAX_ADDRESS_LEN: usize = 254;
/// Longest local part of any address (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_LEN: usize = 64;

/// An address split at its single `@`, lower-cased, with our domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalAddress {
    /// The part before `@`.
    pub(crate) local: String,
    /// `local@domain` with the domain in its canonical spelling.
    pub(crate) full: String,
}

/// Lower-cases `address` and returns it if it has exactly one `@`, a
/// plausible local part and our domain.
pub(crate) fn parse_local(domain: &MailDomain, address: &str) -> Option<LocalAddress> {
    if address.len() > MAX_ADDRESS_LEN {
        return None;
    }
    let address = address.to_lowercase();
    let (local, domain_part) = address.split_once('@')?;
    let plausible = !local.is_empty()
        && local.len() <= MAX_LOCAL_LEN
        && !domain_part.contains('@')
        && local.chars().all(|c| c.is_ascii_graphic());
    if !plausible || !domain.matches(domain_part) {
        return None;
    }
    Some(LocalAddress {
        local: local.to_owned(),
        full: format!("{local}@{}", domain.address_part()),
    })
}

/// Whether a local part may be registered: length within the configured
/// bounds and only `[a-z0-9._-]` (docs/specifications.md §1).
pub(crate) fn may_register(local: &str, rules: &RegistrationConfig) -> bool {
    let length_ok = (rules.username_min_length..=rules.username_max_length).contains(&local.len());
    let chars_ok = local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    length_ok && chars_ok
}

/// Whether a password is long enough for a new account.
pub(crate) fn password_ok(password: &str, rules: &RegistrationConfig) -> bool {
    password.chars().count() >= rules.password_min_length
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> MailDomain {
        MailDomain::parse("example.org").unwrap()
    }

    #[test]
    fn addresses_are_lower_cased_and_need_exactly_one_at() {
        let a = parse_local(&domain(), "AbcDefGhi@Example.ORG").unwrap();
        assert_eq!(a.full, "abcdefghi@example.org");
        assert_eq!(a.local, "abcdefghi");
        assert!(parse_local(&domain(), "a@b@example.org").is_none());
        assert!(parse_local(&domain(), "abc").is_none());
        assert!(parse_local(&domain(), "@example.org").is_none());
    }

    #[test]
    fn foreign_domains_are_not_local() {
        assert!(parse_local(&domain(), "abcdefghi@example.com").is_none());
        assert!(parse_local(&domain(), "abcdefghi@sub.example.org").is_none());
    }

    #[test]
    fn ip_domains_keep_their_brackets() {
        let ip = MailDomain::parse("10.0.0.1").unwrap();
        assert_eq!(
            parse_local(&ip, "xyz@[10.0.0.1]").unwrap().full,
            "xyz@[10.0.0.1]"
        );
        assert!(parse_local(&ip, "xyz@10.0.0.1").is_none());
    }

    #[test]
    fn registration_checks_length_and_characters() {
        let rules = RegistrationConfig::default();
        assert!(may_register("abc.de-f_", &rules));
        assert!(!may_register("abcdefgh", &rules));
        assert!(!may_register("abcdefghij", &rules));
        assert!(!may_register("abcdefgh+", &rules));
        assert!(!may_register("abcdefgh\u{e9}", &rules));
        assert!(password_ok("123456789", &rules));
        assert!(!password_ok("12345678", &rules));
    }
}
