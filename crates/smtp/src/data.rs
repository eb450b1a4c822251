//! Decoding of the DATA stream (RFC 5321 §4.1.1.4, §4.5.2). Pure.
//!
//! Invariants:
//! - only `CRLF . CRLF` ends the data; `LF . LF`, `CR . CR` and mixtures do
//!   not (SMTP smuggling, CVE-2023-51764);
//! - a bare CR or bare LF anywhere marks the message as refused, but the
//!   decoder keeps scanning to the real end so the session stays in sync;
//! - the decoder keeps no body: each call hands the unstuffed bytes of its
//!   input to the caller (who bounds and spools them).

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

/// What was wrong with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareLineEnding,
}

/// Incremental decoder: feed it bytes until [`Decoder::is_done`].
#[derive(Debug)]
pub struct Decoder {
    state: State,
    defect: Option<Defect>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            state: State::LineStart,
            defect: None,
        }
    }

    /// Consumes bytes up to and including the terminator, appending the
    /// unstuffed message bytes to `out`; returns how many bytes of `input`
    /// were used (the rest belongs to the next command).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        for (i, &byte) in input.iter().enumerate() {
            self.step(byte, out);
            if self.state == State::Done {
                return i + 1;
            }
        }
        input.len()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the data was clean (CRLF line endings only).
    pub fn finish(self) -> Result<(), Defect> {
        match self.defect {
            Some(defect) => Err(defect),
            None => Ok(()),
        }
    }

    fn step(&mut self, byte: u8, out: &mut Vec<u8>) {
        use State::*;
        self.state = match (self.state, byte) {
            (LineStart, b'.') => Dot,
            (Dot, b'\r') => DotCr,
            (DotCr, b'\n') => Done,
            (DotCr, _) => {
                // `.` CR x: the CR is bare; keep the dot-unstuffed text.
                self.defect = Some(Defect::BareLineEnding);
                out.push(b'\r');
                return self.continue_line(byte, out);
            }
            // RFC 5321 §4.5.2: drop the first `.` of a line with more text.
            (Dot, _) | (LineStart | Middle, _) => return self.continue_line(byte, out),
            (Cr, b'\n') => {
                out.push(b'\n');
                LineStart
            }
            (Cr, _) => {
                self.defect = Some(Defect::BareLineEnding);
                return self.continue_line(byte, out);
            }
            (Done, _) => Done,
        };
    }

    /// Handles a byte inside a line.
    fn continue_line(&mut self, byte: u8, out: &mut Vec<u8>) {
        out.push(byte);
        self.state = match byte {
            b'\r' => State::Cr,
            b'\n' => {
                self.defect = Some(Defect::BareLineEnding);
                State::Middle
            }
            _ => State::Middle,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` at once; returns the body or defect and the bytes used.
    fn decode(input: &[u8]) -> (Result<Vec<u8>, Defect>, usize) {
        let mut decoder = Decoder::new();
        let mut body = Vec::new();
        let used = decoder.feed(input, &mut body);
        assert!(decoder.is_done(), "not terminated");
        (decoder.finish().map(|()| body), used)
    }

    #[test]
    fn ends_at_crlf_dot_crlf_and_leaves_the_rest() {
        let (body, used) = decode(b"a\r\nb\r\n.\r\nQUIT\r\n");
        assert_eq!(body.unwrap(), b"a\r\nb\r\n");
        assert_eq!(used, 9);
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (body, _) = decode(b"..\r\n..x\r\n.y\r\n.\r\n");
        assert_eq!(body.unwrap(), b".\r\n.x\r\ny\r\n");
    }

    #[test]
    fn empty_data_is_an_empty_message() {
        assert_eq!(decode(b".\r\n").0.unwrap(), b"");
    }

    #[test]
    fn rejects_bare_lf_and_does_not_end_at_lf_dot_lf() {
        let mut decoder = Decoder::new();
        let mut body = Vec::new();
        decoder.feed(b"a\n.\nMAIL FROM:<x@y>\r\n", &mut body);
        assert!(!decoder.is_done());
        decoder.feed(b"\r\n.\r\n", &mut body);
        assert!(decoder.is_done());
        assert_eq!(decoder.finish(), Err(Defect::BareLineEnding));
    }

    #[test]
    fn rejects_bare_cr_and_does_not_end_at_cr_dot_cr() {
        let mut decoder = Decoder::new();
        let mut body = Vec::new();
        decoder.feed(b"a\r.\rb\r\n.\n", &mut body);
        assert!(!decoder.is_done());
        assert_eq!(decoder.feed(b"\r\n.\r\nX", &mut body), 5);
        assert_eq!(decoder.finish(), Err(Defect::BareLineEnding));
    }

    #[test]
    fn rejects_dot_cr_without_lf() {
        let (body, _) = decode(b".\rx\r\n.\r\n");
        assert_eq!(body, Err(Defect::BareLineEnding));
    }

    #[test]
    fn terminator_split_across_reads_is_found() {
        let mut decoder = Decoder::new();
        let mut body = Vec::new();
        for chunk in [&b"x\r"[..], b"\n", b".", b"\r", b"\n"] {
            decoder.feed(chunk, &mut body);
        }
        assert!(decoder.is_done());
        assert_eq!(body, b"x\r\n");
    }
}
