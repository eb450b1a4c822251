//! The OpenPGP packet sequence of an encrypted message (docs/specifications.md §2 rule 5).
//!
//! Accepted grammar: `(PKESK | SKESK)+ SEIPD`, where the SEIPD (v1 or v2)
//! ends exactly at the end of the data. A lone SEIPD is refused: without an
//! ESK packet nobody can decrypt it, so it is not a message from a client.
//!
//! Two independent readers must agree:
//! 1. [`walk`], a minimal header walk written here. It is the authority on
//!    framing: sequoia's parser deliberately recovers from junk (it skips up
//!    to 32 KiB of garbage and reports it as an `Unknown` packet, or drops
//!    an error), so "ends exactly at the end of the data" is decided here.
//! 2. sequoia's `PacketParser`, which checks that each ESK and the SEIPD
//!    header parse as real packets (known versions, sane fields). It only
//!    steps over packets with `next()`: nothing is decrypted or descended into.
//!
//! Invariants: linear in the input (every step consumes at least one octet,
//! ESK packets are capped); no panics; errors carry tags and counts only.

use sequoia_openpgp::Packet;
use sequoia_openpgp::parse::{Dearmor, PacketParserBuilder, PacketParserResult, Parse};

const TAG_PKESK: u8 = 1;
const TAG_SKESK: u8 = 3;
const TAG_LITERAL: u8 = 11;
const TAG_SEIPD: u8 = 18;

/// Upper bound on ESK packets (one per recipient key, plus passwords); keeps
/// the per-packet cost of the second parser bounded.
pub const MAX_ESK_PACKETS: usize = 10_000;

/// Why the binary data is not `(PKESK | SKESK)+ SEIPD`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("no packets")]
    Empty,
    #[error("octet at {0} is not a packet header")]
    NotAPacket(usize),
    #[error("packet at {0} runs past the end of the data")]
    Truncated(usize),
    #[error("partial body length on non-data packet at {0}")]
    PartialNotAllowed(usize),
    #[error("first partial body chunk shorter than 512 octets at {0}")]
    ShortFirstChunk(usize),
    #[error("literal data packet: not encrypted")]
    Literal,
    #[error("unexpected packet tag {0}")]
    Unexpected(u8),
    #[error("SEIPD without any PKESK or SKESK")]
    NoEsk,
    #[error("no SEIPD packet")]
    NoSeipd,
    #[error("more than {MAX_ESK_PACKETS} ESK packets")]
    TooManyEsk,
    #[error("SEIPD version {0} is neither 1 nor 2")]
    SeipdVersion(u8),
    #[error("packet with tag {0} after the SEIPD")]
    AfterSeipd(u8),
    #[error("{0} octets of junk after the SEIPD")]
    JunkAfterSeipd(usize),
    #[error("OpenPGP parser refused packet with tag {0}")]
    Malformed(u8),
    #[error("OpenPGP parser refused the data")]
    Unparsable,
    #[error("packet readers disagree")]
    Disagree,
}

/// Checks that `data` is exactly `(PKESK | SKESK)+ SEIPD`.
pub fn check(data: &[u8]) -> Result<(), PacketError> {
    let tags = walk(data)?;
    if sequoia_tags(data)? != tags {
        return Err(PacketError::Disagree);
    }
    Ok(())
}

/// One framed packet: its tag, where its body starts and where it ends.
struct Frame {
    tag: u8,
    body_start: usize,
    end: usize,
}

