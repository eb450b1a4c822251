//! Connection slots of one listener (or of several that share a limit):
//! at most `max_total` connections, at most `max_per_client` of them for
//! one [`ClientKey`].
//!
//! When the pool is full, a newcomer does not simply get turned away: the
//! connection that has been waiting longest for a client that has not
//! authenticated is evicted to make room (its [`Slot::evicted`] future
//! completes; the session says goodbye and closes). A connection is
//! waiting while no [`Busy`] guard of it is alive; [`Slot::protect`] (after
//! a login) takes it out of the running for good. When every unprotected
//! connection is busy, the one busy the longest goes, but only after
//! [`BUSY_EVICTABLE_AFTER`]: a client that trickles a message body or a
//! request cannot hold its slot as "busy" for minutes. So a flood of idle
//! or slow unauthenticated connections can delay nobody for long, while
//! authenticated sessions and short commands are never cut off. A client
//! over its own share is refused as before.
//!
//! A session must check [`Slot::is_evicted`] after taking [`Slot::busy`]:
//! an eviction may have happened just before.
//!
//! Eviction looks at every slot once (a pool is at most tens of
//! thousands), and only when the pool is full.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::{ClientKey, lock};

/// How long an unauthenticated connection may be busy before a full pool
/// may evict it anyway.
pub const BUSY_EVICTABLE_AFTER: Duration = Duration::from_secs(30);

/// A pool of connection slots, shared by clones.
#[derive(Debug, Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_total: usize,
    max_per_client: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Slots counted (evicted ones no longer are).
    total: usize,
    /// Only clients holding slots have an entry.
    by_client: HashMap<ClientKey, usize>,
    /// Counted slots by id.
    entries: HashMap<u64, Entry>,
    next_id: u64,
}

#[derive(Debug)]
struct Entry {
    client: ClientKey,
    /// Live [`Busy`] guards.
    busy: usize,
    /// Authenticated: never evicted.
    protected: bool,
    /// Since when the slot has had no busy guard.
    waiting_since: Instant,
    /// Since when it has had one.
    busy_since: Instant,
    evict: CancellationToken,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client holds its share already.
    Client,
    /// The pool is full and nothing could be evicted.
    Full,
}

/// One connection's slot; released on drop.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Inner>,
    id: u64,
    evict: CancellationToken,
}

/// While alive, the connection is doing work and is not evicted.
#[derive(Debug)]
pub struct Busy {
    inner: Arc<Inner>,
    id: u64,
}

impl Slots {
    /// A pool of `max_total` slots, `max_per_client` per client.
    pub fn new(max_total: usize, max_per_client: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_total: max_total.max(1),
                max_per_client: max_per_client.max(1),
                state: Mutex::default(),
            }),
        }
    }

    /// The relay's usual split: a fifth of the pool per client.
    pub fn fifth_per_client(max_total: usize) -> Self {
        Self::new(max_total, max_total / 5)
    }

    /// A slot for a connection from `ip` (`None`: unknown, one shared
    /// client), evicting the longest-waiting unauthenticated connection
    /// when the pool is full.
    pub fn acquire(&self, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        let client = ClientKey::of_opt(ip);
        let mut state = lock(&self.inner.state);
        let held = state.by_client.get(&client).copied().unwrap_or(0);
        if held >= self.inner.max_per_client {
            return Err(Refused::Client);
        }
        if state.total >= self.inner.max_total && !state.evict_one() {
            return Err(Refused::Full);
        }
        let id = state.next_id;
        state.next_id += 1;
        let evict = CancellationToken::new();
        state.entries.insert(
            id,
            Entry {
                client,
                busy: 0,
                protected: false,
                waiting_since: Instant::now(),
                busy_since: Instant::now(),
                evict: evict.clone(),
            },
        );
        state.total += 1;
        *state.by_client.entry(client).or_insert(0) += 1;
        Ok(Slot {
            inner: Arc::clone(&self.inner),
            id,
            evict,
        })
    }

    /// Slots counted now.
    pub fn len(&self) -> usize {
        lock(&self.inner.state).total
    }

    /// Whether no slot is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// Evicts the unprotected, idle slot that has waited longest, else the
    /// one busy for longest, if that is longer than
    /// [`BUSY_EVICTABLE_AFTER`].
    fn evict_one(&mut self) -> bool {
        let unprotected = || self.entries.iter().filter(|(_, e)| !e.protected);
        let idle = unprotected()
            .filter(|(_, e)| e.busy == 0)
            .min_by_key(|(id, e)| (e.waiting_since, **id));
        let stuck = || {
            let limit = Instant::now().checked_sub(BUSY_EVICTABLE_AFTER)?;
            unprotected()
                .filter(|(_, e)| e.busy > 0 && e.busy_since <= limit)
                .min_by_key(|(id, e)| (e.busy_since, **id))
        };
        let victim = idle.or_else(stuck).map(|(id, _)| *id);
        match victim {
            Some(id) => {
                if let Some(entry) = self.release(id) {
                    entry.evict.cancel();
                }
                true
            }
            None => false,
        }
    }

    /// Stops counting slot `id`.
    fn release(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.total = self.total.saturating_sub(1);
        if let Some(held) = self.by_client.get_mut(&entry.client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.by_client.remove(&entry.client);
            }
        }
        Some(entry)
    }
}

