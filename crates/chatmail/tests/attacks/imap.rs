//! Amplifying IMAP commands.
//!
//! Found before the fix: `FETCH` naming one body item hundreds of times
//! built the whole answer in memory (a 7 KB command against a 1 MiB
//! message: +1,051 MiB); before login an `ID` with 20,000 LITERAL+
//! literals was re-parsed after every literal (21 s of CPU, and a normal
//! LOGIN+SELECT took 20 s beside two of them); `SEARCH TEXT` with a 58 KiB
//! needle over a 1 MiB header took 5.3 s. Bounds now: FETCH peak growth
//! under 50 MiB with the body sent once; the ID attack under 2 s of relay
//! CPU with a normal login under 1 s beside it; SEARCH under 1 s.

use std::time::{Duration, Instant};

use chatmail_testkit::client::{Smtp, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::relay::RelayProcess;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::common::{
    NORMAL, PASSWORD, VICTIM, attacker, baseline_memory, login_within, mib, relay, report, tls_from,
};

/// How long a SEARCH is waited for before the measurement gives up.
const SEARCH_GIVE_UP: Duration = Duration::from_secs(60);

type Tls = BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A raw IMAP connection to 993 from an attacker address.
async fn connect(relay: &RelayProcess, source: u8) -> Tls {
    let config = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.imaps);
    let mut tls = BufReader::new(tls_from(attacker(source), addr, &config).await.unwrap());
    let mut greeting = String::new();
    tls.read_line(&mut greeting).await.unwrap();
    tls
}

/// Reads responses up to the line tagged `tag`, skipping literals without
/// keeping them; returns the bytes received and the tagged line.
async fn until_tagged(tls: &mut Tls, tag: &str) -> (u64, String) {
    let mut received = 0u64;
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        let mut line = String::new();
        if tls.read_line(&mut line).await.unwrap_or(0) == 0 {
            return (received, String::from("(closed)"));
        }
        received += line.len() as u64;
        if line.starts_with(&format!("{tag} ")) {
            return (received, line);
        }
        if let Some(mut size) = literal_size(&line) {
            received += size as u64;
            while size > 0 {
                let n = size.min(sink.len());
                tls.read_exact(&mut sink[..n]).await.unwrap();
                size -= n;
            }
        }
    }
}

fn literal_size(line: &str) -> Option<usize> {
    let inner = line.trim_end().strip_suffix('}')?;
    inner[inner.rfind('{')? + 1..].parse().ok()
}

async fn command(tls: &mut Tls, tag: &str, command: &str) -> (u64, String) {
    tls.write_all(format!("{tag} {command}\r\n").as_bytes())
        .await
        .unwrap();
    until_tagged(tls, tag).await
}

async fn select_as_victim(relay: &RelayProcess) -> Tls {
    let mut tls = connect(relay, 3).await;
    let (_, ok) = command(&mut tls, "l", &format!("LOGIN \"{VICTIM}\" \"{PASSWORD}\"")).await;
    assert!(ok.contains(" OK"), "{ok}");
    let (_, ok) = command(&mut tls, "s", "SELECT INBOX").await;
    assert!(ok.contains(" OK"), "{ok}");
    tls
}

