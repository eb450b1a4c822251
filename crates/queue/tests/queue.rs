//! The queue against a real SQLite store and a scripted peer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmail_dkim::{Algorithm, DkimKey, StaticTxt};
use chatmail_queue::{Deliver, Queue, QueueOptions};
use chatmail_store::{AccountId, QueueState, Store, StoreOptions};
use chatmail_transport::{Outcome, Report, Via};
use tokio_util::sync::CancellationToken;

const ALICE: &str = "alice@example.org";

/// What the peer received: (domain, sender, recipients, message).
type Received = (String, Option<String>, Vec<String>, Vec<u8>);

/// A peer relay that answers by the recipient's local part: `reject...`
/// is refused, `down...` always fails temporarily, `flaky...` fails twice
/// then accepts, anything else is accepted.
#[derive(Default)]
struct Peer {
    received: Mutex<Vec<Received>>,
    tries: Mutex<HashMap<String, usize>>,
    /// Time each delivery takes.
    delay: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Peer {
    fn answer(&self, rcpt: &str) -> Outcome {
        let mut tries = self.tries.lock().unwrap();
        let n = tries.entry(rcpt.to_owned()).or_default();
        *n += 1;
        match rcpt.split('@').next().unwrap_or("") {
            l if l.starts_with("reject") => Outcome::Permanent("550 5.1.1 no such user".into()),
            l if l.starts_with("down") => Outcome::Temporary("421 4.3.2 try later".into()),
            l if l.starts_with("flaky") && *n <= 2 => Outcome::Temporary("451 4.3.0 busy".into()),
            _ => Outcome::Delivered,
        }
    }

    fn tries(&self, rcpt: &str) -> usize {
        self.tries.lock().unwrap().get(rcpt).copied().unwrap_or(0)
    }

    fn delivered_to(&self, rcpt: &str) -> usize {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|r| r.2.iter().any(|x| x == rcpt))
            .count()
    }
}

impl Deliver for Peer {
    async fn deliver(
        &self,
        domain: &str,
        sender: Option<&str>,
        recipients: &[String],
        message: &[u8],
    ) -> Report {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        let results: Vec<(String, Outcome)> = recipients
            .iter()
            .map(|r| (r.clone(), self.answer(r)))
            .collect();
        let accepted: Vec<String> = results
            .iter()
            .filter(|(_, o)| *o == Outcome::Delivered)
            .map(|(r, _)| r.clone())
            .collect();
        if !accepted.is_empty() {
            let copy = (
                domain.to_owned(),
                sender.map(str::to_owned),
                accepted,
                message.to_vec(),
            );
            self.received.lock().unwrap().push(copy);
        }
        Report {
            via: Some(Via::MxDeliv),
            results,
        }
    }
}

struct Relay {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    dkim: Arc<DkimKey>,
    settings: Arc<chatmail_config::Settings>,
}

impl Relay {
    fn new() -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("madmail.db");
        let der = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
        let dkim = Arc::new(DkimKey::from_pkcs8_der("opendkim", &der).unwrap());
        let settings = chatmail_config::parse(
            "mail_domain = \"example.org\"\n[tls]\nmode = \"self-signed\"\n",
        )
        .unwrap();
        Relay {
            _dir: dir,
            path,
            dkim,
            settings: Arc::new(settings),
        }
    }

    async fn store(&self) -> Store {
        Store::open(StoreOptions {
            path: self.path.clone(),
            max_batch: 64,
        })
        .await
        .unwrap()
    }

    async fn start(
        &self,
        store: &Store,
        peer: &Arc<Peer>,
        options: QueueOptions,
    ) -> (Queue, CancellationToken) {
        let shutdown = CancellationToken::new();
        let queue = Queue::start_with(
            store.clone(),
            peer.clone(),
            self.dkim.clone(),
            self.settings.clone(),
            options,
            shutdown.clone(),
        )
        .await
        .unwrap();
        (queue, shutdown)
    }
}

fn fast(max_parallel: usize) -> QueueOptions {
    QueueOptions {
        backoff: vec![Duration::from_millis(50)],
        lifetime: Duration::from_secs(60),
        max_parallel,
    }
}

fn message(subject: &str) -> bytes::Bytes {
    let text = format!(
        "From: <{ALICE}>\r\nTo: <bob@peer.test>\r\nSubject: {subject}\r\n\
         Message-ID: <m1@example.org>\r\nContent-Type: multipart/encrypted\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\nsecret\r\n-----END PGP MESSAGE-----\r\n"
    );
    bytes::Bytes::from(text)
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn alice(store: &Store) -> AccountId {
    match store.create_account(ALICE, "x").await.unwrap() {
        chatmail_store::Created::New(a) | chatmail_store::Created::Existing(a) => a.id,
    }
}

/// Polls `check` for up to 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn inbox(store: &Store, account: AccountId) -> Vec<Vec<u8>> {
    let mailbox = store.mailbox(account, "INBOX").await.unwrap().unwrap();
    let mut bodies = Vec::new();
    for uid in store.uids(mailbox.id).await.unwrap() {
        bodies.push(store.body(mailbox.id, uid).await.unwrap().unwrap().to_vec());
    }
    bodies
}

