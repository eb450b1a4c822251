//! Status responses (RFC 3501 §7.1): every `OK`, `NO`, `BAD` and `BYE` the
//! server sends, with its response code, in one catalogue.
//!
//! Each reply has a named constructor on [`Status`], which writes its kind,
//! code and text once; [`Status::encode`] is the only writer of a status
//! line, tagged or untagged. Handlers return a [`Status`] for the tagged
//! reply (inside `session::Done`) and encode untagged ones into the output
//! buffer themselves.
//!
//! Invariant: a status is one line. The encoder writes the tag and the text
//! as 7-bit TEXT-CHARs (RFC 3501 §9), replacing CR, LF, every other control
//! character and non-ASCII with `?`, and a [`Code`] holds only numbers and
//! fixed strings, so no value a client controls can start another response.
//!
//! The codes are this crate's own enum rather than imap-codec's `Code`: the
//! crate uses imap-codec only to decode, half the codes sent here
//! (UNAVAILABLE, AUTHENTICATIONFAILED, PRIVACYREQUIRED, CANNOT,
//! NONEXISTENT, ALREADYEXISTS, LIMIT, METADATA) would be unvalidated
//! `CodeOther` bytes there, and its tags and capabilities would have to be
//! rebuilt from the strings the session already holds.

use std::borrow::Cow;
use std::fmt;

use crate::flags::uid_set;

/// The status condition (RFC 3501 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ok,
    No,
    Bad,
    /// Untagged only: the server closes the connection.
    Bye,
}

impl Kind {
    fn keyword(self) -> &'static str {
        match self {
            Kind::Ok => "OK",
            Kind::No => "NO",
            Kind::Bad => "BAD",
            Kind::Bye => "BYE",
        }
    }
}

