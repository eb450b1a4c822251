//! Attacks on the running relay, each one measured: memory (VmRSS and
//! VmHWM of the relay process), relay CPU time, and the latency of a
//! normal client meanwhile, against a bound each test states. The table
//! of attacks, bounds and figures is in `docs/reliability.md`; every test
//! prints its figures on one line starting with `attack`.
//!
//! Tests run one at a time (`common::SERIAL`). `MADMAIL_ATTACK_BINARY`
//! points them at another build (with `MADMAIL_ATTACK_BASELINE` set for a
//! build that predates the bounds' settings) to measure it the same way.

mod common;
mod floods;
mod gate;
mod http2;
mod imap;
mod input;
mod memory;
mod rates;
mod slots;
