//! The single writer and its group commit.
//!
//! Flow: a caller wraps its write as a job and sends it over a bounded
//! channel with a oneshot for the answer. The writer task takes the first
//! job, then drains whatever else is already queued (up to `max_batch` jobs
//! and [`MAX_BATCH_BYTES`] of message bodies),
//! runs them all in one `BEGIN IMMEDIATE` transaction, each inside its own
//! `SAVEPOINT`, commits once (one fsync with `synchronous = FULL`), then
//! answers every caller and bumps the change counters of the touched
//! accounts.
//!
//! Invariants:
//! - a caller is answered only after the commit holding its write returned,
//!   so "stored" means durable;
//! - a failing job rolls back to its savepoint and fails alone; only a
//!   failing `BEGIN`, savepoint or `COMMIT` fails the whole batch, and then
//!   every job of it hears the same cause ([`StoreError::Batch`], each
//!   naming its own operation);
//! - the writer owns the only connection that writes, so writes never meet
//!   `SQLITE_BUSY` from each other and run in arrival order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{DatabaseError, OpError, Operation};
use crate::events::Events;
use crate::{AccountId, StoreError};

/// A boxed future borrowing the write connection.
pub(crate) type BoxFuture<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// Accounts whose mailboxes a write changed (their subscribers get woken).
pub(crate) type Touched = Vec<AccountId>;

/// What a write operation returns inside the transaction.
pub(crate) type OpResult<T> = Result<(T, Touched), OpError>;

/// Message bytes after which a batch takes no further job, so that one
/// transaction (and the WAL it grows) stays moderate with large messages.
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;

/// One queued write, type-erased so that different writes share a batch.
trait Job: Send {
    /// Runs inside the batch; keeps its result until the commit. Returns the
    /// touched accounts, or `None` if it failed (and must be rolled back).
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Option<Touched>>;
    /// Answers the caller once the batch is committed (or failed, with the
    /// cause every job of the batch shares).
    fn answer(self: Box<Self>, commit: Result<(), Arc<DatabaseError>>);
    /// Bytes of message data the job writes (for the batch bound).
    fn bytes(&self) -> usize;
}

struct Pending<T, F> {
    /// The public operation, named in the caller's error.
    operation: Operation,
    op: Option<F>,
    bytes: usize,
    result: Option<Result<T, OpError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, OpResult<T>> + Send + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Option<Touched>> {
        let op = self.op.take();
        Box::pin(async move {
            match op?(conn).await {
                Ok((value, touched)) => {
                    self.result = Some(Ok(value));
                    Some(touched)
                }
                Err(e) => {
                    self.result = Some(Err(e));
                    None
                }
            }
        })
    }

