//! The iroh relay's paths, forwarded to the built-in relay
//! (`chatmail_iroh`), which listens on loopback only.
//!
//! - `GET /relay` with `Upgrade: iroh derp http` or `Upgrade: websocket`:
//!   the request goes upstream over HTTP/1.1; on `101 Switching Protocols`
//!   both sides are upgraded and bytes are copied between them until either
//!   closes, the client stays silent past the connection's idle bound, or
//!   its slot is evicted to make room (an upgraded relay connection waits
//!   like an idle IMAP session: it holds its slot but is not busy).
//! - `/ping`, `/generate_204` (also on port 80) and `/relay` without an
//!   upgrade: the upstream answer is passed back, body bounded.
//!
//! Upstream failures answer `502`; an upstream that does not answer within
//! [`UPSTREAM_TIMEOUT`] too. Without the built-in relay the paths are not
//! routed at all.
//!
//! The tasks that carry upgraded connections belong to the [`Upstream`]:
//! they end when the server stops, and [`Upstream::run`] returns only once
//! the last one has.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Context;
use crate::conn::ConnectionSlot;

/// The paths served by the iroh relay.
pub const PATHS: [&str; 3] = ["/relay", "/ping", "/generate_204"];
/// The captive-portal probe, also answered on port 80.
pub const PROBE_PATH: &str = "/generate_204";
/// Time to reach the built-in relay and get its answer's head.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer body passed back from upstream (its answers are empty).
const MAX_BODY: usize = 16 * 1024;

/// The built-in relay's loopback address and the tasks that carry its
/// upgraded connections.
pub struct Upstream {
    addr: SocketAddr,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Upstream {
    /// The relay at `addr`; its connections end when `stop` is cancelled.
    pub fn new(addr: SocketAddr, stop: CancellationToken) -> Self {
        Self {
            addr,
            tasks: TaskTracker::new(),
            stop,
        }
    }

    /// Waits for the stop, then for every connection task to end (each
    /// ends at the stop: its client sees the connection close).
    pub async fn run(self: Arc<Self>) {
        self.stop.cancelled().await;
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs `task` until it ends or the server stops.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = task => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Forwards `request` to the built-in relay.
pub async fn forward(State(ctx): State<Arc<Context>>, mut request: Request) -> Response {
    let Some(upstream) = ctx.iroh.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !ctx
        .settings
        .services()
        .is_on(chatmail_config::Service::Iroh)
    {
        // Switched off by the operator.
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let client_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let slot = request.extensions_mut().remove::<ConnectionSlot>();
    let head = upstream_request(&request);
    let exchange = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(&upstream, head));
    let mut response = match exchange.await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the iroh relay did not answer");
            return StatusCode::BAD_GATEWAY.into_response();
        }
        Err(_) => {
            tracing::warn!("the iroh relay did not answer in time");
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // HTTP/2 requests carry no upgrade; they never ask upstream for one
        // either (their connection headers are not forwarded).
        let Some(client_upgrade) = client_upgrade else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        upstream.spawn(tunnel(client_upgrade, upstream_upgrade, slot));
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (parts, body) = response.into_parts();
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(body) => Response::from_parts(parts, Body::from(body.to_bytes())),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The request to send upstream: same method, path and headers, no body
/// (the relay's paths take none).
fn upstream_request(request: &Request) -> hyper::Request<http_body_util::Empty<bytes::Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut upstream = hyper::Request::new(http_body_util::Empty::new());
    *upstream.method_mut() = request.method().clone();
    *upstream.uri_mut() = path.parse().unwrap_or_default();
    let headers = upstream.headers_mut();
    for (name, value) in request.headers() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            headers.append(name, value.clone());
        }
    }
    if !headers.contains_key(header::HOST) {
        // HTTP/2 requests name the host in the URI instead.
        if let Some(host) = request.uri().authority()
            && let Ok(value) = host.as_str().parse()
        {
            headers.insert(header::HOST, value);
        }
    }
    upstream
}

/// Sends `request` to `upstream` on a fresh connection, which is driven
/// (through an upgrade) in a task of its own.
async fn exchange(
    upstream: &Upstream,
    request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(upstream.addr).await?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    upstream.spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "iroh relay connection ended with an error");
        }
    });
    Ok(sender.send_request(request).await?)
}

/// Copies bytes between the upgraded client and relay connections.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, slot: Option<ConnectionSlot>) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(client), Ok(upstream)) => (client, upstream),
        (Err(e), _) | (_, Err(e)) => {
            return tracing::debug!(error = %e, "iroh relay upgrade failed");
        }
    };
    let _connected = chatmail_metrics::iroh_connection();
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = copied {
                tracing::debug!(error = %e, "iroh relay connection ended with an error");
            }
        }
        () = chatmail_limits::slots::evicted(slot.map(|slot| slot.0)) => {}
    }
}
