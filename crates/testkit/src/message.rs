//! Test messages that pass the encryption gate without real keys: a PKESK
//! packet and a SEIPD packet of random bytes, armored and wrapped in
//! `multipart/encrypted` (RFC 3156). The relay never decrypts, so the shape
//! is all that matters.

use base64::Engine;
use rand::RngCore;

/// An OpenPGP message: PKESK (v3, RSA) then SEIPD (v1) with `size` random
/// bytes, new-format packet headers (RFC 9580 §4.2).
pub fn pgp_packets(size: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    let mut pkesk = vec![3u8];
    let mut key_id = [0u8; 8];
    rng.fill_bytes(&mut key_id);
    pkesk.extend_from_slice(&key_id);
    pkesk.push(1); // RSA
    let mut mpi = [0u8; 256];
    rng.fill_bytes(&mut mpi);
    mpi[0] |= 0x80;
    pkesk.extend_from_slice(&2048u16.to_be_bytes());
    pkesk.extend_from_slice(&mpi);
    let mut seipd = vec![1u8];
    let mut data = vec![0u8; size.max(32)];
    rng.fill_bytes(&mut data);
    seipd.extend_from_slice(&data);
    let mut out = packet(1, &pkesk);
    out.extend(packet(18, &seipd));
    out
}

fn packet(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xC0 | tag, 0xFF];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// ASCII armor of an OpenPGP message (RFC 9580 §6.2), without CRC.
pub fn armor(packets: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(packets);
    let mut out = String::from("-----BEGIN PGP MESSAGE-----\r\n\r\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push_str("\r\n");
    }
    out.push_str("-----END PGP MESSAGE-----\r\n");
    out
}

/// A complete encrypted-shaped message of roughly `size` bytes.
pub fn encrypted(from: &str, to: &str, size: usize) -> Vec<u8> {
    let payload = size.saturating_sub(900) * 3 / 4;
    let message_id = rand::rng().next_u64();
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: [...]\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
         Message-ID: <{message_id:016x}@testkit>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n\
         \tboundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n\
         {}\r\n--b1--\r\n",
        armor(&pgp_packets(payload))
    )
    .into_bytes()
}

/// A plaintext message, which the gate must refuse.
pub fn plaintext(from: &str, to: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: hi\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
         Message-ID: <plain@testkit>\r\n\r\nHello in the clear.\r\n"
    )
    .into_bytes()
}

/// The `Message-ID` header value of a message made here.
pub fn message_id(message: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
    Some(line["message-id:".len()..].trim().to_owned())
}
