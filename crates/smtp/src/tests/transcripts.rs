//! Command transcripts: one test per rule.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Harness, PASSWORD, encrypted_message, plain_message};

const ALICE: &str = "alice0001@example.org";
const BOB: &str = "bob000001@example.org";

/// A harness where Alice is logged in and Bob exists.
async fn logged_in(extra: &str) -> (Harness, super::Client<tokio::io::DuplexStream>) {
    let harness = Harness::new(extra).await;
    harness.account(BOB).await;
    let mut client = harness.connect();
    client.login(ALICE).await;
    (harness, client)
}

#[tokio::test]
async fn ehlo_over_tls_advertises_auth_and_extensions() {
    let harness = Harness::new("").await;
    let mut client = harness.connect();
    assert!(client.reply().await.starts_with("220 example.org"));
    let ehlo = client.cmd("EHLO [127.0.0.1]").await;
    for keyword in [
        "SIZE 31457280",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "PIPELINING",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.contains(keyword), "{keyword} missing from {ehlo:?}");
    }
    assert!(!ehlo.contains("STARTTLS"));
    assert!(ehlo.starts_with("250-example.org\r\n"));
}

#[tokio::test]
async fn ehlo_before_starttls_offers_starttls_and_no_auth() {
    let harness = Harness::new("").await;
    let mut client = harness.connect_with(false);
    client.reply().await;
    let ehlo = client.cmd("EHLO client").await;
    assert!(
        ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"),
        "{ehlo:?}"
    );
    assert!(!ehlo.contains("AUTH"));
}

#[tokio::test]
async fn auth_before_tls_is_refused() {
    let harness = Harness::new("").await;
    let mut client = harness.connect_with(false);
    client.reply().await;
    client.expect("EHLO client", "250").await;
    let token = STANDARD.encode(format!("\0{ALICE}\0{PASSWORD}"));
    client
        .expect(
            &format!("AUTH PLAIN {token}"),
            "530 5.7.0 Must issue a STARTTLS command first",
        )
        .await;
    client
        .expect(
            &format!("MAIL FROM:<{ALICE}>"),
            "530 5.7.0 Authentication required",
        )
        .await;
}

#[tokio::test]
async fn auth_plain_accepts_right_and_refuses_wrong_password() {
    let harness = Harness::new("").await;
    harness.account(ALICE).await;
    let mut client = harness.connect();
    client.reply().await;
    client.expect("EHLO x", "250").await;
    let wrong = STANDARD.encode(format!("\0{ALICE}\0wrong-password"));
    client
        .expect(
            &format!("AUTH PLAIN {wrong}"),
            "535 5.7.8 Authentication credentials invalid",
        )
        .await;
    client
        .expect(
            &format!("MAIL FROM:<{ALICE}>"),
            "530 5.7.0 Authentication required",
        )
        .await;
    // PLAIN with an empty initial response and a continuation.
    client.expect("AUTH PLAIN", "334 ").await;
    let right = STANDARD.encode(format!("\0{ALICE}\0{PASSWORD}"));
    client
        .expect(&right, "235 2.7.0 Authentication successful")
        .await;
    client.expect(&format!("AUTH PLAIN {right}"), "503").await;
}

