//! chatmail-metrics: the process-wide counters and gauges, and the opt-in
//! Prometheus endpoint that exposes them.
//!
//! Flow: the protocol crates count events through the free functions of
//! this crate ([`login`], [`refused`], [`connection`], ...), which update a
//! global registry; [`serve`] answers `GET /metrics` with the registry in
//! the OpenMetrics text format (which Prometheus scrapes). The relay starts
//! [`serve`] only with `[metrics] enabled = true`, on `[metrics] listen`
//! (`127.0.0.1:9465` by default: loopback, and a port no chatmail service
//! uses). The endpoint has no authentication: keep it on loopback or behind
//! a firewall.
//!
//! Exposed (all prefixed `madmail_`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `connections` | gauge | `protocol`: imap, smtp (port 25), submission, https |
//! | `connections_refused_total` | counter | `protocol` (over a connection limit) |
//! | `logins_total` | counter | `outcome`: ok, created, failed, throttled, unavailable |
//! | `accounts_created_total` | counter | – |
//! | `messages_accepted_total` | counter | `source`: submission, mx (port 25), mxdeliv |
//! | `messages_refused_total` | counter | `source`, `reason` (see [`Reason`]) |
//! | `deliveries_total` | counter | `transport`: mxdeliv, smtp, none; `outcome`: delivered, deferred, failed |
//! | `bounces_total` | counter | – |
//! | `queue_messages`, `queue_recipients` | gauge | – (read from the store at each scrape) |
//! | `push_notifications_total` | counter | `outcome`: ok, retry, gone, given_up, dropped |
//! | `turn_allocations` | gauge | – (live TURN allocations) |
//! | `turn_relayed_bytes_total` | counter | – (both directions) |
//! | `turn_auth_failures_total` | counter | – (expired, malformed or foreign credentials) |
//! | `turn_peers_refused_total` | counter | – (permissions for peers the rule denies) |
//! | `iroh_connections` | gauge | – (live iroh relay clients) |
//! | `iroh_clients_accepted_total` | counter | – (iroh relay clients accepted) |
//! | `iroh_relayed_bytes_total` | counter | – (packet bytes the iroh relay delivered to clients) |
//! | `shadowsocks_connections` | gauge | – (live Shadowsocks proxy connections) |
//! | `shadowsocks_tunnels_total` | counter | – (proxy connections forwarded to a relay port) |
//! | `shadowsocks_refused_total` | counter | `reason`: handshake, destination, limit |
//! | `shadowsocks_relayed_bytes_total` | counter | – (both directions) |
//!
//! Invariants:
//! - every label value comes from a fixed enum of this crate: no metric
//!   carries an address, a user, a token or an IP address, and the number
//!   of series is fixed;
//! - counting is one relaxed atomic add on a counter resolved when the
//!   registry was built: no lock, no allocation, no hashing on the hot path;
//! - every series exists from the start (at 0), so rates work from the
//!   first scrape.

pub mod peers;
mod serve;

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use serve::{CONTENT_TYPE, serve};

