//! Real peers on 127.0.0.1 for the delivery tests: an HTTPS `/mxdeliv`
//! server (axum over tokio-rustls) and an SMTP server with STARTTLS, both
//! with a self-signed certificate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A TLS acceptor with a fresh self-signed certificate.
fn acceptor() -> TlsAcceptor {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let chain = vec![CertificateDer::from(certified.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// What `/mxdeliv` received in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub from: Option<String>,
    pub to: Vec<String>,
    pub body: Vec<u8>,
}

/// An HTTPS `/mxdeliv` server answering every request with one status.
pub struct HttpsPeer {
    pub port: u16,
    pub posted: Arc<Mutex<Vec<Posted>>>,
    /// TLS connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

#[derive(Clone)]
struct Answer {
    status: StatusCode,
    text: &'static str,
    posted: Arc<Mutex<Vec<Posted>>>,
}

impl HttpsPeer {
    pub async fn start(status: StatusCode, text: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let posted = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let answer = Answer {
            status,
            text,
            posted: posted.clone(),
        };
        let app = Router::new()
            .route("/mxdeliv", post(mxdeliv))
            .with_state(answer);
        let tls = TlsListener {
            tcp: listener,
            acceptor: acceptor(),
            connections: connections.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(tls, app).await;
        });
        Self {
            port,
            posted,
            connections,
            _task: AbortOnDrop(task),
        }
    }
}

async fn mxdeliv(
    State(answer): State<Answer>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let text = |v: &axum::http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    answer.posted.lock().unwrap().push(Posted {
        from: headers.get("x-mail-from").map(text),
        to: headers.get_all("x-mail-to").iter().map(text).collect(),
        body: body.to_vec(),
    });
    (answer.status, answer.text)
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    connections: Arc<AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(stream) = self.acceptor.accept(tcp).await {
                self.connections.fetch_add(1, Ordering::SeqCst);
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// What the SMTP peer received in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailed {
    pub tls: bool,
    pub from: String,
    pub to: Vec<String>,
    pub data: Vec<u8>,
}

/// How the SMTP peer behaves.
#[derive(Clone, Copy)]
pub struct SmtpBehaviour {
    pub starttls: bool,
    /// Reply to the final dot.
    pub data_reply: &'static str,
}

impl Default for SmtpBehaviour {
    fn default() -> Self {
        Self {
            starttls: true,
            data_reply: "250 2.0.0 queued",
        }
    }
}

/// An SMTP server with STARTTLS. Recipients whose local part starts with
/// `reject` get `550`, with `later` get `450`; all others `250`.
pub struct SmtpPeer {
    pub port: u16,
    pub mailed: Arc<Mutex<Vec<Mailed>>>,
    /// `MAIL` commands seen, with or without TLS.
    pub mail_commands: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl SmtpPeer {
    pub async fn start(behaviour: SmtpBehaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mailed = Arc::new(Mutex::new(Vec::new()));
        let mail_commands = Arc::new(AtomicUsize::new(0));
        let shared = (mailed.clone(), mail_commands.clone(), acceptor());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (mailed, mails, acceptor) = shared.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(tcp, behaviour, acceptor, mailed, mails).await;
                });
            }
        });
        Self {
            port,
            mailed,
            mail_commands,
            _task: AbortOnDrop(task),
        }
    }
}

async fn smtp_session(
    tcp: TcpStream,
    behaviour: SmtpBehaviour,
    acceptor: TlsAcceptor,
    mailed: Arc<Mutex<Vec<Mailed>>>,
    mails: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut plain = BufReader::new(tcp);
    plain
        .get_mut()
        .write_all(b"220 peer.test ESMTP\r\n")
        .await?;
    let peer = Peer {
        behaviour,
        mailed,
        mails,
    };
    if peer.commands(&mut plain, false).await? {
        let tls = acceptor.accept(plain.into_inner()).await?;
        peer.commands(&mut BufReader::new(tls), true).await?;
    }
    Ok(())
}

struct Peer {
    behaviour: SmtpBehaviour,
    mailed: Arc<Mutex<Vec<Mailed>>>,
    mails: Arc<AtomicUsize>,
}

impl Peer {
    /// Serves commands; true when the client asked for STARTTLS.
    async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: &mut BufReader<S>,
        tls: bool,
    ) -> std::io::Result<bool> {
        let mut mail: Option<Mailed> = None;
        loop {
            let mut line = String::new();
            if io.read_line(&mut line).await? == 0 {
                return Ok(false);
            }
            let upper = line.trim_end().to_ascii_uppercase();
            let reply: String = if upper.starts_with("EHLO") {
                let tls_line = if self.behaviour.starttls && !tls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                format!("250-peer.test\r\n{tls_line}250-8BITMIME\r\n250 SIZE 1000000")
            } else if upper == "STARTTLS" && !tls {
                io.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await?;
                return Ok(true);
            } else if upper.starts_with("MAIL FROM:") {
                self.mails.fetch_add(1, Ordering::SeqCst);
                let from = between(&line, '<', '>');
                mail = Some(Mailed {
                    tls,
                    from,
                    to: Vec::new(),
                    data: Vec::new(),
                });
                "250 2.1.0 ok".into()
            } else if upper.starts_with("RCPT TO:") {
                let rcpt = between(&line, '<', '>');
                if rcpt.starts_with("reject") {
                    "550 5.1.1 no such user".into()
                } else if rcpt.starts_with("later") {
                    "450 4.2.1 mailbox busy".into()
                } else {
                    if let Some(mail) = mail.as_mut() {
                        mail.to.push(rcpt);
                    }
                    "250 2.1.5 ok".into()
                }
            } else if upper == "DATA" {
                io.get_mut().write_all(b"354 go on\r\n").await?;
                let mut message = mail.take().unwrap();
                message.data = read_data(io).await?;
                self.mailed.lock().unwrap().push(message);
                self.behaviour.data_reply.into()
            } else if upper == "QUIT" {
                io.get_mut().write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(false);
            } else {
                "500 5.5.1 unknown command".into()
            };
            io.get_mut()
                .write_all(format!("{reply}\r\n").as_bytes())
                .await?;
        }
    }
}

/// Reads DATA up to the final dot, undoing dot-stuffing.
async fn read_data<S: AsyncRead + Unpin>(io: &mut BufReader<S>) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    loop {
        let mut line = Vec::new();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let unstuffed = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}

fn between(line: &str, open: char, close: char) -> String {
    let start = line.find(open).map_or(0, |i| i + 1);
    let end = line.rfind(close).unwrap_or(line.len());
    line.get(start..end).unwrap_or("").to_owned()
}

/// Aborts a server task when the test drops its peer.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}
