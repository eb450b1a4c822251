//! Push notifications from both delivery paths, against a real HTTP
//! notification server that records the tokens it is posted.

use std::sync::Arc;
use std::time::Duration;

use chatmail_push::{DEVICE_TOKEN, Push, PushOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Client, Harness, encrypted_message};
use crate::session::Session;
use crate::{Context, Shared};

const ALICE: &str = "alice0001@example.org";
const BOB: &str = "bob000001@example.org";
const CAROL: &str = "carol0001@example.net";

/// A notification server answering 200; yields the posted bodies.
async fn recorder() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: String| async move {
            tx.send(body).unwrap();
            "ok"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

/// The harness's context with push wired into submission and the MX,
/// ALICE and BOB existing with one device token each.
async fn with_push(harness: &Harness, url: &str, stop: &CancellationToken) -> Arc<Shared> {
    for (address, token) in [(ALICE, "alice-token"), (BOB, "bob-token")] {
        harness.account(address).await;
        let account = harness.store.account(address).await.unwrap().unwrap();
        harness
            .store
            .add_user_metadata(account.id, DEVICE_TOKEN, token)
            .await
            .unwrap();
    }
    let (push, worker) = Push::new(harness.store.clone(), PushOptions::new(url)).unwrap();
    tokio::spawn(worker.run(stop.clone()));
    let ctx = &harness.shared.ctx;
    Arc::new(Shared::new(Arc::new(Context {
        settings: ctx.settings.clone(),
        accounts: ctx.accounts.clone(),
        tls: ctx.tls.clone(),
        mx_tls: None,
        inbound: ctx.inbound.clone().with_push(push.clone()),
        queue: None,
        push: Some(push),
    })))
}

fn connect(shared: &Arc<Shared>, mx: bool) -> Client<tokio::io::DuplexStream> {
    let (client, server) = tokio::io::duplex(1 << 20);
    let session = Session::new(server, Arc::clone(shared), true);
    let session = if mx { session.for_mx() } else { session };
    tokio::spawn(session.run());
    Client::new(client)
}

async fn next_post(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap()
}

#[tokio::test]
async fn self_sent_message_wakes_only_the_other_recipients() {
    let harness = Harness::new("").await;
    let (url, mut posts) = recorder().await;
    let stop = CancellationToken::new();
    let shared = with_push(&harness, &url, &stop).await;
    let mut client = connect(&shared, false);
    client.login(ALICE).await;
    let message = encrypted_message(ALICE, ALICE);
    assert_eq!(
        client.submit(ALICE, &[ALICE], &message).await,
        "250 2.0.0 OK\r\n"
    );
    let message = encrypted_message(ALICE, BOB);
    let reply = client.submit(ALICE, &[ALICE, BOB], &message).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert_eq!(next_post(&mut posts).await, "bob-token");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(posts.try_recv().is_err(), "the sender's device was woken");
    stop.cancel();
}

#[tokio::test]
async fn mail_from_another_relay_wakes_the_recipient() {
    let harness = Harness::new("").await;
    let (url, mut posts) = recorder().await;
    let stop = CancellationToken::new();
    let shared = with_push(&harness, &url, &stop).await;
    let mut client = connect(&shared, true);
    assert!(client.reply().await.starts_with("220 "));
    client.expect("EHLO mx.example.net", "250").await;
    let signed = harness
        .peer_key
        .sign(&encrypted_message(CAROL, BOB), "example.net")
        .unwrap();
    assert_eq!(
        client.submit(CAROL, &[BOB], &signed).await,
        "250 2.0.0 OK\r\n"
    );
    assert_eq!(next_post(&mut posts).await, "bob-token");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(posts.try_recv().is_err(), "only Bob's device is woken");
    stop.cancel();
}
