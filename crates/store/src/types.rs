//! The types of the public API: rows, options and results (errors are in
//! `error`).

use std::path::PathBuf;

/// Row id of an account.
pub type AccountId = i64;
/// Row id of a mailbox.
pub type MailboxId = i64;

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// SQLite database file (created with its directory if missing).
    pub path: PathBuf,
    /// Most deliveries committed together in one transaction.
    pub max_batch: usize,
}

impl Default for StoreOptions {
    /// `madmail.sqlite` in the working directory, batches of 256 writes.
    fn default() -> Self {
        Self {
            path: PathBuf::from("madmail.sqlite"),
            max_batch: 256,
        }
    }
}

/// An account row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    /// Full address, lower case (`user@domain` or `user@[1.2.3.4]`).
    pub address: String,
    /// PHC string of the password hash.
    pub password_hash: String,
    /// Unix day (seconds / 86400) of the last login, if any.
    pub last_login_day: Option<i64>,
}

/// Result of [`Store::create_account`](crate::Store::create_account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This call created the account.
    New(Account),
    /// The account existed already (possibly created concurrently).
    Existing(Account),
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The raw RFC 5322 message, CRLF line endings.
    pub body: bytes::Bytes,
    /// Initial flags (`\Seen`, ...).
    pub flags: Vec<String>,
    /// Internal date, Unix seconds.
    pub internal_date: i64,
}

/// One stored copy of a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub account: AccountId,
    pub mailbox: MailboxId,
    pub uid: u32,
}

/// Per-recipient outcome of [`Store::deliver_report`](crate::Store::deliver_report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The stored copies, in recipient order.
    pub delivered: Vec<Delivered>,
    /// Recipients refused because the copy would not fit their quota.
    pub over_quota: Vec<AccountId>,
    /// Recipients that got the same bytes from another relay within
    /// [`DUPLICATE_WINDOW`](crate::DUPLICATE_WINDOW) (only from
    /// [`Store::deliver_inbound`](crate::Store::deliver_inbound)): the
    /// earlier copy stands, nothing is stored again.
    pub duplicates: Vec<AccountId>,
}

/// A mailbox and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub id: MailboxId,
    pub name: String,
    /// Never changes for the life of the mailbox.
    pub uidvalidity: u32,
    /// Never decreases.
    pub uidnext: u32,
    /// `\Sent`, `\Trash`, ... (RFC 6154), if any.
    pub special_use: Option<String>,
}

/// Metadata of one message (no body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub flags: Vec<String>,
    pub size: u64,
    pub internal_date: i64,
}

/// How [`Store::set_flags`](crate::Store::set_flags) changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}
