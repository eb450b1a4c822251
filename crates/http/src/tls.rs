//! The TLS listener of port 443: handshakes, ALPN dispatch, and the
//! connection pools.
//!
//! Bounds (`chatmail_limits::Slots`, a fifth of each pool per client, an
//! IPv4 address or an IPv6 /64):
//! - at most [`MAX_HANDSHAKES`] TLS handshakes at once, each within
//!   [`HANDSHAKE_TIMEOUT`]; over a client's share the TCP connection is
//!   closed before any handshake work (as on port 993);
//! - at most [`MAX_CONNECTIONS`] established HTTP connections, served by
//!   [`crate::conn`] (idle, header and HTTP/2 bounds);
//! - with [`AlpnHandlers`], a connection that negotiated ALPN `imap` or
//!   `smtp` (and TLS 1.3) is handed to that service without an idle
//!   deadline (IMAP IDLE sits silent for minutes), counted against a pool
//!   of its own, so idle IMAP clients cannot starve the web and slow web
//!   clients cannot starve mail;
//! - every pool, when full, evicts the connection that has waited longest
//!   without doing anything (a handshake, an HTTP connection between
//!   requests, a mail session before its login) rather than turn the
//!   newcomer away.
//!
//! Everything else (`h2`, `http/1.1`, no ALPN) is HTTP. Open HTTP
//! connections and connections refused by a limit are counted in
//! `chatmail_metrics` (mail sessions are counted by their services).
//! Connection tasks live in a `JoinSet` owned by [`serve`]; at shutdown
//! they get `conn::SHUTDOWN_GRACE` to finish, then they are aborted.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chatmail_limits::{Slot, Slots};
use chatmail_metrics::Protocol;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::conn::{self, Guarded};

/// Established HTTP connections at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// TLS handshakes at once.
pub const MAX_HANDSHAKES: usize = 1024;
/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A mail connection on port 443, TLS already established.
pub type MailStream = TlsStream<TcpStream>;

/// A mail session handed over after the handshake: it owns the stream and
/// runs to the session's end; the slot may be evicted while the session
/// waits for a login.
pub type MailHandler = Arc<
    dyn Fn(MailStream, SocketAddr, Arc<Slot>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Wraps an async function as a [`MailHandler`].
pub fn mail_handler<F, Fut>(handler: F) -> MailHandler
where
    F: Fn(MailStream, SocketAddr, Arc<Slot>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |stream, peer, slot| Box::pin(handler(stream, peer, slot)))
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

/// What every connection task of a listener shares.
struct Listener {
    acceptor: TlsAcceptor,
    router: Router,
    handshakes: Slots,
    web: Slots,
    mail: Option<(AlpnHandlers, Slots)>,
    shutdown: CancellationToken,
}

/// Serves port 443 on `listener` until `shutdown` is cancelled: HTTP with
/// `router`, and mail by ALPN when `mail` is given (`config` must then
/// offer `imap` and `smtp`).
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    mail: Option<AlpnHandlers>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with_pool(listener, config, router, mail, MAX_CONNECTIONS, shutdown).await
}

/// [`serve`] with `pool` HTTP connections at once (tests).
async fn serve_with_pool(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    mail: Option<AlpnHandlers>,
    pool: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Listener {
        acceptor: TlsAcceptor::from(config),
        router,
        handshakes: Slots::fifth_per_client(MAX_HANDSHAKES.min(pool)),
        web: Slots::fifth_per_client(pool),
        mail: mail.map(|handlers| {
            let slots = Slots::fifth_per_client(handlers.max_connections);
            (handlers, slots)
        }),
        shutdown: shutdown.clone(),
    });
    conn::accept_loop(listener, shutdown, |tcp, peer| {
        // Over its share: closed at once, no handshake (it costs CPU).
        let Ok(slot) = shared.handshakes.acquire(Some(peer.ip())) else {
            chatmail_metrics::connection_refused(Protocol::Https);
            tracing::debug!("too many handshakes from one client on the HTTPS port");
            return None;
        };
        Some(connection(tcp, peer, slot, Arc::clone(&shared)))
    })
    .await
}

/// One connection: the handshake in its own slot, then HTTP or mail.
async fn connection(tcp: TcpStream, peer: SocketAddr, handshake: Slot, listener: Arc<Listener>) {
    let accept = tokio::time::timeout(HANDSHAKE_TIMEOUT, listener.acceptor.accept(tcp));
    let tls = tokio::select! {
        done = accept => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        },
        () = handshake.evicted() => return,
    };
    drop(handshake);
    let (_, session) = tls.get_ref();
    let mail = listener.mail.as_ref();
    let handler = match (mail, session.alpn_protocol()) {
        (Some((handlers, slots)), Some(ALPN_IMAP)) => Some((&handlers.imap, slots, Protocol::Imap)),
        (Some((handlers, slots)), Some(ALPN_SMTP)) => {
            Some((&handlers.smtp, slots, Protocol::Submission))
        }
        _ => None,
    };
    let Some((handler, slots, protocol)) = handler else {
        return web(tls, peer, &listener).await;
    };
    // Mail sessions keep TLS 1.3 as on 465 and 993 (docs/specifications.md §3).
    if session.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return tracing::debug!("mail over ALPN refused below TLS 1.3");
    }
    let Ok(slot) = slots.acquire(Some(peer.ip())) else {
        chatmail_metrics::connection_refused(protocol);
        return tracing::debug!("too many mail sessions on the HTTPS port");
    };
    // Held here too: the count lasts as long as the session, whatever the
    // handler does with its handle.
    let slot = Arc::new(slot);
    handler(tls, peer, Arc::clone(&slot)).await;
    drop(slot);
}

/// Serves an HTTP connection in a slot of the web pool.
async fn web(tls: TlsStream<TcpStream>, peer: SocketAddr, listener: &Listener) {
    let Ok(slot) = listener.web.acquire(Some(peer.ip())) else {
        chatmail_metrics::connection_refused(Protocol::Https);
        return tracing::debug!("too many HTTP connections from one client");
    };
    let _open = chatmail_metrics::connection(Protocol::Https);
    let router = listener.router.clone();
    let shutdown = listener.shutdown.clone();
    conn::serve(
        Guarded::new(tls, ()),
        peer,
        router,
        Arc::new(slot),
        shutdown,
    )
    .await;
}

/// ALPN protocol ids of the mail services (docs/specifications.md §7).
const ALPN_IMAP: &[u8] = b"imap";
const ALPN_SMTP: &[u8] = b"smtp";

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

    use super::{AlpnHandlers, MailHandler, mail_handler};

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
        mail_handler(move |mut tls, _peer, _slot| async move {
            let greeting = format!("{name} session\r\n");
            let _ = tls.write_all(greeting.as_bytes()).await;
            let _ = tls.shutdown().await;
        })
    }

    /// A handler that greets with `name` and holds the session until the
    /// client closes.
    fn holder(name: &'static str) -> MailHandler {
        mail_handler(move |mut tls, _peer, _slot| async move {
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
        let app = Router::new().route("/", get(|| async { "web page" }));
        let serve = super::serve_with_pool(listener, config, app, mail, pool, shutdown.clone());
        tokio::spawn(serve);
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