/// The header walk; returns the tag sequence.
fn walk(data: &[u8]) -> Result<Vec<u8>, PacketError> {
    if data.is_empty() {
        return Err(PacketError::Empty);
    }
    let mut tags = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let frame = read_frame(data, pos)?;
        match frame.tag {
            TAG_PKESK | TAG_SKESK if tags.len() >= MAX_ESK_PACKETS => {
                return Err(PacketError::TooManyEsk);
            }
            TAG_PKESK | TAG_SKESK => {}
            TAG_SEIPD if tags.is_empty() => return Err(PacketError::NoEsk),
            TAG_SEIPD => {
                // RFC 9580 §5.13: the first body octet is the version, 1 or 2.
                let version = data.get(frame.body_start).copied();
                match version {
                    Some(1 | 2) => {}
                    Some(v) => return Err(PacketError::SeipdVersion(v)),
                    None => return Err(PacketError::Truncated(pos)),
                }
                tags.push(frame.tag);
                return after_seipd(data, frame.end).map(|()| tags);
            }
            TAG_LITERAL => return Err(PacketError::Literal),
            other => return Err(PacketError::Unexpected(other)),
        }
        tags.push(frame.tag);
        pos = frame.end;
    }
    Err(PacketError::NoSeipd)
}

/// The SEIPD must be the last packet: name whatever follows it.
fn after_seipd(data: &[u8], end: usize) -> Result<(), PacketError> {
    if end == data.len() {
        return Ok(());
    }
    match read_frame(data, end) {
        Ok(next) => Err(PacketError::AfterSeipd(next.tag)),
        Err(_) => Err(PacketError::JunkAfterSeipd(data.len() - end)),
    }
}

/// Reads the packet header at `pos` and finds the end of its body
/// (RFC 9580 §4.2).
fn read_frame(data: &[u8], pos: usize) -> Result<Frame, PacketError> {
    let ctb = *data.get(pos).ok_or(PacketError::Truncated(pos))?;
    // RFC 9580 §4.2: bit 7 is always one.
    if ctb & 0x80 == 0 {
        return Err(PacketError::NotAPacket(pos));
    }
    if ctb & 0x40 != 0 {
        new_format(data, pos, ctb & 0x3f)
    } else {
        old_format(data, pos, ctb)
    }
}

/// RFC 9580 §4.2.2 (legacy format): 4-bit tag, length type in the low bits.
fn old_format(data: &[u8], pos: usize, ctb: u8) -> Result<Frame, PacketError> {
    let tag = (ctb >> 2) & 0x0f;
    let octets = match ctb & 0x03 {
        0 => 1,
        1 => 2,
        2 => 4,
        // Indeterminate length: the packet extends to the end of the data.
        _ => {
            return Ok(Frame {
                tag,
                body_start: pos + 1,
                end: data.len(),
            });
        }
    };
    let body_start = pos + 1 + octets;
    let raw = data
        .get(pos + 1..body_start)
        .ok_or(PacketError::Truncated(pos))?;
    let len = raw
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    let end = body_start
        .checked_add(len)
        .ok_or(PacketError::Truncated(pos))?;
    if end > data.len() {
        return Err(PacketError::Truncated(pos));
    }
    Ok(Frame {
        tag,
        body_start,
        end,
    })
}

/// RFC 9580 §4.2.1 (OpenPGP format): 6-bit tag, then one length, or a chain
/// of partial body chunks closed by a definite length.
fn new_format(data: &[u8], pos: usize, tag: u8) -> Result<Frame, PacketError> {
    let mut cursor = pos + 1;
    let mut body_start = None;
    loop {
        let (len, header_len, partial) =
            body_length(data, cursor).ok_or(PacketError::Truncated(pos))?;
        if partial {
            // RFC 9580 §4.2.1.4: partial lengths only on data packets
            // (literal, compressed, SED, SEIPD, AEAD), first chunk >= 512.
            if !matches!(tag, 8 | 9 | 11 | 18 | 20) {
                return Err(PacketError::PartialNotAllowed(pos));
            }
            if body_start.is_none() && len < 512 {
                return Err(PacketError::ShortFirstChunk(pos));
            }
        }
        let chunk_start = cursor + header_len;
        body_start.get_or_insert(chunk_start);
        cursor = chunk_start
            .checked_add(len)
            .ok_or(PacketError::Truncated(pos))?;
        if cursor > data.len() {
            return Err(PacketError::Truncated(pos));
        }
        if !partial {
            let body_start = body_start.unwrap_or(chunk_start);
            return Ok(Frame {
                tag,
                body_start,
                end: cursor,
            });
        }
    }
}

