//! The store's errors: what a public method fails with, and the internal
//! error its body works with until the method names its operation.
//!
//! Flow: code inside the store returns `sqlx::Error` or [`OpError`] (a
//! database failure, or a refusal that is already a [`StoreError`]); each
//! public method of [`crate::Store`] turns it into a [`StoreError`] once,
//! with [`During::during`] (reads) or through the writer, which knows the
//! operation of every job it runs.
//!
//! API Boundary: no sqlx type is part of a public signature; a database
//! failure reaches callers as the opaque [`DatabaseError`], with the
//! [`Operation`] that failed.

use std::path::PathBuf;
use std::sync::Arc;

/// Store failures. Protocol code answers all of them with a temporary
/// error, except the refusals it matches (`MailboxExists`, `NoMailbox`,
/// `NoAccount`, `QuotaExceeded`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A statement of `operation` failed; its writes were rolled back.
    #[error("store: {operation}: database: {cause}")]
    Database {
        operation: Operation,
        #[source]
        cause: DatabaseError,
    },
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
    /// The batch transaction the write of `operation` was part of failed
    /// (at `BEGIN`, a savepoint or `COMMIT`) and was rolled back; every job
    /// of the batch hears the same `cause`.
    #[error("store: {operation}: batch transaction failed: {cause}")]
    Batch {
        operation: Operation,
        #[source]
        cause: Arc<DatabaseError>,
    },
    /// An unexpected failure outside the database (a crashed task, a
    /// broken invariant), see [`StoreError::internal`].
    #[error("internal failure: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database file could not be opened or migrated at start.
    #[error("the database {} {problem}", path.display())]
    Open { path: PathBuf, problem: OpenProblem },
}

impl StoreError {
    /// An unexpected failure outside the database (a crashed task, ...),
    /// for callers that report everything as a [`StoreError`]. Takes the
    /// cause itself (or a text), so that it stays the error's source.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Internal(cause.into())
    }

    /// Whether the write failed because the disk is full (SQLite's
    /// `SQLITE_FULL`, or `ENOSPC`), in its own statement or in the batch it
    /// was part of: the caller answers "insufficient storage, try later"
    /// and the next write may succeed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Database { cause, .. } => cause.is_disk_full(),
            StoreError::Batch { cause, .. } => cause.is_disk_full(),
            StoreError::Open { problem, .. } => matches!(problem, OpenProblem::DiskFull(_)),
            _ => false,
        }
    }
}

/// A failure of the database (SQLite, or the file system under it). Opaque:
/// its text and source are the database's own.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DatabaseError(sqlx::Error);

impl DatabaseError {
    pub(crate) fn new(cause: sqlx::Error) -> Self {
        DatabaseError(cause)
    }

    /// `SQLITE_FULL` (primary code 13, <https://www.sqlite.org/rescode.html>)
    /// or an I/O error "no space left on device".
    pub fn is_disk_full(&self) -> bool {
        match &self.0 {
            sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
            other => sqlite_code(other).is_some_and(|code| code & 0xff == 13),
        }
    }
}

/// The public store operation that failed, as [`StoreError::Database`] and
/// [`StoreError::Batch`] name it: one per method of [`crate::Store`] that
/// touches the database, named after it. A method that only calls another
/// is named by that one (`deliver` by `deliver_report`, which is
/// [`Operation::Deliver`]; `due_deliveries` by `due_deliveries_except`;
/// `live_device_tokens` by `live_user_metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    Account,
    Accounts,
    CreateAccount,
    DeleteAccount,
    RecordLogin,
    Mailboxes,
    Mailbox,
    CreateMailbox,
    DeleteMailbox,
    Messages,
    Uids,
    Body,
    SetFlags,
    Expunge,
    Copy,
    Move,
    Usage,
    HasRoom,
    Deliver,
    DeliverInbound,
    Append,
    UserMetadata,
    LiveUserMetadata,
    AddUserMetadata,
    Enqueue,
    DueDeliveries,
    NextQueueAttempt,
    LastQueueAttempt,
    PullInQueue,
    QueuedBody,
    RecordAttempt,
    QueueEntries,
    QueueCounts,
    QueueFlush,
    QueuePurge,
    PushEnqueue,
    PushDue,
    PushEntries,
    NextPushAttempt,
    LastPushAttempt,
    PullInPush,
    PushDone,
    PushRetry,
    PushTokenGone,
    Expire,
    ExpireDryRun,
    Block,
    Unblock,
    Blocklist,
    CreateInvite,
    Invites,
    Invite,
    DeleteInvite,
    ReserveInvite,
    CreateFirstLogin,
    AccountSummaries,
    AccountSummary,
    SetAccountQuota,
    AdminSetting,
    SetAdminSetting,
}

