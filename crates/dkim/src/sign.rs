//! Signing outgoing mail.
//!
//! `c=relaxed/simple`. Each header of [`SIGNED_HEADERS`] is listed in `h=`
//! once per occurrence plus once more (once if absent): the extra entry
//! signs a header that is not there, so a copy added later anywhere in the
//! header block breaks the signature (over-signing, RFC 6376 §5.4.2 and
//! §8.15).

use mail_auth::common::crypto::{
    Algorithm as WireAlgorithm, DkimKey as KeyPair, Sha256, SigningKey,
};
use mail_auth::common::headers::{HeaderWriter as _, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

use crate::headers::field_names;
use crate::{DkimError, DkimKey, is_dns_name};

/// Headers signed and over-signed on every outgoing message.
pub const SIGNED_HEADERS: [&str; 10] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Reply-To",
    "In-Reply-To",
    "References",
    "Autocrypt",
    "Content-Type",
];

impl DkimKey {
    /// Returns `message` with a `DKIM-Signature:` header for `d=<domain>`
    /// prepended. The message must use CRLF line endings.
    pub fn sign(&self, message: &[u8], domain: &str) -> Result<Vec<u8>, DkimError> {
        if !is_dns_name(domain) {
            return Err(DkimError::InvalidDomain(domain.to_owned()));
        }
        let headers = header_list(message)?;
        let signature = DkimSigner::from_key(Borrowed(&self.pair))
            .domain(domain)
            .selector(&self.selector)
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Simple)
            .sign(message)
            .map_err(|err| DkimError::Sign(err.to_string()))?;
        let header = signature.to_header();
        let mut signed = Vec::with_capacity(header.len() + message.len());
        signed.extend_from_slice(header.as_bytes());
        signed.extend_from_slice(message);
        Ok(signed)
    }
}

/// The names to give the signer: twice for a header present in the message,
/// once for an absent one. The signer lists every present occurrence and
/// appends each name whose entry matched nothing, which makes the second
/// entry of a present header the over-signing entry.
fn header_list(message: &[u8]) -> Result<Vec<&'static str>, DkimError> {
    let mut present = [false; SIGNED_HEADERS.len()];
    for name in field_names(message) {
        if let Some(i) = SIGNED_HEADERS
            .iter()
            .position(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        {
            present[i] = true;
        }
    }
    if !present[0] {
        return Err(DkimError::MissingFrom); // RFC 6376 §5.4: From MUST be signed
    }
    let mut list = Vec::with_capacity(2 * SIGNED_HEADERS.len());
    for (name, present) in SIGNED_HEADERS.iter().zip(present) {
        list.push(*name);
        if present {
            list.push(*name);
        }
    }
    Ok(list)
}

/// Lends the key pair to the signer, which takes its key by value.
struct Borrowed<'a>(&'a KeyPair);

impl SigningKey for Borrowed<'_> {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> WireAlgorithm {
        self.0.algorithm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::{ed25519_key, rsa_key};

    const MESSAGE: &[u8] = b"From: alice@example.org\r\n\
        To: bob@example.net\r\n\
        Subject: [...]\r\n\
        Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\
        Content-Type: text/plain\r\n\
        \r\n\
        Hello\r\n";

    fn signature_header(signed: &[u8]) -> String {
        let text = String::from_utf8(signed.to_vec()).unwrap();
        let end = text.find("\r\nFrom:").unwrap();
        text[..end].replace("\r\n\t", " ")
    }

    fn h_tag(header: &str) -> Vec<String> {
        let start = header.find(" h=").unwrap() + 3;
        let end = start + header[start..].find(';').unwrap();
        header[start..end]
            .split(':')
            .map(|name| name.trim().to_ascii_lowercase())
            .collect()
    }

    #[test]
    fn prepends_a_relaxed_simple_signature_for_the_domain_and_selector() {
        let signed = ed25519_key("opendkim")
            .sign(MESSAGE, "example.org")
            .unwrap();
        assert!(signed.ends_with(MESSAGE));
        let header = signature_header(&signed);
        assert!(header.starts_with("DKIM-Signature: v=1; a=ed25519-sha256;"));
        assert!(header.contains(" s=opendkim;"));
        assert!(header.contains(" d=example.org;"));
        assert!(header.contains(" c=relaxed/simple;"));
    }

    #[test]
    fn lists_present_headers_one_extra_time_and_absent_ones_once() {
        let signed = rsa_key("opendkim").sign(MESSAGE, "example.org").unwrap();
        let h = h_tag(&signature_header(&signed));
        let count = |name: &str| h.iter().filter(|n| *n == name).count();
        for present in ["from", "to", "subject", "date", "content-type"] {
            assert_eq!(count(present), 2, "{present} in {h:?}");
        }
        for absent in ["cc", "reply-to", "in-reply-to", "references", "autocrypt"] {
            assert_eq!(count(absent), 1, "{absent} in {h:?}");
        }
    }

    #[test]
    fn lists_a_repeated_header_once_per_copy_plus_one() {
        let message = b"From: a@example.org\r\nTo: b@example.net\r\nTo: c@example.net\r\n\r\nx\r\n";
        let signed = ed25519_key("s").sign(message, "example.org").unwrap();
        let h = h_tag(&signature_header(&signed));
        assert_eq!(h.iter().filter(|n| *n == "to").count(), 3, "{h:?}");
    }

    #[test]
    fn refuses_messages_without_from() {
        let err = ed25519_key("s")
            .sign(b"To: b@example.net\r\n\r\nx\r\n", "example.org")
            .unwrap_err();
        assert!(matches!(err, DkimError::MissingFrom));
    }

    #[test]
    fn refuses_ip_literals_and_tag_injection_as_signing_domain() {
        let key = ed25519_key("s");
        for domain in ["[1.2.3.4]", "example.org; d=evil.example", ""] {
            assert!(matches!(
                key.sign(MESSAGE, domain),
                Err(DkimError::InvalidDomain(_))
            ));
        }
    }
}
