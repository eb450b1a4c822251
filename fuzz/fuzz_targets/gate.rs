//! The encryption gate: a whole message (MIME, the armor inside it and
//! the OpenPGP packets inside that), the same bytes as a bare armor, and
//! the `From:` reader the SMTP and inbound paths use on their own. The
//! first byte picks the direction. Besides not panicking:
//! - a message accepted as encrypted says `multipart/encrypted`;
//! - a bounce is accepted only from the null sender;
//! - a panic inside mail-parser while the gate checks a message (found by
//!   this target: "Invalid part ID, could not find multipart") is caught
//!   by the gate and refuses the message; any other panic is a finding.
#![no_main]

use std::cell::Cell;
use std::sync::Once;

use chatmail_gate::{Accepted, Direction, check, check_armor, headers};

thread_local! {
    /// Inside `check`, whose `catch_unwind` takes third-party panics.
    static IN_CHECK: Cell<bool> = const { Cell::new(false) };
    /// A third-party panic happened inside `check`.
    static CAUGHT: Cell<bool> = const { Cell::new(false) };
}

/// libFuzzer's hook aborts on every panic, even one the gate catches;
/// this one lets mail-parser's panics inside `check` unwind to the gate.
fn let_the_gate_catch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let third_party = info
                .location()
                .is_some_and(|l| l.file().contains("/mail-parser-"));
            if third_party && IN_CHECK.get() {
                CAUGHT.set(true);
                return;
            }
            abort(info);
        }));
    });
}

fn mentions(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let_the_gate_catch();
    let Some((&pick, message)) = data.split_first() else {
        return;
    };
    let recipients = ["bob000001@example.org".to_owned()];
    let direction = match pick % 3 {
        0 => Direction::Submission {
            sender: "alice0001@example.org",
            recipients: &recipients,
        },
        1 => Direction::Inbound { null_sender: false },
        _ => Direction::Inbound { null_sender: true },
    };
    IN_CHECK.set(true);
    CAUGHT.set(false);
    let checked = check(message, direction);
    IN_CHECK.set(false);
    if CAUGHT.get() {
        assert!(checked.is_err(), "a parser panic let the message through");
    }
    match checked {
        Ok(Accepted::Encrypted) => assert!(mentions(message, b"multipart/encrypted")),
        Ok(Accepted::Bounce) => assert_eq!(pick % 3, 2),
        Ok(_) | Err(_) => {}
    }
    IN_CHECK.set(true);
    let _ = check_armor(message, direction);
    IN_CHECK.set(false);
    let _ = headers::single_from(message);
});
