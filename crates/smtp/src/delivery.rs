//! `RCPT TO` and `DATA`: recipient rules, the message checks of
//! CHATMAIL.md §2 (size, `From:`, encryption gate, header hygiene) and the
//! durable hand-off to the store.
//!
//! Order after the end of DATA: line endings → size → `From:` → gate →
//! hygiene → `Store::deliver` → `250`. Any failure leaves nothing stored.

use bytes::Bytes;
use chatmail_store::NewMessage;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::data::{Decoder, Defect};
use crate::message::{check_from, clean_headers};
use crate::reply::Reply;
use crate::session::{Flow, Session, Transaction};

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// `RCPT TO` (RFC 5321 §4.1.1.3): local, existing accounts only.
    pub(crate) async fn handle_rcpt(&mut self, address: &str) -> Flow {
        let max = self.shared.ctx.settings.limits().max_recipients;
        let Some(transaction) = &self.transaction else {
            return self.reply(503, "5.5.1 Need MAIL command"); // RFC 5321 §3.3
        };
        if transaction.addresses.len() >= max {
            return self.reply(452, "4.5.3 Too many recipients"); // RFC 5321 §4.5.3.1.10
        }
        let Some(local) = self.shared.ctx.accounts.local_address(address) else {
            return self.reply(
                451,
                "4.7.0 Federation not available yet: only local recipients",
            );
        };
        let account = match self.shared.ctx.accounts.store().account(&local).await {
            Ok(Some(account)) => account,
            Ok(None) => return self.reply(550, "5.1.1 User unknown"),
            Err(error) => {
                if self.log() {
                    tracing::warn!(%error, "recipient lookup failed");
                }
                return self.reply(451, "4.3.0 Temporary failure");
            }
        };
        if let Some(transaction) = &mut self.transaction
            && !transaction.accounts.contains(&account.id)
        {
            transaction.accounts.push(account.id);
            transaction.addresses.push(account.address);
        }
        self.reply(250, "2.1.5 OK")
    }

    /// `DATA` (RFC 5321 §4.1.1.4): reads the message, checks and stores it.
    pub(crate) async fn handle_data(&mut self) -> std::io::Result<Flow> {
        match &self.transaction {
            None => return Ok(self.reply(503, "5.5.1 Need MAIL command")),
            // RFC 2920 §3.1: no 354 without a valid recipient.
            Some(t) if t.accounts.is_empty() => {
                return Ok(self.reply(554, "5.5.1 No valid recipients"));
            }
            Some(_) => {}
        }
        self.reply(354, "Start mail input; end with <CRLF>.<CRLF>");
        let max = self.shared.ctx.settings.limits().max_message_size;
        let mut decoder = Decoder::new(usize::try_from(max).unwrap_or(usize::MAX));
        let idle = self.idle();
        if !Self::bounded(idle, self.wire.read_data(&mut decoder)).await? {
            return Ok(Flow::Close);
        }
        let Some(transaction) = self.transaction.take() else {
            return Ok(Flow::Continue);
        };
        let reply = match decoder.finish() {
            Ok(message) => self.accept(transaction, message).await,
            Err(Defect::BareLineEnding) => Reply::line(500, "5.5.2 Bare CR or LF not allowed"),
            Err(Defect::TooBig) => Reply::line(552, "5.3.4 Message exceeds maximum size"),
        };
        Ok(self.send(reply))
    }

    /// Runs the message checks and stores the message.
    async fn accept(&self, transaction: Transaction, message: Vec<u8>) -> Reply {
        let sender = transaction.mail_from.as_str();
        if let Err(error) = check_from(&message, sender) {
            return Reply::line(500, error.to_string());
        }
        let direction = chatmail_gate::Direction::Submission {
            sender,
            recipients: &transaction.addresses,
        };
        if let Err(reason) = chatmail_gate::check(&message, direction) {
            if self.log() {
                tracing::info!(%reason, "refused unencrypted message");
            }
            return Reply::from_full(chatmail_gate::REJECT_TEXT);
        }
        let body = Bytes::from(clean_headers(&message));
        let size = body.len();
        let new = NewMessage {
            body,
            flags: Vec::new(),
            internal_date: unix_now(),
        };
        let store = self.shared.ctx.accounts.store();
        match store.deliver(&transaction.accounts, new).await {
            Ok(_) => {
                if self.log() {
                    let recipients = transaction.accounts.len();
                    tracing::info!(from = %sender, recipients, size, "message stored");
                }
                Reply::line(250, "2.0.0 OK")
            }
            Err(error) => {
                if self.log() {
                    tracing::warn!(%error, "delivery failed");
                }
                Reply::line(451, "4.3.0 Temporary failure")
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
