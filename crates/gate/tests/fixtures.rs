//! Table test over the `.eml` fixtures (made by `testdata/make-fixtures.sh`),
//! in both directions. Rejections are matched on the rule that failed, so
//! a fixture cannot pass for the wrong reason.

mod common;

use chatmail_gate::Accepted::{self, AutocryptSetup, Bounce, Encrypted, SecureJoin};
use chatmail_gate::Rejected;
use chatmail_gate::armor::ArmorError;
use chatmail_gate::exceptions::ExceptionError;
use chatmail_gate::mime::MimeError;
use chatmail_gate::packets::PacketError;
use common::{ALICE, fixture, inbound, inbound_from_sender, submit};

/// Expected outcome: accepted as, or rejected with a cause matching the
/// pattern (kept as text for the failure message).
#[derive(Clone, Copy)]
enum Want {
    Accept(Accepted),
    Reject(&'static str, fn(&Rejected) -> bool),
}
use Want::Accept;

/// `Want::Reject` for a pattern of [`Rejected`].
macro_rules! reject {
    ($pattern:pat) => {
        Want::Reject(stringify!($pattern), |r| matches!(r, $pattern))
    };
}

const NOT_ENCRYPTED: Want = reject!(Rejected::Mime(MimeError::NotEncrypted));

/// (fixture, submission outcome, inbound outcome)
const TABLE: &[(&str, Want, Want)] = &[
    ("encrypted.eml", Accept(Encrypted), Accept(Encrypted)),
    (
        "encrypted-partial.eml",
        Accept(Encrypted),
        Accept(Encrypted),
    ),
    ("encrypted-no-crc.eml", Accept(Encrypted), Accept(Encrypted)),
    ("symmetric.eml", Accept(Encrypted), Accept(Encrypted)),
    ("fake-encrypted.eml", NOT_ENCRYPTED, NOT_ENCRYPTED),
    (
        "literal.eml",
        reject!(Rejected::Packets(PacketError::Literal)),
        reject!(Rejected::Packets(PacketError::Literal)),
    ),
    ("plain.eml", NOT_ENCRYPTED, NOT_ENCRYPTED),
    ("mdn.eml", NOT_ENCRYPTED, NOT_ENCRYPTED),
    ("autocrypt-setup.eml", Accept(AutocryptSetup), NOT_ENCRYPTED),
    ("bounce.eml", NOT_ENCRYPTED, Accept(Bounce)),
    ("securejoin-vc.eml", Accept(SecureJoin), Accept(SecureJoin)),
    ("securejoin-vg.eml", Accept(SecureJoin), Accept(SecureJoin)),
    (
        "securejoin-spam.eml",
        reject!(Rejected::Exception(ExceptionError::SecureJoinBody)),
        reject!(Rejected::Exception(ExceptionError::SecureJoinBody)),
    ),
    (
        "version-header.eml",
        reject!(Rejected::Armor(ArmorError::VersionHeader)),
        Accept(Encrypted),
    ),
    (
        "trailing-junk.eml",
        reject!(Rejected::Packets(PacketError::JunkAfterSeipd(_))),
        reject!(Rejected::Packets(PacketError::JunkAfterSeipd(_))),
    ),
    (
        "two-seipd.eml",
        reject!(Rejected::Packets(PacketError::AfterSeipd(18))),
        reject!(Rejected::Packets(PacketError::AfterSeipd(18))),
    ),
    (
        "lone-seipd.eml",
        reject!(Rejected::Packets(PacketError::NoEsk)),
        reject!(Rejected::Packets(PacketError::NoEsk)),
    ),
    (
        "three-parts.eml",
        reject!(Rejected::Mime(MimeError::PartCount(3))),
        reject!(Rejected::Mime(MimeError::PartCount(3))),
    ),
    (
        "swapped-parts.eml",
        reject!(Rejected::Mime(MimeError::WrongType(1))),
        reject!(Rejected::Mime(MimeError::WrongType(1))),
    ),
    (
        "invalid-base64.eml",
        reject!(Rejected::Armor(ArmorError::InvalidBase64)),
        reject!(Rejected::Armor(ArmorError::InvalidBase64)),
    ),
    (
        "truncated-seipd.eml",
        reject!(Rejected::Packets(PacketError::Truncated(_))),
        reject!(Rejected::Packets(PacketError::Truncated(_))),
    ),
];

fn assert_outcome(name: &str, direction: &str, got: Result<Accepted, Rejected>, want: Want) {
    match (want, &got) {
        (Accept(a), Ok(b)) if a == *b => {}
        (Want::Reject(_, matches), Err(r)) if matches(r) => {}
        (Accept(a), _) => panic!("{name} ({direction}): want Ok({a:?}), got {got:?}"),
        (Want::Reject(pattern, _), _) => {
            panic!("{name} ({direction}): want Err({pattern}), got {got:?}")
        }
    }
}

#[test]
fn every_fixture_gets_the_expected_verdict_in_both_directions() {
    for &(name, on_submit, on_inbound) in TABLE {
        let raw = fixture(name);
        // The Autocrypt Setup Message is only ever sent to oneself.
        let to = if name.starts_with("autocrypt") {
            ALICE
        } else {
            "bob@example.net"
        };
        assert_outcome(
            name,
            "submission",
            submit(&raw, &[to.to_string()]),
            on_submit,
        );
        assert_outcome(name, "inbound", inbound(&raw), on_inbound);
    }
}

#[test]
fn every_fixture_file_is_in_the_table_and_uses_crlf() {
    let dir = common::testdata();
    for entry in std::fs::read_dir(dir).expect("testdata") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".eml") {
            continue;
        }
        assert!(
            TABLE.iter().any(|row| row.0 == name),
            "{name} missing from TABLE"
        );
        let raw = fixture(&name);
        let bare_lf = raw
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'));
        assert!(!bare_lf, "{name} has a bare LF");
    }
}

