//! Checks and rewrites of a submitted message's top-level header block
//! (docs/specifications.md §2, submission rules). Pure.
//!
//! Header parsing (the block up to the first empty line, RFC 5322 §2.1,
//! and fields with continuation lines, §2.2.3) is
//! [`chatmail_gate::headers`]. Only the header block is ever changed: the
//! body is copied byte for byte.

use chatmail_gate::headers;

/// Header fields removed before storing (they reveal the sender's network
/// or software).
const REMOVED: [&[u8]; 4] = [b"received", b"x-originating-ip", b"x-mailer", b"user-agent"];

/// Why the `From:` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromError {
    /// Missing, repeated or unparsable `From:`.
    #[error("Invalid FROM header")]
    Invalid,
    /// A single address that is not the envelope sender.
    #[error("Invalid FROM <{from}> for <{mail_from}>")]
    Mismatch { from: String, mail_from: String },
}

/// Checks that the message has exactly one `From:` holding exactly one
/// address, equal (ignoring case) to the envelope sender.
pub fn check_from(message: &[u8], mail_from: &str) -> Result<(), FromError> {
    let address = headers::single_from(message).ok_or(FromError::Invalid)?;
    if address.eq_ignore_ascii_case(mail_from) {
        Ok(())
    } else {
        Err(FromError::Mismatch {
            from: address.chars().take(256).collect(),
            mail_from: mail_from.to_owned(),
        })
    }
}

/// Removes tracking headers and blanks the subject; the body is untouched.
pub fn clean_headers(message: &[u8]) -> Vec<u8> {
    headers::rewrite(message, |field| {
        if REMOVED.iter().any(|name| headers::is_named(field, name)) {
            None
        } else if headers::is_named(field, b"subject") {
            Some(b"Subject: [...]\r\n")
        } else {
            Some(field)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_matching_from_in_any_case() {
        let msg = b"From: Alice <Alice0001@Example.org>\r\nTo: b@x\r\n\r\nhi\r\n";
        assert_eq!(check_from(msg, "alice0001@example.org"), Ok(()));
        let literal = b"From: <bob000001@[127.0.0.1]>\r\n\r\n";
        assert_eq!(check_from(literal, "bob000001@[127.0.0.1]"), Ok(()));
    }

    #[test]
    fn reports_a_foreign_from_address() {
        let msg = b"From: mallory@evil.example\r\n\r\nhi\r\n";
        assert_eq!(
            check_from(msg, "alice0001@example.org")
                .unwrap_err()
                .to_string(),
            "Invalid FROM <mallory@evil.example> for <alice0001@example.org>"
        );
    }

    #[test]
    fn refuses_missing_repeated_or_unparsable_from() {
        let a = "a@x.org";
        assert_eq!(
            check_from(b"To: a@x.org\r\n\r\n", a),
            Err(FromError::Invalid)
        );
        let twice = b"From: a@x.org\r\nFrom: b@x.org\r\n\r\n";
        assert_eq!(check_from(twice, a), Err(FromError::Invalid));
        assert_eq!(
            check_from(b"From: not an address\r\n\r\n", a),
            Err(FromError::Invalid)
        );
        let two = b"From: a@x.org, b@x.org\r\n\r\n";
        assert_eq!(check_from(two, a), Err(FromError::Invalid));
        assert_eq!(check_from(b"", a), Err(FromError::Invalid));
    }

    #[test]
    fn ignores_from_lines_in_the_body() {
        let msg = b"Subject: x\r\n\r\nFrom: a@x.org\r\n";
        assert_eq!(check_from(msg, "a@x.org"), Err(FromError::Invalid));
    }

    #[test]
    fn removes_tracking_headers_with_continuations() {
        let msg = b"Received: from a\r\n\tby b\r\nFrom: a@x.org\r\nX-Mailer: m\r\n \
                    more\r\nUser-Agent: u\r\nx-originating-ip: 1.2.3.4\r\nSubject: secret\r\n \
                    folded\r\nTo: b@x.org\r\n\r\nSubject: body stays\r\nReceived: too\r\n";
        let clean = clean_headers(msg);
        assert_eq!(
            String::from_utf8(clean).unwrap(),
            "From: a@x.org\r\nSubject: [...]\r\nTo: b@x.org\r\n\r\nSubject: body stays\r\nReceived: too\r\n"
        );
    }

    #[test]
    fn header_only_messages_are_cleaned_too() {
        assert_eq!(
            clean_headers(b"Subject: s\r\nTo: b@x.org\r\n"),
            b"Subject: [...]\r\nTo: b@x.org\r\n"
        );
        assert_eq!(clean_headers(b"\r\nbody"), b"\r\nbody");
    }
}
