//! The top-level header block of a message, shared by submission and
//! inbound: splitting it off, walking its fields, dropping or replacing
//! named fields and reading the single `From:` address. Pure.
//!
//! The header block ends at the first empty line (RFC 5322 §2.1); a field
//! is its first line plus the continuation lines starting with SP or HTAB
//! (RFC 5322 §2.2.3). Rewrites touch only the header block: the body is
//! copied byte for byte. Every function is linear in the input.

use mail_parser::MessageParser;

/// Splits a message into its header block (each field with its CRLF) and
/// the rest (the empty line and the body). A message without an empty line
/// is all header.
pub fn split(message: &[u8]) -> (&[u8], &[u8]) {
    if message.starts_with(b"\r\n") {
        return (&[], message);
    }
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => message.split_at(end + 2),
        None => (message, &[]),
    }
}

/// The fields of a header block, each with its continuation lines and its
/// final CRLF (if any).
pub fn fields(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = header;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            end = rest[end..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(rest.len(), |at| end + at + 2);
            // RFC 5322 §2.2.3: a line starting with WSP continues the field.
            if !matches!(rest.get(end), Some(b' ' | b'\t')) {
                break;
            }
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(field)
    })
}

/// The field name without surrounding blanks (RFC 5322 §4.5.3 allows WSP
/// before the colon in obsolete syntax), if the field has a colon.
pub fn field_name(field: &[u8]) -> Option<&[u8]> {
    let colon = field.iter().position(|&b| b == b':')?;
    Some(field[..colon].trim_ascii())
}

/// Whether the field's name is `name`, ignoring ASCII case.
pub fn is_named(field: &[u8], name: &[u8]) -> bool {
    field_name(field).is_some_and(|n| n.eq_ignore_ascii_case(name))
}

/// The message with each top-level field replaced by what `edit` returns
/// for it (`None` drops the field); the body is copied unchanged.
pub fn rewrite<F>(message: &[u8], mut edit: F) -> Vec<u8>
where
    F: for<'a> FnMut(&'a [u8]) -> Option<&'a [u8]>,
{
    let (header, rest) = split(message);
    let mut out = Vec::with_capacity(message.len());
    for field in fields(header) {
        if let Some(kept) = edit(field) {
            out.extend_from_slice(kept);
        }
    }
    out.extend_from_slice(rest);
    out
}

/// The message without the top-level fields named in `names` (any case).
pub fn remove_fields(message: &[u8], names: &[&[u8]]) -> Vec<u8> {
    rewrite(message, |field| {
        (!names.iter().any(|name| is_named(field, name))).then_some(field)
    })
}

/// The single address of the single top-level `From:` field, if there is
/// exactly one such field holding exactly one address (RFC 5322 §3.6.2).
/// The address is returned as written; its syntax is the caller's concern.
pub fn single_from(message: &[u8]) -> Option<String> {
    let (header, _) = split(message);
    if fields(header).filter(|f| is_named(f, b"from")).count() != 1 {
        return None;
    }
    let parsed = MessageParser::new().parse_headers(header)?;
    let mut addresses = parsed.from()?.iter();
    let (Some(first), None) = (addresses.next(), addresses.next()) else {
        return None;
    };
    first.address().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_empty_line() {
        assert_eq!(
            split(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore"),
            (&b"A: 1\r\nB: 2\r\n"[..], &b"\r\nbody\r\n\r\nmore"[..])
        );
        assert_eq!(split(b"\r\nbody"), (&b""[..], &b"\r\nbody"[..]));
        assert_eq!(split(b"A: 1\r\n"), (&b"A: 1\r\n"[..], &b""[..]));
        assert_eq!(split(b""), (&b""[..], &b""[..]));
    }

    #[test]
    fn fields_keep_their_continuation_lines() {
        let header = b"A: 1\r\n 2\r\n\t3\r\nB: x\r\nC: unterminated";
        let all: Vec<&[u8]> = fields(header).collect();
        assert_eq!(
            all,
            [
                &b"A: 1\r\n 2\r\n\t3\r\n"[..],
                &b"B: x\r\n"[..],
                &b"C: unterminated"[..]
            ]
        );
    }

    #[test]
    fn names_ignore_blanks_and_case_but_not_prefixes() {
        assert_eq!(field_name(b"Subject : x\r\n"), Some(&b"Subject"[..]));
        assert_eq!(field_name(b"no colon\r\n"), None);
        assert!(is_named(b"RECEIVED: x\r\n", b"received"));
        assert!(!is_named(b"Received-SPF: pass\r\n", b"received"));
        assert!(!is_named(b"X-Received: x\r\n", b"received"));
    }

    #[test]
    fn removes_named_fields_only_from_the_header() {
        let message = b"Received: a\r\n b\r\nTo: x@y.org\r\nreceived : c\r\n\r\nReceived: body\r\n";
        assert_eq!(
            remove_fields(message, &[b"received"]),
            b"To: x@y.org\r\n\r\nReceived: body\r\n"
        );
        assert_eq!(remove_fields(b"", &[b"received"]), b"");
    }

    #[test]
    fn rewrite_can_replace_a_field() {
        let message = b"Subject: secret\r\n folded\r\nTo: x@y.org\r\n\r\nbody";
        let out = rewrite(message, |field| {
            if is_named(field, b"subject") {
                Some(b"Subject: [...]\r\n")
            } else {
                Some(field)
            }
        });
        assert_eq!(out, b"Subject: [...]\r\nTo: x@y.org\r\n\r\nbody");
    }

    #[test]
    fn finds_only_a_single_from_address() {
        let message = b"To: b@y.org\r\nFrom: Alice <Alice@X.org>\r\n\r\nFrom: c@z.org\r\n";
        assert_eq!(single_from(message).as_deref(), Some("Alice@X.org"));
        assert_eq!(single_from(b"To: b@y.org\r\n\r\n"), None);
        assert_eq!(single_from(b"From: a@x.org\r\nFrom: b@x.org\r\n\r\n"), None);
        assert_eq!(single_from(b"From: a@x.org, b@x.org\r\n\r\n"), None);
        assert_eq!(single_from(b"Subject: x\r\n\r\nFrom: a@x.org\r\n"), None);
        assert_eq!(single_from(b""), None);
    }

    #[test]
    fn survives_hostile_bytes() {
        let noise: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let _ = single_from(&noise);
        assert_eq!(remove_fields(&noise, &[]).len(), noise.len());
    }
}
