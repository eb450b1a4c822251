//! Retention (docs/specifications.md §5, §8): what the relay deletes by
//! itself.
//!
//! Rules, each measured from an explicit `now` (Unix seconds) so tests
//! control the clock; a rule whose day count is 0 is off:
//! - accounts whose last login day (or, never logged in, creation day) is
//!   more than `delete_inactive_users_after` days before today, with all
//!   their mail;
//! - messages whose internal date is more than `delete_mails_after` days
//!   old;
//! - `\Seen` messages larger than `large_message_size` whose internal date
//!   is more than `delete_large_after` days old.
//!
//! Order: accounts first, then old messages, then large ones, so each
//! message is counted once, under the first rule that takes it; the dry
//! run counts with the same conditions and deletes nothing.
//!
//! Every deletion goes through the single writer in chunks of
//! [`CHUNK`] messages (one savepoint each), so deliveries are never held
//! up for long, and the touched accounts' subscribers are woken after each
//! commit (an IMAP client in IDLE sees the EXPUNGEs).

use sqlx::SqliteConnection;

use crate::error::{During, Operation};
use crate::writer::OpResult;
use crate::{AccountId, Store, StoreError};

/// Most messages deleted per write job.
const CHUNK: i64 = 500;
const DAY: i64 = 86_400;

/// What retention deletes; mirrors the `[retention]` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpireRules {
    /// Days after which every message goes (0: never).
    pub delete_mails_after: u32,
    /// Days after which seen messages over `large_message_size` go
    /// (0: never).
    pub delete_large_after: u32,
    /// Bytes above which a message is large.
    pub large_message_size: u64,
    /// Days without login after which an account goes (0: never).
    pub delete_inactive_users_after: u32,
}

/// What one run deleted (or, dry, would delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpireReport {
    /// Messages older than `delete_mails_after`.
    pub old_messages: u64,
    /// Seen large messages older than `delete_large_after`.
    pub large_messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Addresses of the inactive accounts, ascending.
    pub accounts: Vec<String>,
}

/// The rules as comparison values; a rule that is off gets `i64::MIN`, which
/// no value is below.
#[derive(Debug, Clone, Copy)]
struct Cutoffs {
    /// Accounts with an activity day below this go.
    inactive_day: i64,
    /// Messages with an internal date below this go.
    old: i64,
    /// Seen large messages with an internal date below this go.
    large: i64,
    /// "Large" means more bytes than this.
    large_size: i64,
}

fn cutoff(now: i64, days: u32, unit: i64) -> i64 {
    if days == 0 {
        return i64::MIN;
    }
    now.saturating_sub(i64::from(days).saturating_mul(unit))
}

fn cutoffs(now: i64, rules: &ExpireRules) -> Cutoffs {
    Cutoffs {
        inactive_day: cutoff(now.div_euclid(DAY), rules.delete_inactive_users_after, 1),
        old: cutoff(now, rules.delete_mails_after, DAY),
        large: cutoff(now, rules.delete_large_after, DAY),
        large_size: i64::try_from(rules.large_message_size).unwrap_or(i64::MAX),
    }
}

/// Which message rule a query applies.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Old,
    Large,
}

/// Parameters: ?1 inactive day, ?2 old cutoff, ?3 large cutoff, ?4 size.
/// Messages of accounts that go anyway are not counted twice.
fn condition(rule: Rule) -> &'static str {
    match rule {
        Rule::Old => {
            "m.internal_date < ?2 AND b.account_id NOT IN (SELECT id FROM accounts \
             WHERE COALESCE(last_login_day, created_day) < ?1)"
        }
        Rule::Large => {
            "m.internal_date < ?3 AND m.internal_date >= ?2 AND m.size > ?4 \
             AND (' ' || m.flags || ' ') LIKE '% \\Seen %' \
             AND b.account_id NOT IN (SELECT id FROM accounts \
             WHERE COALESCE(last_login_day, created_day) < ?1)"
        }
    }
}

fn bind_cutoffs<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments>,
    cut: Cutoffs,
    rule: Rule,
) -> sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments> {
    let query = query.bind(cut.inactive_day).bind(cut.old);
    match rule {
        Rule::Old => query,
        Rule::Large => query.bind(cut.large).bind(cut.large_size),
    }
}

impl Store {
    /// Deletes what the rules say goes, as of `now` (Unix seconds).
    pub async fn expire(&self, now: i64, rules: &ExpireRules) -> Result<ExpireReport, StoreError> {
        let cut = cutoffs(now, rules);
        let writer = &self.inner.writer;
        let mut report = ExpireReport {
            accounts: writer
                .run(Operation::Expire, 0, move |c| {
                    Box::pin(delete_inactive(c, cut))
                })
                .await?,
            ..ExpireReport::default()
        };
        for rule in [Rule::Old, Rule::Large] {
            loop {
                let (count, bytes) = writer
                    .run(Operation::Expire, 0, move |c| {
                        Box::pin(delete_chunk(c, cut, rule))
                    })
                    .await?;
                match rule {
                    Rule::Old => report.old_messages += count,
                    Rule::Large => report.large_messages += count,
                }
                report.bytes = report.bytes.saturating_add(bytes);
                if count < CHUNK as u64 {
                    break;
                }
            }
        }
        let forget = now.saturating_sub(crate::DUPLICATE_WINDOW);
        writer
            .run(Operation::Expire, 0, move |c| {
                Box::pin(forget_digests(c, forget))
            })
            .await?;
        Ok(report)
    }

