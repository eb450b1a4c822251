//! The relay's mail domain: a DNS name or an IPv4 literal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A `mail_domain` (or static route key) that is neither a DNS name nor an
/// IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is neither a domain name nor an IPv4 address")]
pub struct MailDomainError {
    /// The text as given, without surrounding blanks.
    pub text: String,
}

/// The domain part of every local address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailDomain {
    /// A DNS name, stored in lower case.
    Name(String),
    /// An IPv4 address; addresses read `user@[a.b.c.d]` (RFC 5321 §4.1.3).
    Ip(Ipv4Addr),
}

impl MailDomain {
    /// Parses the `mail_domain` setting.
    pub fn parse(text: &str) -> Result<Self, MailDomainError> {
        let text = text.trim();
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<Ipv4Addr>() {
            return Ok(Self::Ip(ip));
        }
        let name = text.to_ascii_lowercase();
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(MailDomainError {
                text: text.to_owned(),
            });
        }
        Ok(Self::Name(name))
    }

    /// The domain as it appears after the `@` of an address.
    pub fn address_part(&self) -> String {
        match self {
            Self::Name(name) => name.clone(),
            Self::Ip(ip) => format!("[{ip}]"),
        }
    }

    /// The host name clients connect to (no brackets).
    pub fn host(&self) -> String {
        match self {
            Self::Name(name) => name.clone(),
            Self::Ip(ip) => ip.to_string(),
        }
    }

    /// Whether the relay uses a generated certificate by default: IP-only
    /// relays and `_`-prefixed test domains (Delta Chat skips CA checks for
    /// those, docs/specifications.md §1).
    pub fn wants_self_signed(&self) -> bool {
        match self {
            Self::Name(name) => name.starts_with('_'),
            Self::Ip(_) => true,
        }
    }

    /// Whether the domain part of an address (after `@`) is this domain.
    pub fn matches(&self, domain_part: &str) -> bool {
        match self {
            Self::Name(name) => domain_part.eq_ignore_ascii_case(name),
            Self::Ip(ip) => domain_part
                .strip_prefix('[')
                .and_then(|d| d.strip_suffix(']'))
                .and_then(|d| d.parse::<Ipv4Addr>().ok())
                .is_some_and(|d| d == *ip),
        }
    }
}

/// The address of an IP-literal domain part, `[1.2.3.4]` or
/// `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3); `None` for anything else.
pub fn ip_literal(domain_part: &str) -> Option<IpAddr> {
    let inner = domain_part.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
        _ => inner.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_parse_v4_and_tagged_v6() {
        assert_eq!(ip_literal("[1.2.3.4]"), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(ip_literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(
            ip_literal("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(ip_literal("[::1]"), None);
        assert_eq!(ip_literal("1.2.3.4"), None);
        assert_eq!(ip_literal("[not-an-ip]"), None);
        assert_eq!(ip_literal("example.org"), None);
    }

    #[test]
    fn ip_domain_uses_brackets_in_addresses() {
        let d = MailDomain::parse("127.0.0.1").unwrap();
        assert_eq!(d.address_part(), "[127.0.0.1]");
        assert!(d.matches("[127.0.0.1]"));
        assert!(!d.matches("127.0.0.1"));
        assert!(d.wants_self_signed());
    }

    #[test]
    fn names_compare_case_insensitively() {
        let d = MailDomain::parse("Chat.Example.ORG").unwrap();
        assert!(d.matches("chat.example.org"));
        assert!(!d.wants_self_signed());
        assert!(MailDomain::parse("_x.test").unwrap().wants_self_signed());
        assert_eq!(
            MailDomain::parse(" bad domain ").map_err(|e| e.to_string()),
            Err("`bad domain` is neither a domain name nor an IPv4 address".into())
        );
    }
}
