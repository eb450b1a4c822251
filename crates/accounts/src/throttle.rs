//! Failed-login throttling per client address (in addition to the
//! per-address delay of module `penalty`).
//!
//! Flow: every login attempt is charged as a failure to the count of the
//! client's address before its password is checked, and refunded unless
//! the password was wrong; while the count is at `max` (`limits.max_login_failures_per_ip`),
//! logins from that address are refused at once with
//! [`crate::LoginError::Throttled`]: no store lookup, no Argon2. The count
//! drains continuously at `max` per `window`
//! (`limits.login_failure_window`), so a throttled address regains one
//! attempt every `window / max` (a GCRA: each failure pushes the address's
//! "theoretical arrival time" one interval further; the address is
//! throttled while that time is more than `window` minus one interval
//! ahead of now).
//!
//! Decisions:
//! - a successful login does not lower the count: accounts are created by
//!   a first login, so an attacker always has a valid login of its own and
//!   could otherwise reset its budget between guesses;
//! - throttled attempts do not add to the count, so a client that keeps
//!   trying is not locked out longer than the window;
//! - IPv6 addresses count per /64 (one subscriber's usual allocation), and
//!   IPv4-mapped IPv6 addresses as their IPv4 address.
//!
//! Invariants:
//! - keys are keyed hashes (per-process random key) of the address or
//!   prefix: no IP address is held in memory by this module, none is written
//!   anywhere;
//! - the map never exceeds [`CAPACITY`] entries: when full, drained
//!   entries go first, then the entry with the least debt;
//! - the lock is held for one map operation, never across `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most client addresses tracked at once.
pub(crate) const CAPACITY: usize = 65_536;

/// Failure counts per client address.
pub(crate) struct Throttle {
    /// Failures allowed within `window`; 0 turns the throttle off.
    max: u32,
    /// Time for `max` failures to drain.
    window: Duration,
    /// Keyed hasher: the map's keys reveal nothing about the addresses.
    hasher: RandomState,
    /// Theoretical arrival time per hashed address.
    entries: Mutex<HashMap<u64, Instant>>,
}

impl Throttle {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window: window.max(Duration::from_millis(1)),
            hasher: RandomState::new(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Time for one failure to drain.
    fn interval(&self) -> Duration {
        self.window / self.max.max(1)
    }

    /// The keyed hash of `ip`'s client (`chatmail_limits::ClientKey`, the
    /// grouping every per-client bound uses).
    fn key(&self, ip: IpAddr) -> u64 {
        self.hasher.hash_one(chatmail_limits::ClientKey::of(ip))
    }

    /// Whether logins from `ip` are refused right now.
    #[cfg(test)]
    pub(crate) fn is_throttled(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max == 0 {
            return false;
        }
        let key = self.key(ip);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key).is_some_and(|tat| self.over(*tat, now))
    }

    /// Whether an address whose theoretical arrival time is `tat` is
    /// throttled at `now`.
    fn over(&self, tat: Instant, now: Instant) -> bool {
        let tolerance = self.window.saturating_sub(self.interval());
        tat.saturating_duration_since(now) > tolerance
    }

    /// Counts one failed login from `ip`.
    #[cfg(test)]
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let _ = self.charge(ip, now);
    }

    /// Takes one attempt from `ip`'s budget before its password is
    /// checked, counted as a failure until [`Throttle::refund`]: `false`
    /// (and nothing counted) while the address is throttled. Charging
    /// first means concurrent guesses cannot all pass one check while
    /// their hashes run.
    pub(crate) fn charge(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        let key = self.key(ip);
        let interval = self.interval();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.get(&key).is_some_and(|tat| self.over(*tat, now)) {
            return false;
        }
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            make_room(&mut entries, now);
        }
        let tat = entries.entry(key).or_insert(now);
        // Never more than one window of debt: the count is at most `max`.
        *tat = ((*tat).max(now) + interval).min(now + self.window);
        true
    }

    /// Gives back an attempt [`Throttle::charge`] took, for a login that
    /// did not fail on its password.
    pub(crate) fn refund(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let key = self.key(ip);
        let interval = self.interval();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tat) = entries.get_mut(&key) {
            *tat = tat.checked_sub(interval).unwrap_or(*tat);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// Drops drained entries; if none drained, the one with the least debt.
fn make_room(entries: &mut HashMap<u64, Instant>, now: Instant) {
    entries.retain(|_, tat| *tat > now);
    if entries.len() < CAPACITY {
        return;
    }
    if let Some(key) = entries.iter().min_by_key(|(_, tat)| **tat).map(|(k, _)| *k) {
        entries.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(100);

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn throttles_after_max_failures_and_only_that_address() {
        let throttle = Throttle::new(5, WINDOW);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let now = Instant::now();
        for _ in 0..5 {
            assert!(!throttle.is_throttled(a, now));
            throttle.failed(a, now);
        }
        assert!(throttle.is_throttled(a, now));
        assert!(!throttle.is_throttled(b, now), "other addresses unaffected");
    }

    #[test]
    fn one_attempt_comes_back_per_interval_and_all_after_the_window() {
        let throttle = Throttle::new(5, WINDOW);
        let a = ip("192.0.2.1");
        let now = Instant::now();
        for _ in 0..50 {
            throttle.failed(a, now);
        }
        // Extra failures do not lengthen the lock-out beyond one window.
        let interval = WINDOW / 5;
        assert!(throttle.is_throttled(a, now + interval - Duration::from_millis(1)));
        assert!(!throttle.is_throttled(a, now + interval));
        throttle.failed(a, now + interval);
        assert!(throttle.is_throttled(a, now + interval));
        let later = now + interval + WINDOW;
        for _ in 0..5 {
            assert!(!throttle.is_throttled(a, later));
            throttle.failed(a, later);
        }
        assert!(throttle.is_throttled(a, later));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let throttle = Throttle::new(2, WINDOW);
        let now = Instant::now();
        throttle.failed(ip("2001:db8:1:2::1"), now);
        throttle.failed(ip("2001:db8:1:2:ffff::9"), now);
        assert!(throttle.is_throttled(ip("2001:db8:1:2::77"), now));
        assert!(!throttle.is_throttled(ip("2001:db8:1:3::1"), now));
        throttle.failed(ip("::ffff:192.0.2.7"), now);
        throttle.failed(ip("192.0.2.7"), now);
        assert!(throttle.is_throttled(ip("192.0.2.7"), now));
    }

    #[test]
    fn zero_turns_the_throttle_off() {
        let throttle = Throttle::new(0, WINDOW);
        let now = Instant::now();
        for _ in 0..100 {
            throttle.failed(ip("192.0.2.1"), now);
        }
        assert!(!throttle.is_throttled(ip("192.0.2.1"), now));
        assert_eq!(throttle.len(), 0);
    }

    #[test]
    fn never_tracks_more_than_its_capacity_and_keeps_the_worst() {
        let throttle = Throttle::new(3, WINDOW);
        let now = Instant::now();
        let worst = ip("10.255.255.255");
        for _ in 0..3 {
            throttle.failed(worst, now);
        }
        for i in 0..CAPACITY as u32 + 10 {
            throttle.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(throttle.len() <= CAPACITY);
        assert!(throttle.is_throttled(worst, now));
    }
}