    /// What [`Store::expire`] would delete as of `now`; changes nothing.
    pub async fn expire_dry_run(
        &self,
        now: i64,
        rules: &ExpireRules,
    ) -> Result<ExpireReport, StoreError> {
        let cut = cutoffs(now, rules);
        let accounts = sqlx::query_scalar(
            "SELECT address FROM accounts WHERE COALESCE(last_login_day, created_day) < ? \
             ORDER BY address",
        )
        .bind(cut.inactive_day)
        .fetch_all(self.db())
        .await
        .during(Operation::ExpireDryRun)?;
        let mut report = ExpireReport {
            accounts,
            ..ExpireReport::default()
        };
        for rule in [Rule::Old, Rule::Large] {
            let sql = format!(
                "SELECT COUNT(*), COALESCE(SUM(m.size), 0) FROM messages m \
                 JOIN mailboxes b ON b.id = m.mailbox_id WHERE {}",
                condition(rule)
            );
            let query = sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(sql));
            let (count, bytes) = bind_cutoffs(query, cut, rule)
                .fetch_one(self.db())
                .await
                .during(Operation::ExpireDryRun)?;
            let count = u64::try_from(count).unwrap_or(0);
            match rule {
                Rule::Old => report.old_messages = count,
                Rule::Large => report.large_messages = count,
            }
            report.bytes = report
                .bytes
                .saturating_add(u64::try_from(bytes).unwrap_or(0));
        }
        Ok(report)
    }
}

async fn delete_inactive(c: &mut SqliteConnection, cut: Cutoffs) -> OpResult<Vec<String>> {
    // Mailboxes, messages and metadata go with the account (ON DELETE CASCADE).
    let mut rows: Vec<(AccountId, String)> = sqlx::query_as(
        "DELETE FROM accounts WHERE COALESCE(last_login_day, created_day) < ? \
         RETURNING id, address",
    )
    .bind(cut.inactive_day)
    .fetch_all(&mut *c)
    .await?;
    rows.sort_by(|a, b| a.1.cmp(&b.1));
    let touched = rows.iter().map(|(id, _)| *id).collect();
    Ok((rows.into_iter().map(|(_, a)| a).collect(), touched))
}

/// Forgets what accounts received before `before` (Unix seconds), the
/// digests [`Store::deliver_inbound`] compares with.
async fn forget_digests(c: &mut SqliteConnection, before: i64) -> OpResult<()> {
    sqlx::query("DELETE FROM inbound_digests WHERE received <= ?")
        .bind(before)
        .execute(&mut *c)
        .await?;
    Ok(((), Vec::new()))
}

