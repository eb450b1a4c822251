//! A small cache of recent successful password checks, so that the many
//! logins of one device (every IMAP and SMTP connection) skip the Argon2
//! KDF.
//!
//! Invariants:
//! - keys are SHA-256 over a random per-process secret, the address and the
//!   password: the cache never holds a password, and its keys are useless
//!   outside this process;
//! - an entry remembers the stored PHC string it was verified against; a hit
//!   counts only if the account still has exactly that hash, so a deleted
//!   account or a changed password invalidates it without any hook;
//! - entries expire after [`TTL`]; the map never exceeds [`CAPACITY`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// How long a verified login is remembered.
pub(crate) const TTL: Duration = Duration::from_secs(600);
/// Most remembered logins.
pub(crate) const CAPACITY: usize = 4096;

type Key = [u8; 32];

pub(crate) struct LoginCache {
    secret: [u8; 32],
    entries: Mutex<HashMap<Key, (String, Instant)>>,
}

impl LoginCache {
    pub(crate) fn new() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self {
            secret,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, address: &str, password: &str) -> Key {
        let mut h = Sha256::new();
        h.update(self.secret);
        // Length prefix: (address, password) pairs cannot collide by shifting.
        h.update((address.len() as u64).to_be_bytes());
        h.update(address.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether this address/password pair was verified against `phc` less
    /// than [`TTL`] ago.
    pub(crate) fn hit(&self, address: &str, password: &str, phc: &str) -> bool {
        let key = self.key(address, password);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key)
            .is_some_and(|(stored, at)| stored == phc && at.elapsed() < TTL)
    }

    /// Remembers a successful verification.
    pub(crate) fn insert(&self, address: &str, password: &str, phc: &str) {
        let key = self.key(address, password);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
        }
        if entries.len() >= CAPACITY {
            // Still full of fresh entries: start over rather than grow.
            entries.clear();
        }
        entries.insert(key, (phc.to_owned(), Instant::now()));
    }

    /// Forgets every entry for an account hash (password change, deletion).
    pub(crate) fn forget(&self, phc: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (stored, _)| stored != phc);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_needs_same_address_password_and_hash() {
        let cache = LoginCache::new();
        cache.insert("a@x", "pw", "$h1");
        assert!(cache.hit("a@x", "pw", "$h1"));
        assert!(!cache.hit("a@x", "pw2", "$h1"));
        assert!(!cache.hit("b@x", "pw", "$h1"));
        assert!(!cache.hit("a@x", "pw", "$h2"));
    }

    #[test]
    fn forget_drops_entries_of_a_hash() {
        let cache = LoginCache::new();
        cache.insert("a@x", "pw", "$h1");
        cache.forget("$h1");
        assert!(!cache.hit("a@x", "pw", "$h1"));
    }

    #[test]
    fn cache_never_exceeds_its_capacity() {
        let cache = LoginCache::new();
        for i in 0..CAPACITY + 10 {
            cache.insert(&format!("u{i}@x"), "pw", "$h");
        }
        assert!(cache.len() <= CAPACITY);
    }
}