#[tokio::test]
async fn auth_login_takes_two_steps() {
    let harness = Harness::new("").await;
    let mut client = harness.connect();
    client.reply().await;
    client.expect("EHLO x", "250").await;
    client.expect("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    client
        .expect(&STANDARD.encode(ALICE), "334 UGFzc3dvcmQ6")
        .await;
    client.expect(&STANDARD.encode(PASSWORD), "235 2.7.0").await;
    client.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
}

#[tokio::test]
async fn three_failed_logins_close_the_connection() {
    let harness = Harness::new("").await;
    harness.account(ALICE).await;
    let mut client = harness.connect();
    client.reply().await;
    client.expect("EHLO x", "250").await;
    let wrong = STANDARD.encode(format!("\0{ALICE}\0wrong-password"));
    for _ in 0..2 {
        client.expect(&format!("AUTH PLAIN {wrong}"), "535").await;
    }
    client.expect(&format!("AUTH PLAIN {wrong}"), "535").await;
    assert!(client.reply().await.starts_with("421 4.7.0"));
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn mail_from_must_be_the_login() {
    let (_harness, mut client) = logged_in("").await;
    client
        .expect(
            &format!("MAIL FROM:<{BOB}>"),
            "553 5.7.1 Sender address rejected: not owned by user",
        )
        .await;
    client.expect("MAIL FROM:<>", "553 5.7.1").await;
    client
        .expect("MAIL FROM:<Alice0001@Example.ORG>", "250")
        .await;
}

#[tokio::test]
async fn from_header_must_match_the_envelope() {
    let (harness, mut client) = logged_in("").await;
    let message = encrypted_message(BOB, BOB);
    let reply = client.submit(ALICE, &[BOB], &message).await;
    assert_eq!(reply, format!("500 Invalid FROM <{BOB}> for <{ALICE}>\r\n"));
    assert!(harness.inbox(BOB).await.is_empty());
}

#[tokio::test]
async fn unparsable_from_header_is_refused() {
    let (harness, mut client) = logged_in("").await;
    let message = b"From: not an address at all\r\nTo: <bob000001@example.org>\r\n\r\nx\r\n";
    let reply = client.submit(ALICE, &[BOB], message).await;
    assert_eq!(reply, "500 Invalid FROM header\r\n");
    let missing = b"To: <bob000001@example.org>\r\n\r\nx\r\n";
    assert_eq!(
        client.submit(ALICE, &[BOB], missing).await,
        "500 Invalid FROM header\r\n"
    );
    assert!(harness.inbox(BOB).await.is_empty());
}

#[tokio::test]
async fn encrypted_message_is_stored_with_clean_headers() {
    let (harness, mut client) = logged_in("").await;
    let message = encrypted_message(ALICE, BOB);
    assert_eq!(
        client.submit(ALICE, &[BOB], &message).await,
        "250 2.0.0 OK\r\n"
    );
    let inbox = harness.inbox(BOB).await;
    assert_eq!(inbox.len(), 1);
    let stored = String::from_utf8(inbox[0].clone()).unwrap();
    assert!(stored.contains("\r\nSubject: [...]\r\n"), "{stored}");
    for gone in [
        "Received",
        "ESMTPSA",
        "X-Mailer",
        "User-Agent",
        "continued",
        "Secret plans",
    ] {
        assert!(!stored.contains(gone), "{gone} still in {stored}");
    }
    // The body is byte for byte the submitted one.
    let body_at = |m: &[u8]| m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(
        &inbox[0][body_at(&inbox[0])..],
        &message[body_at(&message)..]
    );
    client.expect("QUIT", "221").await;
}

#[tokio::test]
async fn plaintext_is_refused_with_523_and_not_stored() {
    let (harness, mut client) = logged_in("").await;
    let reply = client
        .submit(ALICE, &[BOB], &plain_message(ALICE, BOB))
        .await;
    assert_eq!(reply, format!("{}\r\n", chatmail_gate::REJECT_TEXT));
    assert!(harness.inbox(BOB).await.is_empty());
    // The session goes on.
    client.expect("NOOP", "250").await;
}

#[tokio::test]
async fn bare_lf_in_data_is_refused_and_the_session_stays_in_sync() {
    let (harness, mut client) = logged_in("").await;
    let mut message = encrypted_message(ALICE, BOB);
    message.extend_from_slice(b"smuggled\n.\nMAIL FROM:<alice0001@example.org>\r\n");
    let reply = client.submit(ALICE, &[BOB], &message).await;
    assert_eq!(reply, "500 5.5.2 Bare CR or LF not allowed\r\n");
    assert!(harness.inbox(BOB).await.is_empty());
    client
        .expect("RCPT TO:<bob000001@example.org>", "503")
        .await;
}

#[tokio::test]
async fn bare_cr_in_data_is_refused() {
    let (harness, mut client) = logged_in("").await;
    let mut message = encrypted_message(ALICE, BOB);
    message.extend_from_slice(b"smuggled\r.\r\n");
    let reply = client.submit(ALICE, &[BOB], &message).await;
    assert_eq!(reply, "500 5.5.2 Bare CR or LF not allowed\r\n");
    assert!(harness.inbox(BOB).await.is_empty());
    client.expect("NOOP", "250").await;
}

#[tokio::test]
async fn a_body_line_of_a_single_dot_survives_dot_stuffing() {
    let (harness, mut client) = logged_in("").await;
    // An Autocrypt Setup Message to oneself is accepted cleartext, so the
    // body can hold arbitrary lines.
    let message = format!(
        "From: <{ALICE}>\r\nTo: <{ALICE}>\r\nSubject: Autocrypt Setup Message\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\n.\r\n..twodots\r\n--b--\r\n"
    );
    let stuffed = message.replace("\r\n.", "\r\n..");
    let reply = client.submit(ALICE, &[ALICE], stuffed.as_bytes()).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    let stored = String::from_utf8(harness.inbox(ALICE).await.remove(0)).unwrap();
    assert_eq!(stored, message.replace("Autocrypt Setup Message", "[...]"));
}

#[tokio::test]
async fn oversized_messages_get_552() {
    let (harness, mut client) = logged_in("[limits]\nmax_message_size = 2000\n").await;
    client
        .expect(&format!("MAIL FROM:<{ALICE}> SIZE=2001"), "552 5.3.4")
        .await;
    let mut message = encrypted_message(ALICE, BOB);
    message.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".as_slice(), 200).flatten());
    let reply = client.submit(ALICE, &[BOB], &message).await;
    assert_eq!(reply, "552 5.3.4 Message exceeds maximum size\r\n");
    assert!(harness.inbox(BOB).await.is_empty());
    client.expect("NOOP", "250").await;
}

#[tokio::test]
async fn the_eleventh_message_in_a_burst_is_rate_limited() {
    let (harness, mut client) = logged_in("").await;
    let message = encrypted_message(ALICE, BOB);
    for i in 0..10 {
        assert_eq!(
            client.submit(ALICE, &[BOB], &message).await,
            "250 2.0.0 OK\r\n",
            "message {i}"
        );
    }
    client
        .expect(
            &format!("MAIL FROM:<{ALICE}>"),
            &format!("450 4.7.1: Too much mail from {ALICE}"),
        )
        .await;
    assert_eq!(harness.inbox(BOB).await.len(), 10);
}

#[tokio::test]
async fn recipients_are_checked() {
    let (_harness, mut client) = logged_in("").await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "503 5.5.1")
        .await;
    client.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    client
        .expect(
            "RCPT TO:<friend@elsewhere.example>",
            "451 4.7.0 Federation not available",
        )
        .await;
    client
        .expect("RCPT TO:<nobody123@example.org>", "550 5.1.1 User unknown")
        .await;
    client
        .expect(
            "RCPT TO:<no-at-sign>",
            "501 5.1.3 Bad recipient address syntax",
        )
        .await;
    client.expect("DATA", "554 5.5.1").await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "250 2.1.5")
        .await;
}

