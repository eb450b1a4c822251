//! The inbound origin check: at least one DKIM signature that verifies and
//! whose `d=` equals the From domain (strict alignment, docs/specifications.md §2).
//!
//! Flow: count the `DKIM-Signature` headers (none: [`OriginError::NoSignature`]);
//! parse them; fetch the key record of each aligned signature through
//! [`TxtLookup`]; hand the message and the fetched records to mail-auth,
//! whose resolver is never asked (every name it asks for is answered from
//! the fetched records, unknown names as NXDOMAIN); accept if an aligned
//! signature passes. A temporary DNS failure on an aligned key with no
//! passing signature is a 4xx, so the sender retries.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::common::resolver::ToFqdn as _;
use mail_auth::common::verify::{DomainKey, VerifySignature as _};
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{
    AuthenticatedMessage, DkimResult, Error as AuthError, MessageAuthenticator, Parameters,
    ResolverCache, Txt,
};

use crate::headers::field_names;
use crate::lookup::{LookupError, TxtLookup};

/// More signatures than this is abuse (each costs a hash and a key check).
const MAX_SIGNATURES: usize = 16;

/// Most distinct key records fetched for one message.
const MAX_KEY_LOOKUPS: usize = 4;

/// Why the origin check refused a message; each maps to one SMTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginError {
    /// The message carries no `DKIM-Signature` header.
    NoSignature,
    /// Signatures are present but none verifies with `d=` the From domain.
    NoValidSignature,
    /// A key record could not be fetched (DNS failure): retry later.
    TempFail,
}

impl OriginError {
    /// Reply code and the rest of the reply line (enhanced code and text).
    pub fn reply(self) -> (u16, &'static str) {
        match self {
            OriginError::NoSignature => (554, "5.7.1 No DKIM signature found"),
            OriginError::NoValidSignature => (554, "5.7.1 No valid DKIM signature found"),
            // RFC 3463 §3.5: X.4.3 directory (here: DNS) server failure.
            OriginError::TempFail => (451, "4.4.3 DKIM key lookup failed, try again later"),
        }
    }

    /// The SMTP reply code.
    pub fn code(self) -> u16 {
        self.reply().0
    }

    /// The enhanced status code (RFC 3463), e.g. `5.7.1`.
    pub fn enhanced(self) -> &'static str {
        self.reply().1.split_once(' ').map_or("", |(code, _)| code)
    }

    /// The text after the enhanced status code.
    pub fn text(self) -> &'static str {
        self.reply().1.split_once(' ').map_or("", |(_, text)| text)
    }

    /// True for 4xx: the sender should retry.
    pub fn is_temporary(self) -> bool {
        self.code() < 500
    }
}

/// The full reply line without CRLF, e.g. `554 5.7.1 No DKIM signature found`.
impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, rest) = self.reply();
        write!(f, "{code} {rest}")
    }
}

impl std::error::Error for OriginError {}

/// The DKIM checker of a relay: make one and keep it. Making one builds
/// mail-auth's resolver, which loads the system's root certificates (about
/// 8 ms, measured by the `dkim_verify` fuzz target when it was made per
/// message); that resolver is never asked (module doc).
pub struct Verifier {
    /// `None` if mail-auth could not build its resolver: every check then
    /// fails temporarily, so that peers retry.
    authenticator: Option<MessageAuthenticator>,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    pub fn new() -> Self {
        let authenticator = MessageAuthenticator::new(
            ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
            ResolverOpts::default(),
        )
        .ok();
        Self { authenticator }
    }

    /// Checks that `message` carries a valid DKIM signature of
    /// `from_domain` (the domain of its From address). An IP literal has no
    /// DNS, so it never passes here: its origin is the connecting address
    /// (`chatmail-inbound`).
    pub async fn verify<R: TxtLookup + ?Sized>(
        &self,
        message: &[u8],
        from_domain: &str,
        resolver: &R,
    ) -> Result<(), OriginError> {
        let authenticator = self.authenticator.as_ref().ok_or(OriginError::TempFail)?;
        verify_with(authenticator, message, from_domain, resolver).await
    }
}

