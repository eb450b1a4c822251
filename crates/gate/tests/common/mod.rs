//! Test helpers: fixture loading and re-framing of OpenPGP packets, so the
//! same real (GnuPG-made) packets can be tried with every header format.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chatmail_gate::{Accepted, Direction, Rejected};

pub const ALICE: &str = "alice@example.org";
const BEGIN: &str = "-----BEGIN PGP MESSAGE-----";
const END: &str = "-----END PGP MESSAGE-----";

/// The fixture directory. `cargo test` sets `CARGO_MANIFEST_DIR` when it
/// runs a test, which stays right when a shared target directory holds a
/// binary built from another checkout; the compile-time value is the
/// fallback for running the binary by hand.
pub fn testdata() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("testdata")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = testdata().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn submit(message: &[u8], recipients: &[String]) -> Result<Accepted, Rejected> {
    chatmail_gate::check(
        message,
        Direction::Submission {
            sender: ALICE,
            recipients,
        },
    )
}

/// Inbound from the null envelope sender, the only one bounces may use.
pub fn inbound(message: &[u8]) -> Result<Accepted, Rejected> {
    chatmail_gate::check(message, Direction::Inbound { null_sender: true })
}

/// Inbound from a named envelope sender.
pub fn inbound_from_sender(message: &[u8]) -> Result<Accepted, Rejected> {
    chatmail_gate::check(message, Direction::Inbound { null_sender: false })
}

/// The message split around its armor block: (before, armor, after).
pub fn split_armor(eml: &[u8]) -> (String, String, String) {
    let text = String::from_utf8(eml.to_vec()).expect("fixture is UTF-8");
    let start = text.find(BEGIN).expect("armor begin");
    let end = text.find(END).expect("armor end") + END.len();
    (
        text[..start].into(),
        text[start..end].into(),
        text[end..].into(),
    )
}

/// The binary OpenPGP data inside a fixture's armor.
pub fn packets_of(eml: &[u8]) -> Vec<u8> {
    let (_, armor, _) = split_armor(eml);
    let b64: String = armor
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('=') && !l.starts_with("-----") && !l.contains(':')
        })
        .collect();
    STANDARD.decode(b64).expect("fixture base64")
}

/// The fixture with its armor replaced by an armor of `data` (CRLF, no CRC).
pub fn with_packets(eml: &[u8], data: &[u8]) -> Vec<u8> {
    let (before, _, after) = split_armor(eml);
    let b64 = STANDARD.encode(data);
    let mut armor = format!("{BEGIN}\r\n\r\n");
    for chunk in b64.as_bytes().chunks(64) {
        armor.push_str(std::str::from_utf8(chunk).expect("ascii"));
        armor.push_str("\r\n");
    }
    armor.push_str(END);
    format!("{before}{armor}{after}").into_bytes()
}

/// Splits binary OpenPGP data into (tag, body); joins partial chunks.
pub fn split_packets(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(&ctb) = data.first() {
        assert!(ctb & 0x80 != 0, "not a packet");
        if ctb & 0x40 == 0 {
            let tag = (ctb >> 2) & 0x0f;
            let n = [1, 2, 4][usize::from(ctb & 3)];
            let len = data[1..=n]
                .iter()
                .fold(0usize, |a, &b| a << 8 | usize::from(b));
            out.push((tag, data[1 + n..1 + n + len].to_vec()));
            data = &data[1 + n + len..];
            continue;
        }
        let tag = ctb & 0x3f;
        let mut body = Vec::new();
        let mut rest = &data[1..];
        loop {
            let o = usize::from(rest[0]);
            let (len, hl, partial) = match o {
                0..=191 => (o, 1, false),
                192..=223 => (((o - 192) << 8) + usize::from(rest[1]) + 192, 2, false),
                224..=254 => (1 << (o & 0x1f), 1, true),
                _ => (
                    rest[1..5]
                        .iter()
                        .fold(0usize, |a, &b| a << 8 | usize::from(b)),
                    5,
                    false,
                ),
            };
            body.extend_from_slice(&rest[hl..hl + len]);
            rest = &rest[hl + len..];
            if !partial {
                break;
            }
        }
        out.push((tag, body));
        data = rest;
    }
    out
}

/// How to write a packet header.
#[derive(Clone, Copy)]
pub enum Framing {
    /// Legacy format with length type 0, 1, 2 (or 3: indeterminate).
    Old(u8),
    /// OpenPGP format, shortest definite length.
    New,
    /// OpenPGP format, five-octet length.
    New5,
    /// OpenPGP format, partial chunks of 2^first, then 2^rest octets.
    Partial { first: u8, rest: u8 },
}

pub fn frame(tag: u8, body: &[u8], framing: Framing) -> Vec<u8> {
    match framing {
        Framing::Old(lt) => {
            let mut out = vec![0x80 | tag << 2 | lt];
            let len = body.len() as u32;
            match lt {
                0 => out.push(len as u8),
                1 => out.extend((len as u16).to_be_bytes()),
                2 => out.extend(len.to_be_bytes()),
                _ => {}
            }
            out.extend(body);
            out
        }
        Framing::New => {
            let mut out = vec![0xc0 | tag];
            out.extend(definite(body.len()));
            out.extend(body);
            out
        }
        Framing::New5 => {
            let mut out = vec![0xc0 | tag, 0xff];
            out.extend((body.len() as u32).to_be_bytes());
            out.extend(body);
            out
        }
        Framing::Partial { first, rest } => {
            let mut out = vec![0xc0 | tag];
            let mut left = body;
            let mut exp = first;
            while left.len() > 1 << exp {
                out.push(224 + exp);
                out.extend(&left[..1 << exp]);
                left = &left[1 << exp..];
                exp = rest;
            }
            out.extend(definite(left.len()));
            out.extend(left);
            out
        }
    }
}

fn definite(len: usize) -> Vec<u8> {
    match len {
        0..=191 => vec![len as u8],
        192..=8383 => {
            let l = len - 192;
            vec![(l >> 8) as u8 + 192, l as u8]
        }
        _ => {
            let mut v = vec![0xff];
            v.extend((len as u32).to_be_bytes());
            v
        }
    }
}