#[tokio::test]
async fn submitted_message_is_signed_and_delivered_then_leaves_the_queue() {
    let relay = Relay::new();
    let store = relay.store().await;
    let peer = Arc::new(Peer::default());
    let (queue, _stop) = relay.start(&store, &peer, fast(4)).await;
    queue
        .submit(
            ALICE,
            &rcpts(&["bob@peer.test", "carol@other.test"]),
            message("hi"),
        )
        .await
        .unwrap();
    eventually("both domains delivered", async || {
        peer.delivered_to("bob@peer.test") == 1 && peer.delivered_to("carol@other.test") == 1
    })
    .await;
    let received = peer.received.lock().unwrap().clone();
    let domains: Vec<&str> = received.iter().map(|r| r.0.as_str()).collect();
    assert!(domains.contains(&"peer.test") && domains.contains(&"other.test"));
    let (_, sender, _, body) = &received[0];
    assert_eq!(sender.as_deref(), Some(ALICE));
    assert!(body.starts_with(b"DKIM-Signature:"));
    let mut txt = StaticTxt::new();
    txt.insert_key(&relay.dkim, "example.org");
    chatmail_dkim::Verifier::new()
        .verify(body, "example.org", &txt)
        .await
        .unwrap();
    eventually("queue empty", async || {
        queue.entries().await.unwrap().is_empty()
    })
    .await;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.messages, stats.delivered_mxdeliv), (0, 2));
}

#[tokio::test]
async fn temporary_failures_are_retried_until_delivered() {
    let relay = Relay::new();
    let store = relay.store().await;
    let peer = Arc::new(Peer::default());
    let (queue, _stop) = relay.start(&store, &peer, fast(4)).await;
    queue
        .submit(ALICE, &rcpts(&["flaky@peer.test"]), message("retry"))
        .await
        .unwrap();
    eventually("delivered on the third try", async || {
        peer.delivered_to("flaky@peer.test") == 1
    })
    .await;
    assert_eq!(peer.tries("flaky@peer.test"), 3);
    eventually("queue empty", async || {
        queue.entries().await.unwrap().is_empty()
    })
    .await;
    assert_eq!(queue.stats().await.unwrap().deferred, 2);
}

#[tokio::test]
async fn pending_recipients_wait_for_their_backoff() {
    let relay = Relay::new();
    let store = relay.store().await;
    let peer = Arc::new(Peer::default());
    let options = QueueOptions {
        backoff: vec![Duration::from_secs(3600)],
        ..fast(4)
    };
    let (queue, _stop) = relay.start(&store, &peer, options).await;
    queue
        .submit(ALICE, &rcpts(&["down@peer.test"]), message("wait"))
        .await
        .unwrap();
    eventually("first try", async || peer.tries("down@peer.test") == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        peer.tries("down@peer.test"),
        1,
        "retried before its backoff"
    );
    let entries = queue.entries().await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].state, entries[0].attempts),
        (QueueState::Pending, 1)
    );
    assert_eq!(
        entries[0].last_error.as_deref(),
        Some("421 4.3.2 try later")
    );
    assert_eq!(queue.flush().await.unwrap(), 1);
    eventually("flush retries now", async || {
        peer.tries("down@peer.test") == 2
    })
    .await;
}

