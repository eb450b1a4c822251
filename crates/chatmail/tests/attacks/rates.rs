//! Cheap mass actions from one address: first logins, recipient probes,
//! password guesses.
//!
//! Found before the fix: first logins created 579 accounts a minute from
//! one address while `/new` was limited; port 25 answered any number of
//! recipient probes. Bounds now: the configured account rate (burst 10,
//! then 30 a minute) and unknown-recipient rate (60 a minute); 30 failed
//! logins per address in 10 minutes, then a temporary refusal without a
//! password check.

use std::time::{Duration, Instant};

use chatmail_testkit::client::tls_config;
use chatmail_testkit::mx::Mx;

use crate::common::{PASSWORD, VICTIM, attacker, login_within, relay, report, tls_from};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_logins_from_one_address_create_accounts_at_the_configured_rate() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let started = Instant::now();
    let (mut created, mut refused) = (0, 0);
    for n in 0..60 {
        let user = format!("mass{n:05}@[127.0.0.1]");
        if login_from(&relay, attacker(60), &user).await {
            created += 1;
        } else {
            refused += 1;
        }
    }
    let took = started.elapsed();
    // Burst 10 plus one account every 2 s.
    let allowed = 10 + (took.as_secs_f64() / 2.0).ceil() as u32;
    let elsewhere = login_from(&relay, attacker(61), "other0001@[127.0.0.1]").await;
    report(
        "jit-account-creation",
        &[
            ("attempts", "60".into()),
            ("created", created.to_string()),
            ("refused", refused.to_string()),
            ("took", format!("{took:?}")),
            ("allowed", allowed.to_string()),
        ],
    );
    assert!(created <= allowed, "{created} accounts in {took:?}");
    assert!(created >= 10, "the burst is allowed");
    assert!(elsewhere, "another address creates its own");
}

/// A first login from `source` over 993; whether it succeeded.
async fn login_from(
    relay: &chatmail_testkit::relay::RelayProcess,
    source: std::net::IpAddr,
    user: &str,
) -> bool {
    login_reply(relay, source, user, PASSWORD)
        .await
        .starts_with("OK")
}

/// A LOGIN from `source` over 993; the tagged reply after the tag.
async fn login_reply(
    relay: &chatmail_testkit::relay::RelayProcess,
    source: std::net::IpAddr,
    user: &str,
    password: &str,
) -> String {
    let config = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.imaps);
    login_at(&config, addr, source, user, password).await
}

/// A LOGIN from `source` to the IMAP server at `addr` over TLS.
async fn login_at(
    config: &std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    source: std::net::IpAddr,
    user: &str,
    password: &str,
) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let tls = tls_from(source, addr, config).await.unwrap();
    let mut tls = BufReader::new(tls);
    let mut line = String::new();
    tls.read_line(&mut line).await.unwrap();
    let login = format!("a LOGIN \"{user}\" \"{password}\"\r\n");
    tls.write_all(login.as_bytes()).await.unwrap();
    loop {
        line.clear();
        if tls.read_line(&mut line).await.unwrap() == 0 {
            return "(closed)".into();
        }
        if let Some(status) = line.strip_prefix("a ") {
            return status.trim_end().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_from_one_address_is_throttled() {
    let _serial = crate::common::SERIAL.lock().await;
    // The defaults: 30 failures per address in 600 s.
    let relay = relay("", "").await;
    let cpu_before = relay.cpu_time().unwrap();
    let started = Instant::now();
    // Eight guessers at once, each on a new connection per guess.
    let mut guessers = tokio::task::JoinSet::new();
    for guesser in 0..8 {
        let config = tls_config(&relay.cert_path()).unwrap();
        let addr = relay.addr(relay.ports.imaps);
        guessers.spawn(async move {
            let mut replies = Vec::new();
            for n in 0..25 {
                let guess = format!("guess-{guesser}-{n:02}");
                replies.push(login_at(&config, addr, attacker(63), VICTIM, &guess).await);
            }
            replies
        });
    }
    let (mut checked, mut throttled) = (0, 0);
    while let Some(replies) = guessers.join_next().await {
        for reply in replies.unwrap() {
            if reply.contains("[AUTHENTICATIONFAILED]") {
                checked += 1;
            } else if reply.contains("[UNAVAILABLE]") {
                throttled += 1;
            } else {
                panic!("{reply}");
            }
        }
    }
    let took = started.elapsed();
    let cpu = relay.cpu_time().unwrap().saturating_sub(cpu_before);
    // The victim, from elsewhere, and a normal client are not locked out.
    let victim = login_reply(&relay, attacker(64), VICTIM, PASSWORD).await;
    let normal = login_within(&relay, Duration::from_secs(1)).await;
    report(
        "password-guessing",
        &[
            ("guesses", "200".into()),
            ("checked", checked.to_string()),
            ("throttled", throttled.to_string()),
            ("took", format!("{took:?}")),
            ("relay_cpu", format!("{cpu:?}")),
            ("victim_elsewhere", format!("{victim:?}")),
            ("normal_login", format!("{normal:?}")),
        ],
    );
    // 30, then one more per 20 s.
    let allowed = 30 + (took.as_secs() / 20) as u32 + 1;
    assert!(
        checked <= allowed,
        "{checked} passwords checked in {took:?}"
    );
    assert!(throttled >= 200 - allowed);
    assert!(victim.starts_with("OK"), "{victim}");
    assert!(normal.is_ok_and(|took| took < Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_unknown_recipients_on_port_25_is_slowed_down() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.smtp);
    let mut mx = Mx::connect_from(Some(attacker(62)), addr).await.unwrap();
    mx.starttls(&tls, addr).await.unwrap();
    let (code, _) = mx
        .command("MAIL FROM:<prober01@[127.0.1.62]>")
        .await
        .unwrap();
    assert_eq!(code, 250);
    let started = Instant::now();
    let (mut unknown, mut slowed) = (0, 0);
    for n in 0..200 {
        let (code, text) = mx
            .command(&format!("RCPT TO:<guess{n:04}@[127.0.0.1]>"))
            .await
            .unwrap();
        match code {
            550 => unknown += 1,
            450 => slowed += 1,
            other => panic!("unexpected {other} {text}"),
        }
    }
    let took = started.elapsed();
    report(
        "mx-recipient-probing",
        &[
            ("probes", "200".into()),
            ("answered_unknown", unknown.to_string()),
            ("slowed_450", slowed.to_string()),
            ("took", format!("{took:?}")),
        ],
    );
    let allowed = 60 + took.as_secs() as u32 + 1;
    assert!(unknown <= allowed, "{unknown} probes answered in {took:?}");
    assert!(slowed > 0);
}
