//! COMPRESS=DEFLATE (RFC 4978): the stream layer under the session.
//!
//! Flow: every session stream is wrapped in a [`Layer`] that passes bytes
//! through unchanged. After the tagged `OK DEFLATE active` has been written
//! in the clear, the session calls [`Layer::start_deflate`]; from then on
//! both directions are raw deflate (RFC 1951, no zlib header, RFC 4978 §3):
//! reads inflate what the client sends, writes deflate into an output
//! buffer, and every flush ends the burst with a full flush (a sync flush
//! that also forgets the history), so the client can decode each response
//! as soon as it arrives (RFC 4978 §4).
//!
//! Memory: the compressor is about 312 KiB and the decompressor about
//! 42 KiB (miniz_oxide). Because a full flush leaves nothing the next
//! block may refer to, the compressor and its output buffer are dropped
//! after every burst and rebuilt for the next one; an idle compressed
//! connection holds only the decompressor (its 32 KiB window must survive,
//! the client's history is not ours to reset) and the input buffer.
//!
//! Invariants: inflated output per read never exceeds the caller's buffer
//! (a compression bomb costs CPU, never memory); the compressed input and
//! output buffers are fixed-size; deflate state exists only on connections
//! that enabled it; reads are cancel-safe (all state lives in the layer),
//! which IDLE relies on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::session::{Done, Flow, Session};
use crate::status::Status;

/// Compressed bytes read from the client ahead of inflation.
const INPUT_BUFFER: usize = 8 * 1024;
/// Compressed bytes waiting to be written to the client.
const OUTPUT_BUFFER: usize = 16 * 1024;
/// Largest chunk inflated per read call.
const MAX_INFLATE_CHUNK: usize = 64 * 1024;

/// A session stream, optionally compressed.
pub struct Layer<S> {
    inner: S,
    /// Set once COMPRESS DEFLATE succeeded; boxed so plain connections
    /// carry one pointer.
    deflate: Option<Box<Deflate>>,
}

/// Per-direction compression state and buffers.
struct Deflate {
    /// Present only during a burst of output (see the module doc).
    compress: Option<Box<Compress>>,
    decompress: Decompress,
    /// Compressed input; `input[start..end]` is not yet inflated.
    input: Box<[u8]>,
    start: usize,
    end: usize,
    /// Compressed output; `output[written..]` is not yet sent.
    output: Vec<u8>,
    written: usize,
    /// Whether data went into the compressor since the last sync flush.
    pending_flush: bool,
    /// The client ended its deflate stream: no more input.
    finished: bool,
}

impl<S> Layer<S> {
    /// A pass-through layer over `inner`.
    pub fn new(inner: S) -> Self {
        Layer {
            inner,
            deflate: None,
        }
    }

