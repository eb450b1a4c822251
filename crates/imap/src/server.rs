//! Accept loop, connection limits and TLS set-up.
//!
//! Invariants: at most `max_imap_connections` sessions run at once and at
//! most a fifth of that per client (an IPv4 address or an IPv6 /64,
//! `chatmail_limits`); a full pool makes room by evicting the connection
//! that has waited longest without logging in; a client over its share,
//! or a newcomer when nothing can be evicted, gets `* BYE Too many
//! connections` on port 143, and on port 993 the TCP connection is closed
//! before any TLS handshake work is spent on it. A TLS handshake must
//! finish within [`HANDSHAKE_TIMEOUT`], and the login within
//! `limits.login_deadline` of the connection's start. Connection tasks live
//! in a `JoinSet` owned by [`serve`], so none outlives it; the IP address
//! is logged only without `no_log`; the peer address reaches the session
//! for the failed-login throttle (`chatmail_accounts`), which keeps only a
//! keyed hash of it. Open and refused connections are counted in
//! `chatmail_metrics`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chatmail_limits::{Slot, Slots};
use chatmail_metrics::Protocol;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::session::{Ending, Session};
use crate::status::{Closing, Status};
use crate::{Context, Mode};

/// Longest a TLS handshake may take, in total.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long running sessions get to say BYE at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the refusal BYE may take to write.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection pool of `limits.max_imap_connections`, a fifth per
/// client.
pub fn slots(ctx: &Context) -> Slots {
    Slots::fifth_per_client(ctx.settings.limits().max_imap_connections)
}

/// Accepts connections until `shutdown` is cancelled; one task per
/// connection, counted in `slots` (the caller passes the same pool to the
/// 993 and 143 listeners, sized by [`slots`]). Returns after the sessions
/// have closed (or were aborted).
pub async fn serve(
    listener: TcpListener,
    mode: Mode,
    ctx: Arc<Context>,
    slots: Slots,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(ctx.tls.clone());
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined && e.is_panic() {
                    tracing::error!("IMAP connection task panicked");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually out of file descriptors: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                next_id += 1;
                let span = connection_span(next_id, peer, ctx.settings.config.log.no_log);
                let slot = slots.acquire(Some(peer.ip())).ok().map(Arc::new);
                if slot.is_none() {
                    chatmail_metrics::connection_refused(Protocol::Imap);
                }
                let conn = connection(stream, peer, mode, ctx.clone(), acceptor.clone(), slot, shutdown.child_token());
                tasks.spawn(conn.instrument(span));
            }
        }
    }
    // Sessions see the cancelled token and send BYE.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

fn connection_span(id: u64, peer: SocketAddr, no_log: bool) -> tracing::Span {
    if no_log {
        tracing::info_span!("imap", conn = id)
    } else {
        tracing::info_span!("imap", conn = id, peer = %peer.ip())
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    ctx: Arc<Context>,
    acceptor: TlsAcceptor,
    slot: Option<Arc<Slot>>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let result = match (mode, slot) {
        (Mode::StartTls, None) => refuse(stream).await,
        (Mode::StartTls, Some(slot)) => {
            serve_stream(stream, false, peer.ip(), ctx, shutdown, Some(slot)).await
        }
        // Over the limit: close at once, no handshake (it costs CPU).
        (Mode::ImplicitTls, None) => Ok(()),
        (Mode::ImplicitTls, Some(slot)) => {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let evicted = slot.evicted();
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => serve_stream(tls, true, peer.ip(), ctx, shutdown, Some(slot)).await,
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(timed_out("TLS handshake timeout")),
                },
                () = evicted => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn timed_out(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what)
}

async fn refuse<S: AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    let bye = async {
        let mut bye = Vec::new();
        Status::bye(Closing::TooManyConnections).encode(None, &mut bye);
        stream.write_all(&bye).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(REFUSE_TIMEOUT, bye)
        .await
        .map_err(|_| timed_out("refusal not read"))?
}

/// Runs the IMAP protocol on an accepted stream from `peer`; `encrypted`
/// says whether TLS is already established (implicit TLS, TLS with ALPN
/// `imap`). Otherwise STARTTLS is offered and the session continues over
/// TLS, with the same login deadline. `slot` is the connection's place in
/// its pool, if it may be evicted to make room while it waits without a
/// login. The connection counts as open IMAP in `chatmail_metrics` until
/// it ends.
pub async fn serve_stream<S>(
    stream: S,
    encrypted: bool,
    peer: IpAddr,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    slot: Option<Arc<Slot>>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _open = chatmail_metrics::connection(Protocol::Imap);
    let acceptor = TlsAcceptor::from(ctx.tls.clone());
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(ctx.settings.limits().login_deadline);
    let ending = Session::new(stream, ctx.clone(), encrypted, shutdown.clone())
        .with_peer(peer)
        .with_login_deadline(deadline)
        .with_slot(slot.clone())
        .run()
        .await
        .map_err(io_error)?;
    let Ending::StartTls(raw) = ending else {
        return Ok(());
    };
    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(raw));
    let evicted = chatmail_limits::slots::evicted(slot.clone());
    let tls = tokio::select! {
        tls = handshake => tls.map_err(|_| timed_out("TLS handshake timeout"))??,
        () = evicted => return Ok(()),
    };
    Session::after_starttls(tls, ctx, shutdown)
        .with_peer(peer)
        .with_login_deadline(deadline)
        .with_slot(slot)
        .run()
        .await
        .map_err(io_error)?;
    Ok(())
}

fn io_error(e: crate::SessionError) -> std::io::Error {
    match e {
        crate::SessionError::Io(e) => e,
    }
}
