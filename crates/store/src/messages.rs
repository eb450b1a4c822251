//! Write operations on stored messages: flags, expunge, copy and move
//! (RFC 3501 §6.4, RFC 6851). Like [`crate::ops`], each runs inside the
//! writer's batch transaction.

use sqlx::SqliteConnection;

use crate::error::OpError;
use crate::ops::allocate_uid;
use crate::read;
use crate::writer::OpResult;
use crate::{AccountId, FlagOp, MailboxId, StoreError, flags};

async fn owner(c: &mut SqliteConnection, mailbox: MailboxId) -> Result<AccountId, OpError> {
    let account = read::mailbox_account(&mut *c, mailbox).await?;
    account.ok_or(StoreError::NoMailbox.into())
}

fn sorted(mut uids: Vec<u32>) -> Vec<u32> {
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Returns the new flags of every existing message among `uids`; wakes
/// subscribers only if some flags really changed.
pub(crate) async fn set_flags(
    c: &mut SqliteConnection,
    mailbox: MailboxId,
    uids: Vec<u32>,
    op: FlagOp,
    given: Vec<String>,
) -> OpResult<Vec<(u32, Vec<String>)>> {
    let account = owner(c, mailbox).await?;
    let mut result = Vec::new();
    let mut changed = false;
    for uid in sorted(uids) {
        let column: Option<String> =
            sqlx::query_scalar("SELECT flags FROM messages WHERE mailbox_id = ? AND uid = ?")
                .bind(mailbox)
                .bind(uid)
                .fetch_optional(&mut *c)
                .await?;
        let Some(column) = column else { continue };
        let current = flags::decode(&column);
        let new = flags::apply(&current, op, &given);
        if new != current {
            changed = true;
            sqlx::query("UPDATE messages SET flags = ? WHERE mailbox_id = ? AND uid = ?")
                .bind(flags::encode(&new))
                .bind(mailbox)
                .bind(uid)
                .execute(&mut *c)
                .await?;
        }
        result.push((uid, new));
    }
    Ok((result, if changed { vec![account] } else { Vec::new() }))
}

/// Removes the messages flagged `\Deleted` (RFC 3501 §6.4.3), only among
/// `only` if given (RFC 4315 §2.1 UID EXPUNGE).
pub(crate) async fn expunge(
    c: &mut SqliteConnection,
    mailbox: MailboxId,
    only: Option<Vec<u32>>,
) -> OpResult<Vec<u32>> {
    let account = owner(c, mailbox).await?;
    let rows: Vec<(u32, String)> =
        sqlx::query_as("SELECT uid, flags FROM messages WHERE mailbox_id = ? ORDER BY uid")
            .bind(mailbox)
            .fetch_all(&mut *c)
            .await?;
    let only = only.map(sorted);
    let wanted = |uid: &u32| only.as_ref().is_none_or(|o| o.binary_search(uid).is_ok());
    let mut removed = Vec::new();
    for (uid, column) in rows {
        if wanted(&uid) && flags::is_deleted(&flags::decode(&column)) {
            sqlx::query("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?")
                .bind(mailbox)
                .bind(uid)
                .execute(&mut *c)
                .await?;
            removed.push(uid);
        }
    }
    let touched = if removed.is_empty() {
        Vec::new()
    } else {
        vec![account]
    };
    Ok((removed, touched))
}

/// COPY (RFC 3501 §6.4.7): [`copy_unchecked`], refused as a whole with
/// [`StoreError::QuotaExceeded`] if the copies put the account over
/// `quota` (the savepoint then rolls them back).
pub(crate) async fn copy(
    c: &mut SqliteConnection,
    from: MailboxId,
    uids: Vec<u32>,
    to: MailboxId,
    quota: Option<u64>,
) -> OpResult<Vec<(u32, u32)>> {
    let (pairs, touched) = copy_unchecked(c, from, uids, to).await?;
    if !pairs.is_empty() {
        let account = owner(c, to).await?;
        crate::quota::check_after(c, account, quota).await?;
    }
    Ok((pairs, touched))
}

/// Copies the existing messages among `uids` to `to`, keeping flags and
/// internal date (RFC 3501 §6.4.7). Returns (source uid, new uid) pairs in
/// ascending source order.
async fn copy_unchecked(
    c: &mut SqliteConnection,
    from: MailboxId,
    uids: Vec<u32>,
    to: MailboxId,
) -> OpResult<Vec<(u32, u32)>> {
    owner(c, from).await?;
    let target = owner(c, to).await?;
    let existing = read::uids(&mut *c, from).await?;
    let mut pairs = Vec::new();
    for uid in sorted(uids)
        .into_iter()
        .filter(|u| existing.binary_search(u).is_ok())
    {
        let (new_uid, _) = allocate_uid(c, to).await?.ok_or(StoreError::NoMailbox)?;
        sqlx::query(
            "INSERT INTO messages (mailbox_id, uid, flags, size, internal_date, body) \
             SELECT ?, ?, flags, size, internal_date, body FROM messages WHERE mailbox_id = ? AND uid = ?",
        )
        .bind(to)
        .bind(new_uid)
        .bind(from)
        .bind(uid)
        .execute(&mut *c)
        .await?;
        pairs.push((uid, new_uid));
    }
    let touched = if pairs.is_empty() {
        Vec::new()
    } else {
        vec![target]
    };
    Ok((pairs, touched))
}

/// Copies, then removes the originals, in one savepoint: atomic
/// (RFC 6851 §3.3).
pub(crate) async fn move_messages(
    c: &mut SqliteConnection,
    from: MailboxId,
    uids: Vec<u32>,
    to: MailboxId,
) -> OpResult<Vec<(u32, u32)>> {
    let source = owner(c, from).await?;
    let (pairs, mut touched) = copy_unchecked(c, from, uids, to).await?;
    for (uid, _) in &pairs {
        sqlx::query("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?")
            .bind(from)
            .bind(*uid)
            .execute(&mut *c)
            .await?;
    }
    if !pairs.is_empty() {
        touched.push(source);
    }
    Ok((pairs, touched))
}