#[test]
fn autocrypt_setup_message_to_someone_else_is_rejected() {
    let raw = fixture("autocrypt-setup.eml");
    assert!(submit(&raw, &["bob@example.net".to_string()]).is_err());
    assert!(submit(&raw, &[ALICE.to_string(), ALICE.to_string()]).is_err());
    assert_eq!(
        submit(&raw, &["Alice@Example.ORG".to_string()]),
        Ok(AutocryptSetup)
    );
}

#[test]
fn autocrypt_setup_message_needs_its_subject() {
    let raw = String::from_utf8(fixture("autocrypt-setup.eml")).expect("utf-8");
    let renamed = raw.replace("Subject: Autocrypt Setup Message", "Subject: Hello");
    assert!(submit(renamed.as_bytes(), &[ALICE.to_string()]).is_err());
}

#[test]
fn bounce_needs_mailer_daemon_and_auto_submitted() {
    let raw = String::from_utf8(fixture("bounce.eml")).expect("utf-8");
    let human = raw.replace(
        "From: <MAILER-DAEMON@example.net>",
        "From: <carol@example.net>",
    );
    assert!(inbound(human.as_bytes()).is_err());
    let manual = raw.replace("Auto-Submitted: auto-replied", "Auto-Submitted: no");
    assert!(inbound(manual.as_bytes()).is_err());
    let unmarked = raw.replace("Auto-Submitted: auto-replied\r\n", "");
    assert!(inbound(unmarked.as_bytes()).is_err());
}

#[test]
fn bounce_from_a_named_envelope_sender_is_rejected() {
    let raw = fixture("bounce.eml");
    let got = inbound_from_sender(&raw);
    assert_eq!(got, Err(Rejected::Mime(MimeError::NotEncrypted)));
    assert_eq!(
        inbound_from_sender(&fixture("encrypted.eml")),
        Ok(Encrypted)
    );
}

/// `header` inserted before the first header of `fixture`.
fn with_header(fixture_name: &str, header: &str) -> Vec<u8> {
    [header.as_bytes(), &fixture(fixture_name)].concat()
}

#[test]
fn a_second_content_type_is_rejected_whichever_comes_first() {
    // Regression: `text/plain` first, `multipart/encrypted` second was
    // accepted although a reader that takes the first sees cleartext.
    let twice = with_header("encrypted.eml", "Content-Type: text/plain\r\n");
    let got = submit(&twice, &["bob@example.net".to_string()]);
    assert_eq!(
        got,
        Err(Rejected::RepeatedHeader {
            name: "Content-Type"
        })
    );
    assert!(inbound(&twice).is_err());
    let raw = String::from_utf8(fixture("encrypted.eml")).expect("utf-8");
    let after = raw.replacen(
        "MIME-Version: 1.0\r\n",
        "MIME-Version: 1.0\r\ncontent-type : text/plain\r\n",
        1,
    );
    assert!(
        inbound(after.as_bytes()).is_err(),
        "case and blanks do not hide it"
    );
}

#[test]
fn repeated_mime_headers_in_a_sub_part_are_rejected() {
    let raw = String::from_utf8(fixture("encrypted.eml")).expect("utf-8");
    let inner = raw.replacen(
        "Content-Type: application/pgp-encrypted\r\n",
        "Content-Type: application/pgp-encrypted\r\nContent-Type: text/plain\r\n",
        1,
    );
    assert_ne!(inner, raw);
    assert!(inbound(inner.as_bytes()).is_err());
    for header in [
        "MIME-Version: 1.0\r\n",
        "Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\n",
    ] {
        let got = inbound(&with_header("encrypted.eml", header));
        assert!(
            matches!(got, Err(Rejected::RepeatedHeader { .. })),
            "{header}: {got:?}"
        );
    }
}

#[test]
fn securejoin_body_for_the_other_step_is_rejected() {
    let raw = String::from_utf8(fixture("securejoin-vc.eml")).expect("utf-8");
    let crossed = raw.replace(
        "\r\nSecure-Join: vc-request\r\n\r\n--BOUNDARY--",
        "\r\nsecure-join: vg-request\r\n\r\n--BOUNDARY--",
    );
    assert_ne!(crossed, raw, "replacement must hit the body");
    assert!(submit(crossed.as_bytes(), &["bob@example.net".to_string()]).is_err());
}

#[test]
fn securejoin_with_an_extra_attachment_is_rejected() {
    let raw = String::from_utf8(fixture("securejoin-vc.eml")).expect("utf-8");
    let extra = raw.replace(
        "--BOUNDARY--",
        "--BOUNDARY\r\nContent-Type: application/octet-stream\r\n\r\nAAAA\r\n--BOUNDARY--",
    );
    assert!(inbound(extra.as_bytes()).is_err());
}

#[test]
fn oversized_input_is_rejected_without_parsing() {
    let big = vec![b'a'; chatmail_gate::MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        inbound(&big),
        Err(Rejected::TooLarge {
            len: chatmail_gate::MAX_MESSAGE_SIZE + 1
        })
    );
}
