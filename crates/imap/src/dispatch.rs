//! Command routing: which handler runs a command, and in which states
//! (the table in the crate documentation, RFC 3501 §3).

use imap_codec::imap_types::command::CommandBody;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::session::{Done, Handled, Session, State};
use crate::status::Status;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Routes a command to its handler, enforcing the state table in the
    /// crate documentation.
    pub(crate) async fn dispatch(&mut self, body: CommandBody<'static>) -> Handled {
        use CommandBody as C;
        let authenticated = self.state.account().is_some();
        let selected = matches!(self.state, State::Selected { .. });
        match body {
            C::Capability => Ok(self.handle_capability()),
            C::Noop | C::Check => Ok(Status::completed("NOOP").into()),
            C::Logout => Ok(self.handle_logout()),
            C::Id { .. } => Ok(self.handle_id()),
            C::StartTLS if !authenticated => Ok(self.handle_starttls()),
            C::Login { username, password } if !authenticated => {
                self.handle_login(username.as_ref(), password.declassify().as_ref())
                    .await
            }
            C::Authenticate {
                mechanism,
                initial_response,
            } if !authenticated => {
                self.handle_authenticate(
                    &mechanism,
                    initial_response.as_ref().map(|r| r.declassify().as_ref()),
                )
                .await
            }
            body if !authenticated => Ok(wrong_state(body.name())),
            C::Select { mailbox, .. } => self.handle_select(&mailbox, false).await,
            C::Examine { mailbox, .. } => self.handle_select(&mailbox, true).await,
            C::Create { mailbox } => self.handle_create(&mailbox).await,
            C::Delete { mailbox } => self.handle_delete(&mailbox).await,
            C::Subscribe { .. } => Ok(Status::completed("SUBSCRIBE").into()),
            C::Unsubscribe { .. } => Ok(Status::completed("UNSUBSCRIBE").into()),
            C::List {
                reference,
                mailbox_wildcard,
            } => {
                self.handle_list(&reference, &mailbox_wildcard, "LIST")
                    .await
            }
            C::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                self.handle_list(&reference, &mailbox_wildcard, "LSUB")
                    .await
            }
            C::Status {
                mailbox,
                item_names,
            } => self.handle_status(&mailbox, &item_names).await,
            C::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                self.handle_append(&mailbox, &flags, date.as_ref(), message)
                    .await
            }
            C::Enable { .. } => Ok(self.handle_enable()),
            C::Idle => self.handle_idle().await,
            C::Compress { .. } => Ok(self.handle_compress()),
            C::GetQuota { root } => self.handle_getquota(root.as_ref()).await,
            C::GetQuotaRoot { mailbox } => self.handle_getquotaroot(&mailbox).await,
            C::GetMetadata {
                mailbox, entries, ..
            } => self.handle_getmetadata(&mailbox, entries.as_ref()).await,
            C::SetMetadata {
                mailbox,
                entry_values,
            } => {
                self.handle_setmetadata(&mailbox, entry_values.as_ref())
                    .await
            }
            body if !selected => Ok(wrong_state(body.name())),
            C::Close => self.handle_close(true).await,
            C::Unselect => self.handle_close(false).await,
            C::Expunge => self.handle_expunge(None).await,
            C::ExpungeUid { sequence_set } => self.handle_expunge(Some(&sequence_set)).await,
            C::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => {
                self.handle_fetch(&sequence_set, macro_or_item_names, uid)
                    .await
            }
            C::Search {
                charset,
                criteria,
                uid,
            } => {
                self.handle_search(charset.as_ref(), criteria.as_ref(), uid)
                    .await
            }
            C::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                self.handle_store(&sequence_set, kind, response, &flags, uid)
                    .await
            }
            C::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.handle_copy(&sequence_set, &mailbox, uid, false).await,
            C::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.handle_copy(&sequence_set, &mailbox, uid, true).await,
            body => Ok(Status::unsupported_command(body.name()).into()),
        }
    }
}

fn wrong_state(name: &'static str) -> Done {
    Status::wrong_state(name).into()
}
