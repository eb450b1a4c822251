//! Decoding of the DATA stream (RFC 5321 §4.1.1.4, §4.5.2). Pure.
//!
//! Invariants:
//! - only `CRLF . CRLF` ends the data; `LF . LF`, `CR . CR` and mixtures do
//!   not (SMTP smuggling, CVE-2023-51764);
//! - a bare CR or bare LF anywhere marks the message as refused, but the
//!   decoder keeps scanning to the real end so the session stays in sync;
//! - at most `max_size` bytes are kept; the rest is counted and dropped.

/// Decoder state at the current byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or at the very beginning).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` CR at the start of a line.
    DotCr,
    /// Inside a line.
    Middle,
    /// CR inside a line.
    Cr,
    /// The terminating `.CRLF` was seen.
    Done,
}

/// What was wrong with the data, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
    /// More than the size limit.
    TooBig,
}

/// Incremental decoder: feed it bytes until [`Decoder::is_done`].
#[derive(Debug)]
pub struct Decoder {
    state: State,
    body: Vec<u8>,
    max_size: usize,
    defect: Option<Defect>,
}

impl Decoder {
    pub fn new(max_size: usize) -> Self {
        Self {
            state: State::LineStart,
            body: Vec::new(),
            max_size,
            defect: None,
        }
    }

    /// Consumes bytes up to and including the terminator; returns how many
    /// bytes of `input` were used (the rest belongs to the next command).
    pub fn feed(&mut self, input: &[u8]) -> usize {
        for (i, &byte) in input.iter().enumerate() {
            self.step(byte);
            if self.state == State::Done {
                return i + 1;
            }
        }
        input.len()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The unstuffed message (CRLF line endings, without the final `.`
    /// line), or why it is refused. A bare line ending wins over size.
    pub fn finish(self) -> Result<Vec<u8>, Defect> {
        match self.defect {
            Some(defect) => Err(defect),
            None => Ok(self.body),
        }
    }

    fn step(&mut self, byte: u8) {
        use State::*;
        self.state = match (self.state, byte) {
            (LineStart, b'.') => Dot,
            (Dot, b'\r') => DotCr,
            (DotCr, b'\n') => Done,
            (DotCr, _) => {
                // `.` CR x: the CR is bare; keep the dot-unstuffed text.
                self.mark(Defect::BareLineEnding);
                self.emit(b'\r');
                return self.continue_line(byte);
            }
            // RFC 5321 §4.5.2: drop the first `.` of a line with more text.
            (Dot, _) | (LineStart | Middle, _) => return self.continue_line(byte),
            (Cr, b'\n') => {
                self.emit(b'\n');
                LineStart
            }
            (Cr, _) => {
                self.mark(Defect::BareLineEnding);
                return self.continue_line(byte);
            }
            (Done, _) => Done,
        };
    }

    /// Handles a byte inside a line.
    fn continue_line(&mut self, byte: u8) {
        self.emit(byte);
        self.state = match byte {
            b'\r' => State::Cr,
            b'\n' => {
                self.mark(Defect::BareLineEnding);
                State::Middle
            }
            _ => State::Middle,
        };
    }

    fn emit(&mut self, byte: u8) {
        if self.body.len() < self.max_size {
            self.body.push(byte);
        } else {
            self.mark(Defect::TooBig);
        }
    }

    fn mark(&mut self, defect: Defect) {
        if self.defect != Some(Defect::BareLineEnding) {
            self.defect = Some(defect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], max: usize) -> (Result<Vec<u8>, Defect>, usize) {
        let mut decoder = Decoder::new(max);
        let used = decoder.feed(input);
        assert!(decoder.is_done(), "not terminated");
        (decoder.finish(), used)
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_leaves_the_rest() {
        let (body, used) = decode(b"a\r\nb\r\n.\r\nQUIT\r\n", 100);
        assert_eq!(body.unwrap(), b"a\r\nb\r\n");
        assert_eq!(used, 9);
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (body, _) = decode(b"..\r\n..x\r\n.y\r\n.\r\n", 100);
        assert_eq!(body.unwrap(), b".\r\n.x\r\ny\r\n");
    }

    #[test]
    fn empty_data_is_an_empty_message() {
        assert_eq!(decode(b".\r\n", 10).0.unwrap(), b"");
    }

    #[test]
    fn rejects_bare_lf_and_does_not_end_at_lf_dot_lf() {
        let mut decoder = Decoder::new(100);
        decoder.feed(b"a\n.\nMAIL FROM:<x@y>\r\n");
        assert!(!decoder.is_done());
        decoder.feed(b"\r\n.\r\n");
        assert!(decoder.is_done());
        assert_eq!(decoder.finish(), Err(Defect::BareLineEnding));
    }

    #[test]
    fn rejects_bare_cr_and_does_not_end_at_cr_dot_cr() {
        let mut decoder = Decoder::new(100);
        decoder.feed(b"a\r.\rb\r\n.\n");
        assert!(!decoder.is_done());
        assert_eq!(decoder.feed(b"\r\n.\r\nX"), 5);
        assert_eq!(decoder.finish(), Err(Defect::BareLineEnding));
    }

    #[test]
    fn rejects_dot_cr_without_lf() {
        let (body, _) = decode(b".\rx\r\n.\r\n", 100);
        assert_eq!(body, Err(Defect::BareLineEnding));
    }

    #[test]
    fn keeps_at_most_max_size_bytes() {
        let mut decoder = Decoder::new(4);
        decoder.feed(b"abcdefgh\r\n");
        decoder.feed(b".\r\n");
        assert!(decoder.is_done());
        assert!(decoder.body.len() <= 4);
        assert_eq!(decoder.finish(), Err(Defect::TooBig));
    }

    #[test]
    fn accepts_exactly_max_size() {
        assert_eq!(decode(b"ab\r\n.\r\n", 4).0.unwrap(), b"ab\r\n");
    }

    #[test]
    fn terminator_split_across_reads_is_found() {
        let mut decoder = Decoder::new(100);
        for chunk in [&b"x\r"[..], b"\n", b".", b"\r", b"\n"] {
            decoder.feed(chunk);
        }
        assert!(decoder.is_done());
        assert_eq!(decoder.finish().unwrap(), b"x\r\n");
    }
}
