//! Quota transcripts (docs/specifications.md §5): `552 5.2.2 Quota
//! exceeded` per recipient at `RCPT`, and at the end of `DATA` when the
//! delivery transaction finds no room; a recipient found full only at
//! delivery while others got the message is bounced to the sender.

use std::sync::Arc;

use chatmail_store::NewMessage;
use chatmail_transport::{Outcome, Report, Via};

use super::{Harness, encrypted_message};

const ALICE: &str = "alice0001@example.org";
const BOB: &str = "bob000001@example.org";
const DAVE: &str = "dave00001@example.org";
const CAROL: &str = "carol0001@example.net";
const QUOTA: u64 = 100_000;

/// Sets the quota and fills `address` with a message of the last hour
/// (never trimmed) so that exactly `room` bytes are left.
async fn fill(harness: &Harness, address: &str, room: u64) {
    let account = harness.store.account(address).await.unwrap().unwrap();
    let inbox = harness
        .store
        .mailbox(account.id, "INBOX")
        .await
        .unwrap()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let filler = NewMessage {
        body: bytes::Bytes::from(vec![b'x'; usize::try_from(QUOTA - room).unwrap()]),
        flags: Vec::new(),
        internal_date: i64::try_from(now).unwrap() - 60,
    };
    harness.store.append(inbox.id, filler).await.unwrap();
    harness.store.set_quota(Some(QUOTA));
}

async fn harness() -> Harness {
    let harness = Harness::new("").await;
    for address in [ALICE, BOB, DAVE] {
        harness.account(address).await;
    }
    harness
}

#[tokio::test]
async fn full_recipient_fails_alone_at_rcpt() {
    let harness = harness().await;
    fill(&harness, BOB, 0).await;
    let mut client = harness.connect();
    client.login(ALICE).await;
    client.expect(&format!("MAIL FROM:<{ALICE}>"), "250").await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "552 5.2.2 Quota exceeded")
        .await;
    client.expect(&format!("RCPT TO:<{DAVE}>"), "250").await;
    client.expect("DATA", "354").await;
    client.send(&encrypted_message(ALICE, DAVE)).await;
    assert_eq!(client.cmd(".").await, "250 2.0.0 OK\r\n");
    assert_eq!(harness.inbox(DAVE).await.len(), 1);
    assert_eq!(harness.inbox(BOB).await.len(), 1, "only the filler");
}

#[tokio::test]
async fn declared_size_beyond_the_room_fails_at_rcpt() {
    let harness = harness().await;
    fill(&harness, BOB, 5_000).await;
    let mut client = harness.connect();
    client.login(ALICE).await;
    client
        .expect(&format!("MAIL FROM:<{ALICE}> SIZE=6000"), "250")
        .await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "552 5.2.2")
        .await;
    client.expect("RSET", "250").await;
    client
        .expect(&format!("MAIL FROM:<{ALICE}> SIZE=4000"), "250")
        .await;
    client.expect(&format!("RCPT TO:<{BOB}>"), "250").await;
}

#[tokio::test]
async fn message_larger_than_the_room_fails_at_delivery() {
    let harness = harness().await;
    fill(&harness, BOB, 10).await;
    let mut client = harness.connect();
    client.login(ALICE).await;
    let reply = client
        .submit(ALICE, &[BOB], &encrypted_message(ALICE, BOB))
        .await;
    assert_eq!(reply, "552 5.2.2 Quota exceeded\r\n");
    assert_eq!(harness.inbox(BOB).await.len(), 1, "only the filler");
    assert!(harness.inbox(ALICE).await.is_empty(), "no bounce on a 552");
    // The others of a multi-recipient message still get it.
    let reply = client
        .submit(ALICE, &[BOB, DAVE], &encrypted_message(ALICE, BOB))
        .await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert_eq!(harness.inbox(DAVE).await.len(), 1);
    assert_eq!(harness.inbox(BOB).await.len(), 1);
}

