//! Session transcripts over an in-memory stream, against a real SQLite
//! store in a temporary directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_accounts::Accounts;
use chatmail_store::{AccountId, NewMessage, Store, StoreOptions};
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, ReadHalf,
    WriteHalf,
};
use tokio_util::sync::CancellationToken;

use crate::{Context, Session};

mod compress;
mod metadata;

const ALICE: &str = "alice0001@example.org";
const PASSWORD: &str = "correct-horse-battery";
const ENCRYPTED: &[u8] = include_bytes!("../testdata/encrypted.eml");
const PLAIN: &[u8] = b"From: alice0001@example.org\r\nTo: alice0001@example.org\r\nSubject: hi\r\n\r\nplain text\r\n";

struct Harness {
    _dir: tempfile::TempDir,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
}

fn tls_config(
    host: &str,
) -> (
    Arc<rustls::ServerConfig>,
    rustls::pki_types::CertificateDer<'static>,
) {
    let certified = rcgen::generate_simple_self_signed(vec![host.to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    (Arc::new(config), cert)
}

async fn harness() -> (Harness, rustls::pki_types::CertificateDer<'static>) {
    harness_with("").await
}

async fn harness_with(extra: &str) -> (Harness, rustls::pki_types::CertificateDer<'static>) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "mail_domain = \"example.org\"\nstate_dir = \"{}\"\n[tls]\nmode = \"self-signed\"\n{extra}",
        dir.path().display()
    );
    let settings = Arc::new(chatmail_config::parse(&text).unwrap());
    let store = Store::open(StoreOptions {
        path: dir.path().join("mail.sqlite"),
        max_batch: 16,
    })
    .await
    .unwrap();
    // As the server does: the configured quota is the enforced one.
    store.set_quota(Some(settings.limits().max_mailbox_size));
    let accounts = Accounts::new(store, settings.clone());
    let (tls, cert) = tls_config("imap.example.org");
    let turn = chatmail_turn::Credentials::load_or_create(
        dir.path(),
        settings.config.turn.credential_lifetime,
    )
    .unwrap();
    let ctx = Arc::new(Context {
        settings,
        accounts,
        tls,
        turn: Some(Arc::new(turn)),
    });
    (
        Harness {
            _dir: dir,
            ctx,
            shutdown: CancellationToken::new(),
        },
        cert,
    )
}

async fn setup() -> Harness {
    harness().await.0
}

impl Harness {
    fn store(&self) -> &Store {
        self.ctx.accounts.store()
    }

    /// Connects as if TLS were established.
    async fn connect(&self) -> Client<DuplexStream> {
        self.connect_with(true, |_| {}).await
    }

    async fn connect_with(
        &self,
        tls: bool,
        tweak: impl FnOnce(&mut Session<DuplexStream>),
    ) -> Client<DuplexStream> {
        let (client, server) = tokio::io::duplex(1 << 16);
        if tls {
            let mut session = Session::new(server, self.ctx.clone(), true, self.shutdown.clone());
            tweak(&mut session);
            tokio::spawn(session.run());
        } else {
            // The full connection path, so STARTTLS can upgrade.
            tokio::spawn(crate::serve_stream(
                server,
                false,
                self.ctx.clone(),
                self.shutdown.clone(),
            ));
        }
        let mut client = Client::new(client);
        let greeting = client.line().await;
        assert!(
            greeting.starts_with("* OK [CAPABILITY IMAP4rev1"),
            "{greeting}"
        );
        client.greeting = greeting;
        client
    }

    async fn logged_in(&self) -> Client<DuplexStream> {
        let mut client = self.connect().await;
        client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
        client
    }

    async fn account(&self) -> AccountId {
        self.ctx.accounts.login(ALICE, PASSWORD).await.unwrap().id
    }

    async fn deliver(&self, body: &[u8]) {
        let account = self.account().await;
        let message = NewMessage {
            body: bytes::Bytes::copy_from_slice(body),
            flags: vec![],
            internal_date: 1_700_000_000,
        };
        self.store().deliver(&[account], message).await.unwrap();
    }
}

fn message(n: usize) -> Vec<u8> {
    format!("Message-ID: <m{n}@example.org>\r\nFrom: bob000001@example.org\r\nChat-Version: 1.0\r\n\r\nbody {n}\r\n").into_bytes()
}

/// The client side of a transcript.
struct Client<S> {
    reader: BufReader<ReadHalf<S>>,
    writer: WriteHalf<S>,
    next_tag: u32,
    greeting: String,
}

impl<S: tokio::io::AsyncRead + AsyncWrite> Client<S> {
    fn new(stream: S) -> Self {
        let (read, writer) = tokio::io::split(stream);
        Client {
            reader: BufReader::new(read),
            writer,
            next_tag: 0,
            greeting: String::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.flush().await.unwrap();
    }

    /// One response line, with any literals it announces inlined.
    async fn line(&mut self) -> String {
        let mut text = Vec::new();
        loop {
            let mut line = Vec::new();
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                self.reader.read_until(b'\n', &mut line),
            );
            assert!(
                read.await.expect("server answers in time").unwrap() > 0,
                "connection closed"
            );
            text.extend_from_slice(&line);
            let Some(length) = literal_length(&line) else {
                break;
            };
            let mut literal = vec![0; length];
            self.reader.read_exact(&mut literal).await.unwrap();
            text.extend_from_slice(&literal);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Sends a tagged command; returns the untagged lines and the tagged one.
    async fn command(&mut self, command: &str) -> (Vec<String>, String) {
        self.next_tag += 1;
        let tag = format!("a{}", self.next_tag);
        self.send(format!("{tag} {command}\r\n").as_bytes()).await;
        self.until_tagged(&tag).await
    }

    async fn until_tagged(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await;
            if let Some(status) = line.strip_prefix(&format!("{tag} ")) {
                return (lines, status.trim_end().to_owned());
            }
            lines.push(line);
        }
    }

    /// Runs a command that must succeed; returns its untagged lines.
    async fn ok(&mut self, command: &str) -> Vec<String> {
        let (lines, status) = self.command(command).await;
        assert!(
            status.starts_with("OK"),
            "{command} -> {status} after {lines:?}"
        );
        lines
    }
}

fn literal_length(line: &[u8]) -> Option<usize> {
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let open = line.rfind('{')?;
    line.strip_suffix('}')?[open + 1..].parse().ok()
}

/// The number in `* OK [NAME n]` or `* n NAME` style lines.
fn number_after(lines: &[String], key: &str) -> u32 {
    let line = lines
        .iter()
        .find(|l| l.contains(key))
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"));
    let rest = &line[line.find(key).unwrap() + key.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn login_answers_with_the_chatmail_capabilities() {
    let h = setup().await;
    let mut client = h.connect().await;
    assert!(client.greeting.contains("AUTH=PLAIN") && !client.greeting.contains("LOGINDISABLED"));
    let (_, status) = client
        .command(&format!("LOGIN \"{ALICE}\" \"{PASSWORD}\""))
        .await;
    assert!(status.starts_with("OK [CAPABILITY IMAP4rev1 "), "{status}");
    for capability in [
        "IDLE",
        "MOVE",
        "UIDPLUS",
        "QUOTA",
        "METADATA",
        " ID ",
        "ENABLE",
        "XCHATMAIL",
        "XDELTAPUSH",
    ] {
        assert!(
            status.contains(capability),
            "{capability} missing in {status}"
        );
    }
    assert!(status.contains(" COMPRESS=DEFLATE "), "{status}");
    assert!(!client.greeting.contains("COMPRESS"));
    let lines = client.ok("ID (\"name\" \"Delta Chat\")").await;
    assert_eq!(lines, vec!["* ID (\"name\" \"madmail\")\r\n"]);
}

#[tokio::test]
async fn refuses_a_wrong_password() {
    let h = setup().await;
    h.account().await;
    let mut client = h.connect().await;
    let (_, status) = client
        .command(&format!("LOGIN {ALICE} wrong-password-1"))
        .await;
    assert_eq!(status, "NO [AUTHENTICATIONFAILED] Invalid credentials");
    let (_, status) = client.command("SELECT INBOX").await;
    assert!(status.starts_with("BAD"), "{status}");
}

#[tokio::test]
async fn answers_unavailable_when_password_checks_are_saturated() {
    let h = setup().await;
    let accounts = Accounts::with_kdf_bound(
        h.store().clone(),
        h.ctx.settings.clone(),
        0,
        Duration::from_millis(20),
    );
    let ctx = Arc::new(Context {
        settings: h.ctx.settings.clone(),
        accounts,
        tls: h.ctx.tls.clone(),
        turn: h.ctx.turn.clone(),
    });
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(Session::new(server, ctx, true, h.shutdown.clone()).run());
    let mut client = Client::new(client);
    client.line().await;
    let (_, status) = client.command(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    assert_eq!(status, "NO [UNAVAILABLE] Server busy, try again later");
}

#[tokio::test]
async fn authenticates_with_plain_and_sasl_ir() {
    use base64::Engine;
    let h = setup().await;
    let response =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{ALICE}\0{PASSWORD}"));
    let mut client = h.connect().await;
    client.ok(&format!("AUTHENTICATE PLAIN {response}")).await;
    let mut client = h.connect().await;
    client.send(b"t1 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(client.line().await, "+ \r\n");
    client.send(format!("{response}\r\n").as_bytes()).await;
    let (_, status) = client.until_tagged("t1").await;
    assert!(status.starts_with("OK [CAPABILITY"), "{status}");
}

#[tokio::test]
async fn disables_login_before_starttls() {
    let h = setup().await;
    let mut client = h.connect_with(false, |_| {}).await;
    assert!(client.greeting.contains("STARTTLS") && client.greeting.contains("LOGINDISABLED"));
    let (_, status) = client.command(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    assert!(status.starts_with("NO [PRIVACYREQUIRED]"), "{status}");
    let lines = client.ok("CAPABILITY").await;
    assert!(lines[0].contains("LOGINDISABLED"));
}

#[tokio::test]
async fn upgrades_with_starttls_and_discards_pipelined_commands() {
    let (h, cert) = harness().await;
    let mut plain = h.connect_with(false, |_| {}).await;
    // The LOGIN pipelined behind STARTTLS must never run.
    plain
        .send(format!("s1 STARTTLS\r\ns2 LOGIN {ALICE} {PASSWORD}\r\n").as_bytes())
        .await;
    let (_, status) = plain.until_tagged("s1").await;
    assert!(status.starts_with("OK"), "{status}");
    let stream = plain.reader.into_inner().unsplit(plain.writer);
    let tls = tls_connect(cert, stream).await;
    let mut client = Client::new(tls);
    let lines = client.ok("CAPABILITY").await;
    // Only the CAPABILITY line: the pipelined LOGIN left no answer.
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("AUTH=PLAIN") && !lines[0].contains("STARTTLS"),
        "{lines:?}"
    );
    client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
}

#[tokio::test]
async fn keeps_uidvalidity_and_raises_uidnext_across_sessions() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let first = client.ok("SELECT INBOX").await;
    let (validity, next) = (
        number_after(&first, "UIDVALIDITY"),
        number_after(&first, "UIDNEXT"),
    );
    assert!(first.iter().any(|l| l == "* 0 EXISTS\r\n"), "{first:?}");
    h.deliver(&message(1)).await;
    let mut other = h.logged_in().await;
    let second = other.ok("SELECT \"INBOX\"").await;
    assert_eq!(number_after(&second, "UIDVALIDITY"), validity);
    assert!(number_after(&second, "UIDNEXT") > next);
    assert!(second.iter().any(|l| l == "* 1 EXISTS\r\n"), "{second:?}");
}

#[tokio::test]
async fn runs_the_delta_chat_loop() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut client = h.logged_in().await;
    let quota = client.ok("GETQUOTAROOT \"INBOX\"").await;
    assert_eq!(quota[0], "* QUOTAROOT \"INBOX\" \"\"\r\n");
    assert!(
        quota[1].starts_with("* QUOTA \"\" (STORAGE 1 512000)"),
        "{quota:?}"
    );
    let (meta, status) = client
        .command(
            "GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay)",
        )
        .await;
    assert_eq!(status, "OK Getmetadata completed");
    assert_eq!(
        meta,
        vec![
            "* METADATA \"\" (/shared/comment NIL /shared/admin NIL /shared/vendor/deltachat/irohrelay NIL)\r\n"
        ]
    );
    let select = client.ok("SELECT \"INBOX\"").await;
    assert!(select.iter().any(|l| l == "* 1 EXISTS\r\n"));
    let headers = client.ok("UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM CONTENT-TYPE SECURE-JOIN CHAT-VERSION)])").await;
    assert_eq!(headers.len(), 1, "{headers:?}");
    let uid = number_after(&headers, "UID");
    assert!(headers[0].contains("Message-ID: <m1@example.org>\r\nFrom: bob000001@example.org\r\nChat-Version: 1.0\r\n\r\n"), "{headers:?}");
    let bodies = client
        .ok(&format!("UID FETCH {uid} (FLAGS BODY.PEEK[])"))
        .await;
    assert!(
        bodies[0].contains("FLAGS ()") && bodies[0].contains("body 1\r\n"),
        "{bodies:?}"
    );
    let stored = client
        .ok(&format!("UID STORE {uid} +FLAGS (\\Deleted)"))
        .await;
    assert_eq!(
        stored,
        vec![format!("* 1 FETCH (UID {uid} FLAGS (\\Deleted))\r\n")]
    );
    client.ok("CLOSE").await;
    let select = client.ok("SELECT INBOX").await;
    assert!(
        select.iter().any(|l| l == "* 0 EXISTS\r\n"),
        "CLOSE expunged: {select:?}"
    );
    idle_sees_delivery(&h, &mut client).await;
}

/// IDLE must announce a delivery promptly.
async fn idle_sees_delivery(h: &Harness, client: &mut Client<DuplexStream>) {
    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    let store = h.store().clone();
    let account = h.account().await;
    let start = Instant::now();
    tokio::spawn(async move {
        let message = NewMessage {
            body: message(2).into(),
            flags: vec![],
            internal_date: 0,
        };
        store.deliver(&[account], message).await.unwrap();
    });
    assert_eq!(client.line().await, "* 1 EXISTS\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "IDLE took {:?}",
        start.elapsed()
    );
    client.send(b"DONE\r\n").await;
    let (lines, status) = client.until_tagged("i1").await;
    assert!(
        lines.is_empty() && status == "OK IDLE terminated",
        "{lines:?} {status}"
    );
}

#[tokio::test]
async fn sends_keepalives_during_idle() {
    let h = setup().await;
    let mut client = h
        .connect_with(true, |s| s.keepalive = Duration::from_millis(50))
        .await;
    client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    assert_eq!(client.line().await, "* OK Still here\r\n");
    client.send(b"DONE\r\n").await;
    client.until_tagged("i1").await;
}

#[tokio::test]
async fn numbers_expunges_after_several_deletions() {
    let h = setup().await;
    for n in 1..=5 {
        h.deliver(&message(n)).await;
    }
    let mut client = h.logged_in().await;
    client.ok("SELECT INBOX").await;
    let all = client.ok("FETCH 1:* (UID)").await;
    let uids: Vec<u32> = all
        .iter()
        .map(|l| number_after(std::slice::from_ref(l), "UID"))
        .collect();
    assert_eq!(
        client.ok("STORE 2,3,5 +FLAGS.SILENT (\\Deleted)").await,
        Vec::<String>::new()
    );
    let expunged = client.ok("EXPUNGE").await;
    assert_eq!(
        expunged,
        vec!["* 2 EXPUNGE\r\n", "* 2 EXPUNGE\r\n", "* 3 EXPUNGE\r\n"]
    );
    let rest = client.ok("FETCH 1:* (UID)").await;
    assert_eq!(
        rest,
        vec![
            format!("* 1 FETCH (UID {})\r\n", uids[0]),
            format!("* 2 FETCH (UID {})\r\n", uids[3])
        ]
    );
    let (_, status) = client.command("FETCH 3 (UID)").await;
    assert!(status.starts_with("BAD"), "{status}");
}

#[tokio::test]
async fn reports_other_sessions_changes_at_the_next_command() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut watcher = h.logged_in().await;
    watcher.ok("SELECT INBOX").await;
    let mut other = h.logged_in().await;
    other.ok("SELECT INBOX").await;
    other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("EXPUNGE").await;
    h.deliver(&message(2)).await;
    assert_eq!(
        watcher.ok("NOOP").await,
        vec!["* 1 EXPUNGE\r\n", "* 1 EXISTS\r\n"]
    );
}

#[tokio::test]
async fn fetching_a_body_without_peek_sets_seen() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut client = h.logged_in().await;
    client.ok("SELECT INBOX").await;
    let fetched = client.ok("FETCH 1 (BODY[])").await;
    assert!(
        fetched[0].contains("body 1") && fetched[0].ends_with(" FLAGS (\\Seen))\r\n"),
        "{fetched:?}"
    );
    assert_eq!(
        client.ok("FETCH 1 (FLAGS)").await,
        vec!["* 1 FETCH (FLAGS (\\Seen))\r\n"]
    );
}

#[tokio::test]
async fn appends_only_encrypted_messages() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    client
        .send(format!("p1 APPEND INBOX {{{}}}\r\n", PLAIN.len()).as_bytes())
        .await;
    assert!(client.line().await.starts_with("+ "));
    client.send(PLAIN).await;
    client.send(b"\r\n").await;
    let (_, status) = client.until_tagged("p1").await;
    assert_eq!(
        status,
        "NO [CANNOT] Encryption Needed: Invalid Unencrypted Mail"
    );
    client
        .send(format!("e1 APPEND INBOX (\\Seen) {{{}}}\r\n", ENCRYPTED.len()).as_bytes())
        .await;
    assert!(client.line().await.starts_with("+ "));
    client.send(ENCRYPTED).await;
    client.send(b"\r\n").await;
    let (_, status) = client.until_tagged("e1").await;
    assert!(status.starts_with("OK [APPENDUID "), "{status}");
    let status_line = client.ok("STATUS INBOX (MESSAGES UNSEEN)").await;
    assert_eq!(
        status_line,
        vec!["* STATUS \"INBOX\" (MESSAGES 1 UNSEEN 0)\r\n"]
    );
}

#[tokio::test]
async fn refuses_an_oversize_literal_without_a_continuation() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let size = h.ctx.settings.limits().max_message_size + 1;
    client
        .send(format!("big APPEND INBOX {{{size}}}\r\n").as_bytes())
        .await;
    assert_eq!(client.line().await, "big NO [TOOBIG] Literal too big\r\n");
    client.ok("NOOP").await;
}

