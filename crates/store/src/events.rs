//! Change events: one `watch` channel per account, created on first
//! subscription. The writer bumps the counter of every account a committed
//! batch touched; IMAP IDLE waits on the receiver and re-reads what it needs.
//!
//! Invariant: the lock is never held across `.await` (it guards a map only).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::AccountId;

/// The per-account change counters.
#[derive(Default)]
pub(crate) struct Events {
    senders: Mutex<HashMap<AccountId, watch::Sender<u64>>>,
}

impl Events {
    /// A receiver that changes whenever `account` changes.
    pub(crate) fn subscribe(&self, account: AccountId) -> watch::Receiver<u64> {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        senders
            .entry(account)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Bumps the counters of `accounts`; drops channels nobody listens to
    /// any more, so the map stays as small as the set of live subscribers.
    pub(crate) fn bump(&self, accounts: &[AccountId]) {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        for account in accounts {
            let Some(sender) = senders.get(account) else {
                continue;
            };
            if sender.receiver_count() == 0 {
                senders.remove(account);
            } else {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_wakes_only_the_touched_account() {
        let events = Events::default();
        let mut a = events.subscribe(1);
        let b = events.subscribe(2);
        events.bump(&[1]);
        assert!(a.has_changed().unwrap());
        assert_eq!(*a.borrow_and_update(), 1);
        assert!(!b.has_changed().unwrap());
    }

    #[test]
    fn channels_without_receivers_are_dropped() {
        let events = Events::default();
        drop(events.subscribe(7));
        events.bump(&[7]);
        assert!(events.senders.lock().unwrap().is_empty());
    }
}
