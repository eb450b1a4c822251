//! Pipeline tests against a real SQLite store in a temporary directory,
//! with messages signed by a fresh key served from a fixed TXT table.

use std::sync::Arc;

use chatmail_accounts::Accounts;
use chatmail_dkim::{Algorithm, DkimKey, StaticTxt};
use chatmail_store::{Store, StoreOptions};

use super::*;

const BOB: &str = "bob000001@example.org";
const CAROL: &str = "carol0001@example.net";
const PASSWORD: &str = "correct-horse";

struct Harness {
    inbound: Inbound,
    store: Store,
    key: DkimKey,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new(extra: &str) -> Self {
        let key = ed25519_key();
        let mut dns = StaticTxt::new();
        dns.insert_key(&key, "example.net");
        dns.insert_failure(&key.record_name("flaky.test"));
        Self::with_keys(extra, key, dns).await
    }

    async fn with_keys(extra: &str, key: DkimKey, dns: StaticTxt) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "mail_domain = \"example.org\"\nstate_dir = \"{}\"\n[tls]\nmode = \"self-signed\"\n{extra}",
            dir.path().display()
        );
        let settings = Arc::new(chatmail_config::parse(&text).unwrap());
        let options = StoreOptions {
            path: dir.path().join("mail.db"),
            max_batch: 16,
        };
        let store = Store::open(options).await.unwrap();
        let accounts = Accounts::new(store.clone(), Arc::clone(&settings));
        accounts.login(BOB, PASSWORD).await.unwrap();
        Self {
            inbound: Inbound::new(settings, accounts, KeyLookup::fixed(dns)),
            store,
            key,
            _dir: dir,
        }
    }

    async fn bob(&self) -> AccountId {
        self.inbound.check_recipient(BOB, None).await.unwrap()
    }

    async fn inbox(&self) -> Vec<Vec<u8>> {
        let account = self.store.account(BOB).await.unwrap().unwrap();
        let inbox = self.store.mailbox(account.id, "INBOX").await.unwrap();
        let inbox = inbox.unwrap();
        let mut bodies = Vec::new();
        for meta in self.store.messages(inbox.id, 0).await.unwrap() {
            let body = self.store.body(inbox.id, meta.uid).await.unwrap().unwrap();
            bodies.push(body.to_vec());
        }
        bodies
    }

    async fn deliver(&self, sender: Option<&str>, message: &[u8]) -> Result<(), Refusal> {
        self.deliver_from(sender, None, message).await
    }

    /// Delivers as a peer connecting from `client`.
    async fn deliver_from(
        &self,
        sender: Option<&str>,
        client: Option<&str>,
        message: &[u8],
    ) -> Result<(), Refusal> {
        let bob = self.bob().await;
        let envelope = Envelope {
            sender,
            client: client.map(|ip| ip.parse().unwrap()),
        };
        self.inbound.accept(envelope, &[bob], message).await
    }

    fn sign(&self, message: &[u8], domain: &str) -> Vec<u8> {
        self.key.sign(message, domain).unwrap()
    }
}

fn ed25519_key() -> DkimKey {
    let der = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
    DkimKey::from_pkcs8_der("sel", &der).unwrap()
}

fn fixture_body(fixture: &[u8]) -> &[u8] {
    let split = fixture.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    &fixture[split + 4..]
}

/// The encrypted gate fixture from `from` to Bob.
fn encrypted(from: &str) -> Vec<u8> {
    let body = fixture_body(include_bytes!("../../gate/testdata/encrypted.eml"));
    let head = format!(
        "From: <{from}>\r\nTo: <{BOB}>\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
         boundary=\"BOUNDARY\"\r\n\r\n"
    );
    [head.as_bytes(), body].concat()
}

/// What relays on the way add on top of a signed message.
fn with_trace(signed: &[u8]) -> Vec<u8> {
    let trace = b"Received: from relay.example.net\r\n\tby mx.example.org; Mon, 2 Nov 2026\r\n\
        Authentication-Results: mx.example.org;\r\n dkim=pass header.d=example.net\r\n";
    [trace.as_slice(), signed].concat()
}