impl Slot {
    /// Marks the connection as working until the guard is dropped.
    pub fn busy(&self) -> Busy {
        if let Some(entry) = lock(&self.inner.state).entries.get_mut(&self.id) {
            if entry.busy == 0 {
                entry.busy_since = Instant::now();
            }
            entry.busy += 1;
        }
        Busy {
            inner: Arc::clone(&self.inner),
            id: self.id,
        }
    }

    /// The client has authenticated: this connection is never evicted.
    pub fn protect(&self) {
        if let Some(entry) = lock(&self.inner.state).entries.get_mut(&self.id) {
            entry.protected = true;
        }
    }

    /// Completes when the slot was evicted to make room for another.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.evict.clone().cancelled_owned()
    }

    /// Whether the slot was evicted.
    pub fn is_evicted(&self) -> bool {
        self.evict.is_cancelled()
    }
}

/// Completes when `slot` is evicted; never without a slot (a connection
/// that is not counted in any pool).
pub async fn evicted(slot: Option<Arc<Slot>>) {
    match slot {
        Some(slot) => slot.evicted().await,
        None => std::future::pending().await,
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.inner.state).release(self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(entry) = lock(&self.inner.state).entries.get_mut(&self.id) {
            entry.busy = entry.busy.saturating_sub(1);
            if entry.busy == 0 {
                entry.waiting_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn limits_each_client_to_its_share() {
        let slots = Slots::new(10, 2);
        let first = slots.acquire(ip(1)).unwrap();
        let _second = slots.acquire(ip(1)).unwrap();
        assert_eq!(slots.acquire(ip(1)).unwrap_err(), Refused::Client);
        let mapped = Some("::ffff:192.0.2.1".parse().unwrap());
        assert_eq!(slots.acquire(mapped).unwrap_err(), Refused::Client);
        assert!(slots.acquire(ip(2)).is_ok());
        drop(first);
        assert!(slots.acquire(ip(1)).is_ok());
    }

    #[test]
    fn groups_ipv6_clients_by_64() {
        let slots = Slots::new(10, 2);
        let a = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let _x = slots.acquire(a("2001:db8::1")).unwrap();
        let _y = slots.acquire(a("2001:db8::2:3")).unwrap();
        assert_eq!(
            slots.acquire(a("2001:db8::ffff")).unwrap_err(),
            Refused::Client
        );
        assert!(slots.acquire(a("2001:db8:0:1::1")).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pool_evicts_the_longest_waiting_unauthenticated_slot() {
        let slots = Slots::new(3, 3);
        let oldest = slots.acquire(ip(1)).unwrap();
        let authed = slots.acquire(ip(1)).unwrap();
        authed.protect();
        let working = slots.acquire(ip(1)).unwrap();
        let _guard = working.busy();
        let newcomer = slots.acquire(ip(2)).unwrap();
        assert!(oldest.is_evicted());
        assert!(!authed.is_evicted() && !working.is_evicted());
        assert_eq!(slots.len(), 3);
        // The newcomer waits now, so it can be evicted in turn; the others
        // cannot.
        let _next = slots.acquire(ip(3)).unwrap();
        assert!(newcomer.is_evicted());
        drop(oldest);
        assert_eq!(slots.len(), 3, "an evicted slot was released already");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_of_authenticated_or_busy_slots_refuses_newcomers() {
        let slots = Slots::new(2, 2);
        let a = slots.acquire(ip(1)).unwrap();
        a.protect();
        let b = slots.acquire(ip(1)).unwrap();
        let busy = b.busy();
        assert_eq!(slots.acquire(ip(2)).unwrap_err(), Refused::Full);
        drop(busy);
        assert!(slots.acquire(ip(2)).is_ok());
        assert!(b.is_evicted());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_busy_for_long_is_evicted_when_nothing_waits() {
        let slots = Slots::new(2, 2);
        let long = slots.acquire(ip(1)).unwrap();
        let _long_busy = long.busy();
        tokio::time::advance(Duration::from_secs(10)).await;
        let short = slots.acquire(ip(1)).unwrap();
        let _short_busy = short.busy();
        assert_eq!(slots.acquire(ip(2)).unwrap_err(), Refused::Full);
        tokio::time::advance(BUSY_EVICTABLE_AFTER).await;
        let _newcomer = slots.acquire(ip(2)).unwrap();
        assert!(long.is_evicted() && !short.is_evicted());
    }

    #[tokio::test]
    async fn eviction_wakes_the_connection() {
        let slots = Slots::new(1, 1);
        let idle = slots.acquire(ip(1)).unwrap();
        let woken = tokio::spawn(idle.evicted());
        let _new = slots.acquire(ip(2)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), woken)
            .await
            .unwrap()
            .unwrap();
    }
}
