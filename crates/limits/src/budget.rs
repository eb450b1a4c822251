//! Bytes in flight: a total and a share per client, reserved before the
//! bytes are taken and released when the reservation is dropped.
//!
//! A reservation grows as a body arrives ([`Reservation::try_grow`]) and
//! never blocks there: a body that cannot grow is spooled elsewhere or
//! refused by the caller. [`Budget::reserve`] may wait a short while for
//! other reservations to end (finished bodies are released within
//! milliseconds, when they are stored).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{ClientKey, lock};

/// A byte budget shared by clones.
#[derive(Debug, Clone)]
pub struct Budget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    total: u64,
    per_client: u64,
    state: Mutex<State>,
    /// Woken whenever bytes are released.
    released: Notify,
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    /// Only clients holding bytes have an entry.
    by_client: HashMap<ClientKey, u64>,
}

/// Bytes held against a [`Budget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    inner: Arc<Inner>,
    client: ClientKey,
    bytes: u64,
}

impl Budget {
    /// At most `total` bytes at once, at most `per_client` of them for one
    /// client.
    pub fn new(total: u64, per_client: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                total,
                per_client: per_client.min(total),
                state: Mutex::default(),
                released: Notify::new(),
            }),
        }
    }

    /// The largest reservation one client can ever hold.
    pub fn per_client(&self) -> u64 {
        self.inner.per_client
    }

    /// Bytes reserved now, over all clients.
    pub fn used(&self) -> u64 {
        lock(&self.inner.state).used
    }

    /// `bytes` for `client` if both the total and its share allow it now.
    pub fn try_reserve(&self, client: ClientKey, bytes: u64) -> Option<Reservation> {
        let mut reservation = Reservation {
            inner: Arc::clone(&self.inner),
            client,
            bytes: 0,
        };
        reservation.try_grow(bytes).then_some(reservation)
    }

    /// Like [`Budget::try_reserve`], waiting up to `wait` for releases.
    pub async fn reserve(
        &self,
        client: ClientKey,
        bytes: u64,
        wait: Duration,
    ) -> Option<Reservation> {
        if bytes > self.inner.per_client {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(reservation) = self.try_reserve(client, bytes) {
                return Some(reservation);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return None;
            }
        }
    }
}

impl Reservation {
    /// Adds `more` bytes if the total and the client's share allow it;
    /// `false` leaves the reservation as it was.
    pub fn try_grow(&mut self, more: u64) -> bool {
        let inner = &self.inner;
        let mut state = lock(&inner.state);
        let held = state.by_client.get(&self.client).copied().unwrap_or(0);
        let fits = state
            .used
            .checked_add(more)
            .is_some_and(|u| u <= inner.total)
            && held
                .checked_add(more)
                .is_some_and(|h| h <= inner.per_client);
        if !fits {
            return false;
        }
        if more > 0 {
            state.used += more;
            *state.by_client.entry(self.client).or_insert(0) += more;
            self.bytes += more;
        }
        true
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        {
            let mut state = lock(&self.inner.state);
            state.used = state.used.saturating_sub(self.bytes);
            if let Some(held) = state.by_client.get_mut(&self.client) {
                *held = held.saturating_sub(self.bytes);
                if *held == 0 {
                    state.by_client.remove(&self.client);
                }
            }
        }
        self.inner.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> ClientKey {
        ClientKey::of(std::net::IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn bounds_the_total_and_each_clients_share() {
        let budget = Budget::new(100, 40);
        let mut a = budget.try_reserve(client(1), 30).unwrap();
        assert!(!a.try_grow(11), "over the client's share");
        assert!(a.try_grow(10));
        assert!(budget.try_reserve(client(1), 1).is_none());
        let b = budget.try_reserve(client(2), 40).unwrap();
        assert!(
            budget.try_reserve(client(3), 21).is_none(),
            "over the total"
        );
        let c = budget.try_reserve(client(3), 20).unwrap();
        assert_eq!(budget.used(), 100);
        drop((a, b, c));
        assert_eq!(budget.used(), 0);
        assert!(lock(&budget.inner.state).by_client.is_empty());
    }

    #[tokio::test]
    async fn reserve_waits_for_a_release_and_gives_up_at_the_deadline() {
        let budget = Budget::new(10, 10);
        let held = budget.try_reserve(client(1), 10).unwrap();
        let wait = Duration::from_millis(50);
        assert!(budget.reserve(client(2), 5, wait).await.is_none());
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget
                    .reserve(client(2), 5, Duration::from_secs(10))
                    .await
                    .map(|r| r.bytes())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Some(5));
        assert!(
            budget.reserve(client(3), 11, wait).await.is_none(),
            "never fits"
        );
    }
}
