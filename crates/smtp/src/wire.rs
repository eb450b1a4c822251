//! Bounded line and DATA reading over any byte stream, with reply
//! buffering for PIPELINING (RFC 2920 §3.1: replies may be held while more
//! commands are already waiting, and are flushed before the server blocks
//! on reading).
//!
//! The read buffer is owned here, not by a `BufReader`, so that STARTTLS
//! can drop whatever the client sent after the command (RFC 3207 §5).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use chatmail_limits::Spool;

use crate::data::Decoder;
use crate::reply::Reply;

/// Longest command line, including CRLF (RFC 5321 §4.5.3.1.4 asks for at
/// least 512; AUTH initial responses need more).
pub const MAX_LINE: usize = 4096;
/// Bytes requested from the stream per read.
const READ_CHUNK: usize = 8192;

/// One line read from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The line without its CRLF (a lone LF is tolerated for commands).
    Text(Vec<u8>),
    /// The line was longer than [`MAX_LINE`]; it was consumed and dropped.
    TooLong,
    /// The client closed the connection.
    Eof,
}

/// A stream with a bounded input buffer and an output buffer.
pub struct Wire<S> {
    stream: S,
    input: Vec<u8>,
    output: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            input: Vec::with_capacity(READ_CHUNK),
            output: Vec::new(),
        }
    }

    /// Queues a reply; it is sent at the next flush.
    pub fn queue(&mut self, reply: &Reply) {
        reply.encode(&mut self.output);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        self.stream.flush().await
    }

    /// Reads more input, flushing queued replies first; `false` at EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        self.flush().await?;
        // `read_buf` appends to the spare capacity only: cancel-safe.
        self.input.reserve(READ_CHUNK);
        Ok(self.stream.read_buf(&mut self.input).await? > 0)
    }

    /// Reads one command line.
    pub async fn read_line(&mut self) -> std::io::Result<Line> {
        let mut too_long = false;
        loop {
            if let Some(lf) = self.input.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.input.drain(..=lf).collect();
                if too_long || line.len() > MAX_LINE {
                    return Ok(Line::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Line::Text(line));
            }
            if self.input.len() > MAX_LINE {
                too_long = true;
                self.input.clear(); // drop the over-long part, keep looking for LF
            }
            if !self.fill().await? {
                return Ok(Line::Eof);
            }
        }
    }

    /// Feeds input to `decoder` until it has seen the end of the data,
    /// writing the message into `spool` as it comes; `false` if the client
    /// closed the connection first. A spool that fails (size, budget)
    /// keeps the failure and drops the rest, so the data is still read to
    /// its end.
    pub async fn read_data(
        &mut self,
        decoder: &mut Decoder,
        spool: &mut Spool,
    ) -> std::io::Result<bool> {
        let mut decoded = Vec::with_capacity(READ_CHUNK);
        loop {
            let used = decoder.feed(&self.input, &mut decoded);
            self.input.drain(..used);
            if !decoded.is_empty() {
                // The failure is kept in the spool and reported at the end.
                let _ = spool.write(&decoded).await;
                decoded.clear();
            }
            if decoder.is_done() {
                return Ok(true);
            }
            if !self.fill().await? {
                return Ok(false);
            }
        }
    }

    /// Flushes replies and returns the raw stream, dropping unread input
    /// (RFC 3207 §5: nothing sent before the handshake may be acted upon).
    pub async fn into_stream(mut self) -> std::io::Result<S> {
        self.flush().await?;
        Ok(self.stream)
    }

    /// Flushes and shuts the stream down; errors are irrelevant by then.
    pub async fn close(mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reads_pipelined_lines_and_flushes_before_blocking() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut wire = Wire::new(server);
        client.write_all(b"NOOP\r\nRSET\nQUIT\r\n").await.unwrap();
        assert_eq!(
            wire.read_line().await.unwrap(),
            Line::Text(b"NOOP".to_vec())
        );
        wire.queue(&Reply::line(250, "a"));
        assert_eq!(
            wire.read_line().await.unwrap(),
            Line::Text(b"RSET".to_vec())
        );
        assert_eq!(
            wire.read_line().await.unwrap(),
            Line::Text(b"QUIT".to_vec())
        );
        // Nothing was sent while commands were pending...
        let mut out = [0u8; 7];
        let early =
            tokio::time::timeout(Duration::from_millis(20), client.read_exact(&mut out)).await;
        assert!(early.is_err());
        // ...and the reply goes out once the server would block on reading.
        let blocked = tokio::time::timeout(Duration::from_millis(20), wire.read_line()).await;
        assert!(blocked.is_err());
        client.read_exact(&mut out).await.unwrap();
        assert_eq!(&out, b"250 a\r\n");
        drop(client);
        assert_eq!(wire.read_line().await.unwrap(), Line::Eof);
    }

    #[tokio::test]
    async fn drops_over_long_lines_and_resynchronises() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut wire = Wire::new(server);
        let mut long = vec![b'A'; MAX_LINE * 3];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        client.write_all(&long).await.unwrap();
        assert_eq!(wire.read_line().await.unwrap(), Line::TooLong);
        assert_eq!(
            wire.read_line().await.unwrap(),
            Line::Text(b"NOOP".to_vec())
        );
    }
}
