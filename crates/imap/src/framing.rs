//! Command framing: turns the byte stream into complete commands.
//!
//! Flow: read one CRLF-terminated line; ask the imap-codec decoder whether
//! the command is complete. When it stops at a literal (`{n}` or `{n+}`), the
//! bound for this command is checked first: an oversize synchronizing literal
//! is refused before any `+` is sent (RFC 7889 `[TOOBIG]`), an oversize
//! non-synchronizing one ends the connection (its bytes are already on the
//! way). Otherwise `+ Ready` is sent (synchronizing only, RFC 3501 §7.5), the
//! literal and the next line are read, and decoding starts over.
//!
//! Literals above [`MAX_SMALL_LITERAL`] (APPEND only) also need their size
//! in bytes from the server-wide [`LiteralBudget`], taken before `+` is
//! sent: without it a synchronizing literal is refused with
//! [`Incoming::Busy`] and a non-synchronizing one ends the connection. The
//! framer holds those bytes until the next command is read, i.e. until the
//! command's handler is done with the literal.
//!
//! Invariants: a line never exceeds [`MAX_LINE`]; a command never exceeds its
//! total bound (literal bound + [`MAX_COMMAND_OVERHEAD`]); large literals in
//! flight never exceed the budget; the input buffer is
//! only changed by `read_buf` and by splitting off complete units, so
//! [`Framer::read_line`] is cancel-safe (IDLE races it against store events).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use imap_codec::CommandCodec;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::imap_types::command::Command;
use imap_codec::imap_types::core::LiteralMode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Longest accepted line (without literals).
pub const MAX_LINE: usize = 64 * 1024;
/// Largest literal in commands other than APPEND.
pub const MAX_SMALL_LITERAL: u32 = 64 * 1024;
/// Non-literal bytes a command may carry on top of its literals.
pub const MAX_COMMAND_OVERHEAD: usize = 256 * 1024;

/// Why no command could be read; all of them end the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed by peer")]
    Closed,
    #[error("line too long")]
    LineTooLong,
    #[error("non-synchronizing literal too big")]
    NonSyncTooBig,
    #[error("no budget for a non-synchronizing literal")]
    Busy,
    #[error("inactivity timeout")]
    Timeout,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One unit read from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A complete, decoded command.
    Command(Box<Command<'static>>),
    /// Undecodable input; the tag if one could be recognised.
    Bad { tag: Option<String> },
    /// A synchronizing literal over the bound, refused before `+`.
    TooBig { tag: String },
    /// A large synchronizing literal the budget cannot take now, refused
    /// before `+`.
    Busy { tag: String },
}

/// Bytes of large literals that may be in memory at once, shared by all
/// sessions.
pub type LiteralBudget = Arc<Semaphore>;

/// The process-wide budget: four messages of the largest size. Sized by
/// the first caller (a process serves one configuration).
pub fn literal_budget(max_message_size: u64) -> LiteralBudget {
    static BUDGET: OnceLock<LiteralBudget> = OnceLock::new();
    let bytes = usize::try_from(max_message_size.saturating_mul(4)).unwrap_or(usize::MAX);
    let bytes = bytes.clamp(MAX_SMALL_LITERAL as usize, Semaphore::MAX_PERMITS);
    Arc::clone(BUDGET.get_or_init(|| Arc::new(Semaphore::new(bytes))))
}

/// Input buffer of one connection.
#[derive(Default)]
pub struct Framer {
    /// Bytes received and not yet consumed.
    buf: BytesMut,
    /// Budget bytes of the last command's large literal.
    held: Option<OwnedSemaphorePermit>,
}

impl Framer {
    /// Drops buffered input (bytes pipelined after STARTTLS, RFC 3501 §6.2.1).
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Takes the buffered input (bytes that arrived after the last
    /// command, e.g. already compressed ones after COMPRESS).
    pub fn take_buffered(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// Reads one line including its line ending. Cancel-safe.
    pub async fn read_line<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        idle: Option<Duration>,
    ) -> Result<Bytes, FrameError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(self.buf.split_to(scanned + pos + 1).freeze());
            }
            scanned = self.buf.len();
            if scanned > MAX_LINE {
                return Err(FrameError::LineTooLong);
            }
            self.fill(reader, idle, 4096).await?;
        }
    }

    /// Reads exactly `n` bytes (a literal whose size was checked).
    async fn read_exact<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        n: usize,
        idle: Option<Duration>,
    ) -> Result<Bytes, FrameError> {
        while self.buf.len() < n {
            let want = (n - self.buf.len()).min(256 * 1024);
            self.fill(reader, idle, want).await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        idle: Option<Duration>,
        want: usize,
    ) -> Result<(), FrameError> {
        self.buf.reserve(want);
        let read = reader.read_buf(&mut self.buf);
        let n = match idle {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| FrameError::Timeout)??,
            None => read.await?,
        };
        if n == 0 {
            return Err(FrameError::Closed);
        }
        Ok(())
    }

    /// Reads one whole command, answering literal continuations on `stream`.
    /// Releases the budget of the previous command.
    pub async fn read_command<S>(
        &mut self,
        stream: &mut S,
        max_append: u64,
        idle: Duration,
        budget: &LiteralBudget,
    ) -> Result<Incoming, FrameError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.held = None;
        let mut command = BytesMut::from(&self.read_line(stream, Some(idle)).await?[..]);
        let (tag, name) = tag_and_name(&command);
        let max_literal = if name.eq_ignore_ascii_case("APPEND") {
            max_append.min(u64::from(u32::MAX)) as u32
        } else {
            MAX_SMALL_LITERAL
        };
        let max_total = max_literal as usize + MAX_COMMAND_OVERHEAD;
        loop {
            let (length, mode) = match CommandCodec::default().decode_static(&command) {
                Ok((_, parsed)) => return Ok(Incoming::Command(Box::new(parsed))),
                Err(CommandDecodeError::LiteralFound { length, mode, .. }) => (length, mode),
                Err(CommandDecodeError::Incomplete | CommandDecodeError::Failed) => {
                    return Ok(Incoming::Bad { tag });
                }
            };
            let too_big = length > max_literal || command.len() + length as usize > max_total;
            match (too_big, mode) {
                // RFC 7889 §4: refuse before the continuation request.
                (true, LiteralMode::Sync) => {
                    return Ok(Incoming::TooBig {
                        tag: tag.unwrap_or_else(|| "*".into()),
                    });
                }
                (true, LiteralMode::NonSync) => return Err(FrameError::NonSyncTooBig),
                (false, _) if !self.admit(length, budget) => {
                    return match mode {
                        LiteralMode::Sync => Ok(Incoming::Busy {
                            tag: tag.unwrap_or_else(|| "*".into()),
                        }),
                        LiteralMode::NonSync => Err(FrameError::Busy),
                    };
                }
                (false, LiteralMode::Sync) => {
                    // A client that does not read cannot block us here.
                    let ready = async {
                        stream.write_all(b"+ Ready for literal data\r\n").await?;
                        stream.flush().await
                    };
                    tokio::time::timeout(idle, ready)
                        .await
                        .map_err(|_| FrameError::Timeout)??;
                }
                (false, LiteralMode::NonSync) => {}
            }
            command.extend_from_slice(&self.read_exact(stream, length as usize, Some(idle)).await?);
            command.extend_from_slice(&self.read_line(stream, Some(idle)).await?);
        }
    }
}

