//! Operator state (see `migrations/0004_admin.sql`): the blocklist, invite
//! tokens and their reservations, per-account quotas, settings changed at
//! run time, and the account listing of the admin surfaces.
//!
//! Invite flow: `/new?token=` calls [`Store::reserve_invite`], which ties a
//! freshly generated address to a usable token for a while; the first login
//! of that address calls [`Store::create_first_login`], which in one
//! transaction checks the token again, counts one use, drops the
//! reservation and creates the account. So a token is consumed by logins,
//! never by page loads, and two logins cannot both take its last use.
//!
//! Invariants: times are Unix seconds; tokens and addresses are stored as
//! given (callers lower-case addresses).

use sqlx::SqliteConnection;

use crate::error::{During, Operation};
use crate::writer::OpResult;
use crate::{AccountId, Created, Store, StoreError, ops};

/// A blocked address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub address: String,
    pub reason: String,
    /// When it was blocked.
    pub created: i64,
}

/// An invite token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvite {
    pub token: String,
    /// Accounts it may create (at least 1).
    pub max_uses: u32,
    /// When it stops working; `None`: never.
    pub expires: Option<i64>,
    pub comment: String,
}

/// A stored invite token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub token: String,
    pub max_uses: u32,
    /// Accounts created with it so far.
    pub uses: u32,
    /// Addresses handed out with it whose first login is still awaited
    /// (each holds one use until its reservation runs out).
    pub pending: u32,
    pub expires: Option<i64>,
    pub comment: String,
    pub created: i64,
}

impl Invite {
    /// Whether it can still create an account at `now`, not counting
    /// pending reservations.
    pub fn usable(&self, now: i64) -> bool {
        self.uses < self.max_uses && self.expires.is_none_or(|e| e > now)
    }

    /// Whether `/new` may hand out one more address with it at `now`.
    pub fn reservable(&self, now: i64) -> bool {
        self.usable(now) && self.uses.saturating_add(self.pending) < self.max_uses
    }

    /// `active`, `exhausted` or `expired` (the admin API's words).
    pub fn status(&self, now: i64) -> &'static str {
        if self.expires.is_some_and(|e| e <= now) {
            "expired"
        } else if self.reservable(now) {
            "active"
        } else {
            "exhausted"
        }
    }
}

/// One account as the admin surfaces list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSummary {
    pub address: String,
    /// Unix day of creation.
    pub created_day: i64,
    pub last_login_day: Option<i64>,
    /// Its own quota in bytes; `None`: the relay's default.
    pub quota: Option<u64>,
    /// Bytes of mail stored.
    pub used: u64,
    /// Why it is banned, if it is.
    pub banned: Option<String>,
}

/// A page of [`AccountSummary`] and how many match in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsPage {
    pub total: u64,
    pub accounts: Vec<AccountSummary>,
}

type InviteRow = (String, i64, i64, i64, Option<i64>, String, i64);
type SummaryRow = (String, i64, Option<i64>, Option<i64>, i64, Option<String>);

macro_rules! select_invites {
    () => {
        "SELECT token, max_uses, uses, \
           (SELECT COUNT(*) FROM invite_reservations r \
              WHERE r.token = invites.token AND r.expires > unixepoch()), \
           expires, comment, created FROM invites"
    };
}

/// The columns of [`SummaryRow`], over accounts aliased `a`.
macro_rules! select_summaries {
    () => {
        "SELECT a.address, a.created_day, a.last_login_day, a.quota, \
           (SELECT COALESCE(SUM(m.size), 0) FROM messages m \
              JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = a.id), \
           (SELECT reason FROM blocklist l WHERE l.address = a.address)"
    };
}

fn summary_of(row: SummaryRow) -> AccountSummary {
    let (address, created_day, last_login_day, quota, used, banned) = row;
    AccountSummary {
        address,
        created_day,
        last_login_day,
        quota: quota.map(bytes_of),
        used: bytes_of(used),
        banned,
    }
}

fn invite_of(row: InviteRow) -> Invite {
    let (token, max_uses, uses, pending, expires, comment, created) = row;
    Invite {
        token,
        max_uses: u32::try_from(max_uses).unwrap_or(0),
        uses: u32::try_from(uses).unwrap_or(u32::MAX),
        pending: u32::try_from(pending).unwrap_or(u32::MAX),
        expires,
        comment,
        created,
    }
}

