//! Why a message or recipient was refused, as one SMTP reply (RFC 5321
//! §4.2, enhanced codes RFC 3463) with its `/mxdeliv` status (docs/specifications.md §6).

use std::borrow::Cow;
use std::fmt;

use chatmail_dkim::OriginError;
use chatmail_limits::SpoolError;
use chatmail_metrics::Reason;

/// What kind of refusal; decides the HTTP status of `/mxdeliv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A local address without an account.
    UnknownUser,
    /// A recipient outside the local domain (no open relay).
    RelayDenied,
    /// The federation policy refuses the peer domain.
    Policy,
    /// Over `max_message_size`.
    TooBig,
    /// The message itself fails a check (DKIM, encryption gate, From).
    Content,
    /// The recipient's mailbox is full (docs/specifications.md §5).
    Quota,
    /// Try again later (DNS or store failure).
    Temporary,
    /// The `/mxdeliv` request itself is malformed (its envelope headers,
    /// a body cut short).
    Malformed,
}

/// One refusal: the SMTP reply and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SMTP reply code, e.g. 554.
    pub code: u16,
    /// Enhanced status code, e.g. `5.7.1`.
    pub enhanced: &'static str,
    /// Reply text after the enhanced code.
    pub text: Cow<'static, str>,
    /// What kind of refusal.
    pub kind: Kind,
    /// The finer cause, for the metrics (`chatmail_metrics`).
    pub reason: Reason,
}

impl Refusal {
    const fn new(
        code: u16,
        enhanced: &'static str,
        text: &'static str,
        (kind, reason): (Kind, Reason),
    ) -> Self {
        Self {
            code,
            enhanced,
            text: Cow::Borrowed(text),
            kind,
            reason,
        }
    }

    pub const fn unknown_user() -> Self {
        let kind = (Kind::UnknownUser, Reason::Recipient);
        Self::new(550, "5.1.1", "User unknown", kind)
    }

    pub const fn no_recipients() -> Self {
        let kind = (Kind::UnknownUser, Reason::Recipient);
        Self::new(554, "5.5.1", "No valid recipients", kind)
    }

    pub const fn relay_denied() -> Self {
        let kind = (Kind::RelayDenied, Reason::Recipient);
        Self::new(554, "5.7.1", "Relay access denied", kind)
    }

    pub const fn policy() -> Self {
        let text = "Domain not allowed by the federation policy";
        Self::new(554, "5.7.1", text, (Kind::Policy, Reason::Policy))
    }

    pub const fn bad_sender() -> Self {
        let kind = (Kind::Content, Reason::Sender);
        Self::new(553, "5.1.7", "Bad sender address syntax", kind)
    }

    pub const fn too_big() -> Self {
        let kind = (Kind::TooBig, Reason::Size);
        Self::new(552, "5.3.4", "Message exceeds maximum size", kind)
    }

    /// RFC 3463 §3.3: X.2.2 mailbox full; permanent, as on the reference
    /// relay.
    pub const fn quota_exceeded() -> Self {
        Self::new(552, "5.2.2", "Quota exceeded", (Kind::Quota, Reason::Quota))
    }

    pub const fn invalid_from() -> Self {
        let kind = (Kind::Content, Reason::From);
        Self::new(554, "5.7.1", "Invalid FROM header", kind)
    }

    /// A From address of this relay's own domain on a connection from
    /// another relay: local users submit on 465/587, never inbound.
    pub const fn local_from() -> Self {
        let text = "Local sender address not accepted from another relay";
        Self::new(554, "5.7.1", text, (Kind::Content, Reason::From))
    }

    /// An IP-literal From domain on a connection from another address.
    pub const fn foreign_ip_literal() -> Self {
        let text = "IP literal sender does not match the connecting address";
        Self::new(554, "5.7.1", text, (Kind::Content, Reason::Dkim))
    }

