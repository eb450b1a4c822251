//! One IMAP connection: the state machine and the command loop.
//!
//! Flow: greeting, then repeatedly read a command ([`crate::framing`]),
//! check that the current [`State`] allows it, run its handler, report
//! changes of the selected mailbox (untagged `EXPUNGE`/`EXISTS`), write the
//! tagged reply and flush. Handlers write untagged data into the output
//! buffer and return the tagged status, so mailbox updates always precede
//! the tagged reply (RFC 3501 §7).
//!
//! Before login the whole session has one deadline (`limits.login_deadline`
//! after the connection started): every read and write before the login
//! ends by then, however the client paces its bytes. After login a command
//! must arrive within 30 minutes. Every flush is bounded (by the login
//! deadline, then 5 min) and gives up shortly after shutdown: a client that
//! sends commands but never reads the answers loses its connection instead
//! of pinning the session.
//!
//! The session is generic over the stream, so tests drive it over
//! `tokio::io::duplex`. STARTTLS ends the session with [`Ending::StartTls`]
//! and the caller continues with a fresh session over TLS.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chatmail_store::{Account, Store, StoreError};
use imap_codec::imap_types::command::{Command, CommandBody};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Context;
use crate::compress::Layer;
use crate::framing::{Bounds, FrameError, Framer, Incoming, LiteralBudget};
use crate::status::{Closing, Status};
use crate::view::View;
use chatmail_limits::Slot;

/// RFC 3501 §5.4: at least 30 minutes once authenticated (for a whole
/// command, the wait for it included).
const AUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Output is written out once this much is buffered (large FETCHes).
const FLUSH_AT: usize = 256 * 1024;
/// How long one write may wait for a client that does not read, before
/// login and after it. A client that pipelines without reading cannot hold
/// the session forever.
pub(crate) const UNAUTHENTICATED_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const AUTHENTICATED_WRITE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long a pending write may still take once the server shuts down
/// (enough for a BYE to a reading client).
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(1);

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// How a session ended.
pub enum Ending<S> {
    /// The connection is done.
    Closed,
    /// The client asked for STARTTLS: the raw stream, to be upgraded.
    StartTls(S),
}

/// Connection state (RFC 3501 §3), carrying what each state needs.
pub(crate) enum State {
    NotAuthenticated,
    Authenticated {
        account: Account,
    },
    Selected {
        account: Account,
        view: View,
        /// Store change events; checked after every command.
        changes: watch::Receiver<u64>,
    },
}

impl State {
    pub(crate) fn account(&self) -> Option<&Account> {
        match self {
            State::NotAuthenticated => None,
            State::Authenticated { account } | State::Selected { account, .. } => Some(account),
        }
    }
}

/// What the session does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Logout,
    StartTls,
    /// RFC 4978: switch both directions to deflate after the tagged OK.
    Compress,
}

/// A handler's tagged status and the flow.
pub(crate) struct Done {
    pub status: Status,
    pub flow: Flow,
}

/// A status that lets the session go on.
impl From<Status> for Done {
    fn from(status: Status) -> Done {
        Done {
            status,
            flow: Flow::Continue,
        }
    }
}

/// Handler failures that are not protocol answers.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub(crate) type Handled = Result<Done, HandlerError>;

