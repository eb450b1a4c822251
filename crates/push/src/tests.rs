//! End-to-end: a real HTTP server on 127.0.0.1 records the bodies it is
//! posted and answers with scripted statuses.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chatmail_store::{AccountId, Created, Store, StoreOptions};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

/// Statuses to answer per body, in order; 200 once the script is used up.
type Script = Arc<Mutex<HashMap<String, VecDeque<u16>>>>;

#[derive(Clone)]
struct Server {
    script: Script,
    posts: mpsc::UnboundedSender<String>,
}

async fn notify_handler(State(server): State<Server>, body: String) -> StatusCode {
    let status = server
        .script
        .lock()
        .unwrap()
        .get_mut(&body)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    server.posts.send(body).unwrap();
    StatusCode::from_u16(status).unwrap()
}

/// Starts the recording server; returns its URL, the script and the
/// stream of posted bodies.
async fn notification_server() -> (String, Script, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    let (posts, rx) = mpsc::unbounded_channel();
    let script = Script::default();
    let server = Server {
        script: script.clone(),
        posts,
    };
    let app = axum::Router::new()
        .route("/notify", axum::routing::post(notify_handler))
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, script, rx)
}

async fn open(dir: &std::path::Path) -> Store {
    Store::open(StoreOptions {
        path: dir.join("mail.sqlite"),
        max_batch: 16,
    })
    .await
    .unwrap()
}

async fn account_with_tokens(store: &Store, address: &str, tokens: &[&str]) -> AccountId {
    let account = match store.create_account(address, "hash").await.unwrap() {
        Created::New(a) | Created::Existing(a) => a.id,
    };
    for token in tokens {
        store
            .add_user_metadata(account, DEVICE_TOKEN, token)
            .await
            .unwrap();
    }
    account
}

/// Starts push against `url` with a 1 ms backoff unit.
fn start(store: &Store, url: &str) -> (Push, CancellationToken) {
    let mut options = PushOptions::new(url);
    options.retry_unit = Duration::from_millis(1);
    let (push, worker) = Push::new(store.clone(), options).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));
    (push, stop)
}

async fn next_post(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap()
}

/// Waits until the push queue is empty.
async fn drained(store: &Store) {
    for _ in 0..500 {
        if store.push_entries().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("push queue not drained");
}

#[tokio::test]
async fn posts_each_device_token_as_the_exact_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (url, _, mut posts) = notification_server().await;
    let bob = account_with_tokens(&store, "bob@example.org", &["phone-AQID", "tablet+/="]).await;
    let (push, _stop) = start(&store, &url);
    push.notify(&[bob]);
    let mut got = vec![next_post(&mut posts).await, next_post(&mut posts).await];
    got.sort();
    assert_eq!(got, ["phone-AQID", "tablet+/="]);
    drained(&store).await;
    assert_eq!(
        store.user_metadata(bob, DEVICE_TOKEN).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn gone_token_is_removed_from_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (url, script, mut posts) = notification_server().await;
    script.lock().unwrap().insert("stale".into(), [410].into());
    let bob = account_with_tokens(&store, "bob@example.org", &["stale", "fresh"]).await;
    let (push, _stop) = start(&store, &url);
    push.notify(&[bob]);
    next_post(&mut posts).await;
    next_post(&mut posts).await;
    drained(&store).await;
    assert_eq!(
        store.user_metadata(bob, DEVICE_TOKEN).await.unwrap(),
        ["fresh"]
    );
}

#[tokio::test]
async fn failed_notification_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (url, script, mut posts) = notification_server().await;
    script
        .lock()
        .unwrap()
        .insert("tok".into(), [500, 503].into());
    let bob = account_with_tokens(&store, "bob@example.org", &["tok"]).await;
    let (push, _stop) = start(&store, &url);
    push.notify(&[bob]);
    for _ in 0..3 {
        assert_eq!(next_post(&mut posts).await, "tok");
    }
    drained(&store).await;
    assert!(script.lock().unwrap()["tok"].is_empty());
    assert_eq!(
        store.user_metadata(bob, DEVICE_TOKEN).await.unwrap(),
        ["tok"]
    );
}

