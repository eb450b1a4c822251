//! The caps of a TURN server: allocations in total and per client address
//! ([`Quotas`], IPv6 grouped by /64; over a cap a newcomer is refused,
//! nothing is evicted), and relayed bytes per second of one allocation
//! ([`Bucket`]). TCP connections share a `chatmail_limits::Slots` pool
//! instead (see the server).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chatmail_limits::ClientKey;

/// Counts of allocations, in total and per client.
pub struct Quotas {
    /// At once, in total.
    max_total: usize,
    /// At once, per client.
    max_per_client: usize,
    /// The live counts: the total and per client.
    counts: Arc<Mutex<(usize, HashMap<ClientKey, usize>)>>,
}

/// One counted allocation; dropping it gives its place back.
pub struct Quota {
    /// The client it is counted for.
    key: ClientKey,
    /// The counts it is in.
    counts: Arc<Mutex<(usize, HashMap<ClientKey, usize>)>>,
}

impl Quotas {
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        let counts = Arc::new(Mutex::new((0, HashMap::new())));
        Self {
            max_total,
            max_per_client,
            counts,
        }
    }

    /// A place for one more allocation of `ip`, if both caps allow it.
    pub fn acquire(&self, ip: IpAddr) -> Option<Quota> {
        let key = ClientKey::of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *counts;
        let mine = per_client.entry(key).or_insert(0);
        if *total >= self.max_total || *mine >= self.max_per_client {
            if *mine == 0 {
                per_client.remove(&key);
            }
            return None;
        }
        *mine += 1;
        *total += 1;
        Some(Quota {
            key,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *counts;
        *total -= 1;
        if let Some(mine) = per_client.get_mut(&self.key) {
            *mine -= 1;
            if *mine == 0 {
                per_client.remove(&self.key);
            }
        }
    }
}

/// A token bucket of bytes: `rate` a second, at most one second's worth
/// saved up.
pub struct Bucket {
    /// Bytes a second; 0: unlimited.
    rate: u64,
    /// Bytes that may pass now.
    tokens: f64,
    /// When `tokens` was last topped up.
    last: std::time::Instant,
}

impl Bucket {
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            tokens: rate as f64,
            last: std::time::Instant::now(),
        }
    }

    /// Whether `bytes` may pass now (and if so, takes them).
    pub fn take(&mut self, bytes: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = std::time::Instant::now();
        let rate = self.rate as f64;
        let earned = now.duration_since(self.last).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(rate);
        self.last = now;
        if self.tokens < bytes as f64 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_cap_each_client_and_the_total() {
        let quotas = Quotas::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = quotas.acquire(a).unwrap();
        let _second = quotas.acquire(a).unwrap();
        assert!(quotas.acquire(a).is_none(), "over the client's cap");
        let _third = quotas.acquire(b).unwrap();
        assert!(quotas.acquire(b).is_none(), "over the total");
        drop(first);
        assert!(quotas.acquire(b).is_some(), "a freed place is reusable");
    }

    #[test]
    fn buckets_pass_a_seconds_worth_and_drop_the_rest() {
        let mut bucket = Bucket::new(1000);
        assert!(bucket.take(600));
        assert!(bucket.take(400));
        assert!(!bucket.take(100));
        assert!(Bucket::new(0).take(usize::MAX), "0 is unlimited");
    }
}
