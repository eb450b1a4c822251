//! Command framing: turns the byte stream into complete commands.
//!
//! Flow: read one CRLF-terminated line. A line that ends in a literal
//! announcement (`{n}`, or `{n+}`, RFC 3501 §4.3, RFC 7888) continues
//! after the literal: the bound for this command is checked first (an
//! oversize synchronizing literal is refused before any `+` is sent, RFC
//! 7889 `[TOOBIG]`), `+ Ready` is sent (synchronizing only, RFC 3501
//! §7.5), the literal and the next line are read, and so on. When a line
//! ends without one, the whole command is decoded by imap-codec, once:
//! framing is a single pass over the input, however many literals it has.
//!
//! [`Bounds`] depend on the session's state. Before login a command may
//! only be one of those pre-login needs (CAPABILITY, NOOP, LOGOUT, ID,
//! STARTTLS, LOGIN, AUTHENTICATE), with a short line, a few small literals
//! and a small total; anything else is answered `BAD` without decoding.
//! Non-synchronizing literals are refused everywhere (the server does not
//! advertise LITERAL+ or LITERAL-): their bytes are already on the way, so
//! the connection ends.
//!
//! Literals above [`MAX_SMALL_LITERAL`] (APPEND only) also need twice
//! their size from the process's budget of message bodies in memory
//! ([`LiteralBudget`], `chatmail_limits::Spools`, shared with SMTP and
//! `/mxdeliv`), taken before `+` is sent: without it the literal is
//! refused with [`Incoming::Busy`]. The framer holds those bytes until the
//! next command is read, i.e. until the command's handler is done with the
//! literal.
//!
//! Every read has a deadline for the whole unit (a command, or a line),
//! not one per byte: a client that trickles bytes cannot stretch it.
//!
//! Invariants: a line never exceeds the bound's `max_line`; a command
//! never exceeds its total bound; large literals in flight never exceed
//! the budget; the input buffer is only changed by `read_buf` and by
//! splitting off complete units, so [`Framer::read_line`] is cancel-safe
//! (IDLE races it against store events).

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use chatmail_limits::{Reservation, Spools};
use imap_codec::CommandCodec;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::imap_types::command::Command;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Longest accepted line (without literals) once authenticated.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest literal in commands other than APPEND.
pub const MAX_SMALL_LITERAL: u32 = 64 * 1024;
/// Non-literal bytes a command may carry on top of its literals.
pub const MAX_COMMAND_OVERHEAD: usize = 256 * 1024;
/// Literals one command may carry once authenticated.
pub const MAX_LITERALS: usize = 1024;
/// Commands a client that has not logged in may send (RFC 3501 §6.1, §6.2,
/// RFC 2971).
const PRE_LOGIN_COMMANDS: [&str; 7] = [
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "ID",
    "STARTTLS",
    "LOGIN",
    "AUTHENTICATE",
];

/// What one command may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest line.
    pub max_line: usize,
    /// Largest literal of commands other than APPEND.
    pub max_literal: u32,
    /// Largest APPEND literal.
    pub max_append: u32,
    /// Largest command, literals included.
    pub max_total: usize,
    /// Most literals in one command.
    pub max_literals: usize,
    /// Only the pre-login commands are taken.
    pub pre_login: bool,
}

impl Bounds {
    /// Before login: LOGIN with a password of up to 1 KiB, AUTHENTICATE
    /// PLAIN, and ID with its 30 fields of up to 1 KiB each (RFC 2971 §3.3),
    /// each as literals if the client likes.
    pub const PRE_LOGIN: Bounds = Bounds {
        max_line: 16 * 1024,
        max_literal: 4 * 1024,
        max_append: 0,
        max_total: 64 * 1024,
        max_literals: 64,
        pre_login: true,
    };

