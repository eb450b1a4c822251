//! chatmail-queue: the durable outbound queue (docs/specifications.md §6): messages for
//! other relays are DKIM-signed, committed to the store, handed to the
//! transport by bounded workers, retried with backoff for the queue
//! lifetime, and bounced to the sender when they fail for good.
//!
//! Flow:
//! 1. [`Queue::submit`] signs the message and commits it with one row per
//!    recipient ([`Store::enqueue`], fsync'd on return),
//!    then wakes the scheduler.
//! 2. One scheduler task (module `worker`) sleeps until a submit, the next
//!    due time or the end of an attempt (never polls), takes the due
//!    (message, domain) groups and runs each as one attempt through the
//!    [`Deliver`] implementation, at most [`QueueOptions::max_parallel`] at
//!    once and never two for the same message and domain.
//! 3. Each attempt's outcomes are recorded in one transaction together with
//!    the bounce ([`dsn`]) for recipients that failed for good.
//!    [`dsn::build`] is public so that submission can bounce local
//!    recipients whose mailbox was full at delivery.
//!
//! Retries: after the n-th failed attempt the next one waits
//! [`BACKOFF`]`[n-1]` (1, 5, 15, 30, 60 minutes, then hourly), but never
//! past `created + queue_lifetime`; a temporary failure at or after that
//! moment is final (status 4.4.7, RFC 3463 §3.5). Times are wall-clock
//! milliseconds, so that they survive a restart; a retry found further
//! ahead than the longest backoff was set by a clock that has since been
//! put back, and is made due at once rather than waiting out the jump.
//!
//! Invariants:
//! - `submit` returns only once the message is durable; after a crash or
//!   shutdown every pending recipient is tried again (attempts in flight
//!   are simply repeated, so a peer may see a message twice, never zero
//!   times);
//! - bounces go only to a local sender, never for the null sender (RFC 3464
//!   §2, no bounce of a bounce), and carry the original headers only;
//! - IP-literal relays send unsigned mail (no DNS name to publish a key
//!   under; receivers exempt IP-literal domains from the DKIM check).

pub mod dsn;
mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatmail_config::{MailDomain, Settings};
use chatmail_dkim::DkimKey;
use chatmail_store::{QueueEntry, QueueRecipient, Store};
use chatmail_transport::{Report, Transport};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Waits after the 1st, 2nd, ... failed attempt; the last one repeats.
pub const BACKOFF: [Duration; 5] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
];

/// Queue failures.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("store: {0}")]
    Store(#[from] chatmail_store::StoreError),
    #[error("DKIM: {0}")]
    Dkim(#[from] chatmail_dkim::DkimError),
    /// A recipient has no `@domain` part.
    #[error("recipient without a domain")]
    InvalidRecipient,
    /// The signing task died.
    #[error("signing task failed")]
    Signing,
}

/// Something that carries a message to the relay of one domain: the
/// [`Transport`] in production, a scripted peer in tests.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers `message` to `recipients`, all at `domain`; one result per
    /// recipient in the order given.
    fn deliver(
        &self,
        domain: &str,
        sender: Option<&str>,
        recipients: &[String],
        message: &[u8],
    ) -> impl Future<Output = Report> + Send;
}

/// A shared deliverer (the caller keeps a handle, e.g. to inspect a test peer).
impl<D: Deliver> Deliver for Arc<D> {
    fn deliver(
        &self,
        domain: &str,
        sender: Option<&str>,
        recipients: &[String],
        message: &[u8],
    ) -> impl Future<Output = Report> + Send {
        D::deliver(self, domain, sender, recipients, message)
    }
}

impl Deliver for Transport {
    fn deliver(
        &self,
        domain: &str,
        sender: Option<&str>,
        recipients: &[String],
        message: &[u8],
    ) -> impl Future<Output = Report> + Send {
        Transport::deliver(self, domain, sender, recipients, message)
    }
}

/// Scheduling parameters, normally taken from the settings.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Waits between attempts (see [`BACKOFF`]); must not be empty.
    pub backoff: Vec<Duration>,
    /// How long a message is retried before it bounces.
    pub lifetime: Duration,
    /// Attempts in flight at once, over all destinations.
    pub max_parallel: usize,
}

impl QueueOptions {
    /// `federation.queue_lifetime`, `federation.max_parallel_deliveries` and
    /// the standard [`BACKOFF`].
    pub fn from_settings(settings: &Settings) -> Self {
        let federation = &settings.config.federation;
        QueueOptions {
            backoff: BACKOFF.to_vec(),
            lifetime: Duration::from_secs(federation.queue_lifetime),
            max_parallel: federation.max_parallel_deliveries.max(1),
        }
    }
}

/// Counts for `madmail queue` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages with a pending recipient.
    pub messages: u64,
    /// Pending recipients.
    pub recipients: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Since start: recipients delivered over `/mxdeliv`.
    pub delivered_mxdeliv: u64,
    /// Since start: recipients delivered over SMTP.
    pub delivered_smtp: u64,
    /// Since start: recipients that failed temporarily (and wait).
    pub deferred: u64,
    /// Since start: recipients given up (rejected or expired).
    pub failed: u64,
    /// Since start: bounces stored.
    pub bounces: u64,
}

/// Counters updated by the workers.
#[derive(Default)]
struct Counters {
    in_flight: AtomicU64,
    delivered_mxdeliv: AtomicU64,
    delivered_smtp: AtomicU64,
    deferred: AtomicU64,
    failed: AtomicU64,
    bounces: AtomicU64,
}

