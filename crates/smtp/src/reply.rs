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

/// Declares [`Status`] with the parts of each entry, and the list of all
/// entries for the tests.
macro_rules! catalogue {
    ($($(#[$doc:meta])* $name:ident => $parts:expr,)*) => {
        /// The replies of the protocol itself: every reply that is not the
        /// refusal of a message or a recipient (those are
        /// `chatmail_inbound::Refusal`, shared with `/mxdeliv`). Each code,
        /// enhanced code and text is written once, below.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Status {
            $($(#[$doc])* $name,)*
        }

        impl Status {
            /// Every entry, for the checks of the catalogue.
            #[cfg(test)]
            pub(crate) const ALL: &[Status] = &[$(Status::$name),*];

            /// The code, the enhanced status code (RFC 3463) if any, and
            /// the text.
            pub const fn parts(self) -> (u16, Option<&'static str>, &'static str) {
                match self {
                    $(Status::$name => $parts,)*
                }
            }
        }
    };
}

catalogue! {
    /// `RSET`, `NOOP`, the end of `DATA`.
    Ok => (250, Some("2.0.0"), "OK"),
    /// `MAIL FROM` accepted.
    SenderOk => (250, Some("2.1.0"), "OK"),
    /// `RCPT TO` accepted.
    RecipientOk => (250, Some("2.1.5"), "OK"),
    Help => (214, Some("2.0.0"), "See RFC 5321 and RFC 4954"),
    /// RFC 5321 §3.5.3: no address verification.
    CannotVerify => (252, Some("2.0.0"), "Cannot VRFY user, but will accept message"),
    Bye => (221, Some("2.0.0"), "Bye"),
    TlsReady => (220, Some("2.0.0"), "Ready to start TLS"),
    StartData => (354, None, "Start mail input; end with <CRLF>.<CRLF>"),
    AuthSucceeded => (235, Some("2.7.0"), "Authentication successful"),
    /// A `334` challenge of `AUTH LOGIN` for the username.
    UsernamePrompt => (334, None, crate::sasl::LOGIN_USERNAME),
    /// A `334` challenge of `AUTH LOGIN` for the password.
    PasswordPrompt => (334, None, crate::sasl::LOGIN_PASSWORD),
    /// An empty `334` challenge (`AUTH PLAIN` without initial response).
    EmptyPrompt => (334, None, ""),
    LineTooLong => (500, Some("5.5.2"), "Line too long"),
    Unrecognized => (500, Some("5.5.1"), "Command unrecognized"),
    SyntaxError => (501, Some("5.5.4"), "Syntax error in parameters"),
    SenderSyntax => (501, Some("5.1.7"), "Bad sender address syntax"),
    RecipientSyntax => (501, Some("5.1.3"), "Bad recipient address syntax"),
    UnsupportedParameter => (555, Some("5.5.4"), "Unsupported parameter"),
    UnknownMechanism => (504, Some("5.5.4"), "Unrecognized authentication type"),
    TlsActive => (503, Some("5.5.1"), "TLS already active"),
    HelloFirst => (503, Some("5.5.1"), "Send EHLO first"),
    NestedMail => (503, Some("5.5.1"), "Nested MAIL command"),
    NeedMail => (503, Some("5.5.1"), "Need MAIL command"),
    AlreadyAuthenticated => (503, Some("5.5.1"), "Already authenticated"),
    AuthDuringMail => (503, Some("5.5.1"), "Not allowed during a mail transaction"),
    /// The MX takes no logins (docs/specifications.md §3).
    AuthNotOffered => (502, Some("5.5.1"), "AUTH not available on this port"),
    /// RFC 3207 §4: plain text before `STARTTLS`.
    TlsRequired => (530, Some("5.7.0"), "Must issue a STARTTLS command first"),
    /// RFC 4954 §6.
    AuthRequired => (530, Some("5.7.0"), "Authentication required"),
    CredentialsInvalid => (535, Some("5.7.8"), "Authentication credentials invalid"),
    AuthCancelled => (501, Some("5.0.0"), "Authentication cancelled"),
    CannotDecode => (501, Some("5.5.2"), "Cannot decode response"),
    /// RFC 4954 §6: the password could not be checked now.
    AuthTemporary => (454, Some("4.7.0"), "Temporary authentication failure"),
    /// Too many password checks in flight.
    AuthBusy => (454, Some("4.7.0"), "Server busy, try again later"),
    /// Too many recent failed logins from the client's address; the
    /// password was not checked.
    AuthThrottled => (454, Some("4.7.0"), "Too many failed logins, try again later"),
    /// The connection is closed after too many failed attempts.
    TooManyAuthFailures => (421, Some("4.7.0"), "Too many failed authentications"),
}

impl From<Status> for Reply {
    fn from(status: Status) -> Self {
        match status.parts() {
            (code, Some(enhanced), text) => Self::line(code, format!("{enhanced} {text}")),
            (code, None, text) => Self::line(code, text),
        }
    }
}

/// Why the server closes the connection on its own, with a `421` naming
/// the host (RFC 5321 §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The client stayed silent too long (RFC 5321 §4.5.3.2.7).
    Timeout,
    ShuttingDown,
    /// The connection was idle in a full pool and makes room for another.
    Evicted,
}

impl Closing {
    /// The `421` reply for `host`.
    pub fn reply(self, host: &str) -> Reply {
        let (enhanced, text) = match self {
            Closing::Timeout => ("4.4.2", "Timeout"),
            Closing::ShuttingDown => ("4.3.2", "Service shutting down"),
            Closing::Evicted => ("4.7.0", "Too many connections, closing an idle one"),
        };
        Reply::line(421, format!("{enhanced} {host} {text}"))
    }
}

/// The greeting (RFC 5321 §4.2, `220`).
pub fn greeting(host: &str) -> Reply {
    Reply::line(220, format!("{host} ESMTP madmail"))
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
    fn every_status_has_a_matching_enhanced_class() {
        for &status in Status::ALL {
            let (code, enhanced, _) = status.parts();
            assert!((200..600).contains(&code), "{status:?}");
            // RFC 3463 §2: the class digit is the reply code's first digit.
            if let Some(enhanced) = enhanced {
                let class = enhanced.as_bytes()[0] - b'0';
                assert_eq!(u16::from(class), code / 100, "{status:?}");
            }
        }
    }

    #[test]
    fn statuses_are_byte_exact_on_the_wire() {
        assert_eq!(wire(&Status::Ok.into()), "250 2.0.0 OK\r\n");
        assert_eq!(
            wire(&Status::StartData.into()),
            "354 Start mail input; end with <CRLF>.<CRLF>\r\n"
        );
        assert_eq!(wire(&Status::EmptyPrompt.into()), "334 \r\n");
        let timeout = Closing::Timeout.reply("mx.example.org");
        assert_eq!(wire(&timeout), "421 4.4.2 mx.example.org Timeout\r\n");
    }

    #[test]
    fn the_send_rate_refusal_keeps_the_reference_text() {
        let refusal = chatmail_inbound::Refusal::send_rate("a@example.org");
        let expected = "450 4.7.1: Too much mail from a@example.org\r\n";
        assert_eq!(wire(&Reply::from(&refusal)), expected);
    }

    #[test]
    fn splits_the_gate_reject_text() {
        let reply = Reply::from(&chatmail_inbound::Refusal::unencrypted());
        assert_eq!(wire(&reply), format!("{}\r\n", chatmail_gate::REJECT_TEXT));
    }
}
