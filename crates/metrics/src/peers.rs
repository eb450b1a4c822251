//! Delivery statistics per peer relay since start, for the operator
//! (`madmail federation status`, `/admin/federation/servers`); not
//! exported to Prometheus, whose labels must stay few.
//!
//! Kept in memory for at most [`MAX_PEERS`] domains; when full, the peer
//! least recently active gives way.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Transport;

/// Peer domains remembered at most.
pub const MAX_PEERS: usize = 10_000;

/// One peer's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerStats {
    pub domain: String,
    /// Attempts the peer accepted over `/mxdeliv`.
    pub success_https: u64,
    /// Attempts the peer refused over `/mxdeliv`.
    pub failed_https: u64,
    /// Attempts the peer accepted over SMTP.
    pub success_smtp: u64,
    /// Attempts the peer refused over SMTP.
    pub failed_smtp: u64,
    /// Attempts that reached no server of the peer.
    pub failed_unreachable: u64,
    /// Messages accepted from the peer (port 25 and `/mxdeliv`).
    pub inbound_deliveries: u64,
    /// Mean duration of the accepted attempts, in milliseconds.
    pub mean_latency_ms: u64,
    /// Unix seconds of the last exchange.
    pub last_active: u64,
    #[serde(skip)]
    latency_total_ms: u64,
}

static PEERS: LazyLock<Mutex<HashMap<String, PeerStats>>> = LazyLock::new(Mutex::default);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn update(domain: &str, change: impl FnOnce(&mut PeerStats)) {
    let domain = domain.to_ascii_lowercase();
    let mut peers = PEERS.lock().unwrap_or_else(PoisonError::into_inner);
    if !peers.contains_key(&domain) && peers.len() >= MAX_PEERS {
        let oldest = peers
            .iter()
            .min_by_key(|(_, p)| p.last_active)
            .map(|(d, _)| d.clone());
        if let Some(oldest) = oldest {
            peers.remove(&oldest);
        }
    }
    let peer = peers.entry(domain.clone()).or_insert_with(|| PeerStats {
        domain,
        ..PeerStats::default()
    });
    change(peer);
    peer.last_active = unix_now();
}

/// One outbound attempt to `domain`: `via` carried it (`None`: no server
/// answered), `delivered` whether the peer took it.
pub fn peer_attempt(domain: &str, via: Transport, delivered: bool, took: Duration) {
    update(domain, |p| {
        let counter = match (via, delivered) {
            (Transport::Mxdeliv, true) => &mut p.success_https,
            (Transport::Smtp, true) => &mut p.success_smtp,
            (Transport::Mxdeliv, false) => &mut p.failed_https,
            (Transport::Smtp, false) => &mut p.failed_smtp,
            (Transport::None, _) => &mut p.failed_unreachable,
        };
        *counter += 1;
        if delivered {
            let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
            p.latency_total_ms = p.latency_total_ms.saturating_add(ms);
            p.mean_latency_ms = p.latency_total_ms / (p.success_https + p.success_smtp).max(1);
        }
    });
}

/// A message accepted from `domain`.
pub fn peer_inbound(domain: &str) {
    update(domain, |p| p.inbound_deliveries += 1);
}

/// Every peer, most recently active first.
pub fn peers() -> Vec<PeerStats> {
    let peers = PEERS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut list: Vec<PeerStats> = peers.values().cloned().collect();
    list.sort_by(|a, b| {
        b.last_active
            .cmp(&a.last_active)
            .then(a.domain.cmp(&b.domain))
    });
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_and_inbound_messages_are_counted_per_peer() {
        let ms = Duration::from_millis;
        peer_attempt("Peers-A.example", Transport::Mxdeliv, true, ms(10));
        peer_attempt("peers-a.example", Transport::Mxdeliv, true, ms(30));
        peer_attempt("peers-a.example", Transport::Smtp, false, ms(5));
        peer_attempt("peers-a.example", Transport::None, false, ms(5));
        peer_inbound("peers-a.example");
        let a = peers()
            .into_iter()
            .find(|p| p.domain == "peers-a.example")
            .unwrap();
        assert_eq!(
            (a.success_https, a.failed_smtp, a.failed_unreachable),
            (2, 1, 1)
        );
        assert_eq!((a.inbound_deliveries, a.mean_latency_ms), (1, 20));
        assert!(a.last_active > 0);
    }
}
