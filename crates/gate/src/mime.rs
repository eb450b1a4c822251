//! MIME structure of an encrypted message (docs/specifications.md §2 rules 1-4,
//! RFC 3156 §4), read from a message parsed by `mail-parser`.
//!
//! Flow: top-level `multipart/encrypted` -> exactly two sub-parts, neither
//! multipart -> part 1 `application/pgp-encrypted` with body `Version: 1` ->
//! part 2 `application/octet-stream`, whose decoded body is returned for the
//! armor check.
//!
//! Invariant: part lookups go through `get`, never indexing.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

/// Why the MIME structure is not that of an encrypted message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("top-level Content-Type is not multipart/encrypted")]
    NotEncrypted,
    #[error("multipart/encrypted has {0} sub-parts, not 2")]
    PartCount(usize),
    #[error("sub-part {0} is multipart")]
    NestedMultipart(usize),
    #[error("sub-part {0} has the wrong Content-Type")]
    WrongType(usize),
    #[error("sub-part {0} has a transfer-encoding problem")]
    Encoding(usize),
    #[error("application/pgp-encrypted body is not \"Version: 1\"")]
    WrongVersion,
}

/// Returns true when `part` has Content-Type `ctype/subtype` (ASCII
/// case-insensitive, parameters ignored). A missing header never matches.
pub fn has_type(part: &MessagePart<'_>, ctype: &str, subtype: &str) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
    })
}

/// The root part of a parsed message, if any.
pub fn root<'a, 'x>(message: &'a Message<'x>) -> Option<&'a MessagePart<'x>> {
    message.parts.first()
}

/// Headers that decide how a part is read (RFC 2045 §3, §4, §5, §6).
const STRUCTURAL: [&str; 3] = ["Content-Type", "Content-Transfer-Encoding", "MIME-Version"];

/// The first structural header that some part of `message` carries more
/// than once, if any. RFC 2045 allows each at most once per part; readers
/// that take the first and readers that take the last of two would see
/// different messages, so such a message is refused outright.
pub fn repeated_structural_header(message: &Message<'_>) -> Option<&'static str> {
    message.parts.iter().find_map(|part| {
        STRUCTURAL.into_iter().find(|name| {
            let count = part
                .headers
                .iter()
                .filter(|h| h.name().trim().eq_ignore_ascii_case(name))
                .take(2)
                .count();
            count > 1
        })
    })
}

/// Checks rules 1-4 and returns the body of the `application/octet-stream`
/// part (the ASCII armor).
pub fn encrypted_payload<'a>(message: &'a Message<'_>) -> Result<&'a [u8], MimeError> {
    let top = root(message).ok_or(MimeError::NotEncrypted)?;
    // RFC 3156 §4 / rule 1.
    if !has_type(top, "multipart", "encrypted") {
        return Err(MimeError::NotEncrypted);
    }
    let PartType::Multipart(ids) = &top.body else {
        // mail-parser demotes a multipart without a usable boundary to text.
        return Err(MimeError::PartCount(0));
    };
    // Rule 2: exactly two sub-parts.
    let [version_id, payload_id] = ids.as_slice() else {
        return Err(MimeError::PartCount(ids.len()));
    };
    let version = leaf(message, *version_id, 1)?;
    let payload = leaf(message, *payload_id, 2)?;
    // Rule 3 (RFC 3156 §4): the control part says "Version: 1".
    if !has_type(version, "application", "pgp-encrypted") {
        return Err(MimeError::WrongType(1));
    }
    if version.contents().trim_ascii() != b"Version: 1" {
        return Err(MimeError::WrongVersion);
    }
    // Rule 4: the payload is application/octet-stream.
    if !has_type(payload, "application", "octet-stream") {
        return Err(MimeError::WrongType(2));
    }
    Ok(payload.contents())
}

/// Looks up sub-part `id` (numbered `n` for errors) and checks that it is a
/// single, cleanly decoded part.
fn leaf<'a, 'x>(
    message: &'a Message<'x>,
    id: u32,
    n: usize,
) -> Result<&'a MessagePart<'x>, MimeError> {
    let part = usize::try_from(id)
        .ok()
        .and_then(|i| message.parts.get(i))
        .ok_or(MimeError::PartCount(0))?;
    if matches!(part.body, PartType::Multipart(_)) {
        return Err(MimeError::NestedMultipart(n));
    }
    if part.is_encoding_problem {
        return Err(MimeError::Encoding(n));
    }
    Ok(part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn encrypted(part1: &str, part2: &str) -> String {
        format!(
            "From: a@example.org\r\nContent-Type: multipart/encrypted; boundary=\"b\"\r\n\r\n\
             --b\r\n{part1}\r\n--b\r\n{part2}\r\n--b--\r\n"
        )
    }

    const P1: &str = "Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n";
    const P2: &str = "Content-Type: application/octet-stream\r\n\r\nARMOR\r\n";

    fn payload(raw: &str) -> Result<Vec<u8>, MimeError> {
        let parsed = MessageParser::default().parse(raw.as_bytes());
        let message = parsed.ok_or(MimeError::NotEncrypted)?;
        encrypted_payload(&message).map(<[u8]>::to_vec)
    }

    #[test]
    fn returns_the_octet_stream_body() {
        assert_eq!(payload(&encrypted(P1, P2)), Ok(b"ARMOR\r\n".to_vec()));
    }

    #[test]
    fn rejects_wrong_version_body_and_uppercase_types_are_fine() {
        let p1 = "Content-Type: APPLICATION/PGP-ENCRYPTED\r\n\r\nVersion: 2\r\n";
        assert_eq!(payload(&encrypted(p1, P2)), Err(MimeError::WrongVersion));
    }

    #[test]
    fn rejects_nested_multipart_sub_part() {
        let nested = "Content-Type: multipart/mixed; boundary=\"c\"\r\n\r\n\
                      --c\r\nContent-Type: text/plain\r\n\r\nx\r\n--c--\r\n";
        assert_eq!(
            payload(&encrypted(P1, nested)),
            Err(MimeError::NestedMultipart(2))
        );
    }

    #[test]
    fn rejects_missing_content_type_on_payload() {
        let bare = "\r\nARMOR\r\n";
        assert_eq!(payload(&encrypted(P1, bare)), Err(MimeError::WrongType(2)));
    }

    #[test]
    fn rejects_multipart_encrypted_without_boundary() {
        let raw = "Content-Type: multipart/encrypted\r\n\r\nhello\r\n";
        assert_eq!(payload(raw), Err(MimeError::PartCount(0)));
    }
}
