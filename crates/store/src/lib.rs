//! chatmail-store: durable storage of accounts, mailboxes, messages and
//! metadata, and the change events IMAP IDLE listens to.
//!
//! This is the only crate that knows SQL. Protocol crates see the API below.
//!
//! # Layout
//! One SQLite file in WAL mode with `synchronous = FULL` and foreign keys on.
//! Tables (see `migrations/`): `accounts`, `mailboxes` (UIDVALIDITY, UIDNEXT),
//! `messages` (flags as a space-separated text column, body as a BLOB, keyed
//! by `(mailbox_id, uid)`), `user_metadata`, `server_metadata`, the outbound
//! queue's `queue_messages` and `queue_recipients` (module `queue`),
//! `inbound_digests` (what each account got from other relays in the last
//! day, so that a peer's retry is not stored twice) and sqlx's
//! `_sqlx_migrations`. Deleting an account cascades to everything it owns.
//!
//! # Writes: one writer, group commit
//! Every write goes through one writer task that owns the only writing
//! connection (module `writer`). Callers queue a job and wait on a oneshot.
//! The writer takes the first job, drains whatever else is already queued
//! (at most [`StoreOptions::max_batch`] jobs and 64 MiB of message bodies),
//! runs them in one transaction with a savepoint per job (a failing job
//! rolls back alone), commits once and only then answers. So a `250 OK` after [`Store::deliver`] means the message is
//! on disk, and N concurrent deliveries cost about one fsync, not N.
//!
//! Trade-off: a lone write still pays one fsync and waits for nothing (the
//! writer never sleeps to gather a batch, so an idle server has no added
//! latency); under load a write waits for the batch in progress plus its
//! own, which the batch bound keeps short. A bigger `max_batch` means fewer
//! fsyncs but a longer wait for the last job in the batch and a bigger
//! transaction. The queue itself is bounded (4 × `max_batch`), so callers
//! wait instead of piling message bodies up in memory.
//!
//! # Reads
//! Reads use a separate pool; WAL lets them run beside the writer, and a read
//! started after a write was answered sees it.
//!
//! # Errors
//! Every public method fails with [`StoreError`]. A database failure names
//! the [`Operation`] that failed and carries an opaque [`DatabaseError`]; a
//! failed batch transaction reaches each of its jobs as
//! [`StoreError::Batch`] with the one shared cause (module `error`).
//!
//! # Change events
//! [`Store::subscribe`] gives a `watch` receiver per account; the writer
//! bumps it after each commit that changed the account's mail.
//!
//! Invariants: UIDVALIDITY is fixed when a mailbox is created and never
//! repeats; UIDNEXT never decreases and is advanced in the transaction that
//! stores the message (RFC 3501 §2.3.1.1); `INBOX` is case-insensitive,
//! other mailbox names are case-sensitive (RFC 3501 §5.1).

pub mod admin;
mod delivery;
mod error;
mod events;
pub mod expire;
mod flags;
mod messages;
mod metadata;
mod ops;
pub mod push;
mod queue;
pub mod quota;
mod read;
mod types;
mod writer;

pub use admin::{AccountSummary, AccountsPage, Blocked, Invite, NewInvite};
pub use delivery::DUPLICATE_WINDOW;
pub use error::{DatabaseError, OpenProblem, Operation, StoreError};
pub use expire::{ExpireReport, ExpireRules};
pub use metadata::{DEVICE_TOKEN, DEVICE_TOKEN_LIFETIME};
pub use queue::{
    AttemptOutcome, DueDelivery, QueueCounts, QueueEntry, QueueId, QueueRecipient, QueueState,
};
pub use types::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, SqlSafeStr};

use crate::error::During;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Connections for reads only.
    read: SqlitePool,
    /// The queue to the single writer.
    writer: writer::Writer,
    /// The writer task, until [`Store::writer_stopped`] takes it.
    writer_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Change counters and statistics shared with the writer.
    shared: Arc<writer::Shared>,
    /// Per-account quota in bytes, [`quota::UNLIMITED`] for none; read when
    /// a write is queued (see [`Store::set_quota`]).
    quota: AtomicU64,
}

/// How long a connection waits for a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections: a few suffice on small machines, reads are short.
const READ_CONNECTIONS: u32 = 8;

