//! `RCPT TO` and `DATA`: recipient rules, the message checks of
//! docs/specifications.md §2 (size, `From:`, encryption gate, header hygiene) and the
//! durable hand-off to the store (local recipients) and to the outbound
//! queue (remote recipients, when the queue runs).
//!
//! Quota (docs/specifications.md §5): checked per recipient at `RCPT`
//! (`552 5.2.2 Quota exceeded` for that recipient only, using `SIZE=` when
//! given) and again by the store inside the delivery transaction. A
//! recipient found full only there gets no copy; when others (local or
//! remote) do get the message the client sees `250` and the sender gets a
//! bounce (RFC 3464, status 5.2.2) naming exactly those recipients in
//! their INBOX; when nobody gets it the reply is `552 5.2.2`.
//!
//! The message is spooled as it arrives (`chatmail_limits::Spools`: memory
//! while small and the budget allows, then an unlinked file), bounded by
//! `max_message_size`; a body that finds no room is refused with
//! `451 4.3.2` at its end.
//!
//! Order after the end of DATA: line endings → size → `From:` → gate →
//! hygiene → `Store::deliver_report` → `Queue::submit` → quota bounce →
//! `250`. A failed check
//! leaves nothing stored; a failed hand-off answers 4xx, so the client
//! retries (a local copy stored before a failed queue hand-off may then
//! arrive twice; Delta Chat drops duplicates by Message-ID).

use bytes::Bytes;
use chatmail_metrics::{Reason, Source};
use chatmail_queue::dsn::{self, Failure};
use chatmail_store::{AccountId, Delivered, NewMessage, StoreError};
use tokio::io::{AsyncRead, AsyncWrite};

use chatmail_inbound::Refusal;
use chatmail_limits::{Body, SpoolError};

