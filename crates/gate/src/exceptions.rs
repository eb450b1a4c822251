//! The unencrypted messages a chatmail relay lets through (docs/specifications.md §2):
//! SecureJoin requests, the Autocrypt Setup Message (submission only) and
//! bounces (inbound only). Everything else that is not encrypted is refused.
//!
//! Each check returns `Ok(true)` when the exception applies, `Ok(false)`
//! when the message does not claim it, and `Err` when it claims it but breaks
//! a rule (so the log says why). Header values are never put in errors.

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};

use crate::mime::{has_type, root};

/// Why a message that claims an exception does not qualify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExceptionError {
    #[error("Secure-Join header is not vc-request or vg-request")]
    SecureJoinStep,
    #[error("more than one Secure-Join header")]
    SecureJoinRepeated,
    #[error("Secure-Join message is not exactly one text/plain part")]
    SecureJoinShape,
    #[error("Secure-Join body does not match its header")]
    SecureJoinBody,
}

/// The SecureJoin handshake's first, unencrypted step: a `Secure-Join:
/// vc-request|vg-request` header and exactly one non-multipart `text/plain`
/// part whose trimmed, lower-cased body is `secure-join: <same step>`.
pub fn is_securejoin(message: &Message<'_>) -> Result<bool, ExceptionError> {
    let mut values = header_texts(message, "Secure-Join");
    let Some(value) = values.next() else {
        return Ok(false);
    };
    if values.next().is_some() {
        return Err(ExceptionError::SecureJoinRepeated);
    }
    let step = value.trim().to_ascii_lowercase();
    if step != "vc-request" && step != "vg-request" {
        return Err(ExceptionError::SecureJoinStep);
    }
    let mut leaves = message
        .parts
        .iter()
        .filter(|p| !matches!(p.body, PartType::Multipart(_)));
    let (Some(text), None) = (leaves.next(), leaves.next()) else {
        return Err(ExceptionError::SecureJoinShape);
    };
    let PartType::Text(body) = &text.body else {
        return Err(ExceptionError::SecureJoinShape);
    };
    if !is_plain_text(text) || text.is_encoding_problem {
        return Err(ExceptionError::SecureJoinShape);
    }
    if body.trim().to_lowercase() != format!("secure-join: {step}") {
        return Err(ExceptionError::SecureJoinBody);
    }
    Ok(true)
}

/// An Autocrypt Setup Message sent to oneself (Autocrypt 1.1 §4.4): exactly
/// one recipient equal to the sender, the fixed Subject, `multipart/mixed`.
pub fn is_autocrypt_setup(message: &Message<'_>, sender: &str, recipients: &[String]) -> bool {
    let self_sent = matches!(recipients, [only] if only.eq_ignore_ascii_case(sender));
    let subject_ok = message
        .subject()
        .is_some_and(|s| s.trim() == "Autocrypt Setup Message");
    let mixed = root(message).is_some_and(|top| has_type(top, "multipart", "mixed"));
    self_sent && subject_ok && mixed
}

/// A delivery status notification from another relay: `Auto-Submitted`
/// present and not `no` (RFC 3834 §5), exactly one From address, whose local
/// part is `mailer-daemon`, top-level `multipart/report` (RFC 6522).
/// Read receipts (MDNs) have a human From, so they never pass.
pub fn is_bounce(message: &Message<'_>) -> bool {
    let mut auto = header_texts(message, "Auto-Submitted");
    let auto_ok = match (auto.next(), auto.next()) {
        (Some(value), None) => {
            let keyword = value.split(';').next().unwrap_or("").trim();
            !keyword.is_empty() && !keyword.eq_ignore_ascii_case("no")
        }
        _ => false,
    };
    let from_ok = message.from().is_some_and(|from| {
        let mut addrs = from.iter();
        match (addrs.next().and_then(|a| a.address()), addrs.next()) {
            (Some(addr), None) => is_mailer_daemon(addr),
            _ => false,
        }
    });
    let report = root(message).is_some_and(|top| has_type(top, "multipart", "report"));
    auto_ok && from_ok && report
}

