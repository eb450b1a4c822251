//! Port 25 transcripts: mail from another relay (`example.net`, whose DKIM
//! key the harness publishes) to local users.

use std::sync::Arc;

use super::{Client, Harness, encrypted_message, plain_message};
use crate::Mode;

const BOB: &str = "bob000001@example.org";
const CAROL: &str = "carol0001@example.net";
const TRACE: &str = "Received: from [10.0.0.1] by somewhere\r\n\twith ESMTPSA\r\n";

/// A harness where Bob exists, and an MX client past EHLO on TLS.
async fn mx() -> (Harness, Client<tokio::io::DuplexStream>) {
    let harness = Harness::new("").await;
    harness.account(BOB).await;
    let mut client = harness.connect_mx(true);
    assert!(client.reply().await.starts_with("220 example.org"));
    client.expect("EHLO mx.example.net", "250").await;
    (harness, client)
}

/// Carol's encrypted message, DKIM-signed by `example.net`, with the
/// headers the relays on the way add.
fn signed(harness: &Harness) -> Vec<u8> {
    let signed = harness
        .peer_key
        .sign(&encrypted_message(CAROL, BOB), "example.net")
        .unwrap();
    let results = b"Authentication-Results: mx.example.net;\r\n dkim=pass\r\n";
    [results.as_slice(), &signed].concat()
}

#[tokio::test]
async fn starttls_is_required_before_mail() {
    let harness = Harness::new("").await;
    let mut client = harness.connect_mx(false);
    client.reply().await;
    let ehlo = client.cmd("EHLO mx.example.net").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo:?}"
    );
    client
        .expect(
            "MAIL FROM:<carol0001@example.net>",
            "530 5.7.0 Must issue a STARTTLS command first",
        )
        .await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "503 5.5.1")
        .await;
    client.expect("STARTTLS", "220 2.0.0").await;
}

#[tokio::test]
async fn offers_and_accepts_no_auth_over_tls() {
    let (_harness, mut client) = mx().await;
    let ehlo = client.cmd("EHLO mx.example.net").await;
    assert!(
        !ehlo.contains("AUTH") && !ehlo.contains("STARTTLS"),
        "{ehlo:?}"
    );
    assert!(ehlo.contains("SIZE 31457280") && ehlo.contains("8BITMIME"));
    client
        .expect("AUTH PLAIN AGJvYgBwYXNzd29yZA==", "502 5.5.1")
        .await;
}

#[tokio::test]
async fn vrfy_answers_252_for_every_address() {
    let (_harness, mut client) = mx().await;
    for address in [BOB, "nobody001@example.org", "x@elsewhere.example"] {
        client
            .expect(&format!("VRFY <{address}>"), "252 2.0.0")
            .await;
    }
}