#[tokio::test]
async fn large_append_literals_share_a_bounded_budget() {
    let h = setup().await;
    let budget = Arc::new(tokio::sync::Semaphore::new(100_000));
    let mut client = h
        .connect_with(true, |s| s.literal_budget = budget.clone())
        .await;
    client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    // Another session holds half of the budget: no continuation.
    let held = budget.clone().acquire_many_owned(50_000).await.unwrap();
    client.send(b"b1 APPEND INBOX {70000}\r\n").await;
    assert_eq!(
        client.line().await,
        "b1 NO [UNAVAILABLE] Server busy, try again\r\n"
    );
    drop(held);
    client.send(b"b2 APPEND INBOX {70000}\r\n").await;
    assert_eq!(client.line().await, "+ Ready for literal data\r\n");
    assert_eq!(budget.available_permits(), 30_000);
    let mut literal = vec![b'x'; 70_000];
    literal.extend_from_slice(b"\r\n");
    client.send(&literal).await;
    let (_, status) = client.until_tagged("b2").await;
    assert!(status.starts_with("NO [CANNOT]"), "{status}");
    // The next command releases the literal's bytes.
    client.ok("NOOP").await;
    assert_eq!(budget.available_permits(), 100_000);
}

#[tokio::test]
async fn bounds_literals_tightly_before_login() {
    let h = setup().await;
    let mut client = h.connect().await;
    client.send(b"big APPEND INBOX {1000000}\r\n").await;
    assert_eq!(client.line().await, "big NO [TOOBIG] Literal too big\r\n");
}

