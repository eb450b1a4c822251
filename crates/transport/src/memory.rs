//! The "no /mxdeliv" memory (docs/specifications.md §6): hosts whose `/mxdeliv`
//! failed while SMTP worked are sent SMTP only for a while.
//!
//! Invariant: the map never holds more than its capacity; expired entries
//! are dropped when met, and the entry closest to expiry makes room for a
//! new one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bounded, in-memory set of hosts with an expiry per entry.
pub(crate) struct NoMxdeliv {
    /// Host key -> when the entry expires.
    until: Mutex<HashMap<String, Instant>>,
    /// How long an entry lasts.
    ttl: Duration,
    /// Most entries kept.
    capacity: usize,
}

impl NoMxdeliv {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            until: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Whether `/mxdeliv` on `host:port` is to be skipped now.
    pub(crate) fn skips(&self, host: &str, port: u16) -> bool {
        let key = key(host, port);
        let Ok(mut map) = self.until.lock() else {
            return false;
        };
        match map.get(&key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Remembers that `/mxdeliv` on `host:port` did not work.
    pub(crate) fn remember(&self, host: &str, port: u16) {
        let Ok(mut map) = self.until.lock() else {
            return;
        };
        let now = Instant::now();
        if map.len() >= self.capacity {
            map.retain(|_, until| *until > now);
        }
        if map.len() >= self.capacity
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(key(host, port), now + self.ttl);
    }
}

fn key(host: &str, port: u16) -> String {
    format!("{}:{port}", host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_hosts_are_skipped_until_expiry() {
        let memory = NoMxdeliv::new(Duration::from_millis(50), 8);
        assert!(!memory.skips("mx.example", 443));
        memory.remember("MX.example", 443);
        assert!(memory.skips("mx.example", 443));
        assert!(!memory.skips("mx.example", 8443));
        std::thread::sleep(Duration::from_millis(80));
        assert!(!memory.skips("mx.example", 443));
    }

    #[test]
    fn capacity_bounds_the_map() {
        let memory = NoMxdeliv::new(Duration::from_secs(60), 2);
        memory.remember("a", 1);
        std::thread::sleep(Duration::from_millis(2));
        memory.remember("b", 1);
        memory.remember("c", 1);
        assert!(!memory.skips("a", 1), "the oldest entry makes room");
        assert!(memory.skips("b", 1) && memory.skips("c", 1));
        assert_eq!(memory.until.lock().unwrap().len(), 2);
    }
}
