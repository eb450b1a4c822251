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

use crate::flags::{flag_names, uid_set};
use crate::mailboxes::mailbox_name;
use crate::session::{Done, Handled, Session, State};

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
            return Ok(Done::bad("No mailbox selected"));
        };
        if is_move && view.read_only {
            return Ok(Done::no("[READ-ONLY] Mailbox is read-only"));
        }
        let Ok(targets) = view.resolve(set, by_uid) else {
            return Ok(Done::bad("Invalid message sequence number"));
        };
        // RFC 3501 §6.4.7: a missing target gets TRYCREATE.
        let Some(target) = store.mailbox(account.id, &mailbox_name(mailbox)).await? else {
            return Ok(Done::no("[TRYCREATE] No such mailbox"));
        };
        let verb = if is_move { "MOVE" } else { "COPY" };
        let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        if uids.is_empty() {
            return Ok(Done::ok(format!("{verb} completed")));
        }
        let pairs = if is_move {
            store
                .move_messages(view.mailbox.id, &uids, target.id)
                .await?
        } else {
            store.copy(view.mailbox.id, &uids, target.id).await?
        };
        let (sources, copies): (Vec<u32>, Vec<u32>) = pairs.into_iter().unzip();
        let code = format!(
            "[COPYUID {} {} {}]",
            target.uidvalidity,
            uid_set(&sources),
            uid_set(&copies)
        );
        if sources.is_empty() {
            return Ok(Done::ok(format!("{verb} completed")));
        }
        if !is_move {
            return Ok(Done::ok(format!("{code} COPY completed")));
        }
        // RFC 6851 §4.3: COPYUID in an untagged OK, then the EXPUNGEs.
        self.io.line(&format!("* OK {code} Moved"));
        view.sync(&store, true, &mut self.io.out).await?;
        Ok(Done::ok("MOVE completed"))
    }

    pub(crate) async fn handle_append(
        &mut self,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<&DateTime>,
        message: LiteralOrLiteral8<'_>,
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Done::bad("Not authenticated"));
        };
        // The decoded command owns the literal: take it, no copy.
        let data: Vec<u8> = match message {
            LiteralOrLiteral8::Literal(literal) => literal.into_inner().into_owned(),
            LiteralOrLiteral8::Literal8(literal) => literal.data.into_owned(),
        };
        if data.len() as u64 > self.ctx.settings.limits().max_message_size {
            return Ok(Done::no("[TOOBIG] Message too big"));
        }
        let store = self.store().clone();
        // RFC 3501 §6.3.11: a missing target gets TRYCREATE.
        let Some(target) = store.mailbox(account.id, &mailbox_name(mailbox)).await? else {
            return Ok(Done::no("[TRYCREATE] No such mailbox"));
        };
        let recipients = [account.address.clone()];
        let direction = Direction::Submission {
            sender: &account.address,
            recipients: &recipients,
        };
        if let Err(reason) = chatmail_gate::check(&data, direction) {
            tracing::debug!(reason = %reason, "APPEND refused by the encryption gate");
            return Ok(Done::no(
                "[CANNOT] Encryption Needed: Invalid Unencrypted Mail",
            ));
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
        Ok(Done::ok(format!(
            "[APPENDUID {} {uid}] APPEND completed",
            target.uidvalidity
        )))
    }
}
