//! SMTP client for the fallback path (RFC 5321, STARTTLS per RFC 3207).
//!
//! Flow: greeting, `EHLO`, `STARTTLS` (required: without it nothing is
//! sent), TLS handshake, `EHLO` again, `MAIL FROM`, one `RCPT TO` per
//! recipient, `DATA` with dot-stuffing, `QUIT`.
//!
//! Invariants: every read has a timeout (RFC 5321 §4.5.3.2, shortened);
//! reply lines and replies are bounded; bytes the server sends after its
//! `220` to `STARTTLS` and before the handshake are an error, never read as
//! a reply (they could have been injected in clear text). The message is
//! sent as given (it is DKIM-signed); only dot-stuffing and a final CRLF
//! are added.

use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::Outcome;

/// RFC 5321 §4.5.3.2.1 (5 min, shortened): the greeting.
const GREETING_TIMEOUT: Duration = Duration::from_secs(120);
/// RFC 5321 §4.5.3.2.2-4 (5 min, shortened): EHLO, MAIL, RCPT, DATA.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// RFC 5321 §4.5.3.2.5 (3 min): one block of message data.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
/// RFC 5321 §4.5.3.2.6 (10 min, shortened): the reply to the final dot.
const DATA_END_TIMEOUT: Duration = Duration::from_secs(300);
/// Time for the TLS handshake and for QUIT.
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 allows 512 octets;
/// some servers send more).
const MAX_LINE: usize = 2048;
/// Most lines in one reply.
const MAX_REPLY_LINES: usize = 64;
/// Most reply text kept for an outcome.
const MAX_TEXT: usize = 512;
/// Size of the blocks the message is written in.
const BLOCK: usize = 64 * 1024;

/// What one SMTP delivery attempt produced.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The transaction ran: one outcome per recipient, in order.
    Done(Vec<Outcome>),
    /// Nothing was delivered; another host may do better.
    Temporary(SmtpError),
    /// The server refused the message itself (`MAIL` rejected with 5xx).
    Permanent(String),
}

/// The envelope and content of one message.
pub(crate) struct Envelope<'a> {
    /// Our name for `EHLO`.
    pub helo: &'a str,
    /// `None`: the null sender `<>`.
    pub sender: Option<&'a str>,
    pub recipients: &'a [String],
    pub message: &'a [u8],
}

/// Why an SMTP session ended before the transaction ran.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SmtpError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection closed by the server")]
    Closed,
    #[error("reply line longer than {MAX_LINE} bytes or reply too long")]
    TooLong,
    #[error("malformed reply")]
    Malformed,
    #[error("server does not offer STARTTLS, which is required")]
    NoStartTls,
    #[error("server sent data before the TLS handshake")]
    EarlyData,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("unexpected reply to {0}: {1}")]
    Unexpected(&'static str, Reply),
}

/// One SMTP reply (RFC 5321 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    code: u16,
    /// The text of every line, joined by spaces, bounded.
    text: String,
    /// The text of each line; after the first, EHLO keywords.
    lines: Vec<String>,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

impl Reply {
    fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The outcome a negative reply means for the recipients it concerns.
    fn outcome(&self) -> Outcome {
        if self.code >= 500 {
            Outcome::Permanent(self.to_string())
        } else {
            Outcome::Temporary(self.to_string())
        }
    }

