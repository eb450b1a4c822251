//! The push notification queue (see `migrations/0003_push.sql`): device
//! tokens with a notification still to send (docs/specifications.md §4).
//!
//! Flow: [`Store::push_enqueue`] adds one row per (account, token); the
//! push worker reads [`Store::push_due`], posts each token and then calls
//! [`Store::push_done`], [`Store::push_retry`] or [`Store::push_token_gone`].
//! Rows live in the database, so pending notifications survive a restart.
//!
//! Invariants:
//! - times are Unix milliseconds;
//! - at most one row per (account, token): a notification enqueued while
//!   one is pending for the same device collapses into it (the device is
//!   woken once and fetches everything new);
//! - a token the notification server declared gone is removed from the
//!   account's metadata and from the queue in one transaction.

use sqlx::SqliteConnection;

use crate::error::{During, Operation};
use crate::writer::OpResult;
use crate::{AccountId, Store, StoreError};

/// One pending notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEntry {
    pub account: AccountId,
    /// The device token, opaque, posted as is.
    pub token: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When to try next (ms).
    pub next_attempt: i64,
    /// When the notification was enqueued (ms).
    pub created: i64,
}

type EntryRow = (i64, String, i64, i64, i64);

impl Store {
    /// Queues a notification for each (account, token), due at `now` (ms);
    /// a pair already pending is left as it is. Returns how many rows were
    /// added. Durable on return.
    pub async fn push_enqueue(
        &self,
        tokens: Vec<(AccountId, String)>,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.inner
            .writer
            .run(Operation::PushEnqueue, 0, move |c| {
                Box::pin(enqueue(c, tokens, now))
            })
            .await
    }

    /// Up to `limit` notifications due at `now`, the longest waiting first.
    pub async fn push_due(&self, now: i64, limit: usize) -> Result<Vec<PushEntry>, StoreError> {
        let rows: Vec<EntryRow> = sqlx::query_as(
            "SELECT account_id, token, attempts, next_attempt, created FROM push_queue \
             WHERE next_attempt <= ? ORDER BY next_attempt, created LIMIT ?",
        )
        .bind(now)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db())
        .await
        .during(Operation::PushDue)?;
        Ok(rows.into_iter().map(entry_of).collect())
    }

    /// Every pending notification, by account then token.
    pub async fn push_entries(&self) -> Result<Vec<PushEntry>, StoreError> {
        let rows: Vec<EntryRow> = sqlx::query_as(
            "SELECT account_id, token, attempts, next_attempt, created FROM push_queue \
             ORDER BY account_id, token",
        )
        .fetch_all(self.db())
        .await
        .during(Operation::PushEntries)?;
        Ok(rows.into_iter().map(entry_of).collect())
    }

    /// The earliest attempt strictly after `after` (ms), if any.
    pub async fn next_push_attempt(&self, after: i64) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT MIN(next_attempt) FROM push_queue WHERE next_attempt > ?")
            .bind(after)
            .fetch_one(self.db())
            .await
            .during(Operation::NextPushAttempt)
    }

    /// The latest pending attempt (ms), if any.
    pub async fn last_push_attempt(&self) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT MAX(next_attempt) FROM push_queue")
            .fetch_one(self.db())
            .await
            .during(Operation::LastPushAttempt)
    }

    /// Makes every notification scheduled after `latest` (ms) due at
    /// `now`; returns how many moved. As for the outbound queue
    /// ([`Store::pull_in_queue`]): a time beyond the longest wait was set
    /// by a wall clock that has since been put back.
    pub async fn pull_in_push(&self, latest: i64, now: i64) -> Result<u64, StoreError> {
        let sql = "UPDATE push_queue SET next_attempt = ? WHERE next_attempt > ?";
        self.pull_in(Operation::PullInPush, sql, latest, now).await
    }

    /// The notification was delivered, or is given up: drops its row.
    pub async fn push_done(&self, account: AccountId, token: &str) -> Result<(), StoreError> {
        let token = token.to_owned();
        self.inner
            .writer
            .run(Operation::PushDone, 0, move |c| {
                Box::pin(async move {
                    delete_row(c, account, &token).await?;
                    Ok(((), Vec::new()))
                })
            })
            .await
    }

    /// Records a failed attempt: `attempts` so far, next try at `at` (ms).
    pub async fn push_retry(
        &self,
        account: AccountId,
        token: &str,
        attempts: u32,
        at: i64,
    ) -> Result<(), StoreError> {
        let token = token.to_owned();
        self.inner
            .writer
            .run(Operation::PushRetry, 0, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE push_queue SET attempts = ?, next_attempt = ? \
                         WHERE account_id = ? AND token = ?",
                    )
                    .bind(i64::from(attempts))
                    .bind(at)
                    .bind(account)
                    .bind(&token)
                    .execute(&mut *c)
                    .await?;
                    Ok(((), Vec::new()))
                })
            })
            .await
    }

    /// The notification server no longer knows `token`: removes it from
    /// the account's metadata entry `key` and from the queue, together.
    pub async fn push_token_gone(
        &self,
        account: AccountId,
        key: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        let (key, token) = (key.to_owned(), token.to_owned());
        self.inner
            .writer
            .run(Operation::PushTokenGone, 0, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "DELETE FROM user_metadata WHERE account_id = ? AND key = ? AND value = ?",
                    )
                    .bind(account)
                    .bind(&key)
                    .bind(&token)
                    .execute(&mut *c)
                    .await?;
                    delete_row(c, account, &token).await?;
                    Ok(((), Vec::new()))
                })
            })
            .await
    }
}

