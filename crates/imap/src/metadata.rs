//! METADATA (RFC 5464) and QUOTA (RFC 9208) as Delta Chat uses them
//! (docs/specifications.md §4).
//!
//! Server entries (mailbox `""`) come from [`server_entry`]; unknown keys
//! answer NIL. The only per-user entry is `/private/devicetoken` on INBOX:
//! SETMETADATA adds a token (multi-device), GETMETADATA returns all tokens
//! joined by one space.
//!
//! Invariants: a token is printable ASCII without spaces (a space would
//! split it in the joined GETMETADATA value), at most [`MAX_TOKEN`] bytes.
//! Setting the entry to NIL answers OK and removes nothing: the chatmail
//! protocol has no way to name one device's token to delete; stale tokens
//! age out instead (the store keeps the 64 most recently set per account).

use imap_codec::imap_types::core::NString8;
use imap_codec::imap_types::extensions::metadata::{Entry, EntryValue};
use imap_codec::imap_types::mailbox::Mailbox;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::mailboxes::mailbox_name;
use crate::response;
use crate::session::{Done, Handled, Session};

/// The push device token entry.
pub const DEVICE_TOKEN: &str = "/private/devicetoken";
/// Longest device token accepted (docs/specifications.md §4).
const MAX_TOKEN: usize = 4096;
/// Most entries answered by one GETMETADATA.
const MAX_ENTRIES: usize = 100;
/// Storage quota in KiB (500 MiB).
pub const QUOTA_KIB: u64 = 500 * 1024;

/// The value of a server entry, if this server knows it. No entry is
/// published yet: `/shared/vendor/deltachat/maxsmtprecipients` would mark
/// the relay push-capable, which waits for the notifier.
pub fn server_entry(_key: &str) -> Option<String> {
    None
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_getmetadata(
        &mut self,
        mailbox: &Mailbox<'_>,
        entries: &[Entry<'_>],
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Done::bad("Not authenticated"));
        };
        if entries.len() > MAX_ENTRIES {
            return Ok(Done::no("[METADATA TOOMANY] Too many entries"));
        }
        let name = mailbox_name(mailbox);
        let mut line = b"* METADATA ".to_vec();
        response::string(&mut line, name.as_bytes());
        line.extend_from_slice(b" (");
        for (i, entry) in entries.iter().enumerate() {
            let key = String::from_utf8_lossy(entry.as_ref()).to_ascii_lowercase();
            let value = if name.is_empty() {
                server_entry(&key)
            } else if name == "INBOX" && key == DEVICE_TOKEN {
                let tokens = self.store().user_metadata(account.id, DEVICE_TOKEN).await?;
                (!tokens.is_empty()).then(|| tokens.join(" "))
            } else {
                None
            };
            if i > 0 {
                line.push(b' ');
            }
            response::astring(&mut line, entry.as_ref());
            line.push(b' ');
            response::nstring(&mut line, value.as_deref().map(str::as_bytes));
        }
        line.extend_from_slice(b")\r\n");
        self.io.out.extend_from_slice(&line);
        Ok(Done::ok("Getmetadata completed"))
    }

    pub(crate) async fn handle_setmetadata(
        &mut self,
        mailbox: &Mailbox<'_>,
        values: &[EntryValue<'_>],
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Done::bad("Not authenticated"));
        };
        if mailbox_name(mailbox) != "INBOX" {
            return Ok(Done::no(
                "[METADATA NOPRIVATE] Only INBOX entries can be set",
            ));
        }
        let mut tokens = Vec::new();
        for value in values {
            if !String::from_utf8_lossy(value.entry.as_ref()).eq_ignore_ascii_case(DEVICE_TOKEN) {
                return Ok(Done::no("[METADATA NOPRIVATE] Unsupported entry"));
            }
            // RFC 5464 §4.3 NIL means "remove"; see the module doc.
            let Some(token) = nstring8(&value.value) else {
                continue;
            };
            if token.len() > MAX_TOKEN {
                return Ok(Done::no(format!(
                    "[METADATA MAXSIZE {MAX_TOKEN}] Value too long"
                )));
            }
            match String::from_utf8(token) {
                Ok(token) if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) => {
                    tokens.push(token)
                }
                _ => {
                    return Ok(Done::bad(
                        "Device token must be printable ASCII without spaces",
                    ));
                }
            }
        }
        for token in tokens {
            self.store()
                .add_user_metadata(account.id, DEVICE_TOKEN, &token)
                .await?;
        }
        Ok(Done::ok("Setmetadata completed"))
    }

    /// RFC 9208 §4.3: the root of every mailbox is `""`.
    pub(crate) async fn handle_getquotaroot(&mut self, mailbox: &Mailbox<'_>) -> Handled {
        let mut line = b"* QUOTAROOT ".to_vec();
        response::string(&mut line, mailbox_name(mailbox).as_bytes());
        line.extend_from_slice(b" \"\"\r\n");
        self.io.out.extend_from_slice(&line);
        self.write_quota().await
    }

    pub(crate) async fn handle_getquota(&mut self, root: &[u8]) -> Handled {
        if !root.is_empty() {
            return Ok(Done::no("[NONEXISTENT] No such quota root"));
        }
        self.write_quota().await
    }

    async fn write_quota(&mut self) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Done::bad("Not authenticated"));
        };
        let used_kib = self.store().usage(account.id).await?.div_ceil(1024);
        // RFC 9208 §5.1: STORAGE in units of 1024 octets.
        self.io
            .line(&format!("* QUOTA \"\" (STORAGE {used_kib} {QUOTA_KIB})"));
        Ok(Done::ok("GETQUOTA completed"))
    }
}

/// The bytes of an nstring8, `None` for NIL.
fn nstring8(value: &NString8<'_>) -> Option<Vec<u8>> {
    match value {
        NString8::NString(nstring) => nstring.0.as_ref().map(|s| s.as_ref().to_vec()),
        NString8::Literal8(literal) => Some(literal.data.to_vec()),
    }
}