#[tokio::test]
async fn moves_messages_by_uid() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    h.deliver(&message(2)).await;
    let mut client = h.logged_in().await;
    client.ok("CREATE Archive").await;
    let (_, status) = client.command("CREATE Archive").await;
    assert!(status.starts_with("NO [ALREADYEXISTS]"), "{status}");
    let select = client.ok("SELECT INBOX").await;
    let next = number_after(&select, "UIDNEXT");
    let moved = client.ok(&format!("UID MOVE {} Archive", next - 2)).await;
    assert!(moved[0].starts_with("* OK [COPYUID "), "{moved:?}");
    assert_eq!(moved[1], "* 1 EXPUNGE\r\n");
    assert_eq!(
        client.ok("STATUS Archive (MESSAGES)").await,
        vec!["* STATUS \"Archive\" (MESSAGES 1)\r\n"]
    );
    assert_eq!(
        client.ok("FETCH 1:* (UID)").await,
        vec![format!("* 1 FETCH (UID {})\r\n", next - 1)]
    );
    let (_, status) = client.command("UID MOVE 1:* Nowhere").await;
    assert!(status.starts_with("NO [TRYCREATE]"), "{status}");
    let list = client.ok("LIST \"\" \"*\"").await;
    assert!(
        list.iter()
            .any(|l| l.starts_with("* LIST (\\HasNoChildren")
                && l.ends_with("\"/\" \"Archive\"\r\n")),
        "{list:?}"
    );
    assert!(
        list.iter().any(|l| l.ends_with("\"/\" \"INBOX\"\r\n")),
        "{list:?}"
    );
}

