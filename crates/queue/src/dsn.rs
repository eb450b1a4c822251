//! Bounces: delivery status notifications (RFC 3464) for recipients that
//! failed for good, stored in the local sender's INBOX. The queue bounces
//! remote recipients; [`build`] lets submission bounce local ones (e.g. a
//! mailbox found full at delivery, status 5.2.2).
//!
//! Shape (RFC 6522 `multipart/report`, report type `delivery-status`):
//! 1. `text/plain`: the failed recipients and why, for people;
//! 2. `message/delivery-status`: per-message fields (`Reporting-MTA`,
//!    `Arrival-Date`), then per recipient `Final-Recipient`,
//!    `Action: failed`, `Status`, `Diagnostic-Code`;
//! 3. `text/rfc822-headers`: the original header only, never the body
//!    (which is end-to-end encrypted and of no use to the sender's relay).
//!
//! Invariants: no bounce for the null sender (RFC 3464 §2, no loops) nor
//! for a sender without a local account; every line is CRLF-terminated and
//! every variable part is bounded and free of CR/LF.

use std::sync::atomic::{AtomicU64, Ordering};

use chatmail_config::MailDomain;
use chatmail_dkim::DkimKey;
use chatmail_store::{AccountId, DueDelivery, NewMessage};

use crate::Shared;

/// Most bytes of the original header copied into a bounce.
const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Most bytes of one diagnostic text.
const MAX_DIAGNOSTIC: usize = 400;
/// RFC 3463 §3.5: delivery time expired.
const STATUS_EXPIRED: &str = "4.4.7";
/// RFC 3463 §3.1: permanent failure, no more detail known.
const STATUS_PERMANENT: &str = "5.0.0";

/// Makes the ids of bounces built by [`build`] unique within the process.
static LOCAL_SERIAL: AtomicU64 = AtomicU64::new(0);

/// One recipient that failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    recipient: String,
    /// The peer's reply or our cause, one bounded line.
    diagnostic: String,
    /// Enhanced status code (RFC 3463).
    status: String,
}

impl Failure {
    /// A failure with an enhanced status code (RFC 3463, e.g. `5.2.2`) and
    /// a diagnostic line; both are cut to one bounded 7-bit line.
    pub fn new(recipient: &str, status: &str, diagnostic: &str) -> Self {
        Failure {
            recipient: one_line(recipient),
            diagnostic: one_line(diagnostic),
            status: one_line(status),
        }
    }

    /// Rejected by the peer (or unroutable).
    pub(crate) fn rejected(recipient: &str, reply: &str) -> Self {
        let diagnostic = one_line(reply);
        let status = enhanced_code(&diagnostic)
            .filter(|s| s.starts_with('5'))
            .unwrap_or(STATUS_PERMANENT)
            .to_owned();
        Failure {
            recipient: one_line(recipient),
            diagnostic,
            status,
        }
    }

    /// Still failing temporarily when the queue lifetime ran out.
    pub(crate) fn expired(recipient: &str, last_error: &str) -> Self {
        Failure {
            recipient: one_line(recipient),
            diagnostic: one_line(&format!("delivery time expired; last error: {last_error}")),
            status: STATUS_EXPIRED.to_owned(),
        }
    }
}

/// The signed bounce for `failures` and the account to store it in, or
/// `None` when no bounce is due.
pub(crate) async fn bounce(
    shared: &Shared,
    due: &DueDelivery,
    failures: &[Failure],
    original: &[u8],
) -> Option<(AccountId, NewMessage)> {
    if failures.is_empty() {
        return None;
    }
    // RFC 3464 §2: never bounce a message with a null sender.
    let sender = due.sender.as_deref()?;
    let account = match shared.store.account(&sender.to_ascii_lowercase()).await {
        Ok(Some(account)) => account,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, queue_id = due.id, "outbound queue: sender lookup failed");
            return None;
        }
    };
    let now = crate::now_ms();
    let report = Report {
        domain: &shared.settings.domain,
        sender: &account.address,
        id: due.id.to_string(),
        arrival: due.created / 1000,
        now: now / 1000,
        unique: now,
    };
    let message = report.render(failures, original);
    let body = sign(&shared.dkim, &shared.settings.domain, message);
    let internal_date = now / 1000;
    Some((
        account.id,
        NewMessage {
            body: body.into(),
            flags: Vec::new(),
            internal_date,
        },
    ))
}