/// State shared by the handles and the workers.
struct Shared {
    store: Store,
    /// Signs submitted messages and bounces.
    dkim: Arc<DkimKey>,
    settings: Arc<Settings>,
    /// Wakes the scheduler after a submit or flush.
    wake: Notify,
    counters: Counters,
    /// The scheduler, taken by [`Queue::stopped`].
    scheduler: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the running queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
}

impl Queue {
    /// Starts the workers; they stop when `shutdown` is cancelled. Messages
    /// left from before a restart are picked up.
    pub async fn start(
        store: Store,
        transport: Transport,
        dkim: Arc<DkimKey>,
        settings: Arc<Settings>,
        shutdown: CancellationToken,
    ) -> Result<Queue, QueueError> {
        let options = QueueOptions::from_settings(&settings);
        Self::start_with(store, transport, dkim, settings, options, shutdown).await
    }

    /// [`Queue::start`] with any [`Deliver`] and explicit options.
    pub async fn start_with<D: Deliver>(
        store: Store,
        deliver: D,
        dkim: Arc<DkimKey>,
        settings: Arc<Settings>,
        options: QueueOptions,
        shutdown: CancellationToken,
    ) -> Result<Queue, QueueError> {
        let shared = Arc::new(Shared {
            store,
            dkim,
            settings,
            wake: Notify::new(),
            counters: Counters::default(),
            scheduler: Mutex::new(None),
        });
        let task = worker::spawn(shared.clone(), Arc::new(deliver), options, shutdown);
        if let Ok(mut slot) = shared.scheduler.lock() {
            *slot = Some(task);
        }
        Ok(Queue { shared })
    }

    /// DKIM-signs `message` and queues it for the remote `recipients`;
    /// returns once it is durable (the caller may then answer 250). An
    /// empty `sender` is the null sender (never bounced). Fails, queueing
    /// nothing, when a recipient has no domain or the message cannot be
    /// signed (no `From:`).
    pub async fn submit(
        &self,
        sender: &str,
        recipients: &[String],
        message: bytes::Bytes,
    ) -> Result<(), QueueError> {
        if recipients.is_empty() {
            return Ok(());
        }
        let recipients = recipients
            .iter()
            .map(|address| queue_recipient(address))
            .collect::<Option<Vec<_>>>()
            .ok_or(QueueError::InvalidRecipient)?;
        let signed = self.sign(message).await?;
        let sender = Some(sender).filter(|s| !s.is_empty());
        let store = &self.shared.store;
        store.enqueue(sender, &recipients, signed, now_ms()).await?;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Signs off the async threads (RSA signing takes a while).
    async fn sign(&self, message: bytes::Bytes) -> Result<bytes::Bytes, QueueError> {
        let MailDomain::Name(domain) = self.shared.settings.domain.clone() else {
            return Ok(message);
        };
        let dkim = self.shared.dkim.clone();
        let signed = tokio::task::spawn_blocking(move || dkim.sign(&message, &domain))
            .await
            .map_err(|_| QueueError::Signing)??;
        Ok(bytes::Bytes::from(signed))
    }

    /// Queue length and outcome counters.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let counts = self.shared.store.queue_counts().await?;
        let c = &self.shared.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        Ok(QueueStats {
            messages: counts.messages,
            recipients: counts.recipients,
            in_flight: get(&c.in_flight),
            delivered_mxdeliv: get(&c.delivered_mxdeliv),
            delivered_smtp: get(&c.delivered_smtp),
            deferred: get(&c.deferred),
            failed: get(&c.failed),
            bounces: get(&c.bounces),
        })
    }

    /// Every queued recipient (`madmail queue list`).
    pub async fn entries(&self) -> Result<Vec<QueueEntry>, QueueError> {
        Ok(self.shared.store.queue_entries().await?)
    }

    /// Makes everything due now and wakes the workers; returns how many
    /// recipients were pending.
    pub async fn flush(&self) -> Result<u64, QueueError> {
        let n = self.shared.store.queue_flush().await?;
        self.shared.wake.notify_one();
        Ok(n)
    }

    /// Drops every queued message without bouncing; returns how many.
    pub async fn purge(&self) -> Result<u64, QueueError> {
        Ok(self.shared.store.queue_purge().await?)
    }

    /// Waits until the scheduler has stopped: after `shutdown`, or early if
    /// it panics (the error says so). Only the first caller waits; later
    /// calls return at once.
    pub async fn stopped(&self) -> Result<(), tokio::task::JoinError> {
        let task = self.shared.scheduler.lock().ok().and_then(|mut t| t.take());
        match task {
            Some(task) => task.await,
            None => Ok(()),
        }
    }
}

/// The recipient with its lower-cased domain, if it has one.
fn queue_recipient(address: &str) -> Option<QueueRecipient> {
    let (_, domain) = address.rsplit_once('@')?;
    if domain.is_empty() {
        return None;
    }
    Some(QueueRecipient {
        address: address.to_owned(),
        domain: domain.to_ascii_lowercase(),
    })
}

/// Now, in Unix milliseconds (the queue's time unit).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_grouped_by_lower_cased_domain() {
        let r = queue_recipient("Bob@Example.NET").unwrap();
        assert_eq!(r.domain, "example.net");
        assert_eq!(r.address, "Bob@Example.NET");
        assert!(queue_recipient("nobody").is_none());
        assert!(queue_recipient("x@").is_none());
    }
}