    fn answer(self: Box<Self>, commit: Result<(), Arc<DatabaseError>>) {
        let operation = self.operation;
        let result = match (commit, self.result) {
            (_, Some(Err(e))) => Err(e.during(operation)),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(cause), _) => Err(StoreError::Batch { operation, cause }),
            (Ok(()), None) => Err(StoreError::internal(
                "the writer committed a batch without running one of its jobs",
            )),
        };
        // The caller may have gone away (connection dropped): nothing to do.
        let _ = self.reply.send(result);
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Messages to the writer task.
enum Msg {
    Job(Box<dyn Job>),
    /// Finish the queued jobs, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// Sending side, held by every `Store` clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    /// Queues `op`, the body of the public `operation` that writes about
    /// `bytes` of message data, and waits until its batch is committed.
    pub(crate) async fn run<T, F>(
        &self,
        operation: Operation,
        bytes: usize,
        op: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, OpResult<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            operation,
            op: Some(op),
            bytes,
            result: None,
            reply,
        });
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Lets queued writes finish, then closes the write connection.
    pub(crate) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// State shared between the writer task and the `Store` handles.
pub(crate) struct Shared {
    pub(crate) events: Events,
    /// Committed batches, for tests and benchmarks.
    pub(crate) commits: AtomicU64,
}

/// Starts the writer task; it ends when every handle is dropped or on close.
/// The handle lets the owner see it end ([`crate::Store::writer_stopped`]).
pub(crate) fn spawn(
    conn: SqliteConnection,
    max_batch: usize,
    shared: Arc<Shared>,
) -> (Writer, JoinHandle<()>) {
    let max_batch = max_batch.max(1);
    // Bounded queue: callers wait (back-pressure) instead of piling up bodies.
    let (tx, rx) = mpsc::channel(max_batch.saturating_mul(4));
    let task = tokio::spawn(writer_loop(conn, rx, max_batch, shared));
    (Writer { tx }, task)
}

async fn writer_loop(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    shared: Arc<Shared>,
) {
    let mut closing = None;
    while closing.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut batch: Vec<Box<dyn Job>> = Vec::new();
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Job(job) => {
                    bytes = bytes.saturating_add(job.bytes());
                    batch.push(job);
                }
                Msg::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            if batch.len() < max_batch && bytes < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, batch, &shared).await;
        }
    }
    if let Err(e) = sqlx::Connection::close(conn).await {
        tracing::warn!(error = %e, "closing the write connection failed");
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Runs one batch in one transaction and answers every job.
async fn commit_batch(conn: &mut SqliteConnection, mut batch: Vec<Box<dyn Job>>, shared: &Shared) {
    let mut touched = Vec::new();
    let outcome = run_batch(conn, &mut batch, &mut touched).await;
    if let Err(e) = &outcome {
        tracing::error!(error = %e, jobs = batch.len(), "write batch failed");
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    } else {
        shared.commits.fetch_add(1, Ordering::Relaxed);
    }
    let commit = outcome.map_err(|e| Arc::new(DatabaseError::new(e)));
    for job in batch {
        job.answer(commit.clone());
    }
    if commit.is_ok() {
        touched.sort_unstable();
        touched.dedup();
        shared.events.bump(&touched);
    }
}

async fn run_batch(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
    touched: &mut Touched,
) -> Result<(), sqlx::Error> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    for job in batch.iter_mut() {
        sqlx::query("SAVEPOINT job").execute(&mut *conn).await?;
        match job.run(conn).await {
            Some(accounts) => touched.extend(accounts),
            None => {
                sqlx::query("ROLLBACK TO job").execute(&mut *conn).await?;
            }
        }
        sqlx::query("RELEASE job").execute(&mut *conn).await?;
    }
    sqlx::query("COMMIT").execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;

    /// A connection to an empty database with a parent and a child table.
    async fn connection() -> SqliteConnection {
        let options: SqliteConnectOptions = "sqlite::memory:".parse().unwrap();
        let mut conn = options.foreign_keys(true).connect().await.unwrap();
        for sql in [
            "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
            "CREATE TABLE child (parent INTEGER REFERENCES parent (id))",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        conn
    }

    async fn execute(
        c: &mut SqliteConnection,
        statements: &'static [&'static str],
    ) -> OpResult<()> {
        for sql in statements.iter().copied() {
            sqlx::query(sql).execute(&mut *c).await?;
        }
        Ok(((), Vec::new()))
    }

    /// A job of `operation` running `statements`, and where it is answered.
    fn job(
        operation: Operation,
        statements: &'static [&'static str],
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<(), StoreError>>) {
        pending(operation, move |c| Box::pin(execute(c, statements)))
    }

    fn pending<F>(
        operation: Operation,
        op: F,
    ) -> (Box<dyn Job>, oneshot::Receiver<Result<(), StoreError>>)
    where
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, OpResult<()>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            operation,
            op: Some(op),
            bytes: 0,
            result: None,
            reply,
        };
        (Box::new(pending), answer)
    }

    #[tokio::test]
    async fn a_failed_commit_reaches_every_job_of_the_batch_with_one_cause() {
        let mut conn = connection().await;
        let shared = Shared {
            events: Events::default(),
            commits: AtomicU64::new(0),
        };
        // Each job succeeds in its savepoint; the deferred foreign key
        // check fails the COMMIT of the batch.
        let (orphan, orphan_answer) = job(
            Operation::Append,
            &[
                "PRAGMA defer_foreign_keys = ON",
                "INSERT INTO child VALUES (1)",
            ],
        );
        let (parent, parent_answer) =
            job(Operation::CreateMailbox, &["INSERT INTO parent VALUES (2)"]);
        commit_batch(&mut conn, vec![orphan, parent], &shared).await;

        let first = orphan_answer.await.unwrap().unwrap_err();
        let second = parent_answer.await.unwrap().unwrap_err();
        let (
            StoreError::Batch {
                operation: Operation::Append,
                cause: one,
            },
            StoreError::Batch {
                operation: Operation::CreateMailbox,
                cause: other,
            },
        ) = (&first, &second)
        else {
            panic!("not batch failures of their operations: {first:?}, {second:?}");
        };
        assert!(Arc::ptr_eq(one, other), "the cause is shared");
        assert!(one.to_string().contains("FOREIGN KEY"), "{one}");
        assert!(
            first
                .to_string()
                .starts_with("store: append: batch transaction failed: "),
            "{first}"
        );
        assert!(!first.is_disk_full());
        assert_eq!(shared.commits.load(Ordering::Relaxed), 0);
        let parents: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM parent")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(parents, 0, "the batch was rolled back");
    }
}
