//! chatmail-gate: the encryption gate (docs/specifications.md §2). Pure: no I/O, no
//! panics on any input.
//!
//! Flow of [`check`]:
//! 1. refuse input over [`MAX_MESSAGE_SIZE`], parse the MIME tree once;
//!    refuse a part with a structural header (`Content-Type`,
//!    `Content-Transfer-Encoding`, `MIME-Version`) given twice, since
//!    readers disagree on which one counts;
//! 2. `multipart/encrypted` messages go through [`mime`] (rules 1-4),
//!    [`armor`] (rule 4) and [`packets`] (rule 5) -> [`Accepted::Encrypted`];
//! 3. anything else may still be one of the [`exceptions`]: SecureJoin
//!    (both directions), Autocrypt Setup Message (submission), bounce
//!    (inbound, and only from the null envelope sender);
//! 4. otherwise [`Rejected`], whose variant is the failed rule (the MIME,
//!    armor and packet variants carry the typed cause of those modules,
//!    an exception that was claimed but broken wins over them); its
//!    `Display` is for the log. The client only ever sees [`REJECT_TEXT`].
//!
//! Invariants: nothing is decrypted; every step is linear in the input;
//! a panic inside a third-party parser becomes a rejection, never a crash.
//!
//! The crate also owns [`headers`], the top-level header helpers that
//! submission and inbound share (split, fields with continuations, removal
//! of named fields, the single `From:` address): pure and panic-free too.

pub mod armor;
pub mod exceptions;
pub mod headers;
pub mod mime;
pub mod packets;

use std::panic::{AssertUnwindSafe, catch_unwind};

use mail_parser::{Message, MessageParser};

/// Where a message enters the relay; the allowed exceptions differ.
#[derive(Debug, Clone, Copy)]
pub enum Direction<'a> {
    /// Authenticated submission (465/587, IMAP APPEND).
    Submission {
        /// Envelope sender (= the login).
        sender: &'a str,
        /// Envelope recipients.
        recipients: &'a [String],
    },
    /// From another relay (port 25, `/mxdeliv`).
    Inbound {
        /// Whether the envelope sender is null (`<>`): only then may the
        /// message be a bounce (RFC 5321 §4.5.5, RFC 3464 §2).
        null_sender: bool,
    },
}

/// Why a message was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    Encrypted,
    SecureJoin,
    AutocryptSetup,
    Bounce,
}

/// Why a message was refused, for the log; the client only ever sees
/// [`REJECT_TEXT`]. No variant carries message content, only rule names,
/// tags, counts and offsets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The input is over [`MAX_MESSAGE_SIZE`] and was not parsed.
    #[error("message of {len} octets larger than the gate's size cap")]
    TooLarge { len: usize },
    /// The armor given to [`check_armor`] is over [`MAX_MESSAGE_SIZE`].
    #[error("armor of {len} octets larger than the gate's size cap")]
    ArmorTooLarge { len: usize },
    /// mail-parser found no message in the input.
    #[error("not an RFC 5322 message")]
    NotMessage,
    /// A part carries a structural header twice (step 1 of [`check`]).
    #[error("more than one {name} header in one part")]
    RepeatedHeader { name: &'static str },
    /// The MIME structure is not that of an encrypted message (rules 1-4).
    /// This and the next two are reported only when no exception is claimed.
    #[error(transparent)]
    Mime(mime::MimeError),
    /// The armor of the encrypted payload is malformed (rule 4).
    #[error(transparent)]
    Armor(armor::ArmorError),
    /// The packet sequence inside the armor is not an encrypted message
    /// (rule 5).
    #[error("packets: {0}")]
    Packets(packets::PacketError),
    /// The message claims an exception but breaks its rules.
    #[error(transparent)]
    Exception(exceptions::ExceptionError),
    /// A third-party parser panicked while reading the message.
    #[error("parser panicked")]
    ParserPanicked,
    /// The OpenPGP packet parser panicked while reading the armor.
    #[error("packet parser panicked")]
    PacketParserPanicked,
}

impl Rejected {
    /// Whether a parser panicked: a finding for the fuzzers and the
    /// no-panic tests, never a verdict on the message itself.
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::ParserPanicked | Self::PacketParserPanicked)
    }
}

/// The SMTP reply text for every refusal.
pub const REJECT_TEXT: &str = "523 5.7.1 Encryption Needed: Invalid Unencrypted Mail";

/// Largest message the gate parses (the relay default limit is 30 MiB; the
/// SMTP and HTTP front ends enforce the configured limit before this).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Checks a raw RFC 5322 message.
pub fn check(message: &[u8], direction: Direction<'_>) -> Result<Accepted, Rejected> {
    if message.len() > MAX_MESSAGE_SIZE {
        return Err(Rejected::TooLarge { len: message.len() });
    }
    // The parsers below are third-party code fed with hostile input: a bug
    // there must cost one message, not the connection or the process.
    catch_unwind(AssertUnwindSafe(|| check_parsed(message, direction)))
        .unwrap_or(Err(Rejected::ParserPanicked))
}

