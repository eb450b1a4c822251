//! Write operations. Each runs on the writer's connection inside the batch
//! transaction (and its own savepoint), and returns its value plus the
//! accounts whose subscribers must be woken after the commit.
//!
//! Invariants kept here:
//! - UIDs come from `mailboxes.uidnext`, incremented in the same statement
//!   that hands the UID out, so UIDNEXT never decreases and a UID is never
//!   reused within a UIDVALIDITY (RFC 3501 §2.3.1.1);
//! - UIDVALIDITY is set once at mailbox creation from a server-wide counter
//!   that follows the clock and never repeats.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::SqliteConnection;

use crate::error::OpError;
use crate::read::{self, canonical_name};
use crate::writer::OpResult;
use crate::{
    Account, AccountId, Created, Delivered, DeliveryReport, MailboxId, MailboxInfo, NewMessage,
    StoreError, flags, quota,
};

/// Most values kept per metadata key of an account; the oldest go first.
const MAX_METADATA_VALUES: i64 = 64;

/// Internal `server_metadata` key holding the last UIDVALIDITY handed out.
const UIDVALIDITY_KEY: &str = "internal:last_uidvalidity";

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `\Sent`, `\Trash`, ... for the usual names (RFC 6154 §2).
fn special_use(name: &str) -> Option<&'static str> {
    let uses = [
        ("Sent", "\\Sent"),
        ("Trash", "\\Trash"),
        ("Drafts", "\\Drafts"),
        ("Junk", "\\Junk"),
        ("Spam", "\\Junk"),
        ("Archive", "\\Archive"),
    ];
    uses.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, u)| *u)
}

async fn next_uidvalidity(c: &mut SqliteConnection) -> Result<u32, sqlx::Error> {
    let last: Option<String> =
        sqlx::query_scalar("SELECT value FROM server_metadata WHERE key = ?")
            .bind(UIDVALIDITY_KEY)
            .fetch_optional(&mut *c)
            .await?;
    let last: u32 = last.and_then(|v| v.parse().ok()).unwrap_or(0);
    let now = u32::try_from(unix_now()).unwrap_or(u32::MAX);
    let next = now.max(last.saturating_add(1)).max(1);
    sqlx::query(
        "INSERT INTO server_metadata (key, value) VALUES (?, ?) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(UIDVALIDITY_KEY)
    .bind(next.to_string())
    .execute(&mut *c)
    .await?;
    Ok(next)
}

async fn insert_mailbox(
    c: &mut SqliteConnection,
    account: AccountId,
    name: &str,
) -> Result<MailboxInfo, OpError> {
    let name = canonical_name(name).to_owned();
    let special_use = special_use(&name).map(str::to_owned);
    let uidvalidity = next_uidvalidity(c).await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, special_use) \
         VALUES (?, ?, ?, 1, ?) ON CONFLICT (account_id, name) DO NOTHING RETURNING id",
    )
    .bind(account)
    .bind(&name)
    .bind(uidvalidity)
    .bind(&special_use)
    .fetch_optional(&mut *c)
    .await?;
    let id = id.ok_or(StoreError::MailboxExists)?;
    Ok(MailboxInfo {
        id,
        name,
        uidvalidity,
        uidnext: 1,
        special_use,
    })
}

pub(crate) async fn create_account(
    c: &mut SqliteConnection,
    address: String,
    hash: String,
) -> OpResult<Created> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO accounts (address, password_hash, created_day) VALUES (?, ?, ?) \
         ON CONFLICT (address) DO NOTHING RETURNING id",
    )
    .bind(&address)
    .bind(&hash)
    .bind(unix_now() / 86_400)
    .fetch_optional(&mut *c)
    .await?;
    let Some(id) = id else {
        let existing = read::account(&mut *c, &address)
            .await?
            .ok_or(StoreError::NoAccount)?;
        return Ok((Created::Existing(existing), Vec::new()));
    };
    insert_mailbox(c, id, "INBOX").await?;
    let account = Account {
        id,
        address,
        password_hash: hash,
        last_login_day: None,
    };
    Ok((Created::New(account), Vec::new()))
}