impl Operation {
    /// The operation in words, as error texts show it.
    fn name(self) -> &'static str {
        match self {
            Operation::Account => "account lookup",
            Operation::Accounts => "list accounts",
            Operation::CreateAccount => "create account",
            Operation::DeleteAccount => "delete account",
            Operation::RecordLogin => "record login",
            Operation::Mailboxes => "list mailboxes",
            Operation::Mailbox => "mailbox lookup",
            Operation::CreateMailbox => "create mailbox",
            Operation::DeleteMailbox => "delete mailbox",
            Operation::Messages => "fetch messages",
            Operation::Uids => "fetch uids",
            Operation::Body => "fetch body",
            Operation::SetFlags => "set flags",
            Operation::Expunge => "expunge",
            Operation::Copy => "copy",
            Operation::Move => "move",
            Operation::Usage => "usage",
            Operation::HasRoom => "quota check",
            Operation::Deliver => "deliver",
            Operation::DeliverInbound => "deliver inbound",
            Operation::Append => "append",
            Operation::UserMetadata => "read metadata",
            Operation::LiveUserMetadata => "read live metadata",
            Operation::AddUserMetadata => "add metadata",
            Operation::Enqueue => "enqueue",
            Operation::DueDeliveries => "due deliveries",
            Operation::NextQueueAttempt => "next queue attempt",
            Operation::LastQueueAttempt => "last queue attempt",
            Operation::PullInQueue => "pull in queue",
            Operation::QueuedBody => "queued body",
            Operation::RecordAttempt => "record attempt",
            Operation::QueueEntries => "list queue",
            Operation::QueueCounts => "count queue",
            Operation::QueueFlush => "flush queue",
            Operation::QueuePurge => "purge queue",
            Operation::PushEnqueue => "enqueue push",
            Operation::PushDue => "due pushes",
            Operation::PushEntries => "list pushes",
            Operation::NextPushAttempt => "next push attempt",
            Operation::LastPushAttempt => "last push attempt",
            Operation::PullInPush => "pull in pushes",
            Operation::PushDone => "push done",
            Operation::PushRetry => "push retry",
            Operation::PushTokenGone => "push token gone",
            Operation::Expire => "expire",
            Operation::ExpireDryRun => "expire dry run",
            Operation::Block => "block",
            Operation::Unblock => "unblock",
            Operation::Blocklist => "list blocked",
            Operation::CreateInvite => "create invite",
            Operation::Invites => "list invites",
            Operation::Invite => "invite lookup",
            Operation::DeleteInvite => "delete invite",
            Operation::ReserveInvite => "reserve invite",
            Operation::CreateFirstLogin => "first login",
            Operation::AccountSummaries => "list account summaries",
            Operation::AccountSummary => "account summary",
            Operation::SetAccountQuota => "set account quota",
            Operation::AdminSetting => "read setting",
            Operation::SetAdminSetting => "set setting",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What code inside the store fails with before a public method names the
/// operation: a database failure, or a refusal that is already final.
#[derive(Debug)]
pub(crate) enum OpError {
    Database(sqlx::Error),
    Refused(StoreError),
}

impl From<sqlx::Error> for OpError {
    fn from(error: sqlx::Error) -> Self {
        OpError::Database(error)
    }
}

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        OpError::Refused(error)
    }
}

impl OpError {
    /// The public error of `operation` failing with this. A read after
    /// [`crate::Store::close`] meets a closed pool: that is
    /// [`StoreError::Closed`], as for writes.
    pub(crate) fn during(self, operation: Operation) -> StoreError {
        match self {
            OpError::Database(sqlx::Error::PoolClosed) => StoreError::Closed,
            OpError::Database(cause) => StoreError::Database {
                operation,
                cause: DatabaseError::new(cause),
            },
            OpError::Refused(error) => error,
        }
    }
}

/// Names the operation of a public method on its result, once.
pub(crate) trait During<T> {
    fn during(self, operation: Operation) -> Result<T, StoreError>;
}

impl<T, E: Into<OpError>> During<T> for Result<T, E> {
    fn during(self, operation: Operation) -> Result<T, StoreError> {
        self.map_err(|e| e.into().during(operation))
    }
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

/// The SQLite result code of a database error.
fn sqlite_code(error: &sqlx::Error) -> Option<i64> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|c| c.parse::<i64>().ok())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;
    use crate::quota::tests::{account, open};

    #[tokio::test]
    async fn a_failed_statement_names_its_operation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (id, _) = account(&store, "a@x.test").await;
        // Another connection to the file takes a table away.
        let mut other = SqliteConnectOptions::new()
            .filename(dir.path().join("quota.db"))
            .connect()
            .await
            .unwrap();
        sqlx::query("DROP TABLE user_metadata")
            .execute(&mut other)
            .await
            .unwrap();

        let write = store.add_user_metadata(id, "/k", "v").await.unwrap_err();
        assert!(
            matches!(
                write,
                StoreError::Database {
                    operation: Operation::AddUserMetadata,
                    ..
                }
            ),
            "{write:?}"
        );
        let text = write.to_string();
        assert!(
            text.starts_with("store: add metadata: database: "),
            "{text}"
        );
        assert!(text.contains("no such table: user_metadata"), "{text}");
        let cause = write.source().expect("the database error is the source");
        assert!(text.ends_with(&cause.to_string()), "{text} / {cause}");

        let read = store.user_metadata(id, "/k").await.unwrap_err();
        assert!(
            matches!(
                read,
                StoreError::Database {
                    operation: Operation::UserMetadata,
                    ..
                }
            ),
            "{read:?}"
        );
        assert!(
            read.to_string()
                .starts_with("store: read metadata: database: "),
            "{read}"
        );
        assert!(!read.is_disk_full());
    }

    #[tokio::test]
    async fn reads_after_close_fail_as_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (id, inbox) = account(&store, "a@x.test").await;
        store.close().await;
        let read = store.messages(inbox, 0).await;
        assert!(matches!(read, Err(StoreError::Closed)), "{read:?}");
        let write = store.create_mailbox(id, "Sent").await;
        assert!(matches!(write, Err(StoreError::Closed)), "{write:?}");
    }

    #[test]
    fn an_internal_failure_keeps_its_cause_as_source() {
        let cause = std::io::Error::other("the task panicked");
        let error = StoreError::internal(cause);
        assert_eq!(error.to_string(), "internal failure: the task panicked");
        let source = error.source().expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }
}
