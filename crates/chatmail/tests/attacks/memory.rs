//! Unauthenticated memory exhaustion: message bodies held open one byte
//! short of their end, over HTTP/2 `POST /mxdeliv` and port-25 DATA.
//!
//! Found before the fix: 50 HTTP/2 streams of 25 MB pinned +1,265 MiB
//! (still 1.2 GiB after the connections closed); 20 port-25 DATA streams
//! of 28 MB +555 MiB. Bounds now: peak RSS within 150 MiB of the baseline
//! while the bodies are held, within 50 MiB of it once the attacker is
//! gone, and a normal login within 1 s meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatmail_testkit::client::tls_config;
use chatmail_testkit::mx::Mx;
use chatmail_testkit::relay::{Memory, RelayProcess};
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::common::{
    VICTIM, attacker, baseline_memory, login_within, mib, relay, report, tls_from, tls_with_alpn,
};

/// Peak resident growth allowed while the bodies are held.
const HELD_BOUND_MIB: f64 = 150.0;
/// Resident growth allowed once the attacker has gone.
const AFTER_BOUND_MIB: f64 = 50.0;
/// A normal login during the attack.
const LOGIN_BOUND: Duration = Duration::from_secs(1);
const CHUNK: usize = 256 * 1024;

/// How the held bodies ended up.
#[derive(Default)]
struct Tally {
    /// Sent all but the last byte and held.
    held: AtomicUsize,
    /// Refused (or reset) before that.
    refused: AtomicUsize,
}

impl Tally {
    fn settled(&self) -> usize {
        self.held.load(Ordering::SeqCst) + self.refused.load(Ordering::SeqCst)
    }
}

/// Waits until `n` bodies are held or refused (at most `limit`).
async fn settle(tally: &Tally, n: usize, limit: Duration) {
    let started = Instant::now();
    while tally.settled() < n && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Measures the relay during and after an attack (launched after
/// `before` was read) that `stop` ends, then asserts the bounds.
async fn measure(
    relay: &RelayProcess,
    before: Memory,
    attack: &str,
    tally: &Tally,
    bodies: usize,
    stop: impl FnOnce(),
) {
    settle(tally, bodies, Duration::from_secs(120)).await;
    let login = login_within(relay, LOGIN_BOUND).await;
    let during = relay.memory().unwrap();
    stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = relay.memory().unwrap();
    let peak = mib(during.hwm_kib.saturating_sub(before.rss_kib));
    let left = mib(after.rss_kib.saturating_sub(before.rss_kib));
    report(
        attack,
        &[
            ("bodies", bodies.to_string()),
            ("held", tally.held.load(Ordering::SeqCst).to_string()),
            ("refused", tally.refused.load(Ordering::SeqCst).to_string()),
            ("baseline_rss_mib", format!("{:.1}", mib(before.rss_kib))),
            ("peak_growth_mib", format!("{peak:.1}")),
            ("after_growth_mib", format!("{left:.1}")),
            ("login", format!("{login:?}")),
        ],
    );
    assert!(tally.settled() >= bodies, "the attack did not settle");
    assert!(peak < HELD_BOUND_MIB, "peak +{peak:.1} MiB");
    assert!(left < AFTER_BOUND_MIB, "left +{left:.1} MiB");
    let login = login.unwrap();
    assert!(login < LOGIN_BOUND, "normal login took {login:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_http2_bodies_cost_bounded_memory() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let before = baseline_memory(&relay).await;
    let (streams, size) = (50, 25_000_000);
    let tally = Arc::new(Tally::default());
    let config = tls_with_alpn(&relay, &[b"h2"]);
    let addr = relay.addr(relay.ports.https);
    let mut held = Vec::new();
    // Several connections: the relay allows 16 streams on each.
    for connection in 0..4 {
        let tls = tls_from(attacker(1), addr, &config).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(tls);
        let executor = hyper_util::rt::TokioExecutor::new();
        let (sender, conn) = hyper::client::conn::http2::handshake(executor, io)
            .await
            .unwrap();
        held.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        for _ in (connection..streams).step_by(4) {
            held.push(tokio::spawn(post_held(
                sender.clone(),
                size,
                Arc::clone(&tally),
            )));
        }
    }
    measure(&relay, before, "http2-held-bodies", &tally, streams, || {
        held.iter().for_each(tokio::task::JoinHandle::abort)
    })
    .await;
}

/// A request body fed through a channel, so the sender decides when (and
/// whether) the last byte comes.
struct Fed(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Fed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// `POST /mxdeliv` of `size` bytes to [`VICTIM`], all but the last byte
/// sent, then held until the task is aborted.
async fn post_held(
    mut sender: hyper::client::conn::http2::SendRequest<Fed>,
    size: usize,
    tally: Arc<Tally>,
) {
    let (tx, rx) = mpsc::channel(4);
    let request = hyper::Request::post("https://127.0.0.1/mxdeliv")
        .header("x-mail-from", "sender01@[127.0.1.1]")
        .header("x-mail-to", VICTIM)
        .header("content-length", size)
        .body(Fed(rx))
        .unwrap();
    let response = tokio::spawn(async move { sender.send_request(request).await });
    let chunk = Bytes::from(vec![b'a'; CHUNK]);
    let mut left = size - 1;
    while left > 0 {
        let n = left.min(CHUNK);
        if tx.send(chunk.slice(..n)).await.is_err() {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            return;
        }
        left -= n;
        if response.is_finished() {
            tally.refused.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    // Flow control: the last chunk may still wait for window; once the
    // channel has room again the relay has taken it.
    let _ = tx.reserve().await;
    tally.held.fetch_add(1, Ordering::SeqCst);
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_smtp_data_costs_bounded_memory() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let before = baseline_memory(&relay).await;
    let (streams, size) = (20, 28_000_000);
    let tally = Arc::new(Tally::default());
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.smtp);
    let mut held = Vec::new();
    for _ in 0..streams {
        let (tls, tally) = (Arc::clone(&tls), Arc::clone(&tally));
        held.push(tokio::spawn(async move {
            let mut mx = Mx::connect_from(Some(attacker(2)), addr).await.unwrap();
            mx.starttls(&tls, addr).await.unwrap();
            for (line, code) in [
                ("MAIL FROM:<sender02@[127.0.1.2]>".to_owned(), 250),
                (format!("RCPT TO:<{VICTIM}>"), 250),
                ("DATA".to_owned(), 354),
            ] {
                let (got, text) = mx.command(&line).await.unwrap();
                assert_eq!(got, code, "{line}: {text}");
            }
            let mut line = vec![b'a'; 998];
            line.extend_from_slice(b"\r\n");
            let chunk: Vec<u8> = line.repeat(CHUNK / 1000);
            let mut sent = 0;
            while sent + chunk.len() < size {
                if mx.write(&chunk).await.is_err() {
                    tally.refused.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                sent += chunk.len();
            }
            tally.held.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }));
    }
    measure(&relay, before, "smtp-held-data", &tally, streams, || {
        held.iter().for_each(tokio::task::JoinHandle::abort)
    })
    .await;
}
