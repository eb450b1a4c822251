//! One submission session: the command loop and the connection state.
//!
//! Flow: greeting → `EHLO` → (`STARTTLS` → new session over TLS → `EHLO`)
//! → `AUTH` → { `MAIL` → `RCPT`+ → `DATA` }* → `QUIT`.
//!
//! Connection state (hello, TLS, login) lives in [`Session`]; transaction
//! state (sender, recipients) in [`Transaction`], dropped by `RSET`,
//! `EHLO`, and after every `DATA`. Nothing is stored before the end of
//! `DATA`, and `250` is sent only once the store has made it durable.
//!
//! | state            | allowed                                          |
//! |------------------|--------------------------------------------------|
//! | any              | EHLO HELO NOOP RSET HELP VRFY QUIT               |
//! | plain, after EHLO| STARTTLS (AUTH and MAIL refused with 530)        |
//! | TLS, after EHLO  | AUTH                                             |
//! | authenticated    | MAIL, then RCPT, then DATA                       |
//!
//! On the MX (port 25, [`Session::for_mx`]) AUTH is never offered nor
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
use crate::reply::Reply;
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

/// A mail transaction in progress.
pub(crate) struct Transaction {
    /// Envelope sender (equal to the login on submission; on the MX any
    /// address, empty for the null sender).
    pub mail_from: String,
    /// Accepted local recipients' accounts, without duplicates.
    pub accounts: Vec<AccountId>,
    /// All accepted recipients' addresses, for the encryption gate.
    pub addresses: Vec<String>,
    /// Accepted remote recipients, for the outbound queue (submission).
    pub remote: Vec<String>,
    /// `SIZE=` of `MAIL FROM` (RFC 1870 §6), for the quota check at `RCPT`.
    pub declared_size: Option<u64>,
}

impl Transaction {
    pub(crate) fn new(mail_from: String, declared_size: Option<u64>) -> Self {
        Self {
            mail_from,
            declared_size,
            accounts: Vec::new(),
            addresses: Vec::new(),
            remote: Vec::new(),
        }
    }
}