/// The byte stream with its input buffer and pending output.
pub(crate) struct Io<S> {
    /// The connection, compressed after COMPRESS DEFLATE.
    pub stream: Layer<S>,
    pub framer: Framer,
    /// Response bytes not yet written.
    pub out: Vec<u8>,
    /// Bound on one flush; raised at login.
    pub write_timeout: Duration,
    /// Before login: when the session ends unless it has logged in.
    pub login_deadline: Option<tokio::time::Instant>,
    /// Server shutdown: a blocked write gives up shortly after it.
    pub shutdown: CancellationToken,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    pub(crate) fn line(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Appends a status response: tagged with `tag`, untagged for `None`.
    pub(crate) fn status(&mut self, tag: Option<&str>, status: &Status) {
        status.encode(tag, &mut self.out);
    }

    /// Writes out all pending output. Fails with `TimedOut` when the client
    /// does not take it within the write timeout (or shortly after
    /// shutdown); the caller then ends the connection.
    pub(crate) async fn flush(&mut self) -> std::io::Result<()> {
        self.write_out(&[]).await
    }

    /// Appends `{n}` and writes it with the pending output, then `bytes`
    /// straight from the caller's buffer (a large FETCH section is never
    /// copied into the output buffer).
    pub(crate) async fn write_large_literal(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out
            .extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
        self.write_out(bytes).await
    }

    /// Writes the pending output, then `tail`, then flushes, within one
    /// bound.
    async fn write_out(&mut self, tail: &[u8]) -> std::io::Result<()> {
        let (stream, out) = (&mut self.stream, &mut self.out);
        let write = async {
            if !out.is_empty() {
                stream.write_all(out).await?;
                out.clear();
            }
            if !tail.is_empty() {
                stream.write_all(tail).await?;
            }
            stream.flush().await
        };
        let (shutdown, limit) = (self.shutdown.clone(), self.write_timeout);
        let mut until = tokio::time::Instant::now() + limit;
        if let Some(deadline) = self.login_deadline {
            until = until.min(deadline);
        }
        let stalled = async {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = async {
                    shutdown.cancelled().await;
                    tokio::time::sleep(SHUTDOWN_WRITE_GRACE).await;
                } => {}
            }
        };
        tokio::select! {
            biased;
            result = write => result,
            _ = stalled => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client does not read its responses",
            )),
        }
    }

    /// Writes out buffered output once it is large.
    pub(crate) async fn flush_if_large(&mut self) -> std::io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await
        } else {
            Ok(())
        }
    }
}

/// One IMAP session over a stream.
pub struct Session<S> {
    pub(crate) io: Io<S>,
    pub(crate) state: State,
    pub(crate) ctx: Arc<Context>,
    /// Whether the stream is encrypted; LOGIN is refused otherwise.
    pub(crate) tls: bool,
    /// The client's address, for the failed-login throttle; `None` for
    /// in-memory sessions.
    pub(crate) peer: Option<IpAddr>,
    /// Cancelled when the server shuts down, and after login also when the
    /// operator cuts the account's sessions.
    pub(crate) shutdown: CancellationToken,
    /// The session's entry among the account's live sessions (after login).
    pub(crate) registration: Option<chatmail_accounts::SessionGuard>,
    /// Whether to send the greeting (not after STARTTLS, RFC 3501 §6.2.1).
    greet: bool,
    /// Interval of `* OK Still here` during IDLE.
    pub(crate) keepalive: Duration,
    /// Bytes for large APPEND literals, from the process's body budget.
    pub(crate) literal_budget: LiteralBudget,
    /// The connection's slot in its pool: busy while a command runs,
    /// protected once logged in, evicted while waiting before a login.
    pub(crate) slot: Option<Arc<Slot>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// A session over `stream`; `tls` says whether it is already encrypted
    /// (implicit TLS, or in-memory tests).
    pub fn new(stream: S, ctx: Arc<Context>, tls: bool, shutdown: CancellationToken) -> Self {
        let literal_budget = LiteralBudget::new(ctx.spools.clone(), None);
        let io = Io {
            stream: Layer::new(stream),
            framer: Framer::default(),
            out: Vec::new(),
            write_timeout: UNAUTHENTICATED_WRITE_TIMEOUT,
            login_deadline: Some(tokio::time::Instant::now() + login_deadline(&ctx)),
            shutdown: shutdown.clone(),
        };
        Session {
            io,
            state: State::NotAuthenticated,
            ctx,
            tls,
            peer: None,
            shutdown,
            registration: None,
            greet: true,
            keepalive: crate::idle::KEEPALIVE,
            literal_budget,
            slot: None,
        }
    }