use crate::data::{Decoder, Defect};
use crate::message::{check_from, clean_headers};
use crate::reply::{Reply, Status};
use crate::session::{Flow, Recipient, Role, Session, Transaction};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `RCPT TO` (RFC 5321 §4.1.1.3): local, existing accounts with room
    /// under their quota, or remote ones.
    pub(crate) async fn handle_rcpt(&mut self, address: &str) -> Flow {
        let max = self.shared.ctx.settings.limits().max_recipients;
        let Some(transaction) = self.transaction() else {
            return self.reply(Status::NeedMail); // RFC 5321 §3.3
        };
        if transaction.len() >= max {
            // RFC 5321 §4.5.3.1.10
            return self.refuse(&Refusal::too_many_recipients());
        }
        let Some(local) = self.shared.ctx.accounts.local_address(address) else {
            return self.handle_remote_rcpt(address);
        };
        let account = match self.shared.ctx.accounts.store().account(&local).await {
            Ok(Some(account)) => account,
            Ok(None) => return self.refuse(&Refusal::unknown_user()),
            Err(error) => {
                if self.log() {
                    tracing::warn!(%error, "recipient lookup failed");
                }
                let reply = self.store_failure(&error);
                return self.send(reply);
            }
        };
        let size = transaction.declared_size.unwrap_or(1);
        if let Err(reply) = self.check_room(account.id, size).await {
            return self.send(reply);
        }
        if let Some(transaction) = self.transaction_mut() {
            let (account, address) = (account.id, account.address);
            transaction.add(Recipient::Local { account, address });
        }
        self.reply(Status::RecipientOk)
    }

    /// docs/specifications.md §5: a recipient whose mailbox cannot take
    /// `size` more bytes fails alone, at `RCPT`.
    async fn check_room(&self, account: AccountId, size: u64) -> Result<(), Reply> {
        match self
            .shared
            .ctx
            .accounts
            .store()
            .has_room(account, size)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.refusal(&Refusal::quota_exceeded())),
            Err(error) => {
                if self.log() {
                    tracing::warn!(%error, "quota lookup failed");
                }
                Err(self.store_failure(&error))
            }
        }
    }

    /// `DATA` (RFC 5321 §4.1.1.4): reads the message, checks and stores it.
    pub(crate) async fn handle_data(&mut self) -> std::io::Result<Flow> {
        match self.transaction() {
            None => return Ok(self.reply(Status::NeedMail)),
            // RFC 2920 §3.1: no 354 without a valid recipient.
            Some(t) if t.is_empty() => {
                return Ok(self.send(Reply::from(&Refusal::no_recipients())));
            }
            Some(_) => {}
        }
        self.reply(Status::StartData);
        let max = self.shared.ctx.settings.limits().max_message_size;
        let mut decoder = Decoder::new();
        let mut spool = self.shared.ctx.inbound.spools().begin(self.peer, max);
        let idle = self.idle();
        // One bound for the whole DATA, not one per read; a body that
        // trickles in may lose its slot to a newcomer (`chatmail_limits`).
        let evicted = chatmail_limits::slots::evicted(self.slot.clone());
        let data = Self::bounded(idle, self.wire.read_data(&mut decoder, &mut spool));
        let complete = tokio::select! {
            complete = data => complete?,
            () = evicted => {
                self.queue_evicted();
                return Ok(Flow::Close);
            }
        };
        if !complete {
            return Ok(Flow::Close);
        }
        let Some(transaction) = self.end_transaction() else {
            return Ok(Flow::Continue);
        };
        let reply = match decoder.finish() {
            Err(Defect::BareLineEnding) => self.refusal(&Refusal::bare_line_ending()),
            Ok(()) => match spool.finish().await {
                Ok(message) => self.accept(transaction, message).await,
                Err(error) => self.spool_refusal(&error),
            },
        };
        Ok(self.send(reply))
    }

    /// The reply to a failed store operation, counted: `452 4.3.1` when
    /// the disk is full, else `451 4.3.0`.
    fn store_failure(&self, error: &StoreError) -> Reply {
        let refusal = Refusal::of_store(error);
        self.refusal(&refusal)
    }

    /// The reply for a body that could not be taken (the texts of
    /// `/mxdeliv`).
    fn spool_refusal(&self, error: &SpoolError) -> Reply {
        if let SpoolError::Io(cause) = error
            && self.log()
        {
            tracing::warn!(%cause, "spooling a message failed");
        }
        let refusal = Refusal::from(error);
        self.refusal(&refusal)
    }

    /// A recipient outside the local domain: queued for its relay when
    /// the outbound queue runs and the federation policy allows the domain.
    fn handle_remote_rcpt(&mut self, address: &str) -> Flow {
        let ctx = &self.shared.ctx;
        let domain = address.rsplit_once('@').map_or("", |(_, domain)| domain);
        if ctx.settings.domain.matches(domain) {
            // A malformed local part.
            return self.refuse(&Refusal::unknown_user());
        }
        if ctx.queue.is_none() {
            return self.refuse(&Refusal::no_federation());
        }
        if !ctx.settings.federation_allows(domain) {
            return self.refuse(&Refusal::policy());
        }
        if let Some(transaction) = self.transaction_mut() {
            transaction.add(Recipient::Remote(address.to_owned()));
        }
        self.reply(Status::RecipientOk)
    }

    /// Runs the message checks, stores the local copies and queues the
    /// remote ones; `250` only once both are durable.
    async fn accept(&self, transaction: Transaction, message: Body) -> Reply {
        if self.role == Role::Mx {
            return self.accept_inbound(transaction, &message).await;
        }
        let reply = self.accept_submission(transaction, &message).await;
        if reply.code == 250 {
            chatmail_metrics::accepted(Source::Submission);
        }
        reply
    }

    /// [`Session::accept`] for submission: every refusal is counted where
    /// it is made.
    async fn accept_submission(&self, transaction: Transaction, message: &[u8]) -> Reply {
        let sender = transaction.mail_from.as_str();
        if let Err(error) = check_from(message, sender) {
            return self.refused(Reason::From, Reply::line(500, error.to_string()));
        }
        let recipients = transaction.addresses();
        let direction = chatmail_gate::Direction::Submission {
            sender,
            recipients: &recipients,
        };
        if let Err(reason) = chatmail_gate::check(message, direction) {
            if self.log() {
                tracing::info!(%reason, "refused unencrypted message");
            }
            return self.refusal(&Refusal::unencrypted());
        }
        let body = Bytes::from(clean_headers(message));
        let over_quota = match self.store_local(&transaction, body.clone()).await {
            Ok(over_quota) => over_quota,
            Err(reply) => return reply,
        };
        if let Err(reply) = self.queue_remote(&transaction, body.clone()).await {
            return reply;
        }
        // After both hand-offs, so that a retried 4xx never bounces twice.
        self.bounce_over_quota(&transaction, &over_quota, &body)
            .await;
        Reply::from(Status::Ok)
    }

    /// Stores the message for the local recipients, if any; durable on
    /// `Ok`, which names the recipients that got no copy for quota.
    ///
    /// The store checks each recipient's quota again (the `RCPT` check
    /// knew no size without `SIZE=`): a recipient the message does not fit
    /// gets no copy. The message is refused with `552 5.2.2` only when no
    /// copy at all could be stored and there is no remote recipient;
    /// otherwise the others get it and the reply is `250`.
    async fn store_local(
        &self,
        transaction: &Transaction,
        body: Bytes,
    ) -> Result<Vec<AccountId>, Reply> {
        let accounts = transaction.accounts();
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let size = body.len();
        let new = NewMessage {
            body,
            flags: Vec::new(),
            internal_date: unix_now(),
        };
        let store = self.shared.ctx.accounts.store();
        match store.deliver_report(&accounts, new).await {
            Ok(report) => {
                self.notify(&report.delivered);
                if self.log() {
                    let from = &transaction.mail_from;
                    let (recipients, over_quota) =
                        (report.delivered.len(), report.over_quota.len());
                    tracing::info!(%from, recipients, over_quota, size, "message stored");
                }
                Ok(report.over_quota)
            }
            Err(StoreError::QuotaExceeded) if !transaction.has_remote() => {
                Err(self.refusal(&Refusal::quota_exceeded()))
            }
            // No local copy at all, but the remote recipients get theirs.
            Err(StoreError::QuotaExceeded) => Ok(accounts),
            Err(error) => {
                if self.log() {
                    tracing::warn!(%error, "delivery failed");
                }
                Err(self.store_failure(&error))
            }
        }
    }

    /// Stores a bounce (status 5.2.2, RFC 3463 §3.3) in the sender's INBOX
    /// for the local recipients in `over_quota`, who got no copy of
    /// `original` while others did. Best effort: a failure is logged, the
    /// message itself is already accepted.
    async fn bounce_over_quota(
        &self,
        transaction: &Transaction,
        over_quota: &[AccountId],
        original: &[u8],
    ) {
        let Some(sender) = self.login.as_ref().filter(|_| !over_quota.is_empty()) else {
            return;
        };
        let quota = Refusal::quota_exceeded();
        let diagnostic = quota.to_string();
        let failures: Vec<Failure> = transaction
            .local()
            .filter(|(account, _)| over_quota.contains(account))
            .map(|(_, address)| Failure::new(address, quota.enhanced, &diagnostic))
            .collect();
        let domain = &self.shared.ctx.settings.domain;
        let bounce = dsn::build(domain, &sender.address, &failures, original, None);
        let new = NewMessage {
            body: Bytes::from(bounce),
            flags: Vec::new(),
            internal_date: unix_now(),
        };
        let store = self.shared.ctx.accounts.store();
        match store.deliver(&[sender.id], new).await {
            Ok(_) => {
                chatmail_metrics::bounce();
                if let Some(push) = &self.shared.ctx.push {
                    push.notify(&[sender.id]);
                }
                if self.log() {
                    tracing::info!(recipients = failures.len(), "quota bounce stored");
                }
            }
            Err(error) => {
                if self.log() {
                    tracing::warn!(%error, "storing the quota bounce failed");
                }
            }
        }
    }

    /// Push notifications for the stored copies, except the sender's own:
    /// a self-sent message wakes no device (docs/specifications.md §4).
    fn notify(&self, delivered: &[Delivered]) {
        let Some(push) = &self.shared.ctx.push else {
            return;
        };
        let sender = self.login.as_ref().map(|login| login.id);
        let accounts: Vec<AccountId> = delivered
            .iter()
            .map(|d| d.account)
            .filter(|&account| Some(account) != sender)
            .collect();
        push.notify(&accounts);
    }

    /// Hands the message to the outbound queue for the remote recipients,
    /// if any; durable on `Ok`.
    async fn queue_remote(&self, transaction: &Transaction, body: Bytes) -> Result<(), Reply> {
        let remote = transaction.remote();
        let Some(queue) = self
            .shared
            .ctx
            .queue
            .as_ref()
            .filter(|_| !remote.is_empty())
        else {
            return Ok(());
        };
        match queue.submit(&transaction.mail_from, &remote, body).await {
            Ok(()) => {
                if self.log() {
                    tracing::info!(recipients = remote.len(), "message queued");
                }
                Ok(())
            }
            Err(error) => {
                if self.log() {
                    tracing::warn!(%error, "queueing failed");
                }
                let refusal = match &error {
                    chatmail_queue::QueueError::Store(error) => Refusal::of_store(error),
                    _ => Refusal::temporary(),
                };
                Err(self.refusal(&refusal))
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