pub(crate) async fn delete_account(c: &mut SqliteConnection, address: String) -> OpResult<bool> {
    // Mailboxes, messages and metadata go with it (ON DELETE CASCADE).
    let id: Option<i64> = sqlx::query_scalar("DELETE FROM accounts WHERE address = ? RETURNING id")
        .bind(&address)
        .fetch_optional(&mut *c)
        .await?;
    Ok((id.is_some(), id.into_iter().collect()))
}

pub(crate) async fn record_login(
    c: &mut SqliteConnection,
    account: AccountId,
    day: i64,
) -> OpResult<()> {
    let done = sqlx::query("UPDATE accounts SET last_login_day = ? WHERE id = ?")
        .bind(day)
        .bind(account)
        .execute(&mut *c)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NoAccount.into());
    }
    Ok(((), Vec::new()))
}

async fn account_exists(c: &mut SqliteConnection, account: AccountId) -> Result<(), OpError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE id = ?")
        .bind(account)
        .fetch_optional(&mut *c)
        .await?;
    found.map(|_| ()).ok_or(StoreError::NoAccount.into())
}

pub(crate) async fn create_mailbox(
    c: &mut SqliteConnection,
    account: AccountId,
    name: String,
) -> OpResult<MailboxInfo> {
    account_exists(c, account).await?;
    Ok((insert_mailbox(c, account, &name).await?, vec![account]))
}

/// Deletes a mailbox and its messages. INBOX cannot be deleted
/// (RFC 3501 §6.3.4) and is reported as [`StoreError::NoMailbox`].
pub(crate) async fn delete_mailbox(
    c: &mut SqliteConnection,
    account: AccountId,
    name: String,
) -> OpResult<()> {
    let name = canonical_name(&name);
    if name == "INBOX" {
        return Err(StoreError::NoMailbox.into());
    }
    let done = sqlx::query("DELETE FROM mailboxes WHERE account_id = ? AND name = ?")
        .bind(account)
        .bind(name)
        .execute(&mut *c)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NoMailbox.into());
    }
    Ok(((), vec![account]))
}

/// Hands out the next UID of a mailbox; `None` if the mailbox is missing
/// (or, after 2^32 - 2 messages, full).
pub(crate) async fn allocate_uid(
    c: &mut SqliteConnection,
    mailbox: MailboxId,
) -> Result<Option<(u32, AccountId)>, sqlx::Error> {
    let row: Option<(u32, AccountId)> = sqlx::query_as(
        "UPDATE mailboxes SET uidnext = uidnext + 1 WHERE id = ? AND uidnext < 4294967295 \
         RETURNING uidnext - 1, account_id",
    )
    .bind(mailbox)
    .fetch_optional(&mut *c)
    .await?;
    Ok(row)
}

