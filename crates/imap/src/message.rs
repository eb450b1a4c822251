//! Pure helpers over raw RFC 5322 messages for FETCH body sections
//! (RFC 3501 §6.4.5): splitting header and text, selecting header fields.
//! No allocation beyond the returned section; no panics on any input.

/// Splits a message into its header (including the empty line that ends
/// it) and its text. A message without an empty line is all header.
pub fn split(message: &[u8]) -> (&[u8], &[u8]) {
    let mut line_start = 0;
    while line_start < message.len() {
        let rest = &message[line_start..];
        let line_len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let line = &rest[..line_len];
        if line == b"\r\n" || line == b"\n" {
            let end = line_start + line_len;
            return (&message[..end], &message[end..]);
        }
        line_start += line_len;
    }
    (message, &[])
}

/// The header fields whose names are (or with `exclude`, are not) in
/// `names`, compared case-insensitively, followed by the empty line
/// (RFC 3501 §6.4.5, HEADER.FIELDS and HEADER.FIELDS.NOT).
pub fn header_fields(header: &[u8], names: &[&[u8]], exclude: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for field in fields(header) {
        let name_end = field.iter().position(|&b| b == b':').unwrap_or(0);
        let name = trim(&field[..name_end]);
        let listed = !name.is_empty() && names.iter().any(|n| n.eq_ignore_ascii_case(name));
        if listed != exclude && !name.is_empty() {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The first value of a header field, unfolded, if present.
pub fn header_value(header: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    fields(header).find_map(|field| {
        let colon = field.iter().position(|&b| b == b':')?;
        if !trim(&field[..colon]).eq_ignore_ascii_case(name) {
            return None;
        }
        let value: Vec<u8> = field[colon + 1..]
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        Some(trim(&value).to_vec())
    })
}

/// Iterates the fields of a header, each with its continuation lines
/// (RFC 5322 §2.2.3), stopping at the empty line.
fn fields(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= header.len() || header[pos] == b'\r' || header[pos] == b'\n' {
            return None;
        }
        let start = pos;
        loop {
            let rest = &header[pos..];
            pos += rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |p| p + 1);
            match header.get(pos) {
                Some(b' ' | b'\t') => continue,
                _ => break,
            }
        }
        Some(&header[start..pos])
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] =
        b"From: a@example.org\r\nSubject: hi\r\n there\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n";

    #[test]
    fn splits_header_and_text_at_the_empty_line() {
        let (header, text) = split(MESSAGE);
        assert!(header.ends_with(b"<1@x>\r\n\r\n"));
        assert_eq!(text, b"body\r\n");
        assert_eq!(split(b"X: y\r\n"), (&b"X: y\r\n"[..], &b""[..]));
    }

    #[test]
    fn selects_fields_with_their_continuation_lines() {
        let (header, _) = split(MESSAGE);
        let picked = header_fields(header, &[b"subject", b"MESSAGE-ID"], false);
        assert_eq!(
            picked,
            b"Subject: hi\r\n there\r\nMessage-ID: <1@x>\r\n\r\n"
        );
        let rest = header_fields(header, &[b"subject"], true);
        assert_eq!(rest, b"From: a@example.org\r\nMessage-ID: <1@x>\r\n\r\n");
        assert_eq!(header_fields(header, &[b"chat-version"], false), b"\r\n");
    }

    #[test]
    fn reads_unfolded_header_values() {
        let (header, _) = split(MESSAGE);
        assert_eq!(header_value(header, b"subject").unwrap(), b"hi there");
        assert_eq!(header_value(header, b"date"), None);
    }

    #[test]
    fn survives_malformed_input() {
        for input in [
            &b""[..],
            b"\r\n",
            b":\r\n",
            b"no colon\r\n\r\n",
            b"\n\n\n",
            b" leading\r\n",
        ] {
            let (header, _) = split(input);
            let _ = header_fields(header, &[b"x"], false);
            let _ = header_value(header, b"x");
        }
    }
}
