//! A small delay for addresses that keep failing to log in.
//!
//! Flow: after each refused login the address's consecutive-failure count
//! goes up; from [`THRESHOLD`] failures on, the refusal is answered only
//! after a delay of one [`STEP`] per failure beyond the threshold, at most
//! [`MAX_DELAY`]. A successful login clears the count.
//!
//! Invariants:
//! - keys are keyed hashes of the address (per-process random key), never the
//!   address itself;
//! - the delay is an async sleep of the failing login only: other logins,
//!   also of the same address, are never blocked by it;
//! - counts expire after [`FORGET_AFTER`] without a failure; the map never
//!   exceeds [`CAPACITY`] entries.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures answered without delay.
pub(crate) const THRESHOLD: u32 = 3;
/// Delay added per failure beyond the threshold.
pub(crate) const STEP: Duration = Duration::from_secs(1);
/// The longest delay.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(4);
/// A count is forgotten after this long without a failure.
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most addresses tracked at once.
pub(crate) const CAPACITY: usize = 8192;

/// Consecutive failures per address.
pub(crate) struct Failures {
    /// Keyed hasher: the map's keys reveal nothing about the addresses.
    hasher: RandomState,
    entries: Mutex<HashMap<u64, (u32, Instant)>>,
}

impl Failures {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failure of `address` and returns how long to delay the
    /// refusal.
    pub(crate) fn failed(&self, address: &str) -> Duration {
        let key = self.hasher.hash_one(address);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
            if entries.len() >= CAPACITY {
                // Still full of fresh entries: start over rather than grow.
                entries.clear();
            }
        }
        let entry = entries.entry(key).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
        delay_for(entry.0)
    }

    /// Clears the count of `address` after a successful login.
    pub(crate) fn succeeded(&self, address: &str) {
        let key = self.hasher.hash_one(address);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// The delay after `failures` consecutive failures.
fn delay_for(failures: u32) -> Duration {
    let beyond = failures.saturating_sub(THRESHOLD);
    STEP.saturating_mul(beyond).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_only_after_the_threshold_and_at_most_the_maximum() {
        let failures = Failures::new();
        for _ in 0..THRESHOLD {
            assert_eq!(failures.failed("a@x"), Duration::ZERO);
        }
        assert_eq!(failures.failed("a@x"), STEP);
        assert_eq!(failures.failed("a@x"), 2 * STEP);
        for _ in 0..100 {
            assert!(failures.failed("a@x") <= MAX_DELAY);
        }
        assert_eq!(failures.failed("b@x"), Duration::ZERO);
    }

    #[test]
    fn success_clears_the_count() {
        let failures = Failures::new();
        for _ in 0..10 {
            failures.failed("a@x");
        }
        failures.succeeded("a@x");
        assert_eq!(failures.failed("a@x"), Duration::ZERO);
    }

    #[test]
    fn never_tracks_more_than_its_capacity() {
        let failures = Failures::new();
        for i in 0..CAPACITY + 10 {
            failures.failed(&format!("u{i}@x"));
        }
        assert!(failures.len() <= CAPACITY);
    }
}
