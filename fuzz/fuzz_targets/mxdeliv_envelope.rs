//! The envelope of a `POST /mxdeliv` request: its header lines, one
//! `name: value` per line, as hyper would hand them on. Besides not
//! panicking: there are one to as many recipients as allowed, and no
//! address taken is empty or holds a space or control character (a line
//! break in one would reach the message's trace headers).
#![no_main]

use chatmail_http::fuzzing::envelope;
use http::{HeaderMap, HeaderName, HeaderValue};

const MAX_RECIPIENTS: usize = 8;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let Ok((sender, recipients)) = envelope(&headers, MAX_RECIPIENTS) else {
        return;
    };
    assert!(!recipients.is_empty() && recipients.len() <= MAX_RECIPIENTS);
    for recipient in &recipients {
        assert!(!recipient.is_empty());
        assert!(
            !recipient
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        );
    }
    if let Some(sender) = sender {
        assert!(!sender.is_empty());
        assert!(!sender.chars().any(|c| c.is_whitespace() || c.is_control()));
    }
});