/// The response codes the server sends, written `[CODE ...]` before the
/// text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Code {
    /// RFC 5530 §3: the mailbox to create exists.
    AlreadyExists,
    /// RFC 4315 §3: the UID an APPEND gave the message.
    AppendUid { uidvalidity: u32, uid: u32 },
    /// RFC 5530 §3: wrong credentials.
    AuthenticationFailed,
    /// RFC 3501 §7.1: the charsets SEARCH supports, space separated.
    BadCharset(&'static str),
    /// RFC 5530 §3: the operation cannot succeed, whatever the retry.
    Cannot,
    /// RFC 3501 §7.1: the capability list, space separated.
    Capability(&'static str),
    /// RFC 4978 §3: COMPRESS a second time.
    CompressionActive,
    /// RFC 4315 §3: the UIDs of the copies, pairwise with the sources.
    CopyUid {
        uidvalidity: u32,
        sources: Vec<u32>,
        copies: Vec<u32>,
    },
    /// RFC 5530 §3: a server limit was reached.
    Limit,
    /// RFC 5464 §4.2.1, §4.3.
    Metadata(Metadata),
    /// RFC 5530 §3: the mailbox or quota root does not exist.
    Nonexistent,
    /// RFC 5530 §3 (RFC 9208 §4.3): the quota is used up.
    OverQuota,
    /// RFC 3501 §7.1: the flags a STORE can change; `keywords` adds `\*`.
    PermanentFlags { flags: &'static str, keywords: bool },
    /// RFC 5530 §3: refused over an unencrypted connection.
    PrivacyRequired,
    /// RFC 3501 §7.1.
    ReadOnly,
    /// RFC 3501 §7.1.
    ReadWrite,
    /// RFC 7889 §4: a literal or message over the limit.
    TooBig,
    /// RFC 3501 §7.1: the target mailbox does not exist.
    TryCreate,
    /// RFC 3501 §7.1.
    UidNext(u32),
    /// RFC 3501 §7.1.
    UidValidity(u32),
    /// RFC 5530 §3: a temporary failure; the command may work later.
    Unavailable,
    /// RFC 3501 §7.1: the sequence number of the first unseen message.
    Unseen(usize),
}

/// The METADATA response codes (RFC 5464 §4.2.1, §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Metadata {
    TooMany,
    NoPrivate,
    MaxSize(usize),
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::AlreadyExists => f.write_str("ALREADYEXISTS"),
            Code::AppendUid { uidvalidity, uid } => write!(f, "APPENDUID {uidvalidity} {uid}"),
            Code::AuthenticationFailed => f.write_str("AUTHENTICATIONFAILED"),
            Code::BadCharset(charsets) => write!(f, "BADCHARSET ({charsets})"),
            Code::Cannot => f.write_str("CANNOT"),
            Code::Capability(capabilities) => write!(f, "CAPABILITY {capabilities}"),
            Code::CompressionActive => f.write_str("COMPRESSIONACTIVE"),
            Code::CopyUid {
                uidvalidity,
                sources,
                copies,
            } => write!(
                f,
                "COPYUID {uidvalidity} {} {}",
                uid_set(sources),
                uid_set(copies)
            ),
            Code::Limit => f.write_str("LIMIT"),
            Code::Metadata(Metadata::TooMany) => f.write_str("METADATA TOOMANY"),
            Code::Metadata(Metadata::NoPrivate) => f.write_str("METADATA NOPRIVATE"),
            Code::Metadata(Metadata::MaxSize(max)) => write!(f, "METADATA MAXSIZE {max}"),
            Code::Nonexistent => f.write_str("NONEXISTENT"),
            Code::OverQuota => f.write_str("OVERQUOTA"),
            Code::PermanentFlags { flags, keywords } => {
                let star = match (keywords, flags.is_empty()) {
                    (false, _) => "",
                    (true, true) => "\\*",
                    (true, false) => " \\*",
                };
                write!(f, "PERMANENTFLAGS ({flags}{star})")
            }
            Code::PrivacyRequired => f.write_str("PRIVACYREQUIRED"),
            Code::ReadOnly => f.write_str("READ-ONLY"),
            Code::ReadWrite => f.write_str("READ-WRITE"),
            Code::TooBig => f.write_str("TOOBIG"),
            Code::TryCreate => f.write_str("TRYCREATE"),
            Code::UidNext(uid) => write!(f, "UIDNEXT {uid}"),
            Code::UidValidity(value) => write!(f, "UIDVALIDITY {value}"),
            Code::Unavailable => f.write_str("UNAVAILABLE"),
            Code::Unseen(seq) => write!(f, "UNSEEN {seq}"),
        }
    }
}

/// Why the server closes a connection: the reason its `BYE` gives
/// (RFC 3501 §7.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// LOGOUT (RFC 3501 §6.1.3).
    LoggingOut,
    ShuttingDown,
    /// The operator banned or deleted the account.
    AccountDisabled,
    /// No login within `limits.login_deadline`.
    LoginTooSlow,
    /// RFC 3501 §5.4: the autologout timer.
    Autologout,
    LineTooLong,
    /// Non-synchronizing literals are not advertised.
    NonSyncLiteral,
    /// Waiting without a login in a full pool, making room for another.
    Evicted,
    /// Refused at accept: the pool, or the client's share of it, is full.
    TooManyConnections,
}

impl Closing {
    /// The reason as the client reads it.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Closing::LoggingOut => "Logging out",
            Closing::ShuttingDown => "Server shutting down",
            Closing::AccountDisabled => "Account disabled by the operator",
            Closing::LoginTooSlow => "Login took too long",
            Closing::Autologout => "Autologout; idle for too long",
            Closing::LineTooLong => "Line too long",
            Closing::NonSyncLiteral => "Non-synchronizing literals are not supported",
            Closing::Evicted => "Too many connections, closing an idle one",
            Closing::TooManyConnections => "Too many connections",
        }
    }
}

/// One status response: kind, optional response code, human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    kind: Kind,
    code: Option<Code>,
    text: Cow<'static, str>,
}

