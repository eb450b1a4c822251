//! Cheap lock-out of connection pools.
//!
//! Found before the fix: slow request heads from 6 addresses (4,096
//! connections) shut out HTTPS and IMAP over 443 for everyone; 1,000 idle
//! plain connections from 5 addresses filled SMTP (`421`) for the 5-minute
//! idle timeout; clients sending a byte every 10 s held IMAP slots forever
//! despite the 60 s pre-login timeout. Bounds now: a normal client is
//! served within 1 s during each flood; trickling clients are gone by the
//! login deadline.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Smtp, tcp_from, tls_config};
use chatmail_testkit::mx::Mx;
use chatmail_testkit::relay::RelayProcess;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;

use crate::common::{
    NORMAL, PASSWORD, attacker, login_within, raise_nofile, relay, report, tls_from, tls_with_alpn,
};

const SERVED_BOUND: Duration = Duration::from_secs(1);

/// Opens up to `count` connections with `open`, `parallel` at a time, and
/// keeps those that opened; `None` results (refused) are counted.
async fn flood<F, Fut, T>(count: usize, parallel: usize, open: F) -> (Vec<T>, usize)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Option<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut kept = Vec::new();
    let mut refused = 0;
    let mut tasks = JoinSet::new();
    for n in 0..count {
        if tasks.len() >= parallel {
            match tasks.join_next().await {
                Some(Ok(Some(held))) => kept.push(held),
                _ => refused += 1,
            }
        }
        tasks.spawn(open(n));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Some(held)) => kept.push(held),
            _ => refused += 1,
        }
    }
    (kept, refused)
}

/// `GET /` over HTTPS from 127.0.0.1; the status line and the time taken.
async fn web_page(relay: &RelayProcess) -> (String, Duration) {
    let started = Instant::now();
    let config = tls_with_alpn(relay, &[b"http/1.1"]);
    let addr = relay.addr(relay.ports.https);
    let fetch = async {
        let mut tls = tls_from("127.0.0.1".parse().unwrap(), addr, &config).await?;
        tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
        std::io::Result::Ok(
            String::from_utf8_lossy(&reply)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        )
    };
    let status = match tokio::time::timeout(SERVED_BOUND * 10, fetch).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => format!("(failed: {e})"),
        Err(_) => "(no answer)".into(),
    };
    (status, started.elapsed())
}