/// Decodes one new-format length at `at`: (length, octets used, is partial).
fn body_length(data: &[u8], at: usize) -> Option<(usize, usize, bool)> {
    let first = usize::from(*data.get(at)?);
    match first {
        0..=191 => Some((first, 1, false)),
        192..=223 => {
            let second = usize::from(*data.get(at + 1)?);
            Some((((first - 192) << 8) + second + 192, 2, false))
        }
        224..=254 => Some((1 << (first & 0x1f), 1, true)),
        _ => {
            let raw = data.get(at + 1..at + 5)?;
            let len = raw
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            Some((len, 5, false))
        }
    }
}

/// The tag sequence as sequoia sees it; any packet it cannot parse as a
/// PKESK, SKESK or SEIPD is an error. Uses `next()`, never `recurse()`.
fn sequoia_tags(data: &[u8]) -> Result<Vec<u8>, PacketError> {
    let mut ppr = PacketParserBuilder::from_bytes(data)
        .and_then(|b| b.dearmor(Dearmor::Disabled).build())
        .map_err(|_| PacketError::Unparsable)?;
    let mut tags = Vec::new();
    while let PacketParserResult::Some(pp) = ppr {
        let tag = u8::from(pp.packet.tag());
        match &pp.packet {
            Packet::PKESK(_) | Packet::SKESK(_) | Packet::SEIP(_) => tags.push(tag),
            _ => return Err(PacketError::Malformed(tag)),
        }
        ppr = pp.next().map_err(|_| PacketError::Unparsable)?.1;
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seipd_v1(len: usize) -> Vec<u8> {
        let mut p = vec![0xc0 | TAG_SEIPD, len as u8, 1];
        p.extend(std::iter::repeat_n(0x55, len - 1));
        p
    }

    #[test]
    fn walk_reads_old_and_new_format_headers() {
        // Old format PKESK (tag 1, one-octet length 3), new format SEIPD.
        let mut data = vec![0x84, 3, 3, 0, 0];
        data.extend(seipd_v1(40));
        assert_eq!(walk(&data), Ok(vec![TAG_PKESK, TAG_SEIPD]));
    }

    #[test]
    fn walk_rejects_lone_seipd_and_lone_esk() {
        assert_eq!(walk(&seipd_v1(40)), Err(PacketError::NoEsk));
        assert_eq!(walk(&[0x84, 1, 3]), Err(PacketError::NoSeipd));
    }

    #[test]
    fn walk_rejects_partial_lengths_on_esk_and_short_first_chunk() {
        let pkesk_partial = [0xc1, 0xe9, 0, 0];
        assert_eq!(walk(&pkesk_partial), Err(PacketError::PartialNotAllowed(0)));
        let short = [0x84, 1, 3, 0xd2, 0xe0, 1, 0];
        assert_eq!(walk(&short), Err(PacketError::ShortFirstChunk(3)));
    }

    #[test]
    fn walk_names_what_follows_the_seipd() {
        let mut data = vec![0x84, 1, 3];
        data.extend(seipd_v1(40));
        data.push(0x00);
        assert_eq!(walk(&data), Err(PacketError::JunkAfterSeipd(1)));
        data.pop();
        data.extend(seipd_v1(40));
        assert_eq!(walk(&data), Err(PacketError::AfterSeipd(TAG_SEIPD)));
    }

    #[test]
    fn walk_rejects_seipd_version_3_and_huge_lengths() {
        let mut data = vec![0x84, 1, 3];
        let mut seipd = seipd_v1(40);
        seipd[2] = 3;
        data.extend(seipd);
        assert_eq!(walk(&data), Err(PacketError::SeipdVersion(3)));
        let huge = [0x84, 1, 3, 0xd2, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(walk(&huge), Err(PacketError::Truncated(3)));
        let old_huge = [0x86, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(walk(&old_huge), Err(PacketError::Truncated(0)));
    }
}
