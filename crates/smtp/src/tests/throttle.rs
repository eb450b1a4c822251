//! The failed-login throttle per client address, over real TCP and TLS
//! connections from two loopback source addresses.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio_util::sync::CancellationToken;

use super::{Client, Harness, PASSWORD, tls_handshake};
use crate::Mode;

const ALICE: &str = "alice0001@example.org";
const LIMITS: &str = "[limits]\nmax_login_failures_per_ip = 3\nlogin_failure_window = 600\n";

/// An implicit-TLS connection to `server` from the loopback address
/// `source`, past the greeting and EHLO.
async fn connect_from(
    harness: &Harness,
    source: &str,
    server: SocketAddr,
) -> Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(server).await.unwrap();
    let mut client = Client::new(tls_handshake(harness, tcp).await);
    assert!(client.reply().await.starts_with("220 "));
    client.expect("EHLO client", "250").await;
    client
}

fn auth(password: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        STANDARD.encode(format!("\0{ALICE}\0{password}"))
    )
}

#[tokio::test]
async fn auth_from_an_address_with_too_many_failures_is_refused_unchecked() {
    let harness = Harness::new(LIMITS).await;
    harness.account(ALICE).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(crate::serve(
        listener,
        Mode::ImplicitTls,
        Arc::clone(&harness.shared),
        shutdown.clone(),
    ));
    let mut attacker = connect_from(&harness, "127.0.0.1", address).await;
    let invalid = "535 5.7.8 Authentication credentials invalid\r\n";
    assert_eq!(attacker.cmd(&auth("guess-0001")).await, invalid);
    assert_eq!(attacker.cmd(&auth("guess-0002")).await, invalid);
    assert_eq!(attacker.cmd(&auth("guess-0003")).await, invalid);
    assert_eq!(
        attacker.reply().await,
        "421 4.7.0 Too many failed authentications\r\n"
    );
    assert!(attacker.is_closed().await);
    // From the same address even the right password gets the temporary
    // refusal, and the refusals still close the session after three.
    let throttled = "454 4.7.0 Too many failed logins, try again later\r\n";
    let mut again = connect_from(&harness, "127.0.0.1", address).await;
    for _ in 0..3 {
        assert_eq!(again.cmd(&auth(PASSWORD)).await, throttled);
    }
    assert!(again.reply().await.starts_with("421 4.7.0"));
    assert!(again.is_closed().await);
    // Another source address logs in and sends as usual.
    let mut neighbour = connect_from(&harness, "127.0.0.2", address).await;
    neighbour.expect(&auth(PASSWORD), "235 2.7.0").await;
    neighbour
        .expect(&format!("MAIL FROM:<{ALICE}>"), "250")
        .await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(15), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}