    /// Once authenticated: APPEND takes messages up to `max_message_size`.
    pub fn authenticated(max_message_size: u64) -> Bounds {
        let max_append = u32::try_from(max_message_size).unwrap_or(u32::MAX);
        Bounds {
            max_line: MAX_LINE,
            max_literal: MAX_SMALL_LITERAL,
            max_append,
            max_total: (max_append.max(MAX_SMALL_LITERAL) as usize)
                .saturating_add(MAX_COMMAND_OVERHEAD),
            max_literals: MAX_LITERALS,
            pre_login: false,
        }
    }
}

/// Why no command could be read; all of them end the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed by peer")]
    Closed,
    #[error("line too long")]
    LineTooLong,
    #[error("non-synchronizing literal")]
    NonSyncLiteral,
    #[error("deadline passed")]
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
    /// A command other than those pre-login needs, before login; not
    /// decoded.
    NeedsLogin { tag: Option<String> },
    /// A synchronizing literal over the bound, refused before `+`.
    TooBig { tag: String },
    /// A large synchronizing literal the budget cannot take now, refused
    /// before `+`.
    Busy { tag: String },
}

/// Where the bytes of large literals come from: the process's budget of
/// message bodies in memory, under the client's share.
#[derive(Clone)]
pub struct LiteralBudget {
    spools: Spools,
    client: Option<IpAddr>,
}

impl LiteralBudget {
    /// The budget of `spools` for a session from `client`.
    pub fn new(spools: Spools, client: Option<IpAddr>) -> Self {
        Self { spools, client }
    }
}

/// Input buffer of one connection.
#[derive(Default)]
pub struct Framer {
    /// Bytes received and not yet consumed.
    buf: BytesMut,
    /// Budget bytes of the last command's large literal.
    held: Option<Reservation>,
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

    /// Reads one line including its line ending, of at most `max` bytes,
    /// by `deadline` (`None`: no deadline). Cancel-safe.
    pub async fn read_line<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<Bytes, FrameError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                if scanned + pos + 1 > max {
                    return Err(FrameError::LineTooLong);
                }
                return Ok(self.buf.split_to(scanned + pos + 1).freeze());
            }
            scanned = self.buf.len();
            if scanned > max {
                return Err(FrameError::LineTooLong);
            }
            self.fill(reader, deadline, 4096).await?;
        }
    }

    /// Reads exactly `n` bytes (a literal whose size was checked).
    async fn read_exact<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        n: usize,
        deadline: Instant,
    ) -> Result<Bytes, FrameError> {
        while self.buf.len() < n {
            let want = (n - self.buf.len()).min(256 * 1024);
            self.fill(reader, Some(deadline), want).await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        deadline: Option<Instant>,
        want: usize,
    ) -> Result<(), FrameError> {
        self.buf.reserve(want);
        let read = reader.read_buf(&mut self.buf);
        let n = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, read)
                .await
                .map_err(|_| FrameError::Timeout)??,
            None => read.await?,
        };
        if n == 0 {
            return Err(FrameError::Closed);
        }
        Ok(())
    }

    /// Reads one whole command within `bounds` by `deadline`, answering
    /// literal continuations on `stream`. Releases the budget of the
    /// previous command.
    pub async fn read_command<S>(
        &mut self,
        stream: &mut S,
        bounds: &Bounds,
        deadline: Instant,
        budget: &LiteralBudget,
    ) -> Result<Incoming, FrameError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.held = None;
        let first = self
            .read_line(stream, bounds.max_line, Some(deadline))
            .await?;
        let (tag, name) = tag_and_name(&first);
        if bounds.pre_login
            && !PRE_LOGIN_COMMANDS
                .iter()
                .any(|c| name.eq_ignore_ascii_case(c))
        {
            return match literal_at_end(&first) {
                // Its bytes are on the way and would be read as commands.
                Some((_, false)) => Err(FrameError::NonSyncLiteral),
                _ => Ok(Incoming::NeedsLogin { tag }),
            };
        }
        let max_literal = if name.eq_ignore_ascii_case("APPEND") {
            bounds.max_append
        } else {
            bounds.max_literal
        };
        let tag_or_star = || tag.clone().unwrap_or_else(|| "*".into());
        let mut command = BytesMut::from(&first[..]);
        let mut line = first;
        let mut literals = 0;
        while let Some((length, sync)) = literal_at_end(&line) {
            if !sync {
                return Err(FrameError::NonSyncLiteral);
            }
            literals += 1;
            let too_big = length > max_literal
                || literals > bounds.max_literals
                || command.len().saturating_add(length as usize) > bounds.max_total;
            // RFC 7889 §4: refuse before the continuation request.
            if too_big {
                return Ok(Incoming::TooBig { tag: tag_or_star() });
            }
            if !self.admit(length, budget) {
                return Ok(Incoming::Busy { tag: tag_or_star() });
            }
            // A client that does not read cannot block us here.
            let ready = async {
                stream.write_all(b"+ Ready for literal data\r\n").await?;
                stream.flush().await
            };
            tokio::time::timeout_at(deadline, ready)
                .await
                .map_err(|_| FrameError::Timeout)??;
            command.extend_from_slice(&self.read_exact(stream, length as usize, deadline).await?);
            let room = bounds
                .max_total
                .saturating_sub(command.len())
                .min(bounds.max_line);
            line = self.read_line(stream, room, Some(deadline)).await?;
            command.extend_from_slice(&line);
        }
        Ok(match CommandCodec::default().decode_static(&command) {
            Ok((_, parsed)) => Incoming::Command(Box::new(parsed)),
            Err(
                CommandDecodeError::LiteralFound { .. }
                | CommandDecodeError::Incomplete
                | CommandDecodeError::Failed,
            ) => Incoming::Bad { tag },
        })
    }
}

