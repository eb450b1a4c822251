//! SIGKILL under load, again and again: relay A is killed at a random
//! moment of each of 20 cycles while, at once, a client submits to A for
//! a local recipient and for a recipient on relay B (A's queue drains to B
//! over `/mxdeliv`), and a client of B sends to A (B's queue delivers to A
//! over `/mxdeliv`, retrying while A is down). Afterwards every message
//! either relay acknowledged with 250 is in its recipient's INBOX exactly
//! once: none lost, none stored twice by a retry whose answer was lost.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::message::{encrypted, message_id};
use chatmail_testkit::relay::{RelayOptions, RelayProcess};
use rand::Rng;

const CYCLES: usize = 20;
const PASSWORD: &str = "kill-cycles-password";
const EXTRA: &str = "[dkim]\nalgorithm = \"ed25519\"\n\
    [limits]\nmax_user_send_per_minute = 1000000\nmax_user_send_burst = 1000000\n";
/// How long the queues may take to drain after the last cycle.
const DRAIN: Duration = Duration::from_secs(60);

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

fn ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 72, host)
}

/// (Message-ID, sender) acknowledged with 250, per recipient address.
type Acked = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

/// Logs in once, which creates the account.
async fn create_account(relay: &RelayProcess, address: &str) {
    let tls = tls_config(&relay.cert_path()).unwrap();
    drop(
        Imap::login(relay.addr(relay.ports.imaps), &tls, address, PASSWORD)
            .await
            .unwrap(),
    );
}

/// Submits to `relay` as `from` for `to` until the connection breaks (the
/// kill) or `stop` is set; records what was acknowledged.
async fn sender(
    relay: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    from: String,
    to: Vec<String>,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let Ok(mut smtp) = Smtp::login(relay, &tls, &from, PASSWORD).await else {
        return;
    };
    let to_refs: Vec<&str> = to.iter().map(String::as_str).collect();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let message = encrypted(&from, &to[0], 2048);
        match smtp.send(&from, &to_refs, &message).await {
            Ok((250, _)) => {
                let id = message_id(&message).unwrap();
                let mut acked = acked.lock().unwrap();
                for rcpt in &to {
                    acked
                        .entry(rcpt.clone())
                        .or_default()
                        .push((id.clone(), from.clone()));
                }
            }
            Ok((code, text)) => panic!("{from}: unexpected reply {code} {text}"),
            Err(_) => return, // the relay died mid-transaction
        }
    }
}

/// The Message-IDs in `address`'s INBOX, one entry per stored copy.
async fn stored(relay: &RelayProcess, address: &str) -> Vec<String> {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let mut imap = Imap::login(relay.addr(relay.ports.imaps), &tls, address, PASSWORD)
        .await
        .unwrap();
    imap.inbox_message_ids().await.unwrap()
}

/// Whether `madmail queue list` printed an empty queue: its last line is
/// "N message(s), M recipient(s) pending".
fn drained(list: &str) -> bool {
    list.lines().any(|l| l.starts_with("0 message(s),"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_mail_is_there_exactly_once_after_twenty_kills() {
    let mut a = RelayProcess::configure(binary(), &RelayOptions::on(ip(2), EXTRA)).unwrap();
    let mut b = RelayProcess::configure(binary(), &RelayOptions::on(ip(3), EXTRA)).unwrap();
    a.append_config(&b.route(true)).unwrap();
    b.append_config(&a.route(true)).unwrap();
    b.launch().await.unwrap();
    a.launch().await.unwrap();

    let (a_sender, a_local) = (a.address("asender01"), a.address("alocal001"));
    let (b_sender, b_remote) = (b.address("bsender01"), b.address("bremote01"));
    for (relay, address) in [
        (&a, &a_sender),
        (&a, &a_local),
        (&b, &b_sender),
        (&b, &b_remote),
    ] {
        create_account(relay, address).await;
    }
    let (tls_a, tls_b) = (
        tls_config(&a.cert_path()).unwrap(),
        tls_config(&b.cert_path()).unwrap(),
    );
    let acked: Acked = Arc::default();
    let mut rng = rand::rng();
    for cycle in 0..CYCLES {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let submit_a = tokio::spawn(sender(
            a.addr(a.ports.submissions),
            tls_a.clone(),
            a_sender.clone(),
            vec![a_local.clone(), b_remote.clone()],
            acked.clone(),
            stop.clone(),
        ));
        let submit_b = tokio::spawn(sender(
            b.addr(b.ports.submissions),
            tls_b.clone(),
            b_sender.clone(),
            vec![a_local.clone()],
            acked.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
        a.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        submit_a.await.unwrap();
        submit_b.await.unwrap();
        a.launch()
            .await
            .unwrap_or_else(|e| panic!("restart after kill {cycle}: {e}"));
    }

    // B's deliveries to A wait for their backoff: make them due now.
    let started = Instant::now();
    loop {
        b.cli(&["queue", "flush"]).unwrap();
        a.cli(&["queue", "flush"]).unwrap();
        let (list_a, list_b) = (
            a.cli(&["queue", "list"]).unwrap(),
            b.cli(&["queue", "list"]).unwrap(),
        );
        if drained(&list_a) && drained(&list_b) {
            break;
        }
        assert!(
            started.elapsed() < DRAIN,
            "queues not drained after {DRAIN:?}:\nA: {list_a}\nB: {list_b}"
        );
        // A submission wakes each scheduler for the flushed entries.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let acked = acked.lock().unwrap().clone();
    let mut total = 0;
    for (relay, address) in [(&a, &a_local), (&b, &b_remote)] {
        let expected = &acked[address.as_str()];
        total += expected.len();
        let mut copies: HashMap<String, usize> = HashMap::new();
        for id in stored(relay, address).await {
            *copies.entry(id).or_default() += 1;
        }
        let lost: Vec<_> = expected
            .iter()
            .filter(|(id, _)| !copies.contains_key(id))
            .collect();
        let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            lost.is_empty(),
            "{address}: {} of {} lost, the first: {:?}",
            lost.len(),
            expected.len(),
            &lost[..lost.len().min(5)]
        );
        assert!(doubled.is_empty(), "{address}: stored twice: {doubled:?}");
    }
    eprintln!(
        "{CYCLES} kills: {total} acknowledged deliveries, each stored exactly once \
         (drained in {:?})",
        started.elapsed()
    );
}
