//! The MX session on port 25 (docs/specifications.md §2 inbound rules, §3): mail from
//! other relays for local users, checked by `chatmail_inbound` exactly as
//! `POST /mxdeliv` is.
//!
//! Flow: greeting → `EHLO` → `STARTTLS` (required before `MAIL`) → `EHLO`
//! → { `MAIL` (any sender, `<>` included; federation policy) → `RCPT`+
//! (local, existing accounts with room under their quota) → `DATA` (the submission DATA reader)
//! → `Inbound::accept` }* → `QUIT`. No AUTH, no relaying.

use chatmail_inbound::Refusal;
use chatmail_metrics::Source;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::command::MailFrom;
use crate::reply::{Reply, Status};
use crate::session::{Flow, Recipient, Session, State, Transaction};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `MAIL FROM` on the MX (RFC 5321 §4.1.1.2).
    pub(crate) fn handle_mx_mail(&mut self, mail: MailFrom) -> Flow {
        if !self.has_hello() {
            return self.reply(Status::HelloFirst);
        }
        if !self.tls {
            // docs/specifications.md §3: STARTTLS required before MAIL (RFC 3207 §4).
            return self.reply(Status::TlsRequired);
        }
        if self.transaction().is_some() {
            return self.reply(Status::NestedMail);
        }
        let max = self.shared.ctx.settings.limits().max_message_size;
        if mail.size.is_some_and(|size| size > max) {
            return self.refuse(&Refusal::too_big()); // RFC 1870 §6
        }
        // RFC 5321 §4.5.5: the null sender `<>` is legal (bounces).
        let sender = Some(mail.address.as_str()).filter(|s| !s.is_empty());
        if let Err(refusal) = self.shared.ctx.inbound.check_sender(sender) {
            let reply = self.refusal(&refusal);
            return self.send(reply);
        }
        self.state = State::Mail(Transaction::new(mail.address, mail.size));
        self.reply(Status::SenderOk)
    }

    /// `RCPT TO` on the MX (RFC 5321 §4.1.1.3): local, existing accounts.
    pub(crate) async fn handle_mx_rcpt(&mut self, address: &str) -> Flow {
        let max = self.shared.ctx.settings.limits().max_recipients;
        let Some(transaction) = self.transaction() else {
            return self.reply(Status::NeedMail); // RFC 5321 §3.3
        };
        if transaction.len() >= max {
            // RFC 5321 §4.5.3.1.10
            return self.refuse(&Refusal::too_many_recipients());
        }
        let size = transaction.declared_size.unwrap_or(1);
        let inbound = &self.shared.ctx.inbound;
        let account = match inbound.check_recipient(address, self.peer).await {
            Ok(account) => account,
            Err(refusal) => {
                let reply = self.refusal(&refusal);
                return self.send(reply);
            }
        };
        // docs/specifications.md §5: a full mailbox fails this recipient only.
        if let Err(refusal) = inbound.check_room(account, size).await {
            let reply = self.refusal(&refusal);
            return self.send(reply);
        }
        if let Some(transaction) = self.transaction_mut() {
            let address = address.to_owned();
            transaction.add(Recipient::Local { account, address });
        }
        self.reply(Status::RecipientOk)
    }

    /// The end of DATA on the MX: the shared inbound checks, then the store.
    pub(crate) async fn accept_inbound(&self, transaction: Transaction, message: &[u8]) -> Reply {
        let envelope = chatmail_inbound::Envelope {
            sender: Some(transaction.mail_from.as_str()).filter(|s| !s.is_empty()),
            client: self.peer,
        };
        let inbound = &self.shared.ctx.inbound;
        match inbound
            .accept(envelope, &transaction.accounts(), message)
            .await
        {
            Ok(()) => {
                chatmail_metrics::accepted(Source::Mx);
                Reply::from(Status::Ok)
            }
            Err(refusal) => self.refusal(&refusal),
        }
    }
}