#[tokio::test]
async fn stores_signed_encrypted_mail_without_trace_headers() {
    let h = Harness::new("").await;
    let original = encrypted(CAROL);
    let signed = with_trace(&h.sign(&original, "example.net"));
    assert_eq!(h.deliver(Some(CAROL), &signed).await, Ok(()));
    assert_eq!(h.inbox().await, vec![original]);
}

#[tokio::test]
async fn refuses_unsigned_mail_from_a_dns_domain() {
    let h = Harness::new("").await;
    let refusal = h.deliver(Some(CAROL), &encrypted(CAROL)).await.unwrap_err();
    assert_eq!(refusal.to_string(), "554 5.7.1 No DKIM signature found");
    assert_eq!(refusal.http_status(), 400);
    assert!(h.inbox().await.is_empty());
}

#[tokio::test]
async fn refuses_mis_signed_mail() {
    let h = Harness::new("").await;
    let signed = h.sign(&encrypted(CAROL), "example.net");
    let text = String::from_utf8(signed).unwrap();
    let signed = text
        .replacen("Subject: [...]", "Subject: [..!]", 1)
        .into_bytes();
    let refusal = h.deliver(Some(CAROL), &signed).await.unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "554 5.7.1 No valid DKIM signature found"
    );
    assert!(h.inbox().await.is_empty());
}

#[tokio::test]
async fn refuses_a_signature_of_another_domain() {
    let h = Harness::new("").await;
    let signed = h.sign(&encrypted("mallory01@example.com"), "example.net");
    let refusal = h.deliver(None, &signed).await.unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "554 5.7.1 No valid DKIM signature found"
    );
}

#[tokio::test]
async fn refuses_signed_plaintext_with_523() {
    let h = Harness::new("").await;
    let plain = format!("From: <{CAROL}>\r\nTo: <{BOB}>\r\nSubject: hi\r\n\r\nclear\r\n");
    let signed = h.sign(plain.as_bytes(), "example.net");
    let refusal = h.deliver(Some(CAROL), &signed).await.unwrap_err();
    assert_eq!(refusal.to_string(), chatmail_gate::REJECT_TEXT);
    assert!(h.inbox().await.is_empty());
}

#[tokio::test]
async fn accepts_a_signed_mailer_daemon_bounce_from_the_null_sender() {
    let h = Harness::new("").await;
    let bounce = include_bytes!("../../gate/testdata/bounce.eml");
    let signed = h.sign(bounce, "example.net");
    assert_eq!(h.deliver(None, &signed).await, Ok(()));
    assert_eq!(h.inbox().await, vec![bounce.to_vec()]);
}

#[tokio::test]
async fn accepts_an_envelope_sender_other_than_from() {
    let h = Harness::new("").await;
    let signed = h.sign(&encrypted(CAROL), "example.net");
    let sender = Some("bounces+123@lists.example.net");
    assert_eq!(h.deliver(sender, &signed).await, Ok(()));
    assert_eq!(h.inbox().await.len(), 1);
}

#[tokio::test]
async fn ip_literal_from_domains_need_a_connection_from_that_address() {
    let h = Harness::new("").await;
    let sender = Some("carol0001@[192.0.2.7]");
    let message = encrypted("carol0001@[192.0.2.7]");
    for client in [None, Some("192.0.2.8"), Some("::1")] {
        let refusal = h.deliver_from(sender, client, &message).await.unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "554 5.7.1 IP literal sender does not match the connecting address",
            "{client:?}"
        );
        assert_eq!(refusal.http_status(), 400);
    }
    assert!(h.inbox().await.is_empty());
    let mapped = h
        .deliver_from(sender, Some("::ffff:192.0.2.7"), &message)
        .await;
    assert_eq!(mapped, Ok(()), "IPv4-mapped IPv6 is the same host");
    assert_eq!(h.inbox().await, vec![message]);
}

