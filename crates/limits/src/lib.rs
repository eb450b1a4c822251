//! chatmail-limits: the resource bounds every listener shares, so that no
//! unauthenticated client can take more than its share of memory, disk,
//! connection slots or rate.
//!
//! - [`client`]: who counts as one client: an IPv4 address, or an IPv6 /64
//!   (one host usually owns a whole /64), IPv4-mapped IPv6 as IPv4;
//! - [`slots`]: connection slots per listener, in total and per client;
//!   when the pool is full, the connection that has waited longest for a
//!   client that never authenticated is evicted to make room;
//! - [`rate`]: GCRA rate limits per key (account creation, recipient
//!   probing) with a bounded table;
//! - [`budget`]: bytes in flight, in total and per client;
//! - [`spool`]: message bodies as they arrive: in memory while the budget
//!   allows, then in an unlinked file, under per-client and global bounds
//!   for both; a finished body is loaded under the memory budget.
//!
//! Invariants: every table is bounded; no lock is held across `.await`; a
//! poisoned lock is taken over (counters stay consistent because every
//! update is a single step); nothing here logs.

pub mod budget;
pub mod client;
pub mod rate;
pub mod slots;
pub mod spool;

pub use budget::{Budget, Reservation};
pub use client::ClientKey;
pub use rate::Gcra;
pub use slots::{Busy, Slot, Slots};
pub use spool::{Body, Spool, SpoolError, Spools};

/// Takes a lock even when another thread panicked while holding it: every
/// critical section here leaves the data consistent at each step.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
