//! Resource bounds against unauthenticated clients: the login deadline,
//! eviction of idle connections from a full pool, and message bodies that
//! find no room in the spool budgets.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Client, Harness, encrypted_message};
use crate::Mode;

const ALICE: &str = "alice0001@example.org";
const BOB: &str = "bob000001@example.org";

fn ip(n: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, n])
}

#[tokio::test]
async fn a_client_that_never_logs_in_is_cut_off_at_the_deadline_however_it_paces() {
    let harness = Harness::new("[limits]\nlogin_deadline = 1\n").await;
    let mut client = Client::new(harness.start_connection(Mode::StartTls));
    assert!(client.reply().await.starts_with("220 "));
    let started = Instant::now();
    // A command every 200 ms keeps every single read short.
    let reply = loop {
        // The server may already have closed its end.
        client.try_send(b"NOOP\r\n").await;
        let reply = client.reply().await;
        if !reply.starts_with("250") {
            break reply;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never cut off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(reply.starts_with("421 4.4.2"), "{reply:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn a_login_lifts_the_deadline() {
    let harness = Harness::new("[limits]\nlogin_deadline = 1\n").await;
    harness.account(ALICE).await;
    let stream = harness.start_connection(Mode::ImplicitTls);
    let mut client = Client::new(super::tls_handshake(&harness, stream).await);
    client.login(ALICE).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.expect("NOOP", "250").await;
}

#[tokio::test]
async fn a_full_pool_evicts_the_longest_idle_unauthenticated_connection() {
    // Regression: 1,000 idle plain connections from 5 addresses filled the
    // pool and every newcomer got 421 for the 5-minute idle timeout.
    let harness = Harness::new("[limits]\nmax_smtp_connections = 5\n").await;
    harness.account(ALICE).await;
    let mut idle = Vec::new();
    for n in 1..=4 {
        let mut client = Client::new(harness.start_connection_from(Mode::StartTls, ip(n)));
        assert!(client.reply().await.starts_with("220 "));
        idle.push(client);
    }
    // The fifth logs in and is never evicted.
    let stream = harness.start_connection_from(Mode::ImplicitTls, ip(5));
    let mut user = Client::new(super::tls_handshake(&harness, stream).await);
    user.login(ALICE).await;
    for n in 6..=9 {
        let mut newcomer = Client::new(harness.start_connection_from(Mode::StartTls, ip(n)));
        assert!(newcomer.reply().await.starts_with("220 "), "served");
        newcomer.expect("EHLO newcomer", "250").await;
        // The longest idle one made room.
        let mut evicted = idle.remove(0);
        let reply = evicted.reply().await;
        assert!(reply.starts_with("421 4.7.0"), "{reply:?}");
        assert!(evicted.is_closed().await);
        idle.push(newcomer);
    }
    user.expect("NOOP", "250").await;
}

#[tokio::test]
async fn a_body_that_finds_no_room_is_refused_with_451_4_3_2() {
    // No memory for bodies in flight, and a spool of one message.
    let limits = "[limits]\nmax_message_size = 100000\nmax_body_memory = 0\n\
                  max_spool_size = 100000\n";
    let harness = Harness::new(limits).await;
    harness.account(ALICE).await;
    harness.account(BOB).await;
    let mut holder = harness.connect();
    holder.login(ALICE).await;
    holder.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    holder.expect(&format!("RCPT TO:<{BOB}>"), "250").await;
    holder.expect("DATA", "354").await;
    // Almost the whole spool, and the end never comes.
    holder.send(&vec![b'a'; 99_900]).await;
    let spools = harness.shared.ctx.inbound.spools().clone();
    while spools.usage().2 < 99_900 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut other = harness.connect();
    other.login(BOB).await;
    let message = encrypted_message(BOB, ALICE);
    let reply = other.submit(BOB, &[ALICE], &message).await;
    assert!(reply.starts_with("451 4.3.2"), "{reply:?}");
    other.expect("NOOP", "250").await;

    holder.send(b"\r\n.\r\n").await;
    let reply = holder.reply().await;
    assert!(
        reply.starts_with("5"),
        "the held junk is refused: {reply:?}"
    );
    // Its room is free again.
    let reply = other.submit(BOB, &[ALICE], &message).await;
    assert!(reply.starts_with("250"), "{reply:?}");
}

#[tokio::test]
async fn a_body_trickled_for_long_loses_its_slot_to_a_newcomer() {
    // Regression: reading DATA counted as busy however slowly the body
    // came, so slow bodies pinned a full pool for the 5-minute timeout.
    let harness = Harness::new("[limits]\nmax_smtp_connections = 1\n").await;
    harness.account(BOB).await;
    let shared = std::sync::Arc::clone(&harness.shared);
    let slot = std::sync::Arc::new(shared.connections.acquire(Some(ip(1))).unwrap());
    let (client, server) = tokio::io::duplex(1 << 16);
    let session = crate::session::Session::new(server, shared, true)
        .for_mx()
        .with_slot(std::sync::Arc::clone(&slot));
    tokio::spawn(session.run());
    let mut client = Client::new(client);
    assert!(client.reply().await.starts_with("220 "));
    client.expect("EHLO mx.example.net", "250").await;
    client
        .expect("MAIL FROM:<carol0001@example.net>", "250")
        .await;
    client.expect(&format!("RCPT TO:<{BOB}>"), "250").await;
    client.expect("DATA", "354").await;
    let started = Instant::now();
    let mut evicted = false;
    while started.elapsed() < Duration::from_secs(40) {
        client.try_send(b"x").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A newcomer arrives every now and then.
        if let Ok(newcomer) = harness.shared.connections.acquire(Some(ip(2))) {
            evicted = slot.is_evicted();
            drop(newcomer);
            break;
        }
    }
    let took = started.elapsed();
    assert!(evicted, "the trickled body kept its slot for {took:?}");
    assert!(
        took >= chatmail_limits::slots::BUSY_EVICTABLE_AFTER,
        "{took:?}"
    );
    let reply = client.reply().await;
    assert!(reply.starts_with("421 4.7.0"), "{reply:?}");
}
