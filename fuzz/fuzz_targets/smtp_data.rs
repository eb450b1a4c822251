//! The DATA stream after `354`, in the pieces TCP may cut it into. The
//! first byte of the input picks the cut points. Besides not panicking:
//! - the decoder's output and the place it stops do not depend on the cuts;
//! - it stops only after `CRLF . CRLF` (or `. CRLF` at the very start), so
//!   `LF . LF` and other smuggling forms never end the data;
//! - the output never holds more bytes than the input.
#![no_main]

use chatmail_smtp::fuzzing::Decoder;

/// Feeds `input` in pieces of at most `piece` bytes; returns the output,
/// how many bytes the data took, and whether it was clean.
fn decode(input: &[u8], piece: usize) -> (Vec<u8>, Option<usize>, bool) {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    let mut used = 0;
    for chunk in input.chunks(piece.max(1)) {
        let taken = decoder.feed(chunk, &mut out);
        used += taken;
        if decoder.is_done() {
            let clean = decoder.finish().is_ok();
            return (out, Some(used), clean);
        }
        assert_eq!(taken, chunk.len());
    }
    let clean = decoder.finish().is_ok();
    (out, None, clean)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = decode(input, input.len());
    let cut = decode(input, usize::from(cut % 17) + 1);
    assert_eq!(whole, cut);
    let (out, end, _) = whole;
    assert!(out.len() <= input.len());
    if let Some(end) = end {
        let taken = &input[..end];
        assert!(taken.ends_with(b".\r\n"));
        assert!(end == 3 || taken.ends_with(b"\r\n.\r\n"));
    }
});
