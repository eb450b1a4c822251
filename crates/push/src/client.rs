//! The notification server client: one `POST` per device token, body = the
//! token exactly as the client stored it (docs/specifications.md §4).
//!
//! Flow: connect (TCP, then TLS for `https` URLs, checked against the web
//! PKI roots plus any extra roots of the options), HTTP/1.1 handshake, send
//! the request, read the status. A connection per request keeps the client
//! simple; concurrency is bounded by the worker.
//!
//! Invariant: one exchange takes at most [`TIMEOUT`]; the reply body is
//! never read (only the status matters).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::PushError;

/// Longest one notification may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the notification server answered.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 200: the device was notified.
    Delivered,
    /// 410: the token is no longer valid; forget it.
    Gone,
    /// Anything else (status or transport failure): try again later.
    Failed(PostError),
}

/// Why a notification was not delivered; the worker logs it and retries.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("request: {0}")]
    Request(#[source] hyper::http::Error),
    #[error("`{host}` is not a valid TLS name")]
    TlsName { host: String },
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP/1.1 handshake or the request failed.
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// The server answered, with neither 200 nor 410.
    #[error("status {0}")]
    Status(StatusCode),
}

/// Posts tokens to one notification URL.
pub(crate) struct Client {
    /// Host as written in the URL (brackets kept for IPv6), for `Host:`.
    authority: String,
    /// Host to connect to (brackets removed).
    host: String,
    port: u16,
    /// Path and query of the URL.
    path: String,
    /// `Some` for `https` URLs.
    tls: Option<TlsConnector>,
}

impl Client {
    /// A client for `url` (`http` or `https`).
    pub(crate) fn new(
        url: &str,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, PushError> {
        let bad = |reason| PushError::Url {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("scheme must be http or https")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let tls = if https {
            Some(connector(extra_roots)?)
        } else {
            None
        };
        Ok(Self {
            authority: authority.as_str().to_owned(),
            host: host.to_owned(),
            port,
            path,
            tls,
        })
    }

    /// Posts `token` and classifies the answer.
    pub(crate) async fn post(&self, token: &str) -> Outcome {
        match tokio::time::timeout(TIMEOUT, self.exchange(token)).await {
            Err(_) => Outcome::Failed(PostError::Timeout(TIMEOUT)),
            Ok(Err(cause)) => Outcome::Failed(cause),
            Ok(Ok(StatusCode::OK)) => Outcome::Delivered,
            Ok(Ok(StatusCode::GONE)) => Outcome::Gone,
            Ok(Ok(status)) => Outcome::Failed(PostError::Status(status)),
        }
    }

    async fn exchange(&self, token: &str) -> Result<StatusCode, PostError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(PostError::Connect)?;
        let request = Request::post(&self.path)
            .header(hyper::header::HOST, &self.authority)
            .body(Full::new(Bytes::copy_from_slice(token.as_bytes())))
            .map_err(PostError::Request)?;
        match &self.tls {
            None => send(tcp, request).await,
            Some(connector) => {
                let name =
                    ServerName::try_from(self.host.clone()).map_err(|_| PostError::TlsName {
                        host: self.host.clone(),
                    })?;
                let stream = connector.connect(name, tcp).await.map_err(PostError::Tls)?;
                send(stream, request).await
            }
        }
    }
}

async fn send<S>(stream: S, request: Request<Full<Bytes>>) -> Result<StatusCode, PostError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(PostError::Http)?;
    // Ends when the exchange is over and the sender is dropped.
    let connection = tokio::spawn(connection);
    let status = sender
        .send_request(request)
        .await
        .map(|response| response.status())
        .map_err(PostError::Http);
    drop(sender);
    connection.abort();
    status
}

/// TLS with the web PKI roots and `extra` (ring provider, ALPN `http/1.1`).
fn connector(extra: &[CertificateDer<'static>]) -> Result<TlsConnector, PushError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    roots.add_parsable_certificates(extra.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PushError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_url_into_host_port_and_path() {
        let client = Client::new("http://127.0.0.1:8080/notify", &[]).unwrap();
        assert_eq!(
            (client.host.as_str(), client.port, client.path.as_str()),
            ("127.0.0.1", 8080, "/notify")
        );
        assert!(client.tls.is_none());
        let client = Client::new("https://notifications.delta.chat/notify", &[]).unwrap();
        assert_eq!(client.port, 443);
        assert!(client.tls.is_some());
        let client = Client::new("http://[::1]/x?y=1", &[]).unwrap();
        assert_eq!(
            (client.host.as_str(), client.path.as_str()),
            ("::1", "/x?y=1")
        );
    }

    #[test]
    fn refuses_urls_it_cannot_post_to() {
        let reason = |url| match Client::new(url, &[]) {
            Err(PushError::Url { reason, .. }) => reason,
            Err(PushError::Tls(_)) => "TLS",
            Ok(_) => "accepted",
        };
        let scheme = "scheme must be http or https";
        assert_eq!(reason("ftp://example.org/notify"), scheme);
        assert_eq!(reason("/notify"), scheme);
        assert_eq!(reason("not a url"), "not a URL");
    }
}
