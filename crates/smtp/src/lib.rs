//! chatmail-smtp: mail submission on ports 465 (implicit TLS) and 587
//! (STARTTLS), docs/specifications.md §2 (submission rules) and §3, and the MX on
//! port 25 for mail from other relays (§2 inbound rules).
//!
//! Flow: [`serve`] accepts connections, counts them (global and per-client
//! limits, `chatmail_limits::Slots`: a full pool evicts the connection that
//! has waited longest without logging in), and runs each in its own task:
//! TLS handshake (465) or plain
//! greeting then STARTTLS (587), then a `session::Session` that
//! authenticates the user, takes one or more messages, checks them
//! (sender = login, `From:` = sender, rate, size, encryption gate), cleans
//! their headers and hands them to the store (local recipients) and to the
//! outbound queue (remote recipients, when [`Context::queue`] is set).
//! On port 25 ([`Mode::Mx`]) the session takes no logins and hands every
//! message to [`chatmail_inbound::Inbound`], the checks `/mxdeliv` shares.
//!
//! Invariants:
//! - AUTH and MAIL are refused until the stream is TLS (on every port);
//! - a connection must authenticate (submission) or finish STARTTLS (MX)
//!   within `limits.login_deadline` of its start, however it paces its
//!   bytes; a TLS handshake within [`HANDSHAKE_TIMEOUT`];
//! - the MX never offers or accepts AUTH and never relays;
//! - `250` after DATA only once the store reports the message durable;
//! - input read before a STARTTLS handshake is discarded (RFC 3207 §5);
//! - every line, buffer and message is bounded; a failing or panicking
//!   connection ends only itself;
//! - logs carry no passwords or message content, and nothing at all about
//!   users or addresses in no-log mode;
//! - the client's IP address reaches the session only for the failed-login
//!   throttle (`chatmail_accounts`), which keeps a keyed hash of it;
//! - open and refused connections, logins and accepted and refused
//!   messages are counted in `chatmail_metrics`, labelled only by fixed
//!   values (source, reason).
//!
//! Modules: `command` (parser), `data` (DATA decoder), `message` (header
//! checks and hygiene), `sasl`, `wire` (bounded I/O), `session`,
//! `auth`, `delivery` and `mx` (command handlers).

mod auth;
mod command;
mod data;
mod delivery;
mod message;
mod mx;
mod reply;
mod sasl;
mod session;
mod wire;

/// The pure parsers, for the fuzz targets in `fuzz/` (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::command::{Command, ParseError, is_address, parse_command};
    pub use crate::data::{Decoder, Defect};
}

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chatmail_accounts::Accounts;
use chatmail_config::Settings;
use chatmail_metrics::Protocol;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use chatmail_limits::{Gcra, Slot, Slots};
use tokio::time::Instant;

use crate::session::{Ending, Session};

/// Everything the SMTP servers need.
pub struct Context {
    pub settings: Arc<Settings>,
    pub accounts: Accounts,
    /// Certificate and protocol versions of 465/587 (TLS 1.3 in the relay).
    pub tls: Arc<rustls::ServerConfig>,
    /// TLS of port 25, which must also accept TLS 1.2 from older peers
    /// (docs/specifications.md §3); `None` uses [`Context::tls`].
    pub mx_tls: Option<Arc<rustls::ServerConfig>>,
    /// The inbound checks of port 25, shared with `/mxdeliv`.
    pub inbound: chatmail_inbound::Inbound,
    /// The outbound queue; `None` refuses remote recipients on submission
    /// with a 451.
    pub queue: Option<chatmail_queue::Queue>,
    /// Push notifications for local recipients; `None`: none are sent.
    pub push: Option<chatmail_push::Push>,
}

/// Which submission port flavour a listener serves.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Port 465: TLS from the first byte (RFC 8314 §3.3).
    ImplicitTls,
    /// Port 587: plain greeting, then STARTTLS (RFC 3207).
    StartTls,
    /// Port 25: mail from other relays; STARTTLS required, no AUTH.
    Mx,
}

/// Time allowed for a TLS handshake, in total.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time in-flight sessions get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// State shared by all SMTP connections of the process (465, 587, 25 and
/// submission over 443), built once by the caller so that every listener
/// counts against the same limits.
pub struct Shared {
    pub(crate) ctx: Arc<Context>,
    /// Per-sender send rate of `limits.max_user_send_per_minute`.
    pub(crate) send_rate: Gcra<String>,
    /// Open connections, a fifth of `limits.max_smtp_connections` per
    /// client.
    pub(crate) connections: Slots,
}

impl Shared {
    /// The limiters sized from `ctx`'s configuration.
    pub fn new(ctx: Arc<Context>) -> Self {
        let limits = ctx.settings.limits();
        let (rate, burst) = (limits.max_user_send_per_minute, limits.max_user_send_burst);
        Self {
            send_rate: Gcra::new(rate, burst, MAX_SENDERS),
            connections: Slots::fifth_per_client(limits.max_smtp_connections),
            ctx,
        }
    }
}

/// Senders the send rate tracks at once; a full table refuses newcomers
/// rather than forget active senders.
const MAX_SENDERS: usize = 100_000;

