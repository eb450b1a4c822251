//! `tls.mode = "files"` with the real binary: a certificate renewed on disk
//! (key and certificate renamed into place, as certbot and most tools do)
//! is served by every TLS listener, implicit TLS and STARTTLS alike, from
//! the next connection on, without a restart; an established session keeps
//! working; a pair that does not belong together leaves the renewed
//! certificate in service.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_testkit::relay::{RelayOptions, RelayProcess};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The relay's address; its certificates are issued for it.
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 91, 1);
/// Longer than the relay needs to notice and load renewed files.
const RELOAD_WITHIN: Duration = Duration::from_secs(20);

/// How a listener starts TLS.
#[derive(Debug, Clone, Copy)]
enum Start {
    Implicit,
    /// IMAP `STARTTLS` (RFC 9051 §6.2.1).
    ImapStartTls,
    /// SMTP `STARTTLS` (RFC 3207).
    SmtpStartTls,
}

/// Every TLS listener of the relay and how to reach it.
fn listeners(relay: &RelayProcess) -> Vec<(&'static str, SocketAddr, Start)> {
    let ports = relay.ports;
    vec![
        ("imaps", relay.addr(ports.imaps), Start::Implicit),
        (
            "submissions",
            relay.addr(ports.submissions),
            Start::Implicit,
        ),
        ("https", relay.addr(ports.https), Start::Implicit),
        ("imap", relay.addr(ports.imap), Start::ImapStartTls),
        (
            "submission",
            relay.addr(ports.submission),
            Start::SmtpStartTls,
        ),
        ("smtp", relay.addr(ports.smtp), Start::SmtpStartTls),
    ]
}

/// A new certificate for the relay's address, written as `cert.pem` and
/// `key.pem` into `dir` by rename (key first); returns its DER.
fn renew(dir: &Path) -> Vec<u8> {
    let (cert, key) = chatmail_tls::generate(&[IP.to_string()]).unwrap();
    for (name, pem) in [("key.pem", &key), ("cert.pem", &cert)] {
        let tmp = dir.join(format!("{name}.new"));
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    der(&cert)
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A client that trusts every certificate this test makes (each is its own
/// root), so that the one served can be compared afterwards.
fn client(trusted: &[Vec<u8>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(CertificateDer::from(cert.clone())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Reads lines until one starts with `done`; fails on any other final
/// reply (an SMTP line `NNN text` or the tagged IMAP reply).
async fn expect(reader: &mut BufReader<TcpStream>, done: &str) {
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).await.unwrap() > 0, "closed");
        if line.starts_with(done) {
            return;
        }
        let smtp_final = line.len() > 3
            && line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
            && line.as_bytes()[3] == b' ';
        assert!(!smtp_final && !line.starts_with("s1 "), "{line}");
    }
}

/// Connects to a listener and completes the TLS handshake.
async fn handshake(
    addr: SocketAddr,
    start: Start,
    tls: &Arc<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let mut reader = BufReader::new(TcpStream::connect(addr).await.unwrap());
    match start {
        Start::Implicit => {}
        Start::ImapStartTls => {
            expect(&mut reader, "* OK").await;
            reader.write_all(b"s1 STARTTLS\r\n").await.unwrap();
            expect(&mut reader, "s1 OK").await;
        }
        Start::SmtpStartTls => {
            expect(&mut reader, "220 ").await;
            reader.write_all(b"EHLO [127.0.0.1]\r\n").await.unwrap();
            expect(&mut reader, "250 ").await;
            reader.write_all(b"STARTTLS\r\n").await.unwrap();
            expect(&mut reader, "220 ").await;
        }
    }
    assert!(reader.buffer().is_empty(), "bytes after the TLS go-ahead");
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(tls.clone())
        .connect(name, reader.into_inner())
        .await
        .unwrap()
}

/// The certificate a new connection to the listener is served.
async fn served(addr: SocketAddr, start: Start, tls: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let stream = handshake(addr, start, tls).await;
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Polls the listener until it serves `expected`.
async fn until_served(
    name: &str,
    addr: SocketAddr,
    start: Start,
    tls: &Arc<rustls::ClientConfig>,
    expected: &[u8],
) {
    let deadline = Instant::now() + RELOAD_WITHIN;
    while served(addr, start, tls).await != expected {
        assert!(
            Instant::now() < deadline,
            "{name} still serves the old certificate after {RELOAD_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A relay with `tls.mode = "files"` reading `dir/cert.pem` and
/// `dir/key.pem`, started.
async fn relay_with_files(dir: &Path) -> RelayProcess {
    let binary: &Path = env!("CARGO_BIN_EXE_madmail").as_ref();
    let mut relay = RelayProcess::configure(binary, &RelayOptions::on(IP, "")).unwrap();
    let config = std::fs::read_to_string(relay.config_path()).unwrap();
    let files = format!(
        "mode = \"files\"\ncert_path = {:?}\nkey_path = {:?}\n",
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    let config = config.replace("mode = \"self-signed\"\n", &files);
    assert!(config.contains("mode = \"files\""), "{config}");
    std::fs::write(relay.config_path(), config).unwrap();
    relay.launch().await.unwrap();
    relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_reach_every_listener_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = renew(dir.path());
    let relay = relay_with_files(dir.path()).await;
    let pid = relay.pid();
    let tls = client(std::slice::from_ref(&first));
    for (name, addr, start) in listeners(&relay) {
        assert_eq!(served(addr, start, &tls).await, first, "{name}");
    }
    // A session established with the first certificate.
    let mut session =
        BufReader::new(handshake(relay.addr(relay.ports.imaps), Start::Implicit, &tls).await);
    let mut greeting = String::new();
    session.read_line(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");

    let second = renew(dir.path());
    let tls = client(&[first.clone(), second.clone()]);
    for (name, addr, start) in listeners(&relay) {
        until_served(name, addr, start, &tls, &second).await;
    }
    assert_eq!(relay.pid(), pid, "the relay was not restarted");
    session.write_all(b"n1 NOOP\r\n").await.unwrap();
    let mut reply = String::new();
    session.read_line(&mut reply).await.unwrap();
    assert!(reply.starts_with("n1 OK"), "established session: {reply}");

    // A certificate without its key: the renewed one stays in service.
    let (stray, _) = chatmail_tls::generate(&[IP.to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &stray).unwrap();
    let tls = client(&[first, second.clone(), der(&stray)]);
    tokio::time::sleep(chatmail_tls::POLL_INTERVAL * 4).await;
    for (name, addr, start) in listeners(&relay) {
        assert_eq!(served(addr, start, &tls).await, second, "{name}");
    }
    assert_eq!(relay.pid(), pid);
}
