//! Minimal SMTP and IMAP clients over implicit TLS, enough to drive the
//! relay from tests and benchmarks. They trust exactly the relay's
//! certificate.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Result;

type Stream = BufReader<TlsStream<TcpStream>>;

/// A TLS client configuration trusting only the PEM certificate at `cert`.
pub fn tls_config(cert: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_file_iter(cert)? {
        roots.add(der?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TCP connection to `addr` from the local address `source` (`None`: the
/// system's choice), with `TCP_NODELAY`.
pub async fn tcp_from(source: Option<IpAddr>, addr: SocketAddr) -> Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Connects to `addr`, verifying the certificate for `server_name` (a DNS
/// name), or for the IP address of `addr` when `None`.
async fn connect(
    addr: SocketAddr,
    server_name: Option<&str>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_owned())?,
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let stream = TlsConnector::from(tls.clone()).connect(name, tcp).await?;
    Ok(BufReader::new(stream))
}

async fn read_line(stream: &mut Stream) -> Result<String> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Err("connection closed".into());
    }
    Ok(line)
}

/// An SMTP submission session (implicit TLS, AUTH PLAIN).
pub struct Smtp {
    stream: Stream,
}

impl Smtp {
    /// Connects, reads the greeting, sends EHLO and authenticates.
    pub async fn login(
        addr: SocketAddr,
        tls: &Arc<rustls::ClientConfig>,
        user: &str,
        password: &str,
    ) -> Result<Self> {
        Self::login_named(addr, None, tls, user, password).await
    }

    /// [`Smtp::login`] verifying the certificate for `server_name` (the
    /// relay's DNS name) instead of the IP address.
    pub async fn login_named(
        addr: SocketAddr,
        server_name: Option<&str>,
        tls: &Arc<rustls::ClientConfig>,
        user: &str,
        password: &str,
    ) -> Result<Self> {
        let mut smtp = Self {
            stream: connect(addr, server_name, tls).await?,
        };
        smtp.reply().await?;
        smtp.command("EHLO [127.0.0.1]").await?;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let (code, text) = smtp.command(&format!("AUTH PLAIN {token}")).await?;
        if code != 235 {
            return Err(format!("AUTH failed: {code} {text}").into());
        }
        Ok(smtp)
    }

    /// Sends one command line and reads the (possibly multi-line) reply.
    pub async fn command(&mut self, line: &str) -> Result<(u16, String)> {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        self.reply().await
    }

    /// `MAIL FROM`, `RCPT TO` and `DATA`; fails unless each is accepted,
    /// so that the message may follow.
    pub async fn begin_data(&mut self, from: &str, to: &str) -> Result<()> {
        for (command, want) in [
            (format!("MAIL FROM:<{from}>"), 250),
            (format!("RCPT TO:<{to}>"), 250),
            ("DATA".to_owned(), 354),
        ] {
            let (code, text) = self.command(&command).await?;
            if code != want {
                return Err(format!("{command}: {code} {text}").into());
            }
        }
        Ok(())
    }

    /// Reads the next (possibly multi-line) reply.
    pub async fn reply(&mut self) -> Result<(u16, String)> {
        read_reply(&mut self.stream).await
    }

    /// Writes raw bytes (part of a DATA transfer, say) and flushes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Submits a message; returns the final reply to DATA (or the first
    /// failing reply before it).
    pub async fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> Result<(u16, String)> {
        transaction(self, from, to, message).await
    }
}

impl Wire for Smtp {
    async fn command(&mut self, line: &str) -> Result<(u16, String)> {
        Smtp::command(self, line).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        Smtp::write(self, bytes).await
    }

    async fn reply(&mut self) -> Result<(u16, String)> {
        Smtp::reply(self).await
    }
}

/// What an SMTP transaction needs from a connection (submission or MX).
pub(crate) trait Wire {
    async fn command(&mut self, line: &str) -> Result<(u16, String)>;
    async fn write(&mut self, bytes: &[u8]) -> Result<()>;
    async fn reply(&mut self) -> Result<(u16, String)>;
}

/// `MAIL`, `RCPT`s, `DATA` and the message; returns the first reply that
/// is not a success (after `RSET` for a refused recipient), else the final
/// one.
pub(crate) async fn transaction<W: Wire>(
    wire: &mut W,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> Result<(u16, String)> {
    let reply = wire.command(&format!("MAIL FROM:<{from}>")).await?;
    if reply.0 != 250 {
        return Ok(reply);
    }
    for rcpt in to {
        let reply = wire.command(&format!("RCPT TO:<{rcpt}>")).await?;
        if reply.0 != 250 {
            wire.command("RSET").await?;
            return Ok(reply);
        }
    }
    let reply = wire.command("DATA").await?;
    if reply.0 != 354 {
        return Ok(reply);
    }
    wire.write(&dot_stuff(message)).await?;
    wire.reply().await
}

/// Reads one (possibly multi-line) SMTP reply: the code and the text lines
/// joined by `\n`.
pub(crate) async fn read_reply<S: AsyncBufRead + Unpin>(stream: &mut S) -> Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Err("connection closed".into());
        }
        let code = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or("bad SMTP reply")?;
        text.push_str(line.get(4..).unwrap_or("").trim_end());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
        text.push('\n');
    }
}