async fn verify_with<R: TxtLookup + ?Sized>(
    authenticator: &MessageAuthenticator,
    message: &[u8],
    from_domain: &str,
    resolver: &R,
) -> Result<(), OriginError> {
    let signatures = field_names(message)
        .filter(|name| name.eq_ignore_ascii_case(b"DKIM-Signature"))
        .count();
    if signatures == 0 {
        return Err(OriginError::NoSignature);
    }
    if signatures > MAX_SIGNATURES {
        return Err(OriginError::NoValidSignature);
    }
    let parsed = AuthenticatedMessage::parse(message).ok_or(OriginError::NoValidSignature)?;
    let keys = fetch_keys(&parsed, from_domain, resolver).await;
    if keys.records.is_empty() {
        return Err(OriginError::NoValidSignature); // no aligned signature
    }
    let outputs = authenticator
        .verify_dkim(Parameters::new(&parsed).with_txt_cache(&keys))
        .await;
    let passed = outputs.iter().any(|output| {
        matches!(output.result(), DkimResult::Pass)
            && output
                .signature()
                .is_some_and(|s| aligned(&s.d, from_domain))
    });
    match (passed, keys.temporary_failure) {
        (true, _) => Ok(()),
        (false, true) => Err(OriginError::TempFail),
        (false, false) => Err(OriginError::NoValidSignature),
    }
}

/// Fetches the key records of the aligned signatures.
async fn fetch_keys<R: TxtLookup + ?Sized>(
    parsed: &AuthenticatedMessage<'_>,
    from_domain: &str,
    resolver: &R,
) -> FetchedKeys {
    let mut keys = FetchedKeys::default();
    let names = parsed
        .dkim_headers
        .iter()
        .filter(|header| aligned(&header.header.d, from_domain))
        // The same name form mail-auth asks its cache for.
        .map(|header| header.header.domain_key().to_fqdn().into_owned());
    for name in names {
        if keys.records.len() >= MAX_KEY_LOOKUPS {
            break;
        }
        if keys.records.contains_key(name.as_str()) {
            continue;
        }
        let txt = match resolver.txt(&name).await {
            Ok(records) => parse_key(records),
            Err(LookupError::NotFound) => not_found(),
            Err(LookupError::Temporary(_)) => {
                keys.temporary_failure = true;
                Txt::Error(AuthError::Dns(mail_auth::DnsError::Resolver(
                    "temporary failure".to_owned(),
                )))
            }
        };
        keys.records.insert(name.into_boxed_str(), txt);
    }
    keys
}

/// The first record that parses as a key record (RFC 6376 §3.6.2.2).
fn parse_key(records: Vec<Vec<u8>>) -> Txt {
    let mut error = AuthError::Dns(mail_auth::DnsError::InvalidRecordType);
    for record in records {
        match DomainKey::parse(&record) {
            Ok(key) => return Txt::from(key),
            Err(err) => error = err,
        }
    }
    Txt::Error(error)
}

fn not_found() -> Txt {
    Txt::Error(AuthError::Dns(mail_auth::DnsError::RecordNotFound(
        ResponseCode::NXDomain,
    )))
}

/// Strict alignment: `d=` equal to the From domain, ignoring case
/// (RFC 7489 §3.1.1 strict mode; domains compare case-insensitively).
fn aligned(d: &str, from_domain: &str) -> bool {
    d.trim_end_matches('.')
        .eq_ignore_ascii_case(from_domain.trim_end_matches('.'))
}