impl Status {
    fn new(kind: Kind, code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Self {
        Status {
            kind,
            code,
            text: text.into(),
        }
    }

    fn ok(code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Kind::Ok, code, text)
    }

    fn no(code: Option<Code>, text: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Kind::No, code, text)
    }

    fn bad(text: impl Into<Cow<'static, str>>) -> Self {
        Status::new(Kind::Bad, None, text)
    }

    /// Appends the response line: tagged with `tag`, or untagged (`*`)
    /// for `None`. A BYE is always untagged (RFC 3501 §7.1.5).
    pub(crate) fn encode(&self, tag: Option<&str>, out: &mut Vec<u8>) {
        let tag = if self.kind == Kind::Bye { None } else { tag };
        push_text(out, tag.unwrap_or("*"));
        out.push(b' ');
        out.extend_from_slice(self.kind.keyword().as_bytes());
        if let Some(code) = &self.code {
            out.extend_from_slice(b" [");
            push_text(out, &code.to_string());
            out.push(b']');
        }
        out.push(b' ');
        push_text(out, &self.text);
        out.extend_from_slice(b"\r\n");
    }
}

/// Untagged statuses: the greeting, SELECT data, MOVE, IDLE, BYE.
impl Status {
    /// RFC 3501 §7.1.1: the greeting carries the capabilities.
    pub(crate) fn greeting(capabilities: &'static str) -> Self {
        Status::ok(Some(Code::Capability(capabilities)), "madmail ready")
    }
    pub(crate) fn first_unseen(seq: usize) -> Self {
        Status::ok(Some(Code::Unseen(seq)), "First unseen")
    }
    pub(crate) fn uid_validity(value: u32) -> Self {
        Status::ok(Some(Code::UidValidity(value)), "UIDs valid")
    }
    pub(crate) fn uid_next(uid: u32) -> Self {
        Status::ok(Some(Code::UidNext(uid)), "Predicted next UID")
    }
    /// `flags` and keywords may be stored.
    pub(crate) fn permanent_flags(flags: &'static str) -> Self {
        let code = Code::PermanentFlags {
            flags,
            keywords: true,
        };
        Status::ok(Some(code), "Flags permitted")
    }
    /// EXAMINE: nothing may be stored.
    pub(crate) fn no_permanent_flags() -> Self {
        let code = Code::PermanentFlags {
            flags: "",
            keywords: false,
        };
        Status::ok(Some(code), "Read-only mailbox")
    }
    /// RFC 6851 §4.3: the COPYUID of a MOVE, ahead of its EXPUNGEs.
    pub(crate) fn moved(uidvalidity: u32, sources: Vec<u32>, copies: Vec<u32>) -> Self {
        let code = Code::CopyUid {
            uidvalidity,
            sources,
            copies,
        };
        Status::ok(Some(code), "Moved")
    }
    /// The IDLE keepalive.
    pub(crate) fn still_here() -> Self {
        Status::ok(None, "Still here")
    }
    pub(crate) fn bye(closing: Closing) -> Self {
        let code = (closing == Closing::Evicted).then_some(Code::Unavailable);
        Status::new(Kind::Bye, code, closing.text())
    }
}

