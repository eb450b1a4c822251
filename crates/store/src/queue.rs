//! The outbound queue's tables: messages waiting for delivery to other
//! relays, with one row per recipient (see `migrations/0002_queue.sql`).
//!
//! Flow: [`Store::enqueue`] commits a message with all its recipients
//! `pending` (through the writer, so it is fsync'd on return); the queue's
//! scheduler reads [`Store::due_deliveries`] grouped by (message, domain),
//! and after each attempt [`Store::record_attempt`] stores every
//! recipient's outcome, the bounce for failed ones, and drops the message
//! once no recipient is pending: all in one transaction, so a crash never
//! loses a bounce nor sends one twice.
//!
//! Invariants:
//! - times are Unix milliseconds;
//! - a message row exists exactly as long as one of its recipients is
//!   `pending`;
//! - `sender` is stored as '' for the null sender.

use sqlx::SqliteConnection;

use crate::error::{During, OpError, Operation};
use crate::writer::OpResult;
use crate::{AccountId, NewMessage, Store, StoreError, ops};

/// Row id of a queued message.
pub type QueueId = i64;

/// One recipient of a message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRecipient {
    /// The full address.
    pub address: String,
    /// The domain part, lower case: deliveries are grouped by it.
    pub domain: String,
}

/// The recipients of one message at one domain that are due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: QueueId,
    pub domain: String,
    /// `None`: the null sender.
    pub sender: Option<String>,
    /// The pending recipients at `domain`, all due.
    pub recipients: Vec<String>,
    /// Attempts made so far (the most among `recipients`).
    pub attempts: u32,
    /// When the message was queued (ms).
    pub created: i64,
}

/// Where a queued recipient stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueState {
    Pending,
    Delivered,
    Failed,
}

impl QueueState {
    fn as_str(self) -> &'static str {
        match self {
            QueueState::Pending => "pending",
            QueueState::Delivered => "delivered",
            QueueState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> QueueState {
        match text {
            "delivered" => QueueState::Delivered,
            "failed" => QueueState::Failed,
            _ => QueueState::Pending,
        }
    }
}

/// The outcome of one attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at `at` (ms); `error` says why it failed this time.
    Retry {
        at: i64,
        error: String,
    },
    /// Given up (rejected or expired).
    Failed(String),
}

/// One recipient row, for `madmail queue list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub id: QueueId,
    pub sender: Option<String>,
    pub recipient: String,
    pub domain: String,
    pub state: QueueState,
    pub attempts: u32,
    /// Next attempt (ms) if pending.
    pub next_attempt: i64,
    pub last_error: Option<String>,
    /// When the message was queued (ms).
    pub created: i64,
    /// Size of the queued message in bytes.
    pub size: u64,
}

/// Queue totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages with at least one pending recipient.
    pub messages: u64,
    /// Pending recipients over all messages.
    pub recipients: u64,
}

type EntryRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    i64,
    i64,
);

/// Recipient rows read per wanted group in [`Store::due_deliveries`].
const DUE_ROWS_PER_GROUP: usize = 8;

impl Store {
    /// Queues `body` from `sender` (`None`: null sender) for `recipients`,
    /// all due at `now` (ms). Durable on return.
    pub async fn enqueue(
        &self,
        sender: Option<&str>,
        recipients: &[QueueRecipient],
        body: bytes::Bytes,
        now: i64,
    ) -> Result<QueueId, StoreError> {
        let sender = sender.unwrap_or("").to_owned();
        let recipients = recipients.to_vec();
        self.inner
            .writer
            .run(Operation::Enqueue, body.len(), move |c| {
                Box::pin(enqueue(c, sender, recipients, body, now))
            })
            .await
    }

    /// Up to `limit` (message, domain) groups with recipients due at `now`,
    /// the longest waiting first.
    pub async fn due_deliveries(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.due_deliveries_except(now, limit, &[]).await
    }

