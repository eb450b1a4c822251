//! The queue with the real transport: a peer that cannot be reached fails
//! temporarily, and with a zero lifetime that is final at once.

use std::sync::Arc;
use std::time::Duration;

use chatmail_dkim::{Algorithm, DkimKey};
use chatmail_queue::Queue;
use chatmail_store::{Created, Store, StoreOptions};
use chatmail_transport::Transport;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio_util::sync::CancellationToken;

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn an_unreachable_peer_bounces_with_the_transports_reason_once_expired() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "mail_domain = \"example.org\"\n[tls]\nmode = \"self-signed\"\n\
         [federation]\nqueue_lifetime = 0\n\
         [federation.static_routes.\"_down.test\"]\nhost = \"127.0.0.1\"\nsmtp_port = {}\n",
        closed_port()
    );
    let settings = Arc::new(chatmail_config::parse(&text).unwrap());
    let resolver = hickory_resolver::Resolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], vec![]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap();
    let transport = Transport::new(settings.clone(), resolver).unwrap();
    let store = Store::open(StoreOptions {
        path: dir.path().join("db"),
        max_batch: 8,
    })
    .await
    .unwrap();
    let Created::New(alice) = store
        .create_account("alice@example.org", "x")
        .await
        .unwrap()
    else {
        panic!("account existed");
    };
    let der = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
    let dkim = Arc::new(DkimKey::from_pkcs8_der("opendkim", &der).unwrap());
    let shutdown = CancellationToken::new();
    let queue = Queue::start(store.clone(), transport, dkim, settings, shutdown.clone())
        .await
        .unwrap();
    let message = b"From: <alice@example.org>\r\nTo: <bob@_down.test>\r\nSubject: s\r\n\r\nx\r\n";
    queue
        .submit(
            "alice@example.org",
            &["bob@_down.test".into()],
            message[..].into(),
        )
        .await
        .unwrap();
    let inbox = store.mailbox(alice.id, "INBOX").await.unwrap().unwrap();
    let mut dsn = None;
    for _ in 0..200 {
        if let Some(body) = store.body(inbox.id, 1).await.unwrap() {
            dsn = Some(String::from_utf8(body.to_vec()).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dsn = dsn.expect("no bounce arrived");
    assert!(
        dsn.contains("Final-Recipient: rfc822; bob@_down.test\r\n"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 4.4.7\r\n"));
    assert!(dsn.contains("Diagnostic-Code: smtp; delivery time expired; last error: 4"));
    assert!(queue.entries().await.unwrap().is_empty());
    shutdown.cancel();
    queue.stopped().await.unwrap();
}