#[tokio::test]
async fn answers_unknown_commands_with_bad_and_carries_on() {
    let h = setup().await;
    let mut client = h.connect().await;
    let (_, status) = client.command("FROBNICATE now").await;
    assert!(status.starts_with("BAD"), "{status}");
    client.send(b"\r\n").await;
    assert!(client.line().await.starts_with("* BAD"));
    let (_, status) = client.command("FETCH 1 (UID)").await;
    assert!(status.starts_with("BAD"), "{status}");
    client.ok("NOOP").await;
}

#[tokio::test]
async fn stores_and_returns_device_tokens() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let (_, status) = client
        .command("SETMETADATA INBOX (/private/devicetoken \"token-one\")")
        .await;
    assert_eq!(status, "OK Setmetadata completed");
    client
        .ok("SETMETADATA INBOX (/private/devicetoken \"token-two\")")
        .await;
    let (lines, status) = client
        .command("GETMETADATA INBOX /private/devicetoken")
        .await;
    assert_eq!(status, "OK Getmetadata completed");
    assert_eq!(
        lines,
        vec!["* METADATA \"INBOX\" (/private/devicetoken \"token-one token-two\")\r\n"]
    );
}

#[tokio::test]
async fn refuses_device_tokens_with_spaces_and_accepts_nil() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    client
        .ok("SETMETADATA INBOX (/private/devicetoken \"token-one\")")
        .await;
    for bad in ["\"two words\"", "\"tab\tinside\""] {
        let command = format!("SETMETADATA INBOX (/private/devicetoken {bad})");
        let (_, status) = client.command(&command).await;
        assert!(status.starts_with("BAD"), "{bad}: {status}");
    }
    client
        .ok("SETMETADATA INBOX (/private/devicetoken NIL)")
        .await;
    let (lines, _) = client
        .command("GETMETADATA INBOX /private/devicetoken")
        .await;
    assert_eq!(
        lines,
        vec!["* METADATA \"INBOX\" (/private/devicetoken \"token-one\")\r\n"]
    );
}

