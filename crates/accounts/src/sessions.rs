//! Live sessions per account, so the operator can cut them: a ban or a
//! delete cancels every registered session of the address at once.
//!
//! A protocol session registers after its login and holds the returned
//! [`SessionGuard`] until it ends; the guard's token is a child of the
//! server's shutdown token, so a session watches one token for both.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use tokio_util::sync::CancellationToken;

/// The registry. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Vec<(u64, CancellationToken)>>>,
    next_id: AtomicU64,
}

/// One registered session; unregisters on drop.
pub struct SessionGuard {
    sessions: Arc<Sessions>,
    address: String,
    id: u64,
    token: CancellationToken,
    shutdown: CancellationToken,
}

impl Sessions {
    /// Registers a session of `address`; its token is cancelled by
    /// `shutdown` or by [`Sessions::disconnect`].
    pub fn register(self: &Arc<Self>, address: &str, shutdown: &CancellationToken) -> SessionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = shutdown.child_token();
        self.lock()
            .entry(address.to_owned())
            .or_default()
            .push((id, token.clone()));
        SessionGuard {
            sessions: self.clone(),
            address: address.to_owned(),
            id,
            token,
            shutdown: shutdown.clone(),
        }
    }

    /// Cancels every session of `address`; returns how many there were.
    pub fn disconnect(&self, address: &str) -> usize {
        let cut = self.lock().remove(address).unwrap_or_default();
        for (_, token) in &cut {
            token.cancel();
        }
        cut.len()
    }

    /// Registered sessions of all accounts.
    pub fn count(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Registered sessions of `address`.
    pub fn count_of(&self, address: &str) -> usize {
        self.lock().get(address).map_or(0, Vec::len)
    }

    /// Accounts with at least one registered session.
    pub fn accounts(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(u64, CancellationToken)>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SessionGuard {
    /// Cancelled when the session must end.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Whether the session was cut by the operator (not by a shutdown).
    pub fn disconnected(&self) -> bool {
        self.token.is_cancelled() && !self.shutdown.is_cancelled()
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut live = self.sessions.lock();
        if let Some(list) = live.get_mut(&self.address) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                live.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnect_cuts_only_that_address_and_guards_unregister() {
        let sessions = Arc::new(Sessions::default());
        let shutdown = CancellationToken::new();
        let a1 = sessions.register("a@x", &shutdown);
        let a2 = sessions.register("a@x", &shutdown);
        let b = sessions.register("b@x", &shutdown);
        assert_eq!((sessions.count(), sessions.accounts()), (3, 2));
        assert_eq!(sessions.disconnect("a@x"), 2);
        assert!(a1.disconnected() && a2.disconnected());
        assert!(!b.token().is_cancelled());
        drop((a1, a2));
        assert_eq!(sessions.count(), 1);
        shutdown.cancel();
        assert!(b.token().is_cancelled() && !b.disconnected());
        drop(b);
        assert_eq!(sessions.count(), 0);
    }
}