#[tokio::test]
async fn a_bounce_from_an_ip_literal_needs_the_null_sender_and_its_address() {
    // Regression: a cleartext bounce from MAILER-DAEMON@[6.6.6.6] passed
    // the gate and skipped DKIM on a relay with a DNS domain.
    let h = Harness::new("").await;
    let bounce = String::from_utf8(include_bytes!("../../gate/testdata/bounce.eml").to_vec())
        .unwrap()
        .replace("MAILER-DAEMON@example.net", "MAILER-DAEMON@[6.6.6.6]");
    let refusal = h
        .deliver_from(None, Some("127.0.0.1"), bounce.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(refusal.code, 554, "{refusal}");
    let named = h
        .deliver_from(Some("x@[6.6.6.6]"), Some("6.6.6.6"), bounce.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(
        named,
        Refusal::unencrypted(),
        "a bounce needs the null sender"
    );
    assert!(h.inbox().await.is_empty());
    let genuine = h
        .deliver_from(None, Some("6.6.6.6"), bounce.as_bytes())
        .await;
    assert_eq!(genuine, Ok(()));
}

#[tokio::test]
async fn refuses_inbound_mail_in_the_name_of_a_local_user() {
    let h = Harness::new("").await;
    let forged = h.sign(&encrypted(BOB), "example.org");
    let refusal = h.deliver(None, &forged).await.unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "554 5.7.1 Local sender address not accepted from another relay"
    );
    assert_eq!(refusal.http_status(), 400);
    let envelope = h.inbound.check_sender(Some("BOB000001@Example.org"));
    assert_eq!(envelope, Err(Refusal::local_from()));
    assert!(h.inbox().await.is_empty());
}

#[tokio::test]
async fn dns_failure_asks_the_sender_to_retry() {
    let h = Harness::new("").await;
    let signed = h.sign(&encrypted("dave00001@flaky.test"), "flaky.test");
    let refusal = h.deliver(None, &signed).await.unwrap_err();
    assert_eq!(refusal.code, 451);
    assert!(refusal.is_temporary());
    assert_eq!(refusal.http_status(), 503);
}

#[tokio::test]
async fn refuses_oversized_mail_before_any_check() {
    let h = Harness::new("[limits]\nmax_message_size = 1024\n").await;
    let signed = h.sign(&encrypted(CAROL), "example.net");
    assert!(signed.len() > 1024);
    let refusal = h.deliver(Some(CAROL), &signed).await.unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "552 5.3.4 Message exceeds maximum size"
    );
    assert_eq!(refusal.http_status(), 413);
}

#[tokio::test]
async fn refuses_blocked_domains_in_envelope_and_from() {
    let policy = "[federation]\npolicy = \"block\"\ndomains = [\"example.net\"]\n";
    let h = Harness::new(policy).await;
    let refusal = h.inbound.check_sender(Some(CAROL)).unwrap_err();
    assert_eq!(refusal.http_status(), 403);
    assert_eq!(refusal.code, 554);
    let signed = h.sign(&encrypted(CAROL), "example.net");
    let refusal = h.deliver(None, &signed).await.unwrap_err();
    assert_eq!(refusal.kind, Kind::Policy);
    assert!(h.inbox().await.is_empty());
    assert_eq!(h.inbound.check_sender(None), Ok(()));
    assert_eq!(h.inbound.check_sender(Some("")), Ok(()));
}

#[tokio::test]
async fn refuses_mail_without_a_single_from_address() {
    let h = Harness::new("").await;
    let message = encrypted(CAROL);
    let no_from = &message[message.windows(2).position(|w| w == b"\r\n").unwrap() + 2..];
    let refusal = h.deliver(None, no_from).await.unwrap_err();
    assert_eq!(refusal.to_string(), "554 5.7.1 Invalid FROM header");
    assert_eq!(refusal.http_status(), 400);
}

#[tokio::test]
async fn recipients_must_be_local_and_exist() {
    let h = Harness::new("").await;
    assert!(
        h.inbound
            .check_recipient("BOB000001@Example.ORG", None)
            .await
            .is_ok()
    );
    let unknown = h
        .inbound
        .check_recipient("nobody001@example.org", None)
        .await;
    assert_eq!(unknown.unwrap_err().to_string(), "550 5.1.1 User unknown");
    let relay = h.inbound.check_recipient(CAROL, None).await.unwrap_err();
    assert_eq!(relay.to_string(), "554 5.7.1 Relay access denied");
    assert_eq!(relay.http_status(), 404);
    let garbage = h
        .inbound
        .check_recipient("no-at-sign", None)
        .await
        .unwrap_err();
    assert_eq!(garbage.code, 550);
}

