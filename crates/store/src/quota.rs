//! Storage quota (docs/specifications.md §5): usage of an account is the sum
//! of the sizes of all its messages, in every mailbox.
//!
//! Flow, for each copy a delivery or APPEND is about to store (inside the
//! writer's transaction, so the check and the insert cannot race):
//! 1. no quota configured → store;
//! 2. usage + size below [`TRIM_AT_PERCENT`] of the quota → store;
//! 3. otherwise, if the messages of the last [`PROTECTED_SECS`] (which are
//!    never trimmed) plus the new copy exceed the quota → refuse
//!    ([`StoreError::QuotaExceeded`]) without deleting anything;
//! 4. otherwise trim: delete the account's oldest messages (by internal
//!    date, all mailboxes) whose internal date is older than
//!    [`PROTECTED_SECS`], until usage + size is at most
//!    [`TRIM_TO_PERCENT`] of the quota or nothing trimmable is left, then
//!    store. The trim is part of the same transaction as the copy.
//!
//! COPY does not trim: it stores the copies and is rolled back as a whole
//! if the account ends up over its quota (MOVE keeps usage unchanged and is
//! not checked).
//!
//! Invariant: after a successful write the account's usage is at most the
//! quota (unless the quota was lowered meanwhile).

use std::sync::atomic::Ordering;

use sqlx::{Executor, Sqlite, SqliteConnection};

use crate::error::{During, OpError, Operation};
use crate::ops::unix_now;
use crate::{AccountId, Store, StoreError, read};

/// Usage (with the new copy) from which a delivery trims old messages.
pub const TRIM_AT_PERCENT: u64 = 75;
/// Usage (with the new copy) a trim goes down to.
pub const TRIM_TO_PERCENT: u64 = 70;
/// Messages younger than this (by internal date) are never trimmed.
pub const PROTECTED_SECS: i64 = 86_400;
/// Rows a trim reads per round.
const TRIM_CHUNK: i64 = 256;

/// The value of the quota cell that means "no quota".
pub(crate) const UNLIMITED: u64 = u64::MAX;

fn percent(quota: u64, percent: u64) -> u64 {
    let part = u128::from(quota) * u128::from(percent) / 100;
    u64::try_from(part).unwrap_or(u64::MAX)
}

impl Store {
    /// Sets the per-account storage quota in bytes (`None`: unlimited).
    /// Takes effect for writes queued afterwards; safe to call at any time
    /// (e.g. on a configuration reload).
    pub fn set_quota(&self, bytes: Option<u64>) {
        let cell = bytes.unwrap_or(UNLIMITED);
        self.inner.quota.store(cell, Ordering::Relaxed);
    }

    /// The per-account storage quota in bytes, `None` if unlimited.
    pub fn quota(&self) -> Option<u64> {
        Some(self.inner.quota.load(Ordering::Relaxed)).filter(|q| *q != UNLIMITED)
    }

    /// Whether a message of `size` bytes could still be stored for
    /// `account`, trimming permitted: the messages of the last 24 h plus
    /// `size` fit the quota. SMTP asks this at `RCPT` time (with the
    /// `SIZE=` of `MAIL FROM`, or 1 when unknown); the delivery itself
    /// checks again inside its transaction.
    pub async fn has_room(&self, account: AccountId, size: u64) -> Result<bool, StoreError> {
        let default = self.quota();
        let room = async {
            let mut c = self.db().acquire().await?;
            let Some(quota) = crate::admin::effective_quota(&mut c, account, default).await? else {
                return Ok(true);
            };
            let recent = recent_usage(&mut *c, account, unix_now()).await?;
            Ok::<_, sqlx::Error>(recent.saturating_add(size) <= quota)
        };
        room.await.during(Operation::HasRoom)
    }
}

/// Bytes of the account's messages that trimming must not touch.
pub(crate) async fn recent_usage<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    account: AccountId,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let total: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(m.size), 0) FROM messages m \
         JOIN mailboxes b ON b.id = m.mailbox_id \
         WHERE b.account_id = ? AND m.internal_date > ?",
    )
    .bind(account)
    .bind(now.saturating_sub(PROTECTED_SECS))
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Steps 1-4 of the module doc for one copy of `size` bytes: `Ok(false)`
/// means the copy does not fit and nothing was deleted.
pub(crate) async fn make_room(
    c: &mut SqliteConnection,
    account: AccountId,
    size: u64,
    quota: Option<u64>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let Some(quota) = crate::admin::effective_quota(c, account, quota).await? else {
        return Ok(true);
    };
    let after = read::usage(&mut *c, account).await?.saturating_add(size);
    if after < percent(quota, TRIM_AT_PERCENT) {
        return Ok(true);
    }
    let recent = recent_usage(&mut *c, account, now).await?;
    if recent.saturating_add(size) > quota {
        return Ok(false);
    }
    let excess = after.saturating_sub(percent(quota, TRIM_TO_PERCENT));
    trim(c, account, excess, now).await?;
    Ok(true)
}

