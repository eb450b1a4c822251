//! Hostile input never panics: seeded pseudo-random bytes, random mutations
//! of real messages and packets, every truncation of valid messages, and
//! pathological MIME. `check` turns a panic in a parser into a rejection
//! for which `Rejected::is_panic` holds, so that is what these tests look for.

mod common;

use chatmail_gate::Direction;
use common::{fixture, inbound, packets_of, submit, with_packets};

/// xorshift64*: deterministic, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Flips, inserts or deletes a few octets.
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=self.below(8) {
            let at = self.below(out.len() + 1);
            match self.below(3) {
                0 if at < out.len() => out[at] = self.next() as u8,
                1 => out.insert(at, self.next() as u8),
                _ if at < out.len() => {
                    out.remove(at);
                }
                _ => {}
            }
        }
        out
    }
}

fn no_panic(input: &[u8]) {
    let recipients = ["alice@example.org".to_string()];
    for got in [submit(input, &recipients), inbound(input)] {
        assert!(
            !got.is_err_and(|r| r.is_panic()),
            "panic on input {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let armor = chatmail_gate::check_armor(input, Direction::Inbound { null_sender: false });
    assert!(!armor.is_err_and(|r| r.is_panic()));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..2000 {
        let len = rng.below(1024);
        no_panic(&rng.bytes(len));
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = Rng(0x5eed_0002);
    let seeds: Vec<Vec<u8>> = [
        "encrypted.eml",
        "symmetric.eml",
        "bounce.eml",
        "securejoin-vc.eml",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect();
    for i in 0..1500 {
        no_panic(&rng.mutate(&seeds[i % seeds.len()]));
    }
}

#[test]
fn mutated_packets_in_a_valid_envelope_never_panic() {
    // Reaches the packet walk and the OpenPGP parser with damaged data.
    let mut rng = Rng(0x5eed_0003);
    let eml = fixture("encrypted.eml");
    let data = packets_of(&eml);
    for _ in 0..1500 {
        no_panic(&with_packets(&eml, &rng.mutate(&data)));
    }
    for _ in 0..300 {
        let len = rng.below(300);
        no_panic(&with_packets(&eml, &rng.bytes(len)));
    }
}

#[test]
fn every_truncation_of_valid_messages_never_panics_nor_passes() {
    for name in ["encrypted.eml", "symmetric.eml"] {
        let raw = fixture(name);
        let armor_end = raw
            .windows(5)
            .rposition(|w| w == b"-----")
            .unwrap_or(raw.len());
        for cut in 0..raw.len() {
            no_panic(&raw[..cut]);
            if cut < armor_end {
                assert!(
                    inbound(&raw[..cut]).is_err(),
                    "{name} cut at {cut} accepted"
                );
            }
        }
    }
}

#[test]
fn every_truncation_of_the_packets_is_rejected() {
    let eml = fixture("encrypted-partial.eml");
    let data = packets_of(&eml);
    for cut in 0..data.len() {
        let got = inbound(&with_packets(&eml, &data[..cut]));
        assert!(got.is_err(), "packets cut at {cut} accepted");
    }
}

#[test]
fn pathological_mime_never_panics() {
    let mut deep = String::new();
    for i in 0..3000 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    no_panic(deep.as_bytes());
    let many_headers = "X-A: b\r\n".repeat(50_000) + "\r\nbody\r\n";
    no_panic(many_headers.as_bytes());
    let parts = "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n".repeat(20_000);
    let wide = format!("Content-Type: multipart/encrypted; boundary=b\r\n\r\n{parts}--b--\r\n");
    no_panic(wide.as_bytes());
    no_panic(b"");
    no_panic(b"\r\n\r\n");
    no_panic(&[0xff; 4096]);
}