/// A bounce from the relay of `domain` to the local `sender` for
/// `failures` of the message `original` (only its header is copied),
/// which arrived now; DKIM-signed when `dkim` is given. The caller stores
/// it (e.g. with `Store::deliver` into the sender's INBOX) and must not
/// bounce a message with a null sender (RFC 3464 §2).
pub fn build(
    domain: &MailDomain,
    sender: &str,
    failures: &[Failure],
    original: &[u8],
    dkim: Option<&DkimKey>,
) -> Vec<u8> {
    let now = crate::now_ms();
    let serial = LOCAL_SERIAL.fetch_add(1, Ordering::Relaxed);
    let report = Report {
        domain,
        sender,
        id: format!("local{serial}"),
        arrival: now / 1000,
        now: now / 1000,
        unique: now,
    };
    let message = report.render(failures, original);
    match dkim {
        Some(key) => sign(key, domain, message),
        None => message,
    }
}

/// Signs the bounce; an unsigned bounce is still stored (it never leaves
/// this relay), with the cause logged.
fn sign(dkim: &DkimKey, domain: &MailDomain, message: Vec<u8>) -> Vec<u8> {
    let MailDomain::Name(domain) = domain else {
        return message;
    };
    match dkim.sign(&message, domain) {
        Ok(signed) => signed,
        Err(e) => {
            tracing::error!(error = %e, "outbound queue: signing a bounce failed");
            message
        }
    }
}

/// What a bounce is about.
struct Report<'a> {
    domain: &'a MailDomain,
    /// The local sender, who receives the bounce.
    sender: &'a str,
    /// The queue id, or a per-process serial for [`build`].
    id: String,
    /// When the message was queued (Unix seconds).
    arrival: i64,
    /// Now (Unix seconds).
    now: i64,
    /// Makes Message-ID and boundary unique.
    unique: i64,
}

impl Report<'_> {
    fn render(&self, failures: &[Failure], original: &[u8]) -> Vec<u8> {
        let host = self.domain.host();
        let boundary = format!("=_bounce_{}_{}", self.id, self.unique);
        let mut m = String::with_capacity(2048);
        // RFC 3834 §5: automatic replies say so.
        let headers = [
            format!(
                "From: Mail Delivery System <MAILER-DAEMON@{}>",
                self.domain.address_part()
            ),
            format!("To: <{}>", one_line(self.sender)),
            "Subject: Undelivered Mail Returned to Sender".to_owned(),
            format!("Date: {}", rfc5322_date(self.now)),
            format!("Message-ID: <bounce.{}.{}@{host}>", self.id, self.unique),
            "Auto-Submitted: auto-replied".to_owned(),
            "MIME-Version: 1.0".to_owned(),
            // RFC 6522 §3: the report container.
            format!(
                "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\""
            ),
        ];
        for h in headers {
            m.push_str(&h);
            m.push_str("\r\n");
        }
        m.push_str("\r\nThis is a MIME-encapsulated delivery status notification.\r\n");
        m.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ));
        m.push_str(&self.human_text(&host, failures));
        m.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        ));
        m.push_str(&self.status_fields(&host, failures));
        m.push_str(&format!(
            "\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        ));
        let mut out = m.into_bytes();
        out.extend_from_slice(header_of(original));
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        out
    }

    fn human_text(&self, host: &str, failures: &[Failure]) -> String {
        let mut text = format!(
            "This is the mail system at {host}.\r\n\r\n\
             Your message could not be delivered to the following recipients:\r\n\r\n"
        );
        for f in failures {
            text.push_str(&format!("<{}>: {}\r\n", f.recipient, f.diagnostic));
        }
        text
    }

    /// RFC 3464 §2.2 per-message fields, then §2.3 per-recipient fields.
    fn status_fields(&self, host: &str, failures: &[Failure]) -> String {
        let mut text = format!(
            "Reporting-MTA: dns; {host}\r\nArrival-Date: {}\r\n",
            rfc5322_date(self.arrival)
        );
        for f in failures {
            text.push_str(&format!(
                "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n\
                 Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {}\r\n",
                f.recipient,
                f.status,
                f.diagnostic,
                rfc5322_date(self.now)
            ));
        }
        text
    }
}

/// The header section of `message` with its final CRLF, cut at a line end
/// to at most [`MAX_HEADER_BYTES`].
fn header_of(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    let header = &message[..end.min(MAX_HEADER_BYTES)];
    match header.windows(2).rposition(|w| w == b"\r\n") {
        Some(p) => &header[..p + 2],
        None => &[],
    }
}