/// Deletes up to [`CHUNK`] messages under `rule`; returns (count, bytes).
async fn delete_chunk(c: &mut SqliteConnection, cut: Cutoffs, rule: Rule) -> OpResult<(u64, u64)> {
    let sql = format!(
        "SELECT m.mailbox_id, m.uid, m.size, b.account_id FROM messages m \
         JOIN mailboxes b ON b.id = m.mailbox_id WHERE {} LIMIT {CHUNK}",
        condition(rule)
    );
    let query = sqlx::query_as::<_, (i64, u32, i64, AccountId)>(sqlx::AssertSqlSafe(sql));
    let rows = bind_cutoffs(query, cut, rule).fetch_all(&mut *c).await?;
    let (mut bytes, mut touched) = (0u64, Vec::new());
    for (mailbox, uid, size, account) in &rows {
        sqlx::query("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?")
            .bind(mailbox)
            .bind(uid)
            .execute(&mut *c)
            .await?;
        bytes = bytes.saturating_add(u64::try_from(*size).unwrap_or(0));
        if !touched.contains(account) {
            touched.push(*account);
        }
    }
    Ok(((rows.len() as u64, bytes), touched))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::unix_now;
    use crate::quota::tests::{account, open, sized};

    const RULES: ExpireRules = ExpireRules {
        delete_mails_after: 20,
        delete_large_after: 7,
        large_message_size: 200_000,
        delete_inactive_users_after: 90,
    };

    fn seen(mut message: crate::NewMessage) -> crate::NewMessage {
        message.flags = vec!["\\Seen".to_owned()];
        message
    }

    async fn update_created_day(c: &mut SqliteConnection, id: AccountId, day: i64) -> OpResult<()> {
        sqlx::query("UPDATE accounts SET created_day = ? WHERE id = ?")
            .bind(day)
            .bind(id)
            .execute(&mut *c)
            .await?;
        Ok(((), Vec::new()))
    }

    /// Sets an account's creation day (the store stamps today).
    async fn set_created_day(store: &Store, account: AccountId, day: i64) {
        store
            .inner
            .writer
            .run(Operation::RecordLogin, 0, move |c| {
                Box::pin(update_created_day(c, account, day))
            })
            .await
            .unwrap();
    }

    /// Alice (active) with: old, large+seen+8d, large+unseen+8d,
    /// large+seen+6d, small+seen+8d, fresh.
    async fn mailbox_with_every_case(store: &Store) -> (AccountId, crate::MailboxId) {
        let (alice, inbox) = account(store, "alice@x.org").await;
        store.record_login(alice, unix_now() / DAY).await.unwrap();
        let cases = [
            sized(10, 21 * DAY),
            seen(sized(200_001, 8 * DAY)),
            sized(200_001, 8 * DAY),
            seen(sized(200_001, 6 * DAY)),
            seen(sized(10, 8 * DAY)),
            sized(10, 60),
        ];
        for message in cases {
            store.append(inbox, message).await.unwrap();
        }
        (alice, inbox)
    }

    #[tokio::test]
    async fn expiry_deletes_old_and_seen_large_messages_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (_, inbox) = mailbox_with_every_case(&store).await;
        let report = store.expire(unix_now(), &RULES).await.unwrap();
        assert_eq!((report.old_messages, report.large_messages), (1, 1));
        assert_eq!(report.bytes, 10 + 200_001);
        assert!(report.accounts.is_empty());
        assert_eq!(store.uids(inbox).await.unwrap(), vec![3, 4, 5, 6]);
        let again = store.expire(unix_now(), &RULES).await.unwrap();
        assert_eq!(again, ExpireReport::default());
    }

    #[tokio::test]
    async fn the_clock_is_the_callers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (_, inbox) = mailbox_with_every_case(&store).await;
        let rules = ExpireRules {
            delete_inactive_users_after: 0,
            ..RULES
        };
        let later = unix_now() + 21 * DAY;
        let report = store.expire(later, &rules).await.unwrap();
        assert_eq!(report.old_messages, 6);
        assert!(store.uids(inbox).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn dry_run_counts_the_same_and_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, inbox) = mailbox_with_every_case(&store).await;
        let (bob, _) = account(&store, "bob@x.org").await;
        set_created_day(&store, bob, unix_now() / DAY - 91).await;
        let commits = store.commit_count();
        let dry = store.expire_dry_run(unix_now(), &RULES).await.unwrap();
        assert_eq!(store.commit_count(), commits, "no write at all");
        assert_eq!(store.uids(inbox).await.unwrap().len(), 6);
        assert!(store.account("bob@x.org").await.unwrap().is_some());
        let real = store.expire(unix_now(), &RULES).await.unwrap();
        assert_eq!(dry, real);
        assert_eq!(real.accounts, vec!["bob@x.org".to_owned()]);
        assert!(store.usage(alice).await.unwrap() > 0);
    }

    #[tokio::test]
    async fn inactive_accounts_go_counting_from_last_login_or_creation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let today = unix_now() / DAY;
        let (old_login, inbox) = account(&store, "a@x.org").await;
        store.record_login(old_login, today - 91).await.unwrap();
        store.append(inbox, sized(10, 60)).await.unwrap();
        let (never, _) = account(&store, "b@x.org").await;
        set_created_day(&store, never, today - 91).await;
        let (recent_login, _) = account(&store, "c@x.org").await;
        set_created_day(&store, recent_login, today - 200).await;
        store.record_login(recent_login, today - 90).await.unwrap();
        account(&store, "d@x.org").await;
        let report = store.expire(unix_now(), &RULES).await.unwrap();
        assert_eq!(
            report.accounts,
            vec!["a@x.org".to_owned(), "b@x.org".to_owned()]
        );
        assert_eq!(report.old_messages, 0, "their mail went with them");
        let left: Vec<String> = store
            .accounts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.address)
            .collect();
        assert_eq!(left, vec!["c@x.org".to_owned(), "d@x.org".to_owned()]);
    }

    #[tokio::test]
    async fn expiry_wakes_the_accounts_subscribers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (alice, _) = mailbox_with_every_case(&store).await;
        let (bob, bob_inbox) = account(&store, "bob@x.org").await;
        store.append(bob_inbox, sized(10, 60)).await.unwrap();
        let mut alice_rx = store.subscribe(alice);
        let mut bob_rx = store.subscribe(bob);
        alice_rx.borrow_and_update();
        bob_rx.borrow_and_update();
        store.expire(unix_now(), &RULES).await.unwrap();
        assert!(alice_rx.has_changed().unwrap());
        assert!(!bob_rx.has_changed().unwrap(), "nothing of bob's went");
    }

    #[tokio::test]
    async fn deletes_more_than_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (_, inbox) = account(&store, "alice@x.org").await;
        let total = CHUNK as u64 + 3;
        for _ in 0..total {
            store.append(inbox, sized(1, 30 * DAY)).await.unwrap();
        }
        let report = store.expire(unix_now(), &RULES).await.unwrap();
        assert_eq!(report.old_messages, total);
        assert!(store.uids(inbox).await.unwrap().is_empty());
    }
}