/// Pipelines commands into a session over a tiny buffer and never reads;
/// returns how long (in paused time) the session took to give up, and how.
async fn stall_session(h: &Harness, login: bool) -> (Duration, Option<std::io::ErrorKind>) {
    let (client, server) = tokio::io::duplex(1024);
    let session = Session::new(server, h.ctx.clone(), true, h.shutdown.clone());
    let session = tokio::spawn(session.run());
    let mut client = Client::new(client);
    client.line().await;
    if login {
        client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    }
    // From here on time is virtual; nothing reads the responses.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let Client { mut writer, .. } = client;
    tokio::spawn(async move {
        for n in 0..10_000 {
            let command = format!("p{n} CAPABILITY\r\n");
            if writer.write_all(command.as_bytes()).await.is_err() {
                break;
            }
        }
        // Keep the stream open: the session must give up by itself.
        std::future::pending::<()>().await;
    });
    let ended = tokio::time::timeout(Duration::from_secs(3600), session).await;
    let kind = match ended {
        Ok(Ok(Err(crate::SessionError::Io(e)))) => Some(e.kind()),
        _ => None,
    };
    (started.elapsed(), kind)
}

#[tokio::test]
async fn closes_a_session_whose_client_never_reads() {
    let h = setup().await;
    let (took, kind) = stall_session(&h, false).await;
    assert_eq!(kind, Some(std::io::ErrorKind::TimedOut), "after {took:?}");
    assert!(took >= crate::session::UNAUTHENTICATED_WRITE_TIMEOUT);
    assert!(took < crate::session::AUTHENTICATED_WRITE_TIMEOUT);
}

