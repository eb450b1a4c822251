//! Federation between two real relay processes on loopback: relay A on
//! `127.0.N.2`, relay B on `127.0.N.3` (N: the test's number), both IP-only
//! (no DNS, no DKIM), A routing B's domain with a static route. Covers both transports, the durable
//! queue (peer down, sender SIGKILLed), bounces, and the refusals of the
//! MX port.
//!
//! The queue retries a failed delivery after one minute at the earliest;
//! the tests use `madmail queue flush` (makes entries due) and then wake the
//! running scheduler with another submission, or restart the sender, so
//! that nothing waits for the backoff.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::clock::FakeClock;
use chatmail_testkit::message::{encrypted, message_id, plaintext};
use chatmail_testkit::mx::Mx;
use chatmail_testkit::relay::{RelayOptions, RelayProcess, closed_port};

const PASSWORD: &str = "federation-test-password";
/// ed25519 keys: generating RSA keys in a debug build is slow.
const EXTRA: &str = "[dkim]\nalgorithm = \"ed25519\"\n";
/// How long a delivery may take before a test fails.
const DELIVERY: Duration = Duration::from_secs(20);

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

/// Relay A of test number `net` listens on `127.0.<net>.2`, relay B on
/// `127.0.<net>.3`: tests run in parallel, and a port B frees while it is
/// down must not be picked by another test's relay.
fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, host)
}

/// Relay B, configured but not started.
fn relay_b(net: u8) -> RelayProcess {
    RelayProcess::configure(binary(), &RelayOptions::on(ip(net, 3), EXTRA)).unwrap()
}

/// Relay A with `route` (to B) in its configuration, started.
async fn relay_a(net: u8, route: &str) -> RelayProcess {
    let mut a = RelayProcess::configure(binary(), &RelayOptions::on(ip(net, 2), EXTRA)).unwrap();
    a.append_config(route).unwrap();
    a.launch().await.unwrap();
    a
}

/// Relay A as [`relay_a`] does, on a wall clock the test moves
/// (libfaketime, Debian package `faketime`).
async fn relay_a_on_fake_clock(net: u8, route: &str) -> (RelayProcess, FakeClock) {
    let mut a = RelayProcess::configure(binary(), &RelayOptions::on(ip(net, 2), EXTRA)).unwrap();
    let clock = FakeClock::create(a.dir().join("faketime"))
        .unwrap()
        .expect("the clock tests need libfaketime (Debian package faketime)");
    a.set_env(clock.env());
    a.append_config(route).unwrap();
    a.launch().await.unwrap();
    (a, clock)
}

/// Logs in once, which creates the account.
async fn create_account(relay: &RelayProcess, address: &str) {
    let tls = tls_config(&relay.cert_path()).unwrap();
    drop(
        Imap::login_named(
            relay.addr(relay.ports.imaps),
            relay.server_name(),
            &tls,
            address,
            PASSWORD,
        )
        .await
        .unwrap(),
    );
}

/// Submits `message` on `relay` as `from`; returns the final reply.
async fn submit(relay: &RelayProcess, from: &str, to: &str, message: &[u8]) -> (u16, String) {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login_named(addr, relay.server_name(), &tls, from, PASSWORD)
        .await
        .unwrap();
    smtp.send(from, &[to], message).await.unwrap()
}

/// Submits an encrypted message; asserts 250 and returns its Message-ID.
async fn submit_encrypted(relay: &RelayProcess, from: &str, to: &str) -> String {
    let message = encrypted(from, to, 2048);
    let reply = submit(relay, from, to, &message).await;
    assert_eq!(reply.0, 250, "submission refused: {reply:?}");
    message_id(&message).unwrap()
}

/// The whole INBOX of `user` (every message, headers and body, joined).
async fn inbox(relay: &RelayProcess, user: &str) -> String {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let mut imap = Imap::login_named(
        relay.addr(relay.ports.imaps),
        relay.server_name(),
        &tls,
        user,
        PASSWORD,
    )
    .await
    .unwrap();
    imap.command("SELECT INBOX").await.unwrap();
    imap.command("UID FETCH 1:* (BODY.PEEK[])")
        .await
        .unwrap()
        .join("")
}

