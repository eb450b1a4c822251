//! Commands that add messages to a mailbox: COPY / UID COPY, MOVE / UID
//! MOVE (RFC 6851) and APPEND (RFC 3501 §6.3.11), with UIDPLUS response
//! codes (RFC 4315 §3).
//!
//! Invariant: APPEND stores nothing the encryption gate refuses
//! (docs/specifications.md §2); the store makes the message durable before the OK.

use std::time::{SystemTime, UNIX_EPOCH};

use chatmail_gate::Direction;
use chatmail_store::NewMessage;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::flags::flag_names;
use crate::mailboxes::mailbox_name;
use crate::session::{Handled, Session, State};
use crate::status::Status;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_copy(
        &mut self,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        by_uid: bool,
        is_move: bool,
    ) -> Handled {
        let store = self.store().clone();
        let State::Selected { account, view, .. } = &mut self.state else {
            return Ok(Status::no_mailbox_selected().into());
        };
        if is_move && view.read_only {
            return Ok(Status::read_only().into());
        }
        let Ok(targets) = view.resolve(set, by_uid) else {
            return Ok(Status::invalid_sequence().into());
        };
        // RFC 3501 §6.4.7: a missing target gets TRYCREATE.
        let Some(target) = store.mailbox(account.id, &mailbox_name(mailbox)).await? else {
            return Ok(Status::try_create().into());
        };
        let verb = if is_move { "MOVE" } else { "COPY" };
        let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        if uids.is_empty() {
            return Ok(Status::completed(verb).into());
        }
        let pairs = if is_move {
            store
                .move_messages(view.mailbox.id, &uids, target.id)
                .await?
        } else {
            store.copy(view.mailbox.id, &uids, target.id).await?
        };
        let (sources, copies): (Vec<u32>, Vec<u32>) = pairs.into_iter().unzip();
        if sources.is_empty() {
            return Ok(Status::completed(verb).into());
        }
        if !is_move {
            return Ok(Status::copied(target.uidvalidity, sources, copies).into());
        }
        // RFC 6851 §4.3: COPYUID in an untagged OK, then the EXPUNGEs.
        let moved = Status::moved(target.uidvalidity, sources, copies);
        self.io.status(None, &moved);
        view.sync(&store, true, &mut self.io.out).await?;
        Ok(Status::completed("MOVE").into())
    }

    pub(crate) async fn handle_append(
        &mut self,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<&DateTime>,
        message: LiteralOrLiteral8<'_>,
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        // The decoded command owns the literal: take it, no copy.
        let data: Vec<u8> = match message {
            LiteralOrLiteral8::Literal(literal) => literal.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.into_owned(),
        };
        if data.len() as u64 > self.ctx.settings.limits().max_message_size {
            return Ok(Status::message_too_big().into());
        }
        let store = self.store().clone();
        // RFC 3501 §6.3.11: a missing target gets TRYCREATE.
        let Some(target) = store.mailbox(account.id, &mailbox_name(mailbox)).await? else {
            return Ok(Status::try_create().into());
        };
        let recipients = [account.address.clone()];
        let direction = Direction::Submission {
            sender: &account.address,
            recipients: &recipients,
        };
        if let Err(reason) = chatmail_gate::check(&data, direction) {
            tracing::debug!(reason = %reason, "APPEND refused by the encryption gate");
            return Ok(Status::unencrypted().into());
        }
        let internal_date = match date {
            Some(date) => date.as_ref().timestamp(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        let new = NewMessage {
            body: bytes::Bytes::from(data),
            flags: flag_names(flags),
            internal_date,
        };
        let uid = store.append(target.id, new).await?;
        // RFC 4315 §3: APPENDUID <uidvalidity> <uid>.
        Ok(Status::appended(target.uidvalidity, uid).into())
    }
}
