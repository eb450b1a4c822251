//! The Prometheus endpoint of a real relay process: counters move with
//! real logins and submissions, and nothing listens unless it is enabled.
//! Each test runs its relay on its own loopback address (`127.0.6N.2`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::message::{encrypted, plaintext};
use chatmail_testkit::relay::{RelayOptions, RelayProcess, closed_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "metrics-test-password";
/// ed25519 keys: generating RSA keys in a debug build is slow.
const DKIM: &str = "[dkim]\nalgorithm = \"ed25519\"\n";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

/// A relay on `ip` whose metrics endpoint is configured on a free port of
/// `ip`, enabled or not; returns it with the endpoint's address.
async fn relay(ip: Ipv4Addr, enabled: bool) -> (RelayProcess, SocketAddr) {
    let metrics = SocketAddr::new(ip.into(), closed_port(ip).unwrap());
    let extra = format!("{DKIM}[metrics]\nenabled = {enabled}\nlisten = \"{metrics}\"\n");
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    (relay, metrics)
}

/// `GET /metrics` over plain HTTP/1.1: the status line and the body.
async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut reply));
    read.await.unwrap().unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of `series` (name with labels) in an exposition.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Scrapes until `series` has `expected` (at most 5 s).
async fn settles(metrics: SocketAddr, series: &str, expected: f64) {
    let mut last = f64::NAN;
    for _ in 0..50 {
        last = value(&scrape(metrics).await.1, series);
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{series} stayed at {last}, expected {expected}");
}

/// Every word of the exposition that reads as an IP address.
fn ip_addresses(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .filter(|word| word.parse::<IpAddr>().is_ok())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn counters_follow_logins_and_submissions_and_name_nobody() {
    let ip = Ipv4Addr::new(127, 0, 61, 2);
    let (relay, metrics) = relay(ip, true).await;
    let (status, before) = scrape(metrics).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        value(&before, "madmail_logins_total{outcome=\"created\"}"),
        0.0
    );

    let tls = tls_config(&relay.cert_path()).unwrap();
    let alice = relay.address("metrics01");
    let imaps = relay.addr(relay.ports.imaps);
    // First login creates the account; the session stays open.
    let _imap = Imap::login(imaps, &tls, &alice, PASSWORD).await.unwrap();
    assert!(
        Imap::login(imaps, &tls, &alice, "wrong-password")
            .await
            .is_err()
    );
    let submissions = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login(submissions, &tls, &alice, PASSWORD)
        .await
        .unwrap();
    let (code, _) = smtp
        .send(&alice, &[&alice], &plaintext(&alice, &alice))
        .await
        .unwrap();
    assert_eq!(code, 523);
    let (code, _) = smtp
        .send(&alice, &[&alice], &encrypted(&alice, &alice, 2048))
        .await
        .unwrap();
    assert_eq!(code, 250);

    let (_, after) = scrape(metrics).await;
    let logins = |outcome: &str| {
        value(
            &after,
            &format!("madmail_logins_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(logins("created"), 1.0);
    assert_eq!(logins("ok"), 1.0);
    assert_eq!(logins("failed"), 1.0);
    assert_eq!(logins("throttled"), 0.0);
    assert_eq!(value(&after, "madmail_accounts_created_total"), 1.0);
    let refused = "madmail_messages_refused_total{source=\"submission\",reason=\"unencrypted\"}";
    assert_eq!(value(&after, refused), 1.0);
    let accepted = "madmail_messages_accepted_total{source=\"submission\"}";
    assert_eq!(value(&after, accepted), 1.0);
    // The IMAP session and the SMTP session are open right now (the
    // failed login's connection closes on its own time).
    settles(metrics, "madmail_connections{protocol=\"imap\"}", 1.0).await;
    assert_eq!(
        value(&after, "madmail_connections{protocol=\"submission\"}"),
        1.0
    );
    assert_eq!(value(&after, "madmail_queue_messages"), 0.0);
    // No address, user or IP address anywhere.
    assert!(!after.contains('@'), "{after}");
    assert_eq!(ip_addresses(&after), Vec::<String>::new());
    assert_eq!(ip_addresses("peer=\"127.0.0.1\" ::1"), ["127.0.0.1", "::1"]);
    drop(smtp);
}

#[tokio::test]
async fn nothing_listens_when_metrics_are_disabled() {
    let ip = Ipv4Addr::new(127, 0, 62, 2);
    let (relay, metrics) = relay(ip, false).await;
    assert!(relay.is_running());
    let refused = tokio::net::TcpStream::connect(metrics).await;
    assert!(refused.is_err(), "something listens on {metrics}");
}