async fn enqueue(
    c: &mut SqliteConnection,
    tokens: Vec<(AccountId, String)>,
    now: i64,
) -> OpResult<u64> {
    let mut added = 0;
    for (account, token) in tokens {
        // An account deleted meanwhile has no row to point at: skip it.
        let done = sqlx::query(
            "INSERT INTO push_queue (account_id, token, next_attempt, created) \
             SELECT id, ?, ?, ? FROM accounts WHERE id = ? \
             ON CONFLICT (account_id, token) DO NOTHING",
        )
        .bind(&token)
        .bind(now)
        .bind(now)
        .bind(account)
        .execute(&mut *c)
        .await?;
        added += done.rows_affected();
    }
    Ok((added, Vec::new()))
}

async fn delete_row(
    c: &mut SqliteConnection,
    account: AccountId,
    token: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM push_queue WHERE account_id = ? AND token = ?")
        .bind(account)
        .bind(token)
        .execute(&mut *c)
        .await?;
    Ok(())
}

fn entry_of((account, token, attempts, next_attempt, created): EntryRow) -> PushEntry {
    PushEntry {
        account,
        token,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt,
        created,
    }
}

#[cfg(test)]
mod tests {
    use crate::{AccountId, Created, Store, StoreOptions};

    const KEY: &str = "/private/devicetoken";

    async fn open(dir: &std::path::Path) -> Store {
        Store::open(StoreOptions {
            path: dir.join("mail.sqlite"),
            max_batch: 4,
        })
        .await
        .unwrap()
    }

    async fn account(store: &Store, address: &str) -> AccountId {
        match store.create_account(address, "hash").await.unwrap() {
            Created::New(account) | Created::Existing(account) => account.id,
        }
    }

    #[tokio::test]
    async fn collapses_a_second_notification_for_a_pending_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let a = account(&store, "a@example.org").await;
        let tokens = vec![(a, "t1".to_owned()), (a, "t2".to_owned())];
        assert_eq!(store.push_enqueue(tokens, 10).await.unwrap(), 2);
        assert_eq!(
            store
                .push_enqueue(vec![(a, "t1".into())], 20)
                .await
                .unwrap(),
            0
        );
        let due = store.push_due(10, 10).await.unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].created, 10);
    }

    #[tokio::test]
    async fn retry_moves_the_entry_out_of_the_due_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let a = account(&store, "a@example.org").await;
        store.push_enqueue(vec![(a, "t".into())], 10).await.unwrap();
        store.push_retry(a, "t", 1, 500).await.unwrap();
        assert!(store.push_due(499, 10).await.unwrap().is_empty());
        assert_eq!(store.next_push_attempt(10).await.unwrap(), Some(500));
        let due = store.push_due(500, 10).await.unwrap();
        assert_eq!(due[0].attempts, 1);
        store.push_done(a, "t").await.unwrap();
        assert!(store.push_entries().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn retries_set_by_a_clock_since_put_back_are_pulled_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let a = account(&store, "a@example.org").await;
        let tokens = vec![(a, "far".to_owned()), (a, "near".to_owned())];
        store.push_enqueue(tokens, 10).await.unwrap();
        store.push_retry(a, "far", 1, 90_000).await.unwrap();
        store.push_retry(a, "near", 1, 400).await.unwrap();
        assert_eq!(store.last_push_attempt().await.unwrap(), Some(90_000));
        assert_eq!(store.pull_in_push(1_000, 20).await.unwrap(), 1);
        let due = store.push_due(20, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].token, "far");
        assert_eq!(store.next_push_attempt(20).await.unwrap(), Some(400));
    }

    #[tokio::test]
    async fn a_gone_token_leaves_metadata_and_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let a = account(&store, "a@example.org").await;
        store.add_user_metadata(a, KEY, "old").await.unwrap();
        store.add_user_metadata(a, KEY, "new").await.unwrap();
        let tokens = vec![(a, "old".into()), (a, "new".into())];
        store.push_enqueue(tokens, 10).await.unwrap();
        store.push_token_gone(a, KEY, "old").await.unwrap();
        assert_eq!(store.user_metadata(a, KEY).await.unwrap(), vec!["new"]);
        let left = store.push_entries().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].token, "new");
    }

    #[tokio::test]
    async fn pending_notifications_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let a = account(&store, "a@example.org").await;
        store.push_enqueue(vec![(a, "t".into())], 10).await.unwrap();
        store.close().await;
        let store = open(dir.path()).await;
        assert_eq!(store.push_due(10, 10).await.unwrap()[0].token, "t");
    }

    #[tokio::test]
    async fn skips_tokens_of_deleted_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let a = account(&store, "a@example.org").await;
        store.delete_account("a@example.org").await.unwrap();
        assert_eq!(
            store.push_enqueue(vec![(a, "t".into())], 10).await.unwrap(),
            0
        );
    }
}