/// Tagged `OK`s.
impl Status {
    /// `<command> completed`, the OK of most commands.
    pub(crate) fn completed(command: &'static str) -> Self {
        Status::ok(None, format!("{command} completed"))
    }
    /// docs/specifications.md §4: Delta Chat reads the capabilities here.
    pub(crate) fn logged_in(capabilities: &'static str) -> Self {
        Status::ok(Some(Code::Capability(capabilities)), "Logged in")
    }
    pub(crate) fn begin_tls() -> Self {
        Status::ok(None, "Begin TLS negotiation now")
    }
    /// RFC 4978 §3.
    pub(crate) fn deflate_active() -> Self {
        Status::ok(None, "DEFLATE active")
    }
    pub(crate) fn idle_terminated() -> Self {
        Status::ok(None, "IDLE terminated")
    }
    /// SELECT (read-write) or EXAMINE (read-only), RFC 3501 §6.3.1-2.
    pub(crate) fn selected(read_only: bool) -> Self {
        if read_only {
            Status::ok(Some(Code::ReadOnly), "EXAMINE completed")
        } else {
            Status::ok(Some(Code::ReadWrite), "SELECT completed")
        }
    }
    /// RFC 4315 §3.
    pub(crate) fn appended(uidvalidity: u32, uid: u32) -> Self {
        let code = Code::AppendUid { uidvalidity, uid };
        Status::ok(Some(code), "APPEND completed")
    }
    /// RFC 4315 §3.
    pub(crate) fn copied(uidvalidity: u32, sources: Vec<u32>, copies: Vec<u32>) -> Self {
        let code = Code::CopyUid {
            uidvalidity,
            sources,
            copies,
        };
        Status::ok(Some(code), "COPY completed")
    }
}

/// Tagged `NO`s.
impl Status {
    /// RFC 3501 §6.2.3: `command` (LOGIN, AUTHENTICATE) needs TLS.
    pub(crate) fn privacy_required(command: &'static str) -> Self {
        let text = format!("{command} is disabled before STARTTLS");
        Status::no(Some(Code::PrivacyRequired), text)
    }
    /// Whatever the reason: a failed login looks the same.
    pub(crate) fn login_failed() -> Self {
        Status::no(Some(Code::AuthenticationFailed), "Invalid credentials")
    }
    pub(crate) fn unsupported_mechanism() -> Self {
        Status::no(Some(Code::Cannot), "Unsupported authentication mechanism")
    }
    /// Password checks are saturated.
    pub(crate) fn login_busy() -> Self {
        Status::no(Some(Code::Unavailable), "Server busy, try again later")
    }
    /// Too many recent failures from the client's address; the password
    /// was not checked.
    pub(crate) fn throttled() -> Self {
        let text = "Too many failed logins, try again later";
        Status::no(Some(Code::Unavailable), text)
    }
    /// The process's budget for literals is spent.
    pub(crate) fn literals_busy() -> Self {
        Status::no(Some(Code::Unavailable), "Server busy, try again")
    }
    /// A store failure; the cause goes to the log.
    pub(crate) fn temporary_failure() -> Self {
        let text = "Temporary failure, try again later";
        Status::no(Some(Code::Unavailable), text)
    }
    pub(crate) fn over_quota() -> Self {
        Status::no(Some(Code::OverQuota), "Quota exceeded")
    }
    /// RFC 7889 §4: refused before `+`.
    pub(crate) fn literal_too_big() -> Self {
        Status::no(Some(Code::TooBig), "Literal too big")
    }
    pub(crate) fn message_too_big() -> Self {
        Status::no(Some(Code::TooBig), "Message too big")
    }
    /// docs/specifications.md §2: APPEND of what the gate refuses.
    pub(crate) fn unencrypted() -> Self {
        let text = "Encryption Needed: Invalid Unencrypted Mail";
        Status::no(Some(Code::Cannot), text)
    }
    pub(crate) fn compression_active() -> Self {
        Status::no(Some(Code::CompressionActive), "DEFLATE active")
    }
    pub(crate) fn read_only() -> Self {
        Status::no(Some(Code::ReadOnly), "Mailbox is read-only")
    }
    pub(crate) fn no_such_mailbox() -> Self {
        Status::no(Some(Code::Nonexistent), "No such mailbox")
    }
    /// RFC 3501 §6.3.11, §6.4.7: the target of APPEND, COPY or MOVE.
    pub(crate) fn try_create() -> Self {
        Status::no(Some(Code::TryCreate), "No such mailbox")
    }
    pub(crate) fn inbox_exists() -> Self {
        Status::no(Some(Code::AlreadyExists), "INBOX always exists")
    }
    pub(crate) fn mailbox_exists() -> Self {
        Status::no(Some(Code::AlreadyExists), "Mailbox exists")
    }
    pub(crate) fn invalid_mailbox_name() -> Self {
        Status::no(Some(Code::Cannot), "Invalid mailbox name")
    }
    /// RFC 3501 §6.3.4.
    pub(crate) fn inbox_undeletable() -> Self {
        Status::no(Some(Code::Cannot), "INBOX cannot be deleted")
    }
    pub(crate) fn no_such_quota_root() -> Self {
        Status::no(Some(Code::Nonexistent), "No such quota root")
    }
    /// RFC 3501 §6.4.4: the charsets SEARCH knows.
    pub(crate) fn bad_charset() -> Self {
        let code = Code::BadCharset("UTF-8 US-ASCII");
        Status::no(Some(code), "Unsupported charset")
    }
    pub(crate) fn search_limit() -> Self {
        let text = "SEARCH scans too much text, narrow it";
        Status::no(Some(Code::Limit), text)
    }
    pub(crate) fn metadata_too_many() -> Self {
        let code = Code::Metadata(Metadata::TooMany);
        Status::no(Some(code), "Too many entries")
    }
    pub(crate) fn metadata_inbox_only() -> Self {
        let code = Code::Metadata(Metadata::NoPrivate);
        Status::no(Some(code), "Only INBOX entries can be set")
    }
    pub(crate) fn metadata_unsupported_entry() -> Self {
        let code = Code::Metadata(Metadata::NoPrivate);
        Status::no(Some(code), "Unsupported entry")
    }
    pub(crate) fn metadata_too_long(max: usize) -> Self {
        let code = Code::Metadata(Metadata::MaxSize(max));
        Status::no(Some(code), "Value too long")
    }
    /// An IDLE cut short by `closing`, after its BYE.
    pub(crate) fn interrupted(closing: Closing) -> Self {
        Status::no(None, closing.text())
    }
}

