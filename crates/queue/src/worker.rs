//! The scheduler and the delivery attempts.
//!
//! One scheduler task owns a `JoinSet` of attempts. Each round it asks the
//! store for due (message, domain) groups, starts those not already in
//! flight while fewer than `max_parallel` run (and fewer than a quarter of
//! them for any one domain), then sleeps until the first
//! of: shutdown, a submit or flush ([`Notify`](tokio::sync::Notify)), the
//! end of an attempt, or the next due time (at most [`MAX_SLEEP`]). On shutdown the attempts are
//! aborted; their recipients are still pending and run again after a
//! restart. Each recipient's outcome is also counted in `chatmail_metrics`
//! (by transport and outcome, never by domain).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chatmail_store::{AttemptOutcome, DueDelivery, QueueId, StoreError};
use chatmail_transport::{Outcome, Report, Via};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dsn::{self, Failure};
use crate::{Deliver, QueueOptions, Shared, now_ms};

/// Pause after the store failed, before the scheduler tries again.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Longest sleep: the store is re-read at least this often, so that work
/// queued or flushed by another process (`madmail queue flush`) is found.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// A (message, domain) group: the unit of one attempt.
type Key = (QueueId, String);

/// Starts the scheduler.
pub(crate) fn spawn<D: Deliver>(
    shared: Arc<Shared>,
    deliver: Arc<D>,
    options: QueueOptions,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let scheduler = Scheduler {
        shared,
        deliver,
        options: Arc::new(options),
        running: JoinSet::new(),
        in_flight: HashMap::new(),
    };
    tokio::spawn(scheduler.run(shutdown))
}

struct Scheduler<D> {
    shared: Arc<Shared>,
    deliver: Arc<D>,
    options: Arc<QueueOptions>,
    /// The attempts in flight; dropping the set aborts them.
    running: JoinSet<()>,
    /// Which group each running attempt serves, so that a group never has
    /// two attempts at once.
    in_flight: HashMap<tokio::task::Id, Key>,
}

impl<D: Deliver> Scheduler<D> {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let next = match self.launch_due().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "outbound queue: reading the store failed");
                    Some(Instant::now() + STORE_RETRY)
                }
            };
            let latest = Instant::now() + MAX_SLEEP;
            let sleep = tokio::time::sleep_until(next.map_or(latest, |n| n.min(latest)));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.shared.wake.notified() => {}
                Some(done) = self.running.join_next_with_id() => {
                    let id = match &done { Ok((id, ())) => *id, Err(e) => e.id() };
                    self.in_flight.remove(&id);
                }
                () = sleep => {}
            }
            let running = u64::try_from(self.running.len()).unwrap_or(u64::MAX);
            self.shared
                .counters
                .in_flight
                .store(running, Ordering::Relaxed);
        }
        self.running.shutdown().await;
        self.shared.counters.in_flight.store(0, Ordering::Relaxed);
    }

    /// Starts due attempts, at most [`per_domain`] at once for one domain;
    /// returns when the next pending one is due.
    async fn launch_due(&mut self) -> Result<Option<Instant>, StoreError> {
        let now = now_ms();
        self.pull_in(now).await?;
        let free = self.options.max_parallel.saturating_sub(self.running.len());
        if free > 0 {
            let cap = per_domain(self.options.max_parallel);
            let mut running: HashMap<String, usize> = HashMap::new();
            for (_, domain) in self.in_flight.values() {
                *running.entry(domain.clone()).or_default() += 1;
            }
            let full: Vec<String> = running
                .iter()
                .filter(|(_, n)| **n >= cap)
                .map(|(domain, _)| domain.clone())
                .collect();
            let limit = free + self.running.len();
            let store = &self.shared.store;
            let due = store.due_deliveries_except(now, limit, &full).await?;
            let busy: HashSet<&Key> = self.in_flight.values().collect();
            let mut fresh: Vec<DueDelivery> = Vec::new();
            for due in due {
                if fresh.len() == free || busy.contains(&(due.id, due.domain.clone())) {
                    continue;
                }
                let count = running.entry(due.domain.clone()).or_default();
                if *count < cap {
                    *count += 1;
                    fresh.push(due);
                }
            }
            for due in fresh {
                self.launch(due);
            }
        }
        let next = self.shared.store.next_queue_attempt(now).await?;
        Ok(next.map(|at| {
            let wait = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            Instant::now() + Duration::from_millis(wait)
        }))
    }

    /// After the wall clock was put back, retries scheduled before the
    /// jump lie further ahead than the longest backoff: they are made due
    /// now instead of waiting out the jump as well. A jump forward needs
    /// nothing: the retries are simply due sooner.
    async fn pull_in(&self, now: i64) -> Result<(), StoreError> {
        let longest = self
            .options
            .backoff
            .iter()
            .max()
            .copied()
            .unwrap_or_default();
        // The slack covers attempts that record their retry while this runs.
        let horizon = i64::try_from((longest + MAX_SLEEP).as_millis()).unwrap_or(i64::MAX);
        let latest = now.saturating_add(horizon);
        let store = &self.shared.store;
        if store
            .last_queue_attempt()
            .await?
            .is_some_and(|at| at > latest)
        {
            let moved = store.pull_in_queue(latest, now).await?;
            tracing::warn!(
                recipients = moved,
                "outbound queue: the clock went back; retries scheduled before are due now"
            );
        }
        Ok(())
    }

    fn launch(&mut self, due: DueDelivery) {
        let key = (due.id, due.domain.clone());
        let task = attempt(
            self.shared.clone(),
            self.deliver.clone(),
            self.options.clone(),
            due,
        );
        let handle = self.running.spawn(task);
        self.in_flight.insert(handle.id(), key);
    }
}

