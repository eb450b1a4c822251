//! The proxy against real clients: Debian's `ss-local` reaches the one
//! allowed listener through it, from a loopback address of its own, and
//! gets nothing for any other destination; a Shadowsocks 2022 client of
//! the `shadowsocks` crate (the one Delta Chat uses) gets through too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chatmail_shadowsocks::{CipherKind, Options, Targets};
use chatmail_testkit::socks::SsLocal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const NAME: &str = "relay.test";

/// A listener standing for one of the relay's ports: it greets, echoes,
/// and reports every client address it accepted.
async fn service() -> (SocketAddr, mpsc::UnboundedReceiver<SocketAddr>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = seen.send(peer);
            tokio::spawn(async move {
                let _ = stream.write_all(b"* OK hello\r\n").await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// A proxy on a free loopback port forwarding `NAME:port` to `allowed`.
async fn proxy(method: CipherKind, allowed: SocketAddr) -> (SocketAddr, String, CancellationToken) {
    let password = chatmail_shadowsocks::password(&[42; 32], method);
    let options = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        method,
        password: password.clone(),
        targets: Targets::new([NAME.to_owned()], [allowed]),
        max_connections: 100,
    };
    let server = chatmail_shadowsocks::bind(options).await.unwrap();
    let addr = server.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    (addr, password, stop)
}

/// Reads until EOF (at most 5 s): what the proxy sent back.
async fn drain(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the proxy kept a refused connection open");
    all
}

#[tokio::test]
async fn ss_local_reaches_only_the_relays_own_port() {
    if !SsLocal::installed() {
        eprintln!("skipped: ss-local not installed (Debian package shadowsocks-libev)");
        return;
    }
    let (allowed, mut seen) = service().await;
    let (other, mut other_seen) = service().await;
    let method = CipherKind::CHACHA20_POLY1305;
    let (addr, password, _stop) = proxy(method, allowed).await;
    let link =
        chatmail_shadowsocks::link("127.0.0.1", addr.port(), method, &password, NAME).unwrap();
    let client = SsLocal::start(&link).await.unwrap();

    let mut stream = client.connect(NAME, allowed.port()).await.unwrap();
    let mut greeting = [0u8; 12];
    stream.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"* OK hello\r\n");
    stream.write_all(b"a1 NOOP\r\n").await.unwrap();
    let mut echo = [0u8; 9];
    stream.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"a1 NOOP\r\n");
    let source = seen.recv().await.unwrap().ip();
    assert!(
        source.is_loopback() && source != IpAddr::V4(Ipv4Addr::LOCALHOST),
        "the service sees the proxied client as {source}"
    );
    // The same client keeps its address.
    let mut again = client.connect("127.0.0.1", allowed.port()).await.unwrap();
    again.read_exact(&mut greeting).await.unwrap();
    assert_eq!(seen.recv().await.unwrap().ip(), source);

    for (host, port) in [
        // Another local service, by address and by the relay's name.
        ("127.0.0.1", other.port()),
        (NAME, other.port()),
        // The allowed port of another host.
        ("other.test", allowed.port()),
        ("192.0.2.1", allowed.port()),
    ] {
        let mut refused = client.connect(host, port).await.unwrap();
        let _ = refused.write_all(b"a1 NOOP\r\n").await;
        assert!(
            drain(&mut refused).await.is_empty(),
            "{host}:{port} answered"
        );
    }
    assert!(
        other_seen.try_recv().is_err(),
        "the other service was reached"
    );
    assert!(
        seen.try_recv().is_err(),
        "a refused destination was forwarded"
    );
}

#[tokio::test]
async fn a_client_with_the_wrong_key_learns_nothing() {
    let (allowed, mut seen) = service().await;
    let (addr, _, _stop) = proxy(CipherKind::CHACHA20_POLY1305, allowed).await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[7u8; 200]).await.unwrap();
    // No answer and no close: the connection looks like a silent server.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
    assert!(read.is_err(), "the proxy answered a wrong key: {read:?}");
    assert!(seen.try_recv().is_err());
}

#[tokio::test]
async fn a_shadowsocks_2022_client_gets_through() {
    use shadowsocks::ServerConfig;
    use shadowsocks::config::ServerType;
    use shadowsocks::context::Context;
    use shadowsocks::relay::socks5::Address;
    use shadowsocks::relay::tcprelay::proxy_stream::ProxyClientStream;

    let (allowed, mut seen) = service().await;
    let method = CipherKind::AEAD2022_BLAKE3_AES_256_GCM;
    let (addr, password, _stop) = proxy(method, allowed).await;
    let link =
        chatmail_shadowsocks::link("127.0.0.1", addr.port(), method, &password, NAME).unwrap();
    let config = ServerConfig::from_url(&link).unwrap();
    let context = Context::new_shared(ServerType::Local);
    let target = Address::DomainNameAddress(NAME.to_owned(), allowed.port());
    let mut stream = ProxyClientStream::connect(context, &config, target)
        .await
        .unwrap();
    stream.write_all(b"a1 NOOP\r\n").await.unwrap();
    let mut reply = [0u8; 21];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"* OK hello\r\na1 NOOP\r\n");
    assert!(seen.recv().await.unwrap().ip().is_loopback());
}