#[tokio::test]
async fn too_many_recipients_get_452() {
    let (_harness, mut client) = logged_in("[limits]\nmax_recipients = 2\n").await;
    client.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    client.expect(&format!("RCPT TO:<{BOB}>"), "250").await;
    client.expect(&format!("RCPT TO:<{ALICE}>"), "250").await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "452 4.5.3 Too many recipients")
        .await;
}

#[tokio::test]
async fn pipelined_commands_get_replies_in_order() {
    let (harness, mut client) = logged_in("").await;
    let message = encrypted_message(ALICE, BOB);
    let batch = format!(
        "RSET\r\nMAIL FROM:<{ALICE}> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<{BOB}>\r\nRCPT TO:<x@other.example>\r\nDATA\r\n"
    );
    client.send(batch.as_bytes()).await;
    for expected in ["250 2.0.0", "250 2.1.0", "250 2.1.5", "451 4.7.0", "354 "] {
        let reply = client.reply().await;
        assert!(
            reply.starts_with(expected),
            "expected {expected}, got {reply:?}"
        );
    }
    client
        .send(&[message.as_slice(), b".\r\nNOOP\r\nQUIT\r\n"].concat())
        .await;
    for expected in ["250 2.0.0 OK", "250 2.0.0 OK", "221 "] {
        let reply = client.reply().await;
        assert!(
            reply.starts_with(expected),
            "expected {expected}, got {reply:?}"
        );
    }
    assert_eq!(harness.inbox(BOB).await.len(), 1);
}

#[tokio::test]
async fn over_long_lines_are_refused() {
    let harness = Harness::new("").await;
    let mut client = harness.connect();
    client.reply().await;
    let long = format!("NOOP {}", "x".repeat(5000));
    client.expect(&long, "500 5.5.2 Line too long").await;
    client.expect("NOOP", "250").await;
}

#[tokio::test]
async fn miscellaneous_commands_answer() {
    let harness = Harness::new("").await;
    let mut client = harness.connect();
    client.reply().await;
    client.expect("VRFY someone", "252 2.0.0").await;
    client.expect("HELP", "214").await;
    client.expect("FOO", "500 5.5.1").await;
    client
        .expect("MAIL FROM:<a@example.org>", "503 5.5.1 Send EHLO first")
        .await;
    client.expect("HELO x", "250 example.org").await;
    client.expect("STARTTLS", "503").await;
    client.expect("QUIT", "221").await;
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn idle_clients_are_disconnected() {
    let harness = Harness::new("").await;
    let (client, server) = tokio::io::duplex(4096);
    let session = crate::session::Session::new(server, harness.shared.clone(), true)
        .with_idle_timeout(std::time::Duration::from_millis(50));
    tokio::spawn(session.run());
    let mut client = super::Client::new(client);
    client.reply().await;
    assert!(client.reply().await.starts_with("421 4.4.2"));
    assert!(client.is_closed().await);
}