impl Framer {
    /// Takes budget for a literal of `length` bytes if it is large (twice
    /// its size, as every body in memory counts); false when the budget
    /// cannot cover it now.
    fn admit(&mut self, length: u32, budget: &LiteralBudget) -> bool {
        if length <= MAX_SMALL_LITERAL {
            return true;
        }
        let cost = u64::from(length) * 2;
        match &mut self.held {
            Some(held) => held.try_grow(cost),
            None => match budget.spools.try_load(budget.client, cost) {
                Some(held) => {
                    self.held = Some(held);
                    true
                }
                None => false,
            },
        }
    }
}

/// The literal a line announces at its end (RFC 3501 §4.3 `{n}`, RFC 7888
/// `{n+}`, RFC 3516 `~{n}`): its length and whether it is synchronizing.
/// Literals only ever end a line, so nothing else has to be scanned.
pub fn literal_at_end(line: &[u8]) -> Option<(u32, bool)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(digits) => (digits, false),
        None => (spec, true),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((length, sync))
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
    use std::time::Duration;

    fn authenticated(max_append: u64) -> Bounds {
        Bounds::authenticated(max_append)
    }

    async fn run_with(input: &[u8], bounds: Bounds) -> (Result<Incoming, FrameError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        let mut framer = Framer::default();
        let dir = tempfile::tempdir().unwrap();
        let spools = Spools::new(dir.path().join("spool"), 1 << 22, 1 << 22, 1 << 20);
        let budget = LiteralBudget::new(spools, None);
        let deadline = Instant::now() + Duration::from_secs(5);
        let result = framer
            .read_command(&mut server, &bounds, deadline, &budget)
            .await;
        drop(server);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        (result, written)
    }

    async fn run(input: &[u8], max_append: u64) -> (Result<Incoming, FrameError>, Vec<u8>) {
        run_with(input, authenticated(max_append)).await
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
        let (result, _) = run(b"a3 APPEND INBOX {5}\r\nhello\r\n", 100).await;
        assert!(matches!(result, Ok(Incoming::Command(_))), "{result:?}");
    }

    #[tokio::test]
    async fn refuses_non_synchronizing_literals_which_are_not_advertised() {
        let (result, written) = run(b"a3 APPEND INBOX {5+}\r\nhello\r\n", 100).await;
        assert!(
            matches!(result, Err(FrameError::NonSyncLiteral)),
            "{result:?}"
        );
        assert!(written.is_empty());
        let (result, _) = run_with(b"a4 ID ({3+}\r\nabc NIL)\r\n", Bounds::PRE_LOGIN).await;
        assert!(
            matches!(result, Err(FrameError::NonSyncLiteral)),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn bounds_literals_of_other_commands() {
        let (result, _) = run(b"a4 LOGIN {70000}\r\n", u64::MAX).await;
        assert!(matches!(result, Ok(Incoming::TooBig { .. })), "{result:?}");
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
        let mut pre_login = vec![b'a'; Bounds::PRE_LOGIN.max_line + 10];
        pre_login.extend_from_slice(b"\r\n");
        let (result, _) = run_with(&pre_login, Bounds::PRE_LOGIN).await;
        assert!(matches!(result, Err(FrameError::LineTooLong)), "{result:?}");
    }

    #[tokio::test]
    async fn pre_login_takes_only_what_login_needs() {
        let (result, written) = run_with(b"a1 SELECT {5}\r\nINBOX\r\n", Bounds::PRE_LOGIN).await;
        assert!(
            matches!(result, Ok(Incoming::NeedsLogin { tag: Some(ref t) }) if t == "a1"),
            "{result:?}"
        );
        assert!(written.is_empty(), "no continuation for a refused command");
        let (result, _) = run_with(b"a2 LOGIN {5000}\r\n", Bounds::PRE_LOGIN).await;
        assert!(matches!(result, Ok(Incoming::TooBig { .. })), "{result:?}");
        let mut many = b"a3 ID (".to_vec();
        for _ in 0..70 {
            many.extend_from_slice(b"{1}\r\nx ");
        }
        let (result, written) = run_with(&many, Bounds::PRE_LOGIN).await;
        assert!(matches!(result, Ok(Incoming::TooBig { .. })), "{result:?}");
        let continuations = written.windows(7).filter(|w| w == b"+ Ready").count();
        assert_eq!(continuations, Bounds::PRE_LOGIN.max_literals);
    }

    #[tokio::test]
    async fn a_command_with_thousands_of_literals_is_framed_in_one_pass() {
        // Regression: the decoder re-parsed the command from its start
        // after every literal, quadratic in their number.
        let mut command = b"a1 SEARCH".to_vec();
        for _ in 0..1000 {
            command.extend_from_slice(b" TEXT {4}\r\nneed");
        }
        command.extend_from_slice(b"\r\n");
        let started = std::time::Instant::now();
        let (result, _) = run(&command, 100).await;
        assert!(matches!(result, Ok(Incoming::Command(_))), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_deadline_covers_the_whole_command_not_each_byte() {
        let (mut client, mut server) = tokio::io::duplex(1 << 16);
        let trickle = tokio::spawn(async move {
            for &byte in b"a1 NOOP" {
                client.write_all(&[byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            client
        });
        let mut framer = Framer::default();
        let dir = tempfile::tempdir().unwrap();
        let spools = Spools::new(dir.path().join("spool"), 1 << 22, 1 << 22, 1 << 20);
        let budget = LiteralBudget::new(spools, None);
        let deadline = Instant::now() + Duration::from_millis(100);
        let bounds = Bounds::PRE_LOGIN;
        let result = framer
            .read_command(&mut server, &bounds, deadline, &budget)
            .await;
        assert!(matches!(result, Err(FrameError::Timeout)), "{result:?}");
        drop(trickle.await.unwrap());
    }

    #[test]
    fn finds_literal_announcements_only_at_line_ends() {
        assert_eq!(literal_at_end(b"a LOGIN {5}\r\n"), Some((5, true)));
        assert_eq!(literal_at_end(b"a LOGIN {5+}\r\n"), Some((5, false)));
        assert_eq!(literal_at_end(b"a APPEND x ~{12}\n"), Some((12, true)));
        assert_eq!(literal_at_end(b"a LOGIN \"{5}\"\r\n"), None);
        assert_eq!(literal_at_end(b"a LOGIN {}\r\n"), None);
        assert_eq!(literal_at_end(b"a LOGIN {99999999999}\r\n"), None);
        assert_eq!(literal_at_end(b"}"), None);
    }
}