    /// [`Store::due_deliveries`] leaving out the domains in `skip` (those
    /// the scheduler gives no more attempts now), so that their rows do not
    /// use up the limit before other domains' due mail is read.
    pub async fn due_deliveries_except(
        &self,
        now: i64,
        limit: usize,
        skip: &[String],
    ) -> Result<Vec<DueDelivery>, StoreError> {
        // Read due recipient rows in index order and group them here: the
        // cost is bounded by the rows read, not by the queue's length (a
        // GROUP BY over every due row made each scheduler round O(queue)).
        // A group cut at the row limit is delivered in two attempts, which
        // is correct, just less batched.
        let rows_limit =
            i64::try_from(limit.saturating_mul(DUE_ROWS_PER_GROUP)).unwrap_or(i64::MAX);
        // One placeholder per skipped domain (the scheduler skips at most
        // a few): the statement stays a prepared one per count.
        let placeholders = vec!["?"; skip.len()].join(", ");
        let sql = format!(
            "SELECT r.message_id, r.domain, r.recipient, m.sender, r.attempts, m.created \
             FROM queue_recipients r JOIN queue_messages m ON m.id = r.message_id \
             WHERE r.state = 'pending' AND r.next_attempt <= ? \
             AND r.domain NOT IN ({placeholders}) \
             ORDER BY r.next_attempt, r.message_id LIMIT ?"
        );
        let mut query =
            sqlx::query_as::<_, (i64, String, String, String, i64, i64)>(sqlx::AssertSqlSafe(sql))
                .bind(now);
        for domain in skip {
            query = query.bind(domain);
        }
        let rows = query
            .bind(rows_limit)
            .fetch_all(self.db())
            .await
            .during(Operation::DueDeliveries)?;
        let mut due: Vec<DueDelivery> = Vec::new();
        for (id, domain, recipient, sender, attempts, created) in rows {
            let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
            if let Some(group) = due.iter_mut().find(|d| d.id == id && d.domain == domain) {
                group.recipients.push(recipient);
                group.attempts = group.attempts.max(attempts);
                continue;
            }
            if due.len() == limit {
                continue;
            }
            due.push(DueDelivery {
                id,
                domain,
                sender: Some(sender).filter(|s| !s.is_empty()),
                recipients: vec![recipient],
                attempts,
                created,
            });
        }
        for group in &mut due {
            group.recipients.sort();
        }
        Ok(due)
    }

    /// The earliest pending attempt strictly after `after` (ms), if any.
    pub async fn next_queue_attempt(&self, after: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT MIN(next_attempt) FROM queue_recipients \
             WHERE state = 'pending' AND next_attempt > ?",
        )
        .bind(after)
        .fetch_one(self.db())
        .await
        .during(Operation::NextQueueAttempt)
    }

    /// The latest pending attempt (ms), if any.
    pub async fn last_queue_attempt(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT MAX(next_attempt) FROM queue_recipients WHERE state = 'pending'")
            .fetch_one(self.db())
            .await
            .during(Operation::LastQueueAttempt)
    }

    /// Makes every pending attempt scheduled after `latest` (ms) due at
    /// `now`; returns how many recipients moved. The scheduler never sets
    /// a time further ahead than its longest backoff, so such a time was
    /// set by a wall clock that has since been put back: waiting for it
    /// would hold the mail back by the size of the jump.
    pub async fn pull_in_queue(&self, latest: i64, now: i64) -> Result<u64, StoreError> {
        let sql = "UPDATE queue_recipients SET next_attempt = ? \
                   WHERE state = 'pending' AND next_attempt > ?";
        self.pull_in(Operation::PullInQueue, sql, latest, now).await
    }

    /// Runs `sql`, an UPDATE that sets `next_attempt` to its first
    /// parameter (`now`) where it exceeds its second (`latest`), as
    /// `operation`; returns how many rows moved.
    pub(crate) async fn pull_in(
        &self,
        operation: Operation,
        sql: &'static str,
        latest: i64,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.inner
            .writer
            .run(operation, 0, move |c| {
                Box::pin(async move {
                    let moved = sqlx::query(sql)
                        .bind(now)
                        .bind(latest)
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                    Ok((moved, Vec::new()))
                })
            })
            .await
    }

    /// The queued message as it is sent (DKIM-signed).
    pub async fn queued_body(&self, id: QueueId) -> Result<Option<bytes::Bytes>, StoreError> {
        let body: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT body FROM queue_messages WHERE id = ?")
                .bind(id)
                .fetch_optional(self.db())
                .await
                .during(Operation::QueuedBody)?;
        Ok(body.map(bytes::Bytes::from))
    }

    /// Stores the outcomes of one attempt for recipients of message `id`,
    /// delivers `bounce` (a DSN) to the INBOX of its account, and deletes
    /// the message when no recipient is left pending: one transaction.
    /// A bounce whose account no longer exists is dropped.
    pub async fn record_attempt(
        &self,
        id: QueueId,
        outcomes: Vec<(String, AttemptOutcome)>,
        bounce: Option<(AccountId, NewMessage)>,
    ) -> Result<(), StoreError> {
        let bytes = bounce.as_ref().map_or(0, |(_, m)| m.body.len());
        self.inner
            .writer
            .run(Operation::RecordAttempt, bytes, move |c| {
                Box::pin(record_attempt(c, id, outcomes, bounce))
            })
            .await
    }

    /// Every queued recipient, by message then recipient.
    pub async fn queue_entries(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let rows: Vec<EntryRow> = sqlx::query_as(
            "SELECT m.id, m.sender, r.recipient, r.domain, r.state, r.attempts, r.next_attempt, \
             r.last_error, m.created, length(m.body) \
             FROM queue_recipients r JOIN queue_messages m ON m.id = r.message_id \
             ORDER BY m.id, r.recipient",
        )
        .fetch_all(self.db())
        .await
        .during(Operation::QueueEntries)?;
        Ok(rows.into_iter().map(entry_of).collect())
    }

    /// Messages and recipients still pending.
    pub async fn queue_counts(&self) -> Result<QueueCounts, StoreError> {
        let (messages, recipients): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(DISTINCT message_id), COUNT(*) FROM queue_recipients WHERE state = 'pending'",
        )
        .fetch_one(self.db())
        .await
        .during(Operation::QueueCounts)?;
        Ok(QueueCounts {
            messages: u64::try_from(messages).unwrap_or(0),
            recipients: u64::try_from(recipients).unwrap_or(0),
        })
    }

    /// Makes every pending recipient due now; returns how many.
    pub async fn queue_flush(&self) -> Result<u64, StoreError> {
        self.inner
            .writer
            .run(Operation::QueueFlush, 0, |c| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE queue_recipients SET next_attempt = 0 WHERE state = 'pending'",
                    )
                    .execute(&mut *c)
                    .await?;
                    Ok((done.rows_affected(), Vec::new()))
                })
            })
            .await
    }

    /// Drops every queued message without bouncing; returns how many.
    pub async fn queue_purge(&self) -> Result<u64, StoreError> {
        self.inner
            .writer
            .run(Operation::QueuePurge, 0, |c| {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM queue_messages")
                        .execute(&mut *c)
                        .await?;
                    Ok((done.rows_affected(), Vec::new()))
                })
            })
            .await
    }
}

