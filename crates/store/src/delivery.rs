//! Storing new messages: delivery to INBOXes and IMAP APPEND, both through
//! the writer's group commit and both under the quota rules of
//! [`crate::quota`] (checked and trimmed inside the same transaction).

use sha2::{Digest, Sha256};

use crate::{
    AccountId, Delivered, DeliveryReport, MailboxId, NewMessage, Operation, Store, StoreError, ops,
};

/// How long (seconds) [`Store::deliver_inbound`] remembers what an account
/// received, to recognise a peer's retry of a delivery it already made. A
/// day covers a peer's retries after a broken connection or its own
/// restart; an account's rows go with the account.
pub const DUPLICATE_WINDOW: i64 = 24 * 60 * 60;

impl Store {
    /// Stores one message in the INBOX of every recipient. Returns only
    /// after the transaction holding it is durable (fsync'd); concurrent
    /// calls share one commit.
    ///
    /// Duplicate recipients get one copy. Recipients whose account was
    /// deleted meanwhile, and recipients the copy would put over their
    /// quota, are skipped (the result lists the stored copies); if none is
    /// left the call fails with [`StoreError::QuotaExceeded`] when some
    /// recipient was over quota, else [`StoreError::NoAccount`]. Use
    /// [`Store::deliver_report`] to learn which recipients were over quota.
    pub async fn deliver(
        &self,
        recipients: &[AccountId],
        message: NewMessage,
    ) -> Result<Vec<Delivered>, StoreError> {
        Ok(self.deliver_report(recipients, message).await?.delivered)
    }

    /// [`Store::deliver`], also naming the recipients refused for quota.
    pub async fn deliver_report(
        &self,
        recipients: &[AccountId],
        message: NewMessage,
    ) -> Result<DeliveryReport, StoreError> {
        let recipients = recipients.to_vec();
        let bytes = message.body.len().saturating_mul(recipients.len());
        let quota = self.quota();
        self.inner
            .writer
            .run(Operation::Deliver, bytes, move |c| {
                Box::pin(ops::deliver(c, recipients, message, quota, None))
            })
            .await
    }

    /// [`Store::deliver_report`] for mail from another relay, which retries
    /// a delivery when it got no answer, though the message may have been
    /// stored: a recipient that received exactly these bytes within
    /// [`DUPLICATE_WINDOW`] is listed in [`DeliveryReport::duplicates`] and
    /// gets no second copy. The call succeeds when every recipient has the
    /// message, now or from before.
    pub async fn deliver_inbound(
        &self,
        recipients: &[AccountId],
        message: NewMessage,
    ) -> Result<DeliveryReport, StoreError> {
        let recipients = recipients.to_vec();
        let bytes = message.body.len().saturating_mul(recipients.len());
        let digest: [u8; 32] = Sha256::digest(&message.body).into();
        let quota = self.quota();
        self.inner
            .writer
            .run(Operation::DeliverInbound, bytes, move |c| {
                Box::pin(ops::deliver(c, recipients, message, quota, Some(digest)))
            })
            .await
    }

    /// Stores one message in a given mailbox (IMAP APPEND), durable on
    /// return; [`StoreError::QuotaExceeded`] if it does not fit the quota.
    pub async fn append(&self, mailbox: MailboxId, message: NewMessage) -> Result<u32, StoreError> {
        let bytes = message.body.len();
        let quota = self.quota();
        self.inner
            .writer
            .run(Operation::Append, bytes, move |c| {
                Box::pin(ops::append(c, mailbox, message, quota))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::unix_now;
    use crate::quota::tests::{account, open, sized};
    use crate::{AccountId, ExpireRules, MailboxId, Store};

    /// A fresh store with one account; the directory must outlive it.
    async fn one_account() -> (tempfile::TempDir, Store, AccountId, MailboxId) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir).await;
        let (account, inbox) = account(&store, "a@x.test").await;
        (dir, store, account, inbox)
    }

    const NO_RULES: ExpireRules = ExpireRules {
        delete_mails_after: 0,
        delete_large_after: 0,
        large_message_size: 0,
        delete_inactive_users_after: 0,
    };

    #[tokio::test]
    async fn a_peers_retry_of_the_same_bytes_is_acknowledged_and_not_stored_again() {
        let (_dir, store, a, inbox_a) = one_account().await;
        let (b, inbox_b) = account(&store, "b@x.test").await;

        let first = store.deliver_inbound(&[a], sized(100, 0)).await.unwrap();
        assert_eq!(first.delivered.len(), 1);
        assert!(first.duplicates.is_empty());
        // The retry, now also to b, who did not get it the first time.
        let retry = store.deliver_inbound(&[a, b], sized(100, 0)).await.unwrap();
        assert_eq!(retry.duplicates, vec![a]);
        assert_eq!(retry.delivered.len(), 1);
        assert_eq!(retry.delivered[0].account, b);
        // Only the retry, to a alone: nothing stored, still a success.
        let again = store.deliver_inbound(&[a], sized(100, 0)).await.unwrap();
        assert!(again.delivered.is_empty());
        assert_eq!(again.duplicates, vec![a]);
        assert_eq!(store.uids(inbox_a).await.unwrap().len(), 1);
        assert_eq!(store.uids(inbox_b).await.unwrap().len(), 1);

        // Other bytes are another message.
        store.deliver_inbound(&[a], sized(101, 0)).await.unwrap();
        assert_eq!(store.uids(inbox_a).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn local_deliveries_are_never_taken_for_retries() {
        let (_dir, store, a, inbox) = one_account().await;
        store.deliver_inbound(&[a], sized(100, 0)).await.unwrap();
        store.deliver_report(&[a], sized(100, 0)).await.unwrap();
        store.deliver_report(&[a], sized(100, 0)).await.unwrap();
        assert_eq!(store.uids(inbox).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn the_expiry_pass_forgets_what_is_older_than_the_window() {
        let (_dir, store, a, inbox) = one_account().await;
        store.deliver_inbound(&[a], sized(100, 0)).await.unwrap();
        // An hour later the retry is still recognised.
        store.expire(unix_now() + 3600, &NO_RULES).await.unwrap();
        let retry = store.deliver_inbound(&[a], sized(100, 0)).await.unwrap();
        assert_eq!(retry.duplicates, vec![a]);
        // A window later the same bytes are stored as a new message.
        store
            .expire(unix_now() + crate::DUPLICATE_WINDOW + 1, &NO_RULES)
            .await
            .unwrap();
        let later = store.deliver_inbound(&[a], sized(100, 0)).await.unwrap();
        assert_eq!(later.delivered.len(), 1);
        assert_eq!(store.uids(inbox).await.unwrap().len(), 2);
    }
}