/// The number of messages in `user`'s INBOX.
async fn inbox_count(relay: &RelayProcess, user: &str) -> u32 {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let mut imap = Imap::login_named(
        relay.addr(relay.ports.imaps),
        relay.server_name(),
        &tls,
        user,
        PASSWORD,
    )
    .await
    .unwrap();
    let lines = imap.command("SELECT INBOX").await.unwrap();
    let exists = lines
        .iter()
        .find_map(|l| l.strip_prefix("* ")?.strip_suffix(" EXISTS\r\n"));
    exists.unwrap().parse().unwrap()
}

/// Polls `user`'s INBOX until it contains `needle`; returns the INBOX.
async fn wait_for(relay: &RelayProcess, user: &str, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = inbox(relay, user).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle} did not reach {user} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `madmail queue list` of `relay` reports an empty queue.
fn queue_empty(relay: &RelayProcess) -> bool {
    relay
        .cli(&["queue", "list"])
        .unwrap()
        .lines()
        .any(|l| l.starts_with("0 message(s),"))
}

/// Starts B to create `bob`, stops it, submits a message from `alice` on
/// A and waits for A's first failed attempt; returns the message's id and
/// A's queue listing.
async fn queue_while_down(
    a: &RelayProcess,
    b: &mut RelayProcess,
    alice: &str,
    bob: &str,
) -> (String, String) {
    b.launch().await.unwrap();
    create_account(b, bob).await;
    b.kill();
    let queued = submit_encrypted(a, alice, bob).await;
    let list = wait_for_failed_attempt(a, bob).await;
    (queued, list)
}

