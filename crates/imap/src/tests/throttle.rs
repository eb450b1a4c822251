//! The failed-login throttle per client address, over real TCP and TLS
//! connections from two loopback source addresses.

use std::net::SocketAddr;

use super::*;

const LIMITS: &str = "[limits]\nmax_login_failures_per_ip = 3\nlogin_failure_window = 600\n";

/// A TLS connection to `server` from the loopback address `source`,
/// past the greeting.
async fn connect_from(
    source: &str,
    server: SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> Client<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(server).await.unwrap();
    let mut client = Client::new(tls_connect(cert, tcp).await);
    assert!(
        client
            .line()
            .await
            .starts_with("* OK [CAPABILITY IMAP4rev1")
    );
    client
}

#[tokio::test]
async fn login_from_an_address_with_too_many_failures_is_refused_unchecked() {
    let (h, cert) = harness_with(LIMITS).await;
    h.account().await; // creates ALICE
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(crate::serve(
        listener,
        crate::Mode::ImplicitTls,
        h.ctx.clone(),
        crate::slots(&h.ctx),
        h.shutdown.clone(),
    ));
    let mut attacker = connect_from("127.0.0.1", address, cert.clone()).await;
    for guess in ["guess-0001", "guess-0002", "guess-0003"] {
        let (_, status) = attacker.command(&format!("LOGIN {ALICE} {guess}")).await;
        assert_eq!(status, "NO [AUTHENTICATIONFAILED] Invalid credentials");
    }
    // The right password no longer helps from this address, on a new
    // connection too: a temporary refusal, not a verdict on the password.
    let throttled = "NO [UNAVAILABLE] Too many failed logins, try again later";
    let (_, status) = attacker.command(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    assert_eq!(status, throttled);
    let mut again = connect_from("127.0.0.1", address, cert.clone()).await;
    let (_, status) = again
        .command(&format!("AUTHENTICATE PLAIN {}", plain(ALICE, PASSWORD)))
        .await;
    assert_eq!(status, throttled);
    // Another source address logs in as usual.
    let mut neighbour = connect_from("127.0.0.2", address, cert).await;
    neighbour.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    neighbour.ok("SELECT INBOX").await;
    h.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
}

/// The base64 SASL PLAIN initial response.
fn plain(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}
