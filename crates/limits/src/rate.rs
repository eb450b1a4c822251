//! Rate limits per key with the generic cell rate algorithm (GCRA): each
//! counted event moves the key's theoretical arrival time (TAT) one
//! interval (`60 s / per_minute`) ahead; an event is refused while the TAT
//! is more than `burst - 1` intervals ahead of now. A key whose TAT lies in
//! the past is idle and can be forgotten, so the table holds only keys that
//! were active within the last `burst` intervals, and at most `capacity`.
//!
//! A full table with no idle key refuses new keys (fail closed): forgetting
//! active keys would hand out fresh bursts.
//!
//! Charge before an await and refund after it ([`Gcra::refund`]) where
//! concurrent events could otherwise all pass one check.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// A rate limit over keys `K`.
#[derive(Debug)]
pub struct Gcra<K> {
    /// Time one event costs; zero: no limit.
    interval: Duration,
    /// How far the TAT may run ahead of now.
    tolerance: Duration,
    /// Most keys tracked.
    capacity: usize,
    /// Key → theoretical arrival time.
    tat: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Gcra<K> {
    /// `per_minute` events per minute sustained, `burst` at once; a
    /// `per_minute` of 0 turns the limit off.
    pub fn new(per_minute: u32, burst: u32, capacity: usize) -> Self {
        let interval = match per_minute {
            0 => Duration::ZERO,
            n => Duration::from_secs(60) / n,
        };
        Self {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            capacity: capacity.max(1),
            tat: Mutex::default(),
        }
    }

    /// Whether an event of `key` at `now` would be allowed; counts nothing.
    pub fn check(&self, key: &K, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let map = lock(&self.tat);
        match map.get(key) {
            Some(tat) => tat.saturating_duration_since(now) <= self.tolerance,
            None => map.len() < self.capacity || map.values().any(|tat| *tat <= now),
        }
    }

    /// Counts an event of `key` at `now`; `false` (and nothing counted)
    /// when it is over the limit.
    pub fn allow(&self, key: K, now: Instant) -> bool {
        if self.interval.is_zero() {
            return true;
        }
        let mut map = lock(&self.tat);
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, tat| *tat > now);
            if map.len() >= self.capacity {
                return false;
            }
        }
        let tat = map.get(&key).copied().unwrap_or(now).max(now);
        if tat.duration_since(now) > self.tolerance {
            return false;
        }
        map.insert(key, tat + self.interval);
        true
    }

    /// Takes back one counted event of `key` (one that [`Gcra::allow`]
    /// counted before it was known whether it would really happen), so a
    /// limit can be charged before an await and refunded after it.
    pub fn refund(&self, key: &K) {
        if self.interval.is_zero() {
            return;
        }
        if let Some(tat) = lock(&self.tat).get_mut(key) {
            *tat = tat.checked_sub(self.interval).unwrap_or(*tat);
        }
    }

    /// Keys tracked (tests).
    pub fn tracked(&self) -> usize {
        lock(&self.tat).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let gcra = Gcra::new(60, 10, 100);
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(gcra.allow("a", t0), "event {i}");
        }
        assert!(!gcra.check(&"a", t0));
        assert!(!gcra.allow("a", t0), "11th in the burst");
        assert!(gcra.allow("b", t0), "other keys unaffected");
        assert!(!gcra.allow("a", t0 + Duration::from_millis(500)));
        assert!(gcra.check(&"a", t0 + Duration::from_secs(1)));
        assert!(gcra.allow("a", t0 + Duration::from_secs(1)));
        assert!(!gcra.allow("a", t0 + Duration::from_secs(1)));
    }

    #[test]
    fn check_counts_nothing() {
        let gcra = Gcra::new(60, 1, 100);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(gcra.check(&"a", t0));
        }
        assert!(gcra.allow("a", t0));
        assert!(!gcra.check(&"a", t0));
    }

    #[test]
    fn forgets_idle_keys_when_full_and_fails_closed_otherwise() {
        let gcra = Gcra::new(60, 10, 3);
        let t0 = Instant::now();
        for key in ["a", "b", "c"] {
            assert!(gcra.allow(key, t0));
        }
        assert!(!gcra.check(&"d", t0), "full of active keys");
        assert!(!gcra.allow("d", t0));
        assert!(gcra.allow("a", t0), "known keys still counted");
        let later = t0 + Duration::from_secs(3);
        assert!(gcra.check(&"d", later));
        assert!(gcra.allow("d", later));
        assert_eq!(gcra.tracked(), 1);
    }

    #[test]
    fn a_refund_gives_the_event_back() {
        let gcra = Gcra::new(60, 2, 100);
        let t0 = Instant::now();
        assert!(gcra.allow("a", t0));
        assert!(gcra.allow("a", t0));
        assert!(!gcra.check(&"a", t0));
        gcra.refund(&"a");
        assert!(gcra.allow("a", t0));
        assert!(!gcra.allow("a", t0));
        gcra.refund(&"unknown");
    }

    #[test]
    fn zero_rate_is_no_limit() {
        let gcra = Gcra::new(0, 0, 1);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert!(gcra.allow(i, t0));
        }
        assert_eq!(gcra.tracked(), 0);
    }
}