/// Deletes the account's oldest unprotected messages until at least
/// `need` bytes are freed or none is left; returns the bytes freed.
async fn trim(
    c: &mut SqliteConnection,
    account: AccountId,
    need: u64,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let mut freed = 0u64;
    while freed < need {
        let rows: Vec<(i64, u32, i64)> = sqlx::query_as(
            "SELECT m.mailbox_id, m.uid, m.size FROM messages m \
             JOIN mailboxes b ON b.id = m.mailbox_id \
             WHERE b.account_id = ? AND m.internal_date <= ? \
             ORDER BY m.internal_date, m.mailbox_id, m.uid LIMIT ?",
        )
        .bind(account)
        .bind(now.saturating_sub(PROTECTED_SECS))
        .bind(TRIM_CHUNK)
        .fetch_all(&mut *c)
        .await?;
        if rows.is_empty() {
            break;
        }
        for (mailbox, uid, size) in rows {
            if freed >= need {
                break;
            }
            sqlx::query("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?")
                .bind(mailbox)
                .bind(uid)
                .execute(&mut *c)
                .await?;
            freed = freed.saturating_add(u64::try_from(size).unwrap_or(0));
        }
    }
    Ok(freed)
}

/// After a write that cannot trim (COPY): fails if the account is now over
/// its quota, so the caller's savepoint rolls the write back.
pub(crate) async fn check_after(
    c: &mut SqliteConnection,
    account: AccountId,
    quota: Option<u64>,
) -> Result<(), OpError> {
    let Some(quota) = crate::admin::effective_quota(c, account, quota).await? else {
        return Ok(());
    };
    if read::usage(&mut *c, account).await? > quota {
        return Err(StoreError::QuotaExceeded.into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{Created, MailboxId, NewMessage, StoreOptions};

    const HOUR: i64 = 3_600;

    pub(crate) async fn open(dir: &tempfile::TempDir) -> Store {
        let path = dir.path().join("quota.db");
        Store::open(StoreOptions {
            path,
            ..StoreOptions::default()
        })
        .await
        .unwrap()
    }

    /// An account and its INBOX.
    pub(crate) async fn account(store: &Store, address: &str) -> (AccountId, MailboxId) {
        let Created::New(account) = store.create_account(address, "$hash").await.unwrap() else {
            panic!("{address} existed");
        };
        let inbox = store.mailbox(account.id, "INBOX").await.unwrap().unwrap();
        (account.id, inbox.id)
    }

    /// A message of exactly `size` bytes with the given age.
    pub(crate) fn sized(size: usize, age_secs: i64) -> NewMessage {
        NewMessage {
            body: Bytes::from(vec![b'x'; size]),
            flags: Vec::new(),
            internal_date: unix_now() - age_secs,
        }
    }

    async fn dates(store: &Store, mailbox: MailboxId) -> Vec<(u64, i64)> {
        let all = store.messages(mailbox, 0).await.unwrap();
        all.iter().map(|m| (m.size, m.internal_date)).collect()
    }

    #[tokio::test]
    async fn append_that_would_exceed_the_quota_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, inbox) = account(&store, "alice@x.org").await;
        store.set_quota(Some(1_000));
        store.append(inbox, sized(600, HOUR)).await.unwrap();
        let refused = store.append(inbox, sized(500, HOUR)).await;
        assert!(
            matches!(refused, Err(StoreError::QuotaExceeded)),
            "{refused:?}"
        );
        assert_eq!(store.usage(alice).await.unwrap(), 600);
        store.append(inbox, sized(400, HOUR)).await.unwrap();
        assert_eq!(store.usage(alice).await.unwrap(), 1_000);
    }

    #[tokio::test]
    async fn an_account_quota_overrides_the_default_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (big, big_inbox) = account(&store, "big@x.org").await;
        let (_, small_inbox) = account(&store, "small@x.org").await;
        store.set_quota(Some(1_000));
        assert!(
            store
                .set_account_quota("big@x.org", Some(10_000))
                .await
                .unwrap()
        );
        assert!(
            store
                .set_account_quota("small@x.org", Some(100))
                .await
                .unwrap()
        );
        store.append(big_inbox, sized(5_000, HOUR)).await.unwrap();
        let refused = store.append(small_inbox, sized(500, HOUR)).await;
        assert!(
            matches!(refused, Err(StoreError::QuotaExceeded)),
            "{refused:?}"
        );
        assert!(store.has_room(big, 4_000).await.unwrap());
        assert!(!store.has_room(big, 6_000).await.unwrap());
    }

    #[tokio::test]
    async fn delivery_skips_only_the_recipients_over_quota() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, inbox) = account(&store, "alice@x.org").await;
        let (bob, _) = account(&store, "bob@x.org").await;
        store.set_quota(Some(1_000));
        store.append(inbox, sized(900, HOUR)).await.unwrap();
        let report = store
            .deliver_report(&[alice, bob], sized(200, 0))
            .await
            .unwrap();
        assert_eq!(report.over_quota, vec![alice]);
        assert_eq!(report.delivered.len(), 1);
        assert_eq!(report.delivered[0].account, bob);
        let alone = store.deliver(&[alice], sized(200, 0)).await;
        assert!(matches!(alone, Err(StoreError::QuotaExceeded)), "{alone:?}");
        assert_eq!(store.usage(alice).await.unwrap(), 900);
    }

    #[tokio::test]
    async fn no_quota_means_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, _) = account(&store, "alice@x.org").await;
        assert_eq!(store.quota(), None);
        store.deliver(&[alice], sized(5_000, 0)).await.unwrap();
        assert!(store.has_room(alice, u64::MAX / 2).await.unwrap());
        store.set_quota(Some(4_096));
        assert_eq!(store.quota(), Some(4_096));
        assert!(!store.has_room(alice, 1).await.unwrap());
    }

    #[tokio::test]
    async fn delivery_at_75_percent_trims_oldest_down_to_70_percent() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, inbox) = account(&store, "alice@x.org").await;
        for days in [5, 4, 3, 2] {
            store
                .append(inbox, sized(1_500, days * 86_400))
                .await
                .unwrap();
        }
        store.append(inbox, sized(1_000, HOUR)).await.unwrap();
        store.set_quota(Some(10_000));
        // 7000 + 1000 = 80 % >= 75 %: down to <= 7000 with the new copy.
        store.deliver(&[alice], sized(1_000, 0)).await.unwrap();
        assert_eq!(store.usage(alice).await.unwrap(), 6_500);
        let left = dates(&store, inbox).await;
        let oldest = left.iter().map(|m| m.1).min().unwrap();
        assert!(
            oldest > unix_now() - 5 * 86_400 + 60,
            "the 5-day-old one went"
        );
        assert_eq!(left.len(), 5);
    }

    #[tokio::test]
    async fn trim_never_touches_the_last_24_hours() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, inbox) = account(&store, "alice@x.org").await;
        store.append(inbox, sized(1_000, 2 * 86_400)).await.unwrap();
        for _ in 0..6 {
            store.append(inbox, sized(1_000, 23 * HOUR)).await.unwrap();
        }
        store.set_quota(Some(10_000));
        store.deliver(&[alice], sized(1_000, 0)).await.unwrap();
        // Only the 2-day-old message could go; the recent ones stay.
        assert_eq!(store.usage(alice).await.unwrap(), 7_000);
        assert!(
            dates(&store, inbox)
                .await
                .iter()
                .all(|m| m.1 > unix_now() - 86_400)
        );
        store.deliver(&[alice], sized(1_000, 0)).await.unwrap();
        assert_eq!(store.usage(alice).await.unwrap(), 8_000);
        assert!(store.has_room(alice, 2_000).await.unwrap());
        assert!(!store.has_room(alice, 2_001).await.unwrap());
        let refused = store.deliver(&[alice], sized(2_001, 0)).await;
        assert!(
            matches!(refused, Err(StoreError::QuotaExceeded)),
            "{refused:?}"
        );
        assert_eq!(store.usage(alice).await.unwrap(), 8_000, "nothing deleted");
    }

    #[tokio::test]
    async fn copy_over_quota_copies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, inbox) = account(&store, "alice@x.org").await;
        let archive = store.create_mailbox(alice, "Archive").await.unwrap();
        let a = store.append(inbox, sized(400, HOUR)).await.unwrap();
        let b = store.append(inbox, sized(400, HOUR)).await.unwrap();
        store.set_quota(Some(1_200));
        let refused = store.copy(inbox, &[a, b], archive.id).await;
        assert!(
            matches!(refused, Err(StoreError::QuotaExceeded)),
            "{refused:?}"
        );
        assert!(store.uids(archive.id).await.unwrap().is_empty());
        assert_eq!(store.copy(inbox, &[a], archive.id).await.unwrap().len(), 1);
        let moved = store.move_messages(inbox, &[b], archive.id).await.unwrap();
        assert_eq!(moved.len(), 1, "a move does not grow usage");
    }
}
