//! chatmail-transport: delivery of one message to the relay of one domain
//! (docs/specifications.md §6 outbound).
//!
//! Flow of [`Transport::deliver`]:
//! 1. route ([`route`]): a static route, an IP literal, or the domain's MX
//!    hosts by preference (implicit MX when there is none; null MX and
//!    NXDOMAIN fail every recipient permanently);
//! 2. per host, in order: `POST https://<host>/mxdeliv` ([`mxdeliv`]),
//!    unless the host is in the "no /mxdeliv" memory ([`memory`]); when it
//!    gives no usable answer, SMTP with STARTTLS ([`smtp`]); a successful
//!    SMTP fallback puts the host in the memory for 30 minutes;
//! 3. a permanent refusal or any delivered recipient ends the attempt; a
//!    temporary failure moves on to the next host.
//!
//! Invariants: never panics on peer input; every recipient gets an
//! [`Outcome`] with a text fit for a bounce; logs name hosts and causes,
//! never addresses or message contents. Certificates must be valid except
//! for `_`-prefixed test domains and IP literals ([`tls`]).

mod memory;
mod mxdeliv;
mod resolver;
mod route;
mod smtp;
mod tls;

pub use resolver::resolver_builder;
pub use tls::AnyCertificate;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chatmail_config::Settings;

/// docs/specifications.md §6: how long a host stays in the "no /mxdeliv" memory.
const NO_MXDELIV_FOR: Duration = Duration::from_secs(30 * 60);
/// Hosts the memory holds at most.
const NO_MXDELIV_CAPACITY: usize = 4096;

/// How a message reached the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `POST https://<mx>/mxdeliv`.
    MxDeliv,
    /// SMTP with STARTTLS on the MX port.
    Smtp,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer accepted the message for this recipient.
    Delivered,
    /// Try again later; the text is the peer's reply or our cause.
    Temporary(String),
    /// Give up and bounce; the text is the peer's reply or our cause.
    Permanent(String),
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The transport that carried the message, if any did.
    pub via: Option<Via>,
    /// One entry per recipient, in the order given.
    pub results: Vec<(String, Outcome)>,
}

impl Report {
    /// The same `outcome` for every recipient.
    fn all(recipients: &[String], via: Option<Via>, outcome: Outcome) -> Self {
        Self {
            via,
            results: recipients
                .iter()
                .map(|r| (r.clone(), outcome.clone()))
                .collect(),
        }
    }
}

/// Why a transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// rustls refused the client configuration (protocol versions of the
    /// crypto provider).
    #[error("TLS setup: {0}")]
    Tls(#[source] rustls::Error),
}

/// Delivers to other relays; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    resolver: hickory_resolver::TokioResolver,
    /// TCP connections to peers (SMTP; the `/mxdeliv` client has its own).
    dialer: route::Dialer,
    connectors: Arc<tls::Connectors>,
    /// `/mxdeliv` client with its keep-alive pool.
    http: mxdeliv::Client,
    /// Hosts whose `/mxdeliv` failed while SMTP worked.
    no_mxdeliv: memory::NoMxdeliv,
}

/// What trying one host led to.
enum Step {
    /// The attempt is over.
    Done(Report),
    /// Nothing delivered, for a temporary reason: try the next host.
    Next(HopError),
}

