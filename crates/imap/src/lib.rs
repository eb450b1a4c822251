//! chatmail-imap: the IMAP4rev1 server Delta Chat talks to (docs/specifications.md §4).
//!
//! # Flow
//! [`serve`] accepts connections until its shutdown token is cancelled and
//! runs one task per connection (a panic or error ends only that
//! connection). Each connection passes the connection limits, the TLS
//! handshake (port 993) or STARTTLS (port 143), then a [`Session`]: read a
//! command ([`framing`]), check the state table below, run the handler,
//! report mailbox changes, answer with a typed status (`status.rs`). After
//! COMPRESS DEFLATE the same session continues over a deflate layer
//! ([`compress`]). Mail lives in `chatmail_store`; IDLE wakes on the
//! store's change events, never by polling.
//!
//! # States and commands (RFC 3501 §3, §6)
//! | command | not authenticated | authenticated | selected |
//! |---|---|---|---|
//! | CAPABILITY NOOP CHECK LOGOUT ID | yes | yes | yes |
//! | STARTTLS LOGIN AUTHENTICATE (PLAIN, SASL-IR) | yes | – | – |
//! | SELECT EXAMINE CREATE DELETE SUBSCRIBE UNSUBSCRIBE LIST LSUB STATUS APPEND ENABLE IDLE GETQUOTA GETQUOTAROOT GETMETADATA SETMETADATA COMPRESS | – | yes | yes |
//! | CLOSE UNSELECT EXPUNGE (UID) FETCH (UID) STORE (UID) COPY (UID) MOVE (UID) SEARCH | – | – | yes |
//!
//! Commands in the wrong state get `BAD`; unknown or unsupported ones
//! (RENAME, SETQUOTA, THREAD, SORT) get `BAD` too, and the session
//! goes on. LOGIN and AUTHENTICATE are refused before TLS (LOGINDISABLED).
//!
//! # Invariants
//! - Every line, literal and command is bounded ([`framing`]); an oversize
//!   synchronizing literal is refused with `NO [TOOBIG]` before `+`.
//! - Sequence numbers change only through the session's view
//!   ([`view`]), with EXPUNGE numbering per RFC 3501 §7.4.1.
//! - APPEND goes through the encryption gate.
//! - A login from a client address (IPv6: its /64) with too many recent
//!   failures is answered `NO [UNAVAILABLE]` without a password check
//!   (`chatmail_accounts`); other addresses are unaffected.
//! - Logs carry no passwords or message contents, and with `no_log` no
//!   addresses or IP addresses.

mod auth;
mod compress;
mod dispatch;
mod fetch;
mod flags;
pub mod framing;
mod idle;
mod mailboxes;
mod message;
mod metadata;
mod response;
mod search;
mod server;
mod session;
mod status;
mod transfer;
pub mod view;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use chatmail_accounts::Accounts;
use chatmail_config::Settings;

pub use server::{serve, serve_stream, slots};
pub use session::{Ending, Session, SessionError};

/// What every connection shares.
pub struct Context {
    /// Validated configuration (domain, limits, logging).
    pub settings: Arc<Settings>,
    /// Login and access to the store.
    pub accounts: Accounts,
    /// TLS for port 993 and STARTTLS.
    pub tls: Arc<rustls::ServerConfig>,
    /// Mints the METADATA `turn` entry; `None` publishes no entry (it is
    /// also withheld while `[turn] enabled` is false).
    pub turn: Option<Arc<chatmail_turn::Credentials>>,
    /// The iroh relay URL published as `irohrelay`; `None`: no entry.
    pub iroh_relay: Option<String>,
    /// The process's budget of message bodies in memory, which large
    /// APPEND literals draw from (shared with SMTP and `/mxdeliv`).
    pub spools: chatmail_limits::Spools,
}

/// How a listener's connections start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// TLS handshake first (port 993).
    ImplicitTls,
    /// Plaintext until STARTTLS (port 143).
    StartTls,
}