#[tokio::test]
async fn gives_a_logged_in_client_longer_to_read() {
    let h = setup().await;
    let (took, kind) = stall_session(&h, true).await;
    assert_eq!(kind, Some(std::io::ErrorKind::TimedOut), "after {took:?}");
    assert!(took >= crate::session::AUTHENTICATED_WRITE_TIMEOUT);
    assert!(took < 2 * crate::session::AUTHENTICATED_WRITE_TIMEOUT);
}

#[tokio::test]
async fn says_bye_on_logout_and_shutdown() {
    let h = setup().await;
    let mut client = h.connect().await;
    let (lines, status) = client.command("LOGOUT").await;
    assert_eq!(
        (lines, status.as_str()),
        (
            vec!["* BYE Logging out\r\n".to_owned()],
            "OK LOGOUT completed"
        )
    );
    let mut client = h.connect().await;
    h.shutdown.cancel();
    assert_eq!(client.line().await, "* BYE Server shutting down\r\n");
}

async fn tls_connect<S>(
    cert: rustls::pki_types::CertificateDer<'static>,
    stream: S,
) -> tokio_rustls::client::TlsStream<S>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("imap.example.org").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .unwrap()
}

#[tokio::test]
async fn serves_implicit_tls_with_per_ip_limits_until_shutdown() {
    let (h, cert) = harness_with("[limits]\nmax_imap_connections = 5\n").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(crate::serve(
        listener,
        crate::Mode::ImplicitTls,
        h.ctx.clone(),
        h.shutdown.clone(),
    ));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut first = Client::new(tls_connect(cert, tcp).await);
    assert!(first.line().await.starts_with("* OK [CAPABILITY IMAP4rev1"));
    first.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    // One fifth of 5 is one connection per IP address. Over the limit the
    // server closes the TCP connection without waiting for a ClientHello.
    let mut second = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed without handshake: {read:?}"
    );
    h.shutdown.cancel();
    assert_eq!(first.line().await, "* BYE Server shutting down\r\n");
    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "serve returned after shutdown"
    );
}

