//! Replies as they reach the wire (RFC 5321 §4.2, enhanced codes RFC 3463).
//!
//! Invariant: reply text never contains CR, LF or other control
//! characters, so a client-controlled value cannot inject a reply line.

use std::borrow::Cow;

/// One SMTP reply: a code and one or more text lines (each starting with
/// the enhanced status code where one applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply.
    pub fn line(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            lines: vec![sanitize(text.into())],
        }
    }

    /// A multi-line reply (RFC 5321 §4.2.1).
    pub fn multi(code: u16, lines: Vec<String>) -> Self {
        Self {
            code,
            lines: lines.into_iter().map(|l| sanitize(l.into())).collect(),
        }
    }

    /// The wire form, CRLF terminated.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
        }
    }
}

/// The wire form of a refusal of the catalogue (`chatmail_inbound::Refusal`,
/// shared by submission, the MX and `/mxdeliv`).
impl From<&chatmail_inbound::Refusal> for Reply {
    fn from(refusal: &chatmail_inbound::Refusal) -> Self {
        Self::line(
            refusal.code,
            format!("{} {}", refusal.enhanced, refusal.text),
        )
    }
}

/// Replaces control characters and bounds the length (RFC 5321 §4.5.3.1.5:
/// reply lines of at most 512 octets).
fn sanitize(text: Cow<'static, str>) -> Cow<'static, str> {
    const MAX: usize = 400;
    if text.len() <= MAX && !text.chars().any(char::is_control) {
        return text;
    }
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(MAX)
        .collect();
    Cow::Owned(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_single_and_multi_line_replies() {
        assert_eq!(wire(&Reply::line(250, "2.0.0 OK")), "250 2.0.0 OK\r\n");
        let multi = Reply::multi(250, vec!["host".into(), "PIPELINING".into()]);
        assert_eq!(wire(&multi), "250-host\r\n250 PIPELINING\r\n");
    }

    #[test]
    fn never_lets_text_break_the_line() {
        let reply = Reply::line(500, "Invalid FROM <a\r\n250 ok> for <b>".to_string());
        assert_eq!(wire(&reply), "500 Invalid FROM <a??250 ok> for <b>\r\n");
    }

    #[test]
    fn splits_the_gate_reject_text() {
        let reply = Reply::from(&chatmail_inbound::Refusal::unencrypted());
        assert_eq!(wire(&reply), format!("{}\r\n", chatmail_gate::REJECT_TEXT));
    }
}
