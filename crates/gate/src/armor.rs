//! ASCII armor of an OpenPGP message (RFC 9580 §6.2), decoded strictly.
//!
//! Flow: trim the part body, split it into lines (CRLF or LF), then expect
//! `-----BEGIN PGP MESSAGE-----`, optional armor headers, a blank line, base64
//! lines, an optional CRC line (`=XXXX`) and `-----END PGP MESSAGE-----` as the
//! very last line. The base64 is decoded with canonical padding.
//!
//! Invariants: work is linear in the input; nothing here panics; errors name
//! the failed rule, never the message content.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::Direction;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Why an armored block is not a well-formed PGP MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArmorError {
    #[error("armor does not start with the PGP MESSAGE header line")]
    MissingBegin,
    #[error("armor has no PGP MESSAGE footer line")]
    MissingEnd,
    #[error("data after the armor footer")]
    TrailingData,
    #[error("malformed armor header line")]
    MalformedHeader,
    #[error("armor headers not followed by a blank line")]
    MissingBlankLine,
    #[error("armor Version header refused on submission")]
    VersionHeader,
    #[error("armor body is not valid base64")]
    InvalidBase64,
    #[error("armor body is empty")]
    Empty,
}

/// Decodes an armored `PGP MESSAGE` into its binary packets.
pub fn decode(armor: &[u8], direction: Direction<'_>) -> Result<Vec<u8>, ArmorError> {
    let mut lines = armor
        .trim_ascii()
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii);
    if lines.next() != Some(BEGIN) {
        return Err(ArmorError::MissingBegin);
    }
    let first_body_line = skip_headers(&mut lines, direction)?;
    let base64 = collect_body(first_body_line, &mut lines)?;
    if base64.is_empty() {
        return Err(ArmorError::Empty);
    }
    // RFC 9580 §6.2: canonical base64; `STANDARD` also refuses non-zero pad bits.
    STANDARD
        .decode(&base64)
        .map_err(|_| ArmorError::InvalidBase64)
}

/// Consumes the armor header lines and the blank line after them
/// (RFC 9580 §6.2.2). Returns the first body line when a header-less armor
/// omits the blank line: base64 cannot contain `:`, so that is unambiguous.
fn skip_headers<'a>(
    lines: &mut impl Iterator<Item = &'a [u8]>,
    direction: Direction<'_>,
) -> Result<Option<&'a [u8]>, ArmorError> {
    let mut seen_header = false;
    loop {
        let Some(line) = lines.next() else {
            return Err(ArmorError::MissingEnd);
        };
        if line.is_empty() {
            return Ok(None);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            if seen_header {
                return Err(ArmorError::MissingBlankLine);
            }
            return Ok(Some(line));
        };
        let (key, rest) = line.split_at(colon);
        let key_ok = !key.is_empty() && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        if !key_ok || !(rest.len() == 1 || rest.get(1) == Some(&b' ')) {
            return Err(ArmorError::MalformedHeader);
        }
        // docs/specifications.md §2: a Version header leaks the client; refused on submission.
        if key.eq_ignore_ascii_case(b"Version") && matches!(direction, Direction::Submission { .. })
        {
            return Err(ArmorError::VersionHeader);
        }
        seen_header = true;
    }
}

/// Concatenates the base64 lines up to the footer, dropping an optional CRC
/// line. The footer must be the last line.
fn collect_body<'a>(
    first: Option<&'a [u8]>,
    lines: &mut impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, ArmorError> {
    let mut base64 = Vec::new();
    let mut crc_seen = false;
    let mut next = first.or_else(|| lines.next());
    loop {
        let Some(line) = next else {
            return Err(ArmorError::MissingEnd);
        };
        if line == END {
            break;
        }
        if crc_seen {
            // Only the footer may follow the CRC line.
            return Err(ArmorError::InvalidBase64);
        }
        if line.first() == Some(&b'=') {
            // RFC 9580 §6.1: the CRC24 footer is optional and MUST NOT cause a
            // rejection when it disagrees, so only its syntax is checked.
            if !is_crc_line(line) {
                return Err(ArmorError::InvalidBase64);
            }
            crc_seen = true;
        } else {
            base64.extend_from_slice(line);
        }
        next = lines.next();
    }
    if lines.next().is_some() {
        return Err(ArmorError::TrailingData);
    }
    Ok(base64)
}

/// `=` followed by exactly four base64 characters (24 bits).
fn is_crc_line(line: &[u8]) -> bool {
    line.len() == 5
        && line[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: Direction<'static> = Direction::Submission {
        sender: "a@example.org",
        recipients: &[],
    };

    fn armor(inner: &str) -> Vec<u8> {
        format!("-----BEGIN PGP MESSAGE-----\r\n{inner}-----END PGP MESSAGE-----\r\n").into_bytes()
    }

    #[test]
    fn decodes_body_with_crc_and_crlf() {
        let got = decode(&armor("\r\nAQID\r\nBAU=\r\n=AAAA\r\n"), SUB);
        assert_eq!(got, Ok(vec![1, 2, 3, 4, 5]));
    }

    #[test]
    fn accepts_missing_crc_and_missing_blank_line_without_headers() {
        assert_eq!(decode(&armor("AQID\n"), SUB), Ok(vec![1, 2, 3]));
    }

    #[test]
    fn refuses_version_header_on_submission_only() {
        let a = armor("Version: X 1.0\r\n\r\nAQID\r\n");
        assert_eq!(decode(&a, SUB), Err(ArmorError::VersionHeader));
        assert_eq!(
            decode(&a, Direction::Inbound { null_sender: false }),
            Ok(vec![1, 2, 3])
        );
    }

    #[test]
    fn tolerates_other_headers() {
        assert_eq!(
            decode(&armor("Comment: hi\n\nAQID\n"), SUB),
            Ok(vec![1, 2, 3])
        );
    }

    #[test]
    fn rejects_header_without_blank_line() {
        let got = decode(&armor("Comment: hi\nAQID\n"), SUB);
        assert_eq!(got, Err(ArmorError::MissingBlankLine));
    }

    #[test]
    fn rejects_bad_base64_and_padding_in_the_middle() {
        assert_eq!(
            decode(&armor("\nAQ*D\n"), SUB),
            Err(ArmorError::InvalidBase64)
        );
        assert_eq!(
            decode(&armor("\nAQ==\nAQID\n"), SUB),
            Err(ArmorError::InvalidBase64)
        );
        assert_eq!(
            decode(&armor("\nAQID\n=AAA\n"), SUB),
            Err(ArmorError::InvalidBase64)
        );
        assert_eq!(
            decode(&armor("\n=AAAA\nAQID\n"), SUB),
            Err(ArmorError::InvalidBase64)
        );
    }

    #[test]
    fn rejects_wrong_frame() {
        let other = b"-----BEGIN PGP SIGNATURE-----\n\nAQID\n-----END PGP SIGNATURE-----\n";
        assert_eq!(decode(other, SUB), Err(ArmorError::MissingBegin));
        let open = b"-----BEGIN PGP MESSAGE-----\n\nAQID\n";
        assert_eq!(decode(open, SUB), Err(ArmorError::MissingEnd));
        let mut twice = armor("\nAQID\n");
        twice.extend_from_slice(b"junk\n");
        assert_eq!(decode(&twice, SUB), Err(ArmorError::TrailingData));
        assert_eq!(decode(&armor("\n"), SUB), Err(ArmorError::Empty));
    }
}
