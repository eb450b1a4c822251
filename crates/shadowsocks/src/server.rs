//! The proxy's accept loop and one connection's life: slot, handshake,
//! destination check, connect, copy.

use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use chatmail_limits::{ClientKey, Slot, Slots};
use chatmail_metrics::ProxyRefusal;
use shadowsocks::ServerConfig;
use shadowsocks::config::{ReplayAttackPolicy, ServerType};
use shadowsocks::context::{Context, SharedContext};
use shadowsocks::crypto::CipherKind;
use shadowsocks::relay::tcprelay::proxy_stream::server::ProxyServerStream;
use shadowsocks::relay::tcprelay::utils::copy_encrypted_bidirectional;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::Targets;

/// How long a client has to send its destination.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection that failed the handshake is read (and ignored)
/// before it is closed, as long as the client keeps it open.
const PROBE_DRAIN: Duration = Duration::from_secs(60);
/// How long connecting to the relay's own listener may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the proxy serves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The TCP address to listen on.
    pub listen: SocketAddr,
    pub method: CipherKind,
    /// See [`crate::password`].
    pub password: String,
    pub targets: Targets,
    /// Connections at once, in total (a fifth per client).
    pub max_connections: usize,
}

/// A bound proxy; [`Server::run`] serves it.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    context: SharedContext,
    method: CipherKind,
    key: Box<[u8]>,
    targets: Targets,
    slots: Slots,
    /// Keys the loopback source address of each client.
    sources: RandomState,
}

/// Binds `options.listen`.
pub async fn bind(options: Options) -> io::Result<Server> {
    let config = ServerConfig::new(options.listen, options.password, options.method)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut context = Context::new(ServerType::Server);
    context.set_replay_attack_policy(ReplayAttackPolicy::Reject);
    let listener = TcpListener::bind(options.listen).await?;
    let shared = Shared {
        context: Arc::new(context),
        method: options.method,
        key: config.key().into(),
        targets: options.targets,
        slots: Slots::fifth_per_client(options.max_connections),
        sources: RandomState::new(),
    };
    Ok(Server {
        listener,
        shared: Arc::new(shared),
    })
}

impl Server {
    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `stop` is cancelled; each connection runs in a task
    /// of its own, owned by this loop, and ends with `stop` too.
    pub async fn run(self, stop: CancellationToken) -> io::Result<()> {
        let mut tunnels = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                Some(_) = tunnels.join_next(), if !tunnels.is_empty() => continue,
                () = stop.cancelled() => return Ok(()),
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: let it pass.
                    tracing::debug!(error = %e, "shadowsocks: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = self.shared.slots.acquire(Some(peer.ip())) else {
                chatmail_metrics::proxy_refused(ProxyRefusal::Limit);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (shared, stop) = (self.shared.clone(), stop.clone());
            tunnels.spawn(async move {
                tokio::select! {
                    () = serve(stream, peer.ip(), &slot, &shared) => {}
                    () = slot.evicted() => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }
}

/// One client connection, until either side closes.
async fn serve(stream: TcpStream, client: IpAddr, slot: &Slot, shared: &Shared) {
    let _open = chatmail_metrics::proxy_connection();
    let mut proxied =
        ProxyServerStream::from_stream(shared.context.clone(), stream, shared.method, &shared.key);
    let destination = match tokio::time::timeout(HANDSHAKE_TIMEOUT, proxied.handshake()).await {
        Ok(Ok(destination)) => destination,
        Ok(Err(e)) => {
            chatmail_metrics::proxy_refused(ProxyRefusal::Handshake);
            tracing::debug!(error = %e, "shadowsocks: handshake failed");
            if e.kind() != io::ErrorKind::UnexpectedEof {
                ignore(proxied.into_inner(), shared.method).await;
            }
            return;
        }
        Err(_) => {
            chatmail_metrics::proxy_refused(ProxyRefusal::Handshake);
            return;
        }
    };
    let Some(upstream) = shared.targets.resolve(&destination) else {
        chatmail_metrics::proxy_refused(ProxyRefusal::Destination);
        return;
    };
    // Past the key check: the services behind apply their own limits.
    slot.protect();
    let source = loopback_source(&shared.sources, ClientKey::of(client));
    let mut upstream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(upstream, source)).await
    {
        Ok(Ok(stream)) => Counted(stream),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, port = upstream.port(), "shadowsocks: relay port unreachable");
            return;
        }
        Err(_) => {
            tracing::warn!(port = upstream.port(), "shadowsocks: relay port timed out");
            return;
        }
    };
    chatmail_metrics::proxy_tunnel();
    let copied = copy_encrypted_bidirectional(shared.method, &mut proxied, &mut upstream).await;
    if let Err(e) = copied {
        tracing::debug!(error = %e, "shadowsocks: tunnel ended with an error");
    }
}

/// Answers a failed handshake the way a prober cannot tell from a silent
/// server: Shadowsocks 2022 resets at once (its spec asks for it), the
/// older ciphers read and drop until the client closes or [`PROBE_DRAIN`].
async fn ignore(mut stream: TcpStream, method: CipherKind) {
    if method.is_aead_2022() {
        let _ = stream.set_zero_linger();
        return;
    }
    let mut buf = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(PROBE_DRAIN, drain).await;
}

/// A loopback address standing for `client` (a keyed hash into
/// 127.0.0.0/8, never 127.0.0.1 itself nor a `.0` or `.255` host).
fn loopback_source(keys: &RandomState, client: ClientKey) -> Ipv4Addr {
    let hash = keys.hash_one(client);
    let [_, _, _, _, _, a, b, c] = hash.to_be_bytes();
    let c = 1 + c % 254;
    if (a, b, c) == (0, 0, 1) {
        return Ipv4Addr::new(127, 0, 0, 2);
    }
    Ipv4Addr::new(127, a, b, c)
}

/// Connects to `upstream`, from `source` when `upstream` is an IPv4
/// loopback listener (elsewhere the kernel picks the source).
async fn connect(upstream: SocketAddr, source: Ipv4Addr) -> io::Result<TcpStream> {
    if let SocketAddr::V4(v4) = upstream
        && v4.ip().is_loopback()
    {
        let socket = TcpSocket::new_v4()?;
        if socket.bind(SocketAddr::from((source, 0))).is_ok() {
            let stream = socket.connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            return Ok(stream);
        }
    }
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The relay side of a tunnel, counting the bytes that pass.
struct Counted(TcpStream);

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        chatmail_metrics::proxy_relayed((buf.filled().len() - before) as u64);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.0).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            chatmail_metrics::proxy_relayed(n as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_gets_a_stable_loopback_source_of_its_own() {
        let keys = RandomState::new();
        let a = ClientKey::of("192.0.2.1".parse().unwrap());
        let b = ClientKey::of("192.0.2.2".parse().unwrap());
        let same_64 = ClientKey::of("2001:db8::2".parse().unwrap());
        let v6 = ClientKey::of("2001:db8::1".parse().unwrap());
        assert_eq!(loopback_source(&keys, a), loopback_source(&keys, a));
        assert_ne!(loopback_source(&keys, a), loopback_source(&keys, b));
        assert_eq!(loopback_source(&keys, v6), loopback_source(&keys, same_64));
        for key in [a, b, v6] {
            let ip = loopback_source(&keys, key);
            assert!(ip.is_loopback() && ip != Ipv4Addr::LOCALHOST);
            assert!(!matches!(ip.octets()[3], 0 | 255));
        }
    }
}
