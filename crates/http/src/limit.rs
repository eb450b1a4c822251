//! Connections per client IP address on one listener.
//!
//! The same rule as IMAP and SMTP (`max_imap_connections`,
//! `max_smtp_connections`): one client address may hold at most a fifth of
//! a pool's connections, so a single host cannot take a whole pool.
//! The lock is held for one map operation, never across `.await`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections per client address, up to `max` each.
#[derive(Debug)]
pub(crate) struct PerIp {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share, released on drop.
#[derive(Debug)]
pub(crate) struct IpSlot {
    limiter: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A limiter allowing a fifth of `pool` (at least one) per address.
    pub(crate) fn fifth_of(pool: usize) -> Arc<Self> {
        Arc::new(Self {
            max: (pool / 5).max(1),
            counts: Mutex::default(),
        })
    }

    /// A slot for `ip`, or `None` when it holds its share already.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            limiter: Arc::clone(self),
            ip,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.counts.lock().unwrap().len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_fifth_of_the_pool_per_address_and_frees_on_drop() {
        let limiter = PerIp::fifth_of(10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limiter.try_acquire(a).unwrap();
        let _second = limiter.try_acquire(a).unwrap();
        assert!(limiter.try_acquire(a).is_none());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(limiter.try_acquire(mapped).is_none(), "same host over IPv6");
        assert!(limiter.try_acquire(b).is_some());
        drop(first);
        assert!(limiter.try_acquire(a).is_some());
        assert_eq!(PerIp::fifth_of(3).max, 1);
    }

    #[test]
    fn forgets_addresses_without_connections() {
        let limiter = PerIp::fifth_of(10);
        let slot = limiter.try_acquire("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(limiter.tracked(), 1);
        drop(slot);
        assert_eq!(limiter.tracked(), 0);
    }
}
