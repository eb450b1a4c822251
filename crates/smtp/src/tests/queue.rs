//! Submission to remote recipients through the outbound queue: local
//! copies go to the store, remote ones to the queue, `250` after both.

use std::sync::Arc;

use chatmail_transport::{Outcome, Report, Via};
use tokio::sync::mpsc;

use super::{Harness, encrypted_message, plain_message};

const ALICE: &str = "alice0001@example.org";
const BOB: &str = "bob000001@example.org";
const FRIEND: &str = "friend001@elsewhere.example";

/// One delivery attempt the queue made.
#[derive(Debug)]
struct Attempt {
    domain: String,
    recipients: Vec<String>,
    message: Vec<u8>,
}

/// A peer that accepts everything and reports each attempt.
struct Recorder(mpsc::UnboundedSender<Attempt>);

impl chatmail_queue::Deliver for Recorder {
    fn deliver(
        &self,
        domain: &str,
        _sender: Option<&str>,
        recipients: &[String],
        message: &[u8],
    ) -> impl Future<Output = Report> + Send {
        let attempt = Attempt {
            domain: domain.to_owned(),
            recipients: recipients.to_vec(),
            message: message.to_vec(),
        };
        let results = recipients
            .iter()
            .map(|r| (r.clone(), Outcome::Delivered))
            .collect();
        let _ = self.0.send(attempt);
        std::future::ready(Report {
            via: Some(Via::MxDeliv),
            results,
        })
    }
}

async fn queued(extra: &str) -> (Harness, mpsc::UnboundedReceiver<Attempt>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let harness = Harness::with_queue(extra, Arc::new(Recorder(tx))).await;
    harness.account(BOB).await;
    (harness, rx)
}

#[tokio::test]
async fn stores_local_copies_and_queues_signed_remote_ones() {
    let (harness, mut attempts) = queued("").await;
    let mut client = harness.connect();
    client.login(ALICE).await;
    let message = encrypted_message(ALICE, FRIEND);
    let reply = client.submit(ALICE, &[BOB, FRIEND], &message).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert_eq!(harness.inbox(BOB).await.len(), 1);
    let attempt = attempts.recv().await.unwrap();
    assert_eq!(attempt.domain, "elsewhere.example");
    assert_eq!(attempt.recipients, vec![FRIEND.to_owned()]);
    let text = String::from_utf8(attempt.message).unwrap();
    assert!(text.starts_with("DKIM-Signature:"), "{text:.80}");
    assert!(text.contains("Subject: [...]") && !text.contains("X-Mailer"));
}

#[tokio::test]
async fn refuses_cleartext_to_remote_domain_and_queues_nothing() {
    let (harness, mut attempts) = queued("").await;
    let mut client = harness.connect();
    client.login(ALICE).await;
    let reply = client
        .submit(ALICE, &[FRIEND], &plain_message(ALICE, FRIEND))
        .await;
    assert_eq!(reply, format!("{}\r\n", chatmail_gate::REJECT_TEXT));
    client.expect("QUIT", "221").await;
    assert!(attempts.try_recv().is_err());
    assert!(harness.store.queue_entries().await.unwrap().is_empty());
}

#[tokio::test]
async fn refuses_remote_domains_the_federation_policy_blocks() {
    let policy = "[federation]\npolicy = \"block\"\ndomains = [\"elsewhere.example\"]\n";
    let (harness, _attempts) = queued(policy).await;
    let mut client = harness.connect();
    client.login(ALICE).await;
    client.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    client
        .expect(
            &format!("RCPT TO:<{FRIEND}>"),
            "554 5.7.1 Domain not allowed",
        )
        .await;
    client
        .expect("RCPT TO:<other0001@allowed.example>", "250 2.1.5")
        .await;
    client
        .expect("RCPT TO:<bad..local@example.org>", "550 5.1.1 User unknown")
        .await;
}