    /// The client's address: failed logins count against it, and a login
    /// from an address with too many failures is refused unchecked.
    pub fn with_peer(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer);
        self.literal_budget = LiteralBudget::new(self.ctx.spools.clone(), Some(peer));
        self
    }

    /// The end of the pre-login phase, if it should be earlier than
    /// `limits.login_deadline` from now (a connection that started before
    /// this session, e.g. ahead of STARTTLS).
    pub fn with_login_deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.io.login_deadline = Some(deadline);
        self
    }

    /// The connection's slot, for eviction while it waits without a login.
    pub fn with_slot(mut self, slot: Option<Arc<Slot>>) -> Self {
        self.slot = slot;
        self
    }

    /// A session continuing after a completed STARTTLS (no greeting).
    pub(crate) fn after_starttls(
        stream: S,
        ctx: Arc<Context>,
        shutdown: CancellationToken,
    ) -> Self {
        Session {
            greet: false,
            ..Session::new(stream, ctx, true, shutdown)
        }
    }

    pub(crate) fn store(&self) -> &Store {
        self.ctx.accounts.store()
    }

    /// Runs the command loop until LOGOUT, STARTTLS, EOF or an error.
    pub async fn run(mut self) -> Result<Ending<S>, SessionError> {
        if self.greet {
            let greeting = Status::greeting(self.capabilities());
            self.io.status(None, &greeting);
        }
        loop {
            self.io.flush().await?;
            let Some(incoming) = self.next_incoming().await? else {
                self.io.flush().await?;
                return Ok(Ending::Closed);
            };
            let _busy = self.slot.as_ref().map(|slot| slot.busy());
            // Evicted just before the command came: it is not run.
            if self.slot.as_ref().is_some_and(|slot| slot.is_evicted()) {
                self.io.status(None, &Status::bye(Closing::Evicted));
                self.io.flush().await?;
                return Ok(Ending::Closed);
            }
            let flow = match incoming {
                Incoming::Command(command) => self.handle(*command).await?,
                Incoming::Bad { tag } => {
                    self.io.status(tag.as_deref(), &Status::syntax_error());
                    Flow::Continue
                }
                Incoming::NeedsLogin { tag } => {
                    self.io.status(tag.as_deref(), &Status::log_in_first());
                    Flow::Continue
                }
                // RFC 7889 §4: oversize literal refused with TOOBIG.
                Incoming::TooBig { tag } => {
                    self.io.status(Some(&tag), &Status::literal_too_big());
                    Flow::Continue
                }
                // RFC 5530 §3: a temporary refusal.
                Incoming::Busy { tag } => {
                    self.io.status(Some(&tag), &Status::literals_busy());
                    Flow::Continue
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Logout => {
                    self.io.flush().await?;
                    return Ok(Ending::Closed);
                }
                Flow::StartTls => {
                    self.io.flush().await?;
                    // RFC 3501 §6.2.1: nothing sent before the handshake counts.
                    self.io.framer.clear();
                    return Ok(Ending::StartTls(self.io.stream.into_inner()));
                }
                Flow::Compress => {
                    // RFC 4978 §3: the tagged OK is the last uncompressed data.
                    self.io.flush().await?;
                    let early = self.io.framer.take_buffered();
                    if !self.io.stream.start_deflate(&early) {
                        return Ok(Ending::Closed);
                    }
                }
            }
        }
    }

    /// Reads the next unit, or `None` when the connection should end (after
    /// queueing a BYE where one is due).
    async fn next_incoming(&mut self) -> Result<Option<Incoming>, SessionError> {
        // Only an authenticated client may send a message-sized literal,
        // or any command beyond what logging in needs.
        let (bounds, deadline) = match (self.state.account(), self.io.login_deadline) {
            (None, Some(deadline)) => (Bounds::PRE_LOGIN, deadline),
            _ => {
                let max = self.ctx.settings.limits().max_message_size;
                let deadline = tokio::time::Instant::now() + AUTHENTICATED_TIMEOUT;
                (Bounds::authenticated(max), deadline)
            }
        };
        let shutdown = self.shutdown.clone();
        let evicted = chatmail_limits::slots::evicted(self.slot.clone());
        let result = tokio::select! {
            result = self.io.framer.read_command(
                &mut self.io.stream, &bounds, deadline, &self.literal_budget,
            ) => result,
            _ = shutdown.cancelled() => {
                self.io.status(None, &Status::bye(self.ending_reason()));
                return Ok(None);
            }
            () = evicted => {
                self.io.status(None, &Status::bye(Closing::Evicted));
                return Ok(None);
            }
        };
        match result {
            Ok(incoming) => Ok(Some(incoming)),
            Err(FrameError::Closed) => Ok(None),
            Err(FrameError::Timeout) if bounds.pre_login => self.bye(Closing::LoginTooSlow),
            // RFC 3501 §5.4: autologout timer.
            Err(FrameError::Timeout) => self.bye(Closing::Autologout),
            Err(FrameError::LineTooLong) => self.bye(Closing::LineTooLong),
            Err(FrameError::NonSyncLiteral) => self.bye(Closing::NonSyncLiteral),
            Err(FrameError::Io(e)) => Err(e.into()),
        }
    }

    /// Why a cancelled shutdown token ends the session: a server stop, or
    /// the operator cutting this account.
    pub(crate) fn ending_reason(&self) -> Closing {
        match &self.registration {
            Some(guard) if guard.disconnected() => Closing::AccountDisabled,
            _ => Closing::ShuttingDown,
        }
    }

    fn bye(&mut self, closing: Closing) -> Result<Option<Incoming>, SessionError> {
        tracing::debug!(reason = closing.text(), "closing connection");
        self.io.status(None, &Status::bye(closing));
        Ok(None)
    }

    /// Runs one command and writes its updates and tagged reply.
    async fn handle(&mut self, command: Command<'static>) -> Result<Flow, SessionError> {
        let tag = command.tag.as_ref().to_owned();
        let name = command.name();
        // RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE, SEARCH.
        let allow_expunge = !matches!(
            command.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
        );
        let done = match self.dispatch(command.body).await {
            Ok(done) => done,
            Err(HandlerError::Io(e)) => return Err(e.into()),
            // RFC 9208 §4.3: APPEND, COPY or MOVE beyond the quota.
            Err(HandlerError::Store(StoreError::QuotaExceeded)) => Status::over_quota().into(),
            Err(HandlerError::Store(e)) => {
                tracing::warn!(command = name, error = %e, "store failure");
                Status::temporary_failure().into()
            }
        };
        if done.flow == Flow::Continue
            && let Err(e) = self.report_changes(allow_expunge).await
        {
            tracing::warn!(error = %e, "mailbox update failed");
        }
        self.io.status(Some(&tag), &done.status);
        Ok(done.flow)
    }

    /// Sends `EXPUNGE`/`EXISTS` for changes made since the last report, if
    /// the store signalled any.
    pub(crate) async fn report_changes(&mut self, allow_expunge: bool) -> Result<(), StoreError> {
        let store = self.ctx.accounts.store().clone();
        let State::Selected { view, changes, .. } = &mut self.state else {
            return Ok(());
        };
        // A closed channel means no more events: re-read every time.
        if !changes.has_changed().unwrap_or(true) {
            return Ok(());
        }
        // Deferred expunges keep the event pending for the next command.
        if allow_expunge {
            changes.borrow_and_update();
        }
        view.sync(&store, allow_expunge, &mut self.io.out).await
    }
}

/// How long a connection may take to log in (`limits.login_deadline`).
fn login_deadline(ctx: &Context) -> Duration {
    Duration::from_secs(ctx.settings.limits().login_deadline)
}