fn bytes_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `%`, `_` and `\` taken literally in a `LIKE ... ESCAPE '\'` pattern.
fn like_pattern(search: &str) -> String {
    let mut pattern = String::from("%");
    for c in search.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Store {
    // --- blocklist ---

    /// Blocks `address` (or changes the reason); returns whether it was
    /// not blocked before.
    pub async fn block(&self, address: &str, reason: &str, now: i64) -> Result<bool, StoreError> {
        let (address, reason) = (address.to_owned(), reason.to_owned());
        self.inner
            .writer
            .run(Operation::Block, 0, move |c| {
                Box::pin(block(c, address, reason, now))
            })
            .await
    }
    /// Unblocks `address`; returns whether it was blocked.
    pub async fn unblock(&self, address: &str) -> Result<bool, StoreError> {
        let address = address.to_owned();
        self.inner
            .writer
            .run(Operation::Unblock, 0, move |c| {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM blocklist WHERE address = ?")
                        .bind(&address)
                        .execute(&mut *c)
                        .await?;
                    Ok((done.rows_affected() > 0, Vec::new()))
                })
            })
            .await
    }
    /// Every blocked address, ordered by address.
    pub async fn blocklist(&self) -> Result<Vec<Blocked>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT address, reason, created FROM blocklist ORDER BY address")
                .fetch_all(self.db())
                .await
                .during(Operation::Blocklist)?;
        Ok(rows
            .into_iter()
            .map(|(address, reason, created)| Blocked {
                address,
                reason,
                created,
            })
            .collect())
    }

    // --- invite tokens ---

    /// Stores a new invite token.
    pub async fn create_invite(&self, invite: NewInvite, now: i64) -> Result<Invite, StoreError> {
        self.inner
            .writer
            .run(Operation::CreateInvite, 0, move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO invites (token, max_uses, expires, comment, created) \
                         VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(&invite.token)
                    .bind(i64::from(invite.max_uses))
                    .bind(invite.expires)
                    .bind(&invite.comment)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                    let stored = Invite {
                        token: invite.token,
                        max_uses: invite.max_uses,
                        uses: 0,
                        pending: 0,
                        expires: invite.expires,
                        comment: invite.comment,
                        created: now,
                    };
                    Ok((stored, Vec::new()))
                })
            })
            .await
    }
    /// Every invite token, the newest first.
    pub async fn invites(&self) -> Result<Vec<Invite>, StoreError> {
        let sql = concat!(select_invites!(), " ORDER BY created DESC, token");
        let rows: Vec<InviteRow> = sqlx::query_as(sql)
            .fetch_all(self.db())
            .await
            .during(Operation::Invites)?;
        Ok(rows.into_iter().map(invite_of).collect())
    }
    /// One invite token.
    pub async fn invite(&self, token: &str) -> Result<Option<Invite>, StoreError> {
        let sql = concat!(select_invites!(), " WHERE token = ?");
        let row: Option<InviteRow> = sqlx::query_as(sql)
            .bind(token)
            .fetch_optional(self.db())
            .await
            .during(Operation::Invite)?;
        Ok(row.map(invite_of))
    }
    /// Deletes an invite token (and its reservations); returns whether it
    /// existed.
    pub async fn delete_invite(&self, token: &str) -> Result<bool, StoreError> {
        let token = token.to_owned();
        self.inner
            .writer
            .run(Operation::DeleteInvite, 0, move |c| {
                Box::pin(async move {
                    let done = sqlx::query("DELETE FROM invites WHERE token = ?")
                        .bind(&token)
                        .execute(&mut *c)
                        .await?;
                    Ok((done.rows_affected() > 0, Vec::new()))
                })
            })
            .await
    }
    /// Ties `address` to `token` until `expires` if the token is usable at
    /// `now`; returns whether it was. Drops reservations that have run out.
    pub async fn reserve_invite(
        &self,
        address: &str,
        token: &str,
        now: i64,
        expires: i64,
    ) -> Result<bool, StoreError> {
        let (address, token) = (address.to_owned(), token.to_owned());
        self.inner
            .writer
            .run(Operation::ReserveInvite, 0, move |c| {
                Box::pin(reserve(c, address, token, now, expires))
            })
            .await
    }
    /// Creates the account of a first login. If `address` holds a
    /// reservation whose token is still usable, that counts one use of the
    /// token; without one the account is made only when `open`.
    /// `Ok(None)`: not made (nothing changed); an existing account is
    /// returned as [`Created::Existing`].
    pub async fn create_first_login(
        &self,
        address: &str,
        password_hash: &str,
        now: i64,
        open: bool,
    ) -> Result<Option<Created>, StoreError> {
        let (address, hash) = (address.to_owned(), password_hash.to_owned());
        self.inner
            .writer
            .run(Operation::CreateFirstLogin, 0, move |c| {
                Box::pin(create_first_login(c, address, hash, now, open))
            })
            .await
    }

    // --- accounts ---

    /// Accounts whose address contains `search` (all for `None`), ordered
    /// by address, `limit` of them from `offset`, with the total count.
    pub async fn account_summaries(
        &self,
        search: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<AccountsPage, StoreError> {
        let pattern = like_pattern(search.unwrap_or(""));
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE address LIKE ? ESCAPE '\\'")
                .bind(&pattern)
                .fetch_one(self.db())
                .await
                .during(Operation::AccountSummaries)?;
        // The page is chosen first, so usage is summed for its rows only.
        let sql = concat!(
            select_summaries!(),
            " FROM (SELECT * FROM accounts WHERE address LIKE ? ESCAPE '\\' \
               ORDER BY address LIMIT ? OFFSET ?) a ORDER BY a.address"
        );
        let rows: Vec<SummaryRow> = sqlx::query_as(sql)
            .bind(&pattern)
            .bind(sql_int(limit))
            .bind(sql_int(offset))
            .fetch_all(self.db())
            .await
            .during(Operation::AccountSummaries)?;
        let accounts = rows.into_iter().map(summary_of).collect();
        Ok(AccountsPage {
            total: bytes_of(total),
            accounts,
        })
    }
    /// The account with exactly this address (lower case), if any.
    pub async fn account_summary(
        &self,
        address: &str,
    ) -> Result<Option<AccountSummary>, StoreError> {
        let sql = concat!(select_summaries!(), " FROM accounts a WHERE a.address = ?");
        let row: Option<SummaryRow> = sqlx::query_as(sql)
            .bind(address)
            .fetch_optional(self.db())
            .await
            .during(Operation::AccountSummary)?;
        Ok(row.map(summary_of))
    }
    /// Sets the account's own quota (`None`: back to the default); returns
    /// whether the account exists.
    pub async fn set_account_quota(
        &self,
        address: &str,
        bytes: Option<u64>,
    ) -> Result<bool, StoreError> {
        let address = address.to_owned();
        self.inner
            .writer
            .run(Operation::SetAccountQuota, 0, move |c| {
                Box::pin(async move {
                    let done = sqlx::query("UPDATE accounts SET quota = ? WHERE address = ?")
                        .bind(bytes.map(sql_int))
                        .bind(&address)
                        .execute(&mut *c)
                        .await?;
                    Ok((done.rows_affected() > 0, Vec::new()))
                })
            })
            .await
    }

    // --- settings ---

    /// A setting the operator changed at run time.
    pub async fn admin_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM admin_settings WHERE key = ?")
            .bind(key)
            .fetch_optional(self.db())
            .await
            .during(Operation::AdminSetting)
    }
    /// Stores (or, with `None`, forgets) a setting changed at run time.
    pub async fn set_admin_setting(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.map(str::to_owned));
        self.inner
            .writer
            .run(Operation::SetAdminSetting, 0, move |c| {
                Box::pin(async move {
                    match value {
                        Some(value) => {
                            sqlx::query(
                                "INSERT INTO admin_settings (key, value) VALUES (?, ?) \
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            )
                            .bind(&key)
                            .bind(&value)
                            .execute(&mut *c)
                            .await?;
                        }
                        None => {
                            sqlx::query("DELETE FROM admin_settings WHERE key = ?")
                                .bind(&key)
                                .execute(&mut *c)
                                .await?;
                        }
                    }
                    Ok(((), Vec::new()))
                })
            })
            .await
    }
}

