//! A minimal scan of the header block: the field names, in order.
//!
//! Only names are needed here (which headers to over-sign, whether a
//! signature is present); parsing proper is left to mail-auth.

/// The field names of the header block of `message` (RFC 5322 §2.2):
/// lines up to the first empty line; continuation lines (starting with
/// WSP) and lines without a colon yield nothing.
pub(crate) fn field_names(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message
        .split(|b| *b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter(|line| !matches!(line.first(), Some(b' ' | b'\t')))
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            Some(line[..colon].trim_ascii_end())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_names_until_the_blank_line() {
        let message = b"From: a@b\r\nSubject: x\r\n  continued: no\r\nTo : c\r\n\r\nBody: no\r\n";
        let names: Vec<&[u8]> = field_names(message).collect();
        assert_eq!(names, [&b"From"[..], b"Subject", b"To"]);
    }

    #[test]
    fn handles_bare_lf_and_garbage_lines() {
        let names: Vec<&[u8]> = field_names(b"From: a\nnot a header\n\nX: y\n").collect();
        assert_eq!(names, [&b"From"[..]]);
        assert_eq!(field_names(b"").count(), 0);
    }
}