#[tokio::test]
async fn mx_refuses_a_full_recipient_at_rcpt_and_at_delivery() {
    let harness = harness().await;
    fill(&harness, BOB, 0).await;
    let mut client = harness.connect_mx(true);
    assert!(client.reply().await.starts_with("220 "));
    client.expect("EHLO mx.example.net", "250").await;
    client.expect(&format!("MAIL FROM:<{CAROL}>"), "250").await;
    client
        .expect(&format!("RCPT TO:<{BOB}>"), "552 5.2.2 Quota exceeded")
        .await;
    client.expect("RSET", "250").await;

    let harness = self::harness().await;
    fill(&harness, BOB, 10).await;
    let mut client = harness.connect_mx(true);
    assert!(client.reply().await.starts_with("220 "));
    client.expect("EHLO mx.example.net", "250").await;
    let signed = harness
        .peer_key
        .sign(&encrypted_message(CAROL, BOB), "example.net")
        .unwrap();
    let reply = client.submit(CAROL, &[BOB], &signed).await;
    assert_eq!(reply, "552 5.2.2 Quota exceeded\r\n");
}

/// Alice submits an encrypted message to `recipients`; the final reply.
async fn alice_sends(harness: &Harness, recipients: &[&str]) -> String {
    let mut client = harness.connect();
    client.login(ALICE).await;
    let message = encrypted_message(ALICE, recipients[0]);
    client.submit(ALICE, recipients, &message).await
}

/// The bounces in `address`'s INBOX, as text.
async fn bounces(harness: &Harness, address: &str) -> Vec<String> {
    harness
        .inbox(address)
        .await
        .into_iter()
        .map(|body| String::from_utf8(body).unwrap())
        .filter(|text| text.contains("report-type=delivery-status"))
        .collect()
}

#[tokio::test]
async fn recipient_full_at_delivery_is_bounced_to_the_sender() {
    let harness = harness().await;
    fill(&harness, BOB, 10).await;
    let reply = alice_sends(&harness, &[BOB, DAVE]).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert_eq!(harness.inbox(DAVE).await.len(), 1);
    assert_eq!(harness.inbox(BOB).await.len(), 1, "only the filler");
    let received = bounces(&harness, ALICE).await;
    assert_eq!(received.len(), 1, "{received:?}");
    let dsn = &received[0];
    assert!(dsn.contains(&format!("To: <{ALICE}>\r\n")), "{dsn}");
    assert!(dsn.contains(&format!(
        "Final-Recipient: rfc822; {BOB}\r\nAction: failed\r\nStatus: 5.2.2\r\n"
    )));
    assert!(!dsn.contains(&format!("Final-Recipient: rfc822; {DAVE}")));
    assert!(!dsn.contains("BEGIN PGP MESSAGE"), "headers only");
    assert!(bounces(&harness, DAVE).await.is_empty());
}

#[tokio::test]
async fn no_bounce_when_every_recipient_had_room() {
    let harness = harness().await;
    fill(&harness, BOB, 50_000).await;
    let reply = alice_sends(&harness, &[BOB, DAVE]).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert!(harness.inbox(ALICE).await.is_empty());
}

/// A remote relay that takes every recipient.
struct Accepting;

impl chatmail_queue::Deliver for Accepting {
    fn deliver(
        &self,
        _domain: &str,
        _sender: Option<&str>,
        recipients: &[String],
        _message: &[u8],
    ) -> impl Future<Output = Report> + Send {
        let results = recipients
            .iter()
            .map(|r| (r.clone(), Outcome::Delivered))
            .collect();
        std::future::ready(Report {
            via: Some(Via::MxDeliv),
            results,
        })
    }
}

#[tokio::test]
async fn full_local_recipient_is_bounced_when_only_remote_ones_got_it() {
    let harness = Harness::with_queue("", Arc::new(Accepting)).await;
    for address in [ALICE, BOB] {
        harness.account(address).await;
    }
    fill(&harness, BOB, 10).await;
    let reply = alice_sends(&harness, &[BOB, CAROL]).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    let received = bounces(&harness, ALICE).await;
    assert_eq!(received.len(), 1, "{received:?}");
    assert!(received[0].contains(&format!("Final-Recipient: rfc822; {BOB}\r\n")));
    assert!(!received[0].contains(&format!("Final-Recipient: rfc822; {CAROL}")));
}
