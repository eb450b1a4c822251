//! A minimal SMTP client for a relay's MX port (25): plaintext greeting and
//! `EHLO`, then `STARTTLS` (RFC 3207), as another relay would connect.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Result;
use crate::client::{Wire, read_reply, transaction};

/// The connection before and after `STARTTLS`.
enum Stream {
    Plain(BufReader<TcpStream>),
    Tls(Box<BufReader<TlsStream<TcpStream>>>),
    /// Only while the handshake runs, or after it failed.
    Closed,
}

/// An SMTP session with a relay's MX port.
pub struct Mx {
    stream: Stream,
}

impl Mx {
    /// Connects and reads the greeting (which must be 220).
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        Self::connect_from(None, addr).await
    }

    /// [`Mx::connect`] from the local address `source` (another loopback
    /// address, say).
    pub async fn connect_from(source: Option<std::net::IpAddr>, addr: SocketAddr) -> Result<Self> {
        let tcp = crate::client::tcp_from(source, addr).await?;
        let mut mx = Self {
            stream: Stream::Plain(BufReader::new(tcp)),
        };
        let (code, text) = mx.reply().await?;
        if code != 220 {
            return Err(format!("greeting {code} {text}").into());
        }
        Ok(mx)
    }

    /// `EHLO`, `STARTTLS` (trusting `tls`), then `EHLO` again over TLS.
    pub async fn starttls(
        &mut self,
        tls: &Arc<rustls::ClientConfig>,
        server: SocketAddr,
    ) -> Result<()> {
        self.command("EHLO peer.test").await?;
        let (code, text) = self.command("STARTTLS").await?;
        if code != 220 {
            return Err(format!("STARTTLS refused: {code} {text}").into());
        }
        let Stream::Plain(plain) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err("already TLS".into());
        };
        if !plain.buffer().is_empty() {
            return Err("data after the STARTTLS reply (RFC 3207 §4)".into());
        }
        let name = ServerName::IpAddress(server.ip().into());
        let tls = TlsConnector::from(tls.clone())
            .connect(name, plain.into_inner())
            .await?;
        self.stream = Stream::Tls(Box::new(BufReader::new(tls)));
        let (code, text) = self.command("EHLO peer.test").await?;
        if code != 250 {
            return Err(format!("EHLO after STARTTLS: {code} {text}").into());
        }
        Ok(())
    }

    /// Sends one command line and reads the (possibly multi-line) reply.
    pub async fn command(&mut self, line: &str) -> Result<(u16, String)> {
        self.write(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// `MAIL`, `RCPT`s, `DATA` and the message; returns the first reply that
    /// is not a success, else the final one.
    pub async fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> Result<(u16, String)> {
        transaction(self, from, to, message).await
    }

    /// Sends raw bytes (a DATA body, say) as they are.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.stream {
            Stream::Plain(s) => write_all(s, bytes).await,
            Stream::Tls(s) => write_all(s.as_mut(), bytes).await,
            Stream::Closed => Err("connection closed".into()),
        }
    }

    /// Reads the next (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Result<(u16, String)> {
        match &mut self.stream {
            Stream::Plain(s) => read_reply(s).await,
            Stream::Tls(s) => read_reply(s.as_mut()).await,
            Stream::Closed => Err("connection closed".into()),
        }
    }
}

async fn write_all<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    Ok(())
}

impl Wire for Mx {
    async fn command(&mut self, line: &str) -> Result<(u16, String)> {
        Mx::command(self, line).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        Mx::write(self, bytes).await
    }

    async fn reply(&mut self) -> Result<(u16, String)> {
        Mx::reply(self).await
    }
}