    /// Whether an EHLO reply advertises `keyword` (RFC 5321 §4.1.1.1).
    fn offers(&self, keyword: &str) -> bool {
        self.lines.iter().skip(1).any(|line| {
            line.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }
}

/// Runs one SMTP delivery over `tcp`; `name` is the TLS name of the host.
pub(crate) async fn deliver(
    tcp: TcpStream,
    tls: &TlsConnector,
    name: ServerName<'static>,
    envelope: &Envelope<'_>,
) -> Attempt {
    match session(tcp, tls, name, envelope).await {
        Ok(outcomes) => Attempt::Done(outcomes),
        Err(SmtpError::Unexpected("MAIL", reply)) if reply.code >= 500 => {
            Attempt::Permanent(reply.to_string())
        }
        Err(e) => Attempt::Temporary(e),
    }
}

async fn session(
    tcp: TcpStream,
    tls: &TlsConnector,
    name: ServerName<'static>,
    envelope: &Envelope<'_>,
) -> Result<Vec<Outcome>, SmtpError> {
    let mut plain = Conn::new(tcp);
    expect("greeting", plain.reply(GREETING_TIMEOUT).await?)?;
    let ehlo = format!("EHLO {}", envelope.helo);
    let features = expect("EHLO", plain.command(&ehlo, COMMAND_TIMEOUT).await?)?;
    // RFC 3207 §4: TLS is required here, so its absence ends the session.
    if !features.offers("STARTTLS") {
        plain.quit().await;
        return Err(SmtpError::NoStartTls);
    }
    expect(
        "STARTTLS",
        plain.command("STARTTLS", COMMAND_TIMEOUT).await?,
    )?;
    if !plain.buf.is_empty() {
        return Err(SmtpError::EarlyData);
    }
    let handshake = tls.connect(name, plain.io);
    let stream = timeout(SHORT_TIMEOUT, handshake)
        .await
        .map_err(|_| SmtpError::Timeout(SHORT_TIMEOUT))?
        .map_err(SmtpError::Tls)?;
    let mut secure = Conn::new(stream);
    // RFC 3207 §4.2: forget what was learnt before TLS and ask again.
    let features = expect("EHLO", secure.command(&ehlo, COMMAND_TIMEOUT).await?)?;
    let outcomes = transaction(&mut secure, &features, envelope).await?;
    secure.quit().await;
    Ok(outcomes)
}

/// MAIL, RCPT per recipient, DATA; one outcome per recipient.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    features: &Reply,
    envelope: &Envelope<'_>,
) -> Result<Vec<Outcome>, SmtpError> {
    let mail = mail_command(features, envelope);
    expect("MAIL", conn.command(&mail, COMMAND_TIMEOUT).await?)?;
    let mut outcomes = Vec::with_capacity(envelope.recipients.len());
    for recipient in envelope.recipients {
        let reply = conn
            .command(&format!("RCPT TO:<{recipient}>"), COMMAND_TIMEOUT)
            .await?;
        outcomes.push(if reply.is_positive() {
            Outcome::Delivered
        } else {
            reply.outcome()
        });
    }
    if !outcomes.contains(&Outcome::Delivered) {
        return Ok(outcomes);
    }
    let data = conn.command("DATA", COMMAND_TIMEOUT).await?;
    let result = if data.code == 354 {
        conn.write_message(envelope.message).await?;
        conn.reply(DATA_END_TIMEOUT).await?
    } else {
        data
    };
    if !result.is_positive() {
        for outcome in outcomes.iter_mut().filter(|o| **o == Outcome::Delivered) {
            *outcome = result.outcome();
        }
    }
    Ok(outcomes)
}

/// `MAIL FROM` with the parameters the server offers (RFC 1870, RFC 6152,
/// RFC 6531).
fn mail_command(features: &Reply, envelope: &Envelope<'_>) -> String {
    let mut mail = format!("MAIL FROM:<{}>", envelope.sender.unwrap_or(""));
    if features.offers("8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if features.offers("SIZE") {
        mail.push_str(&format!(" SIZE={}", envelope.message.len()));
    }
    let non_ascii = envelope.sender.is_some_and(|s| !s.is_ascii())
        || envelope.recipients.iter().any(|r| !r.is_ascii());
    if non_ascii && features.offers("SMTPUTF8") {
        mail.push_str(" SMTPUTF8");
    }
    mail
}

fn expect(stage: &'static str, reply: Reply) -> Result<Reply, SmtpError> {
    if reply.is_positive() {
        Ok(reply)
    } else {
        Err(SmtpError::Unexpected(stage, reply))
    }
}

/// The message with dot-stuffing (RFC 5321 §4.5.2) and the end-of-data
/// marker (RFC 5321 §4.1.1.4).
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    let mut line_start = true;
    for &byte in message {
        if line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        line_start = byte == b'\n';
    }
    if !message.is_empty() && !message.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// A connection with a read buffer for reply lines.
struct Conn<S> {
    io: S,
    /// Bytes read but not yet consumed.
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    async fn command(&mut self, line: &str, wait: Duration) -> Result<Reply, SmtpError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.write(&bytes, wait).await?;
        self.reply(wait).await
    }

    async fn write(&mut self, bytes: &[u8], wait: Duration) -> Result<(), SmtpError> {
        let io = &mut self.io;
        let written = async move {
            io.write_all(bytes).await?;
            io.flush().await
        };
        timeout(wait, written)
            .await
            .map_err(|_| SmtpError::Timeout(wait))??;
        Ok(())
    }

