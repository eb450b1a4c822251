//! Pending HTTP-01 challenges (RFC 8555 §8.3), shared between the order in
//! progress and the port 80 server that answers the CA.
//!
//! A challenge is published just before the CA is asked to validate it and
//! withdrawn when its authorization is decided ([`Published`] is a guard),
//! so the map only ever holds the few tokens of the order in progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Most challenges pending at once: one per name of an order, with room
/// for orders that overlap.
pub const MAX_PENDING: usize = 64;

/// The key authorizations of pending HTTP-01 challenges, by token.
#[derive(Debug, Default)]
pub struct ChallengeStore {
    pending: Mutex<HashMap<String, String>>,
}

impl ChallengeStore {
    /// The body to answer `GET /.well-known/acme-challenge/<token>` with
    /// (RFC 8555 §8.3: the key authorization, `text/plain`-compatible), or
    /// `None` for tokens that are not pending.
    pub fn get(&self, token: &str) -> Option<String> {
        self.lock().get(token).cloned()
    }

    /// Makes `token` answerable until the returned guard is dropped; `None`
    /// when [`MAX_PENDING`] challenges are already pending.
    pub fn publish(
        self: &Arc<Self>,
        token: String,
        key_authorization: String,
    ) -> Option<Published> {
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING && !pending.contains_key(&token) {
            return None;
        }
        pending.insert(token.clone(), key_authorization);
        Some(Published {
            store: self.clone(),
            token,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // The map stays consistent even if a holder panicked.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Withdraws its challenge when dropped.
pub struct Published {
    store: Arc<ChallengeStore>,
    token: String,
}

impl Drop for Published {
    fn drop(&mut self) {
        self.store.lock().remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_challenges_are_answered_until_withdrawn() {
        let store = Arc::new(ChallengeStore::default());
        assert_eq!(store.get("tok"), None);
        let guard = store.publish("tok".into(), "tok.thumb".into()).unwrap();
        assert_eq!(store.get("tok").as_deref(), Some("tok.thumb"));
        assert_eq!(store.get("other"), None);
        drop(guard);
        assert_eq!(store.get("tok"), None);
    }

    #[test]
    fn pending_challenges_are_bounded() {
        let store = Arc::new(ChallengeStore::default());
        let guards: Vec<_> = (0..MAX_PENDING)
            .map(|i| store.publish(format!("t{i}"), "k".into()).unwrap())
            .collect();
        assert!(store.publish("one-more".into(), "k".into()).is_none());
        drop(guards);
        assert!(store.publish("one-more".into(), "k".into()).is_some());
    }
}