async fn block(
    c: &mut SqliteConnection,
    address: String,
    reason: String,
    now: i64,
) -> OpResult<bool> {
    let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM blocklist WHERE address = ?")
        .bind(&address)
        .fetch_optional(&mut *c)
        .await?;
    sqlx::query(
        "INSERT INTO blocklist (address, reason, created) VALUES (?, ?, ?) \
         ON CONFLICT (address) DO UPDATE SET reason = excluded.reason",
    )
    .bind(&address)
    .bind(&reason)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok((existed.is_none(), Vec::new()))
}

async fn invite_in(c: &mut SqliteConnection, token: &str) -> Result<Option<Invite>, sqlx::Error> {
    let sql = concat!(select_invites!(), " WHERE token = ?");
    let row: Option<InviteRow> = sqlx::query_as(sql)
        .bind(token)
        .fetch_optional(&mut *c)
        .await?;
    Ok(row.map(invite_of))
}

async fn reserve(
    c: &mut SqliteConnection,
    address: String,
    token: String,
    now: i64,
    expires: i64,
) -> OpResult<bool> {
    sqlx::query("DELETE FROM invite_reservations WHERE expires <= ?")
        .bind(now)
        .execute(&mut *c)
        .await?;
    let held: Option<String> =
        sqlx::query_scalar("SELECT token FROM invite_reservations WHERE address = ?")
            .bind(&address)
            .fetch_optional(&mut *c)
            .await?;
    let invite = invite_in(c, &token).await?;
    let admits = invite.is_some_and(|i| i.reservable(now) || held.as_ref() == Some(&token));
    if !admits {
        return Ok((false, Vec::new()));
    }
    sqlx::query(
        "INSERT INTO invite_reservations (address, token, expires) VALUES (?, ?, ?) \
         ON CONFLICT (address) DO UPDATE SET token = excluded.token, expires = excluded.expires",
    )
    .bind(&address)
    .bind(&token)
    .bind(expires)
    .execute(&mut *c)
    .await?;
    Ok((true, Vec::new()))
}

