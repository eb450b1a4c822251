//! A TLS listener for `axum::serve`.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections (handshaking or
//! established) at once, more wait in the kernel backlog; at most a fifth
//! of them from one client IP address (over it, the TCP connection is
//! closed before any handshake work, as on port 993); a handshake must
//! finish within [`HANDSHAKE_TIMEOUT`]; an established connection that moves
//! no byte in either direction for [`IDLE_TIMEOUT`] is closed (axum's server
//! sets no header-read timeout of its own).
//!
//! Port 443 also carries mail (docs/specifications.md §7): with
//! [`AlpnHandlers`], a connection that negotiated ALPN `imap` or `smtp`
//! (and TLS 1.3) is handed to that service without an idle deadline (IMAP
//! IDLE sits silent for minutes) and counted against its own limit, again
//! at most a fifth of it per client address; everything else (`h2`,
//! `http/1.1`, no ALPN) is HTTP. Open HTTP connections and connections
//! refused by a limit are counted in `chatmail_metrics` (mail sessions are
//! counted by their services).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use chatmail_metrics::Protocol;

use crate::limit::{IpSlot, PerIp};

/// Connections (handshaking or established) at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An established connection idle this long in both directions is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Finished handshakes waiting for axum to take them.
const READY_QUEUE: usize = 256;

/// A served connection: the TLS stream with its idle deadline and its slot.
pub type Connection = Guarded<TlsStream<TcpStream>>;

/// A mail connection on port 443, TLS already established.
pub type MailStream = TlsStream<TcpStream>;

/// A mail session handed over after the handshake: it owns the stream and
/// runs to the session's end.
pub type MailHandler =
    Arc<dyn Fn(MailStream, SocketAddr) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Wraps an async function as a [`MailHandler`].
pub fn mail_handler<F, Fut>(handler: F) -> MailHandler
where
    F: Fn(MailStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |stream, peer| Box::pin(handler(stream, peer)))
}

/// Where connections that negotiated ALPN `imap` or `smtp` go
/// (docs/specifications.md §7); without them every connection is HTTP.
#[derive(Clone)]
pub struct AlpnHandlers {
    /// IMAP with TLS already established.
    pub imap: MailHandler,
    /// SMTP submission with TLS already established.
    pub smtp: MailHandler,
    /// Mail sessions at once on this port; they are counted apart from
    /// HTTP connections, so idle IMAP clients cannot starve the web.
    pub max_connections: usize,
}

/// The mail side of the listener: handlers and their own slots.
#[derive(Clone)]
struct Mail {
    handlers: AlpnHandlers,
    slots: Arc<tokio::sync::Semaphore>,
    /// A fifth of `slots` per client address.
    per_ip: Arc<PerIp>,
}

