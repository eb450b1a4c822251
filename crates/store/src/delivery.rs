//! Storing new messages: delivery to INBOXes and IMAP APPEND, both through
//! the writer's group commit and both under the quota rules of
//! [`crate::quota`] (checked and trimmed inside the same transaction).

use crate::{AccountId, Delivered, DeliveryReport, MailboxId, NewMessage, Store, StoreError, ops};

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
            .run(bytes, move |c| {
                Box::pin(ops::deliver(c, recipients, message, quota))
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
            .run(bytes, move |c| {
                Box::pin(ops::append(c, mailbox, message, quota))
            })
            .await
    }
}