/// `mailer-daemon@<anything>`, case-insensitively.
fn is_mailer_daemon(addr: &str) -> bool {
    addr.split_once('@').is_some_and(|(local, domain)| {
        local.eq_ignore_ascii_case("mailer-daemon") && !domain.is_empty()
    })
}

/// A part is `text/plain` when it says so or has no Content-Type at all
/// (RFC 2045 §5.2 default).
fn is_plain_text(part: &MessagePart<'_>) -> bool {
    part.content_type().is_none() || has_type(part, "text", "plain")
}

/// The text values of every top-level header named `name`.
fn header_texts<'a>(message: &'a Message<'_>, name: &'a str) -> impl Iterator<Item = &'a str> {
    root(message)
        .map(|top| top.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(move |h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().as_text().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn parse(raw: &str) -> Message<'_> {
        MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap_or_default()
    }

    #[test]
    fn securejoin_body_must_match_the_header_step() {
        let raw = "Secure-Join: vc-request\r\n\r\nSecure-Join: vg-request\r\n";
        assert_eq!(
            is_securejoin(&parse(raw)),
            Err(ExceptionError::SecureJoinBody)
        );
        let ok = "Secure-Join: VG-Request\r\n\r\n  SECURE-JOIN: vg-request \r\n";
        assert_eq!(is_securejoin(&parse(ok)), Ok(true));
    }

    #[test]
    fn securejoin_refuses_other_steps_and_repeated_headers() {
        let raw = "Secure-Join: vc-request-with-auth\r\n\r\nsecure-join: vc-request\r\n";
        assert_eq!(
            is_securejoin(&parse(raw)),
            Err(ExceptionError::SecureJoinStep)
        );
        let twice = "Secure-Join: vc-request\r\nSecure-Join: vc-request\r\n\r\nx\r\n";
        assert_eq!(
            is_securejoin(&parse(twice)),
            Err(ExceptionError::SecureJoinRepeated)
        );
        assert_eq!(is_securejoin(&parse("Subject: x\r\n\r\nx\r\n")), Ok(false));
    }

    #[test]
    fn securejoin_refuses_an_html_body() {
        let html =
            "Secure-Join: vc-request\r\nContent-Type: text/html\r\n\r\nsecure-join: vc-request\r\n";
        assert_eq!(
            is_securejoin(&parse(html)),
            Err(ExceptionError::SecureJoinShape)
        );
    }

    #[test]
    fn autocrypt_setup_needs_a_single_self_recipient() {
        let raw = "Subject: Autocrypt Setup Message\r\n\
                   Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n";
        let m = parse(raw);
        assert!(is_autocrypt_setup(&m, "a@x.org", &["A@X.org".to_string()]));
        assert!(!is_autocrypt_setup(&m, "a@x.org", &["b@x.org".to_string()]));
        let two = ["a@x.org".to_string(), "a@x.org".to_string()];
        assert!(!is_autocrypt_setup(&m, "a@x.org", &two));
        assert!(!is_autocrypt_setup(&m, "a@x.org", &[]));
    }

    #[test]
    fn bounce_needs_auto_submitted_other_than_no() {
        let body = "From: MAILER-DAEMON@x.org\r\n\
                    Content-Type: multipart/report; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n";
        assert!(is_bounce(&parse(&format!(
            "Auto-Submitted: auto-replied\r\n{body}"
        ))));
        assert!(!is_bounce(&parse(&format!("Auto-Submitted: No\r\n{body}"))));
        assert!(!is_bounce(&parse(&format!("Auto-Submitted: \r\n{body}"))));
        assert!(!is_bounce(&parse(body)));
    }

    #[test]
    fn mailer_daemon_is_matched_on_the_whole_local_part() {
        assert!(is_mailer_daemon("Mailer-Daemon@relay.example"));
        assert!(!is_mailer_daemon("mailer-daemon-fake@relay.example"));
        assert!(!is_mailer_daemon("xmailer-daemon@relay.example"));
        assert!(!is_mailer_daemon("mailer-daemon@"));
    }
}
