//! The push worker: turns notified accounts into queued rows, posts due
//! rows, and records each outcome (see the crate doc for the rules).
//!
//! One loop waits for whichever comes first: shutdown, accounts to
//! notify, a finished post, or the next retry time. Before each wait it
//! starts posts for due rows while fewer than [`MAX_IN_FLIGHT`] run. Rows being
//! posted are remembered in memory so they are not started twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatmail_metrics::Push as Metric;
use chatmail_store::push::PushEntry;
use chatmail_store::{AccountId, Store, StoreError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, Outcome, PostError};
use crate::{DEVICE_TOKEN, MAX_IN_FLIGHT, PushOptions};

/// Longest sleep between looks at the queue (also the pause after a store
/// failure).
const POLL: Duration = Duration::from_secs(60);
/// `notify` calls taken from the channel in one round.
const DRAIN: usize = 256;

/// A row in flight: (account, token).
type Key = (AccountId, String);

/// Sends the notifications; run it with [`Worker::run`].
pub struct Worker {
    store: Store,
    client: Arc<Client>,
    options: PushOptions,
    rx: mpsc::Receiver<Vec<AccountId>>,
    /// Rows being posted now.
    in_flight: HashSet<Key>,
    /// The posts themselves; aborted when the worker stops.
    tasks: JoinSet<(PushEntry, Outcome)>,
}

impl Worker {
    pub(crate) fn new(
        store: Store,
        client: Client,
        options: PushOptions,
        rx: mpsc::Receiver<Vec<AccountId>>,
    ) -> Self {
        Self {
            store,
            client: Arc::new(client),
            options,
            rx,
            in_flight: HashSet::new(),
            tasks: JoinSet::new(),
        }
    }