#[tokio::test]
async fn accounts_without_tokens_cause_no_post() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (url, _, mut posts) = notification_server().await;
    let alice = account_with_tokens(&store, "alice@example.org", &[]).await;
    let bob = account_with_tokens(&store, "bob@example.org", &["bob-token"]).await;
    let (push, _stop) = start(&store, &url);
    push.notify(&[alice]);
    push.notify(&[bob]);
    assert_eq!(next_post(&mut posts).await, "bob-token");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(posts.try_recv().is_err());
}

#[tokio::test]
async fn pending_notifications_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Nothing listens here: every attempt fails; a long unit keeps the row.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}/notify", dead.local_addr().unwrap());
    drop(dead);
    let bob = account_with_tokens(&store, "bob@example.org", &["tok"]).await;
    let (push, worker) = Push::new(store.clone(), PushOptions::new(dead_url)).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    push.notify(&[bob]);
    let mut entry = None;
    for _ in 0..500 {
        entry = store.push_entries().await.unwrap().pop();
        if entry.as_ref().is_some_and(|e| e.attempts == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entry.map(|e| e.attempts), Some(1), "one failed attempt");
    stop.cancel();
    running.await.unwrap();
    store.close().await;

    let store = open(dir.path()).await;
    let due = store.push_entries().await.unwrap();
    assert_eq!(due.len(), 1);
    store.push_retry(bob, "tok", 1, 0).await.unwrap(); // due now
    let (url, _, mut posts) = notification_server().await;
    let (_push, _stop) = start(&store, &url);
    assert_eq!(next_post(&mut posts).await, "tok");
    drained(&store).await;
}

#[tokio::test]
async fn notifications_for_a_waiting_device_collapse() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let bob = account_with_tokens(&store, "bob@example.org", &["tok"]).await;
    // No worker runs the posts: enqueue twice by hand through the store.
    let now = 1_000;
    store
        .push_enqueue(vec![(bob, "tok".into())], now)
        .await
        .unwrap();
    store
        .push_enqueue(vec![(bob, "tok".into())], now + 1)
        .await
        .unwrap();
    assert_eq!(store.push_entries().await.unwrap().len(), 1);
}

/// A one-request-per-connection HTTPS server with a fresh self-signed
/// certificate; yields the posted bodies and answers 200.
async fn https_server() -> (
    String,
    CertificateDer<'static>,
    mpsc::UnboundedReceiver<String>,
) {
    use rustls_pki_types::PrivateKeyDer;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/notify", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            // A client that distrusts the certificate aborts the handshake.
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut tls = BufReader::new(tls);
            let mut length = 0;
            loop {
                let mut line = String::new();
                tls.read_line(&mut line).await.unwrap();
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            tls.read_exact(&mut body).await.unwrap();
            tx.send(String::from_utf8(body).unwrap()).unwrap();
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            tls.get_mut().write_all(reply).await.unwrap();
            tls.get_mut().shutdown().await.unwrap();
        }
    });
    (url, cert, rx)
}

#[tokio::test]
async fn posts_over_https_to_a_trusted_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (url, cert, mut posts) = https_server().await;
    let bob = account_with_tokens(&store, "bob@example.org", &["secret-token"]).await;
    let mut options = PushOptions::new(url);
    options.extra_roots = vec![cert];
    let (push, worker) = Push::new(store.clone(), options).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));
    push.notify(&[bob]);
    assert_eq!(next_post(&mut posts).await, "secret-token");
    drained(&store).await;
    stop.cancel();
}

#[tokio::test]
async fn https_server_with_an_untrusted_certificate_gets_retries() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let (url, _cert, _posts) = https_server().await;
    let bob = account_with_tokens(&store, "bob@example.org", &["tok"]).await;
    let (push, worker) = Push::new(store.clone(), PushOptions::new(url)).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(worker.run(stop.clone()));
    push.notify(&[bob]);
    for _ in 0..500 {
        if let Some(entry) = store.push_entries().await.unwrap().pop()
            && entry.attempts == 1
        {
            stop.cancel();
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no failed attempt recorded");
}
