//! Real TLS over in-memory streams: STARTTLS on 587 and implicit TLS on 465.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::DuplexStream;
use tokio_util::sync::CancellationToken;

use super::{Client, Harness, PASSWORD, tls_handshake};
use crate::Mode;

const ALICE: &str = "alice0001@example.org";

/// Starts a full connection handler on one end of a duplex stream.
fn start(harness: &Harness, mode: Mode) -> DuplexStream {
    harness.start_connection(mode)
}

#[tokio::test]
async fn starttls_discards_pipelined_injection() {
    let harness = Harness::new("").await;
    let mut plain = Client::new(start(&harness, Mode::StartTls));
    assert!(plain.reply().await.starts_with("220 "));
    assert!(!plain.cmd("EHLO client").await.contains("AUTH"));
    // RFC 3207 §5 / CVE-2011-0411: commands sent along with STARTTLS, before
    // the handshake, must never run inside the TLS session.
    let token = STANDARD.encode(format!("\0{ALICE}\0{PASSWORD}"));
    let injected =
        format!("STARTTLS\r\nEHLO evil\r\nAUTH PLAIN {token}\r\nMAIL FROM:<{ALICE}>\r\n");
    plain.send(injected.as_bytes()).await;
    assert_eq!(plain.reply().await, "220 2.0.0 Ready to start TLS\r\n");
    let mut tls = Client::new(tls_handshake(&harness, plain.into_inner()).await);
    // No greeting after the handshake; the first reply answers our command.
    tls.expect(&format!("MAIL FROM:<{ALICE}>"), "503 5.5.1 Send EHLO first")
        .await;
    let ehlo = tls.cmd("EHLO client").await;
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo:?}"
    );
    tls.expect(
        &format!("MAIL FROM:<{ALICE}>"),
        "530 5.7.0 Authentication required",
    )
    .await;
    tls.expect(&format!("AUTH PLAIN {token}"), "235").await;
    tls.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    tls.expect("QUIT", "221").await;
}

#[tokio::test]
async fn implicit_tls_greets_and_offers_auth() {
    let harness = Harness::new("").await;
    let stream = tls_handshake(&harness, start(&harness, Mode::ImplicitTls)).await;
    let mut client = Client::new(stream);
    client.login(ALICE).await;
    client.expect("QUIT", "221").await;
}

#[tokio::test]
async fn shutdown_ends_idle_sessions_with_421() {
    let harness = Harness::new("").await;
    let (client, server) = tokio::io::duplex(4096);
    let shutdown = CancellationToken::new();
    let session = crate::session::Session::new(server, harness.shared.clone(), true)
        .with_shutdown(shutdown.clone());
    tokio::spawn(session.run());
    let mut client = Client::new(client);
    client.reply().await;
    client.expect("NOOP", "250").await;
    shutdown.cancel();
    assert!(client.reply().await.starts_with("421 4.3.2"));
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn serve_accepts_on_loopback_and_limits_connections_per_ip() {
    let harness = Harness::new("[limits]\nmax_smtp_connections = 5\n").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::serve(
        listener,
        Mode::StartTls,
        Arc::clone(&harness.shared),
        shutdown.clone(),
    ));
    let mut first = Client::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    assert!(first.reply().await.starts_with("220 "));
    // Per-IP limit is 5 / 5 = 1.
    let mut second = Client::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    assert_eq!(second.reply().await, "421 4.7.0 Too many connections\r\n");
    assert!(second.is_closed().await);
    first.expect("QUIT", "221").await;
    assert!(first.is_closed().await);
    // The slot is free again once the first session has ended.
    let mut third = None;
    for _ in 0..50 {
        let mut client = Client::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        if client.reply().await.starts_with("220 ") {
            third = Some(client);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(third.is_some(), "slot was not released");
    shutdown.cancel();
    let mut third = third.unwrap();
    assert!(third.reply().await.starts_with("421 4.3.2"));
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn established_tls_streams_get_a_session_without_second_handshake() {
    let harness = Harness::new("").await;
    let (client, server) = tokio::io::duplex(1 << 16);
    let peer = std::net::Ipv4Addr::LOCALHOST.into();
    let slot = harness.shared.connections.acquire(Some(peer)).unwrap();
    let shutdown = CancellationToken::new();
    let session = crate::serve_tls_stream(
        server,
        peer,
        Arc::clone(&harness.shared),
        shutdown,
        Arc::new(slot),
    );
    tokio::spawn(session);
    let mut client = Client::new(client);
    client.login(ALICE).await;
    client.expect("QUIT", "221").await;
}