async fn create_first_login(
    c: &mut SqliteConnection,
    address: String,
    hash: String,
    now: i64,
    open: bool,
) -> OpResult<Option<Created>> {
    if let Some(existing) = crate::read::account(&mut *c, &address).await? {
        return Ok((Some(Created::Existing(existing)), Vec::new()));
    }
    let token: Option<String> = sqlx::query_scalar(
        "SELECT token FROM invite_reservations WHERE address = ? AND expires > ?",
    )
    .bind(&address)
    .bind(now)
    .fetch_optional(&mut *c)
    .await?;
    let invited = match token {
        Some(token) if invite_in(c, &token).await?.is_some_and(|i| i.usable(now)) => Some(token),
        _ => None,
    };
    match invited {
        Some(token) => {
            sqlx::query("UPDATE invites SET uses = uses + 1 WHERE token = ?")
                .bind(&token)
                .execute(&mut *c)
                .await?;
        }
        None if open => {}
        None => return Ok((None, Vec::new())),
    }
    sqlx::query("DELETE FROM invite_reservations WHERE address = ?")
        .bind(&address)
        .execute(&mut *c)
        .await?;
    let (created, touched) = ops::create_account(c, address, hash).await?;
    Ok((Some(created), touched))
}

/// The quota that applies to `account`: its own, else `default`.
pub(crate) async fn effective_quota(
    c: &mut SqliteConnection,
    account: AccountId,
    default: Option<u64>,
) -> Result<Option<u64>, sqlx::Error> {
    let own: Option<Option<i64>> = sqlx::query_scalar("SELECT quota FROM accounts WHERE id = ?")
        .bind(account)
        .fetch_optional(&mut *c)
        .await?;
    Ok(own.flatten().map(bytes_of).or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::quota::tests::open(&dir).await;
        (dir, store)
    }

    fn invite(token: &str, max_uses: u32, expires: Option<i64>) -> NewInvite {
        NewInvite {
            token: token.into(),
            max_uses,
            expires,
            comment: "for the team".into(),
        }
    }

    #[tokio::test]
    async fn a_reserved_address_takes_one_use_of_its_token_at_first_login() {
        let (_dir, store) = open_store().await;
        store
            .create_invite(invite("t1", 2, None), 100)
            .await
            .unwrap();
        assert!(
            store
                .reserve_invite("a@x", "t1", 100, i64::MAX)
                .await
                .unwrap()
        );
        assert!(
            store
                .reserve_invite("b@x", "t1", 100, i64::MAX)
                .await
                .unwrap()
        );
        // Both uses are held by pending reservations.
        assert!(
            !store
                .reserve_invite("c@x", "t1", 100, i64::MAX)
                .await
                .unwrap()
        );
        assert_eq!(
            store.invite("t1").await.unwrap().unwrap().status(100),
            "exhausted"
        );
        // Unreserved addresses fail, unless registration is open.
        assert_eq!(
            store
                .create_first_login("c@x", "h", 110, false)
                .await
                .unwrap(),
            None
        );
        let open = store
            .create_first_login("c@x", "h", 110, true)
            .await
            .unwrap();
        assert!(matches!(open, Some(Created::New(_))));
        let first = store
            .create_first_login("a@x", "h", 110, false)
            .await
            .unwrap();
        assert!(matches!(first, Some(Created::New(_))));
        let held = store.invite("t1").await.unwrap().unwrap();
        assert_eq!((held.uses, held.pending), (1, 1));
        store.delete_account("a@x").await.unwrap();
        assert!(matches!(
            store
                .create_first_login("b@x", "h", 110, false)
                .await
                .unwrap(),
            Some(Created::New(_))
        ));
        // Used up: a reservation made earlier for another address admits nobody.
        assert_eq!(store.invite("t1").await.unwrap().unwrap().uses, 2);
        // The account now exists: a later login finds it.
        let again = store
            .create_first_login("b@x", "h", 120, false)
            .await
            .unwrap();
        assert!(matches!(again, Some(Created::Existing(_))));
        assert!(
            !store
                .reserve_invite("d@x", "t1", 120, i64::MAX)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn expired_tokens_and_reservations_admit_nobody() {
        let (_dir, store) = open_store().await;
        store
            .create_invite(invite("t2", 5, Some(150)), 100)
            .await
            .unwrap();
        assert!(store.reserve_invite("a@x", "t2", 100, 130).await.unwrap());
        assert!(store.reserve_invite("b@x", "t2", 100, 200).await.unwrap());
        // a's reservation ran out; b's token did.
        assert_eq!(
            store
                .create_first_login("a@x", "h", 140, false)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .create_first_login("b@x", "h", 160, false)
                .await
                .unwrap(),
            None
        );
        assert!(!store.reserve_invite("c@x", "t2", 160, 300).await.unwrap());
        assert!(!store.reserve_invite("c@x", "nope", 100, 300).await.unwrap());
        assert!(store.delete_invite("t2").await.unwrap());
        assert!(store.invites().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_listing_pages_searches_and_shows_usage_quota_and_bans() {
        let (_dir, store) = open_store().await;
        for name in ["ann", "bob", "b_b", "cid"] {
            store
                .create_account(&format!("{name}@x"), "h")
                .await
                .unwrap();
        }
        store.block("bob@x", "spam", 1).await.unwrap();
        store.set_account_quota("cid@x", Some(4096)).await.unwrap();
        let page = store.account_summaries(None, 1, 2).await.unwrap();
        assert_eq!(page.total, 4);
        let names: Vec<_> = page.accounts.iter().map(|a| a.address.as_str()).collect();
        assert_eq!(names, ["b_b@x", "bob@x"]);
        assert_eq!(page.accounts[1].banned.as_deref(), Some("spam"));
        // `_` is literal, not a wildcard.
        let page = store.account_summaries(Some("b_"), 0, 10).await.unwrap();
        assert_eq!(page.total, 1);
        let cid = store.account_summaries(Some("cid"), 0, 10).await.unwrap();
        assert_eq!(cid.accounts[0].quota, Some(4096));
        assert_eq!(cid.accounts[0].used, 0);
        let bob = store.account_summary("bob@x").await.unwrap().unwrap();
        assert_eq!(bob.banned.as_deref(), Some("spam"));
        assert_eq!(store.account_summary("bo@x").await.unwrap(), None);
        assert!(!store.set_account_quota("zed@x", Some(1)).await.unwrap());
    }

    #[tokio::test]
    async fn blocking_twice_keeps_one_entry_with_the_new_reason() {
        let (_dir, store) = open_store().await;
        assert!(store.block("a@x", "spam", 1).await.unwrap());
        assert!(!store.block("a@x", "abuse", 2).await.unwrap());
        let list = store.blocklist().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].reason, "abuse");
        assert!(store.unblock("a@x").await.unwrap());
        assert!(!store.unblock("a@x").await.unwrap());
        store.set_admin_setting("k", Some("v")).await.unwrap();
        assert_eq!(
            store.admin_setting("k").await.unwrap().as_deref(),
            Some("v")
        );
        store.set_admin_setting("k", None).await.unwrap();
        assert_eq!(store.admin_setting("k").await.unwrap(), None);
    }
}
