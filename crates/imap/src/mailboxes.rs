//! Mailbox commands: SELECT/EXAMINE, CREATE, DELETE, LIST/LSUB, STATUS
//! (RFC 3501 §6.3). The hierarchy delimiter is `/`; every mailbox counts as
//! subscribed; special-use attributes come from the store (RFC 6154).

use chatmail_store::StoreError;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::status::StatusDataItemName;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::response;
use crate::session::{Handled, Session, State};
use crate::status::Status;
use crate::view::View;

/// Flags the server knows; `\*` allows keywords (RFC 3501 §7.1).
pub const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";
/// Longest mailbox name accepted by CREATE.
const MAX_NAME: usize = 255;
/// Longest LIST pattern matched (bounds the matcher's work).
const MAX_PATTERN: usize = 1024;

/// The mailbox name as stored; INBOX is always upper case (RFC 3501 §5.1).
pub fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".to_owned(),
        Mailbox::Other(other) => String::from_utf8_lossy(other.inner().as_ref()).into_owned(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_select(
        &mut self,
        mailbox: &Mailbox<'_>,
        read_only: bool,
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        // RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected.
        self.state = State::Authenticated {
            account: account.clone(),
        };
        let store = self.store().clone();
        let Some(info) = store.mailbox(account.id, &mailbox_name(mailbox)).await? else {
            return Ok(Status::no_such_mailbox().into());
        };
        // Subscribe before reading, so no later change goes unnoticed.
        let mut changes = store.subscribe(account.id);
        changes.borrow_and_update();
        let messages = store.messages(info.id, 0).await?;
        let first_unseen = messages
            .iter()
            .position(|m| !m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")));
        let view = View::new(info, read_only, messages.iter().map(|m| m.uid).collect());
        let io = &mut self.io;
        // RFC 3501 §6.3.1: required untagged responses.
        io.line(&format!("* FLAGS ({SYSTEM_FLAGS})"));
        io.line(&format!("* {} EXISTS", view.exists()));
        io.line("* 0 RECENT");
        if let Some(index) = first_unseen {
            io.status(None, &Status::first_unseen(index + 1));
        }
        io.status(None, &Status::uid_validity(view.mailbox.uidvalidity));
        io.status(None, &Status::uid_next(view.uidnext()));
        let flags = if read_only {
            Status::no_permanent_flags()
        } else {
            Status::permanent_flags(SYSTEM_FLAGS)
        };
        io.status(None, &flags);
        self.state = State::Selected {
            account,
            view,
            changes,
        };
        Ok(Status::selected(read_only).into())
    }

    pub(crate) async fn handle_create(&mut self, mailbox: &Mailbox<'_>) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        let name = mailbox_name(mailbox);
        // RFC 3501 §6.3.3: a trailing delimiter only declares the intent.
        let name = name.trim_end_matches('/');
        if name == "INBOX" {
            return Ok(Status::inbox_exists().into());
        }
        if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
            return Ok(Status::invalid_mailbox_name().into());
        }
        match self.store().create_mailbox(account.id, name).await {
            Ok(_) => Ok(Status::completed("CREATE").into()),
            Err(StoreError::MailboxExists) => Ok(Status::mailbox_exists().into()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn handle_delete(&mut self, mailbox: &Mailbox<'_>) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        let name = mailbox_name(mailbox);
        // RFC 3501 §6.3.4: deleting INBOX is an error.
        if name == "INBOX" {
            return Ok(Status::inbox_undeletable().into());
        }
        match self.store().delete_mailbox(account.id, &name).await {
            Ok(()) => Ok(Status::completed("DELETE").into()),
            Err(StoreError::NoMailbox) => Ok(Status::no_such_mailbox().into()),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn handle_list(
        &mut self,
        reference: &Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        verb: &'static str,
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        let pattern: &[u8] = match pattern {
            ListMailbox::Token(token) => token.as_ref(),
            ListMailbox::String(string) => string.as_ref(),
        };
        let reference = match reference {
            Mailbox::Other(other) => other.inner().as_ref().to_vec(),
            Mailbox::Inbox => b"INBOX".to_vec(),
        };
        if pattern.is_empty() {
            // RFC 3501 §6.3.8: an empty pattern asks for the delimiter.
            if verb == "LIST" {
                self.io.line("* LIST (\\Noselect) \"/\" \"\"");
            }
            return Ok(Status::completed(verb).into());
        }
        let full = [reference.as_slice(), pattern].concat();
        for info in self.store().mailboxes(account.id).await? {
            if !matches_pattern(&full, info.name.as_bytes()) {
                continue;
            }
            let mut attributes = String::from("\\HasNoChildren");
            if let Some(special) = &info.special_use {
                attributes.push(' ');
                attributes.push_str(special);
            }
            let mut line = format!("* {verb} ({attributes}) \"/\" ").into_bytes();
            response::string(&mut line, info.name.as_bytes());
            self.io.out.extend_from_slice(&line);
            self.io.out.extend_from_slice(b"\r\n");
        }
        Ok(Status::completed(verb).into())
    }

    pub(crate) async fn handle_status(
        &mut self,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
    ) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        let store = self.store().clone();
        let Some(info) = store.mailbox(account.id, &mailbox_name(mailbox)).await? else {
            return Ok(Status::no_such_mailbox().into());
        };
        let messages = store.messages(info.id, 0).await?;
        let has = |m: &chatmail_store::MessageMeta, flag: &str| {
            m.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
        };
        let mut values = Vec::new();
        for item in items {
            let value = match item {
                StatusDataItemName::Messages => format!("MESSAGES {}", messages.len()),
                StatusDataItemName::Recent => "RECENT 0".to_owned(),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", info.uidnext),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", info.uidvalidity),
                StatusDataItemName::Unseen => format!(
                    "UNSEEN {}",
                    messages.iter().filter(|m| !has(m, "\\Seen")).count()
                ),
                StatusDataItemName::Deleted => format!(
                    "DELETED {}",
                    messages.iter().filter(|m| has(m, "\\Deleted")).count()
                ),
                _ => return Ok(Status::unsupported_status_item().into()),
            };
            values.push(value);
        }
        let mut line = b"* STATUS ".to_vec();
        response::string(&mut line, info.name.as_bytes());
        line.extend_from_slice(format!(" ({})\r\n", values.join(" ")).as_bytes());
        self.io.out.extend_from_slice(&line);
        Ok(Status::completed("STATUS").into())
    }
}

/// LIST pattern matching (RFC 3501 §6.3.8): `*` matches anything, `%`
/// anything but the delimiter. INBOX matches case-insensitively.
pub fn matches_pattern(pattern: &[u8], name: &[u8]) -> bool {
    if pattern.len() > MAX_PATTERN {
        return false;
    }
    let fold = name.eq_ignore_ascii_case(b"INBOX");
    // row[j]: pattern[..i] matches name[..j].
    let mut row = vec![false; name.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; name.len() + 1];
        for j in 0..=name.len() {
            next[j] = match p {
                b'*' => row[j] || (j > 0 && next[j - 1]),
                b'%' => row[j] || (j > 0 && next[j - 1] && name[j - 1] != b'/'),
                _ => {
                    j > 0
                        && row[j - 1]
                        && (p == name[j - 1] || (fold && p.eq_ignore_ascii_case(&name[j - 1])))
                }
            };
        }
        row = next;
    }
    row[name.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_list_wildcards() {
        assert!(matches_pattern(b"*", b"INBOX"));
        assert!(matches_pattern(b"*", b"a/b"));
        assert!(!matches_pattern(b"%", b"a/b"));
        assert!(matches_pattern(b"a/%", b"a/b"));
        assert!(matches_pattern(b"inbox", b"INBOX"));
        assert!(!matches_pattern(b"sent", b"Sent"));
        assert!(matches_pattern(b"S*t", b"Sent"));
        assert!(!matches_pattern(b"Trash", b"Sent"));
    }
}
