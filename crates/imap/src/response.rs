//! Response encoding: the small set of IMAP data formats the server writes
//! (RFC 3501 §4 and §9). Everything is appended to a byte buffer that the
//! session flushes; nothing here does I/O.
//!
//! Invariant: every string that reaches the wire is either a quoted string
//! whose content is 7-bit TEXT-CHAR without `"`/`\` escapes missing, or a
//! literal with an exact byte count, so client data can never break the
//! framing of a response.

/// Appends `bytes` as an IMAP string: quoted when that is possible,
/// otherwise a literal (RFC 3501 §4.3).
pub fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    // RFC 3501 §9: QUOTED-CHAR is any TEXT-CHAR (7-bit, no CR/LF/NUL).
    let quotable = bytes.len() <= 1024
        && bytes
            .iter()
            .all(|&b| (0x01..0x80).contains(&b) && b != b'\r' && b != b'\n');
    if quotable {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, bytes);
    }
}

/// Appends an astring: a bare atom when every byte is an ATOM-CHAR
/// (RFC 3501 §9), otherwise a string.
pub fn astring(out: &mut Vec<u8>, bytes: &[u8]) {
    let atom = !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
    if atom {
        out.extend_from_slice(bytes);
    } else {
        string(out, bytes);
    }
}

/// Appends `bytes` as a synchronizing-literal-shaped server literal
/// `{n}\r\n<bytes>` (RFC 3501 §4.3).
pub fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an nstring: `NIL` or a string (RFC 3501 §4.5).
pub fn nstring(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => string(out, b),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// Appends a parenthesized flag list, e.g. `(\Seen \Deleted)`.
pub fn flag_list(out: &mut Vec<u8>, flags: &[String]) {
    out.push(b'(');
    for (i, flag) in flags.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(flag.as_bytes());
    }
    out.push(b')');
}

/// Formats Unix seconds as an IMAP date-time in UTC,
/// `"dd-Mon-yyyy hh:mm:ss +0000"` (RFC 3501 §9, date-time).
pub fn internal_date(unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let date = mail_parser::DateTime::from_timestamp(unix);
    let month = MONTHS[usize::from(date.month).saturating_sub(1).min(11)];
    format!(
        "\"{:02}-{month}-{:04} {:02}:{:02}:{:02} +0000\"",
        date.day, date.year, date.hour, date.minute, date.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_plain_text_and_escapes_specials() {
        assert_eq!(encoded(|o| string(o, b"INBOX")), "\"INBOX\"");
        assert_eq!(encoded(|o| string(o, b"a\"b\\c")), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn writes_atoms_bare_and_other_astrings_quoted() {
        assert_eq!(encoded(|o| astring(o, b"MESSAGE-ID")), "MESSAGE-ID");
        assert_eq!(encoded(|o| astring(o, b"a b")), "\"a b\"");
        assert_eq!(encoded(|o| astring(o, b"")), "\"\"");
    }

    #[test]
    fn uses_a_literal_for_line_breaks_and_eight_bit_data() {
        assert_eq!(encoded(|o| string(o, b"a\r\nb")), "{4}\r\na\r\nb");
        assert_eq!(encoded(|o| string(o, "ü".as_bytes())), "{2}\r\nü");
    }

    #[test]
    fn writes_nil_for_absent_nstrings_and_flag_lists() {
        assert_eq!(encoded(|o| nstring(o, None)), "NIL");
        let flags = vec!["\\Seen".to_string(), "\\Deleted".to_string()];
        assert_eq!(encoded(|o| flag_list(o, &flags)), "(\\Seen \\Deleted)");
        assert_eq!(encoded(|o| flag_list(o, &[])), "()");
    }

    #[test]
    fn formats_internal_dates_in_utc() {
        assert_eq!(internal_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(
            internal_date(951_782_400 + 3661),
            "\"29-Feb-2000 01:01:01 +0000\""
        );
        assert_eq!(
            internal_date(1_700_000_000),
            "\"14-Nov-2023 22:13:20 +0000\""
        );
    }
}
