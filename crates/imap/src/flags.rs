//! Flag and removal commands of the selected state: STORE / UID STORE,
//! EXPUNGE, UID EXPUNGE (RFC 4315 §2.1), CLOSE and UNSELECT (RFC 3691).
//!
//! Invariant: removals reach the client only through the view's sync, so
//! EXPUNGE numbering stays consistent with everything announced before.

use chatmail_store::FlagOp;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::response;
use crate::session::{Handled, Session, State};
use crate::status::Status;

/// Flag names as stored; `\Recent` is the server's alone (RFC 3501 §2.3.2).
pub fn flag_names(flags: &[Flag<'_>]) -> Vec<String> {
    flags
        .iter()
        .map(ToString::to_string)
        .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
        .collect()
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_store(
        &mut self,
        set: &SequenceSet,
        kind: StoreType,
        reply: StoreResponse,
        flags: &[Flag<'_>],
        by_uid: bool,
    ) -> Handled {
        let store = self.store().clone();
        let State::Selected { view, .. } = &mut self.state else {
            return Ok(Status::no_mailbox_selected().into());
        };
        if view.read_only {
            return Ok(Status::read_only().into());
        }
        let Ok(targets) = view.resolve(set, by_uid) else {
            return Ok(Status::invalid_sequence().into());
        };
        let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let changed = if uids.is_empty() {
            Vec::new()
        } else {
            store
                .set_flags(view.mailbox.id, &uids, op, &flag_names(flags))
                .await?
        };
        // RFC 3501 §6.4.6: the new flags, unless .SILENT.
        if reply == StoreResponse::Answer {
            for (uid, flags) in changed {
                let Some(seq) = view.seq_of(uid) else {
                    continue;
                };
                let out = &mut self.io.out;
                out.extend_from_slice(format!("* {seq} FETCH (").as_bytes());
                if by_uid {
                    // RFC 3501 §6.4.8: UID commands report the UID.
                    out.extend_from_slice(format!("UID {uid} ").as_bytes());
                }
                out.extend_from_slice(b"FLAGS ");
                response::flag_list(out, &flags);
                out.extend_from_slice(b")\r\n");
            }
        }
        Ok(Status::completed("STORE").into())
    }

    /// EXPUNGE (`set == None`) and UID EXPUNGE.
    pub(crate) async fn handle_expunge(&mut self, set: Option<&SequenceSet>) -> Handled {
        let store = self.store().clone();
        let State::Selected { view, .. } = &mut self.state else {
            return Ok(Status::no_mailbox_selected().into());
        };
        if view.read_only {
            return Ok(Status::read_only().into());
        }
        match set {
            None => {
                store.expunge(view.mailbox.id, None).await?;
            }
            Some(set) => {
                let Ok(targets) = view.resolve(set, true) else {
                    return Ok(Status::invalid_uid_set().into());
                };
                let uids: Vec<u32> = targets.iter().map(|t| t.1).collect();
                if !uids.is_empty() {
                    store.expunge(view.mailbox.id, Some(&uids)).await?;
                }
            }
        }
        // RFC 3501 §6.4.3: one untagged EXPUNGE per removed message.
        view.sync(&store, true, &mut self.io.out).await?;
        Ok(Status::completed("EXPUNGE").into())
    }

    /// CLOSE (`expunge == true`, RFC 3501 §6.4.2: silently removes
    /// `\Deleted` messages) and UNSELECT (RFC 3691: removes nothing).
    pub(crate) async fn handle_close(&mut self, expunge: bool) -> Handled {
        let store = self.store().clone();
        let State::Selected { account, view, .. } = &self.state else {
            return Ok(Status::no_mailbox_selected().into());
        };
        if expunge && !view.read_only {
            store.expunge(view.mailbox.id, None).await?;
        }
        self.state = State::Authenticated {
            account: account.clone(),
        };
        let command = if expunge { "CLOSE" } else { "UNSELECT" };
        Ok(Status::completed(command).into())
    }
}

/// A UID list as a compact uid-set (RFC 4315 §4), keeping the given order
/// so that source and destination sets of COPYUID pair up.
pub fn uid_set(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            end = uids[i + 1];
            i += 1;
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compresses_runs_in_uid_sets() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[4]), "4");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn drops_recent_from_stored_flags() {
        let flags = vec![Flag::Seen, Flag::Deleted];
        assert_eq!(flag_names(&flags), vec!["\\Seen", "\\Deleted"]);
    }
}