/// The most attempts to one domain at once: a quarter of the slots, so
/// that peers which take connections and never answer (each attempt then
/// waits for its time-outs) can hold at most that many and the mail to
/// every other domain keeps flowing.
fn per_domain(max_parallel: usize) -> usize {
    (max_parallel / 4).max(1)
}

/// One attempt: deliver, classify, record (with the bounce), log.
async fn attempt<D: Deliver>(
    shared: Arc<Shared>,
    deliver: Arc<D>,
    options: Arc<QueueOptions>,
    due: DueDelivery,
) {
    let store = &shared.store;
    let body = match store.queued_body(due.id).await {
        Ok(Some(body)) => body,
        Ok(None) => return, // purged meanwhile
        Err(e) => {
            tracing::error!(error = %e, queue_id = due.id, "outbound queue: reading a message failed");
            // Holds the group back so that a failing store is not hammered.
            tokio::time::sleep(STORE_RETRY).await;
            return;
        }
    };
    let started = Instant::now();
    let sender = due.sender.as_deref();
    let report = deliver
        .deliver(&due.domain, sender, &due.recipients, &body)
        .await;
    let (outcomes, failures) = classify(&due, &report, now_ms(), &options);
    let bounce = dsn::bounce(&shared, &due, &failures, &body).await;
    let bounced = bounce.is_some();
    if let Err(e) = store.record_attempt(due.id, outcomes.clone(), bounce).await {
        tracing::error!(error = %e, queue_id = due.id, "outbound queue: recording an attempt failed");
        tokio::time::sleep(STORE_RETRY).await;
        return;
    }
    count(&shared, &report, &outcomes, bounced);
    let delivered = outcomes
        .iter()
        .any(|(_, o)| matches!(o, AttemptOutcome::Delivered));
    chatmail_metrics::peers::peer_attempt(
        &due.domain,
        transport(&report),
        delivered,
        started.elapsed(),
    );
    log_attempt(&shared, &due, &report, &outcomes, started.elapsed());
}