/// One SMTP session over any stream.
pub struct Session<S> {
    pub(crate) wire: Wire<S>,
    pub(crate) shared: Arc<Shared>,
    /// Whether the stream is TLS (implicit, or after STARTTLS).
    pub(crate) tls: bool,
    /// Port 25: mail from other relays, no AUTH, local recipients only.
    pub(crate) mx: bool,
    /// The client's address, for the failed-login throttle; `None` for
    /// in-memory sessions.
    pub(crate) peer: Option<IpAddr>,
    /// Whether to send the 220 greeting (not after STARTTLS).
    greet: bool,
    idle: Duration,
    /// Until AUTH (submission) or STARTTLS (MX): when the connection is
    /// closed, however it paces its bytes.
    deadline: Option<Instant>,
    /// The connection's place in its pool: busy while a command runs,
    /// protected after AUTH, evicted while it waits otherwise.
    pub(crate) slot: Option<Arc<Slot>>,
    shutdown: CancellationToken,
    /// The EHLO/HELO argument once given.
    hello: Option<String>,
    /// The authenticated account.
    pub(crate) login: Option<Account>,
    pub(crate) auth_failures: u32,
    pub(crate) transaction: Option<Transaction>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A new session; `tls` says whether the stream is already encrypted.
    pub fn new(stream: S, shared: Arc<Shared>, tls: bool) -> Self {
        Self {
            wire: Wire::new(stream),
            shared,
            tls,
            mx: false,
            peer: None,
            greet: true,
            idle: IDLE_TIMEOUT,
            deadline: None,
            slot: None,
            shutdown: CancellationToken::new(),
            hello: None,
            login: None,
            auth_failures: 0,
            transaction: None,
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
        Self {
            greet: false,
            ..Self::new(stream, shared, true)
        }
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
        self.mx = true;
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
        if self.greet {
            let text = format!("{} ESMTP madmail", self.host());
            self.wire.queue(&Reply::line(220, text));
        }
        loop {
            let flow = match self.next_line().await? {
                Line::Eof => Flow::Close,
                Line::TooLong => self.reply(500, "5.5.2 Line too long"),
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
                let text = format!("4.4.2 {} Timeout", self.host());
                self.wire.queue(&Reply::line(421, text));
                Ok(Line::Eof)
            }
            Wait::Evicted => {
                self.queue_evicted();
                Ok(Line::Eof)
            }
            Wait::Shutdown => {
                let text = format!("4.3.2 {} Service shutting down", self.host());
                self.wire.queue(&Reply::line(421, text));
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
        let text = format!(
            "4.7.0 {} Too many connections, closing an idle one",
            self.host()
        );
        self.wire.queue(&Reply::line(421, text));
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

    /// Queues a one-line reply and continues.
    pub(crate) fn reply(&mut self, code: u16, text: &'static str) -> Flow {
        self.send(Reply::line(code, text))
    }

    pub(crate) fn send(&mut self, reply: Reply) -> Flow {
        self.wire.queue(&reply);
        Flow::Continue
    }

    /// Where this session's messages come from, for the metrics.
    pub(crate) fn source(&self) -> Source {
        if self.mx {
            Source::Mx
        } else {
            Source::Submission
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
            Err(error) => return Ok(self.send(parse_error_reply(&error))),
        };
        Ok(match command {
            Command::Ehlo(host) => self.handle_ehlo(host),
            Command::Helo(host) => {
                self.hello = Some(host);
                self.transaction = None;
                self.send(Reply::line(250, self.host()))
            }
            Command::StartTls => self.handle_starttls(),
            Command::Auth { mechanism, initial } => {
                if let Some(refusal) = self.auth_refusal() {
                    self.send(refusal)
                } else {
                    self.handle_auth(mechanism, initial).await?
                }
            }
            Command::Mail(mail) if self.mx => self.handle_mx_mail(mail),
            Command::Mail(mail) => self.handle_mail(mail),
            Command::Rcpt(address) if self.mx => self.handle_mx_rcpt(&address).await,
            Command::Rcpt(address) => self.handle_rcpt(&address).await,
            Command::Data => self.handle_data().await?,
            Command::Rset => {
                self.transaction = None; // RFC 5321 §4.1.1.5
                self.reply(250, "2.0.0 OK")
            }
            Command::Noop => self.reply(250, "2.0.0 OK"),
            Command::Help => self.reply(214, "2.0.0 See RFC 5321 and RFC 4954"),
            // RFC 5321 §3.5.3: no address verification.
            Command::Vrfy => self.reply(252, "2.0.0 Cannot VRFY user, but will accept message"),
            Command::Quit => {
                self.reply(221, "2.0.0 Bye");
                Flow::Close
            }
        })
    }

    /// EHLO (RFC 5321 §4.1.1.1): resets any transaction, lists extensions.
    fn handle_ehlo(&mut self, host: String) -> Flow {
        self.hello = Some(host);
        self.transaction = None;
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
            if !self.mx {
                lines.push("AUTH PLAIN LOGIN".to_owned()); // RFC 4954; only over TLS
            }
        } else {
            lines.push("STARTTLS".to_owned()); // RFC 3207
        }
        self.send(Reply::multi(250, lines))
    }

    fn handle_starttls(&mut self) -> Flow {
        if self.tls {
            return self.reply(503, "5.5.1 TLS already active");
        }
        if self.hello.is_none() {
            return self.reply(503, "5.5.1 Send EHLO first");
        }
        self.reply(220, "2.0.0 Ready to start TLS");
        Flow::StartTls
    }

    /// `MAIL FROM` (RFC 5321 §4.1.1.2) and the submission sender rules.
    fn handle_mail(&mut self, mail: crate::command::MailFrom) -> Flow {
        if self.hello.is_none() {
            return self.reply(503, "5.5.1 Send EHLO first");
        }
        let Some(login) = &self.login else {
            return self.reply(530, "5.7.0 Authentication required"); // RFC 4954 §6
        };
        if self.transaction.is_some() {
            return self.reply(503, "5.5.1 Nested MAIL command");
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
            let text = format!("4.7.1: Too much mail from {}", login.address);
            let reply = self.refused(Reason::Rate, Reply::line(450, text));
            return self.send(reply);
        }
        self.transaction = Some(Transaction::new(login.address.clone(), mail.size));
        self.reply(250, "2.1.0 OK")
    }
}

/// The reply for a command line that did not parse.
fn parse_error_reply(error: &ParseError) -> Reply {
    match error {
        ParseError::Unknown => Reply::line(500, "5.5.1 Command unrecognized"),
        ParseError::Syntax => Reply::line(501, "5.5.4 Syntax error in parameters"),
        ParseError::Sender => Reply::line(501, "5.1.7 Bad sender address syntax"),
        ParseError::Recipient => Reply::line(501, "5.1.3 Bad recipient address syntax"),
        ParseError::Parameter => Reply::line(555, "5.5.4 Unsupported parameter"),
        ParseError::Mechanism => Reply::line(504, "5.5.4 Unrecognized authentication type"),
    }
}

impl<S> Session<S> {
    /// Failed-login bookkeeping shared by the mechanisms.
    pub(crate) fn too_many_auth_failures(&mut self) -> bool {
        self.auth_failures += 1;
        self.auth_failures >= MAX_AUTH_FAILURES
    }

    pub(crate) fn has_hello(&self) -> bool {
        self.hello.is_some()
    }
}
