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
mod connection;
mod mailbox;
mod metadata;
mod quota;
mod session;
mod throttle;

const ALICE: &str = "alice0001@example.org";
const PASSWORD: &str = "correct-horse-battery";
const ENCRYPTED: &[u8] = include_bytes!("../../testdata/encrypted.eml");
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
    let limits = settings.limits();
    let spools = chatmail_limits::Spools::new(
        dir.path().join("spool"),
        limits.max_body_memory,
        limits.max_spool_size,
        limits.max_message_size,
    );
    let iroh_relay = settings.config.iroh.url.clone();
    let ctx = Arc::new(Context {
        settings,
        accounts,
        tls,
        turn: Some(Arc::new(turn)),
        iroh_relay,
        spools,
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

async fn setup_with(extra: &str) -> Harness {
    harness_with(extra).await.0
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
                std::net::Ipv4Addr::LOCALHOST.into(),
                self.ctx.clone(),
                self.shutdown.clone(),
                None,
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
