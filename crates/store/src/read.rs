//! Queries that only read. They run on the read pool (WAL lets them run
//! beside the writer) and, where a write needs them, inside the writer's
//! transaction: every function takes any SQLite executor.

use sqlx::{Executor, Sqlite};

use crate::flags;
use crate::{Account, AccountId, MailboxId, MailboxInfo, MessageMeta};

type AccountRow = (i64, String, String, Option<i64>);
type MailboxRow = (i64, String, u32, u32, Option<String>);

macro_rules! select_accounts {
    () => {
        "SELECT id, address, password_hash, last_login_day FROM accounts"
    };
}
macro_rules! select_mailboxes {
    () => {
        "SELECT id, name, uidvalidity, uidnext, special_use FROM mailboxes"
    };
}

fn account_of(row: AccountRow) -> Account {
    let (id, address, password_hash, last_login_day) = row;
    Account {
        id,
        address,
        password_hash,
        last_login_day,
    }
}

fn mailbox_of(row: MailboxRow) -> MailboxInfo {
    let (id, name, uidvalidity, uidnext, special_use) = row;
    MailboxInfo {
        id,
        name,
        uidvalidity,
        uidnext,
        special_use,
    }
}

/// `INBOX` in any case is the INBOX (RFC 3501 §5.1); other names are
/// case-sensitive.
pub(crate) fn canonical_name(name: &str) -> &str {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX"
    } else {
        name
    }
}

pub(crate) async fn account<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    address: &str,
) -> Result<Option<Account>, sqlx::Error> {
    let sql = concat!(select_accounts!(), " WHERE address = ?");
    let row: Option<AccountRow> = sqlx::query_as(sql).bind(address).fetch_optional(db).await?;
    Ok(row.map(account_of))
}

pub(crate) async fn accounts<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
) -> Result<Vec<Account>, sqlx::Error> {
    let sql = concat!(select_accounts!(), " ORDER BY address");
    let rows: Vec<AccountRow> = sqlx::query_as(sql).fetch_all(db).await?;
    Ok(rows.into_iter().map(account_of).collect())
}

pub(crate) async fn mailboxes<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    account: AccountId,
) -> Result<Vec<MailboxInfo>, sqlx::Error> {
    let sql = concat!(select_mailboxes!(), " WHERE account_id = ? ORDER BY name");
    let rows: Vec<MailboxRow> = sqlx::query_as(sql).bind(account).fetch_all(db).await?;
    Ok(rows.into_iter().map(mailbox_of).collect())
}

pub(crate) async fn mailbox<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    account: AccountId,
    name: &str,
) -> Result<Option<MailboxInfo>, sqlx::Error> {
    let sql = concat!(select_mailboxes!(), " WHERE account_id = ? AND name = ?");
    let row: Option<MailboxRow> = sqlx::query_as(sql)
        .bind(account)
        .bind(canonical_name(name))
        .fetch_optional(db)
        .await?;
    Ok(row.map(mailbox_of))
}

/// The account owning a mailbox.
pub(crate) async fn mailbox_account<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    mailbox: MailboxId,
) -> Result<Option<AccountId>, sqlx::Error> {
    sqlx::query_scalar("SELECT account_id FROM mailboxes WHERE id = ?")
        .bind(mailbox)
        .fetch_optional(db)
        .await
}

pub(crate) async fn messages<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    mailbox: MailboxId,
    after_uid: u32,
) -> Result<Vec<MessageMeta>, sqlx::Error> {
    let rows: Vec<(u32, String, i64, i64)> = sqlx::query_as(
        "SELECT uid, flags, size, internal_date FROM messages \
         WHERE mailbox_id = ? AND uid > ? ORDER BY uid",
    )
    .bind(mailbox)
    .bind(after_uid)
    .fetch_all(db)
    .await?;
    let meta = |(uid, column, size, internal_date): (u32, String, i64, i64)| MessageMeta {
        uid,
        flags: flags::decode(&column),
        size: u64::try_from(size).unwrap_or(0),
        internal_date,
    };
    Ok(rows.into_iter().map(meta).collect())
}

pub(crate) async fn uids<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    mailbox: MailboxId,
) -> Result<Vec<u32>, sqlx::Error> {
    sqlx::query_scalar("SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid")
        .bind(mailbox)
        .fetch_all(db)
        .await
}

pub(crate) async fn body<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    mailbox: MailboxId,
    uid: u32,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT body FROM messages WHERE mailbox_id = ? AND uid = ?")
        .bind(mailbox)
        .bind(uid)
        .fetch_optional(db)
        .await
}

pub(crate) async fn usage<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    account: AccountId,
) -> Result<u64, sqlx::Error> {
    let total: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(m.size), 0) FROM messages m \
         JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = ?",
    )
    .bind(account)
    .fetch_one(db)
    .await?;
    Ok(u64::try_from(total).unwrap_or(0))
}

pub(crate) async fn user_metadata<'e, E: Executor<'e, Database = Sqlite>>(
    db: E,
    account: AccountId,
    key: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT value FROM user_metadata WHERE account_id = ? AND key = ? ORDER BY updated, value",
    )
    .bind(account)
    .bind(key)
    .fetch_all(db)
    .await
}
