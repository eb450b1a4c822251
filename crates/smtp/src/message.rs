//! Checks and rewrites of a submitted message's top-level header block
//! (docs/specifications.md §2, submission rules). Pure.
//!
//! The header block ends at the first empty line (RFC 5322 §2.1); a field
//! is its first line plus any continuation lines starting with SP or HTAB
//! (RFC 5322 §2.2.3). Only the header block is ever changed: the body is
//! copied byte for byte.

use mail_parser::MessageParser;

/// Header fields removed before storing (they reveal the sender's network
/// or software).
const REMOVED: [&str; 4] = ["received", "x-originating-ip", "x-mailer", "user-agent"];

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

/// Splits a message into its header block (with the line ending of its last
/// field) and the rest (the empty line and the body).
fn split_header(message: &[u8]) -> (&[u8], &[u8]) {
    if message.starts_with(b"\r\n") {
        return (&[], message);
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => message.split_at(end + 2),
        None => (message, &[]),
    }
}

/// The fields of a header block, each with its continuation lines.
fn fields(header: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < header.len() {
        let end = header[pos..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header.len(), |e| pos + e + 2);
        let next = header.get(end);
        if !matches!(next, Some(b' ' | b'\t')) {
            fields.push(&header[start..end]);
            start = end;
        }
        pos = end;
    }
    fields
}

/// The field name, lower-cased, if the field has one.
fn field_name(field: &[u8]) -> Option<String> {
    let colon = field.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(&field[..colon]).ok()?.trim();
    Some(name.to_ascii_lowercase())
}

/// Checks that the message has exactly one `From:` holding exactly one
/// address, equal (ignoring case) to the envelope sender.
pub fn check_from(message: &[u8], mail_from: &str) -> Result<(), FromError> {
    let (header, _) = split_header(message);
    let from_fields = fields(header)
        .into_iter()
        .filter(|f| field_name(f).as_deref() == Some("from"))
        .count();
    if from_fields != 1 {
        return Err(FromError::Invalid);
    }
    let parsed = MessageParser::new()
        .parse_headers(header)
        .ok_or(FromError::Invalid)?;
    let from = parsed.from().ok_or(FromError::Invalid)?;
    let mut addresses = from.iter();
    let (Some(first), None) = (addresses.next(), addresses.next()) else {
        return Err(FromError::Invalid);
    };
    let address = first.address().ok_or(FromError::Invalid)?;
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
    let (header, rest) = split_header(message);
    let mut out = Vec::with_capacity(message.len());
    for field in fields(header) {
        match field_name(field).as_deref() {
            Some(name) if REMOVED.contains(&name) => {}
            Some("subject") => out.extend_from_slice(b"Subject: [...]\r\n"),
            _ => out.extend_from_slice(field),
        }
    }
    out.extend_from_slice(rest);
    out
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
