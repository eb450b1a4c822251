//! `POST /mxdeliv` client (docs/specifications.md §6) over HTTP/1.1 and TLS.
//!
//! Flow: take an idle connection to the host from the pool (or open one:
//! TCP, TLS with ALPN `http/1.1`, HTTP/1.1 handshake), send the message
//! with `X-Mail-From` (absent for the null sender) and one `X-Mail-To` per
//! recipient, read the status and at most [`MAX_BODY`] bytes of the reply,
//! and put the connection back for the next message (keep-alive).
//!
//! Invariants: the whole exchange is bounded by [`TIMEOUT`]; the pool holds
//! at most [`MAX_IDLE_PER_HOST`] connections for [`MAX_HOSTS`] hosts, each
//! for at most [`IDLE_FOR`]; its lock is never held across an `.await`.
//! Each connection's task ends when its handle is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::time::timeout;

use crate::{route, tls};

/// docs/specifications.md §6: one delivery over `/mxdeliv` takes at most 60 s.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per host.
const MAX_IDLE_PER_HOST: usize = 8;
/// Hosts with idle connections kept.
const MAX_HOSTS: usize = 256;
/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Reply body bytes read at most; a longer reply is an error.
const MAX_BODY: usize = 64 * 1024;
/// Reply text kept for an outcome.
const MAX_TEXT: usize = 512;

/// What the peer's `/mxdeliv` answered.
#[derive(Debug)]
pub(crate) enum Reply {
    /// 200: every recipient has the message.
    Delivered,
    /// The peer refused the message for good (the text to bounce with).
    Permanent(String),
    /// The peer refused the message for now.
    Temporary(String),
    /// No usable answer: try SMTP on the same host.
    Unavailable(MxdelivError),
}

/// Why `/mxdeliv` gave no usable answer; the text names the step that
/// failed and is only logged, since SMTP is tried next.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MxdelivError {
    #[error("/mxdeliv: no answer within {0:?}")]
    Timeout(Duration),
    #[error("/mxdeliv: {0}")]
    Connect(#[from] route::ConnectError),
    #[error("/mxdeliv: {0}")]
    TlsName(#[from] tls::NameError),
    #[error("/mxdeliv: TLS with {host} port {port}: {source}")]
    Tls {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/1.1 handshake, the request or the reply body failed.
    #[error("/mxdeliv: HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// An envelope address is not a valid header value.
    #[error("/mxdeliv: an address cannot be sent in a header")]
    Header,
    #[error("/mxdeliv: cannot build the request: {0}")]
    Request(#[source] hyper::http::Error),
    #[error("/mxdeliv: reply body longer than {MAX_BODY} bytes")]
    BodyTooLong,
    /// A status that is neither success nor a refusal of the message.
    #[error("/mxdeliv answered HTTP {0}")]
    Status(StatusCode),
}

type Sender = SendRequest<Full<Bytes>>;

/// Where a pooled connection goes: host, port, certificate policy.
type PoolKey = (String, u16, bool);

/// HTTPS client with a pool of idle keep-alive connections.
pub(crate) struct Client {
    dialer: route::Dialer,
    connectors: Arc<tls::Connectors>,
    /// Idle connections with the time they became idle.
    idle: Mutex<HashMap<PoolKey, Vec<(Sender, Instant)>>>,
}

/// One message to post.
pub(crate) struct Post<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Accept any certificate (test domains, IP literals).
    pub any_certificate: bool,
    pub sender: Option<&'a str>,
    pub recipients: &'a [String],
    pub message: Bytes,
}

impl Client {
    pub(crate) fn new(dialer: route::Dialer, connectors: Arc<tls::Connectors>) -> Self {
        Self {
            dialer,
            connectors,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Posts one message and classifies the answer.
    pub(crate) async fn post(&self, post: &Post<'_>) -> Reply {
        match timeout(TIMEOUT, self.exchange(post)).await {
            Err(_) => Reply::Unavailable(MxdelivError::Timeout(TIMEOUT)),
            Ok(Err(cause)) => Reply::Unavailable(cause),
            Ok(Ok((status, body))) => classify(status, &body),
        }
    }

    async fn exchange(&self, post: &Post<'_>) -> Result<(StatusCode, Vec<u8>), MxdelivError> {
        let key = (
            post.host.to_ascii_lowercase(),
            post.port,
            post.any_certificate,
        );
        if let Some(mut sender) = self.checkout(&key) {
            match send(&mut sender, request(post)?).await {
                Ok(answer) => {
                    self.checkin(key, sender);
                    return Ok(answer);
                }
                // The peer closed the idle connection before reading the
                // request: send it again on a new one.
                Err(failure) if failure.retry => {
                    tracing::debug!(
                        host = post.host,
                        "idle connection closed: {}",
                        failure.error
                    );
                }
                Err(failure) => return Err(failure.error),
            }
        }
        let mut sender = self.open(post).await?;
        let answer = send(&mut sender, request(post)?)
            .await
            .map_err(|f| f.error)?;
        self.checkin(key, sender);
        Ok(answer)
    }

    async fn open(&self, post: &Post<'_>) -> Result<Sender, MxdelivError> {
        let tcp = self.dialer.connect(post.host, post.port).await?;
        let name = tls::server_name(post.host)?;
        let connector = self.connectors.https(post.any_certificate);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|source| MxdelivError::Tls {
                host: post.host.to_owned(),
                port: post.port,
                source,
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(MxdelivError::Http)?;
        // Ends when the connection closes or its sender is dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("/mxdeliv connection ended: {e}");
            }
        });
        Ok(sender)
    }

    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        let found = std::iter::from_fn(|| list.pop())
            .find(|(sender, since)| since.elapsed() < IDLE_FOR && sender.is_ready());
        if list.is_empty() {
            idle.remove(key);
        }
        found.map(|(sender, _)| sender)
    }

    fn checkin(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if !idle.contains_key(&key) && idle.len() >= MAX_HOSTS {
            idle.retain(|_, list| {
                list.retain(|(s, since)| since.elapsed() < IDLE_FOR && !s.is_closed());
                !list.is_empty()
            });
            if idle.len() >= MAX_HOSTS {
                return;
            }
        }
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push((sender, Instant::now()));
        }
    }
}

