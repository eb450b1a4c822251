//! DKIM verification of what a peer relay sends, against a published
//! Ed25519 key of `example.org`. With the first byte even, the message is
//! first signed with that key, so that the fuzzer explores valid
//! signatures as well as broken ones. Besides not panicking: a message in
//! the form the relay signs (a header section of `name: value` fields,
//! CRLF line endings only: what submission's DATA decoder lets through)
//! verifies after the relay signed it. Arbitrary bytes need not: the
//! signer and the verifier may read a header section that is not one
//! differently (found by this target: a binary first line with a colon,
//! bare line feeds, a first line that continues nothing).
#![no_main]

use std::sync::OnceLock;

use chatmail_dkim::{DkimKey, StaticTxt, Verifier};

const DOMAIN: &str = "example.org";

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410 §7).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

struct Fixture {
    key: DkimKey,
    txt: StaticTxt,
    verifier: Verifier,
    runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut der = PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&[7; 32]);
        let key = DkimKey::from_pkcs8_der("fuzz", &der).expect("a fixed key");
        let mut txt = StaticTxt::new();
        txt.insert_key(&key, DOMAIN);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        Fixture {
            key,
            txt,
            verifier: Verifier::new(),
            runtime,
        }
    })
}

/// CRLF line endings only, and a header section (up to the first empty
/// line, which must be there) of fields whose names are printable ASCII
/// without `:` and continuation lines starting with a space or a tab, the
/// first line being a field (a continuation with nothing to continue was
/// found by this target: the signer and the verifier read it differently).
fn in_wire_form(message: &[u8]) -> bool {
    let bare = message.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || message[i - 1] != b'\r',
        _ => false,
    });
    if bare {
        return false;
    }
    let Some(end) = message.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    message[..end].split(|&b| b == b'\n').enumerate().all(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if i > 0 && (line.starts_with(b" ") || line.starts_with(b"\t")) {
            return line.iter().all(|&b| b >= 0x20 || b == b'\t');
        }
        match line.iter().position(|&b| b == b':') {
            Some(colon) if colon > 0 => {
                line[..colon].iter().all(|b| b.is_ascii_graphic())
                    && line[colon + 1..].iter().all(|&b| b >= 0x20 || b == b'\t')
            }
            _ => false,
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, message)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let verify = |message: &[u8]| {
        f.runtime
            .block_on(f.verifier.verify(message, DOMAIN, &f.txt))
    };
    if mode % 2 == 0 {
        let Ok(signed) = f.key.sign(message, DOMAIN) else {
            return;
        };
        if !in_wire_form(message) {
            let _ = verify(&signed);
            return;
        }
        let verified = verify(&signed);
        assert!(verified.is_ok(), "our own signature failed: {verified:?}");
    } else {
        let _ = verify(message);
    }
});