/// The fetched key records, served to mail-auth as its TXT cache. Any
/// name not fetched answers NXDOMAIN, so mail-auth never queries DNS.
#[derive(Default)]
struct FetchedKeys {
    /// Lower-case FQDN of the key record -> parsed record or error.
    records: HashMap<Box<str>, Txt>,
    /// Some aligned key could not be fetched for a temporary reason.
    temporary_failure: bool,
}

impl ResolverCache<Box<str>, Txt> for FetchedKeys {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        Some(self.records.get(name).cloned().unwrap_or_else(not_found))
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: Txt, _: Instant) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::{ed25519_key, rsa_key};
    use crate::{DkimKey, StaticTxt};

    const MESSAGE: &[u8] = b"From: alice@example.org\r\n\
        To: bob@example.net\r\n\
        Subject: [...]\r\n\
        Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        Hello\r\n";

    fn published(key: &DkimKey, domains: &[&str]) -> StaticTxt {
        let mut dns = StaticTxt::new();
        for domain in domains {
            dns.insert_key(key, domain);
        }
        dns
    }

    fn check(message: &[u8], from_domain: &str, dns: &StaticTxt) -> Result<(), OriginError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(Verifier::new().verify(message, from_domain, dns))
    }

    /// Inserts `line` right after the DKIM-Signature header (top of the
    /// original headers) or right before the blank line.
    fn add_header(signed: &[u8], line: &str, at_top: bool) -> Vec<u8> {
        let text = String::from_utf8(signed.to_vec()).unwrap();
        let at = if at_top {
            text.find("\r\nFrom:").unwrap() + 2
        } else {
            text.find("\r\n\r\n").unwrap() + 2
        };
        format!("{}{line}\r\n{}", &text[..at], &text[at..]).into_bytes()
    }

    #[test]
    fn rsa_signature_round_trips() {
        let key = rsa_key("opendkim");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        assert_eq!(
            check(&signed, "example.org", &published(&key, &["example.org"])),
            Ok(())
        );
    }

    #[test]
    fn ed25519_signature_round_trips() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        assert_eq!(
            check(&signed, "example.org", &published(&key, &["example.org"])),
            Ok(())
        );
    }

    #[test]
    fn from_domain_compares_case_insensitively() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "Example.Org").unwrap();
        assert_eq!(
            check(&signed, "EXAMPLE.org", &published(&key, &["example.org"])),
            Ok(())
        );
    }

    #[test]
    fn rejects_a_modified_body() {
        let key = rsa_key("opendkim");
        let mut signed = key.sign(MESSAGE, "example.org").unwrap();
        let last = signed.len() - 3;
        signed[last] = b'O';
        let dns = published(&key, &["example.org"]);
        assert_eq!(
            check(&signed, "example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn rejects_a_modified_from() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        let text = String::from_utf8(signed)
            .unwrap()
            .replace("alice@", "mallory@");
        let dns = published(&key, &["example.org"]);
        assert_eq!(
            check(text.as_bytes(), "example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn rejects_a_valid_signature_of_another_domain() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "other.example").unwrap();
        let dns = published(&key, &["example.org", "other.example"]);
        assert_eq!(check(&signed, "other.example", &dns), Ok(()));
        assert_eq!(
            check(&signed, "example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn rejects_a_parent_domain_signature_under_strict_alignment() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        let dns = published(&key, &["example.org"]);
        assert_eq!(
            check(&signed, "sub.example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn accepts_when_one_of_several_signatures_is_aligned() {
        let ours = ed25519_key("ed");
        let theirs = rsa_key("opendkim");
        let once = theirs.sign(MESSAGE, "other.example").unwrap();
        let twice = ours.sign(&once, "example.org").unwrap();
        let dns = published(&ours, &["example.org"]);
        assert_eq!(check(&twice, "example.org", &dns), Ok(()));
    }

    #[test]
    fn reports_no_signature_when_unsigned() {
        let dns = StaticTxt::new();
        assert_eq!(
            check(MESSAGE, "example.org", &dns),
            Err(OriginError::NoSignature)
        );
    }

    #[test]
    fn rejects_when_the_key_is_not_published() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        let dns = published(&ed25519_key("ed"), &["example.org"]); // another key
        assert_eq!(
            check(&signed, "example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
        assert_eq!(
            check(&signed, "example.org", &StaticTxt::new()),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn rejects_a_malformed_signature_header() {
        let message = [b"DKIM-Signature: v=1; garbage\r\n".as_slice(), MESSAGE].concat();
        let dns = StaticTxt::new();
        assert_eq!(
            check(&message, "example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn rejects_too_many_signatures_without_lookups() {
        let key = ed25519_key("ed");
        let mut message = MESSAGE.to_vec();
        for _ in 0..=MAX_SIGNATURES {
            message = key.sign(&message, "example.org").unwrap();
        }
        let dns = published(&key, &["example.org"]);
        assert_eq!(
            check(&message, "example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn over_signing_detects_an_added_subject_anywhere() {
        let key = rsa_key("opendkim");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        let dns = published(&key, &["example.org"]);
        for at_top in [true, false] {
            let forged = add_header(&signed, "Subject: forged", at_top);
            assert_eq!(
                check(&forged, "example.org", &dns),
                Err(OriginError::NoValidSignature),
                "Subject added at_top={at_top}"
            );
        }
    }

    #[test]
    fn over_signing_detects_an_added_absent_header() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        let dns = published(&key, &["example.org"]);
        let forged = add_header(&signed, "Cc: eve@example.com", true);
        assert_eq!(
            check(&forged, "example.org", &dns),
            Err(OriginError::NoValidSignature)
        );
    }

    #[test]
    fn unsigned_extra_headers_do_not_break_the_signature() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        let dns = published(&key, &["example.org"]);
        let received = add_header(&signed, "X-Extra: 1", true);
        assert_eq!(check(&received, "example.org", &dns), Ok(()));
    }

    #[test]
    fn temporary_dns_failure_asks_the_sender_to_retry() {
        let key = ed25519_key("ed");
        let signed = key.sign(MESSAGE, "example.org").unwrap();
        let mut dns = StaticTxt::new();
        dns.insert_failure(&key.record_name("example.org"));
        let err = check(&signed, "example.org", &dns).unwrap_err();
        assert_eq!(err, OriginError::TempFail);
        assert!(err.is_temporary());
        assert_eq!(err.code(), 451);
    }

    #[test]
    fn ip_literals_have_no_signature_to_pass() {
        let dns = StaticTxt::new();
        assert_eq!(
            check(MESSAGE, "[1.2.3.4]", &dns),
            Err(OriginError::NoSignature)
        );
        assert_eq!(
            check(MESSAGE, "[not-an-ip]", &dns),
            Err(OriginError::NoSignature)
        );
        assert_eq!(
            check(MESSAGE, "1.2.3.4", &dns),
            Err(OriginError::NoSignature)
        );
    }

    #[test]
    fn wire_texts_are_exact() {
        assert_eq!(
            OriginError::NoSignature.to_string(),
            "554 5.7.1 No DKIM signature found"
        );
        assert_eq!(
            OriginError::NoValidSignature.to_string(),
            "554 5.7.1 No valid DKIM signature found"
        );
        assert_eq!(
            OriginError::TempFail.to_string(),
            "451 4.4.3 DKIM key lookup failed, try again later"
        );
        assert_eq!(OriginError::NoValidSignature.enhanced(), "5.7.1");
        assert_eq!(
            OriginError::NoValidSignature.text(),
            "No valid DKIM signature found"
        );
        assert!(!OriginError::NoSignature.is_temporary());
    }

    #[test]
    fn verification_future_is_send() {
        fn assert_send<T: Send>(_: T) {}
        let (dns, verifier) = (StaticTxt::new(), Verifier::new());
        assert_send(verifier.verify(MESSAGE, "example.org", &dns));
    }
}