/// IMAP LOGIN over 443 with ALPN `imap`; the tagged reply and the time.
async fn imap_over_443(relay: &RelayProcess) -> (String, Duration) {
    let started = Instant::now();
    let config = tls_with_alpn(relay, &[b"imap"]);
    let addr = relay.addr(relay.ports.https);
    let session = async {
        let tls = tls_from("127.0.0.1".parse().unwrap(), addr, &config).await?;
        let mut tls = BufReader::new(tls);
        let mut line = String::new();
        tls.read_line(&mut line).await?;
        let login = format!("a LOGIN \"{NORMAL}\" \"{PASSWORD}\"\r\n");
        tls.write_all(login.as_bytes()).await?;
        loop {
            line.clear();
            if tls.read_line(&mut line).await? == 0 || line.starts_with("a ") {
                return std::io::Result::Ok(line.trim_end().to_owned());
            }
        }
    };
    let reply = match tokio::time::timeout(SERVED_BOUND * 10, session).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => format!("(failed: {e})"),
        Err(_) => "(no answer)".into(),
    };
    (reply, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_do_not_shut_out_https_or_imap_over_443() {
    let _serial = crate::common::SERIAL.lock().await;
    // 4096 connections of the attacker, a few of the test and the relay's
    // own descriptors need room.
    let connections = 4096.min((raise_nofile() as usize).saturating_sub(512));
    let relay = relay("", "").await;
    let config = tls_with_alpn(&relay, &[b"http/1.1"]);
    let addr = relay.addr(relay.ports.https);
    let started = Instant::now();
    let (held, refused) = flood(connections, 64, |n| {
        let config = Arc::clone(&config);
        let source = attacker(10 + (n % 6) as u8);
        async move {
            let mut tls = tls_from(source, addr, &config).await.ok()?;
            tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .ok()?;
            Some(tls)
        }
    })
    .await;
    let opened = started.elapsed();
    // Keep the heads trickling while the normal clients come.
    let held = Arc::new(tokio::sync::Mutex::new(held));
    let trickle = {
        let held = Arc::clone(&held);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                for tls in held.lock().await.iter_mut() {
                    let _ = tls.write_all(b"a").await;
                }
            }
        })
    };
    let (status, web_took) = web_page(&relay).await;
    let (imap, imap_took) = imap_over_443(&relay).await;
    trickle.abort();
    let still_held = held.lock().await.len();
    report(
        "https-slow-heads",
        &[
            ("attack_connections", connections.to_string()),
            ("held", still_held.to_string()),
            ("refused_at_open", refused.to_string()),
            ("opened_in", format!("{opened:?}")),
            ("web", format!("{status:?}")),
            ("web_took", format!("{web_took:?}")),
            ("imap_443", format!("{imap:?}")),
            ("imap_443_took", format!("{imap_took:?}")),
        ],
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(web_took < SERVED_BOUND, "web page took {web_took:?}");
    assert!(imap.contains(" OK"), "{imap}");
    assert!(imap_took < SERVED_BOUND, "IMAP over 443 took {imap_took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_plain_connections_do_not_shut_out_smtp() {
    let _serial = crate::common::SERIAL.lock().await;
    raise_nofile();
    let relay = relay("", "").await;
    let addr = relay.addr(relay.ports.smtp);
    let (held, refused) = flood(1000, 64, |n| {
        let source = attacker(20 + (n % 5) as u8);
        async move { Mx::connect_from(Some(source), addr).await.ok() }
    })
    .await;
    // A newcomer at the MX, from an address of its own...
    let peer = Mx::connect_from(Some(attacker(30)), addr).await;
    let peer = peer
        .map(|_| "220".to_owned())
        .unwrap_or_else(|e| e.to_string());
    // ...and a user submitting on 465.
    let started = Instant::now();
    let tls = tls_config(&relay.cert_path()).unwrap();
    let submit = Smtp::login(relay.addr(relay.ports.submissions), &tls, NORMAL, PASSWORD);
    let submission = tokio::time::timeout(SERVED_BOUND * 10, submit).await;
    let submit_took = started.elapsed();
    let login = login_within(&relay, SERVED_BOUND).await;
    report(
        "smtp-idle-plain",
        &[
            ("attack_connections", "1000".into()),
            ("held", held.len().to_string()),
            ("refused_at_open", refused.to_string()),
            ("mx_newcomer", format!("{peer:?}")),
            (
                "submission",
                format!("{:?}", submission.as_ref().map(|r| r.is_ok())),
            ),
            ("submission_took", format!("{submit_took:?}")),
        ],
    );
    assert_eq!(peer, "220", "a newcomer on port 25 was turned away");
    assert!(matches!(submission, Ok(Ok(_))), "submission login failed");
    assert!(
        submit_took < SERVED_BOUND,
        "submission took {submit_took:?}"
    );
    assert!(login.is_ok_and(|took| took < SERVED_BOUND));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_lose_their_imap_slots_at_the_login_deadline() {
    let _serial = crate::common::SERIAL.lock().await;
    // The default deadline is 60 s; 5 s keeps the test short.
    let relay = relay("", "login_deadline = 5").await;
    let addr = relay.addr(relay.ports.imap);
    let started = Instant::now();
    let mut clients = JoinSet::new();
    for n in 0..50u8 {
        let source: IpAddr = attacker(40 + n % 5);
        clients.spawn(async move {
            let mut tcp = tcp_from(Some(source), addr).await.unwrap();
            let mut byte = [0u8; 1];
            // The greeting, then one byte a second, never a whole line.
            let mut greeting = BufReader::new(&mut tcp);
            let mut line = String::new();
            greeting.read_line(&mut line).await.unwrap();
            loop {
                if tcp.write_all(b"a").await.is_err() {
                    break;
                }
                let read = tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut byte));
                if let Ok(Ok(0) | Err(_)) = read.await {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    return None;
                }
            }
            Some(started.elapsed())
        });
    }
    let mut latest = Duration::ZERO;
    let mut never = 0;
    while let Some(done) = clients.join_next().await {
        match done.unwrap() {
            Some(closed) => latest = latest.max(closed),
            None => never += 1,
        }
    }
    let login = login_within(&relay, SERVED_BOUND).await;
    report(
        "imap-trickle",
        &[
            ("clients", "50".into()),
            ("login_deadline_s", "5".into()),
            ("last_closed_after", format!("{latest:?}")),
            ("still_open_after_30s", never.to_string()),
        ],
    );
    assert_eq!(never, 0, "{never} trickling clients were never closed");
    assert!(
        latest < Duration::from_secs(8),
        "last closed after {latest:?}"
    );
    assert!(login.is_ok_and(|took| took < SERVED_BOUND));
}