fn request(post: &Post<'_>) -> Result<Request<Full<Bytes>>, MxdelivError> {
    let authority = match (post.host.contains(':'), post.port) {
        (true, 443) => format!("[{}]", post.host),
        (true, port) => format!("[{}]:{port}", post.host),
        (false, 443) => post.host.to_owned(),
        (false, port) => format!("{}:{port}", post.host),
    };
    let mut builder = Request::post("/mxdeliv").header(hyper::header::HOST, authority);
    if let Some(sender) = post.sender {
        builder = builder.header(from_header(), header_value(sender)?);
    }
    for recipient in post.recipients {
        builder = builder.header(to_header(), header_value(recipient)?);
    }
    builder
        .body(Full::new(post.message.clone()))
        .map_err(MxdelivError::Request)
}

fn from_header() -> HeaderName {
    HeaderName::from_static("x-mail-from")
}

fn to_header() -> HeaderName {
    HeaderName::from_static("x-mail-to")
}

fn header_value(address: &str) -> Result<HeaderValue, MxdelivError> {
    HeaderValue::from_bytes(address.as_bytes()).map_err(|_| MxdelivError::Header)
}

/// Why an exchange failed.
struct Failure {
    error: MxdelivError,
    /// The connection closed before the request was processed, so sending
    /// it again on a new connection cannot deliver it twice.
    retry: bool,
}

/// Sends one request and reads the status and the (bounded) body.
async fn send(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Vec<u8>), Failure> {
    let failed = |retry: bool| {
        move |e: hyper::Error| Failure {
            error: MxdelivError::Http(e),
            retry,
        }
    };
    sender.ready().await.map_err(failed(true))?;
    let response = sender.send_request(request).await.map_err(|e| {
        let retry = e.is_canceled() || e.is_incomplete_message();
        failed(retry)(e)
    })?;
    let status = response.status();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(failed(false))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_BODY {
                return Err(Failure {
                    error: MxdelivError::BodyTooLong,
                    retry: false,
                });
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok((status, bytes))
}

/// Maps the answer to a [`Reply`] (docs/specifications.md §6).
fn classify(status: StatusCode, body: &[u8]) -> Reply {
    let text = reply_text(body);
    let or_default = |text: String| {
        if text.is_empty() {
            format!("550 5.7.0 The peer's /mxdeliv refused the message (HTTP {status})")
        } else {
            text
        }
    };
    match status.as_u16() {
        200..=299 => Reply::Delivered,
        // 400 carries the SMTP error text; its code tells whether it is
        // temporary (e.g. `451 4.7.1`).
        400 if text.starts_with('4') => Reply::Temporary(text),
        400 | 403 | 404 | 413 => Reply::Permanent(or_default(text)),
        _ => Reply::Unavailable(MxdelivError::Status(status)),
    }
}

/// The first [`MAX_TEXT`] characters of the body, on one line.
fn reply_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_replies() {
        let ok = StatusCode::OK;
        assert!(matches!(classify(ok, b""), Reply::Delivered));
        let bad = StatusCode::BAD_REQUEST;
        assert!(matches!(
            classify(bad, b"554 5.7.1 No valid DKIM signature found\r\n"),
            Reply::Permanent(t) if t == "554 5.7.1 No valid DKIM signature found"
        ));
        assert!(matches!(
            classify(bad, b"451 4.7.1 later"),
            Reply::Temporary(t) if t == "451 4.7.1 later"
        ));
        assert!(
            matches!(classify(StatusCode::NOT_FOUND, b""), Reply::Permanent(t) if t.contains("404"))
        );
        assert!(matches!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, b"x"),
            Reply::Permanent(_)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, b""),
            Reply::Unavailable(MxdelivError::Status(StatusCode::BAD_GATEWAY))
        ));
        let Reply::Unavailable(cause) = classify(StatusCode::METHOD_NOT_ALLOWED, b"") else {
            panic!("405 is not a refusal of the message");
        };
        // The text the SMTP fallback's log line shows.
        assert_eq!(
            cause.to_string(),
            "/mxdeliv answered HTTP 405 Method Not Allowed"
        );
    }

    #[test]
    fn reply_text_is_one_bounded_line() {
        let long = "a\nb".repeat(1000);
        let text = reply_text(long.as_bytes());
        assert!(!text.contains('\n'));
        let count = text.chars().count();
        assert!(count <= MAX_TEXT && count > MAX_TEXT - 4, "{count}");
    }
}