/// `message` as DATA content: dot-stuffed, CRLF-terminated, with the
/// final `.` line.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            data.push(b'.'); // RFC 5321 §4.5.2
        }
        data.extend_from_slice(line);
    }
    if !data.ends_with(b"\r\n") {
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    data
}

/// An IMAP session (implicit TLS, LOGIN).
pub struct Imap {
    stream: Stream,
    tag: u32,
}

impl Imap {
    /// Connects and logs in.
    pub async fn login(
        addr: SocketAddr,
        tls: &Arc<rustls::ClientConfig>,
        user: &str,
        password: &str,
    ) -> Result<Self> {
        Self::login_named(addr, None, tls, user, password).await
    }

    /// [`Imap::login`] verifying the certificate for `server_name` (the
    /// relay's DNS name) instead of the IP address.
    pub async fn login_named(
        addr: SocketAddr,
        server_name: Option<&str>,
        tls: &Arc<rustls::ClientConfig>,
        user: &str,
        password: &str,
    ) -> Result<Self> {
        let mut imap = Self {
            stream: connect(addr, server_name, tls).await?,
            tag: 0,
        };
        read_line(&mut imap.stream).await?;
        let lines = imap
            .command(&format!("LOGIN \"{user}\" \"{password}\""))
            .await?;
        match lines.last() {
            Some(last) if last.contains(" OK") => Ok(imap),
            other => Err(format!("LOGIN failed: {other:?}").into()),
        }
    }

    /// Sends a command; returns every line up to and including the tagged
    /// reply. Literals are read whole and appended to their line.
    pub async fn command(&mut self, command: &str) -> Result<Vec<String>> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.stream
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        let mut lines = Vec::new();
        loop {
            let line = self.line_with_literals().await?;
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
    }

    async fn line_with_literals(&mut self) -> Result<String> {
        let mut line = read_line(&mut self.stream).await?;
        while let Some(size) = literal_size(&line) {
            let mut literal = vec![0u8; size];
            self.stream.read_exact(&mut literal).await?;
            line.push_str(&String::from_utf8_lossy(&literal));
            line.push_str(&read_line(&mut self.stream).await?);
        }
        Ok(line)
    }

    /// The Message-ID of every message in INBOX, one entry per stored
    /// copy (a message stored twice is listed twice).
    pub async fn inbox_message_ids(&mut self) -> Result<Vec<String>> {
        self.command("SELECT INBOX").await?;
        let lines = self
            .command("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            .await?;
        // Each FETCH line carries its header literal: "Message-ID: <id>\r\n".
        Ok(lines
            .iter()
            .filter_map(|l| {
                let start = l.to_ascii_lowercase().find("message-id:")? + "message-id:".len();
                let value = l[start..].split("\r\n").next()?;
                Some(value.trim().to_owned())
            })
            .collect())
    }

    /// Starts IDLE; returns once the server sent its continuation.
    pub async fn idle(&mut self) -> Result<()> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.stream
            .write_all(format!("{tag} IDLE\r\n").as_bytes())
            .await?;
        self.stream.flush().await?;
        loop {
            if read_line(&mut self.stream).await?.starts_with('+') {
                return Ok(());
            }
        }
    }

    /// During IDLE: waits for the next `* N EXISTS` and returns N.
    pub async fn wait_exists(&mut self) -> Result<u32> {
        loop {
            let line = read_line(&mut self.stream).await?;
            if let Some(n) = line
                .strip_prefix("* ")
                .and_then(|l| l.strip_suffix(" EXISTS\r\n"))
            {
                return Ok(n.parse()?);
            }
        }
    }

    /// The next line the server sends, whatever it is (`None`: the
    /// connection closed).
    pub async fn next_line(&mut self) -> Result<Option<String>> {
        let mut line = String::new();
        match self.stream.read_line(&mut line).await {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(line)),
            // A peer that closes without TLS close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends IDLE and reads its tagged reply.
    pub async fn done(&mut self) -> Result<()> {
        self.stream.write_all(b"DONE\r\n").await?;
        self.stream.flush().await?;
        let tag = format!("t{} ", self.tag);
        while !read_line(&mut self.stream).await?.starts_with(&tag) {}
        Ok(())
    }
}

/// One HTTP/1.1 POST over TLS; returns the status and the body.
pub async fn https_post(
    addr: SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    https_post_named(addr, None, tls, path, body).await
}

/// [`https_post`] to a server whose certificate names `server_name`
/// (`None`: the address).
pub async fn https_post_named(
    addr: SocketAddr,
    server_name: Option<&str>,
    tls: &Arc<rustls::ClientConfig>,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut stream = connect(addr, server_name, tls).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut reply = Vec::new();
    match stream.read_to_end(&mut reply).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no HTTP status")?;
    Ok((status, body.to_owned()))
}

fn literal_size(line: &str) -> Option<usize> {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    let open = trimmed.strip_suffix('}')?.rfind('{')?;
    trimmed[open + 1..trimmed.len() - 1].parse().ok()
}