/// Polls `madmail queue list` of `relay` until it reports a failed attempt
/// for `rcpt`; returns the listing.
async fn wait_for_failed_attempt(relay: &RelayProcess, rcpt: &str) -> String {
    let deadline = Instant::now() + DELIVERY;
    loop {
        let list = relay.cli(&["queue", "list"]).unwrap();
        if list
            .lines()
            .any(|l| l.contains(rcpt) && !l.contains("attempts=0"))
        {
            return list;
        }
        assert!(Instant::now() < deadline, "no attempt for {rcpt}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_mxdeliv_when_smtp_is_unreachable() {
    let mut b = relay_b(1);
    b.launch().await.unwrap();
    // The route's SMTP port is closed: only /mxdeliv can carry the message.
    let a = relay_a(
        1,
        &b.route_to(Some(b.ports.https), closed_port(ip(1, 3)).unwrap()),
    )
    .await;
    let (alice, bob) = (a.address("alice0001"), b.address("bob000001"));
    create_account(&b, &bob).await;
    let id = submit_encrypted(&a, &alice, &bob).await;
    let stored = wait_for(&b, &bob, &id, DELIVERY).await;
    assert!(stored.contains(&format!("From: <{alice}>")));
    assert!(queue_empty(&a));
    // Each side counts the exchange for the other (`madmail federation status`).
    let peer = |relay: &RelayProcess, domain: &str| -> serde_json::Value {
        let out = relay.cli(&["federation", "status", "--json"]).unwrap();
        let body: serde_json::Value = serde_json::from_str(&out).unwrap();
        let servers = body["servers"].as_array().unwrap();
        servers
            .iter()
            .find(|p| p["domain"] == domain)
            .cloned()
            .expect(&out)
    };
    let sent = peer(&a, &b.address_domain());
    assert_eq!(
        (sent["success_https"].as_u64(), sent["failed_smtp"].as_u64()),
        (Some(1), Some(0)),
        "{sent}"
    );
    assert_eq!(sent["queued_messages"], 0, "{sent}");
    let received = peer(&b, &a.address_domain());
    assert_eq!(received["inbound_deliveries"], 1, "{received}");
    let text = a.cli(&["federation", "status"]).unwrap();
    assert!(
        text.contains("https 1/0 ok/refused") && text.contains("1 peer(s)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_smtp_when_the_route_has_no_https_port() {
    let mut b = relay_b(2);
    b.launch().await.unwrap();
    let a = relay_a(2, &b.route(false)).await;
    let (alice, bob) = (a.address("alice0001"), b.address("bob000001"));
    create_account(&b, &bob).await;
    let id = submit_encrypted(&a, &alice, &bob).await;
    wait_for(&b, &bob, &id, DELIVERY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_smtp_when_mxdeliv_is_unreachable() {
    let mut b = relay_b(3);
    b.launch().await.unwrap();
    let a = relay_a(
        3,
        &b.route_to(Some(closed_port(ip(3, 3)).unwrap()), b.ports.smtp),
    )
    .await;
    let (alice, bob) = (a.address("alice0001"), b.address("bob000001"));
    create_account(&b, &bob).await;
    let id = submit_encrypted(&a, &alice, &bob).await;
    wait_for(&b, &bob, &id, DELIVERY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_while_the_peer_is_down_and_delivers_after_flush() {
    let mut b = relay_b(4);
    let a = relay_a(4, &b.route(true)).await;
    let (alice, bob) = (a.address("alice0001"), b.address("bob000001"));
    let (queued, list) = queue_while_down(&a, &mut b, &alice, &bob).await;
    assert!(
        list.contains("1 message(s), 1 recipient(s) pending"),
        "{list}"
    );

    b.launch().await.unwrap();
    assert!(
        a.cli(&["queue", "flush"])
            .unwrap()
            .contains("1 deliveries made due")
    );
    // The flush wakes the queue: without it the retry would wait for the
    // 1-minute backoff, longer than DELIVERY.
    wait_for(&b, &bob, &queued, DELIVERY).await;
    assert!(queue_empty(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_survives_sigkill_of_the_sender() {
    let mut b = relay_b(5);
    let mut a = relay_a(5, &b.route(true)).await;
    let (alice, bob) = (a.address("alice0001"), b.address("bob000001"));
    let (queued, _) = queue_while_down(&a, &mut b, &alice, &bob).await;
    a.kill();
    let down = a.cli(&["queue", "list"]).unwrap_err().to_string();
    assert!(down.contains("not running"), "{down}");

    b.launch().await.unwrap();
    a.launch().await.unwrap();
    let list = a.cli(&["queue", "list"]).unwrap();
    assert!(
        list.contains(&bob) && list.contains("1 recipient(s) pending"),
        "the message survived the kill: {list}"
    );
    a.cli(&["queue", "flush"]).unwrap();
    wait_for(&b, &bob, &queued, DELIVERY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_recipient_bounces_to_the_sender_inbox() {
    let mut b = relay_b(6);
    b.launch().await.unwrap();
    let a = relay_a(6, &b.route(true)).await;
    let alice = a.address("alice0001");
    create_account(&a, &alice).await;
    let nobody = b.address("nobody001");
    let id = submit_encrypted(&a, &alice, &nobody).await;

    let bounce = wait_for(&a, &alice, "multipart/report", DELIVERY).await;
    let daemon = format!("MAILER-DAEMON@{}", a.address_domain());
    assert!(
        bounce
            .lines()
            .any(|l| l.starts_with("From:") && l.contains(&daemon)),
        "{bounce}"
    );
    assert!(bounce.contains("report-type=delivery-status"), "{bounce}");
    assert!(
        bounce.contains(&format!("Final-Recipient: rfc822; {nobody}")),
        "{bounce}"
    );
    assert!(bounce.contains("Action: failed"), "{bounce}");
    assert!(
        bounce.contains(&id),
        "the original header is quoted: {bounce}"
    );
    assert!(bounce.contains("Auto-Submitted: auto-replied"), "{bounce}");
    // IP-literal relays sign nothing (no DNS name to publish a key under).
    assert!(!bounce.contains("DKIM-Signature"), "{bounce}");
    assert!(!inbox(&b, &b.address("bob000001")).await.contains(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_port_refuses_cleartext_sessions_unsigned_mail_and_relaying() {
    let mut b = relay_b(7);
    b.launch().await.unwrap();
    let bob = b.address("bob000001");
    create_account(&b, &bob).await;
    let tls = tls_config(&b.cert_path()).unwrap();
    let mx_addr = b.addr(b.ports.smtp);

    let mut plain = Mx::connect(mx_addr).await.unwrap();
    plain.command("EHLO peer.test").await.unwrap();
    let reply = plain
        .command("MAIL FROM:<carol0001@[127.0.0.2]>")
        .await
        .unwrap();
    assert_eq!(reply.0, 530, "{reply:?}");

    let mut mx = Mx::connect(mx_addr).await.unwrap();
    mx.starttls(&tls, mx_addr).await.unwrap();
    let carol = "carol0001@[127.0.0.2]";
    let reply = mx
        .send(carol, &[&bob], &plaintext(carol, &bob))
        .await
        .unwrap();
    assert_eq!(
        reply,
        (
            523,
            "5.7.1 Encryption Needed: Invalid Unencrypted Mail".into()
        )
    );

    let dave = "dave00001@example.org";
    let reply = mx
        .send(dave, &[&bob], &encrypted(dave, &bob, 2048))
        .await
        .unwrap();
    assert_eq!(reply, (554, "5.7.1 No DKIM signature found".into()));

    let victim = "victim001@example.org";
    let reply = mx
        .send(carol, &[victim], &encrypted(carol, victim, 2048))
        .await
        .unwrap();
    assert_eq!(reply.0, 554, "{reply:?}");
    assert!(reply.1.contains("Relay access denied"), "{reply:?}");

    assert_eq!(inbox_count(&b, &bob).await, 0, "something was stored");
    assert!(queue_empty(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounce_from_a_relay_with_a_dns_name_is_dkim_signed() {
    let mut b = relay_b(8);
    b.launch().await.unwrap();
    // SMTP only: B refuses the unknown recipient at RCPT, before it would
    // look up A's DKIM key (there is no DNS for `_relay8.test`).
    let options = RelayOptions {
        ip: ip(8, 2).into(),
        domain: Some("_relay8.test".into()),
        extra: EXTRA.into(),
    };
    let mut a = RelayProcess::configure(binary(), &options).unwrap();
    a.append_config(&b.route(false)).unwrap();
    a.launch().await.unwrap();
    let alice = a.address("alice0001");
    create_account(&a, &alice).await;
    submit_encrypted(&a, &alice, &b.address("nobody001")).await;

    let bounce = wait_for(&a, &alice, "multipart/report", DELIVERY).await;
    assert!(
        bounce.contains("From: Mail Delivery System <MAILER-DAEMON@_relay8.test>"),
        "{bounce}"
    );
    assert!(bounce.contains("Status: 5.1.1"), "{bounce}");
    let signature = bounce
        .split("DKIM-Signature:")
        .nth(1)
        .expect("a DKIM-Signature header");
    assert!(signature.contains("d=_relay8.test"), "{bounce}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_put_back_does_not_hold_retries_back() {
    let mut b = relay_b(9);
    let (mut a, clock) = relay_a_on_fake_clock(9, &b.route(true)).await;
    let (alice, bob) = (a.address("alice0001"), b.address("bob000001"));
    let (queued, _) = queue_while_down(&a, &mut b, &alice, &bob).await;
    // The retry is now due a minute ahead on A's clock.
    // A's clock was two hours fast and is corrected while A is down: the
    // stored retry time now lies two hours and a minute ahead.
    a.kill();
    clock.set("-7200").unwrap();
    b.launch().await.unwrap();
    a.launch().await.unwrap();
    // No flush: the restarted scheduler pulls the retry in by itself.
    wait_for(&b, &bob, &queued, DELIVERY).await;
    assert!(queue_empty(&a));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_put_forward_makes_retries_due_without_bouncing_them() {
    let mut b = relay_b(10);
    let (a, clock) = relay_a_on_fake_clock(10, &b.route(true)).await;
    let (alice, bob) = (a.address("alice0001"), b.address("bob000001"));
    create_account(&a, &alice).await;
    let (queued, _) = queue_while_down(&a, &mut b, &alice, &bob).await;
    // B first, then the clock: the scheduler may still be finishing the
    // failed attempt, and a retry due before B listens would fail again.
    b.launch().await.unwrap();
    // A day forward, within the two-day queue lifetime: the retry is due.
    clock.set("+1d").unwrap();
    // The next submission wakes the scheduler, which sends both.
    let next = submit_encrypted(&a, &alice, &bob).await;
    wait_for(&b, &bob, &queued, DELIVERY).await;
    wait_for(&b, &bob, &next, DELIVERY).await;
    assert!(queue_empty(&a));
    assert!(!inbox(&a, &alice).await.contains("multipart/report"));
}