/// Tagged `BAD`s.
impl Status {
    /// A line that does not decode as a command.
    pub(crate) fn syntax_error() -> Self {
        Status::bad("Syntax error or unknown command")
    }
    /// A command other than those logging in needs, before login.
    pub(crate) fn log_in_first() -> Self {
        Status::bad("Log in first")
    }
    pub(crate) fn unsupported_command(command: &'static str) -> Self {
        Status::bad(format!("{command} is not supported"))
    }
    pub(crate) fn wrong_state(command: &'static str) -> Self {
        Status::bad(format!("{command} is not allowed in this state"))
    }
    pub(crate) fn not_authenticated() -> Self {
        Status::bad("Not authenticated")
    }
    pub(crate) fn no_mailbox_selected() -> Self {
        Status::bad("No mailbox selected")
    }
    pub(crate) fn tls_active() -> Self {
        Status::bad("TLS is already active")
    }
    pub(crate) fn authenticate_cancelled() -> Self {
        Status::bad("AUTHENTICATE cancelled or malformed")
    }
    pub(crate) fn invalid_sequence() -> Self {
        Status::bad("Invalid message sequence number")
    }
    pub(crate) fn invalid_uid_set() -> Self {
        Status::bad("Invalid UID set")
    }
    pub(crate) fn unsupported_fetch(error: &crate::fetch::FetchError) -> Self {
        Status::bad(error.to_string())
    }
    pub(crate) fn too_many_body_items() -> Self {
        Status::bad("Too many body items in one FETCH")
    }
    pub(crate) fn unsupported_status_item() -> Self {
        Status::bad("Unsupported STATUS item")
    }
    pub(crate) fn unsupported_search_key() -> Self {
        Status::bad("Unsupported SEARCH key")
    }
    /// RFC 2177 §3: anything but DONE ends IDLE as a protocol error.
    pub(crate) fn expected_done() -> Self {
        Status::bad("Expected DONE")
    }
    pub(crate) fn invalid_device_token() -> Self {
        Status::bad("Device token must be printable ASCII without spaces")
    }
}

