//! Crash safety: every message the relay acknowledged with 250 survives a
//! SIGKILL in the middle of a burst of submissions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::message::{encrypted, message_id};
use chatmail_testkit::relay::RelayProcess;

const SENDERS: usize = 8;
const PASSWORD: &str = "crash-test-password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill() {
    let limits = "[limits]\nmax_user_send_per_minute = 1000000\nmax_user_send_burst = 1000000\n";
    let mut relay = RelayProcess::start(env!("CARGO_BIN_EXE_madmail").as_ref(), limits)
        .await
        .unwrap();
    let tls = tls_config(&relay.cert_path()).unwrap();
    let rcpt = "receiver1@[127.0.0.1]";
    // The first login creates the recipient's account.
    drop(
        Imap::login(relay.addr(relay.ports.imaps), &tls, rcpt, PASSWORD)
            .await
            .unwrap(),
    );

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for n in 0..SENDERS {
        let (acked, tls, addr) = (
            acked.clone(),
            tls.clone(),
            relay.addr(relay.ports.submissions),
        );
        senders.push(tokio::spawn(async move {
            let from = format!("sender{n:03}@[127.0.0.1]");
            let Ok(mut smtp) = Smtp::login(addr, &tls, &from, PASSWORD).await else {
                return;
            };
            loop {
                let message = encrypted(&from, rcpt, 4096);
                match smtp.send(&from, &[rcpt], &message).await {
                    Ok((250, _)) => acked.lock().unwrap().push(message_id(&message).unwrap()),
                    Ok((code, text)) => panic!("unexpected reply {code} {text}"),
                    Err(_) => return, // the server died mid-transaction
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    relay.kill();
    for sender in senders {
        sender.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    relay.restart().await.unwrap();
    let mut imap = Imap::login(relay.addr(relay.ports.imaps), &tls, rcpt, PASSWORD)
        .await
        .unwrap();
    let stored = imap.inbox_message_ids().await.unwrap();
    let missing: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost",
        missing.len(),
        acked.len()
    );
}