    /// No room for the body in the memory or disk budgets now (RFC 3463
    /// §3.4: X.3.2, system not accepting network messages).
    pub const fn busy() -> Self {
        let text = "Too much mail in flight, try again later";
        Self::new(451, "4.3.2", text, (Kind::Temporary, Reason::Temporary))
    }

    /// Too many unknown recipients from the client's address lately.
    pub const fn probing() -> Self {
        let text = "Too many unknown recipients, try again later";
        Self::new(450, "4.7.1", text, (Kind::Temporary, Reason::Recipient))
    }

    /// The disk is full (RFC 3463 §3.4: X.3.1, mail system full; RFC 5321
    /// §4.2.2: 452, insufficient system storage).
    pub const fn disk_full() -> Self {
        let text = "Insufficient system storage";
        Self::new(452, "4.3.1", text, (Kind::Temporary, Reason::Temporary))
    }

    /// A store failure: [`Refusal::disk_full`] when the disk is full, else
    /// a plain temporary failure.
    pub fn of_store(error: &chatmail_store::StoreError) -> Self {
        if error.is_disk_full() {
            Self::disk_full()
        } else {
            Self::temporary()
        }
    }

    pub const fn temporary() -> Self {
        let kind = (Kind::Temporary, Reason::Temporary);
        Self::new(451, "4.3.0", "Temporary failure", kind)
    }

    /// The encryption gate's refusal, `chatmail_gate::REJECT_TEXT`
    /// (a test keeps the two equal).
    pub const fn unencrypted() -> Self {
        let text = "Encryption Needed: Invalid Unencrypted Mail";
        Self::new(523, "5.7.1", text, (Kind::Content, Reason::Unencrypted))
    }

    /// More recipients than `limits.max_recipients` (RFC 5321 §4.5.3.1.10).
    pub const fn too_many_recipients() -> Self {
        let kind = (Kind::Temporary, Reason::Recipient);
        Self::new(452, "4.5.3", "Too many recipients", kind)
    }

    /// Submission: an envelope sender that is not the login's address.
    pub const fn not_owned() -> Self {
        let text = "Sender address rejected: not owned by user";
        Self::new(553, "5.7.1", text, (Kind::Content, Reason::Sender))
    }

    /// Submission to a remote recipient while the outbound queue is off.
    pub const fn no_federation() -> Self {
        let text = "Federation not available yet: only local recipients";
        Self::new(451, "4.7.0", text, (Kind::Temporary, Reason::Policy))
    }

    /// A bare CR or LF in DATA (the forms SMTP smuggling uses).
    pub const fn bare_line_ending() -> Self {
        let text = "Bare CR or LF not allowed";
        Self::new(500, "5.5.2", text, (Kind::Content, Reason::Syntax))
    }

    /// Submission: the login sent more than `max_user_send_per_minute`.
    /// The text is the reference relay's, colon included, which clients
    /// and scripts match on (docs/specifications.md §2).
    pub fn send_rate(address: &str) -> Self {
        Self {
            code: 450,
            enhanced: "4.7.1:",
            text: Cow::Owned(format!("Too much mail from {address}")),
            kind: Kind::Temporary,
            reason: Reason::Rate,
        }
    }

    /// `/mxdeliv`: more than one `X-Mail-From` header.
    pub const fn two_senders() -> Self {
        let kind = (Kind::Malformed, Reason::Syntax);
        Self::new(501, "5.5.4", "More than one X-Mail-From", kind)
    }

    /// `/mxdeliv`: an `X-Mail-From` that is no address.
    pub const fn bad_sender_header() -> Self {
        let kind = (Kind::Malformed, Reason::Syntax);
        Self::new(501, "5.1.7", "Bad X-Mail-From", kind)
    }

    /// `/mxdeliv`: an `X-Mail-To` that is no address.
    pub const fn bad_recipient_header() -> Self {
        let kind = (Kind::Malformed, Reason::Syntax);
        Self::new(501, "5.1.3", "Bad X-Mail-To", kind)
    }

