//! METADATA (RFC 5464) and QUOTA (RFC 9208) as Delta Chat uses them
//! (docs/specifications.md §4).
//!
//! Server entries (mailbox `""`) come from [`server_entry`], built from the
//! `[metadata]`, `[turn]` and `[limits]` configuration; unknown keys answer
//! NIL. The only per-user entry is `/private/devicetoken` on INBOX:
//! SETMETADATA adds a token (multi-device), GETMETADATA returns the tokens
//! set within the last [`chatmail_store::DEVICE_TOKEN_LIFETIME`] joined by one space.
//!
//! Invariants: a token is printable ASCII without spaces (a space would
//! split it in the joined GETMETADATA value), at most [`MAX_TOKEN`] bytes.
//! Setting the entry to NIL answers OK and removes nothing: the chatmail
//! protocol has no way to name one device's token to delete; stale tokens
//! age out instead (90 days after their last SET; the store also keeps only
//! the 64 most recently set per account). The TURN entry is minted afresh
//! for every request, so it is always valid for the full lifetime.

use chatmail_config::Service;
use imap_codec::imap_types::core::NString8;
use imap_codec::imap_types::extensions::metadata::{Entry, EntryValue};
use imap_codec::imap_types::mailbox::Mailbox;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Context;
use crate::mailboxes::mailbox_name;
use crate::response;
use crate::session::{Handled, Session};
use crate::status::Status;

pub use chatmail_store::DEVICE_TOKEN;
/// Longest device token accepted (docs/specifications.md §4).
const MAX_TOKEN: usize = 4096;
/// Most entries answered by one GETMETADATA.
const MAX_ENTRIES: usize = 100;

/// The value of the server entry `key` (lower case), if this server
/// publishes it (docs/specifications.md §4).
pub fn server_entry(ctx: &Context, key: &str) -> Option<String> {
    let config = &ctx.settings.config;
    match key {
        "/shared/admin" => config
            .metadata
            .admin
            .as_ref()
            .map(|a| format!("mailto:{a}")),
        "/shared/comment" => config.metadata.comment.clone(),
        // The built-in relay's URL while it runs, or an external one: a URL
        // that answers nothing would break webxdc realtime, while an absent
        // entry makes Delta Chat fall back to its default relays.
        "/shared/vendor/deltachat/irohrelay" => ctx
            .iroh_relay
            .clone()
            .filter(|_| config.iroh.url.is_some() || ctx.settings.services().is_on(Service::Iroh)),
        "/shared/vendor/deltachat/turn" => turn_entry(ctx),
        // Its presence tells Delta Chat the relay sends push notifications,
        // so it is published only while push is on (docs/specifications.md
        // §4); the server starts the push worker whenever it is.
        "/shared/vendor/deltachat/maxsmtprecipients" => config
            .push
            .enabled
            .then(|| ctx.settings.limits().max_recipients.to_string()),
        "/shared/vendor/deltachat/appversions" => config.metadata.app_versions.clone(),
        _ => None,
    }
}

/// `<host>:<port>:<username>:<password>` with freshly minted credentials,
/// when TURN is enabled and a minter is wired in.
fn turn_entry(ctx: &Context) -> Option<String> {
    let turn = &ctx.settings.config.turn;
    let on = turn.enabled && ctx.settings.services().is_on(Service::Turn);
    let credentials = ctx.turn.as_ref().filter(|_| on)?;
    let host = turn
        .host
        .clone()
        .unwrap_or_else(|| ctx.settings.domain.host());
    let (username, password) = credentials.mint_now();
    Some(format!("{host}:{}:{username}:{password}", turn.port))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_getmetadata(
        &mut self,
        mailbox: &Mailbox<'_>,
        entries: &[Entry<'_>],
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        if entries.len() > MAX_ENTRIES {
            return Ok(Status::metadata_too_many().into());
        }
        let name = mailbox_name(mailbox);
        let mut line = b"* METADATA ".to_vec();
        response::string(&mut line, name.as_bytes());
        line.extend_from_slice(b" (");
        for (i, entry) in entries.iter().enumerate() {
            let key = String::from_utf8_lossy(entry.as_ref()).to_ascii_lowercase();
            let value = if name.is_empty() {
                server_entry(&self.ctx, &key)
            } else if name == "INBOX" && key == DEVICE_TOKEN {
                let tokens = self
                    .store()
                    .live_device_tokens(account.id, unix_now())
                    .await?;
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
        Ok(Status::completed("Getmetadata").into())
    }

    pub(crate) async fn handle_setmetadata(
        &mut self,
        mailbox: &Mailbox<'_>,
        values: &[EntryValue<'_>],
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        if mailbox_name(mailbox) != "INBOX" {
            return Ok(Status::metadata_inbox_only().into());
        }
        let mut tokens = Vec::new();
        for value in values {
            if !String::from_utf8_lossy(value.entry.as_ref()).eq_ignore_ascii_case(DEVICE_TOKEN) {
                return Ok(Status::metadata_unsupported_entry().into());
            }
            // RFC 5464 §4.3 NIL means "remove"; see the module doc.
            let Some(token) = nstring8(&value.value) else {
                continue;
            };
            if token.len() > MAX_TOKEN {
                return Ok(Status::metadata_too_long(MAX_TOKEN).into());
            }
            match String::from_utf8(token) {
                Ok(token) if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) => {
                    tokens.push(token)
                }
                _ => {
                    return Ok(Status::invalid_device_token().into());
                }
            }
        }
        for token in tokens {
            self.store()
                .add_user_metadata(account.id, DEVICE_TOKEN, &token)
                .await?;
        }
        Ok(Status::completed("Setmetadata").into())
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
            return Ok(Status::no_such_quota_root().into());
        }
        self.write_quota().await
    }

    async fn write_quota(&mut self) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        let used_kib = self.store().usage(account.id).await?.div_ceil(1024);
        // RFC 9208 §5.1: STORAGE in units of 1024 octets; the limit is the
        // configured one (no resource listed when there is none).
        let line = match self.store().quota() {
            Some(limit) => format!("* QUOTA \"\" (STORAGE {used_kib} {})", limit / 1024),
            None => "* QUOTA \"\" ()".to_owned(),
        };
        self.io.line(&line);
        Ok(Status::completed("GETQUOTA").into())
    }
}

/// The bytes of an nstring8, `None` for NIL.
fn nstring8(value: &NString8<'_>) -> Option<Vec<u8>> {
    match value {
        NString8::NString(nstring) => nstring.0.as_ref().map(|s| s.as_ref().to_vec()),
        NString8::Literal8(literal) => Some(literal.data.to_vec()),
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
