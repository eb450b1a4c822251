//! Client-side conversations with the relay's own listeners: connecting,
//! bounded line reads with timeouts, and the few SMTP, IMAP and HTTP
//! exchanges the checks need (greetings, `STARTTLS`, one request).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a TCP connection may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one answer (a line, a handshake) may take.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line read (RFC 5321 §4.5.3.1.5 allows 512 for SMTP replies;
/// IMAP greetings with capabilities are longer).
const MAX_LINE: u64 = 4096;
/// Most lines of one multi-line SMTP reply.
const MAX_REPLY_LINES: usize = 64;
/// Most bytes of an HTTP response read.
const MAX_RESPONSE: u64 = 16 * 1024;

/// Why a conversation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("connection refused: nothing listens there")]
    Refused,
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("TLS client setup: {0}")]
    TlsSetup(#[from] rustls::Error),
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("a line longer than {MAX_LINE} bytes")]
    LongLine,
    #[error("EHLO does not offer STARTTLS")]
    NoStartTls,
    #[error("unexpected answer {0:?}")]
    Unexpected(String),
}

/// The address to connect to for a configured listen address: a wildcard
/// address is reached over loopback of its family.
pub(crate) fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// A TCP connection to `addr`, within [`CONNECT_TIMEOUT`].
pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, ProbeError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err(ProbeError::Timeout(CONNECT_TIMEOUT)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(ProbeError::Refused),
        Ok(Err(e)) => Err(ProbeError::Connect(e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// `future`, or [`ProbeError::Timeout`] after [`REPLY_TIMEOUT`].
pub(crate) async fn timed<T>(
    future: impl Future<Output = Result<T, ProbeError>>,
) -> Result<T, ProbeError> {
    tokio::time::timeout(REPLY_TIMEOUT, future)
        .await
        .map_err(|_| ProbeError::Timeout(REPLY_TIMEOUT))?
}

/// A line-oriented conversation over `S`.
pub(crate) struct Lines<S> {
    inner: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lines<S> {
    pub(crate) fn new(stream: S) -> Self {
        Self {
            inner: BufReader::new(stream),
        }
    }

    /// The stream, to start TLS on it. Only call this after an answer the
    /// server sends nothing after (`220` to `STARTTLS`, `OK` to it).
    pub(crate) fn into_inner(self) -> S {
        self.inner.into_inner()
    }

    /// Sends `line` with CRLF.
    pub(crate) async fn send(&mut self, line: &str) -> Result<(), ProbeError> {
        let stream = self.inner.get_mut();
        timed(async {
            stream.write_all(format!("{line}\r\n").as_bytes()).await?;
            Ok(stream.flush().await?)
        })
        .await
    }

    /// Writes `bytes` as they are.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), ProbeError> {
        let stream = self.inner.get_mut();
        timed(async {
            stream.write_all(bytes).await?;
            Ok(stream.flush().await?)
        })
        .await
    }

    /// The next line without its line ending.
    pub(crate) async fn line(&mut self) -> Result<String, ProbeError> {
        let mut bytes = Vec::new();
        let mut limited = (&mut self.inner).take(MAX_LINE + 1);
        timed(async { Ok(limited.read_until(b'\n', &mut bytes).await?) }).await?;
        if bytes.is_empty() {
            return Err(ProbeError::Closed);
        }
        if bytes.len() as u64 > MAX_LINE {
            return Err(ProbeError::LongLine);
        }
        let text = String::from_utf8_lossy(&bytes);
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// One SMTP reply (RFC 5321 §4.2.1): its code and the text of each
    /// line.
    pub(crate) async fn smtp_reply(&mut self) -> Result<(u16, Vec<String>), ProbeError> {
        let mut texts = Vec::new();
        loop {
            let line = self.line().await?;
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let (Some(code), separator) = (code, line.as_bytes().get(3)) else {
                return Err(ProbeError::Unexpected(line));
            };
            texts.push(line.get(4..).unwrap_or_default().to_owned());
            if separator != Some(&b'-') {
                return Ok((code, texts));
            }
            if texts.len() >= MAX_REPLY_LINES {
                return Err(ProbeError::Unexpected(line));
            }
        }
    }

    /// An SMTP reply that must have code `want`; its lines.
    pub(crate) async fn smtp_expect(&mut self, want: u16) -> Result<Vec<String>, ProbeError> {
        match self.smtp_reply().await? {
            (code, texts) if code == want => Ok(texts),
            (code, texts) => Err(ProbeError::Unexpected(format!(
                "{code} {}",
                texts.join(" ")
            ))),
        }
    }

    /// `EHLO host`; the extension lines after the greeting line.
    pub(crate) async fn ehlo(&mut self, host: &str) -> Result<Vec<String>, ProbeError> {
        self.send(&format!("EHLO {host}")).await?;
        let lines = self.smtp_expect(250).await?;
        Ok(lines.into_iter().skip(1).collect())
    }

    /// `QUIT`, answered by `221` (RFC 5321 §4.1.1.10).
    pub(crate) async fn quit(&mut self) -> Result<(), ProbeError> {
        self.send("QUIT").await?;
        self.smtp_expect(221).await.map(drop)
    }

    /// An IMAP greeting: `* OK ...` (RFC 9051 §7.1.1).
    pub(crate) async fn imap_greeting(&mut self) -> Result<(), ProbeError> {
        let line = self.line().await?;
        if line.starts_with("* OK") {
            Ok(())
        } else {
            Err(ProbeError::Unexpected(line))
        }
    }

    /// Sends the IMAP command `command` with `tag`; `Ok` when the tagged
    /// answer is `OK` (untagged lines before it are skipped).
    pub(crate) async fn imap_command(
        &mut self,
        tag: &str,
        command: &str,
    ) -> Result<(), ProbeError> {
        self.send(&format!("{tag} {command}")).await?;
        for _ in 0..MAX_REPLY_LINES {
            let line = self.line().await?;
            if let Some(answer) = line.strip_prefix(tag).and_then(|l| l.strip_prefix(' ')) {
                return match answer.starts_with("OK") {
                    true => Ok(()),
                    false => Err(ProbeError::Unexpected(line)),
                };
            }
        }
        Err(ProbeError::Unexpected(format!("no answer to {command}")))
    }

    /// Sends an HTTP/1.1 request (with `Connection: close`) and reads the
    /// response: the status code and the body (bounded).
    pub(crate) async fn http(&mut self, request: &str) -> Result<(u16, String), ProbeError> {
        self.write(request.as_bytes()).await?;
        let status_line = self.line().await?;
        let status = status_line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| ProbeError::Unexpected(status_line.clone()))?;
        let mut rest = Vec::new();
        let mut limited = (&mut self.inner).take(MAX_RESPONSE);
        // A server may reset instead of closing cleanly: keep what arrived.
        let _ = timed(async { Ok(limited.read_to_end(&mut rest).await?) }).await;
        let text = String::from_utf8_lossy(&rest);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        Ok((status, body.to_owned()))
    }
}

/// A minimal HTTP/1.1 request for `path` on `host`.
pub(crate) fn request(method: &str, path: &str, host: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: madmail-doctor\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// A conversation whose server has sent `server_says`; the server end
    /// is returned so that it stays open, or dropped to close it.
    async fn lines_from(server_says: &[u8]) -> (Lines<DuplexStream>, DuplexStream) {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        server.write_all(server_says).await.unwrap();
        (Lines::new(client), server)
    }

    #[tokio::test]
    async fn reads_multi_line_smtp_replies() {
        let (mut lines, _server) =
            lines_from(b"250-relay.test\r\n250-SIZE 10\r\n250 STARTTLS\r\n").await;
        let (code, texts) = lines.smtp_reply().await.unwrap();
        assert_eq!(code, 250);
        assert_eq!(texts, ["relay.test", "SIZE 10", "STARTTLS"]);
    }

    #[tokio::test]
    async fn refuses_garbage_and_overlong_lines() {
        let (mut lines, _server) = lines_from(b"hello\r\n").await;
        assert!(matches!(
            lines.smtp_reply().await,
            Err(ProbeError::Unexpected(_))
        ));
        let (mut lines, _server) = lines_from(&[b'a'; 5000]).await;
        assert!(matches!(lines.line().await, Err(ProbeError::LongLine)));
        let (mut lines, server) = lines_from(b"").await;
        drop(server);
        assert!(matches!(lines.line().await, Err(ProbeError::Closed)));
    }

    #[tokio::test]
    async fn reads_an_http_status_and_body() {
        let response = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n554 x";
        let (mut lines, server) = lines_from(response).await;
        drop(server);
        let (status, body) = lines.http("").await.unwrap();
        assert_eq!((status, body.as_str()), (400, "554 x"));
    }

    #[test]
    fn wildcard_listen_addresses_are_reached_over_loopback() {
        let any: SocketAddr = "0.0.0.0:993".parse().unwrap();
        assert_eq!(target(any), "127.0.0.1:993".parse().unwrap());
        let any6: SocketAddr = "[::]:443".parse().unwrap();
        assert_eq!(target(any6), "[::1]:443".parse().unwrap());
        let own: SocketAddr = "127.0.66.2:25".parse().unwrap();
        assert_eq!(target(own), own);
    }
}