#[tokio::test]
async fn searches_by_flags_uids_and_headers() {
    let h = setup().await;
    for n in 1..=3 {
        h.deliver(&message(n)).await;
    }
    let mut client = h.logged_in().await;
    let select = client.ok("SELECT INBOX").await;
    let last = number_after(&select, "UIDNEXT") - 1;
    client.ok("STORE 2 +FLAGS.SILENT (\\Seen)").await;
    assert_eq!(client.ok("SEARCH UNSEEN").await, vec!["* SEARCH 1 3\r\n"]);
    assert_eq!(
        client.ok("UID SEARCH SEEN").await,
        vec![format!("* SEARCH {}\r\n", last - 1)]
    );
    assert_eq!(
        client.ok("SEARCH HEADER Message-ID m3@").await,
        vec!["* SEARCH 3\r\n"]
    );
    assert_eq!(client.ok("SEARCH NOT 1:2").await, vec!["* SEARCH 3\r\n"]);
    assert_eq!(
        client.ok("SEARCH BODY \"body 1\" SINCE 1-Jan-2020").await,
        vec!["* SEARCH 1\r\n"]
    );
    let (_, status) = client.command("SEARCH SENTON 1-Jan-2020").await;
    assert!(status.starts_with("BAD"), "{status}");
}

#[tokio::test]
async fn searches_huge_uid_and_sequence_ranges_correctly() {
    let h = setup().await;
    for n in 1..=40 {
        h.deliver(&message(n)).await;
    }
    let mut client = h.logged_in().await;
    let select = client.ok("SELECT INBOX").await;
    let last = number_after(&select, "UIDNEXT") - 1;
    let uids: Vec<String> = (last - 39..=last).map(|u| u.to_string()).collect();
    assert_eq!(
        client.ok("UID SEARCH UID 1:4294967295").await,
        vec![format!("* SEARCH {}\r\n", uids.join(" "))]
    );
    assert_eq!(
        client.ok("SEARCH 1:* NOT 3:38").await,
        vec!["* SEARCH 1 2 39 40\r\n"]
    );
    assert_eq!(
        client
            .ok(&format!("SEARCH OR UID {last} 2 UID 1:4294967295"))
            .await,
        vec!["* SEARCH 2 40\r\n"]
    );
}

