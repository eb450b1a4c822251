//! Per-account metadata reads with an age limit (RFC 5464 private
//! entries such as Delta Chat's push device tokens, which expire 90 days
//! after their last SETMETADATA, docs/specifications.md §4).
//!
//! Invariant: expiry is a read-side filter on the `updated` column; rows
//! are never rewritten here, so a token set again simply becomes live again.

use std::time::Duration;

use crate::error::{During, Operation};
use crate::{AccountId, Store, StoreError};

/// The per-account metadata key of Delta Chat's push device tokens.
pub const DEVICE_TOKEN: &str = "/private/devicetoken";
/// A device token is live for this long after its last SETMETADATA.
pub const DEVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

impl Store {
    /// The device tokens of `account` that are live at `now` (Unix
    /// seconds), oldest update first.
    pub async fn live_device_tokens(
        &self,
        account: AccountId,
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let since = now.saturating_sub(DEVICE_TOKEN_LIFETIME.as_secs());
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        self.live_user_metadata(account, DEVICE_TOKEN, since).await
    }

    /// Per-account metadata values of `key` updated at or after `since`
    /// (Unix seconds), oldest update first.
    pub async fn live_user_metadata(
        &self,
        account: AccountId,
        key: &str,
        since: i64,
    ) -> Result<Vec<String>, StoreError> {
        let values = sqlx::query_scalar(
            "SELECT value FROM user_metadata \
             WHERE account_id = ? AND key = ? AND updated >= ? ORDER BY updated, value",
        )
        .bind(account)
        .bind(key)
        .bind(since)
        .fetch_all(self.db())
        .await
        .during(Operation::LiveUserMetadata)?;
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Created, Store, StoreOptions};

    #[tokio::test]
    async fn returns_only_values_updated_since_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions {
            path: dir.path().join("mail.sqlite"),
            max_batch: 4,
        })
        .await
        .unwrap();
        let Created::New(account) = store.create_account("a@example.org", "hash").await.unwrap()
        else {
            panic!("account existed")
        };
        let account = account.id;
        store
            .add_user_metadata(account, "/private/devicetoken", "one")
            .await
            .unwrap();
        let all = store
            .live_user_metadata(account, "/private/devicetoken", 0)
            .await
            .unwrap();
        assert_eq!(all, vec!["one".to_string()]);
        let future = i64::MAX;
        let none = store
            .live_user_metadata(account, "/private/devicetoken", future)
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