    /// The underlying stream (only meaningful before compression started).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Whether COMPRESS DEFLATE is active.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Switches both directions to raw deflate. `already_read` holds bytes
    /// received after the COMPRESS command and before this call; they are
    /// compressed data and are inflated first. Refused (false) when they do
    /// not fit the input buffer.
    pub fn start_deflate(&mut self, already_read: &[u8]) -> bool {
        if already_read.len() > INPUT_BUFFER {
            return false;
        }
        let mut input = vec![0; INPUT_BUFFER].into_boxed_slice();
        input[..already_read.len()].copy_from_slice(already_read);
        self.deflate = Some(Box::new(Deflate {
            // RFC 4978 §3: raw deflate, no zlib header.
            compress: None,
            decompress: Decompress::new(false),
            input,
            start: 0,
            end: already_read.len(),
            output: Vec::new(),
            written: 0,
            pending_flush: false,
            finished: false,
        }));
        true
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// RFC 4978 §3: answers in the clear; the session switches the stream
    /// after writing the tagged OK ([`Flow::Compress`]).
    pub(crate) fn handle_compress(&mut self) -> Done {
        if self.io.stream.is_compressed() {
            // RFC 4978 §3: only one COMPRESS per connection.
            return Status::compression_active().into();
        }
        tracing::debug!("COMPRESS=DEFLATE active");
        Done {
            status: Status::deflate_active(),
            flow: Flow::Compress,
        }
    }
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Deflate {
    /// Inflates buffered input into `buf`; the number of bytes produced.
    fn inflate_into(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
        let want = buf.remaining().min(MAX_INFLATE_CHUNK);
        let out = buf.initialize_unfilled_to(want);
        let (before_in, before_out) = (self.decompress.total_in(), self.decompress.total_out());
        let status = self
            .decompress
            .decompress(
                &self.input[self.start..self.end],
                out,
                FlushDecompress::None,
            )
            .map_err(invalid)?;
        let consumed = (self.decompress.total_in() - before_in) as usize;
        let produced = (self.decompress.total_out() - before_out) as usize;
        self.start += consumed;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if status == flate2::Status::StreamEnd {
            self.finished = true;
        }
        buf.advance(produced);
        Ok(produced)
    }

    /// Writes buffered compressed output to `inner` until it is empty.
    fn poll_drain<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.output.len() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.output[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.output.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Runs the compressor over `input` into the free output space; the
    /// number of input bytes taken.
    fn deflate(&mut self, input: &[u8], flush: FlushCompress) -> io::Result<usize> {
        // RFC 4978 §3: raw deflate, no zlib header. A fresh compressor
        // continues the stream: the last burst ended byte-aligned on an
        // empty stored block and never set BFINAL (RFC 1951 §3.2.3).
        let compress = self
            .compress
            .get_or_insert_with(|| Box::new(Compress::new(Compression::default(), false)));
        if self.output.capacity() < OUTPUT_BUFFER {
            self.output.reserve_exact(OUTPUT_BUFFER - self.output.len());
        }
        if self.output.len() == self.output.capacity() {
            return Ok(0);
        }
        let before = compress.total_in();
        compress
            .compress_vec(input, &mut self.output, flush)
            .map_err(invalid)?;
        Ok((compress.total_in() - before) as usize)
    }

    /// Frees the compressor and output buffer after a completed burst.
    fn release(&mut self) {
        self.compress = None;
        self.output = Vec::new();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Layer<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(deflate) = this.deflate.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        loop {
            if deflate.finished || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if deflate.inflate_into(buf)? > 0 {
                return Poll::Ready(Ok(()));
            }
            if deflate.end == deflate.input.len() {
                // The inflater took nothing from a full buffer.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "deflate stream makes no progress",
                )));
            }
            let mut space = ReadBuf::new(&mut deflate.input[deflate.end..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut space))?;
            let n = space.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(())); // EOF
            }
            deflate.end += n;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Layer<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(deflate) = this.deflate.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        };
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let taken = deflate.deflate(data, FlushCompress::None)?;
            if taken > 0 {
                deflate.pending_flush = true;
                return Poll::Ready(Ok(taken));
            }
            ready!(deflate.poll_drain(&mut this.inner, cx))?;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deflate) = this.deflate.as_deref_mut() {
            // RFC 4978 §4: every burst of output ends flushed.
            while deflate.pending_flush {
                ready!(deflate.poll_drain(&mut this.inner, cx))?;
                deflate.deflate(&[], FlushCompress::Full)?;
                // Done once the flush did not fill the buffer.
                deflate.pending_flush = deflate.output.len() == deflate.output.capacity();
            }
            ready!(deflate.poll_drain(&mut this.inner, cx))?;
            deflate.release();
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut compress = Compress::new(Compression::fast(), false);
        let mut out = Vec::with_capacity(data.len() + 1024);
        compress
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    }

    fn raw_inflate(data: &[u8], limit: usize) -> Vec<u8> {
        let mut decompress = Decompress::new(false);
        let mut out = Vec::with_capacity(limit);
        decompress
            .decompress_vec(data, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[tokio::test]
    async fn passes_bytes_through_until_started() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut layer = Layer::new(server);
        layer.write_all(b"* OK plain\r\n").await.unwrap();
        layer.flush().await.unwrap();
        let mut buf = [0; 12];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"* OK plain\r\n");
        assert!(!layer.is_compressed());
    }

    #[tokio::test]
    async fn deflates_each_flushed_burst_completely() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut layer = Layer::new(server);
        assert!(layer.start_deflate(b""));
        let body = "line of text\r\n".repeat(10_000);
        layer.write_all(body.as_bytes()).await.unwrap();
        layer.flush().await.unwrap();
        drop(layer);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        assert!(wire.len() < body.len() / 10, "{} bytes", wire.len());
        // A sync flush ends with the empty stored block.
        assert!(wire.ends_with(&[0, 0, 0xff, 0xff]));
        assert_eq!(raw_inflate(&wire, body.len() + 1), body.as_bytes());
    }

    #[tokio::test]
    async fn frees_the_compressor_between_bursts_and_stays_decodable() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut layer = Layer::new(server);
        assert!(layer.start_deflate(b""));
        let mut expected = Vec::new();
        for burst in 0..3 {
            let text = format!("* {burst} EXISTS\r\n").repeat(100);
            layer.write_all(text.as_bytes()).await.unwrap();
            layer.flush().await.unwrap();
            expected.extend_from_slice(text.as_bytes());
            let deflate = layer.deflate.as_deref().unwrap();
            assert!(deflate.compress.is_none() && deflate.output.capacity() == 0);
        }
        drop(layer);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.unwrap();
        assert_eq!(raw_inflate(&wire, expected.len() + 1), expected);
    }

    #[tokio::test]
    async fn inflates_input_including_bytes_read_before_the_switch() {
        let (mut client, server) = tokio::io::duplex(1024);
        let wire = raw_deflate(b"a1 NOOP\r\na2 LOGOUT\r\n");
        let (early, late) = wire.split_at(3);
        let mut layer = Layer::new(server);
        assert!(layer.start_deflate(early));
        client.write_all(late).await.unwrap();
        let mut text = vec![0; 20];
        layer.read_exact(&mut text).await.unwrap();
        assert_eq!(text, b"a1 NOOP\r\na2 LOGOUT\r\n");
    }

    #[tokio::test]
    async fn bounds_the_output_of_a_compression_bomb_per_read() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let bomb = raw_deflate(&vec![b'a'; 8 << 20]);
        assert!(bomb.len() < 64 * 1024);
        let mut layer = Layer::new(server);
        assert!(layer.start_deflate(b""));
        tokio::spawn(async move { client.write_all(&bomb).await });
        let mut buf = vec![0; 4096];
        let n = layer.read(&mut buf).await.unwrap();
        assert!(n > 0 && n <= 4096);
    }

    #[tokio::test]
    async fn rejects_corrupt_deflate_data() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut layer = Layer::new(server);
        assert!(layer.start_deflate(b""));
        // Block type 3 is reserved (RFC 1951 §3.2.3).
        client.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        let mut buf = [0; 16];
        let err = layer.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
