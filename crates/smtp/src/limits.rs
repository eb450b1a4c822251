//! Per-sender send rate (GCRA) and connection counting.
//!
//! Both are shared by every submission listener of the process, so that a
//! user or an address cannot double its allowance by using both ports.
//! Locks are plain mutexes held for a map operation, never across `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most senders tracked at once; idle senders are evicted first.
const MAX_SENDERS: usize = 100_000;

/// Generic cell rate algorithm keyed by sender: each message advances the
/// sender's "theoretical arrival time" (TAT) by `60 s / rate`; a message is
/// refused when the TAT is more than `(burst - 1)` intervals ahead of now.
/// A sender whose TAT lies in the past is idle and can be forgotten.
#[derive(Debug, Default)]
pub struct RateLimiter {
    tat: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// Counts one message for `sender` at `now`; `false` if over the limit.
    pub fn allow(&self, sender: &str, per_minute: u32, burst: u32, now: Instant) -> bool {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        let tolerance = interval * burst.saturating_sub(1);
        let Ok(mut map) = self.tat.lock() else {
            return false;
        };
        if map.len() >= MAX_SENDERS && !map.contains_key(sender) {
            map.retain(|_, tat| *tat > now);
            if map.len() >= MAX_SENDERS {
                return false; // fail closed rather than forget active senders
            }
        }
        let tat = map.get(sender).copied().unwrap_or(now).max(now);
        if tat.duration_since(now) > tolerance {
            return false;
        }
        map.insert(sender.to_owned(), tat + interval);
        true
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.tat.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Counts open connections, globally and per client address.
#[derive(Debug, Default)]
pub struct ConnectionLimiter {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Releases one connection slot when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    /// Takes a slot if fewer than `max` connections are open in total and
    /// fewer than `max / 5` (at least one) from `ip`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let per_ip_max = (max / 5).max(1);
        let mut per_ip = self.per_ip.lock().ok()?;
        let count = per_ip.get(&ip).copied().unwrap_or(0);
        if count >= per_ip_max || self.total.load(Ordering::SeqCst) >= max {
            return None;
        }
        per_ip.insert(ip, count + 1);
        self.total.fetch_add(1, Ordering::SeqCst);
        Some(ConnectionSlot {
            limiter: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut per_ip) = self.limiter.per_ip.lock()
            && let Some(count) = per_ip.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.limiter.total.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(limiter.allow("a@x", 60, 10, t0), "message {i}");
        }
        assert!(!limiter.allow("a@x", 60, 10, t0), "11th in the burst");
        assert!(limiter.allow("b@x", 60, 10, t0), "other senders unaffected");
        assert!(!limiter.allow("a@x", 60, 10, t0 + Duration::from_millis(500)));
        assert!(limiter.allow("a@x", 60, 10, t0 + Duration::from_secs(1)));
        assert!(!limiter.allow("a@x", 60, 10, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn idle_senders_are_evicted_when_full() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_SENDERS {
            assert!(limiter.allow(&format!("{i}@x"), 60, 10, t0));
        }
        assert!(limiter.allow("new@x", 60, 10, t0 + Duration::from_secs(2)));
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn limits_connections_per_ip_and_in_total() {
        let limiter = Arc::new(ConnectionLimiter::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limiter.acquire(a, 10).unwrap();
        let _second = limiter.acquire(a, 10).unwrap();
        assert!(limiter.acquire(a, 10).is_none(), "per-IP limit is 10/5");
        drop(first);
        let _third = limiter.acquire(a, 10).unwrap();
        let others: Vec<_> = (0..8).filter_map(|_| limiter.acquire(b, 40)).collect();
        assert_eq!(others.len(), 8);
        assert!(
            limiter.acquire("192.0.2.3".parse().unwrap(), 10).is_none(),
            "total"
        );
    }
}