/// `text` on one line of 7-bit text (the report parts declare no transfer
/// encoding): control characters become spaces, other non-ASCII `?`; at
/// most [`MAX_DIAGNOSTIC`] bytes.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len().min(MAX_DIAGNOSTIC));
    for c in text.trim().chars() {
        if line.len() + c.len_utf8() > MAX_DIAGNOSTIC {
            break;
        }
        line.push(match c {
            ' '..='~' => c,
            _ if c.is_control() => ' ',
            _ => '?',
        });
    }
    line
}

/// The first enhanced status code (`x.y.z`, RFC 3463 §2) in a reply.
fn enhanced_code(reply: &str) -> Option<&str> {
    reply.split_whitespace().take(3).find(|word| {
        let parts: Vec<&str> = word.split('.').collect();
        parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// RFC 5322 §3.3 date-time in UTC, from Unix seconds.
fn rfc5322_date(unix: i64) -> String {
    mail_parser::DateTime::from_timestamp(unix).to_rfc822()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates_as_rfc5322_utc() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn takes_the_enhanced_code_from_the_reply() {
        assert_eq!(enhanced_code("550 5.1.1 no such user"), Some("5.1.1"));
        assert_eq!(enhanced_code("554 rejected"), None);
        assert_eq!(
            Failure::rejected("a@b", "550 5.1.1 unknown").status,
            "5.1.1"
        );
        assert_eq!(Failure::rejected("a@b", "NXDOMAIN").status, "5.0.0");
        assert_eq!(Failure::expired("a@b", "421 busy").status, "4.4.7");
    }

    #[test]
    fn diagnostics_are_one_bounded_line() {
        let line = one_line(&format!("550 bad\r\nInjected: yes {}", "x".repeat(1000)));
        assert!(!line.contains('\r') && !line.contains('\n'));
        assert!(line.len() <= MAX_DIAGNOSTIC);
        assert_eq!(
            one_line("550 Empfänger\tunbekannt"),
            "550 Empf?nger unbekannt"
        );
    }

    #[test]
    fn copies_only_the_original_header() {
        let msg = b"From: a@b\r\nSubject: s\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n";
        assert_eq!(header_of(msg), b"From: a@b\r\nSubject: s\r\n");
        let long = format!("X: {}\r\nY: z\r\n\r\nbody", "a".repeat(MAX_HEADER_BYTES));
        assert!(header_of(long.as_bytes()).is_empty());
    }

    #[test]
    fn renders_a_multipart_report_with_one_block_per_recipient() {
        let domain = MailDomain::parse("example.org").unwrap();
        let report = Report {
            domain: &domain,
            sender: "alice@example.org",
            id: "7".to_owned(),
            arrival: 0,
            now: 60,
            unique: 1,
        };
        let failures = [
            Failure::rejected("bob@peer.test", "550 5.1.1 unknown user"),
            Failure::expired("carol@peer.test", "421 try later"),
        ];
        let dsn =
            String::from_utf8(report.render(&failures, b"Subject: hi\r\n\r\nsecret")).unwrap();
        assert!(dsn.contains("From: Mail Delivery System <MAILER-DAEMON@example.org>\r\n"));
        assert!(dsn.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(dsn.contains(
            "Final-Recipient: rfc822; bob@peer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ));
        assert!(dsn.contains("Status: 4.4.7\r\n"));
        assert!(dsn.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\n"));
        assert!(!dsn.contains("secret"));
        assert!(dsn.ends_with("--=_bounce_7_1--\r\n"));
    }

    #[test]
    fn builds_unsigned_bounces_with_unique_ids_for_local_failures() {
        let domain = MailDomain::parse("example.org").unwrap();
        let failures = [Failure::new(
            "bob@example.org",
            "5.2.2",
            "552 5.2.2 Quota exceeded",
        )];
        let original = b"From: alice@example.org\r\n\r\nbody";
        let first = String::from_utf8(build(
            &domain,
            "alice@example.org",
            &failures,
            original,
            None,
        ))
        .unwrap();
        assert!(first.starts_with("From: Mail Delivery System"));
        assert!(first.contains("To: <alice@example.org>\r\n"));
        assert!(first.contains(
            "Final-Recipient: rfc822; bob@example.org\r\nAction: failed\r\nStatus: 5.2.2\r\n"
        ));
        assert!(first.contains("Diagnostic-Code: smtp; 552 5.2.2 Quota exceeded\r\n"));
        assert!(!first.contains("DKIM-Signature"));
        let second = build(&domain, "alice@example.org", &failures, original, None);
        assert_ne!(first.as_bytes(), second.as_slice());
    }
}