    /// Runs until `shutdown`; rows still pending stay queued in the store.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            // First of all: rows left from before a restart are due now.
            self.dispatch().await;
            let wake = self.next_wake().await;
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(accounts) = self.rx.recv() => self.enqueue(accounts).await,
                Some(done) = self.tasks.join_next() => match done {
                    Ok((entry, outcome)) => self.record(entry, outcome).await,
                    Err(error) => tracing::warn!(%error, "push task failed"),
                },
                () = tokio::time::sleep(wake) => {}
            }
        }
        self.tasks.abort_all();
    }

    /// Reads the live tokens of the notified accounts and queues them.
    async fn enqueue(&mut self, first: Vec<AccountId>) {
        let mut accounts = first;
        while accounts.len() < DRAIN {
            match self.rx.try_recv() {
                Ok(more) => accounts.extend(more),
                Err(_) => break,
            }
        }
        accounts.sort_unstable();
        accounts.dedup();
        let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
        let mut tokens = Vec::new();
        for account in accounts {
            match self.store.live_device_tokens(account, now).await {
                Ok(values) => tokens.extend(values.into_iter().map(|t| (account, t))),
                Err(error) => tracing::warn!(%error, "reading device tokens failed"),
            }
        }
        if tokens.is_empty() {
            return;
        }
        if let Err(error) = self.store.push_enqueue(tokens, now_ms()).await {
            tracing::warn!(%error, "queueing notifications failed");
        }
    }

    /// Starts posts for due rows while there is room.
    async fn dispatch(&mut self) {
        let free = MAX_IN_FLIGHT.saturating_sub(self.in_flight.len());
        if free == 0 {
            return;
        }
        let now = now_ms();
        if let Err(error) = self.pull_in(now).await {
            return tracing::warn!(%error, "reading the push queue failed");
        }
        let due = match self.store.push_due(now, free + self.in_flight.len()).await {
            Ok(due) => due,
            Err(error) => return tracing::warn!(%error, "reading the push queue failed"),
        };
        let fresh: Vec<PushEntry> = due
            .into_iter()
            .filter(|e| !self.in_flight.contains(&(e.account, e.token.clone())))
            .take(free)
            .collect();
        for entry in fresh {
            self.in_flight.insert((entry.account, entry.token.clone()));
            let client = Arc::clone(&self.client);
            self.tasks.spawn(async move {
                let outcome = client.post(&entry.token).await;
                (entry, outcome)
            });
        }
    }

    /// After the wall clock was put back, retries scheduled before the
    /// jump lie further ahead than any wait (`give_up_after`): they are
    /// made due now instead of waiting out the jump as well.
    async fn pull_in(&self, now: i64) -> Result<(), StoreError> {
        let latest = now.saturating_add(millis(self.options.give_up_after + POLL));
        if self
            .store
            .last_push_attempt()
            .await?
            .is_some_and(|at| at > latest)
        {
            let moved = self.store.pull_in_push(latest, now).await?;
            tracing::warn!(
                notifications = moved,
                "push queue: the clock went back; retries scheduled before are due now"
            );
        }
        Ok(())
    }

    /// Stores what the notification server answered for `entry`.
    async fn record(&mut self, entry: PushEntry, outcome: Outcome) {
        self.in_flight.remove(&(entry.account, entry.token.clone()));
        let (account, token) = (entry.account, entry.token.as_str());
        let result = match outcome {
            Outcome::Delivered => {
                chatmail_metrics::push(Metric::Ok);
                self.store.push_done(account, token).await
            }
            Outcome::Gone => {
                chatmail_metrics::push(Metric::Gone);
                tracing::info!("notification server dropped a device token");
                self.store
                    .push_token_gone(account, DEVICE_TOKEN, token)
                    .await
            }
            Outcome::Failed(cause) => self.retry(&entry, &cause).await,
        };
        if let Err(error) = result {
            tracing::warn!(%error, "recording a push outcome failed");
        }
    }

    /// Schedules the next attempt after 8^n units, or gives up at the cap.
    async fn retry(&self, entry: &PushEntry, cause: &PostError) -> Result<(), StoreError> {
        let attempts = entry.attempts.saturating_add(1);
        let now = now_ms();
        match next_attempt(&self.options, entry.created, attempts, now) {
            Some(at) => {
                chatmail_metrics::push(Metric::Retry);
                tracing::debug!(attempts, %cause, "notification failed, will retry");
                self.store
                    .push_retry(entry.account, &entry.token, attempts, at)
                    .await
            }
            None => {
                chatmail_metrics::push(Metric::GivenUp);
                tracing::info!(attempts, %cause, "notification given up");
                self.store.push_done(entry.account, &entry.token).await
            }
        }
    }

    /// How long to sleep: until the next retry, at most [`POLL`].
    async fn next_wake(&self) -> Duration {
        let now = now_ms();
        match self.store.next_push_attempt(now).await {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(POLL),
            Ok(None) => POLL,
            Err(error) => {
                tracing::warn!(%error, "reading the push queue failed");
                POLL
            }
        }
    }
}

/// When to try again after `attempts` failures of a notification queued
/// at `created` (all ms): 8^attempts units later, but no later than
/// `give_up_after` past `created`; `None` once that point has passed.
pub(crate) fn next_attempt(
    options: &PushOptions,
    created: i64,
    attempts: u32,
    now: i64,
) -> Option<i64> {
    let deadline = created.saturating_add(millis(options.give_up_after));
    if now >= deadline {
        return None;
    }
    let factor = 8_i64.checked_pow(attempts).unwrap_or(i64::MAX);
    let delay = millis(options.retry_unit).saturating_mul(factor);
    Some(now.saturating_add(delay).min(deadline))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_by_powers_of_eight_until_five_hours() {
        let options = PushOptions::new("http://localhost/");
        let created = 0;
        let s = 1000;
        assert_eq!(next_attempt(&options, created, 1, 0), Some(8 * s));
        assert_eq!(next_attempt(&options, created, 2, 8 * s), Some(72 * s));
        assert_eq!(next_attempt(&options, created, 3, 72 * s), Some(584 * s));
        assert_eq!(next_attempt(&options, created, 4, 584 * s), Some(4680 * s));
        // 8^5 s would be past the cap: one last try at 5 h.
        assert_eq!(
            next_attempt(&options, created, 5, 4680 * s),
            Some(18_000 * s)
        );
        assert_eq!(next_attempt(&options, created, 6, 18_000 * s), None);
        assert_eq!(next_attempt(&options, created, 99, 0), Some(18_000 * s));
    }
}