fn entry_of(row: EntryRow) -> QueueEntry {
    let (id, sender, recipient, domain, state, attempts, next_attempt, last_error, created, size) =
        row;
    QueueEntry {
        id,
        sender: Some(sender).filter(|s| !s.is_empty()),
        recipient,
        domain,
        state: QueueState::parse(&state),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt,
        last_error,
        created,
        size: u64::try_from(size).unwrap_or(0),
    }
}

async fn enqueue(
    c: &mut SqliteConnection,
    sender: String,
    recipients: Vec<QueueRecipient>,
    body: bytes::Bytes,
    now: i64,
) -> OpResult<QueueId> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO queue_messages (sender, body, created) VALUES (?, ?, ?) RETURNING id",
    )
    .bind(sender)
    .bind(body.as_ref())
    .bind(now)
    .fetch_one(&mut *c)
    .await?;
    for rcpt in recipients {
        // A recipient given twice is queued once.
        sqlx::query(
            "INSERT INTO queue_recipients (message_id, recipient, domain, next_attempt) \
             VALUES (?, ?, ?, ?) ON CONFLICT (message_id, recipient) DO NOTHING",
        )
        .bind(id)
        .bind(rcpt.address)
        .bind(rcpt.domain)
        .bind(now)
        .execute(&mut *c)
        .await?;
    }
    Ok((id, Vec::new()))
}

