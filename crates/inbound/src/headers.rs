//! The top-level header block of an inbound message: the From address and
//! the removal of trace and authentication headers. Pure.
//!
//! Header parsing (the block up to the first empty line, RFC 5322 §2.1,
//! and fields with continuation lines, §2.2.3) is
//! [`chatmail_gate::headers`]. Only the header block is ever changed: the
//! body is copied byte for byte.

use std::borrow::Cow;

use chatmail_gate::headers;

/// Fields removed before storing: they describe the sender's relay and its
/// checks, not the message (docs/specifications.md §2, inbound rules).
const STRIPPED: [&[u8]; 3] = [b"dkim-signature", b"authentication-results", b"received"];

/// Longest address taken from a From header (RFC 5321 §4.5.3.1.3).
const MAX_ADDRESS_LEN: usize = 254;

/// The single address of the single `From:` field, if there is exactly one.
pub fn from_address(message: &[u8]) -> Option<String> {
    let address = headers::single_from(message)?;
    let valid = address.len() <= MAX_ADDRESS_LEN && domain_of(&address).is_some();
    valid.then_some(address)
}

/// The domain part of an address (after the last `@`), if non-empty.
pub fn domain_of(address: &str) -> Option<&str> {
    let (local, domain) = address.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some(domain)
}

/// The message without `DKIM-Signature`, `Authentication-Results` and
/// `Received` fields in its top-level header block.
pub fn strip_trace_headers(message: &[u8]) -> Vec<u8> {
    headers::remove_fields(message, &STRIPPED)
}

/// Converts bare LF and bare CR into CRLF, the SMTP wire form (RFC 5321
/// §2.3.8), for bodies that did not come through SMTP DATA.
pub fn normalize_line_endings(message: &[u8]) -> Cow<'_, [u8]> {
    let bare = message.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || message[i - 1] != b'\r',
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        _ => false,
    });
    if !bare {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    let mut i = 0;
    while i < message.len() {
        match message[i] {
            b'\r' if message.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            byte => out.push(byte),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_trace_and_authentication_fields_with_continuations() {
        let message = b"DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n\
            Received: from a\r\n by b\r\nFrom: <a@x.org>\r\n\
            Authentication-Results: mx; dkim=pass\r\nreceived : late\r\n\
            Subject: [...]\r\n\r\nReceived: in the body\r\nDKIM-Signature: too\r\n";
        assert_eq!(
            String::from_utf8(strip_trace_headers(message)).unwrap(),
            "From: <a@x.org>\r\nSubject: [...]\r\n\r\nReceived: in the body\r\nDKIM-Signature: too\r\n"
        );
    }

    #[test]
    fn keeps_fields_that_merely_start_alike() {
        let message = b"Received-SPF: pass\r\nX-Received: x\r\n\r\nbody";
        assert_eq!(strip_trace_headers(message), message.to_vec());
    }

    #[test]
    fn strips_header_only_messages_and_leaves_bodies_alone() {
        assert_eq!(
            strip_trace_headers(b"Received: a\r\nTo: b\r\n"),
            b"To: b\r\n"
        );
        assert_eq!(
            strip_trace_headers(b"\r\nReceived: x\r\n"),
            b"\r\nReceived: x\r\n"
        );
        assert_eq!(strip_trace_headers(b""), b"");
    }

    #[test]
    fn finds_the_single_from_address() {
        let message = b"To: b@y.org\r\nFrom: Alice <Alice@X.org>\r\n\r\nFrom: c@z.org\r\n";
        assert_eq!(from_address(message).as_deref(), Some("Alice@X.org"));
        let literal = b"From: <mailer-daemon@[127.0.0.1]>\r\n\r\n";
        assert_eq!(
            from_address(literal).as_deref(),
            Some("mailer-daemon@[127.0.0.1]")
        );
    }

    #[test]
    fn refuses_missing_repeated_grouped_or_domainless_from() {
        assert_eq!(from_address(b"To: b@y.org\r\n\r\n"), None);
        assert_eq!(
            from_address(b"From: a@x.org\r\nFrom: b@x.org\r\n\r\n"),
            None
        );
        assert_eq!(from_address(b"From: a@x.org, b@x.org\r\n\r\n"), None);
        assert_eq!(from_address(b"From: nobody\r\n\r\n"), None);
        assert_eq!(from_address(b""), None);
    }

    #[test]
    fn domain_needs_both_parts() {
        assert_eq!(domain_of("a@x.org"), Some("x.org"));
        assert_eq!(domain_of("a@b@[1.2.3.4]"), Some("[1.2.3.4]"));
        assert_eq!(domain_of("@x.org"), None);
        assert_eq!(domain_of("a@"), None);
        assert_eq!(domain_of("a"), None);
    }

    #[test]
    fn normalizes_bare_line_endings_only_when_needed() {
        assert!(matches!(
            normalize_line_endings(b"a\r\nb\r\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            normalize_line_endings(b"\na\nb\rc\r\n").as_ref(),
            b"\r\na\r\nb\r\nc\r\n"
        );
    }
}
