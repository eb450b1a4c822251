//! One SMTP command line, as a client on port 25, 465 or 587 sends it.
//! Besides not panicking: every address a parsed command carries is one
//! the relay would accept as a mailbox (or the null sender), and a hello
//! name is printable ASCII.
#![no_main]

use chatmail_smtp::fuzzing::{Command, is_address, parse_command};

libfuzzer_sys::fuzz_target!(|line: &[u8]| {
    let Ok(command) = parse_command(line) else {
        return;
    };
    match command {
        Command::Mail(mail) => assert!(mail.address.is_empty() || is_address(&mail.address)),
        Command::Rcpt(address) => assert!(is_address(&address)),
        Command::Ehlo(name) | Command::Helo(name) => {
            assert!(!name.is_empty() && name.len() <= 255);
            assert!(name.bytes().all(|b| b.is_ascii_graphic()));
        }
        _ => {}
    }
});
