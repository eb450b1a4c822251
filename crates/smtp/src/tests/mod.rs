//! Session tests: transcripts over in-memory streams against a real SQLite
//! store in a temporary directory.

mod bounds;
mod mx;
mod push;
mod queue;
mod quota;
mod throttle;
mod tls;
mod transcripts;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chatmail_accounts::Accounts;
use chatmail_dkim::{Algorithm, DkimKey, StaticTxt};
use chatmail_inbound::{Inbound, KeyLookup};
use chatmail_store::{Store, StoreOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::session::Session;
use crate::{Context, Shared};

pub const PASSWORD: &str = "correct-horse";

/// A server context over a fresh store.
pub struct Harness {
    pub shared: Arc<Shared>,
    pub store: Store,
    pub cert: rustls_pki_types::CertificateDer<'static>,
    /// The signing key of the peer domain `example.net`, whose public key
    /// the inbound checks find in a fixed TXT table.
    pub peer_key: DkimKey,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// A harness with extra configuration text (e.g. a `[limits]` table).
    pub async fn new(extra: &str) -> Self {
        Self::build::<chatmail_transport::Transport>(extra, None).await
    }

    /// A harness whose submission hands remote recipients to a queue that
    /// delivers through `deliver`.
    pub async fn with_queue(extra: &str, deliver: impl chatmail_queue::Deliver) -> Self {
        Self::build(extra, Some(deliver)).await
    }

    async fn build<D: chatmail_queue::Deliver>(extra: &str, deliver: Option<D>) -> Self {
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
        let (tls, cert) = tls_config();
        let der = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
        let peer_key = DkimKey::from_pkcs8_der("sel", &der).unwrap();
        let mut txt = StaticTxt::new();
        txt.insert_key(&peer_key, "example.net");
        let keys = KeyLookup::fixed(txt);
        let inbound = Inbound::new(Arc::clone(&settings), accounts.clone(), keys);
        let queue = match deliver {
            Some(deliver) => Some(start_queue(&store, &settings, deliver).await),
            None => None,
        };
        let ctx = Arc::new(Context {
            settings,
            accounts,
            tls,
            mx_tls: None,
            inbound,
            queue,
            push: None,
        });
        Self {
            shared: Arc::new(Shared::new(ctx)),
            store,
            cert,
            peer_key,
            _dir: dir,
        }
    }

    /// Creates an account by logging in once.
    pub async fn account(&self, address: &str) {
        self.shared
            .ctx
            .accounts
            .login(address, PASSWORD)
            .await
            .unwrap();
    }

    /// A client connected to a session that behaves as if TLS were done.
    pub fn connect(&self) -> Client<tokio::io::DuplexStream> {
        self.connect_with(true)
    }

    pub fn connect_with(&self, tls: bool) -> Client<tokio::io::DuplexStream> {
        let (client, server) = tokio::io::duplex(1 << 20);
        let session = Session::new(server, Arc::clone(&self.shared), tls);
        tokio::spawn(session.run());
        Client::new(client)
    }

    /// A full connection (pool slot, login deadline, TLS where `mode` has
    /// it) from `peer` on one end of a duplex stream.
    pub fn start_connection_from(
        &self,
        mode: crate::Mode,
        peer: std::net::IpAddr,
    ) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 16);
        let shared = Arc::clone(&self.shared);
        let slot = shared.connections.acquire(Some(peer)).expect("a free slot");
        let connection = crate::Connection {
            peer,
            mode,
            slot: Arc::new(slot),
            deadline: crate::login_deadline(&shared.ctx),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(crate::handle_connection(
            server, connection, shared, shutdown,
        ));
        client
    }

    /// [`Harness::start_connection_from`] 127.0.0.1.
    pub fn start_connection(&self, mode: crate::Mode) -> tokio::io::DuplexStream {
        self.start_connection_from(mode, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// A client connected to an MX session (port 25).
    pub fn connect_mx(&self, tls: bool) -> Client<tokio::io::DuplexStream> {
        let (client, server) = tokio::io::duplex(1 << 20);
        let session = Session::new(server, Arc::clone(&self.shared), tls).for_mx();
        tokio::spawn(session.run());
        Client::new(client)
    }

    /// Raw bodies in the INBOX of `address`.
    pub async fn inbox(&self, address: &str) -> Vec<Vec<u8>> {
        let account = self.store.account(address).await.unwrap().unwrap();
        let inbox = self
            .store
            .mailbox(account.id, "INBOX")
            .await
            .unwrap()
            .unwrap();
        let mut bodies = Vec::new();
        for meta in self.store.messages(inbox.id, 0).await.unwrap() {
            let body = self.store.body(inbox.id, meta.uid).await.unwrap().unwrap();
            bodies.push(body.to_vec());
        }
        bodies
    }
}

/// A queue over the harness store, signing with a fresh key.
async fn start_queue<D: chatmail_queue::Deliver>(
    store: &Store,
    settings: &Arc<chatmail_config::Settings>,
    deliver: D,
) -> chatmail_queue::Queue {
    let der = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
    let key = Arc::new(DkimKey::from_pkcs8_der("relay", &der).unwrap());
    let options = chatmail_queue::QueueOptions::from_settings(settings);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (store, settings) = (store.clone(), Arc::clone(settings));
    chatmail_queue::Queue::start_with(store, deliver, key, settings, options, shutdown)
        .await
        .unwrap()
}

/// A self-signed certificate for `example.org` and its server config.
fn tls_config() -> (
    Arc<rustls::ServerConfig>,
    rustls_pki_types::CertificateDer<'static>,
) {
    let generated = rcgen::generate_simple_self_signed(vec!["example.org".to_owned()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    (Arc::new(config), cert)
}

/// Runs a rustls client handshake over `stream` that trusts the harness
/// certificate (the name `example.org`).
pub async fn tls_handshake<S>(harness: &Harness, stream: S) -> tokio_rustls::client::TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut roots = rustls::RootCertStore::empty();
    roots.add(harness.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("example.org").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .unwrap()
}

/// The client end of a transcript.
pub struct Client<S> {
    stream: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream: BufReader::new(stream),
        }
    }

    pub fn into_inner(self) -> S {
        self.stream.into_inner()
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// Sends `bytes` unless the server has closed its end already.
    pub async fn try_send(&mut self, bytes: &[u8]) {
        let _ = self.stream.get_mut().write_all(bytes).await;
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).await.unwrap();
            assert!(n > 0, "connection closed; so far: {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    /// Sends one command line and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply starts with `expected`.
    pub async fn expect(&mut self, line: &str, expected: &str) {
        let reply = self.cmd(line).await;
        assert!(
            reply.starts_with(expected),
            "{line:?}: expected {expected:?}, got {reply:?}"
        );
    }

    /// Whether the server has closed the connection.
    pub async fn is_closed(&mut self) -> bool {
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap_or(0) == 0
    }

    /// Reads the greeting, sends EHLO and logs in with AUTH PLAIN.
    pub async fn login(&mut self, address: &str) {
        assert!(self.reply().await.starts_with("220 "));
        self.expect("EHLO [127.0.0.1]", "250").await;
        let token = STANDARD.encode(format!("\0{address}\0{PASSWORD}"));
        self.expect(&format!("AUTH PLAIN {token}"), "235 2.7.0")
            .await;
    }

    /// A full transaction; returns the reply to the end of DATA.
    pub async fn submit(&mut self, from: &str, to: &[&str], message: &[u8]) -> String {
        self.expect(&format!("MAIL FROM:<{from}> BODY=8BITMIME SMTPUTF8"), "250")
            .await;
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), "250").await;
        }
        self.expect("DATA", "354").await;
        self.send(message).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

/// The encrypted fixture with our own headers in front of its MIME body.
pub fn encrypted_message(from: &str, to: &str) -> Vec<u8> {
    let fixture: &[u8] = include_bytes!("../../../gate/testdata/encrypted.eml");
    let split = fixture.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let body = &fixture[split + 4..];
    let head = format!(
        "Received: from [10.0.0.1] by somewhere\r\n\twith ESMTPSA\r\nFrom: <{from}>\r\nTo: <{to}>\r\n\
         Subject: Secret plans\r\nX-Mailer: Mailer 1.0\r\nUser-Agent: Agent\r\n \
         continued\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; \
         protocol=\"application/pgp-encrypted\";\r\n boundary=\"BOUNDARY\"\r\n\r\n"
    );
    [head.as_bytes(), body].concat()
}

/// A cleartext message.
pub fn plain_message(from: &str, to: &str) -> Vec<u8> {
    format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: hi\r\n\r\nHello in the clear.\r\n")
        .into_bytes()
}