fn migrator() -> Migrator {
    // Embedded at compile time; sqlx records each applied version with its
    // checksum, so an edited migration is detected instead of re-run.
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            include_str!("../migrations/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "queue".into(),
            MigrationType::Simple,
            include_str!("../migrations/0002_queue.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "push".into(),
            MigrationType::Simple,
            include_str!("../migrations/0003_push.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "admin".into(),
            MigrationType::Simple,
            include_str!("../migrations/0004_admin.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "inbound digests".into(),
            MigrationType::Simple,
            include_str!("../migrations/0005_inbound_digests.sql").into_sql_str(),
            false,
        ),
    ])
}

impl Store {
    /// Opens (creating and migrating) the database and starts the writer.
    pub async fn open(options: StoreOptions) -> Result<Store, StoreError> {
        let fail = |problem| StoreError::Open {
            path: options.path.clone(),
            problem,
        };
        if let Some(parent) = options.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| fail(OpenProblem::of_sqlx(&sqlx::Error::Io(e))))?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(&options.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A commit is fsync'd before any caller hears "stored".
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let mut write_conn = connect
            .connect()
            .await
            .map_err(|e| fail(OpenProblem::of_sqlx(&e)))?;
        migrator()
            .run(&mut write_conn)
            .await
            .map_err(|e| fail(OpenProblem::of_migration(&e)))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(connect)
            .await
            .map_err(|e| fail(OpenProblem::of_sqlx(&e)))?;
        let shared = Arc::new(writer::Shared {
            events: events::Events::default(),
            commits: Default::default(),
        });
        let (writer, task) = writer::spawn(write_conn, options.max_batch, shared.clone());
        Ok(Store {
            inner: Arc::new(Inner {
                read,
                writer,
                writer_task: std::sync::Mutex::new(Some(task)),
                shared,
                quota: AtomicU64::new(quota::UNLIMITED),
            }),
        })
    }

    /// Lets queued writes finish, then closes all connections. Later calls
    /// fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.read.close().await;
    }

    /// Waits until the writer task ends: after [`Store::close`] or when
    /// every handle is gone, or early if it panics (the error says so).
    /// Only the first caller waits; later calls return at once.
    pub async fn writer_stopped(&self) -> Result<(), tokio::task::JoinError> {
        let task = self
            .inner
            .writer_task
            .lock()
            .ok()
            .and_then(|mut t| t.take());
        match task {
            Some(task) => task.await,
            None => Ok(()),
        }
    }

    /// Committed write transactions so far (one per batch), for tests and
    /// benchmarks of the group commit.
    pub fn commit_count(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    fn db(&self) -> &SqlitePool {
        &self.inner.read
    }

    // --- accounts ---

    /// Looks up an account by address (lower-cased by the caller).
    pub async fn account(&self, address: &str) -> Result<Option<Account>, StoreError> {
        read::account(self.db(), address)
            .await
            .during(Operation::Account)
    }
    /// Creates an account with its INBOX, unless it exists; safe under
    /// concurrent calls for the same address (exactly one `New`).
    pub async fn create_account(
        &self,
        address: &str,
        password_hash: &str,
    ) -> Result<Created, StoreError> {
        let (address, hash) = (address.to_owned(), password_hash.to_owned());
        // Writes are serialised by the writer, and the insert is
        // `ON CONFLICT DO NOTHING`: the second caller finds the first's row.
        self.inner
            .writer
            .run(Operation::CreateAccount, 0, move |c| {
                Box::pin(ops::create_account(c, address, hash))
            })
            .await
    }
    /// Deletes an account and all its mail. Returns whether it existed.
    pub async fn delete_account(&self, address: &str) -> Result<bool, StoreError> {
        let address = address.to_owned();
        self.inner
            .writer
            .run(Operation::DeleteAccount, 0, move |c| {
                Box::pin(ops::delete_account(c, address))
            })
            .await
    }
    /// All accounts, ordered by address.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        read::accounts(self.db()).await.during(Operation::Accounts)
    }
    /// Records a login on `day` (Unix day).
    pub async fn record_login(&self, account: AccountId, day: i64) -> Result<(), StoreError> {
        self.inner
            .writer
            .run(Operation::RecordLogin, 0, move |c| {
                Box::pin(ops::record_login(c, account, day))
            })
            .await
    }

    // --- mailboxes ---

    /// The account's mailboxes, ordered by name.
    pub async fn mailboxes(&self, account: AccountId) -> Result<Vec<MailboxInfo>, StoreError> {
        read::mailboxes(self.db(), account)
            .await
            .during(Operation::Mailboxes)
    }
    /// Finds a mailbox by name; `INBOX` is case-insensitive (RFC 3501 §5.1).
    pub async fn mailbox(
        &self,
        account: AccountId,
        name: &str,
    ) -> Result<Option<MailboxInfo>, StoreError> {
        read::mailbox(self.db(), account, name)
            .await
            .during(Operation::Mailbox)
    }
    /// Creates a mailbox with a fresh UIDVALIDITY; well-known names get
    /// their special use (RFC 6154). Fails with
    /// [`StoreError::MailboxExists`] if the name is taken.
    pub async fn create_mailbox(
        &self,
        account: AccountId,
        name: &str,
    ) -> Result<MailboxInfo, StoreError> {
        let name = name.to_owned();
        self.inner
            .writer
            .run(Operation::CreateMailbox, 0, move |c| {
                Box::pin(ops::create_mailbox(c, account, name))
            })
            .await
    }
    /// Deletes a mailbox with its messages. `INBOX` cannot be deleted
    /// (RFC 3501 §6.3.4): that, like an unknown name, is
    /// [`StoreError::NoMailbox`].
    pub async fn delete_mailbox(&self, account: AccountId, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.inner
            .writer
            .run(Operation::DeleteMailbox, 0, move |c| {
                Box::pin(ops::delete_mailbox(c, account, name))
            })
            .await
    }
    /// Messages of a mailbox with `uid > after_uid`, ascending by UID.
    pub async fn messages(
        &self,
        mailbox: MailboxId,
        after_uid: u32,
    ) -> Result<Vec<MessageMeta>, StoreError> {
        read::messages(self.db(), mailbox, after_uid)
            .await
            .during(Operation::Messages)
    }
    /// All UIDs of a mailbox, ascending (cheap: no flags).
    pub async fn uids(&self, mailbox: MailboxId) -> Result<Vec<u32>, StoreError> {
        read::uids(self.db(), mailbox).await.during(Operation::Uids)
    }
    /// The raw message.
    pub async fn body(
        &self,
        mailbox: MailboxId,
        uid: u32,
    ) -> Result<Option<bytes::Bytes>, StoreError> {
        let body = read::body(self.db(), mailbox, uid)
            .await
            .during(Operation::Body)?;
        Ok(body.map(bytes::Bytes::from))
    }
    /// Changes flags; returns the new flags of each changed message.
    ///
    /// Precisely: the new flags of every existing message among `uids`
    /// (ascending), so a `STORE` can answer for each (RFC 3501 §6.4.6);
    /// subscribers are woken only if some flags really changed. System flags
    /// are stored in canonical case, `\Recent` is never stored.
    pub async fn set_flags(
        &self,
        mailbox: MailboxId,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
    ) -> Result<Vec<(u32, Vec<String>)>, StoreError> {
        let (uids, flags) = (uids.to_vec(), flags.to_vec());
        self.inner
            .writer
            .run(Operation::SetFlags, 0, move |c| {
                Box::pin(messages::set_flags(c, mailbox, uids, op, flags))
            })
            .await
    }
    /// Removes messages flagged `\Deleted` (only among `uids` if given);
    /// returns the removed UIDs ascending.
    pub async fn expunge(
        &self,
        mailbox: MailboxId,
        uids: Option<&[u32]>,
    ) -> Result<Vec<u32>, StoreError> {
        let uids = uids.map(<[u32]>::to_vec);
        self.inner
            .writer
            .run(Operation::Expunge, 0, move |c| {
                Box::pin(messages::expunge(c, mailbox, uids))
            })
            .await
    }
    /// Copies messages; returns (source uid, new uid) pairs. Fails with
    /// [`StoreError::QuotaExceeded`] (copying nothing) if the copies would
    /// put the account over its quota.
    pub async fn copy(
        &self,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let (uids, quota) = (uids.to_vec(), self.quota());
        self.inner
            .writer
            .run(Operation::Copy, 0, move |c| {
                Box::pin(messages::copy(c, from, uids, to, quota))
            })
            .await
    }
    /// Moves messages atomically; returns (source uid, new uid) pairs.
    pub async fn move_messages(
        &self,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<Vec<(u32, u32)>, StoreError> {
        let uids = uids.to_vec();
        self.inner
            .writer
            .run(Operation::Move, 0, move |c| {
                Box::pin(messages::move_messages(c, from, uids, to))
            })
            .await
    }
    /// Bytes stored for an account (quota).
    pub async fn usage(&self, account: AccountId) -> Result<u64, StoreError> {
        read::usage(self.db(), account)
            .await
            .during(Operation::Usage)
    }

    // --- metadata (RFC 5464) ---

    /// Per-account metadata values of `key`, oldest update first.
    pub async fn user_metadata(
        &self,
        account: AccountId,
        key: &str,
    ) -> Result<Vec<String>, StoreError> {
        read::user_metadata(self.db(), account, key)
            .await
            .during(Operation::UserMetadata)
    }
    /// Adds a per-account metadata value (adding an existing value refreshes
    /// it). At most 64 values are kept per key; the oldest go first.
    pub async fn add_user_metadata(
        &self,
        account: AccountId,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.inner
            .writer
            .run(Operation::AddUserMetadata, 0, move |c| {
                Box::pin(ops::add_user_metadata(c, account, key, value))
            })
            .await
    }

    // --- change events ---

    /// A receiver that changes whenever anything in the account's mailboxes
    /// changes (delivery, append, expunge, flags, copy, move). Subscribers
    /// re-read what they need; the value is a change counter.
    pub fn subscribe(&self, account: AccountId) -> tokio::sync::watch::Receiver<u64> {
        self.inner.shared.events.subscribe(account)
    }
}