#[tokio::test]
async fn recipients_must_be_local_users() {
    let (harness, mut client) = mx().await;
    client
        .expect(&format!("MAIL FROM:<{CAROL}>"), "250 2.1.0")
        .await;
    client
        .expect("RCPT TO:<nobody001@example.org>", "550 5.1.1 User unknown")
        .await;
    client
        .expect(
            "RCPT TO:<victim@elsewhere.example>",
            "554 5.7.1 Relay access denied",
        )
        .await;
    client.expect("DATA", "554 5.5.1 No valid recipients").await;
    assert!(
        harness
            .store
            .account("nobody001@example.org")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn stores_signed_encrypted_mail_without_trace_headers() {
    let (harness, mut client) = mx().await;
    let reply = client.submit(CAROL, &[BOB], &signed(&harness)).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    let expected = String::from_utf8(encrypted_message(CAROL, BOB))
        .unwrap()
        .replace(TRACE, "");
    assert_eq!(harness.inbox(BOB).await, vec![expected.into_bytes()]);
}

#[tokio::test]
async fn refuses_unsigned_mail_and_stores_nothing() {
    let (harness, mut client) = mx().await;
    let reply = client
        .submit(CAROL, &[BOB], &encrypted_message(CAROL, BOB))
        .await;
    assert_eq!(reply, "554 5.7.1 No DKIM signature found\r\n");
    assert!(harness.inbox(BOB).await.is_empty());
}

#[tokio::test]
async fn refuses_mis_signed_mail_and_stores_nothing() {
    let (harness, mut client) = mx().await;
    let forged = String::from_utf8(signed(&harness)).unwrap().replacen(
        "To: <bob000001@",
        "To: <bob000002@",
        1,
    );
    let reply = client.submit(CAROL, &[BOB], forged.as_bytes()).await;
    assert_eq!(reply, "554 5.7.1 No valid DKIM signature found\r\n");
    assert!(harness.inbox(BOB).await.is_empty());
}

#[tokio::test]
async fn refuses_signed_plaintext_with_523() {
    let (harness, mut client) = mx().await;
    let message = harness
        .peer_key
        .sign(&plain_message(CAROL, BOB), "example.net")
        .unwrap();
    let reply = client.submit(CAROL, &[BOB], &message).await;
    assert_eq!(reply, format!("{}\r\n", chatmail_gate::REJECT_TEXT));
    assert!(harness.inbox(BOB).await.is_empty());
}

#[tokio::test]
async fn accepts_a_mailer_daemon_bounce_from_the_null_sender() {
    let (harness, mut client) = mx().await;
    let bounce = include_bytes!("../../../gate/testdata/bounce.eml");
    let message = harness.peer_key.sign(bounce, "example.net").unwrap();
    client.expect("MAIL FROM:<>", "250 2.1.0").await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "250 2.1.5")
        .await;
    client.expect("DATA", "354").await;
    client.send(&message).await;
    client.send(b".\r\n").await;
    assert_eq!(client.reply().await, "250 2.0.0 OK\r\n");
    assert_eq!(harness.inbox(BOB).await, vec![bounce.to_vec()]);
}

#[tokio::test]
async fn accepts_an_envelope_sender_other_than_from() {
    let (harness, mut client) = mx().await;
    let reply = client
        .submit("bounces-7@lists.example.net", &[BOB], &signed(&harness))
        .await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert_eq!(harness.inbox(BOB).await.len(), 1);
}

#[tokio::test]
async fn refuses_blocked_sender_domains_at_mail() {
    let policy = "[federation]\npolicy = \"block\"\ndomains = [\"example.net\"]\n";
    let harness = Harness::new(policy).await;
    let mut client = harness.connect_mx(true);
    client.reply().await;
    client.expect("EHLO mx.example.net", "250").await;
    client
        .expect(
            &format!("MAIL FROM:<{CAROL}>"),
            "554 5.7.1 Domain not allowed",
        )
        .await;
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let harness = Harness::new("[limits]\nmax_recipients = 1\n").await;
    harness.account(BOB).await;
    let mut client = harness.connect_mx(true);
    client.reply().await;
    client.expect("EHLO mx.example.net", "250").await;
    client.expect("MAIL FROM:<>", "250").await;
    client.expect(&format!("RCPT TO:<{BOB}>"), "250").await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "452 4.5.3 Too many recipients")
        .await;
}

#[tokio::test]
async fn refuses_bare_lf_in_data_like_submission() {
    let (harness, mut client) = mx().await;
    let mut message = signed(&harness);
    message.extend_from_slice(b"smuggled\n.\nMAIL FROM:<x@y.z>\r\n");
    let reply = client.submit(CAROL, &[BOB], &message).await;
    assert_eq!(reply, "500 5.5.2 Bare CR or LF not allowed\r\n");
    assert!(harness.inbox(BOB).await.is_empty());
}

/// A TLS 1.2-only peer, as some relays still are, trusting the harness
/// certificate.
fn tls12_connector(harness: &Harness) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(harness.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn delivers_over_real_starttls_with_tls12() {
    let harness = Harness::new("").await;
    harness.account(BOB).await;
    let mut plain = Client::new(harness.start_connection(Mode::Mx));
    assert!(plain.reply().await.starts_with("220 "));
    plain.expect("EHLO mx.example.net", "250").await;
    plain.expect("STARTTLS", "220 2.0.0").await;
    let name = rustls_pki_types::ServerName::try_from("example.org").unwrap();
    let stream = tls12_connector(&harness)
        .connect(name, plain.into_inner())
        .await
        .unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let mut tls = Client::new(stream);
    let ehlo = tls.cmd("EHLO mx.example.net").await;
    assert!(
        !ehlo.contains("AUTH") && !ehlo.contains("STARTTLS"),
        "{ehlo:?}"
    );
    let reply = tls.submit(CAROL, &[BOB], &signed(&harness)).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert_eq!(harness.inbox(BOB).await.len(), 1);
}