/// Appends `text` as TEXT-CHARs: printable ASCII and space pass, anything
/// else (CR, LF, NUL, other controls, non-ASCII) becomes one `?`.
fn push_text(out: &mut Vec<u8>, text: &str) {
    out.extend(text.chars().map(|c| {
        if c == ' ' || c.is_ascii_graphic() {
            c as u8
        } else {
            b'?'
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(status: &Status, tag: Option<&str>) -> String {
        let mut out = Vec::new();
        status.encode(tag, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn writes_tagged_and_untagged_statuses_byte_exact() {
        let caps = crate::auth::AUTHENTICATED_CAPABILITIES;
        assert_eq!(
            wire(&Status::logged_in(caps), Some("a1")),
            format!("a1 OK [CAPABILITY {caps}] Logged in\r\n")
        );
        assert_eq!(
            wire(&Status::throttled(), Some("a2")),
            "a2 NO [UNAVAILABLE] Too many failed logins, try again later\r\n"
        );
        assert_eq!(
            wire(&Status::syntax_error(), None),
            "* BAD Syntax error or unknown command\r\n"
        );
        assert_eq!(wire(&Status::still_here(), None), "* OK Still here\r\n");
        assert_eq!(
            wire(&Status::bye(Closing::Evicted), None),
            "* BYE [UNAVAILABLE] Too many connections, closing an idle one\r\n"
        );
        assert_eq!(
            wire(&Status::completed("Getmetadata"), Some("m")),
            "m OK Getmetadata completed\r\n"
        );
    }

    #[test]
    fn writes_codes_with_their_arguments() {
        let copied = Status::copied(7, vec![1, 2, 3, 9], vec![4, 5, 6, 7]);
        assert_eq!(
            wire(&copied, Some("c")),
            "c OK [COPYUID 7 1:3,9 4:7] COPY completed\r\n"
        );
        assert_eq!(
            wire(&Status::appended(7, 12), Some("d")),
            "d OK [APPENDUID 7 12] APPEND completed\r\n"
        );
        assert_eq!(
            wire(&Status::permanent_flags("\\Seen \\Deleted"), None),
            "* OK [PERMANENTFLAGS (\\Seen \\Deleted \\*)] Flags permitted\r\n"
        );
        assert_eq!(
            wire(&Status::no_permanent_flags(), None),
            "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n"
        );
        assert_eq!(
            wire(&Status::metadata_too_long(4096), Some("s")),
            "s NO [METADATA MAXSIZE 4096] Value too long\r\n"
        );
        assert_eq!(
            wire(&Status::bad_charset(), Some("f")),
            "f NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"
        );
    }

    /// The text after `tag SP` of every fixed reply, as clients have seen
    /// it so far.
    #[test]
    fn every_fixed_reply_keeps_its_wire_text() {
        let replies = [
            (
                Status::login_failed(),
                "NO [AUTHENTICATIONFAILED] Invalid credentials",
            ),
            (
                Status::login_busy(),
                "NO [UNAVAILABLE] Server busy, try again later",
            ),
            (
                Status::literals_busy(),
                "NO [UNAVAILABLE] Server busy, try again",
            ),
            (
                Status::temporary_failure(),
                "NO [UNAVAILABLE] Temporary failure, try again later",
            ),
            (Status::over_quota(), "NO [OVERQUOTA] Quota exceeded"),
            (Status::literal_too_big(), "NO [TOOBIG] Literal too big"),
            (Status::message_too_big(), "NO [TOOBIG] Message too big"),
            (
                Status::unencrypted(),
                "NO [CANNOT] Encryption Needed: Invalid Unencrypted Mail",
            ),
            (
                Status::privacy_required("LOGIN"),
                "NO [PRIVACYREQUIRED] LOGIN is disabled before STARTTLS",
            ),
            (
                Status::unsupported_mechanism(),
                "NO [CANNOT] Unsupported authentication mechanism",
            ),
            (
                Status::compression_active(),
                "NO [COMPRESSIONACTIVE] DEFLATE active",
            ),
            (Status::read_only(), "NO [READ-ONLY] Mailbox is read-only"),
            (
                Status::no_such_mailbox(),
                "NO [NONEXISTENT] No such mailbox",
            ),
            (Status::try_create(), "NO [TRYCREATE] No such mailbox"),
            (
                Status::inbox_exists(),
                "NO [ALREADYEXISTS] INBOX always exists",
            ),
            (
                Status::mailbox_exists(),
                "NO [ALREADYEXISTS] Mailbox exists",
            ),
            (
                Status::invalid_mailbox_name(),
                "NO [CANNOT] Invalid mailbox name",
            ),
            (
                Status::inbox_undeletable(),
                "NO [CANNOT] INBOX cannot be deleted",
            ),
            (
                Status::no_such_quota_root(),
                "NO [NONEXISTENT] No such quota root",
            ),
            (
                Status::search_limit(),
                "NO [LIMIT] SEARCH scans too much text, narrow it",
            ),
            (
                Status::metadata_too_many(),
                "NO [METADATA TOOMANY] Too many entries",
            ),
            (
                Status::metadata_inbox_only(),
                "NO [METADATA NOPRIVATE] Only INBOX entries can be set",
            ),
            (
                Status::metadata_unsupported_entry(),
                "NO [METADATA NOPRIVATE] Unsupported entry",
            ),
            (
                Status::interrupted(Closing::ShuttingDown),
                "NO Server shutting down",
            ),
            (Status::selected(false), "OK [READ-WRITE] SELECT completed"),
            (Status::selected(true), "OK [READ-ONLY] EXAMINE completed"),
            (Status::begin_tls(), "OK Begin TLS negotiation now"),
            (Status::deflate_active(), "OK DEFLATE active"),
            (Status::idle_terminated(), "OK IDLE terminated"),
            (Status::log_in_first(), "BAD Log in first"),
            (
                Status::wrong_state("FETCH"),
                "BAD FETCH is not allowed in this state",
            ),
            (
                Status::unsupported_command("RENAME"),
                "BAD RENAME is not supported",
            ),
            (Status::tls_active(), "BAD TLS is already active"),
            (Status::expected_done(), "BAD Expected DONE"),
        ];
        for (status, text) in replies {
            assert_eq!(wire(&status, Some("a")), format!("a {text}\r\n"));
        }
        assert_eq!(
            wire(&Status::bye(Closing::AccountDisabled), None),
            "* BYE Account disabled by the operator\r\n"
        );
        assert_eq!(
            wire(&Status::uid_validity(9), None),
            "* OK [UIDVALIDITY 9] UIDs valid\r\n"
        );
    }

    #[test]
    fn a_hostile_text_never_breaks_the_line() {
        let hostile = Status::bad("x\r\n* 1 EXISTS\r\na OK \0\u{7f}é\tdone");
        let out = wire(&hostile, Some("t1\r\n* BYE"));
        assert_eq!(out, "t1??* BYE BAD x??* 1 EXISTS??a OK ????done\r\n");
        assert_eq!(out.matches('\r').count(), 1, "{out:?}");
        assert_eq!(out.matches('\n').count(), 1, "{out:?}");
        assert!(
            out.bytes()
                .all(|b| b == b'\r' || b == b'\n' || (0x20..0x7f).contains(&b))
        );
    }

    #[test]
    fn a_bye_is_never_tagged() {
        assert_eq!(
            wire(&Status::bye(Closing::LoggingOut), Some("z")),
            "* BYE Logging out\r\n"
        );
    }
}
