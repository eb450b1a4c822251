//! chatmail-iroh: the iroh relay that webxdc realtime apps use to reach
//! each other (docs/specifications.md §4, `irohrelay`).
//!
//! The relay protocol is the one of iroh 0.35, which Delta Chat 2.65's core
//! speaks: an HTTP/1.1 `GET /relay` upgraded to `iroh derp http` (or to a
//! WebSocket), then framed packets between node keys.
//!
//! The `iroh-relay` crate serves it on a listener of its own and keeps the
//! HTTP layer that would let another server hand it a connection private.
//! So [`spawn`] runs it on an ephemeral loopback port, plain HTTP, with no
//! STUN, QUIC or metrics listener of its own; the relay's HTTPS server on
//! port 443 forwards `/relay`, `/ping` and `/generate_204` there
//! (`chatmail_http`), and port 80 forwards `/generate_204` (the captive
//! portal probe is plain HTTP). Nothing outside the host reaches the
//! loopback port directly, so TLS, connection bounds and the client address
//! stay with the front server; the relay itself only ever sees `127.0.0.1`.
//!
//! The bytes it delivered to clients are copied into `chatmail_metrics` every
//! [`METRICS_INTERVAL`] while it runs.

use std::net::{Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use iroh_relay::server::{
    AccessConfig, ClientRateLimit, Limits, RelayConfig, Server, ServerConfig,
};
use tokio_util::sync::CancellationToken;

/// How often the relay's byte counters reach `chatmail_metrics`.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// How the relay is bounded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Bytes a second one client may send (bursts of one second's worth);
    /// 0: unlimited.
    pub max_bandwidth: u32,
}

/// A running iroh relay.
pub struct Relay {
    server: Server,
    upstream: SocketAddr,
}

/// Starts the relay on an ephemeral loopback port.
pub async fn spawn(options: Options) -> anyhow::Result<Relay> {
    let client_rx = NonZeroU32::new(options.max_bandwidth).map(|rate| ClientRateLimit {
        bytes_per_second: rate,
        max_burst_bytes: Some(rate),
    });
    let config = ServerConfig::<(), ()> {
        relay: Some(RelayConfig {
            http_bind_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tls: None,
            limits: Limits {
                client_rx,
                ..Limits::default()
            },
            key_cache_capacity: None,
            access: AccessConfig::Everyone,
        }),
        stun: None,
        quic: None,
        metrics_addr: None,
    };
    let server = Server::spawn(config).await?;
    let upstream = server
        .http_addr()
        .ok_or_else(|| anyhow::anyhow!("the iroh relay did not report its address"))?;
    Ok(Relay { server, upstream })
}

impl Relay {
    /// Where the front server forwards the relay's paths to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Runs until `shutdown` (then stops the relay) or until the relay
    /// fails.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut ticks = tokio::time::interval(METRICS_INTERVAL);
        let mut reported = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                ended = self.server.task_handle() => {
                    let ended = ended.map_err(anyhow::Error::from).and_then(|r| r);
                    return Err(ended.err().unwrap_or_else(|| anyhow::anyhow!("stopped")))
                        .map_err(|e| e.context("the iroh relay stopped"));
                }
                _ = ticks.tick() => reported = self.report(reported),
            }
        }
        self.report(reported);
        self.server.shutdown().await
    }

    /// Adds what the relay relayed since `reported` bytes to the metrics;
    /// returns the new total.
    fn report(&self, reported: u64) -> u64 {
        let server = &self.server.metrics().server;
        let total = server.bytes_sent.get();
        chatmail_metrics::iroh_relayed(total.saturating_sub(reported));
        total
    }
}