/// Defines a label enum with its fixed wire values.
macro_rules! label {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The label value on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

label! {
    /// What a connection speaks (port 443 sessions count as what they speak).
    Protocol {
        /// IMAP on 993, 143 or 443.
        Imap => "imap",
        /// The MX on port 25.
        Smtp => "smtp",
        /// Submission on 465, 587 or 443.
        Submission => "submission",
        /// HTTP on 443.
        Https => "https",
    }
}

label! {
    /// How a login ended.
    Login {
        /// An existing account with the right password.
        Ok => "ok",
        /// A first login that created the account.
        Created => "created",
        /// Refused: wrong password, bad address, closed registration.
        Failed => "failed",
        /// Refused unchecked: too many failures from the client's address.
        Throttled => "throttled",
        /// Temporary failure: password checks saturated, store error or
        /// resource shortage.
        Unavailable => "unavailable",
    }
}

label! {
    /// Where a message came in.
    Source {
        /// SMTP submission by a local user.
        Submission => "submission",
        /// The SMTP MX on port 25.
        Mx => "mx",
        /// `POST /mxdeliv` from another relay.
        Mxdeliv => "mxdeliv",
    }
}

label! {
    /// Why a message (or one recipient of it) was refused.
    Reason {
        /// Not encrypted (the encryption gate, docs/specifications.md §2).
        Unencrypted => "unencrypted",
        /// A recipient's mailbox is full.
        Quota => "quota",
        /// Over `max_message_size`.
        Size => "size",
        /// The sender's send rate.
        Rate => "rate",
        /// Unknown, non-local or too many recipients.
        Recipient => "recipient",
        /// Envelope sender not owned by the login or malformed.
        Sender => "sender",
        /// The `From:` header does not fit.
        From => "from",
        /// No valid DKIM signature of the From domain.
        Dkim => "dkim",
        /// The federation policy.
        Policy => "policy",
        /// Malformed data (bare CR or LF, bad request).
        Syntax => "syntax",
        /// A temporary failure (store, DNS, queue).
        Temporary => "temporary",
    }
}

label! {
    /// How an outbound attempt reached the peer.
    Transport {
        /// `POST /mxdeliv`.
        Mxdeliv => "mxdeliv",
        /// SMTP on port 25.
        Smtp => "smtp",
        /// No connection was made.
        None => "none",
    }
}

label! {
    /// One recipient's result of an outbound attempt.
    Delivery {
        /// Accepted by the peer.
        Delivered => "delivered",
        /// Failed temporarily; retried later.
        Deferred => "deferred",
        /// Failed for good (rejected or expired); bounced.
        Failed => "failed",
    }
}

label! {
    /// What happened to one push notification.
    Push {
        /// The notification server took it (200).
        Ok => "ok",
        /// Failed; retried later.
        Retry => "retry",
        /// The token is no longer valid (410) and was deleted.
        Gone => "gone",
        /// Still failing after the retry period; dropped.
        GivenUp => "given_up",
        /// Not queued: the worker was too far behind.
        Dropped => "dropped",
    }
}

label! {
    /// Why the Shadowsocks proxy closed a connection without forwarding it.
    ProxyRefusal {
        /// Wrong key, replayed or malformed handshake, or none in time.
        Handshake => "handshake",
        /// A destination that is not one of the relay's own service ports.
        Destination => "destination",
        /// Over the connection limit.
        Limit => "limit",
    }
}

/// The registry and the resolved handles of every series.
struct Metrics {
    registry: Registry,
    connections: Vec<Gauge>,
    connections_refused: Vec<Counter>,
    logins: Vec<Counter>,
    accounts_created: Counter,
    accepted: Vec<Counter>,
    /// Indexed by `source * Reason::ALL.len() + reason`.
    refused: Vec<Counter>,
    /// Indexed by `transport * Delivery::ALL.len() + outcome`.
    deliveries: Vec<Counter>,
    bounces: Counter,
    queue_messages: Gauge,
    queue_recipients: Gauge,
    push: Vec<Counter>,
    turn_allocations: Gauge,
    turn_relayed_bytes: Counter,
    turn_auth_failures: Counter,
    turn_peers_refused: Counter,
    iroh_connections: Gauge,
    iroh_accepted: Counter,
    iroh_relayed_bytes: Counter,
    proxy_connections: Gauge,
    proxy_tunnels: Counter,
    proxy_refused: Vec<Counter>,
    proxy_relayed_bytes: Counter,
}

type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Registers a family with one label and returns its series in the
/// order of `values`.
fn family1<M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: impl Iterator<Item = &'static str>,
) -> Vec<M>
where
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    let family = Family::<Labels<1>, M>::default();
    registry.register(name, help, family.clone());
    values
        .map(|value| family.get_or_create(&[(key, value)]).clone())
        .collect()
}

/// Registers a counter family with two labels; series in row-major order.
fn family2(
    registry: &mut Registry,
    name: &str,
    help: &str,
    (key_a, a): (&'static str, &[&'static str]),
    (key_b, b): (&'static str, &[&'static str]),
) -> Vec<Counter> {
    let family = Family::<Labels<2>, Counter>::default();
    registry.register(name, help, family.clone());
    let mut series = Vec::with_capacity(a.len() * b.len());
    for value_a in a {
        for value_b in b {
            let labels = [(key_a, *value_a), (key_b, *value_b)];
            series.push(family.get_or_create(&labels).clone());
        }
    }
    series
}