async fn insert_message(
    c: &mut SqliteConnection,
    mailbox: MailboxId,
    uid: u32,
    message: &NewMessage,
    flags_column: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO messages (mailbox_id, uid, flags, size, internal_date, body) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(mailbox)
    .bind(uid)
    .bind(flags_column)
    .bind(i64::try_from(message.body.len()).unwrap_or(i64::MAX))
    .bind(message.internal_date)
    .bind(&message.body[..])
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Stores one message in `mailbox` (IMAP APPEND), trimming or refusing
/// per [`crate::quota`].
pub(crate) async fn append(
    c: &mut SqliteConnection,
    mailbox: MailboxId,
    message: NewMessage,
    quota: Option<u64>,
) -> OpResult<u32> {
    let account = read::mailbox_account(&mut *c, mailbox)
        .await?
        .ok_or(StoreError::NoMailbox)?;
    let size = u64::try_from(message.body.len()).unwrap_or(u64::MAX);
    if !quota::make_room(c, account, size, quota, unix_now()).await? {
        return Err(StoreError::QuotaExceeded.into());
    }
    let (uid, account) = allocate_uid(c, mailbox)
        .await?
        .ok_or(StoreError::NoMailbox)?;
    let column = flags::encode(&flags::clean(&message.flags));
    insert_message(c, mailbox, uid, &message, &column).await?;
    Ok((uid, vec![account]))
}

/// Stores one copy per recipient INBOX. Recipients whose account vanished
/// meanwhile are skipped; recipients whose quota the copy would exceed are
/// listed in the report (after trimming per [`crate::quota`]). If no copy
/// was stored the delivery fails: [`StoreError::QuotaExceeded`] if some
/// recipient was over quota, else [`StoreError::NoAccount`].
pub(crate) async fn deliver(
    c: &mut SqliteConnection,
    recipients: Vec<AccountId>,
    message: NewMessage,
    quota: Option<u64>,
    digest: Option<[u8; 32]>,
) -> OpResult<DeliveryReport> {
    let column = flags::encode(&flags::clean(&message.flags));
    let size = u64::try_from(message.body.len()).unwrap_or(u64::MAX);
    let now = unix_now();
    let mut report = DeliveryReport::default();
    for account in recipients {
        let seen = |a: &AccountId| *a == account;
        if report.delivered.iter().any(|d| d.account == account)
            || report.over_quota.iter().any(seen)
            || report.duplicates.iter().any(seen)
        {
            continue;
        }
        if let Some(digest) = &digest
            && received_lately(c, account, digest, now).await?
        {
            report.duplicates.push(account);
            continue;
        }
        let inbox: Option<MailboxId> =
            sqlx::query_scalar("SELECT id FROM mailboxes WHERE account_id = ? AND name = 'INBOX'")
                .bind(account)
                .fetch_optional(&mut *c)
                .await?;
        let Some(mailbox) = inbox else { continue };
        if !quota::make_room(c, account, size, quota, now).await? {
            report.over_quota.push(account);
            continue;
        }
        let Some((uid, _)) = allocate_uid(c, mailbox).await? else {
            continue;
        };
        insert_message(c, mailbox, uid, &message, &column).await?;
        if let Some(digest) = &digest {
            remember_received(c, account, digest, now).await?;
        }
        report.delivered.push(Delivered {
            account,
            mailbox,
            uid,
        });
    }
    if report.delivered.is_empty() && report.duplicates.is_empty() {
        let refusal = if report.over_quota.is_empty() {
            StoreError::NoAccount
        } else {
            StoreError::QuotaExceeded
        };
        return Err(refusal.into());
    }
    let touched = report.delivered.iter().map(|d| d.account).collect();
    Ok((report, touched))
}

/// Whether `account` received a message with this digest within
/// [`DUPLICATE_WINDOW`](crate::DUPLICATE_WINDOW) of `now`.
async fn received_lately(
    c: &mut SqliteConnection,
    account: AccountId,
    digest: &[u8; 32],
    now: i64,
) -> Result<bool, sqlx::Error> {
    let received: Option<i64> = sqlx::query_scalar(
        "SELECT received FROM inbound_digests WHERE account_id = ? AND digest = ?",
    )
    .bind(account)
    .bind(&digest[..])
    .fetch_optional(&mut *c)
    .await?;
    Ok(received.is_some_and(|at| at > now - crate::DUPLICATE_WINDOW))
}

async fn remember_received(
    c: &mut SqliteConnection,
    account: AccountId,
    digest: &[u8; 32],
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO inbound_digests (account_id, digest, received) VALUES (?, ?, ?) \
         ON CONFLICT (account_id, digest) DO UPDATE SET received = excluded.received",
    )
    .bind(account)
    .bind(&digest[..])
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub(crate) async fn add_user_metadata(
    c: &mut SqliteConnection,
    account: AccountId,
    key: String,
    value: String,
) -> OpResult<()> {
    account_exists(c, account).await?;
    sqlx::query(
        "INSERT INTO user_metadata (account_id, key, value, updated) VALUES (?, ?, ?, ?) \
         ON CONFLICT (account_id, key, value) DO UPDATE SET updated = excluded.updated",
    )
    .bind(account)
    .bind(&key)
    .bind(&value)
    .bind(unix_now())
    .execute(&mut *c)
    .await?;
    // Bounded: keep the most recently updated values only.
    sqlx::query(
        "DELETE FROM user_metadata WHERE account_id = ?1 AND key = ?2 AND value NOT IN \
         (SELECT value FROM user_metadata WHERE account_id = ?1 AND key = ?2 \
          ORDER BY updated DESC, value LIMIT ?3)",
    )
    .bind(account)
    .bind(&key)
    .bind(MAX_METADATA_VALUES)
    .execute(&mut *c)
    .await?;
    Ok(((), Vec::new()))
}
