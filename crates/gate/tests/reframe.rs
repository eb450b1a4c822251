//! The real GnuPG packets re-framed with every legal (and some illegal)
//! header format: the gate must judge the packet sequence, not one encoder's
//! habits.

mod common;

use chatmail_gate::packets::PacketError;
use chatmail_gate::{Accepted, Rejected};
use common::{Framing, fixture, frame, inbound, packets_of, split_packets, with_packets};

const PKESK: u8 = 1;
const SEIPD: u8 = 18;

/// The (PKESK, SEIPD) bodies of the large, partial-length fixture.
fn esk_and_seipd() -> (Vec<u8>, Vec<u8>) {
    let packets = split_packets(&packets_of(&fixture("encrypted-partial.eml")));
    let [(PKESK, esk), (SEIPD, seipd)] = packets.as_slice() else {
        panic!("unexpected fixture packets");
    };
    assert!(seipd.len() > 2048, "SEIPD too small to chunk");
    (esk.clone(), seipd.clone())
}

fn verdict(esk: Framing, seipd: Framing) -> Result<Accepted, Rejected> {
    let (esk_body, seipd_body) = esk_and_seipd();
    let mut data = frame(PKESK, &esk_body, esk);
    data.extend(frame(SEIPD, &seipd_body, seipd));
    inbound(&with_packets(&fixture("encrypted-partial.eml"), &data))
}

#[test]
fn split_and_reframe_round_trips_the_fixture() {
    // Guards the helpers: re-framing with gpg's own choices is accepted.
    let got = verdict(Framing::Old(0), Framing::Partial { first: 9, rest: 9 });
    assert_eq!(got, Ok(Accepted::Encrypted));
}

#[test]
fn accepts_new_format_esk_and_seipd_in_512_octet_partial_chunks() {
    let got = verdict(Framing::New, Framing::Partial { first: 9, rest: 9 });
    assert_eq!(got, Ok(Accepted::Encrypted));
}

#[test]
fn accepts_one_octet_partial_chunks_after_the_first() {
    let got = verdict(Framing::New, Framing::Partial { first: 10, rest: 0 });
    assert_eq!(got, Ok(Accepted::Encrypted));
}

#[test]
fn accepts_definite_two_and_five_octet_seipd_lengths() {
    assert_eq!(
        verdict(Framing::Old(1), Framing::New),
        Ok(Accepted::Encrypted)
    );
    assert_eq!(
        verdict(Framing::Old(2), Framing::New5),
        Ok(Accepted::Encrypted)
    );
    assert_eq!(
        verdict(Framing::New5, Framing::New5),
        Ok(Accepted::Encrypted)
    );
}

#[test]
fn rejects_partial_length_on_the_pkesk() {
    let got = verdict(Framing::Partial { first: 5, rest: 5 }, Framing::New);
    assert!(
        matches!(
            got,
            Err(Rejected::Packets(PacketError::PartialNotAllowed(0)))
        ),
        "{got:?}"
    );
}

#[test]
fn rejects_a_first_partial_chunk_below_512_octets() {
    let got = verdict(Framing::New, Framing::Partial { first: 8, rest: 9 });
    assert!(
        matches!(got, Err(Rejected::Packets(PacketError::ShortFirstChunk(_)))),
        "{got:?}"
    );
}

#[test]
fn rejects_an_indeterminate_length_pkesk_that_swallows_the_seipd() {
    let got = verdict(Framing::Old(3), Framing::New);
    assert_eq!(got, Err(Rejected::Packets(PacketError::NoSeipd)));
}

#[test]
fn rejects_a_marker_packet_before_the_esk() {
    let (esk, seipd) = esk_and_seipd();
    let mut data = frame(10, b"PGP", Framing::New);
    data.extend(frame(PKESK, &esk, Framing::New));
    data.extend(frame(SEIPD, &seipd, Framing::New));
    let got = inbound(&with_packets(&fixture("encrypted.eml"), &data));
    assert_eq!(got, Err(Rejected::Packets(PacketError::Unexpected(10))));
}

#[test]
fn rejects_a_padding_packet_after_the_seipd() {
    let (esk, seipd) = esk_and_seipd();
    let mut data = frame(PKESK, &esk, Framing::New);
    data.extend(frame(SEIPD, &seipd, Framing::New));
    data.extend(frame(21, &[0; 16], Framing::New));
    let got = inbound(&with_packets(&fixture("encrypted.eml"), &data));
    assert_eq!(got, Err(Rejected::Packets(PacketError::AfterSeipd(21))));
}

#[test]
fn rejects_a_garbled_pkesk_that_frames_correctly() {
    // The header walk is satisfied; the OpenPGP parser must refuse the body.
    let (mut esk, seipd) = esk_and_seipd();
    esk[0] = 99; // PKESK version
    let mut data = frame(PKESK, &esk, Framing::New);
    data.extend(frame(SEIPD, &seipd, Framing::New));
    let got = inbound(&with_packets(&fixture("encrypted.eml"), &data));
    assert!(
        matches!(
            got,
            Err(Rejected::Packets(
                PacketError::Malformed(_) | PacketError::Unparsable
            ))
        ),
        "{got:?}"
    );
}

#[test]
fn accepts_many_recipients() {
    let (esk, seipd) = esk_and_seipd();
    let mut data = Vec::new();
    for _ in 0..50 {
        data.extend(frame(PKESK, &esk, Framing::Old(0)));
    }
    data.extend(frame(SEIPD, &seipd, Framing::New));
    let got = inbound(&with_packets(&fixture("encrypted.eml"), &data));
    assert_eq!(got, Ok(Accepted::Encrypted));
}

#[test]
fn large_messages_are_checked_in_linear_time() {
    // 16 MiB of SEIPD body in 64 KiB partial chunks: must finish quickly
    // even in a debug build.
    let (esk, _) = esk_and_seipd();
    let mut body = vec![0x5a_u8; 16 << 20];
    body[0] = 1;
    let mut data = frame(PKESK, &esk, Framing::New);
    data.extend(frame(
        SEIPD,
        &body,
        Framing::Partial {
            first: 16,
            rest: 16,
        },
    ));
    let eml = with_packets(&fixture("encrypted.eml"), &data);
    let started = std::time::Instant::now();
    assert_eq!(inbound(&eml), Ok(Accepted::Encrypted));
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
