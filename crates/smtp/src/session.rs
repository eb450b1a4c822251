//! One submission session: the command loop and the connection state.
//!
//! Flow: greeting → `EHLO` → (`STARTTLS` → new session over TLS → `EHLO`)
//! → `AUTH` → { `MAIL` → `RCPT`+ → `DATA` }* → `QUIT`.
//!
//! Connection facts (TLS, role, login) live in [`Session`]; where the
//! session stands in the command order is its [`State`], and a mail
//! transaction (sender, recipients) lives in [`State::Mail`], dropped by
//! `RSET`, `EHLO`, and after every `DATA`. Nothing is stored before the
//! end of `DATA`, and `250` is sent only once the store has made it
//! durable. Every reply comes from a catalogue: [`Status`] for the
//! protocol's own, `chatmail_inbound::Refusal` for refused mail.
//!
//! | state            | allowed                                          |
//! |------------------|--------------------------------------------------|
//! | any              | EHLO HELO NOOP RSET HELP VRFY QUIT               |
//! | plain, after EHLO| STARTTLS (AUTH and MAIL refused with 530)        |
//! | TLS, after EHLO  | AUTH                                             |
//! | authenticated    | MAIL, then RCPT, then DATA                       |
//!
//! On the MX ([`Role::Mx`], port 25) AUTH is never offered nor
//! accepted, and MAIL needs TLS instead of a login (see `mx`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chatmail_limits::Slot;
use chatmail_metrics::{Reason, Source};
use chatmail_store::{Account, AccountId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::command::{Command, ParseError, parse_command};
use crate::reply::{Closing, Reply, Status, greeting};
use crate::wire::{Line, Wire};

/// How long a client may stay silent (RFC 5321 §4.5.3.2.7 suggests 5 min).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Failed AUTH attempts before the connection is closed.
const MAX_AUTH_FAILURES: u32 = 3;
/// Time the last replies get to leave before the connection is closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a session ended.
pub enum Ending<S> {
    /// QUIT, EOF, timeout or shutdown; the stream is closed.
    Closed,
    /// STARTTLS was accepted: run the handshake on this stream next.
    StartTls(S),
}

/// What the command loop does after a command.
pub(crate) enum Flow {
    Continue,
    Close,
    StartTls,
}

/// Which service a session is; the listener's `Mode` decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Ports 465 and 587: a login, then mail from the login's address.
    Submission,
    /// Port 25: mail from other relays for local users, no AUTH.
    Mx,
}

/// Where a session stands in the command order (RFC 5321 §4.1.4).
pub(crate) enum State {
    /// Before `EHLO` or `HELO`.
    Connected,
    /// After `EHLO` or `HELO`, outside a mail transaction.
    Ready,
    /// After `MAIL`, until the end of `DATA` or `RSET`.
    Mail(Transaction),
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recipient {
    /// An account of this relay: stored at the end of `DATA`.
    Local { account: AccountId, address: String },
    /// Another relay's address: handed to the outbound queue (submission).
    Remote(String),
}

impl Recipient {
    pub(crate) fn address(&self) -> &str {
        match self {
            Recipient::Local { address, .. } | Recipient::Remote(address) => address,
        }
    }
}

/// A mail transaction in progress.
pub(crate) struct Transaction {
    /// Envelope sender (equal to the login on submission; on the MX any
    /// address, empty for the null sender).
    pub mail_from: String,
    /// The accepted recipients in `RCPT` order, without duplicates.
    recipients: Vec<Recipient>,
    /// `SIZE=` of `MAIL FROM` (RFC 1870 §6), for the quota check at `RCPT`.
    pub declared_size: Option<u64>,
}

impl Transaction {
    pub(crate) fn new(mail_from: String, declared_size: Option<u64>) -> Self {
        Self {
            mail_from,
            declared_size,
            recipients: Vec::new(),
        }
    }