fn values<T: Copy>(all: &'static [T], text: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| text(*v)).collect()
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("madmail");
        let protocols = || Protocol::ALL.iter().map(|p| p.as_str());
        let connections = family1(
            &mut r,
            "connections",
            "Open connections by protocol",
            "protocol",
            protocols(),
        );
        let connections_refused = family1(
            &mut r,
            "connections_refused",
            "Connections closed at once for being over a connection limit",
            "protocol",
            protocols(),
        );
        let logins = family1(
            &mut r,
            "logins",
            "Logins (IMAP and SMTP) by outcome",
            "outcome",
            Login::ALL.iter().map(|l| l.as_str()),
        );
        let accounts_created = Counter::default();
        let help = "Accounts created by a first login";
        r.register("accounts_created", help, accounts_created.clone());
        let accepted = family1(
            &mut r,
            "messages_accepted",
            "Messages accepted, by where they came in",
            "source",
            Source::ALL.iter().map(|s| s.as_str()),
        );
        let refused = family2(
            &mut r,
            "messages_refused",
            "Refusals of a message or one of its recipients, by source and reason",
            ("source", &values(Source::ALL, Source::as_str)),
            ("reason", &values(Reason::ALL, Reason::as_str)),
        );
        let deliveries = family2(
            &mut r,
            "deliveries",
            "Outbound recipient results, by transport and outcome",
            ("transport", &values(Transport::ALL, Transport::as_str)),
            ("outcome", &values(Delivery::ALL, Delivery::as_str)),
        );
        let bounces = Counter::default();
        r.register("bounces", "Bounces stored for senders", bounces.clone());
        let queue_messages = Gauge::default();
        let help = "Messages in the outbound queue";
        r.register("queue_messages", help, queue_messages.clone());
        let queue_recipients = Gauge::default();
        let help = "Recipients waiting in the outbound queue";
        r.register("queue_recipients", help, queue_recipients.clone());
        let push = family1(
            &mut r,
            "push_notifications",
            "Push notifications by outcome",
            "outcome",
            Push::ALL.iter().map(|p| p.as_str()),
        );
        let turn_allocations = Gauge::default();
        let help = "Live TURN allocations";
        r.register("turn_allocations", help, turn_allocations.clone());
        let turn_relayed_bytes = Counter::default();
        let help = "Bytes relayed by TURN, both directions";
        r.register("turn_relayed_bytes", help, turn_relayed_bytes.clone());
        let turn_auth_failures = Counter::default();
        let help = "TURN requests refused for an expired, malformed or foreign credential";
        r.register("turn_auth_failures", help, turn_auth_failures.clone());
        let turn_peers_refused = Counter::default();
        let help = "TURN permissions refused for a peer address the rule denies";
        r.register("turn_peers_refused", help, turn_peers_refused.clone());
        let iroh_connections = Gauge::default();
        let help = "Live iroh relay clients";
        r.register("iroh_connections", help, iroh_connections.clone());
        let iroh_accepted = Counter::default();
        let help = "iroh relay clients accepted";
        r.register("iroh_clients_accepted", help, iroh_accepted.clone());
        let iroh_relayed_bytes = Counter::default();
        let help = "Packet bytes the iroh relay delivered to clients";
        r.register("iroh_relayed_bytes", help, iroh_relayed_bytes.clone());
        let proxy_connections = Gauge::default();
        let help = "Live Shadowsocks proxy connections";
        r.register("shadowsocks_connections", help, proxy_connections.clone());
        let proxy_tunnels = Counter::default();
        let help = "Shadowsocks proxy connections forwarded to a relay port";
        r.register("shadowsocks_tunnels", help, proxy_tunnels.clone());
        let proxy_refused = family1(
            &mut r,
            "shadowsocks_refused",
            "Shadowsocks proxy connections closed without forwarding",
            "reason",
            ProxyRefusal::ALL.iter().map(|r| r.as_str()),
        );
        let proxy_relayed_bytes = Counter::default();
        let help = "Bytes the Shadowsocks proxy relayed, both directions";
        r.register(
            "shadowsocks_relayed_bytes",
            help,
            proxy_relayed_bytes.clone(),
        );
        Self {
            registry: r,
            connections,
            connections_refused,
            logins,
            accounts_created,
            accepted,
            refused,
            deliveries,
            bounces,
            queue_messages,
            queue_recipients,
            push,
            turn_allocations,
            turn_relayed_bytes,
            turn_auth_failures,
            turn_peers_refused,
            iroh_connections,
            iroh_accepted,
            iroh_relayed_bytes,
            proxy_connections,
            proxy_tunnels,
            proxy_refused,
            proxy_relayed_bytes,
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Counts one login.
pub fn login(outcome: Login) {
    METRICS.logins[outcome as usize].inc();
}

/// Counts one account created.
pub fn account_created() {
    METRICS.accounts_created.inc();
}

/// Counts one accepted message.
pub fn accepted(source: Source) {
    METRICS.accepted[source as usize].inc();
}

/// Counts one refusal of a message or recipient.
pub fn refused(source: Source, reason: Reason) {
    let index = source as usize * Reason::ALL.len() + reason as usize;
    METRICS.refused[index].inc();
}

/// Counts one recipient's outcome of an outbound attempt.
pub fn delivery(transport: Transport, outcome: Delivery) {
    let index = transport as usize * Delivery::ALL.len() + outcome as usize;
    METRICS.deliveries[index].inc();
}

/// Counts one stored bounce.
pub fn bounce() {
    METRICS.bounces.inc();
}

/// Counts one push notification outcome.
pub fn push(outcome: Push) {
    METRICS.push[outcome as usize].inc();
}

/// Counts one TURN allocation opened (`open`) or closed.
pub fn turn_allocation(open: bool) {
    if open {
        METRICS.turn_allocations.inc();
    } else {
        METRICS.turn_allocations.dec();
    }
}

/// Counts `bytes` relayed by TURN.
pub fn turn_relayed(bytes: usize) {
    METRICS.turn_relayed_bytes.inc_by(bytes as u64);
}

/// Counts one TURN request refused for its credential.
pub fn turn_auth_failed() {
    METRICS.turn_auth_failures.inc();
}

/// Counts one TURN permission refused for its peer.
pub fn turn_peer_refused() {
    METRICS.turn_peers_refused.inc();
}

/// Counts an iroh relay client as connected until the guard is dropped.
#[must_use = "the client counts as connected only while the guard lives"]
pub fn iroh_connection() -> Open {
    METRICS.iroh_accepted.inc();
    let gauge = &METRICS.iroh_connections;
    gauge.inc();
    Open { gauge }
}

/// Counts `bytes` the iroh relay delivered to clients.
pub fn iroh_relayed(bytes: u64) {
    METRICS.iroh_relayed_bytes.inc_by(bytes);
}

/// Counts a Shadowsocks proxy connection as open until the guard is
/// dropped.
#[must_use = "the connection counts as open only while the guard lives"]
pub fn proxy_connection() -> Open {
    let gauge = &METRICS.proxy_connections;
    gauge.inc();
    Open { gauge }
}

/// Counts one proxy connection forwarded to a relay port.
pub fn proxy_tunnel() {
    METRICS.proxy_tunnels.inc();
}

/// Counts one proxy connection closed without forwarding.
pub fn proxy_refused(reason: ProxyRefusal) {
    METRICS.proxy_refused[reason as usize].inc();
}

/// Counts `bytes` relayed by the proxy.
pub fn proxy_relayed(bytes: u64) {
    METRICS.proxy_relayed_bytes.inc_by(bytes);
}

/// Counts one connection turned away by a connection limit.
pub fn connection_refused(protocol: Protocol) {
    METRICS.connections_refused[protocol as usize].inc();
}

/// Sets the outbound queue gauges.
pub fn set_queue(messages: u64, recipients: u64) {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    METRICS.queue_messages.set(clamp(messages));
    METRICS.queue_recipients.set(clamp(recipients));
}

/// Counts an open connection until the returned guard is dropped.
#[must_use = "the connection counts as open only while the guard lives"]
pub fn connection(protocol: Protocol) -> Open {
    let gauge = &METRICS.connections[protocol as usize];
    gauge.inc();
    Open { gauge }
}

/// Connections of `protocol` open right now (the admin status).
pub fn open_connections(protocol: Protocol) -> u64 {
    u64::try_from(METRICS.connections[protocol as usize].get()).unwrap_or(0)
}

/// An open connection; dropping it counts the connection as closed.
#[derive(Debug)]
pub struct Open {
    gauge: &'static Gauge,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The current values in the OpenMetrics text format ([`CONTENT_TYPE`]).
pub fn render() -> String {
    let mut out = String::with_capacity(8 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series` + space.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    #[test]
    fn every_series_exists_from_the_start() {
        let text = render();
        for outcome in Login::ALL {
            let series = format!("madmail_logins_total{{outcome=\"{}\"}}", outcome.as_str());
            assert!(sample(&text, &series).is_some(), "{series} missing");
        }
        let refused = text
            .lines()
            .filter(|l| l.starts_with("madmail_messages_refused_total{"))
            .count();
        assert_eq!(refused, Source::ALL.len() * Reason::ALL.len());
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counters_land_in_their_own_series() {
        let series = "madmail_messages_refused_total{source=\"mx\",reason=\"dkim\"}";
        let other = "madmail_messages_refused_total{source=\"mx\",reason=\"quota\"}";
        let before = (sample(&render(), series), sample(&render(), other));
        refused(Source::Mx, Reason::Dkim);
        refused(Source::Mx, Reason::Dkim);
        let text = render();
        assert_eq!(sample(&text, series), before.0.map(|v| v + 2.0));
        assert_eq!(sample(&text, other), before.1);
        let series = "madmail_deliveries_total{transport=\"smtp\",outcome=\"deferred\"}";
        let before = sample(&text, series).unwrap();
        delivery(Transport::Smtp, Delivery::Deferred);
        assert_eq!(sample(&render(), series), Some(before + 1.0));
    }

    #[test]
    fn an_open_connection_counts_until_dropped() {
        let series = "madmail_connections{protocol=\"https\"}";
        let before = sample(&render(), series).unwrap();
        let open = connection(Protocol::Https);
        assert_eq!(sample(&render(), series), Some(before + 1.0));
        drop(open);
        assert_eq!(sample(&render(), series), Some(before));
    }

    #[test]
    fn queue_gauges_take_the_last_value() {
        set_queue(7, 9);
        let text = render();
        assert_eq!(sample(&text, "madmail_queue_messages"), Some(7.0));
        assert_eq!(sample(&text, "madmail_queue_recipients"), Some(9.0));
    }
}
