//! What an IMAP client sends: lines, synchronizing literals and the
//! command grammar (imap-codec), through the relay's framer exactly as a
//! session reads it, before and after login. The first byte picks the
//! state. Besides not panicking: the framer never hangs on input that has
//! ended, and every command it hands on was whole and within its bounds.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use chatmail_imap::framing::{Bounds, FrameError, Framer, Incoming, LiteralBudget};
use chatmail_limits::Spools;

/// One runtime for every input: building one per input would dominate.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn budget() -> &'static LiteralBudget {
    static BUDGET: OnceLock<LiteralBudget> = OnceLock::new();
    BUDGET.get_or_init(|| {
        let dir = std::env::temp_dir().join("madmail-fuzz-spool");
        LiteralBudget::new(Spools::new(dir, 64 << 20, 64 << 20, 1 << 20), None)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&state, input)) = data.split_first() else {
        return;
    };
    let bounds = if state & 1 == 0 {
        Bounds::PRE_LOGIN
    } else {
        Bounds::authenticated(1 << 20)
    };
    runtime().block_on(async {
        // The client's bytes, then EOF; the relay's replies are dropped.
        let mut stream = tokio::io::join(input, tokio::io::sink());
        let mut framer = Framer::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        for _ in 0..=input.len() {
            let read = framer.read_command(&mut stream, &bounds, deadline, budget());
            let read = tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect("the framer hung on input that has ended");
            match read {
                Ok(Incoming::Command(command)) => {
                    assert!(!command.tag.as_ref().is_empty());
                }
                Ok(_) => {}
                Err(FrameError::Closed | FrameError::LineTooLong | FrameError::NonSyncLiteral) => {
                    return;
                }
                Err(e) => panic!("unexpected framing error: {e}"),
            }
        }
        panic!("more commands than input bytes");
    });
});