/// Why one host gave no final answer. The text is logged, and the last
/// host's becomes the text of the temporary outcome.
#[derive(Debug, thiserror::Error)]
enum HopError {
    /// The peer's temporary refusal, as it wrote it (`451 4.3.0 ...`).
    #[error("{0}")]
    Refused(String),
    /// No TCP connection to the SMTP port.
    #[error("SMTP: {0}")]
    Connect(#[source] route::ConnectError),
    #[error(transparent)]
    TlsName(#[from] tls::NameError),
    /// The SMTP session ended before the transaction ran.
    #[error("SMTP: {0}")]
    Smtp(#[source] smtp::SmtpError),
}

/// One message and its envelope.
struct Message<'a> {
    domain: &'a str,
    sender: Option<&'a str>,
    recipients: &'a [String],
    body: Bytes,
}

impl Transport {
    /// A transport using `resolver` for MX lookups.
    pub fn new(
        settings: Arc<Settings>,
        resolver: hickory_resolver::TokioResolver,
    ) -> Result<Self, TransportError> {
        let connectors = Arc::new(tls::Connectors::new()?);
        let dialer = route::Dialer::new(resolver.clone(), &settings);
        let http = mxdeliv::Client::new(dialer.clone(), connectors.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                resolver,
                dialer,
                connectors,
                http,
                no_mxdeliv: memory::NoMxdeliv::new(NO_MXDELIV_FOR, NO_MXDELIV_CAPACITY),
            }),
        })
    }

    /// Delivers `message` (already DKIM-signed) from `sender` (`None`: the
    /// null sender of bounces) to `recipients`, which all belong to
    /// `domain`. Never panics; every failure is an [`Outcome`].
    pub async fn deliver(
        &self,
        domain: &str,
        sender: Option<&str>,
        recipients: &[String],
        message: &[u8],
    ) -> Report {
        if recipients.is_empty() {
            return Report::all(recipients, None, Outcome::Delivered);
        }
        let inner = &self.inner;
        let hops = match route::resolve(&inner.settings, &inner.resolver, domain).await {
            Ok(hops) => hops,
            Err(outcome) => return Report::all(recipients, None, outcome),
        };
        let message = Message {
            domain,
            sender,
            recipients,
            body: Bytes::copy_from_slice(message),
        };
        let mut last = None;
        for hop in &hops {
            match self.try_hop(hop, &message).await {
                Step::Done(report) => return report,
                Step::Next(cause) => {
                    tracing::debug!(domain, host = hop.host, "temporary failure: {cause}");
                    last = Some(cause);
                }
            }
        }
        let last = last.map_or_else(|| "no MX host could be tried".to_owned(), |c| c.to_string());
        let cause = format!(
            "451 4.4.1 {}: {last}",
            hops.last().map_or(domain, |h| &h.host)
        );
        Report::all(recipients, None, Outcome::Temporary(cause))
    }

    /// `/mxdeliv`, then SMTP, on one host.
    async fn try_hop(&self, hop: &route::Hop, message: &Message<'_>) -> Step {
        let any_certificate = tls::accepts_any_certificate(message.domain);
        let mut tried_https = None;
        if let Some(port) = hop.https_port
            && !self.inner.no_mxdeliv.skips(&hop.host, port)
        {
            let post = mxdeliv::Post {
                host: &hop.host,
                port,
                any_certificate,
                sender: message.sender,
                recipients: message.recipients,
                message: message.body.clone(),
            };
            let recipients = message.recipients;
            match self.inner.http.post(&post).await {
                mxdeliv::Reply::Delivered => {
                    return Step::Done(Report::all(
                        recipients,
                        Some(Via::MxDeliv),
                        Outcome::Delivered,
                    ));
                }
                mxdeliv::Reply::Permanent(text) => {
                    return Step::Done(Report::all(recipients, None, Outcome::Permanent(text)));
                }
                mxdeliv::Reply::Temporary(text) => return Step::Next(HopError::Refused(text)),
                mxdeliv::Reply::Unavailable(cause) => {
                    tracing::debug!(host = hop.host, "falling back to SMTP: {cause}");
                    tried_https = Some(port);
                }
            }
        }
        let step = self.try_smtp(hop, message, any_certificate).await;
        if let (Some(port), Step::Done(_)) = (tried_https, &step) {
            self.inner.no_mxdeliv.remember(&hop.host, port);
        }
        step
    }

    async fn try_smtp(
        &self,
        hop: &route::Hop,
        message: &Message<'_>,
        any_certificate: bool,
    ) -> Step {
        let recipients = message.recipients;
        let tcp = match self.inner.dialer.connect(&hop.host, hop.smtp_port).await {
            Ok(tcp) => tcp,
            Err(cause) => return Step::Next(HopError::Connect(cause)),
        };
        let name = match tls::server_name(&hop.host) {
            Ok(name) => name,
            Err(cause) => return Step::Next(cause.into()),
        };
        let helo = self.inner.settings.domain.address_part();
        let envelope = smtp::Envelope {
            helo: &helo,
            sender: message.sender,
            recipients,
            message: &message.body,
        };
        let tls = self.inner.connectors.smtp(any_certificate);
        match smtp::deliver(tcp, tls, name, &envelope).await {
            smtp::Attempt::Done(outcomes) => finish_smtp(recipients, outcomes),
            smtp::Attempt::Temporary(cause) => Step::Next(HopError::Smtp(cause)),
            smtp::Attempt::Permanent(text) => {
                Step::Done(Report::all(recipients, None, Outcome::Permanent(text)))
            }
        }
    }
}

/// The report of an SMTP transaction; all-temporary means "next host".
fn finish_smtp(recipients: &[String], outcomes: Vec<Outcome>) -> Step {
    let all_temporary = outcomes.iter().all(|o| matches!(o, Outcome::Temporary(_)));
    if all_temporary && let Some(Outcome::Temporary(text)) = outcomes.first() {
        return Step::Next(HopError::Refused(text.clone()));
    }
    let delivered = outcomes.contains(&Outcome::Delivered);
    Step::Done(Report {
        via: delivered.then_some(Via::Smtp),
        results: recipients.iter().cloned().zip(outcomes).collect(),
    })
}

#[cfg(test)]
mod tests;