/// Submits `message` from [`NORMAL`] to [`VICTIM`].
async fn deliver(relay: &RelayProcess, message: &[u8]) {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login(addr, &tls, NORMAL, PASSWORD).await.unwrap();
    let (code, text) = smtp.send(NORMAL, &[VICTIM], message).await.unwrap();
    assert_eq!(code, 250, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_item_named_many_times_is_sent_once() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    deliver(&relay, &encrypted(NORMAL, VICTIM, 1 << 20)).await;
    let mut tls = select_as_victim(&relay).await;
    let before = baseline_memory(&relay).await;
    let items = vec!["BODY.PEEK[]"; 600].join(" ");
    let (received, ok) = command(&mut tls, "f", &format!("FETCH 1 ({items})")).await;
    let peak = mib(relay
        .memory()
        .unwrap()
        .hwm_kib
        .saturating_sub(before.rss_kib));
    report(
        "imap-fetch-repeated-item",
        &[
            ("command_bytes", (items.len() + 12).to_string()),
            (
                "received_mib",
                format!("{:.1}", received as f64 / 1048576.0),
            ),
            ("peak_growth_mib", format!("{peak:.1}")),
        ],
    );
    assert!(ok.contains(" OK"), "{ok}");
    assert!(received < 2 << 20, "received {received} bytes");
    assert!(peak < 50.0, "peak +{peak:.1} MiB");
}

/// The ID command of the attack: `count` one-byte literals, synchronizing
/// or not.
fn id_with_literals(count: usize, sync: bool) -> Vec<u8> {
    let marker = if sync { "{1}" } else { "{1+}" };
    let mut command = b"i ID (".to_vec();
    for _ in 0..count {
        command.extend_from_slice(format!("{marker}\r\nx ").as_bytes());
    }
    command.extend_from_slice(b"NIL)\r\n");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_literals_before_login_cost_little_cpu() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let cpu_before = relay.cpu_time().unwrap();
    let mut attacks = Vec::new();
    for n in 0..2 {
        let mut tls = connect(&relay, 4 + n).await;
        attacks.push(tokio::spawn(async move {
            // LITERAL+ is not advertised; send them anyway, all at once.
            let _ = tls.write_all(&id_with_literals(20_000, false)).await;
            let _ = tls.flush().await;
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut rest)).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let login = login_within(&relay, Duration::from_secs(1)).await;
    for attack in attacks {
        let _ = attack.await;
    }
    // The synchronizing variant, one literal per continuation.
    let started = Instant::now();
    let mut tls = connect(&relay, 6).await;
    tls.write_all(b"j ID ({1}\r\n").await.unwrap();
    let mut literals = 0;
    let refusal = loop {
        let mut line = String::new();
        tls.read_line(&mut line).await.unwrap();
        if !line.starts_with('+') {
            break line;
        }
        literals += 1;
        tls.write_all(b"x {1}\r\n").await.unwrap();
        if literals > 20_000 {
            break String::from("(no refusal)");
        }
    };
    let sync_took = started.elapsed();
    let cpu = relay.cpu_time().unwrap() - cpu_before;
    report(
        "imap-id-literals",
        &[
            ("relay_cpu", format!("{cpu:?}")),
            ("login_beside", format!("{login:?}")),
            ("sync_literals_taken", literals.to_string()),
            ("sync_refused_after", format!("{sync_took:?}")),
        ],
    );
    assert!(cpu < Duration::from_secs(2), "relay CPU {cpu:?}");
    let login = login.unwrap();
    assert!(
        login < Duration::from_secs(1),
        "login beside took {login:?}"
    );
    assert!(refusal.contains("NO [TOOBIG]"), "{refusal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_with_a_long_needle_over_a_long_header_is_quick() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let message = encrypted(NORMAL, VICTIM, 4096);
    // One header line of 1 MiB: every window of the naive search compares
    // the whole needle before it fails at its last byte.
    let padded = format!("X-Padding: {}\r\n", "a".repeat(1 << 20));
    deliver(&relay, &[padded.as_bytes(), &message].concat()).await;
    let mut tls = select_as_victim(&relay).await;
    let mut needle = "a".repeat(58 * 1024);
    needle.push('b');
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let tag = format!("q{round}");
        let started = Instant::now();
        let line = format!("{tag} SEARCH TEXT {{{}}}\r\n", needle.len());
        tls.write_all(line.as_bytes()).await.unwrap();
        let mut plus = String::new();
        tls.read_line(&mut plus).await.unwrap();
        assert!(plus.starts_with('+'), "{plus}");
        tls.write_all(needle.as_bytes()).await.unwrap();
        tls.write_all(b"\r\n").await.unwrap();
        let answer = tokio::time::timeout(SEARCH_GIVE_UP, until_tagged(&mut tls, &tag)).await;
        slowest = slowest.max(started.elapsed());
        let Ok((_, ok)) = answer else {
            break; // far beyond the bound: one round says enough
        };
        assert!(ok.contains(" OK"), "{ok}");
    }
    report(
        "imap-search-long-needle",
        &[
            ("needle_kib", "58".into()),
            ("header_mib", "1".into()),
            ("slowest", format!("{slowest:?}")),
        ],
    );
    assert!(slowest < Duration::from_secs(1), "SEARCH took {slowest:?}");
}

/// Literals announced larger than anything the relay takes, before and
/// after login: refused with `NO [TOOBIG]` before the `+` that would ask
/// for them (RFC 7889), so not a byte of them is read or buffered, and the
/// session goes on. A non-synchronizing literal (`{n+}`, not advertised)
/// of that size ends the connection instead: its bytes follow unasked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_literals_are_refused_before_they_are_sent() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let before = baseline_memory(&relay).await;
    let mut tls = connect(&relay, 46).await;
    let started = Instant::now();
    tls.write_all(b"a LOGIN {2000000000}\r\n").await.unwrap();
    let (_, login) = until_tagged(&mut tls, "a").await;
    let (_, noop) = command(&mut tls, "b", "NOOP").await;
    let (_, ok) = command(&mut tls, "c", &format!("LOGIN \"{VICTIM}\" \"{PASSWORD}\"")).await;
    assert!(ok.contains(" OK"), "{ok}");
    tls.write_all(b"d APPEND INBOX {40000000}\r\n")
        .await
        .unwrap();
    let (_, append) = until_tagged(&mut tls, "d").await;
    let (_, select) = command(&mut tls, "e", "SELECT INBOX").await;
    let took = started.elapsed();
    // Non-synchronizing: the literal's bytes come right behind the line.
    tls.write_all(b"f APPEND INBOX {40000000+}\r\n")
        .await
        .unwrap();
    let unasked = vec![b'a'; 1 << 20];
    let mut written = 0usize;
    while written < 40_000_000 {
        let write = tls.write_all(&unasked);
        match tokio::time::timeout(Duration::from_secs(5), write).await {
            Ok(Ok(())) => written += unasked.len(),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let (_, plus) = until_tagged(&mut tls, "f").await;
    let login_normal = login_within(&relay, Duration::from_secs(1)).await;
    let after = relay.memory().unwrap();
    let growth = mib(after.hwm_kib.saturating_sub(before.rss_kib));
    report(
        "imap-oversized-literals",
        &[
            ("login_literal", format!("{:?}", login.trim_end())),
            ("noop_after", format!("{:?}", noop.trim_end())),
            ("append_literal", format!("{:?}", append.trim_end())),
            ("select_after", format!("{:?}", select.trim_end())),
            ("answered_in", format!("{took:?}")),
            ("non_sync_literal", format!("{:?}", plus.trim_end())),
            ("non_sync_bytes_taken", written.to_string()),
            ("peak_growth_mib", format!("{growth:.1}")),
            ("login", format!("{login_normal:?}")),
        ],
    );
    assert!(login.starts_with("a NO [TOOBIG]"), "{login}");
    assert!(noop.starts_with("b OK"), "{noop}");
    assert!(append.starts_with("d NO [TOOBIG]"), "{append}");
    assert!(select.starts_with("e OK"), "{select}");
    assert!(!plus.starts_with("f OK"), "{plus}");
    assert!(written < 40_000_000, "all of the unasked literal taken");
    assert!(growth < 40.0, "peak +{growth:.1} MiB");
    assert!(login_normal.is_ok_and(|took| took < Duration::from_secs(1)));
}