    /// `/mxdeliv`: no `X-Mail-To` header at all.
    pub const fn no_recipient_header() -> Self {
        let kind = (Kind::Malformed, Reason::Syntax);
        Self::new(554, "5.5.1", "No X-Mail-To recipient", kind)
    }

    /// `/mxdeliv`: the body ended in a broken stream.
    pub const fn body_not_received() -> Self {
        let kind = (Kind::Malformed, Reason::Syntax);
        Self::new(451, "4.4.2", "Body not received", kind)
    }

    /// True for 4xx: the sender should retry.
    pub fn is_temporary(&self) -> bool {
        self.code < 500
    }

    /// The `/mxdeliv` status (docs/specifications.md §6): 400 content,
    /// quota or a malformed request (with the SMTP text), 403 policy, 404
    /// no local recipient, 413 too large; 503 for temporary failures (the
    /// sender retries, as after an SMTP 4xx).
    pub fn http_status(&self) -> u16 {
        match self.kind {
            Kind::UnknownUser | Kind::RelayDenied => 404,
            Kind::Policy => 403,
            Kind::TooBig => 413,
            Kind::Content | Kind::Quota | Kind::Malformed => 400,
            Kind::Temporary => 503,
        }
    }
}

impl From<OriginError> for Refusal {
    fn from(error: OriginError) -> Self {
        let (kind, reason) = if error.is_temporary() {
            (Kind::Temporary, Reason::Temporary)
        } else {
            (Kind::Content, Reason::Dkim)
        };
        Self {
            code: error.code(),
            enhanced: error.enhanced(),
            text: Cow::Borrowed(error.text()),
            kind,
            reason,
        }
    }
}

/// Why a body could not be spooled; an I/O failure is temporary.
impl From<&SpoolError> for Refusal {
    fn from(error: &SpoolError) -> Self {
        match error {
            SpoolError::TooBig => Refusal::too_big(),
            SpoolError::Busy => Refusal::busy(),
            SpoolError::Io(_) => Refusal::temporary(),
            SpoolError::DiskFull => Refusal::disk_full(),
        }
    }
}

/// The full reply line without CRLF, e.g. `550 5.1.1 User unknown`.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_refusal_reproduces_the_reject_text() {
        let refusal = Refusal::unencrypted();
        assert_eq!(refusal.to_string(), chatmail_gate::REJECT_TEXT);
        assert_eq!(refusal.code, 523);
        assert_eq!(refusal.http_status(), 400);
        assert_eq!(refusal.reason, Reason::Unencrypted);
    }

    #[test]
    fn dkim_refusals_keep_the_exact_texts() {
        let refusal = Refusal::from(OriginError::NoSignature);
        assert_eq!(refusal.to_string(), "554 5.7.1 No DKIM signature found");
        assert_eq!(refusal.http_status(), 400);
        let refusal = Refusal::from(OriginError::NoValidSignature);
        assert_eq!(
            refusal.to_string(),
            "554 5.7.1 No valid DKIM signature found"
        );
        assert_eq!(refusal.reason, Reason::Dkim);
        let temp = Refusal::from(OriginError::TempFail);
        assert!(temp.is_temporary());
        assert_eq!((temp.code, temp.http_status()), (451, 503));
        assert_eq!(temp.reason, Reason::Temporary);
    }

    #[test]
    fn http_statuses_follow_the_federation_table() {
        assert_eq!(Refusal::unknown_user().http_status(), 404);
        assert_eq!(Refusal::relay_denied().http_status(), 404);
        assert_eq!(Refusal::policy().http_status(), 403);
        assert_eq!(Refusal::too_big().http_status(), 413);
        assert_eq!(Refusal::quota_exceeded().http_status(), 400);
        assert_eq!(
            Refusal::quota_exceeded().to_string(),
            "552 5.2.2 Quota exceeded"
        );
        assert_eq!(
            Refusal::too_big().to_string(),
            "552 5.3.4 Message exceeds maximum size"
        );
        assert_eq!(
            Refusal::unknown_user().to_string(),
            "550 5.1.1 User unknown"
        );
    }
}
