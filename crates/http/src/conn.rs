//! One HTTP connection (HTTP/1.1 or HTTP/2, TLS or plain), served with the
//! relay's bounds.
//!
//! - the stream closes after [`IDLE_TIMEOUT`] without a byte in either
//!   direction ([`Guarded`]);
//! - HTTP/1.1: a request head must arrive whole within [`HEADER_TIMEOUT`]
//!   of the wait for it (hyper's header timer, also the keep-alive limit),
//!   and at most [`MAX_HEAD`] bytes are buffered for it;
//! - HTTP/2: at most [`MAX_STREAMS`] requests at once per connection,
//!   flow-control windows of [`STREAM_WINDOW`] / [`CONNECTION_WINDOW`]
//!   (what a client can push before a handler reads), header lists of at
//!   most [`MAX_HEAD`], and hyper's defence against rapid resets;
//! - the connection's [`Slot`] is busy while a request is being handled;
//!   between requests (or while a head trickles in) it may be evicted to
//!   make room for a newcomer when its pool is full;
//! - shutdown is graceful: requests in flight finish, then it closes.
//!
//! The peer address reaches the handlers as `ConnectInfo<ClientAddr>`,
//! the connection's slot as [`ConnectionSlot`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::Response;
use chatmail_limits::Slot;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::new::ClientAddr;

/// An established connection idle this long in both directions is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time for one HTTP/1.1 request head, from the start of the wait for it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request head (HTTP/1.1 buffer, HTTP/2 header list).
pub const MAX_HEAD: usize = 16 * 1024;
/// HTTP/2 requests at once on one connection.
pub const MAX_STREAMS: u32 = 16;
/// HTTP/2 bytes one request may send ahead of its handler.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// HTTP/2 bytes one connection may send ahead of its handlers.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Time connections get to finish after shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` until `shutdown`, spawning what
/// `start` makes of each (`None`: turned away); then gives the tasks
/// [`SHUTDOWN_GRACE`] to finish and aborts the rest. Accept errors (out of
/// descriptors, say) back off briefly and keep serving.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    mut start: F,
) -> io::Result<()>
where
    F: FnMut(TcpStream, SocketAddr) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                if let Some(task) = start(tcp, peer) {
                    tasks.spawn(task);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drain).await;
    tasks.abort_all();
    Ok(())
}

/// Serves HTTP on `io` from `peer` until the client is done, the slot is
/// evicted, or (gracefully) `shutdown`.
pub(crate) async fn serve<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    slot: Arc<Slot>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(PerConnection {
        router,
        peer: ClientAddr(peer),
        slot: Arc::clone(&slot),
    });
    let builder = builder();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            // Only while no request runs: closing drops nothing half done.
            () = slot.evicted() => return,
        }
    }
}

fn builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEAD as u32)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(64));
    builder
}

/// The connection's slot, in each request's extensions: a handler that
/// takes the connection over (an upgrade) keeps it and honours eviction.
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<Slot>);

/// The router for one connection: adds the peer address to each request
/// and keeps the slot busy while the request is handled.
#[derive(Clone)]
struct PerConnection {
    router: Router,
    peer: ClientAddr,
    slot: Arc<Slot>,
}

impl Service<hyper::Request<Incoming>> for PerConnection {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let slot = ConnectionSlot(Arc::clone(&self.slot));
        request.extensions_mut().insert(slot);
        let busy = self.slot.busy();
        let mut router = self.router.clone();
        Box::pin(async move {
            let response = router.call(request).await;
            drop(busy);
            response
        })
    }
}

/// A stream that fails with `TimedOut` once no byte moved for
/// [`IDLE_TIMEOUT`], and that holds a value `H` (its slot) until dropped.
pub struct Guarded<S, H = ()> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    _held: H,
}

impl<S, H> Guarded<S, H> {
    pub(crate) fn new(inner: S, held: H) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _held: held,
        }
    }

    fn progressed(&mut self) {
        self.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + IDLE_TIMEOUT);
    }

    /// `Pending` while the deadline is ahead, the timeout error after it.
    fn pending_or_timeout<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin, H: Unpin> AsyncRead for Guarded<S, H> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.pending_or_timeout(cx),
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(result)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin, H: Unpin> AsyncWrite for Guarded<S, H> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => self.pending_or_timeout(cx),
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.progressed();
                }
                Poll::Ready(result)
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending_or_timeout(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silent_connection_times_out_and_frees_what_it_holds() {
        let held = Arc::new(());
        let (client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, Arc::clone(&held));
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(guarded);
        assert_eq!(Arc::strong_count(&held), 1);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_connection_alive() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, ());
        for _ in 0..5 {
            tokio::time::advance(IDLE_TIMEOUT / 2).await;
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            guarded.read_exact(&mut byte).await.unwrap();
        }
    }
}
