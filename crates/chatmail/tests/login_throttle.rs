//! Failed-login throttling per client address in a real relay process:
//! failures on port 993 throttle the client's address there and for IMAP
//! by ALPN on 443, while a client on another loopback address
//! (`127.0.0.2`) logs in as usual. (Submission is covered by the
//! chatmail-smtp transcripts over real TCP.)

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chatmail_testkit::client::{Imap, tls_config};
use chatmail_testkit::relay::{RelayOptions, RelayProcess};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_rustls::client::TlsStream;

const PASSWORD: &str = "throttle-test-password";
const EXTRA: &str = "[dkim]\nalgorithm = \"ed25519\"\n\
                     [limits]\nmax_login_failures_per_ip = 3\nlogin_failure_window = 600\n";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

/// A line-oriented TLS connection from a chosen loopback source address.
struct Conn {
    stream: BufReader<TlsStream<tokio::net::TcpStream>>,
}

impl Conn {
    /// Connects from `source` to `addr`, offering `alpn` (if any).
    async fn open(relay: &RelayProcess, source: Ipv4Addr, addr: SocketAddr, alpn: &str) -> Conn {
        let mut config = (*tls_config(&relay.cert_path()).unwrap()).clone();
        if !alpn.is_empty() {
            config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        }
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source.into(), 0)).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let name = ServerName::IpAddress(relay.ip.into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let mut conn = Conn {
            stream: BufReader::new(tls),
        };
        conn.line().await; // greeting
        conn
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let read = self.stream.read_line(&mut line);
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .unwrap()
            .unwrap();
        line.trim_end().to_owned()
    }

    /// Sends an IMAP command and returns its tagged reply.
    async fn ask(&mut self, tag: &str, command: &str) -> String {
        let stream = self.stream.get_mut();
        let line = format!("{tag} {command}\r\n");
        stream.write_all(line.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        loop {
            let reply = self.line().await;
            if let Some(status) = reply.strip_prefix(&format!("{tag} ")) {
                return status.to_owned();
            }
        }
    }
}

#[tokio::test]
async fn failures_throttle_one_client_address_on_993_and_443() {
    let ip = Ipv4Addr::new(127, 0, 63, 2);
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, EXTRA))
        .await
        .unwrap();
    let (attacker, neighbour) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));
    let user = relay.address("throttled");
    let tls = tls_config(&relay.cert_path()).unwrap();
    let (imaps, https) = (relay.addr(relay.ports.imaps), relay.addr(relay.ports.https));
    drop(Imap::login(imaps, &tls, &user, PASSWORD).await.unwrap());

    let login = |password: &str| format!("LOGIN \"{user}\" \"{password}\"");
    let mut imap = Conn::open(&relay, attacker, imaps, "").await;
    for guess in ["guess-0001", "guess-0002", "guess-0003"] {
        let reply = imap.ask("a", &login(guess)).await;
        assert_eq!(reply, "NO [AUTHENTICATIONFAILED] Invalid credentials");
    }
    // The right password from the same address, on 993 and over 443 (ALPN).
    let throttled = "NO [UNAVAILABLE] Too many failed logins, try again later";
    assert_eq!(imap.ask("b", &login(PASSWORD)).await, throttled);
    let mut alpn = Conn::open(&relay, attacker, https, "imap").await;
    assert_eq!(alpn.ask("c", &login(PASSWORD)).await, throttled);
    // Another client address is not affected, on 443 as on 993.
    for addr in [https, imaps] {
        let alpn = if addr == https { "imap" } else { "" };
        let mut other = Conn::open(&relay, neighbour, addr, alpn).await;
        let reply = other.ask("d", &login(PASSWORD)).await;
        assert!(reply.starts_with("OK"), "{addr}: {reply}");
    }
}