#[tokio::test]
async fn permanent_failure_bounces_a_signed_report_into_the_senders_inbox() {
    let relay = Relay::new();
    let store = relay.store().await;
    let alice = alice(&store).await;
    let peer = Arc::new(Peer::default());
    let (queue, _stop) = relay.start(&store, &peer, fast(4)).await;
    let to = rcpts(&["reject@peer.test", "bob@peer.test"]);
    queue
        .submit(ALICE, &to, message("bounce me"))
        .await
        .unwrap();
    eventually("bounce stored", async || {
        inbox(&store, alice).await.len() == 1
    })
    .await;
    let dsn = String::from_utf8(inbox(&store, alice).await.remove(0)).unwrap();
    assert!(dsn.starts_with("DKIM-Signature:"), "{dsn}");
    assert!(dsn.contains("From: Mail Delivery System <MAILER-DAEMON@example.org>\r\n"));
    assert!(dsn.contains("Auto-Submitted: auto-replied\r\n"));
    assert!(dsn.contains("multipart/report; report-type=delivery-status"));
    assert!(dsn.contains(
        "Final-Recipient: rfc822; reject@peer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    ));
    assert!(dsn.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
    assert!(
        !dsn.contains("bob@peer.test>:"),
        "a delivered recipient is not reported"
    );
    assert!(dsn.contains("Subject: bounce me\r\n") && !dsn.contains("secret"));
    let mut txt = StaticTxt::new();
    txt.insert_key(&relay.dkim, "example.org");
    chatmail_dkim::Verifier::new()
        .verify(dsn.as_bytes(), "example.org", &txt)
        .await
        .unwrap();
    assert_eq!(peer.delivered_to("bob@peer.test"), 1);
    eventually("queue empty", async || {
        queue.entries().await.unwrap().is_empty()
    })
    .await;
    assert_eq!(queue.stats().await.unwrap().bounces, 1);
}

#[tokio::test]
async fn expired_messages_bounce_with_the_last_error() {
    let relay = Relay::new();
    let store = relay.store().await;
    let alice = alice(&store).await;
    let peer = Arc::new(Peer::default());
    let options = QueueOptions {
        lifetime: Duration::from_millis(400),
        ..fast(4)
    };
    let (queue, _stop) = relay.start(&store, &peer, options).await;
    queue
        .submit(ALICE, &rcpts(&["down@peer.test"]), message("late"))
        .await
        .unwrap();
    eventually("expiry bounce", async || {
        inbox(&store, alice).await.len() == 1
    })
    .await;
    assert!(peer.tries("down@peer.test") >= 2);
    let dsn = String::from_utf8(inbox(&store, alice).await.remove(0)).unwrap();
    assert!(dsn.contains("Status: 4.4.7\r\n"), "{dsn}");
    assert!(dsn.contains("last error: 421 4.3.2 try later"));
    eventually("queue empty", async || {
        queue.entries().await.unwrap().is_empty()
    })
    .await;
}

#[tokio::test]
async fn null_sender_failures_are_never_bounced() {
    let relay = Relay::new();
    let store = relay.store().await;
    let alice = alice(&store).await;
    let peer = Arc::new(Peer::default());
    let (queue, _stop) = relay.start(&store, &peer, fast(4)).await;
    queue
        .submit("", &rcpts(&["reject@peer.test"]), message("dsn"))
        .await
        .unwrap();
    eventually("given up", async || peer.tries("reject@peer.test") == 1).await;
    eventually("queue empty", async || {
        queue.entries().await.unwrap().is_empty()
    })
    .await;
    assert!(inbox(&store, alice).await.is_empty());
    assert_eq!(queue.stats().await.unwrap().failed, 1);
}

#[tokio::test]
async fn queued_mail_survives_a_restart() {
    let relay = Relay::new();
    let peer = Arc::new(Peer::default());
    {
        let store = relay.store().await;
        let (queue, stop) = relay.start(&store, &peer, fast(4)).await;
        stop.cancel();
        queue.stopped().await.unwrap();
        queue
            .submit(ALICE, &rcpts(&["bob@peer.test"]), message("later"))
            .await
            .unwrap();
        store.close().await;
    }
    assert_eq!(peer.tries("bob@peer.test"), 0);
    let store = relay.store().await;
    assert_eq!(store.queue_entries().await.unwrap().len(), 1);
    let (queue, _stop) = relay.start(&store, &peer, fast(4)).await;
    eventually("delivered after restart", async || {
        peer.delivered_to("bob@peer.test") == 1
    })
    .await;
    eventually("queue empty", async || {
        queue.entries().await.unwrap().is_empty()
    })
    .await;
}

#[tokio::test]
async fn parallel_attempts_stay_within_the_bound() {
    let relay = Relay::new();
    let store = relay.store().await;
    let peer = Arc::new(Peer {
        delay: Duration::from_millis(100),
        ..Peer::default()
    });
    let (queue, _stop) = relay.start(&store, &peer, fast(3)).await;
    for i in 0..12 {
        let to = rcpts(&[&format!("user{i}@d{i}.test")]);
        queue.submit(ALICE, &to, message("many")).await.unwrap();
    }
    eventually("all delivered", async || {
        peer.received.lock().unwrap().len() == 12
    })
    .await;
    assert_eq!(peer.max_running.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn purge_drops_everything_without_bouncing() {
    let relay = Relay::new();
    let store = relay.store().await;
    let alice = alice(&store).await;
    let peer = Arc::new(Peer::default());
    let options = QueueOptions {
        backoff: vec![Duration::from_secs(3600)],
        ..fast(4)
    };
    let (queue, _stop) = relay.start(&store, &peer, options).await;
    queue
        .submit(ALICE, &rcpts(&["down@a.test", "down@b.test"]), message("x"))
        .await
        .unwrap();
    eventually("both tried", async || {
        peer.tries("down@a.test") + peer.tries("down@b.test") == 2
    })
    .await;
    assert_eq!(queue.stats().await.unwrap().recipients, 2);
    assert_eq!(queue.purge().await.unwrap(), 1);
    assert!(queue.entries().await.unwrap().is_empty());
    assert!(inbox(&store, alice).await.is_empty());
}
