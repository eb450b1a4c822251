//! Accept loop, connection limits and TLS set-up.
//!
//! Invariants: at most `max_imap_connections` sessions run at once and at
//! most a fifth of that per IP address (over the limit: `* BYE Too many
//! connections` on port 143; on port 993 the TCP connection is closed
//! before any TLS handshake work is spent on it); connection tasks live in a `JoinSet` owned by [`serve`],
//! so none outlives it; the IP address is logged only without `no_log`;
//! the peer address reaches the session for the failed-login throttle
//! (`chatmail_accounts`), which keeps only a keyed hash of it.
//! Open and refused connections are counted in `chatmail_metrics`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmail_metrics::Protocol;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::session::{Ending, Session};
use crate::{Context, Mode};

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long running sessions get to say BYE at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the refusal BYE may take to write.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` is cancelled; one task per
/// connection. Returns after the sessions have closed (or were aborted).
pub async fn serve(
    listener: TcpListener,
    mode: Mode,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max = ctx.settings.limits().max_imap_connections.max(1);
    let limiter = Arc::new(Limiter {
        max_total: max,
        max_per_ip: (max / 5).max(1),
        counts: Mutex::default(),
    });
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
                let permit = limiter.try_acquire(peer.ip());
                if permit.is_none() {
                    chatmail_metrics::connection_refused(Protocol::Imap);
                }
                let conn = connection(stream, peer, mode, ctx.clone(), acceptor.clone(), permit, shutdown.child_token());
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
    permit: Option<Permit>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let result = match mode {
        Mode::StartTls if permit.is_none() => refuse(stream).await,
        Mode::StartTls => serve_stream(stream, false, peer.ip(), ctx, shutdown).await,
        // Over the limit: close at once, no handshake (it costs CPU).
        Mode::ImplicitTls if permit.is_none() => {
            drop(stream);
            Ok(())
        }
        Mode::ImplicitTls => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_stream(tls, true, peer.ip(), ctx, shutdown).await,
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timeout",
                )),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
    drop(permit);
}

async fn refuse<S: AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    let bye = async {
        stream.write_all(b"* BYE Too many connections\r\n").await?;
        stream.shutdown().await
    };
    tokio::time::timeout(REFUSE_TIMEOUT, bye)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "refusal not read"))?
}

/// Runs the IMAP protocol on an accepted stream from `peer`; `encrypted`
/// says whether TLS is already established (implicit TLS, TLS with ALPN
/// `imap`). Otherwise STARTTLS is offered and the session continues over
/// TLS. The connection counts as open IMAP in `chatmail_metrics` until it
/// ends.
pub async fn serve_stream<S>(
    stream: S,
    encrypted: bool,
    peer: IpAddr,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _open = chatmail_metrics::connection(Protocol::Imap);
    let acceptor = TlsAcceptor::from(ctx.tls.clone());
    let ending = Session::new(stream, ctx.clone(), encrypted, shutdown.clone())
        .with_peer(peer)
        .run()
        .await
        .map_err(io_error)?;
    let Ending::StartTls(raw) = ending else {
        return Ok(());
    };
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(raw))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timeout")
        })??;
    Session::after_starttls(tls, ctx, shutdown)
        .with_peer(peer)
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

/// Connection counters.
struct Limiter {
    max_total: usize,
    max_per_ip: usize,
    /// (total, per IP); never held across an await.
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// A slot in the limiter, released on drop.
struct Permit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, per_ip) = &mut *counts;
        let mine = per_ip.entry(ip).or_insert(0);
        if *total >= self.max_total || *mine >= self.max_per_ip {
            if *mine == 0 {
                per_ip.remove(&ip);
            }
            return None;
        }
        *total += 1;
        *mine += 1;
        Some(Permit {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (total, per_ip) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_ip.get_mut(&self.ip) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_connections_per_ip_and_in_total() {
        let limiter = Arc::new(Limiter {
            max_total: 3,
            max_per_ip: 2,
            counts: Mutex::default(),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let _second = limiter.try_acquire(a).unwrap();
        assert!(limiter.try_acquire(a).is_none());
        let _third = limiter.try_acquire(b).unwrap();
        assert!(limiter.try_acquire(b).is_none(), "total limit");
        drop(first);
        assert!(limiter.try_acquire(a).is_some());
    }
}
