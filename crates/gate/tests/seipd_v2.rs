//! RFC 9580 messages (PKESK v6 / SKESK v6 + SEIPD v2), produced by sequoia
//! here because GnuPG 2.2 cannot write them.

mod common;

use std::io::Write as _;

use chatmail_gate::packets::PacketError;
use chatmail_gate::{Accepted, Rejected};
use common::{fixture, inbound, split_packets, with_packets};
use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::stream::{Encryptor, LiteralWriter, Message};
use sequoia_openpgp::types::AEADAlgorithm;
use sequoia_openpgp::{Profile, Result};

fn finish(message: Message<'_>) -> Result<()> {
    let mut literal = LiteralWriter::new(message).build()?;
    literal.write_all(b"Hello channel!")?;
    literal.finalize()
}

fn symmetric_v2() -> Result<Vec<u8>> {
    let mut sink = Vec::new();
    let message = Encryptor::with_passwords(Message::new(&mut sink), Some("secret"))
        .aead_algo(AEADAlgorithm::default())
        .build()?;
    finish(message)?;
    Ok(sink)
}

fn public_key_v2() -> Result<Vec<u8>> {
    let (cert, _) = CertBuilder::general_purpose(Some("bob@example.net"))
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_profile(Profile::RFC9580)?
        .generate()?;
    let policy = StandardPolicy::new();
    let recipients = cert
        .keys()
        .with_policy(&policy, None)
        .supported()
        .for_transport_encryption();
    let mut sink = Vec::new();
    finish(Encryptor::for_recipients(Message::new(&mut sink), recipients).build()?)?;
    Ok(sink)
}

fn assert_v2_accepted(data: &[u8], esk_tag: u8) {
    let packets = split_packets(data);
    let tags: Vec<u8> = packets.iter().map(|p| p.0).collect();
    assert_eq!(tags, [esk_tag, 18]);
    assert_eq!(packets[1].1.first(), Some(&2), "SEIPD version");
    let eml = with_packets(&fixture("encrypted.eml"), data);
    assert_eq!(inbound(&eml), Ok(Accepted::Encrypted));
}

#[test]
fn accepts_skesk_v6_with_seipd_v2() -> Result<()> {
    assert_v2_accepted(&symmetric_v2()?, 3);
    Ok(())
}

#[test]
fn accepts_pkesk_v6_with_seipd_v2() -> Result<()> {
    assert_v2_accepted(&public_key_v2()?, 1);
    Ok(())
}

#[test]
fn rejects_seipd_v2_with_trailing_octet() -> Result<()> {
    let mut data = symmetric_v2()?;
    data.push(0);
    let eml = with_packets(&fixture("encrypted.eml"), &data);
    let got = inbound(&eml);
    assert!(
        matches!(got, Err(Rejected::Packets(PacketError::JunkAfterSeipd(1)))),
        "{got:?}"
    );
    Ok(())
}