/// Accepts connections until `shutdown` is cancelled; each connection is its
/// own task (a panic or error kills only that connection, and a panic is
/// logged); in-flight sessions are allowed to finish a short grace period.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mode: Mode,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined && e.is_panic() {
                    tracing::error!("SMTP connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => accept(&mut tasks, stream, peer, mode, &shared, &shutdown),
                Err(error) => {
                    // Out of descriptors and the like: back off, keep serving.
                    if !shared.ctx.settings.config.log.no_log {
                        tracing::warn!(%error, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drain).await;
    tasks.abort_all();
    Ok(())
}

/// Runs a submission session from `peer` on a stream whose TLS handshake
/// is already done elsewhere (port 443 with ALPN `smtp`,
/// docs/specifications.md §7): no second handshake, AUTH offered at once.
/// The caller counts the connection in `slot`, which the session marks
/// busy, protects after AUTH and gives up when it is evicted.
pub async fn serve_tls_stream<S>(
    stream: S,
    peer: IpAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    slot: Arc<Slot>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _open = chatmail_metrics::connection(Protocol::Submission);
    let deadline = login_deadline(&shared.ctx);
    let log = !shared.ctx.settings.config.log.no_log;
    let session = Session::new(stream, shared, true)
        .with_peer(peer)
        .with_deadline(deadline)
        .with_slot(slot)
        .with_shutdown(shutdown);
    if let Err(error) = session.run().await
        && log
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// When a connection that starts now must have logged in (or, on the MX,
/// finished STARTTLS).
fn login_deadline(ctx: &Context) -> Instant {
    Instant::now() + Duration::from_secs(ctx.settings.limits().login_deadline)
}

/// Starts the task for one accepted connection, or turns it away.
fn accept(
    tasks: &mut JoinSet<()>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    mode: Mode,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let log = !shared.ctx.settings.config.log.no_log;
    let span = if log {
        tracing::info_span!("smtp", peer = %peer.ip())
    } else {
        tracing::info_span!("smtp")
    };
    let protocol = match mode {
        Mode::Mx => Protocol::Smtp,
        Mode::ImplicitTls | Mode::StartTls => Protocol::Submission,
    };
    let Ok(slot) = shared.connections.acquire(Some(peer.ip())) else {
        chatmail_metrics::connection_refused(protocol);
        if log {
            tracing::info!(parent: &span, "too many connections");
        }
        if let Mode::StartTls | Mode::Mx = mode {
            tasks.spawn(refuse(stream));
        } // On 465 a cleartext reply would be garbage to the client: just close.
        return;
    };
    let (shared, shutdown) = (Arc::clone(shared), shutdown.clone());
    tasks.spawn(
        async move {
            let _open = chatmail_metrics::connection(protocol);
            let connection = Connection {
                peer: peer.ip(),
                mode,
                slot: Arc::new(slot),
                deadline: login_deadline(&shared.ctx),
            };
            handle_connection(stream, connection, shared, shutdown).await;
        }
        .instrument(span),
    );
}

async fn refuse(mut stream: tokio::net::TcpStream) {
    let reply = b"421 4.7.0 Too many connections\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(reply)).await;
    let _ = stream.shutdown().await;
}

/// What a connection brings to its sessions.
pub(crate) struct Connection {
    pub(crate) peer: IpAddr,
    pub(crate) mode: Mode,
    /// Its place in the pool, shared by the sessions before and after
    /// STARTTLS.
    pub(crate) slot: Arc<Slot>,
    /// The login deadline (`limits.login_deadline` after the start).
    pub(crate) deadline: Instant,
}

/// Runs one connection to its end; errors end only this connection.
pub(crate) async fn handle_connection<S>(
    stream: S,
    connection: Connection,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let log = !shared.ctx.settings.config.log.no_log;
    if let Err(error) = run_connection(stream, connection, shared, shutdown).await
        && log
    {
        tracing::debug!(%error, "connection ended with an error");
    }
}

async fn run_connection<S>(
    stream: S,
    connection: Connection,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Connection {
        peer,
        mode,
        slot,
        deadline,
    } = connection;
    let mx = matches!(mode, Mode::Mx);
    let plain = match mode {
        Mode::ImplicitTls => stream,
        Mode::StartTls | Mode::Mx => {
            let mut session = Session::new(stream, Arc::clone(&shared), false)
                .with_peer(peer)
                .with_slot(Arc::clone(&slot))
                .with_deadline(deadline);
            if mx {
                session = session.for_mx();
            }
            match session.with_shutdown(shutdown.clone()).run().await? {
                Ending::Closed => return Ok(()),
                Ending::StartTls(stream) => stream,
            }
        }
    };
    let handshake = handshake(plain, mode, &shared, deadline);
    let tls = tokio::select! {
        tls = handshake => tls?,
        () = slot.evicted() => return Ok(()),
    };
    let mut session = match mode {
        Mode::ImplicitTls => Session::new(tls, shared, true),
        Mode::StartTls | Mode::Mx => Session::after_starttls(tls, shared),
    }
    .with_peer(peer)
    .with_slot(slot);
    if mx {
        // The MX has no login: past STARTTLS only the idle timeout applies.
        session = session.for_mx();
    } else {
        session = session.with_deadline(deadline);
    }
    session.with_shutdown(shutdown).run().await.map(|_| ())
}

async fn handshake<S>(
    stream: S,
    mode: Mode,
    shared: &Shared,
    deadline: Instant,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = match (mode, &shared.ctx.mx_tls) {
        (Mode::Mx, Some(mx_tls)) => mx_tls,
        _ => &shared.ctx.tls,
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
    let until = deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
    tokio::time::timeout_at(until, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)?
}