#[tokio::test]
async fn a_client_probing_unknown_recipients_is_slowed_down() {
    // Regression: port 25 let one client try addresses without limit.
    let h = Harness::new("[limits]\nunknown_recipients_per_minute = 5\n").await;
    let prober = Some("192.0.2.66".parse().unwrap());
    for i in 0..5 {
        let refusal = h
            .inbound
            .check_recipient(&format!("guess{i:04}@example.org"), prober)
            .await
            .unwrap_err();
        assert_eq!(refusal.code, 550);
    }
    for address in ["guess9999@example.org", BOB] {
        let refusal = h
            .inbound
            .check_recipient(address, prober)
            .await
            .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "450 4.7.1 Too many unknown recipients, try again later"
        );
        assert_eq!(refusal.http_status(), 503);
    }
    let other = Some("192.0.2.67".parse().unwrap());
    assert!(h.inbound.check_recipient(BOB, other).await.is_ok());
    for _ in 0..20 {
        assert!(
            h.inbound.check_recipient(BOB, other).await.is_ok(),
            "known ones do not count"
        );
    }
}

#[tokio::test]
async fn refuses_an_empty_recipient_list() {
    let h = Harness::new("").await;
    let signed = h.sign(&encrypted(CAROL), "example.net");
    let refusal = h
        .inbound
        .accept(Envelope::default(), &[], &signed)
        .await
        .unwrap_err();
    assert_eq!(refusal.http_status(), 404);
}

/// Fills Bob's mailbox with messages of the last hour (never trimmed) so
/// that less than `room` bytes are left under a quota of `quota`.
async fn fill_bob(h: &Harness, quota: u64, room: u64) {
    let account = h.store.account(BOB).await.unwrap().unwrap();
    let inbox = h.store.mailbox(account.id, "INBOX").await.unwrap().unwrap();
    let filler = NewMessage {
        body: Bytes::from(vec![b'x'; usize::try_from(quota - room).unwrap() + 1]),
        flags: Vec::new(),
        internal_date: unix_now() - 60,
    };
    h.store.append(inbox.id, filler).await.unwrap();
    h.store.set_quota(Some(quota));
}

#[tokio::test]
async fn recipient_over_quota_is_refused_with_552() {
    let h = Harness::new("").await;
    let bob = h.bob().await;
    assert_eq!(h.inbound.check_room(bob, 0).await, Ok(()));
    fill_bob(&h, 10_000, 0).await;
    let refusal = h.inbound.check_room(bob, 0).await.unwrap_err();
    assert_eq!(refusal.to_string(), "552 5.2.2 Quota exceeded");
    assert_eq!(refusal.http_status(), 400);
}

#[tokio::test]
async fn delivery_refuses_only_when_every_recipient_is_over_quota() {
    let h = Harness::new("").await;
    let signed = h.sign(&encrypted(CAROL), "example.net");
    fill_bob(&h, 10_000, 100).await;
    let refusal = h.deliver(Some(CAROL), &signed).await.unwrap_err();
    assert_eq!(refusal.to_string(), "552 5.2.2 Quota exceeded");
    assert_eq!(h.inbox().await.len(), 1, "only the filler");

    const DAVE: &str = "dave00001@example.org";
    h.inbound.accounts.login(DAVE, PASSWORD).await.unwrap();
    let dave = h.inbound.check_recipient(DAVE, None).await.unwrap();
    let bob = h.bob().await;
    let envelope = Envelope {
        sender: Some(CAROL),
        client: None,
    };
    let accepted = h.inbound.accept(envelope, &[bob, dave], &signed).await;
    assert_eq!(accepted, Ok(()));
    assert_eq!(h.inbox().await.len(), 1, "bob still gets nothing");
    assert!(h.store.usage(dave).await.unwrap() > 0, "dave got his copy");
}