impl Framer {
    /// Takes budget for a literal of `length` bytes if it is large; false
    /// when the budget cannot cover it now.
    fn admit(&mut self, length: u32, budget: &LiteralBudget) -> bool {
        if length <= MAX_SMALL_LITERAL {
            return true;
        }
        let Ok(permit) = Arc::clone(budget).try_acquire_many_owned(length) else {
            return false;
        };
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        true
    }
}

/// The tag (when it is a valid tag) and the command name of a raw line.
pub fn tag_and_name(line: &[u8]) -> (Option<String>, String) {
    let text = String::from_utf8_lossy(line);
    let mut words = text.trim_end_matches(['\r', '\n']).split(' ');
    let tag = words.next().filter(|t| is_valid_tag(t)).map(str::to_owned);
    let name = words.next().unwrap_or("").to_owned();
    (tag, name)
}

/// RFC 3501 §9: tag = 1*<any ASTRING-CHAR except "+">.
fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"+(){%*\"\\]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::command::CommandBody;

    async fn run(input: &[u8], max_append: u64) -> (Result<Incoming, FrameError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        let mut framer = Framer::default();
        let budget = Arc::new(Semaphore::new(1 << 20));
        let result = framer
            .read_command(&mut server, max_append, Duration::from_secs(5), &budget)
            .await;
        drop(server);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        (result, written)
    }

    #[tokio::test]
    async fn decodes_a_simple_command() {
        let (result, written) = run(b"a1 NOOP\r\n", 100).await;
        let Ok(Incoming::Command(command)) = result else {
            panic!("{result:?}")
        };
        assert_eq!(command.body, CommandBody::Noop);
        assert!(written.is_empty());
    }

    #[tokio::test]
    async fn answers_a_synchronizing_literal_with_a_continuation() {
        let (result, written) = run(b"a2 LOGIN {5}\r\nalice pass\r\n", 100).await;
        assert!(matches!(result, Ok(Incoming::Command(_))), "{result:?}");
        assert_eq!(written, b"+ Ready for literal data\r\n");
    }

    #[tokio::test]
    async fn refuses_an_oversize_append_literal_before_the_continuation() {
        let (result, written) = run(b"a3 APPEND INBOX {101}\r\n", 100).await;
        assert!(
            matches!(result, Ok(Incoming::TooBig { ref tag }) if tag == "a3"),
            "{result:?}"
        );
        assert!(written.is_empty());
    }

    #[tokio::test]
    async fn accepts_an_append_literal_within_the_bound() {
        let (result, _) = run(b"a3 APPEND INBOX {5+}\r\nhello\r\n", 100).await;
        assert!(matches!(result, Ok(Incoming::Command(_))), "{result:?}");
    }

    #[tokio::test]
    async fn bounds_literals_of_other_commands() {
        let (result, _) = run(b"a4 LOGIN {70000}\r\n", u64::MAX).await;
        assert!(matches!(result, Ok(Incoming::TooBig { .. })), "{result:?}");
        let (result, _) = run(b"a4 LOGIN {70000+}\r\n", u64::MAX).await;
        assert!(
            matches!(result, Err(FrameError::NonSyncTooBig)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn reports_garbage_as_bad_with_its_tag() {
        let (result, _) = run(b"x1 FROBNICATE now\r\n", 100).await;
        assert!(
            matches!(result, Ok(Incoming::Bad { tag: Some(ref t) }) if t == "x1"),
            "{result:?}"
        );
        let (result, _) = run(b"\r\n", 100).await;
        assert!(
            matches!(result, Ok(Incoming::Bad { tag: None })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn refuses_endless_lines() {
        let long = vec![b'a'; MAX_LINE + 10];
        let (result, _) = run(&long, 100).await;
        assert!(matches!(result, Err(FrameError::LineTooLong)), "{result:?}");
    }
}