/// Accepts TCP connections, runs TLS handshakes concurrently and yields the
/// finished HTTP streams; mail streams go to their handlers.
pub struct TlsListener {
    ready: mpsc::Receiver<(Connection, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener`; stops when `shutdown` is cancelled.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_alpn(listener, config, None, shutdown)
    }

    /// Like [`TlsListener::new`], handing ALPN `imap` and `smtp` connections
    /// to `mail` (`config` must offer those protocols).
    pub fn with_alpn(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        mail: Option<AlpnHandlers>,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_pool(listener, config, mail, MAX_CONNECTIONS, shutdown)
    }

    /// [`TlsListener::with_alpn`] with `pool` HTTP connections at once
    /// instead of [`MAX_CONNECTIONS`] (tests).
    fn with_pool(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        mail: Option<AlpnHandlers>,
        pool: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let mail = mail.map(|handlers| Mail {
            slots: Arc::new(tokio::sync::Semaphore::new(handlers.max_connections.max(1))),
            per_ip: PerIp::fifth_of(handlers.max_connections),
            handlers,
        });
        let acceptor = TlsAcceptor::from(config);
        let pool = Pool {
            slots: Arc::new(tokio::sync::Semaphore::new(pool.max(1))),
            per_ip: PerIp::fifth_of(pool),
        };
        tokio::spawn(accept_loop(listener, acceptor, pool, mail, tx, shutdown));
        Self { ready, local }
    }
}

/// The connections of the HTTP side (handshakes included).
struct Pool {
    slots: Arc<tokio::sync::Semaphore>,
    /// A fifth of `slots` per client address.
    per_ip: Arc<PerIp>,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pool: Pool,
    mail: Option<Mail>,
    tx: mpsc::Sender<(Connection, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let Ok(permit) = pool.slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over its share: closed at once, no handshake (it costs CPU).
        let Some(ip_slot) = pool.per_ip.try_acquire(peer.ip()) else {
            chatmail_metrics::connection_refused(Protocol::Https);
            tracing::debug!("too many connections from one client on the HTTPS port");
            continue;
        };
        let slot = Slot {
            _permit: permit,
            _ip: ip_slot,
            _open: None,
        };
        let (acceptor, tx, mail) = (acceptor.clone(), tx.clone(), mail.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => dispatch(tls, peer, slot, mail.as_ref(), &tx).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
}

/// A connection's place in a pool: the listener-wide permit and the
/// client address's share, both released on drop; an HTTP connection also
/// counts as open in the metrics while it lives.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
    _open: Option<chatmail_metrics::Open>,
}

/// Sends a finished handshake where its ALPN protocol says.
async fn dispatch(
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    slot: Slot,
    mail: Option<&Mail>,
    tx: &mpsc::Sender<(Connection, SocketAddr)>,
) {
    let (_, session) = tls.get_ref();
    let handler = match (mail, session.alpn_protocol()) {
        (Some(mail), Some(ALPN_IMAP)) => Some((mail, &mail.handlers.imap, Protocol::Imap)),
        (Some(mail), Some(ALPN_SMTP)) => Some((mail, &mail.handlers.smtp, Protocol::Submission)),
        _ => None,
    };
    let Some((mail, handler, protocol)) = handler else {
        let slot = Slot {
            _open: Some(chatmail_metrics::connection(Protocol::Https)),
            ..slot
        };
        let _ = tx.send((Guarded::new(tls, slot), peer)).await;
        return;
    };
    // Mail sessions keep TLS 1.3 as on 465 and 993 (docs/specifications.md §3).
    if session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        tracing::debug!("mail over ALPN refused below TLS 1.3");
        return;
    }
    drop(slot);
    let mail_slot = match (
        mail.slots.clone().try_acquire_owned(),
        mail.per_ip.try_acquire(peer.ip()),
    ) {
        (Ok(permit), Some(ip)) => Slot {
            _permit: permit,
            _ip: ip,
            _open: None,
        },
        _ => {
            chatmail_metrics::connection_refused(protocol);
            tracing::debug!("too many mail sessions on the HTTPS port");
            return;
        }
    };
    handler(tls, peer).await;
    drop(mail_slot);
}

/// ALPN protocol ids of the mail services (docs/specifications.md §7).
const ALPN_IMAP: &[u8] = b"imap";
const ALPN_SMTP: &[u8] = b"smtp";

impl axum::serve::Listener for TlsListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(pair) => pair,
            // The accept loop ended (shutdown): park until axum stops us.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A stream that fails with `TimedOut` once no byte moved for
/// [`IDLE_TIMEOUT`], and that holds a connection slot `H` until dropped.
pub struct Guarded<S, H = Slot> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    _slot: H,
}

impl<S, H> Guarded<S, H> {
    pub(crate) fn new(inner: S, slot: H) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(IDLE_TIMEOUT)),
            _slot: slot,
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
    async fn silent_connection_times_out_and_frees_its_slot() {
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let (client, server) = tokio::io::duplex(64);
        let permit = slots.clone().try_acquire_owned().unwrap();
        let mut guarded = Guarded::new(server, permit);
        let mut buf = [0u8; 8];
        let err = guarded.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(guarded);
        assert_eq!(slots.available_permits(), 1);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_connection_alive() {
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let (mut client, server) = tokio::io::duplex(64);
        let mut guarded = Guarded::new(server, slots.try_acquire_owned().unwrap());
        for _ in 0..5 {
            tokio::time::advance(IDLE_TIMEOUT / 2).await;
            client.write_all(b"x").await.unwrap();
            let mut byte = [0u8; 1];
            guarded.read_exact(&mut byte).await.unwrap();
        }
    }
}

#[cfg(test)]
mod alpn_tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    use super::{AlpnHandlers, MailHandler, TlsListener, mail_handler};

    struct Server {
        addr: SocketAddr,
        roots: Vec<CertificateDer<'static>>,
        shutdown: CancellationToken,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    /// A handler that greets with `name` and closes.
    fn greeter(name: &'static str) -> MailHandler {
        mail_handler(move |mut tls, _peer| async move {
            let greeting = format!("{name} session\r\n");
            let _ = tls.write_all(greeting.as_bytes()).await;
            let _ = tls.shutdown().await;
        })
    }

    /// A handler that greets with `name` and holds the session until the
    /// client closes.
    fn holder(name: &'static str) -> MailHandler {
        mail_handler(move |mut tls, _peer| async move {
            let greeting = format!("{name} session\r\n");
            let _ = tls.write_all(greeting.as_bytes()).await;
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
        })
    }

    /// Port 443 as the relay runs it: mail by ALPN, the rest HTTP.
    async fn start(with_mail: bool) -> Server {
        let mail = with_mail.then(|| AlpnHandlers {
            imap: greeter("imap"),
            smtp: greeter("smtp"),
            max_connections: 8,
        });
        start_with(mail, super::MAX_CONNECTIONS).await
    }

    /// Port 443 with `pool` HTTP connections at once.
    async fn start_with(mail: Option<AlpnHandlers>, pool: usize) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let id = chatmail_tls::Identity::self_signed(dir.path(), &["localhost".into()]).unwrap();
        let config = id.multiplex_config(true).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tls = TlsListener::with_pool(listener, config, mail, pool, shutdown.clone());
        let app = Router::new().route("/", get(|| async { "web page" }));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(tls, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Server {
            addr,
            roots: id.chain.clone(),
            shutdown,
            _dir: dir,
        }
    }

    async fn connect(
        server: &Server,
        alpn: &[&[u8]],
        tls12: bool,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        connect_from(server, "127.0.0.1", alpn, tls12).await
    }

    /// A TCP connection from the loopback address `source`.
    async fn tcp_from(server: &Server, source: &str) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(server.addr).await.unwrap()
    }

    /// Whether the server closes `tcp` without sending anything.
    async fn closed_at_once(tcp: &mut tokio::net::TcpStream) -> bool {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }

    async fn connect_from(
        server: &Server,
        source: &str,
        alpn: &[&[u8]],
        tls12: bool,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        try_connect_from(server, source, alpn, tls12).await.unwrap()
    }

    async fn try_connect_from(
        server: &Server,
        source: &str,
        alpn: &[&[u8]],
        tls12: bool,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.roots[0].clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let tcp = tcp_from(server, source).await;
        let name = ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        connector.connect(name, tcp).await
    }

    /// Sends an HTTP/1.1 request (ignored by mail sessions) and returns
    /// everything the server sent until it closed.
    async fn exchange(server: &Server, alpn: &[&[u8]], tls12: bool) -> String {
        let tls = connect(server, alpn, tls12).await;
        exchange_over(tls).await
    }

    /// [`exchange`] from the loopback address `source` over TLS 1.3.
    async fn exchange_from(server: &Server, source: &str, alpn: &[&[u8]]) -> String {
        let tls = connect_from(server, source, alpn, false).await;
        exchange_over(tls).await
    }

    async fn exchange_over(
        mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    ) -> String {
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let _ = tls.write_all(request).await;
        let mut received = Vec::new();
        let _ = tls.read_to_end(&mut received).await;
        String::from_utf8_lossy(&received).into_owned()
    }

    #[tokio::test]
    async fn one_client_address_gets_a_fifth_of_the_http_connections() {
        let server = start_with(None, 5).await; // one per address
        // A connection that has not even started its handshake holds the
        // share of its address: the next one is closed before any TLS work.
        let mut held = tcp_from(&server, "127.0.0.1").await;
        let mut refused = tcp_from(&server, "127.0.0.1").await;
        assert!(closed_at_once(&mut refused).await);
        // Other addresses are served.
        let reply = exchange_from(&server, "127.0.0.2", &[b"http/1.1"]).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        // Once the first connection ends, its address is served again.
        held.shutdown().await.unwrap();
        assert!(closed_at_once(&mut held).await);
        let mut served = false;
        for _ in 0..50 {
            // The share is released just after the connection is closed.
            if let Ok(tls) = try_connect_from(&server, "127.0.0.1", &[b"http/1.1"], false).await {
                served = exchange_over(tls).await.starts_with("HTTP/1.1 200");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served, "the share was not released");
    }

    #[tokio::test]
    async fn one_client_address_gets_a_fifth_of_the_mail_sessions() {
        let mail = AlpnHandlers {
            imap: holder("imap"),
            smtp: holder("smtp"),
            max_connections: 5, // one per address
        };
        let server = start_with(Some(mail), super::MAX_CONNECTIONS).await;
        let mut first = connect_from(&server, "127.0.0.1", &[b"imap"], false).await;
        let mut greeting = [0u8; 14];
        first.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"imap session\r\n");
        // Same address, over its share: closed after the handshake.
        let mut second = connect_from(&server, "127.0.0.1", &[b"smtp"], false).await;
        let mut rest = Vec::new();
        let _ = second.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
        // Another address gets its session.
        let mut other = connect_from(&server, "127.0.0.2", &[b"smtp"], false).await;
        other.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"smtp session\r\n");
    }

    #[tokio::test]
    async fn alpn_imap_and_smtp_reach_the_mail_handlers() {
        let server = start(true).await;
        assert_eq!(
            exchange(&server, &[b"imap"], false).await,
            "imap session\r\n"
        );
        assert_eq!(
            exchange(&server, &[b"smtp"], false).await,
            "smtp session\r\n"
        );
    }

    #[tokio::test]
    async fn http_alpn_and_no_alpn_get_the_web() {
        let server = start(true).await;
        for alpn in [&[b"http/1.1".as_slice()][..], &[]] {
            let reply = exchange(&server, alpn, false).await;
            assert!(reply.starts_with("HTTP/1.1 200"), "{alpn:?}: {reply}");
            assert!(reply.ends_with("web page"), "{reply}");
        }
        // TLS 1.2 stays available to browsers.
        let reply = exchange(&server, &[b"http/1.1"], true).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    #[tokio::test]
    async fn mail_below_tls_1_3_is_refused() {
        let server = start(true).await;
        assert_eq!(exchange(&server, &[b"imap"], true).await, "");
    }

    #[tokio::test]
    async fn without_handlers_mail_alpn_is_http() {
        let server = start(false).await;
        let reply = exchange(&server, &[b"imap"], false).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    #[tokio::test]
    async fn alpn_h2_gets_http2() {
        use http_body_util::{BodyExt, Empty};
        let server = start(true).await;
        let tls = connect(&server, &[b"h2", b"http/1.1"], false).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        let io = hyper_util::rt::TokioIo::new(tls);
        let executor = hyper_util::rt::TokioExecutor::new();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(executor, io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::get("https://localhost/")
            .body(Empty::<axum::body::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"web page");
    }
}