#[tokio::test]
async fn defers_expunges_during_fetch_until_the_next_command() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    h.deliver(&message(2)).await;
    let mut watcher = h.logged_in().await;
    watcher.ok("SELECT INBOX").await;
    let mut other = h.logged_in().await;
    other.ok("SELECT INBOX").await;
    other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("CLOSE").await;
    // RFC 3501 §7.4.1: no EXPUNGE during FETCH; numbering stays put.
    let fetched = watcher.ok("FETCH 2 (FLAGS)").await;
    assert_eq!(fetched, vec!["* 2 FETCH (FLAGS ())\r\n"]);
    assert_eq!(watcher.ok("NOOP").await, vec!["* 1 EXPUNGE\r\n"]);
}

#[tokio::test]
async fn examine_is_read_only() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut client = h.logged_in().await;
    let (_, status) = client.command("EXAMINE INBOX").await;
    assert_eq!(status, "OK [READ-ONLY] EXAMINE completed");
    let fetched = client.ok("FETCH 1 (BODY[] FLAGS)").await;
    assert!(fetched[0].ends_with("FLAGS ())\r\n"), "{fetched:?}");
    let (_, status) = client.command("STORE 1 +FLAGS (\\Deleted)").await;
    assert!(status.starts_with("NO [READ-ONLY]"), "{status}");
}

/// A message of the last minute (never trimmed) filling `size` bytes.
fn recent_filler(size: usize) -> NewMessage {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    NewMessage {
        body: vec![b'x'; size].into(),
        flags: vec![],
        internal_date: i64::try_from(now).unwrap() - 60,
    }
}

#[tokio::test]
async fn append_beyond_the_quota_gets_overquota() {
    let h = setup().await;
    let account = h.account().await;
    let inbox = h.store().mailbox(account, "INBOX").await.unwrap().unwrap();
    h.store()
        .append(inbox.id, recent_filler(ENCRYPTED.len()))
        .await
        .unwrap();
    h.store().set_quota(Some(ENCRYPTED.len() as u64 * 3 / 2));
    let mut client = h.logged_in().await;
    client
        .send(format!("q1 APPEND INBOX {{{}}}\r\n", ENCRYPTED.len()).as_bytes())
        .await;
    assert!(client.line().await.starts_with("+ "));
    client.send(ENCRYPTED).await;
    client.send(b"\r\n").await;
    let (_, status) = client.until_tagged("q1").await;
    assert_eq!(status, "NO [OVERQUOTA] Quota exceeded");
    assert_eq!(h.store().uids(inbox.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn getquotaroot_reports_usage_and_the_configured_limit_in_kib() {
    let (h, _) = harness_with("[limits]\nmax_mailbox_size = 1048576\n").await;
    let account = h.account().await;
    let inbox = h.store().mailbox(account, "INBOX").await.unwrap().unwrap();
    h.store()
        .append(inbox.id, recent_filler(3 * 1024 + 1))
        .await
        .unwrap();
    let mut client = h.logged_in().await;
    let lines = client.ok("GETQUOTAROOT INBOX").await;
    assert_eq!(
        lines,
        vec![
            "* QUOTAROOT \"INBOX\" \"\"\r\n".to_owned(),
            "* QUOTA \"\" (STORAGE 4 1024)\r\n".to_owned(),
        ]
    );
    let lines = client.ok("GETQUOTA \"\"").await;
    assert_eq!(lines, vec!["* QUOTA \"\" (STORAGE 4 1024)\r\n".to_owned()]);
}

#[tokio::test]
async fn idle_client_sees_expunge_from_expiry() {
    let h = setup().await;
    h.deliver(&message(1)).await; // internal date in 2023: long expired
    let mut client = h.logged_in().await;
    client.ok("SELECT INBOX").await;
    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    let rules = chatmail_store::ExpireRules {
        delete_mails_after: 20,
        delete_large_after: 7,
        large_message_size: 200_000,
        delete_inactive_users_after: 0,
    };
    let report = h.store().expire(1_800_000_000, &rules).await.unwrap();
    assert_eq!(report.old_messages, 1);
    assert_eq!(client.line().await, "* 1 EXPUNGE\r\n");
    client.send(b"DONE\r\n").await;
    client.until_tagged("i1").await;
}