/// Set in the copy of this test that runs inside its network namespace.
const IN_NAMESPACE: &str = "MADMAIL_ATTACK_IN_NETNS";

/// Runs `ip` with `args`; panics with its output on failure.
fn ip_command(args: &[&str]) {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace of the test's own, deleted on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_one_fifth_per_64() {
    // Regression: connection shares counted every IPv6 address apart, so
    // one host with a /64 had no share at all. Loopback here has no IPv6
    // /64, so the test runs again inside a network namespace of its own,
    // where it has.
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return ipv6_shares_in_namespace().await;
    }
    let _serial = crate::common::SERIAL.lock().await;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let name = format!("madmail-v6-{}", std::process::id());
    let added = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .output();
    if !added.as_ref().is_ok_and(|output| output.status.success()) {
        eprintln!("skipped: no network namespace could be created: {added:?}");
        return;
    }
    let namespace = Namespace(name);
    let exe = std::env::current_exe().unwrap();
    let status = tokio::process::Command::new("ip")
        .args(["netns", "exec", &namespace.0])
        .arg(&exe)
        .args([
            "slots::ipv6_clients_share_one_fifth_per_64",
            "--exact",
            "--nocapture",
        ])
        .env(IN_NAMESPACE, "1")
        .status()
        .await
        .unwrap();
    assert!(status.success(), "the test in the namespace failed");
}

/// Inside the namespace: the relay on `fd00:1::1`, one attacker /64
/// with three addresses and a second /64, pools of 10 (2 per client).
async fn ipv6_shares_in_namespace() {
    ip_command(&["link", "set", "lo", "up"]);
    let addresses = [
        "fd00:1::1",
        "fd00:64::10",
        "fd00:64::11",
        "fd00:64::12",
        "fd00:65::10",
    ];
    for address in addresses {
        ip_command(&[
            "-6",
            "addr",
            "add",
            &format!("{address}/64"),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    let options = chatmail_testkit::relay::RelayOptions {
        ip: addresses[0].parse().unwrap(),
        domain: Some("_v6.test".into()),
        extra: "[limits]\nmax_imap_connections = 10\nmax_smtp_connections = 10\n".into(),
    };
    let relay = RelayProcess::start_with(&crate::common::binary(), &options)
        .await
        .unwrap();
    let mut held = Vec::new();
    let mut greeting = async |port: u16, source: &str| -> String {
        let source: IpAddr = source.parse().unwrap();
        let mut tcp = BufReader::new(tcp_from(Some(source), relay.addr(port)).await.unwrap());
        let mut line = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_line(&mut line)).await;
        held.push(tcp);
        line.trim_end().to_owned()
    };
    let mut answers = Vec::new();
    for (service, port) in [("imap", relay.ports.imap), ("smtp", relay.ports.smtp)] {
        for source in &addresses[1..] {
            answers.push((service, *source, greeting(port, source).await));
        }
    }
    let figures: Vec<(&str, String)> = answers
        .iter()
        .map(|(service, source, answer)| {
            let word = answer
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            (*service, format!("{source}:{word:?}"))
        })
        .collect();
    report("ipv6-per-64-share", &figures);
    for (service, source, answer) in &answers {
        let refused = answer.contains("Too many connections");
        let third_of_the_64 = *source == "fd00:64::12";
        assert_eq!(
            refused, third_of_the_64,
            "{service} from {source}: {answer:?}"
        );
    }
    drop(held);
}
