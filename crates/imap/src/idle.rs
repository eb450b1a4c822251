//! IDLE (RFC 2177): push mailbox changes the moment the store reports them.
//!
//! Flow: subscribe to the account's change events *before* sending
//! `+ idling` (so nothing stored after the continuation can be missed),
//! catch up once, then wait for whichever comes first: a line from the
//! client (`DONE` ends the command), a store change (re-read the mailbox and
//! send `EXPUNGE`/`EXISTS` at once), the keepalive timer, or shutdown. No
//! polling: the store's watch channel is the only wake-up source.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::framing::FrameError;
use crate::session::{Done, Flow, Handled, HandlerError, Session, State};
use crate::status::Status;

/// Delta Chat gives up on an IDLE after 5 minutes of silence
/// (docs/specifications.md §4); a keepalive well inside that keeps it connected.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) async fn handle_idle(&mut self) -> Handled {
        let Some(account) = self.state.account().cloned() else {
            return Ok(Status::not_authenticated().into());
        };
        let store = self.store().clone();
        let mut changes = store.subscribe(account.id);
        changes.borrow_and_update();
        self.io.line("+ idling");
        self.sync_selected().await?;
        self.io.flush().await?;
        let mut watching = true;
        let shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                line = self.io.framer.read_line(&mut self.io.stream, crate::framing::MAX_LINE, None) => {
                    let line = match line {
                        Ok(line) => line,
                        Err(FrameError::Io(e)) => return Err(e.into()),
                        Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, e.to_string()).into()),
                    };
                    // RFC 2177 §3: anything but DONE is a protocol error.
                    return Ok(if line.trim_ascii().eq_ignore_ascii_case(b"DONE") {
                        Status::idle_terminated().into()
                    } else {
                        Status::expected_done().into()
                    });
                }
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    self.sync_selected().await?;
                    self.io.flush().await?;
                }
                _ = tokio::time::sleep(self.keepalive) => {
                    self.io.status(None, &Status::still_here());
                    self.io.flush().await?;
                }
                _ = shutdown.cancelled() => {
                    let reason = self.ending_reason();
                    self.io.status(None, &Status::bye(reason));
                    return Ok(Done { status: Status::interrupted(reason), flow: Flow::Logout });
                }
            }
        }
    }

    /// Reports all changes of the selected mailbox now (IDLE allows
    /// EXPUNGE at any time, RFC 2177 §3).
    async fn sync_selected(&mut self) -> Result<(), HandlerError> {
        let store = self.store().clone();
        if let State::Selected { view, changes, .. } = &mut self.state {
            changes.borrow_and_update();
            view.sync(&store, true, &mut self.io.out).await?;
        }
        Ok(())
    }
}