    /// Adds a recipient unless it is already there (the same account, or
    /// the same remote address in any case).
    pub(crate) fn add(&mut self, recipient: Recipient) {
        let known = self.recipients.iter().any(|r| match (r, &recipient) {
            (Recipient::Local { account: a, .. }, Recipient::Local { account: b, .. }) => a == b,
            (Recipient::Remote(a), Recipient::Remote(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        });
        if !known {
            self.recipients.push(recipient);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.recipients.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.recipients.is_empty()
    }

    /// The local recipients: their accounts and addresses.
    pub(crate) fn local(&self) -> impl Iterator<Item = (AccountId, &str)> {
        self.recipients.iter().filter_map(|r| match r {
            Recipient::Local { account, address } => Some((*account, address.as_str())),
            Recipient::Remote(_) => None,
        })
    }

    /// Whether any recipient is another relay's.
    pub(crate) fn has_remote(&self) -> bool {
        let remote = |r: &Recipient| matches!(r, Recipient::Remote(_));
        self.recipients.iter().any(remote)
    }

    pub(crate) fn accounts(&self) -> Vec<AccountId> {
        self.local().map(|(account, _)| account).collect()
    }

    /// The remote recipients' addresses, for the outbound queue.
    pub(crate) fn remote(&self) -> Vec<String> {
        let remote = self.recipients.iter().filter_map(|r| match r {
            Recipient::Remote(address) => Some(address.clone()),
            Recipient::Local { .. } => None,
        });
        remote.collect()
    }

    /// Every recipient's address, for the encryption gate.
    pub(crate) fn addresses(&self) -> Vec<String> {
        let addresses = self.recipients.iter().map(Recipient::address);
        addresses.map(str::to_owned).collect()
    }
}

/// One SMTP session over any stream.
pub struct Session<S> {
    pub(crate) wire: Wire<S>,
    pub(crate) shared: Arc<Shared>,
    /// Whether the stream is TLS (implicit, or after STARTTLS).
    pub(crate) tls: bool,
    pub(crate) role: Role,
    /// The client's address, for the failed-login throttle; `None` for
    /// in-memory sessions.
    pub(crate) peer: Option<IpAddr>,
    idle: Duration,
    /// Until AUTH (submission) or STARTTLS (MX): when the connection is
    /// closed, however it paces its bytes.
    deadline: Option<Instant>,
    /// The connection's place in its pool: busy while a command runs,
    /// protected after AUTH, evicted while it waits otherwise.
    pub(crate) slot: Option<Arc<Slot>>,
    shutdown: CancellationToken,
    pub(crate) state: State,
    /// The authenticated account (submission); it outlives transactions
    /// and `EHLO`.
    pub(crate) login: Option<Account>,
    pub(crate) auth_failures: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A new session, greeted; `tls` says whether the stream is already
    /// encrypted.
    pub fn new(stream: S, shared: Arc<Shared>, tls: bool) -> Self {
        let mut session = Self::quiet(stream, shared, tls);
        session.wire.queue(&greeting(&session.host()));
        session
    }

    /// A session that sends no greeting.
    fn quiet(stream: S, shared: Arc<Shared>, tls: bool) -> Self {
        Self {
            wire: Wire::new(stream),
            shared,
            tls,
            role: Role::Submission,
            peer: None,
            idle: IDLE_TIMEOUT,
            deadline: None,
            slot: None,
            shutdown: CancellationToken::new(),
            state: State::Connected,
            login: None,
            auth_failures: 0,
        }
    }

    /// The client's address: failed logins count against it, and a login
    /// from an address with too many failures is refused unchecked.
    pub fn with_peer(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// The session that follows a STARTTLS handshake: no greeting, and
    /// nothing known from before (RFC 3207 §4.2).
    pub fn after_starttls(stream: S, shared: Arc<Shared>) -> Self {
        Self::quiet(stream, shared, true)
    }

    /// The connection must authenticate (or, on the MX, finish STARTTLS)
    /// by `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The connection's slot, for eviction while it waits.
    pub(crate) fn with_slot(mut self, slot: Arc<Slot>) -> Self {
        self.slot = Some(slot);
        self
    }

    /// Authenticated: no more deadline, and never evicted.
    pub(crate) fn logged_in(&mut self) {
        self.deadline = None;
        if let Some(slot) = &self.slot {
            slot.protect();
        }
    }

    /// Makes this an MX session (port 25, docs/specifications.md §3).
    pub fn for_mx(mut self) -> Self {
        self.role = Role::Mx;
        self
    }

    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    #[cfg(test)]
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    pub(crate) fn log(&self) -> bool {
        !self.shared.ctx.settings.config.log.no_log
    }

    pub(crate) fn host(&self) -> String {
        self.shared.ctx.settings.domain.host()
    }

    /// Runs the command loop until the session ends.
    pub async fn run(mut self) -> std::io::Result<Ending<S>> {
        loop {
            let flow = match self.next_line().await? {
                Line::Eof => Flow::Close,
                Line::TooLong => self.reply(Status::LineTooLong),
                Line::Text(line) => {
                    let _busy = self.slot.as_ref().map(|slot| slot.busy());
                    // Evicted just before the command came: it is not run.
                    if self.slot.as_ref().is_some_and(|slot| slot.is_evicted()) {
                        self.queue_evicted();
                        Flow::Close
                    } else {
                        self.handle_line(&line).await?
                    }
                }
            };
            match flow {
                Flow::Continue => {}
                Flow::Close => {
                    // A client that stops reading must not hold the task.
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.wire.close()).await;
                    return Ok(Ending::Closed);
                }
                // RFC 3207 §5: unread pipelined input is dropped here.
                Flow::StartTls => {
                    let until = self.until();
                    let flush = tokio::time::timeout_at(until, self.wire.into_stream());
                    let stream = flush.await.map_err(|_| std::io::ErrorKind::TimedOut)??;
                    return Ok(Ending::StartTls(stream));
                }
            }
        }
    }

    /// Reads the next line; on idle timeout, the login deadline, eviction
    /// or shutdown queues a 421 and reports EOF.
    pub(crate) async fn next_line(&mut self) -> std::io::Result<Line> {
        enum Wait {
            Read(std::io::Result<Line>),
            Timeout,
            Evicted,
            Shutdown,
        }
        let until = self.until();
        let evicted = chatmail_limits::slots::evicted(self.slot.clone());
        let wait = tokio::select! {
            read = tokio::time::timeout_at(until, self.wire.read_line()) => {
                read.map_or(Wait::Timeout, Wait::Read)
            }
            () = self.shutdown.cancelled() => Wait::Shutdown,
            () = evicted => Wait::Evicted,
        };
        match wait {
            Wait::Read(line) => line,
            Wait::Timeout => {
                self.wire.queue(&Closing::Timeout.reply(&self.host()));
                Ok(Line::Eof)
            }
            Wait::Evicted => {
                self.queue_evicted();
                Ok(Line::Eof)
            }
            Wait::Shutdown => {
                self.wire.queue(&Closing::ShuttingDown.reply(&self.host()));
                Ok(Line::Eof)
            }
        }
    }

    /// When the client's next bytes are due at the latest: the idle
    /// timeout, or the login deadline if that comes first.
    pub(crate) fn until(&self) -> Instant {
        let idle = Instant::now() + self.idle;
        self.deadline.map_or(idle, |deadline| idle.min(deadline))
    }

    /// Queues the reply of a connection evicted to make room.
    pub(crate) fn queue_evicted(&mut self) {
        self.wire.queue(&Closing::Evicted.reply(&self.host()));
    }

    /// Waits for `future` at most the idle timeout.
    pub(crate) async fn bounded<T>(
        idle: Duration,
        future: impl Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        tokio::time::timeout(idle, future)
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)?
    }

    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    /// Queues a reply of the catalogue and continues.
    pub(crate) fn reply(&mut self, status: Status) -> Flow {
        self.send(Reply::from(status))
    }

    pub(crate) fn send(&mut self, reply: Reply) -> Flow {
        self.wire.queue(&reply);
        Flow::Continue
    }

    /// Where this session's messages come from, for the metrics.
    pub(crate) fn source(&self) -> Source {
        match self.role {
            Role::Mx => Source::Mx,
            Role::Submission => Source::Submission,
        }
    }

    /// Counts the refusal of a message or recipient and returns its reply.
    pub(crate) fn refused(&self, reason: Reason, reply: Reply) -> Reply {
        chatmail_metrics::refused(self.source(), reason);
        reply
    }

    /// Counts a refusal of the catalogue under its reason and returns its
    /// wire form.
    pub(crate) fn refusal(&self, refusal: &chatmail_inbound::Refusal) -> Reply {
        self.refused(refusal.reason, Reply::from(refusal))
    }

    /// Counts a refusal of the catalogue and sends it.
    pub(crate) fn refuse(&mut self, refusal: &chatmail_inbound::Refusal) -> Flow {
        let reply = self.refusal(refusal);
        self.send(reply)
    }

    async fn handle_line(&mut self, line: &[u8]) -> std::io::Result<Flow> {
        let command = match parse_command(line) {
            Ok(command) => command,
            Err(error) => return Ok(self.reply(parse_error_status(&error))),
        };
        Ok(match command {
            Command::Ehlo(_) => self.handle_ehlo(),
            Command::Helo(_) => {
                self.state = State::Ready;
                self.send(Reply::line(250, self.host()))
            }
            Command::StartTls => self.handle_starttls(),
            Command::Auth { mechanism, initial } => {
                if let Some(refusal) = self.auth_refusal() {
                    self.reply(refusal)
                } else {
                    self.handle_auth(mechanism, initial).await?
                }
            }
            Command::Mail(mail) => match self.role {
                Role::Mx => self.handle_mx_mail(mail),
                Role::Submission => self.handle_mail(mail),
            },
            Command::Rcpt(address) => match self.role {
                Role::Mx => self.handle_mx_rcpt(&address).await,
                Role::Submission => self.handle_rcpt(&address).await,
            },
            Command::Data => self.handle_data().await?,
            Command::Rset => {
                self.end_transaction(); // RFC 5321 §4.1.1.5
                self.reply(Status::Ok)
            }
            Command::Noop => self.reply(Status::Ok),
            Command::Help => self.reply(Status::Help),
            Command::Vrfy => self.reply(Status::CannotVerify),
            Command::Quit => {
                self.reply(Status::Bye);
                Flow::Close
            }
        })
    }

    /// EHLO (RFC 5321 §4.1.1.1): resets any transaction, lists extensions.
    fn handle_ehlo(&mut self) -> Flow {
        self.state = State::Ready;
        let max = self.shared.ctx.settings.limits().max_message_size;
        let mut lines = vec![
            self.host(),
            "PIPELINING".to_owned(),          // RFC 2920
            format!("SIZE {max}"),            // RFC 1870
            "8BITMIME".to_owned(),            // RFC 6152
            "SMTPUTF8".to_owned(),            // RFC 6531
            "ENHANCEDSTATUSCODES".to_owned(), // RFC 2034
        ];
        if self.tls {
            if self.role == Role::Submission {
                lines.push("AUTH PLAIN LOGIN".to_owned()); // RFC 4954; only over TLS
            }
        } else {
            lines.push("STARTTLS".to_owned()); // RFC 3207
        }
        self.send(Reply::multi(250, lines))
    }

    fn handle_starttls(&mut self) -> Flow {
        if self.tls {
            return self.reply(Status::TlsActive);
        }
        if !self.has_hello() {
            return self.reply(Status::HelloFirst);
        }
        self.reply(Status::TlsReady);
        Flow::StartTls
    }

    /// `MAIL FROM` (RFC 5321 §4.1.1.2) and the submission sender rules.
    fn handle_mail(&mut self, mail: crate::command::MailFrom) -> Flow {
        if !self.has_hello() {
            return self.reply(Status::HelloFirst);
        }
        let Some(login) = &self.login else {
            return self.reply(Status::AuthRequired);
        };
        if self.transaction().is_some() {
            return self.reply(Status::NestedMail);
        }
        if !mail.address.eq_ignore_ascii_case(&login.address) {
            return self.refuse(&chatmail_inbound::Refusal::not_owned());
        }
        let limits = self.shared.ctx.settings.limits();
        if mail.size.is_some_and(|size| size > limits.max_message_size) {
            return self.refuse(&chatmail_inbound::Refusal::too_big()); // RFC 1870 §6
        }
        let now = std::time::Instant::now();
        if !self.shared.send_rate.allow(login.address.clone(), now) {
            let refusal = chatmail_inbound::Refusal::send_rate(&login.address);
            return self.refuse(&refusal);
        }
        let transaction = Transaction::new(login.address.clone(), mail.size);
        self.state = State::Mail(transaction);
        self.reply(Status::SenderOk)
    }
}

/// The reply for a command line that did not parse.
fn parse_error_status(error: &ParseError) -> Status {
    match error {
        ParseError::Unknown => Status::Unrecognized,
        ParseError::Syntax => Status::SyntaxError,
        ParseError::Sender => Status::SenderSyntax,
        ParseError::Recipient => Status::RecipientSyntax,
        ParseError::Parameter => Status::UnsupportedParameter,
        ParseError::Mechanism => Status::UnknownMechanism,
    }
}

impl<S> Session<S> {
    /// Failed-login bookkeeping shared by the mechanisms.
    pub(crate) fn too_many_auth_failures(&mut self) -> bool {
        self.auth_failures += 1;
        self.auth_failures >= MAX_AUTH_FAILURES
    }

    pub(crate) fn has_hello(&self) -> bool {
        !matches!(self.state, State::Connected)
    }

    /// The mail transaction in progress, if any.
    pub(crate) fn transaction(&self) -> Option<&Transaction> {
        match &self.state {
            State::Mail(transaction) => Some(transaction),
            State::Connected | State::Ready => None,
        }
    }

    pub(crate) fn transaction_mut(&mut self) -> Option<&mut Transaction> {
        match &mut self.state {
            State::Mail(transaction) => Some(transaction),
            State::Connected | State::Ready => None,
        }
    }

    /// Ends the transaction, if any, keeping the hello.
    pub(crate) fn end_transaction(&mut self) -> Option<Transaction> {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::Mail(transaction) => Some(transaction),
            other => {
                self.state = other;
                None
            }
        }
    }
}