/// Checks the ASCII-armored OpenPGP message of a `multipart/encrypted`
/// payload (rules 4 and 5): armor syntax, then the packet sequence.
pub fn check_armor(armor: &[u8], direction: Direction<'_>) -> Result<(), Rejected> {
    if armor.len() > MAX_MESSAGE_SIZE {
        return Err(Rejected::ArmorTooLarge { len: armor.len() });
    }
    catch_unwind(|| {
        let data = armor::decode(armor, direction).map_err(Rejected::Armor)?;
        packets::check(&data).map_err(Rejected::Packets)
    })
    .unwrap_or(Err(Rejected::PacketParserPanicked))
}

fn check_parsed(raw: &[u8], direction: Direction<'_>) -> Result<Accepted, Rejected> {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Err(Rejected::NotMessage);
    };
    // Two readers of one message must never see different structures.
    if let Some(name) = mime::repeated_structural_header(&message) {
        return Err(Rejected::RepeatedHeader { name });
    }
    let cause = match encrypted(&message, direction) {
        Ok(()) => return Ok(Accepted::Encrypted),
        Err(cause) => cause,
    };
    match exception(&message, direction) {
        Ok(Some(accepted)) => Ok(accepted),
        Ok(None) => Err(cause),
        Err(exception_cause) => Err(exception_cause),
    }
}

/// Rules 1-5 of docs/specifications.md §2.
fn encrypted(message: &Message<'_>, direction: Direction<'_>) -> Result<(), Rejected> {
    let armored = mime::encrypted_payload(message).map_err(Rejected::Mime)?;
    check_armor(armored, direction)
}

/// The unencrypted exceptions; `Ok(None)` when none is claimed.
fn exception(
    message: &Message<'_>,
    direction: Direction<'_>,
) -> Result<Option<Accepted>, Rejected> {
    if exceptions::is_securejoin(message).map_err(Rejected::Exception)? {
        return Ok(Some(Accepted::SecureJoin));
    }
    let accepted = match direction {
        Direction::Submission { sender, recipients } => {
            exceptions::is_autocrypt_setup(message, sender, recipients)
                .then_some(Accepted::AutocryptSetup)
        }
        Direction::Inbound { null_sender } => {
            (null_sender && exceptions::is_bounce(message)).then_some(Accepted::Bounce)
        }
    };
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `gate` fuzz target: mail-parser panics ("Invalid part
    /// ID, could not find multipart"); the gate refuses the message.
    #[test]
    fn a_message_that_makes_the_mime_parser_panic_is_refused() {
        let data = include_bytes!("../testdata/fuzz-invalid-part-id.bin");
        let (pick, message) = data.split_first().unwrap();
        let direction = match pick % 3 {
            1 => Direction::Inbound { null_sender: false },
            2 => Direction::Inbound { null_sender: true },
            _ => Direction::Submission {
                sender: "alice0001@example.org",
                recipients: &["bob000001@example.org".to_owned()],
            },
        };
        assert_eq!(check(message, direction), Err(Rejected::ParserPanicked));
    }

    const INBOUND: Direction<'static> = Direction::Inbound { null_sender: false };

    const PLAIN: &[u8] =
        b"From: a@example.org\r\nSubject: my-secret-subject\r\n\r\nmy-secret-body\r\n";

    #[test]
    fn reject_text_is_the_chatmail_wording() {
        assert_eq!(
            REJECT_TEXT,
            "523 5.7.1 Encryption Needed: Invalid Unencrypted Mail"
        );
    }

    #[test]
    fn rejection_cause_never_quotes_the_message() {
        let Err(rejected) = check(PLAIN, INBOUND) else {
            panic!("plain text accepted");
        };
        assert_eq!(rejected, Rejected::Mime(mime::MimeError::NotEncrypted));
        let cause = rejected.to_string();
        assert!(!cause.contains("secret"), "{cause}");
        assert!(!cause.is_empty());
    }

    #[test]
    fn securejoin_header_on_plain_text_is_judged_as_securejoin() {
        let raw = b"Secure-Join: vc-request\r\n\r\nsecure-join: vc-request\r\n";
        let sub = Direction::Submission {
            sender: "a@example.org",
            recipients: &[],
        };
        assert_eq!(check(raw, sub), Ok(Accepted::SecureJoin));
        let spam = b"Secure-Join: vc-request\r\n\r\nbuy now\r\n";
        assert_eq!(
            check(spam, INBOUND),
            Err(Rejected::Exception(
                exceptions::ExceptionError::SecureJoinBody
            ))
        );
    }

    #[test]
    fn rejects_input_that_is_not_a_message() {
        assert_eq!(check(b"", INBOUND), Err(Rejected::NotMessage));
        assert_eq!(
            check_armor(b"", INBOUND),
            Err(Rejected::Armor(armor::ArmorError::MissingBegin))
        );
    }
}