/// Turns the peer's answers into stored outcomes, and lists the recipients
/// that failed for good. A recipient the report forgot counts as a
/// temporary failure.
pub(crate) fn classify(
    due: &DueDelivery,
    report: &Report,
    now: i64,
    options: &QueueOptions,
) -> (Vec<(String, AttemptOutcome)>, Vec<Failure>) {
    let lifetime = i64::try_from(options.lifetime.as_millis()).unwrap_or(i64::MAX);
    let expiry = due.created.saturating_add(lifetime);
    let retry_at = now
        .saturating_add(backoff_ms(options, due.attempts))
        .min(expiry);
    let mut outcomes = Vec::with_capacity(due.recipients.len());
    let mut failures = Vec::new();
    for rcpt in &due.recipients {
        let outcome = report
            .results
            .iter()
            .find(|(r, _)| r == rcpt)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| Outcome::Temporary("no result from the transport".into()));
        let stored = match outcome {
            Outcome::Delivered => AttemptOutcome::Delivered,
            Outcome::Temporary(error) if now < expiry => AttemptOutcome::Retry {
                at: retry_at,
                error,
            },
            Outcome::Temporary(error) => {
                failures.push(Failure::expired(rcpt, &error));
                AttemptOutcome::Failed(format!("expired: {error}"))
            }
            Outcome::Permanent(error) => {
                failures.push(Failure::rejected(rcpt, &error));
                AttemptOutcome::Failed(error)
            }
        };
        outcomes.push((rcpt.clone(), stored));
    }
    (outcomes, failures)
}

/// The wait after attempt number `attempts + 1` failed.
fn backoff_ms(options: &QueueOptions, attempts: u32) -> i64 {
    let index = usize::try_from(attempts).unwrap_or(usize::MAX);
    let wait = options
        .backoff
        .get(index)
        .or(options.backoff.last())
        .copied()
        .unwrap_or(Duration::from_secs(3600));
    i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)
}

/// Updates the queue's own counters and the process metrics
/// (`chatmail_metrics`: per recipient, by transport and outcome).
fn transport(report: &Report) -> chatmail_metrics::Transport {
    use chatmail_metrics::Transport;
    match report.via {
        Some(Via::MxDeliv) => Transport::Mxdeliv,
        Some(Via::Smtp) => Transport::Smtp,
        None => Transport::None,
    }
}

fn count(shared: &Shared, report: &Report, outcomes: &[(String, AttemptOutcome)], bounced: bool) {
    use chatmail_metrics::Delivery;
    let c = &shared.counters;
    let transport = transport(report);
    for (_, outcome) in outcomes {
        let (counter, metric) = match (outcome, report.via) {
            (AttemptOutcome::Delivered, Some(Via::Smtp)) => {
                (&c.delivered_smtp, Delivery::Delivered)
            }
            (AttemptOutcome::Delivered, _) => (&c.delivered_mxdeliv, Delivery::Delivered),
            (AttemptOutcome::Retry { .. }, _) => (&c.deferred, Delivery::Deferred),
            (AttemptOutcome::Failed(_), _) => (&c.failed, Delivery::Failed),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        chatmail_metrics::delivery(transport, metric);
    }
    if bounced {
        c.bounces.fetch_add(1, Ordering::Relaxed);
        chatmail_metrics::bounce();
    }
}

/// One event per attempt; the peer domain only when logging may name it.
fn log_attempt(
    shared: &Shared,
    due: &DueDelivery,
    report: &Report,
    outcomes: &[(String, AttemptOutcome)],
    elapsed: Duration,
) {
    let tally = |f: fn(&AttemptOutcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    let delivered = tally(|o| matches!(o, AttemptOutcome::Delivered));
    let deferred = tally(|o| matches!(o, AttemptOutcome::Retry { .. }));
    let failed = tally(|o| matches!(o, AttemptOutcome::Failed(_)));
    let domain = if shared.settings.config.log.no_log {
        "-"
    } else {
        due.domain.as_str()
    };
    let via = match report.via {
        Some(Via::MxDeliv) => "mxdeliv",
        Some(Via::Smtp) => "smtp",
        None => "none",
    };
    tracing::info!(
        queue_id = due.id,
        domain,
        via,
        attempt = due.attempts.saturating_add(1),
        delivered,
        deferred,
        failed,
        elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "outbound delivery attempt"
    );
}
