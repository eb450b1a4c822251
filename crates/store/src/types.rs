//! The types of the public API: rows, options, results and errors.

use std::path::PathBuf;

/// Row id of an account.
pub type AccountId = i64;
/// Row id of a mailbox.
pub type MailboxId = i64;

/// Store failures. Protocol code answers all of them with a temporary error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("mailbox already exists")]
    MailboxExists,
    #[error("no such mailbox")]
    NoMailbox,
    #[error("no such account")]
    NoAccount,
    #[error("store is shutting down")]
    Closed,
    /// The write would put the account over its quota (see [`crate::quota`]).
    /// Protocol code answers `552 5.2.2` (SMTP) or `NO [OVERQUOTA]` (IMAP).
    #[error("quota exceeded")]
    QuotaExceeded,
    /// The file system under the database is full; the write was rolled
    /// back. Temporary: protocol code answers `452 4.3.1`.
    #[error("the disk is full")]
    DiskFull,
    /// The batch transaction the write was part of failed and was rolled
    /// back (the cause is the database's).
    #[error("batch transaction failed: {0}")]
    Batch(String),
    /// The database file could not be opened or migrated at start.
    #[error("the database {} {problem}", path.display())]
    Open { path: PathBuf, problem: OpenProblem },
}

/// Why the database could not be opened, each with what the operator can
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpenProblem {
    #[error(
        "is not an SQLite database (SQLite: {0}): restore it from a backup, or move it \
         away to start with an empty store"
    )]
    NotADatabase(String),
    #[error(
        "is damaged (SQLite: {0}): stop the relay, restore the file from a backup or \
         rescue what is left with `sqlite3 FILE .recover`, then start again"
    )]
    Corrupt(String),
    #[error(
        "cannot be written (SQLite: {0}): let the service user write the file, its \
         -wal and -shm files and their directory"
    )]
    ReadOnly(String),
    #[error(
        "cannot be opened (SQLite: {0}): check that it is a regular file and that the \
         service user can read and write it and its directory"
    )]
    CannotOpen(String),
    #[error("cannot be written: the disk is full (SQLite: {0}): free some space")]
    DiskFull(String),
    #[error(
        "was last used by a newer madmail ({0}): run that version again, or restore a \
         backup taken before the upgrade"
    )]
    Newer(String),
    #[error("cannot be opened: {0}")]
    Other(String),
}

impl OpenProblem {
    /// Classifies a failure to open or migrate the database.
    pub(crate) fn of_sqlx(error: &sqlx::Error) -> Self {
        let text = error
            .as_database_error()
            .map_or_else(|| error.to_string(), |e| e.message().to_owned());
        let code = sqlite_code(error);
        // Primary result codes: https://www.sqlite.org/rescode.html
        match code.map(|c| c & 0xff) {
            Some(26) => Self::NotADatabase(text),
            Some(11) => Self::Corrupt(text),
            Some(8 | 3 | 23) => Self::ReadOnly(text),
            Some(13) => Self::DiskFull(text),
            Some(14) => Self::CannotOpen(text),
            _ if matches!(error, sqlx::Error::Io(_)) => Self::CannotOpen(text),
            _ => Self::Other(text),
        }
    }

    /// Classifies a failure to migrate the database.
    pub(crate) fn of_migration(error: &sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError;
        match error {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => Self::of_sqlx(e),
            MigrateError::VersionMissing(version) => {
                Self::Newer(format!("it holds migration {version}, unknown to this one"))
            }
            other => Self::Other(other.to_string()),
        }
    }
}

impl StoreError {
    /// An unexpected failure outside the database (a crashed task, ...),
    /// for callers that report everything as a [`StoreError`].
    pub fn internal(cause: impl Into<String>) -> Self {
        StoreError::Database(sqlx::Error::Protocol(cause.into()))
    }

    /// Whether the write failed because the disk is full (SQLite's
    /// `SQLITE_FULL`, or `ENOSPC`): the caller answers "insufficient
    /// storage, try later" and the next write may succeed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull => true,
            StoreError::Database(e) => is_disk_full(e),
            StoreError::Open { problem, .. } => matches!(problem, OpenProblem::DiskFull(_)),
            _ => false,
        }
    }
}

/// `SQLITE_FULL` (primary code 13, <https://www.sqlite.org/rescode.html>)
/// or an I/O error "no space left on device".
pub(crate) fn is_disk_full(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        other => sqlite_code(other).is_some_and(|code| code & 0xff == 13),
    }
}

/// The SQLite result code of a database error.
fn sqlite_code(error: &sqlx::Error) -> Option<i64> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|c| c.parse::<i64>().ok())
}

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