async fn record_attempt(
    c: &mut SqliteConnection,
    id: QueueId,
    outcomes: Vec<(String, AttemptOutcome)>,
    bounce: Option<(AccountId, NewMessage)>,
) -> OpResult<()> {
    for (recipient, outcome) in outcomes {
        let (state, next, error) = match outcome {
            AttemptOutcome::Delivered => (QueueState::Delivered, 0, None),
            AttemptOutcome::Retry { at, error } => (QueueState::Pending, at, Some(error)),
            AttemptOutcome::Failed(error) => (QueueState::Failed, 0, Some(error)),
        };
        sqlx::query(
            "UPDATE queue_recipients SET state = ?, next_attempt = ?, \
             last_error = COALESCE(?, last_error), attempts = attempts + 1 \
             WHERE message_id = ? AND recipient = ? AND state = 'pending'",
        )
        .bind(state.as_str())
        .bind(next)
        .bind(error)
        .bind(id)
        .bind(recipient)
        .execute(&mut *c)
        .await?;
    }
    sqlx::query(
        "DELETE FROM queue_messages WHERE id = ? AND NOT EXISTS \
         (SELECT 1 FROM queue_recipients WHERE message_id = ? AND state = 'pending')",
    )
    .bind(id)
    .bind(id)
    .execute(&mut *c)
    .await?;
    let mut touched = Vec::new();
    if let Some((account, message)) = bounce {
        // Bounces are small and tell the sender about a failure: exempt
        // from the quota.
        match ops::deliver(c, vec![account], message, None, None).await {
            Ok((_, accounts)) => touched = accounts,
            // The sender's account is gone: nobody to tell.
            Err(OpError::Refused(StoreError::NoAccount)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(((), touched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Created, StoreOptions};

    async fn open(dir: &tempfile::TempDir) -> Store {
        let path = dir.path().join("q.db");
        Store::open(StoreOptions {
            path,
            max_batch: 16,
        })
        .await
        .unwrap()
    }

    fn rcpt(address: &str) -> QueueRecipient {
        let domain = address.rsplit_once('@').unwrap().1.to_owned();
        QueueRecipient {
            address: address.into(),
            domain,
        }
    }

    fn bounce(body: &'static [u8]) -> NewMessage {
        NewMessage {
            body: bytes::Bytes::from_static(body),
            flags: Vec::new(),
            internal_date: 1,
        }
    }

    #[tokio::test]
    async fn due_recipients_are_grouped_by_message_and_domain() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let rcpts = [
            rcpt("a@x.test"),
            rcpt("b@x.test"),
            rcpt("c@y.test"),
            rcpt("a@x.test"),
        ];
        let body = bytes::Bytes::from_static(b"Subject: s\r\n\r\nbody\r\n");
        let id = store
            .enqueue(Some("me@here.test"), &rcpts, body.clone(), 1000)
            .await
            .unwrap();
        assert!(store.due_deliveries(999, 10).await.unwrap().is_empty());
        let due = store.due_deliveries(1000, 10).await.unwrap();
        assert_eq!(due.len(), 2);
        let x = due.iter().find(|d| d.domain == "x.test").unwrap();
        assert_eq!(x.recipients, ["a@x.test", "b@x.test"]);
        assert_eq!(
            (x.id, x.sender.as_deref(), x.created),
            (id, Some("me@here.test"), 1000)
        );
        assert_eq!(store.due_deliveries(1000, 1).await.unwrap().len(), 1);
        assert_eq!(store.queued_body(id).await.unwrap(), Some(body));
    }

    #[tokio::test]
    async fn skipped_domains_leave_the_limit_to_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let body = bytes::Bytes::from_static(b"Subject: s\r\n\r\nbody\r\n");
        for at in [1000, 1001, 1002] {
            let rcpts = [rcpt("a@stuck.test")];
            store.enqueue(None, &rcpts, body.clone(), at).await.unwrap();
        }
        store
            .enqueue(None, &[rcpt("b@fine.test")], body, 1003)
            .await
            .unwrap();
        let first = store.due_deliveries(2000, 2).await.unwrap();
        assert!(first.iter().all(|d| d.domain == "stuck.test"));
        let skip = ["stuck.test".to_owned()];
        let due = store.due_deliveries_except(2000, 2, &skip).await.unwrap();
        let domains: Vec<&str> = due.iter().map(|d| d.domain.as_str()).collect();
        assert_eq!(domains, ["fine.test"]);
    }

    #[tokio::test]
    async fn outcomes_are_kept_until_no_recipient_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let rcpts = [rcpt("a@x.test"), rcpt("b@x.test")];
        let id = store
            .enqueue(None, &rcpts, bytes::Bytes::from_static(b"m"), 0)
            .await
            .unwrap();
        let retry = AttemptOutcome::Retry {
            at: 5000,
            error: "451 busy".into(),
        };
        let first = vec![
            ("a@x.test".into(), AttemptOutcome::Delivered),
            ("b@x.test".into(), retry),
        ];
        store.record_attempt(id, first, None).await.unwrap();
        let entries = store.queue_entries().await.unwrap();
        assert_eq!(entries[0].state, QueueState::Delivered);
        assert_eq!(
            (
                entries[1].state,
                entries[1].attempts,
                entries[1].next_attempt
            ),
            (QueueState::Pending, 1, 5000)
        );
        assert_eq!(entries[1].last_error.as_deref(), Some("451 busy"));
        assert_eq!(
            store.queue_counts().await.unwrap(),
            QueueCounts {
                messages: 1,
                recipients: 1
            }
        );
        assert!(store.due_deliveries(4999, 10).await.unwrap().is_empty());
        assert_eq!(store.next_queue_attempt(0).await.unwrap(), Some(5000));
        assert_eq!(store.queue_flush().await.unwrap(), 1);
        assert_eq!(
            store.due_deliveries(0, 10).await.unwrap()[0].recipients,
            ["b@x.test"]
        );
        let last = vec![("b@x.test".into(), AttemptOutcome::Failed("550 no".into()))];
        store.record_attempt(id, last, None).await.unwrap();
        assert!(store.queue_entries().await.unwrap().is_empty());
        assert_eq!(store.queued_body(id).await.unwrap(), None);
        assert_eq!(store.next_queue_attempt(0).await.unwrap(), None);
    }

    #[tokio::test]
    async fn only_attempts_beyond_the_horizon_are_pulled_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let rcpts = [rcpt("a@x.test"), rcpt("b@x.test"), rcpt("c@y.test")];
        let id = store
            .enqueue(None, &rcpts, bytes::Bytes::from_static(b"m"), 0)
            .await
            .unwrap();
        let retry = |at| AttemptOutcome::Retry {
            at,
            error: "451 busy".into(),
        };
        // Scheduled an hour ahead of a clock that has since gone back by
        // two hours: now is 1_000, the jump left them at 10_000_000 ms.
        let outcomes = vec![
            ("a@x.test".into(), retry(10_000_000)),
            ("b@x.test".into(), retry(3_000)),
            ("c@y.test".into(), AttemptOutcome::Delivered),
        ];
        store.record_attempt(id, outcomes, None).await.unwrap();
        assert_eq!(store.last_queue_attempt().await.unwrap(), Some(10_000_000));
        assert_eq!(store.pull_in_queue(5_000, 1_000).await.unwrap(), 1);
        let at: Vec<_> = store
            .queue_entries()
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.recipient, e.next_attempt))
            .collect();
        assert!(at.contains(&("a@x.test".into(), 1_000)), "{at:?}");
        assert!(at.contains(&("b@x.test".into(), 3_000)), "{at:?}");
        assert_eq!(store.pull_in_queue(5_000, 1_000).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_bounce_is_stored_with_the_outcome_and_a_missing_account_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let Created::New(me) = store.create_account("me@here.test", "h").await.unwrap() else {
            panic!("account existed");
        };
        let rcpts = [rcpt("a@x.test")];
        let id = store
            .enqueue(
                Some("me@here.test"),
                &rcpts,
                bytes::Bytes::from_static(b"m"),
                0,
            )
            .await
            .unwrap();
        let failed = vec![("a@x.test".into(), AttemptOutcome::Failed("550".into()))];
        store
            .record_attempt(id, failed.clone(), Some((me.id, bounce(b"DSN"))))
            .await
            .unwrap();
        let inbox = store.mailbox(me.id, "INBOX").await.unwrap().unwrap();
        assert_eq!(
            store.body(inbox.id, 1).await.unwrap().as_deref(),
            Some(&b"DSN"[..])
        );
        let id = store
            .enqueue(
                Some("gone@here.test"),
                &rcpts,
                bytes::Bytes::from_static(b"m"),
                0,
            )
            .await
            .unwrap();
        store
            .record_attempt(id, failed, Some((me.id + 100, bounce(b"lost"))))
            .await
            .unwrap();
        assert!(store.queue_entries().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn purge_empties_the_queue_and_it_survives_a_reopen_until_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        store
            .enqueue(
                None,
                &[rcpt("a@x.test")],
                bytes::Bytes::from_static(b"1"),
                0,
            )
            .await
            .unwrap();
        store
            .enqueue(
                None,
                &[rcpt("b@y.test")],
                bytes::Bytes::from_static(b"2"),
                0,
            )
            .await
            .unwrap();
        store.close().await;
        let store = open(&dir).await;
        assert_eq!(store.queue_entries().await.unwrap().len(), 2);
        assert_eq!(store.queue_purge().await.unwrap(), 2);
        assert!(store.queue_entries().await.unwrap().is_empty());
        assert_eq!(store.queue_counts().await.unwrap(), QueueCounts::default());
    }
}