    async fn write_message(&mut self, message: &[u8]) -> Result<(), SmtpError> {
        for block in dot_stuffed(message).chunks(BLOCK) {
            self.write(block, BLOCK_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Reads one possibly multi-line reply (RFC 5321 §4.2.1).
    async fn reply(&mut self, wait: Duration) -> Result<Reply, SmtpError> {
        timeout(wait, self.read_reply())
            .await
            .map_err(|_| SmtpError::Timeout(wait))?
    }

    async fn read_reply(&mut self) -> Result<Reply, SmtpError> {
        let mut first = None;
        let mut lines = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let (code, last, text) = parse_line(&self.read_line().await?)?;
            // RFC 5321 §4.2.1: every line of a reply carries the same code.
            if *first.get_or_insert(code) != code {
                return Err(SmtpError::Malformed);
            }
            lines.push(text);
            if last {
                let text = lines.join(" ").chars().take(MAX_TEXT).collect();
                return Ok(Reply { code, text, lines });
            }
        }
        Err(SmtpError::TooLong)
    }

    /// One line without its CRLF, at most [`MAX_LINE`] bytes.
    async fn read_line(&mut self) -> Result<Vec<u8>, SmtpError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(SmtpError::TooLong);
            }
            let mut chunk = [0u8; 1024];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Err(SmtpError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Ends the session politely; errors no longer matter.
    async fn quit(&mut self) {
        let _ = timeout(SHORT_TIMEOUT, async {
            if self.write(b"QUIT\r\n", SHORT_TIMEOUT).await.is_ok() {
                let _ = self.read_reply().await;
            }
            let _ = self.io.shutdown().await;
        })
        .await;
    }
}

/// Splits `250-text` / `250 text` / `250` into code, last-line flag, text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, String), SmtpError> {
    let digits = line.get(..3).ok_or(SmtpError::Malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return Err(SmtpError::Malformed);
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let (last, rest) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(SmtpError::Malformed),
    };
    let text = String::from_utf8_lossy(rest)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned();
    Ok((code, last, text))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt;

    use super::*;

    async fn reply_from(server_says: &[u8]) -> Result<Reply, SmtpError> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        server.write_all(server_says).await.unwrap();
        drop(server);
        Conn::new(client).reply(Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn multi_line_replies_are_joined_and_keep_ehlo_keywords() {
        let reply = reply_from(b"250-mx.test hello\r\n250-STARTTLS\r\n250 SIZE 100\r\n")
            .await
            .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.text, "mx.test hello STARTTLS SIZE 100");
        assert!(reply.offers("starttls") && reply.offers("SIZE"));
        assert!(!reply.offers("mx.test"), "the first line is not a keyword");
    }

    #[tokio::test]
    async fn replies_mixing_codes_are_malformed() {
        let result = reply_from(b"250-one\r\n251 two\r\n").await;
        assert!(matches!(result, Err(SmtpError::Malformed)));
    }

    #[tokio::test]
    async fn overlong_reply_lines_are_refused() {
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 10 * MAX_LINE));
        assert!(matches!(reply_from(&long).await, Err(SmtpError::TooLong)));
    }

    #[tokio::test]
    async fn endless_multi_line_replies_are_refused() {
        let endless = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(matches!(
            reply_from(&endless).await,
            Err(SmtpError::TooLong)
        ));
    }

    #[tokio::test]
    async fn a_closed_connection_is_an_error() {
        assert!(matches!(
            reply_from(b"250-partial\r\n").await,
            Err(SmtpError::Closed)
        ));
    }

    #[test]
    fn garbage_lines_are_malformed() {
        for line in [
            &b""[..],
            b"25",
            b"abc ok",
            b"250x",
            b"650 no",
            b"\xff\xfe\xfd",
        ] {
            assert!(parse_line(line).is_err(), "{line:?}");
        }
        assert_eq!(parse_line(b"354").unwrap(), (354, true, String::new()));
        assert_eq!(parse_line(b"550 5.1.1 \x07bad").unwrap().2, "5.1.1  bad");
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_data() {
        assert_eq!(
            dot_stuffed(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(
            dot_stuffed(b"no final newline"),
            b"no final newline\r\n.\r\n"
        );
        assert_eq!(dot_stuffed(b"x\r\n.\r\n"), b"x\r\n..\r\n.\r\n");
    }

    #[test]
    fn mail_command_uses_offered_extensions_and_null_sender() {
        let features = Reply {
            code: 250,
            text: String::new(),
            lines: vec![
                "mx".into(),
                "8BITMIME".into(),
                "SIZE 1000".into(),
                "SMTPUTF8".into(),
            ],
        };
        let to = vec!["bö@x.test".to_owned()];
        let envelope = Envelope {
            helo: "a.test",
            sender: None,
            recipients: &to,
            message: b"12345",
        };
        assert_eq!(
            mail_command(&features, &envelope),
            "MAIL FROM:<> BODY=8BITMIME SIZE=5 SMTPUTF8"
        );
    }

    #[tokio::test]
    async fn data_sent_before_the_tls_handshake_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tcp = tokio::io::BufReader::new(tcp);
            let mut heard = String::new();
            tcp.get_mut().write_all(b"220 hi\r\n").await.unwrap();
            tcp.read_line(&mut heard).await.unwrap();
            tcp.get_mut()
                .write_all(b"250-x\r\n250 STARTTLS\r\n")
                .await
                .unwrap();
            tcp.read_line(&mut heard).await.unwrap();
            // The 220 and an injected reply in one segment.
            tcp.get_mut()
                .write_all(b"220 go\r\n250 injected\r\n")
                .await
                .unwrap();
            let _ = tcp.read_to_string(&mut heard).await;
            heard
        });
        let tcp = TcpStream::connect(address).await.unwrap();
        let connectors = crate::tls::Connectors::new().unwrap();
        let to = vec!["b@x.test".to_owned()];
        let envelope = Envelope {
            helo: "a.test",
            sender: None,
            recipients: &to,
            message: b"m\r\n",
        };
        let name = crate::tls::server_name("127.0.0.1").unwrap();
        let attempt = deliver(tcp, connectors.smtp(true), name, &envelope).await;
        let refused = matches!(&attempt, Attempt::Temporary(SmtpError::EarlyData));
        assert!(refused, "{attempt:?}");
        let sent = server.await.unwrap();
        assert!(!sent.contains("MAIL"), "{sent}");
    }
}
