//! chatmail-push: notifications to the devices of recipients
//! (docs/specifications.md §4).
//!
//! Flow: after a message is stored, the delivery path calls
//! [`Push::notify`] with the recipient accounts (never the sender's own
//! account). That only hands the accounts to the [`Worker`] over a bounded
//! channel, so a delivery never waits for push. The worker reads each
//! account's live device tokens (`/private/devicetoken`, set within the last
//! [`TOKEN_LIFETIME`]), queues one row per token in the store, and posts
//! each due token to the notification URL (at most [`MAX_IN_FLIGHT`] at
//! once). Outcomes: 200 drops the row; 410 deletes the token from the
//! account's metadata and drops the row; anything else retries after
//! 8^n seconds (n = failed attempts), with a last attempt 5 hours after the
//! notification was queued.
//!
//! Invariants:
//! - a queued row is deleted only after its outcome is known, so rows
//!   pending at shutdown or crash are retried after a restart;
//! - at most one pending row per (account, token): notifications for a
//!   device that is still waiting collapse into one;
//! - when the channel is full (the worker is far behind), a notification
//!   is dropped with a warning instead of delaying delivery;
//! - logs carry no tokens and no addresses;
//! - outcomes (ok, retry, gone, given up, dropped) are counted in
//!   `chatmail_metrics`, without labels that name a device or an account.

mod client;
mod worker;

use std::time::Duration;

use chatmail_store::{AccountId, Store};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;

pub use worker::Worker;

pub use chatmail_store::{DEVICE_TOKEN, DEVICE_TOKEN_LIFETIME as TOKEN_LIFETIME};
/// Notifications posted at the same time.
pub const MAX_IN_FLIGHT: usize = 16;
/// [`Push::notify`] calls waiting for the worker.
const CHANNEL: usize = 4096;

/// Failures when starting push.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// `[push] url` cannot be posted to.
    #[error("notification URL {url}: {reason}")]
    Url { url: String, reason: &'static str },
    /// rustls refused the client configuration.
    #[error("TLS setup: {0}")]
    Tls(#[source] rustls::Error),
}

/// How notifications are sent.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Notification endpoint (`[push] url`), `http` or `https`.
    pub url: String,
    /// Roots trusted besides the web PKI (a test server's certificate).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The unit of the 8^n backoff: one second, shorter in tests.
    pub retry_unit: Duration,
    /// No attempt later than this after a notification was queued.
    pub give_up_after: Duration,
}

impl PushOptions {
    /// The relay defaults of docs/specifications.md §4 for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            extra_roots: Vec::new(),
            retry_unit: Duration::from_secs(1),
            give_up_after: Duration::from_secs(5 * 3600),
        }
    }
}

/// Handle given to the delivery paths; cheap to clone.
#[derive(Clone)]
pub struct Push {
    /// Accounts to notify, towards the worker.
    tx: mpsc::Sender<Vec<AccountId>>,
}

impl Push {
    /// A handle and the worker that serves it; the caller runs
    /// [`Worker::run`] (notifications wait in the channel until it does).
    pub fn new(store: Store, options: PushOptions) -> Result<(Push, Worker), PushError> {
        let client = client::Client::new(&options.url, &options.extra_roots)?;
        let (tx, rx) = mpsc::channel(CHANNEL);
        Ok((Push { tx }, Worker::new(store, client, options, rx)))
    }

    /// Notifies the devices of `accounts` about a new message. Never waits.
    pub fn notify(&self, accounts: &[AccountId]) {
        if accounts.is_empty() {
            return;
        }
        match self.tx.try_send(accounts.to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                chatmail_metrics::push(chatmail_metrics::Push::Dropped);
                tracing::warn!("push queue full, notification dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("push worker stopped, notification dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests;
