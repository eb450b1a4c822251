//! Account creation over HTTPS (docs/specifications.md §1).
//!
//! Flow of `POST /new`: the client's rate limit ([`RateLimit`], `429`) →
//! registration open (`403`) → no resource shortage
//! (`chatmail_accounts::pressure`, `503`) → fresh random credentials.
//! Every refusal carries `{"reason": "..."}`.
//!
//! Invariants:
//! - client addresses live only in the rate limiter's bounded in-memory map
//!   and are never logged;
//! - IPv6 clients are limited per /64, since one host usually owns one;
//! - a client whose address is unknown shares one bucket with all such
//!   clients (and with the overflow of a full map).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chatmail_config::MailDomain;
use serde::Serialize;

use crate::Context;
use crate::tls::TlsListener;

/// Sustained rate of `POST /new` per client.
pub const PER_MINUTE: u32 = 30;
/// Requests a quiet client may make at once.
pub const BURST: u32 = 10;
/// Most clients tracked at once.
const CAPACITY: usize = 4096;
/// The bucket of clients without an address of their own.
const SHARED: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The peer address of an HTTPS connection, as the handlers see it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// GCRA per client: each request moves the client's theoretical arrival
/// time one interval ahead; a request that would put it more than
/// [`BURST`] intervals ahead of now is refused.
#[derive(Default)]
pub struct RateLimit {
    /// Client key → theoretical arrival time.
    entries: Mutex<HashMap<IpAddr, Instant>>,
}

impl RateLimit {
    const INTERVAL: Duration = Duration::from_secs(60 / PER_MINUTE as u64);

    /// Counts a request of `client` at `now`; false if it is over the limit.
    pub fn allow(&self, client: Option<IpAddr>, now: Instant) -> bool {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut key = client.map_or(SHARED, bucket);
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            // Buckets whose time has passed are as good as new ones.
            entries.retain(|_, tat| *tat > now);
            if entries.len() >= CAPACITY {
                key = SHARED;
            }
        }
        let tat = entries.get(&key).copied().filter(|t| *t > now);
        let next = tat.unwrap_or(now) + Self::INTERVAL;
        if next.duration_since(now) > Self::INTERVAL * BURST {
            return false;
        }
        entries.insert(key, next);
        true
    }
}

/// The rate-limit key of a client: its IPv4 address, or its IPv6 /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::MAX >> 64);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, Json(serde_json::json!({ "reason": reason }))).into_response()
}

/// The body of a successful `POST /new`.
#[derive(Debug, Serialize)]
pub struct NewAccount {
    pub email: String,
    pub password: String,
    /// Only for relays with self-signed certificates, which Delta Chat
    /// cannot verify: a login link that tells it to accept the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dclogin_url: Option<String>,
}

/// `POST /new`: fresh random credentials; the account is created by the
/// first login, so nothing is stored here.
pub async fn create(
    State(ctx): State<Arc<Context>>,
    Extension(limit): Extension<Arc<RateLimit>>,
    request: Request,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|info| info.0.0.ip());
    if !limit.allow(client, Instant::now()) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    }
    if !ctx.settings.registration().open {
        return refuse(StatusCode::FORBIDDEN, "registration is closed");
    }
    if let Some(shortage) = ctx.accounts.shortage() {
        let reason = format!("registration paused: {shortage}");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &reason);
    }
    let (email, password) = ctx.accounts.generate();
    let dclogin_url = ctx
        .settings
        .self_signed
        .then(|| dclogin_url(&email, &password, &ctx.settings.domain));
    Json(NewAccount {
        email,
        password,
        dclogin_url,
    })
    .into_response()
}

/// `GET /new`: where a browser lands when following the QR code's URL.
pub async fn redirect(State(ctx): State<Arc<Context>>) -> Response {
    let target = format!("dcaccount:{}/new", ctx.base_url);
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, target)]).into_response()
}

/// `dclogin:<email>?p=<pw>&v=1[&ih=<ip>&sh=<ip>]&ic=3`; `ic=3` makes the
/// client accept the self-signed certificate.
pub fn dclogin_url(email: &str, password: &str, domain: &MailDomain) -> String {
    // Keep `@[]` readable as the client expects; encode everything else.
    let email = urlencoding::encode(email)
        .replace("%40", "@")
        .replace("%5B", "[")
        .replace("%5D", "]");
    let mut url = format!("dclogin:{email}?p={}&v=1", urlencoding::encode(password));
    if let MailDomain::Ip(ip) = domain {
        url += &format!("&ih={ip}&sh={ip}");
    }
    url + "&ic=3"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{context, send};
    use axum::body::Body;
    use chatmail_accounts::pressure::{Probe, Readings};

    fn post(path: &str, peer: Option<&str>) -> axum::http::Request<Body> {
        let mut request = axum::http::Request::post(path).body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            let addr = SocketAddr::new(peer.parse().unwrap(), 40000);
            request
                .extensions_mut()
                .insert(ConnectInfo(ClientAddr(addr)));
        }
        request
    }

    #[test]
    fn allows_a_burst_then_one_request_per_interval() {
        let limit = RateLimit::default();
        let (a, b) = ("192.0.2.1".parse().ok(), "192.0.2.2".parse().ok());
        let start = Instant::now();
        for _ in 0..BURST {
            assert!(limit.allow(a, start));
        }
        assert!(!limit.allow(a, start));
        assert!(limit.allow(b, start), "other clients are not affected");
        let later = start + RateLimit::INTERVAL;
        assert!(limit.allow(a, later));
        assert!(!limit.allow(a, later));
        // A minute of quiet restores the whole burst.
        let quiet = start + Duration::from_secs(60);
        for _ in 0..BURST {
            assert!(limit.allow(a, quiet));
        }
        assert!(!limit.allow(a, quiet));
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let limit = RateLimit::default();
        let now = Instant::now();
        for i in 0..BURST {
            let ip = format!("2001:db8:1:2::{i:x}").parse().ok();
            assert!(limit.allow(ip, now));
        }
        assert!(!limit.allow("2001:db8:1:2:ffff::1".parse().ok(), now));
        assert!(limit.allow("2001:db8:1:3::1".parse().ok(), now));
        for _ in 0..BURST {
            assert!(limit.allow("::ffff:198.51.100.7".parse().ok(), now));
        }
        assert!(!limit.allow("198.51.100.7".parse().ok(), now));
    }

    #[test]
    fn a_full_map_puts_newcomers_in_the_shared_bucket() {
        let limit = RateLimit::default();
        let now = Instant::now();
        for i in 0..CAPACITY as u32 {
            assert!(limit.allow(Some(IpAddr::from(i.to_be_bytes())), now));
        }
        for _ in 0..BURST {
            assert!(limit.allow("203.0.113.9".parse().ok(), now));
        }
        assert!(!limit.allow("203.0.113.10".parse().ok(), now));
        assert!(!limit.allow(None, now));
        assert!(limit.entries.lock().unwrap().len() <= CAPACITY + 1);
        // Once the old buckets have drained, newcomers get their own again.
        let later = now + Duration::from_secs(60);
        assert!(limit.allow("203.0.113.10".parse().ok(), later));
        assert!(limit.entries.lock().unwrap().len() < CAPACITY);
    }

    #[tokio::test]
    async fn new_answers_429_beyond_the_burst_per_client() {
        let (ctx, _dir) = context("chat.example", "").await;
        let router = crate::router(ctx);
        for i in 0..BURST {
            let path = if i % 2 == 0 {
                "/new"
            } else {
                "/cgi-bin/newemail.py"
            };
            let reply = send(router.clone(), post(path, Some("192.0.2.1"))).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert!(reply.body.contains("\"email\""));
        }
        let reply = send(router.clone(), post("/new", Some("192.0.2.1"))).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.body, r#"{"reason":"too many requests"}"#);
        assert_eq!(reply.content_type, "application/json");
        let reply = send(router.clone(), post("/new", Some("192.0.2.2"))).await;
        assert_eq!(reply.status, StatusCode::OK);
        // Without a known peer, all such requests share one bucket.
        for _ in 0..BURST {
            assert_eq!(
                send(router.clone(), post("/new", None)).await.status,
                StatusCode::OK
            );
        }
        let reply = send(router, post("/new", None)).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    }

    /// POSTs `/new` over TLS to `server` from `source` and returns the
    /// status line.
    async fn post_over_tls(
        server: SocketAddr,
        source: &str,
        roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut store = rustls::RootCertStore::empty();
        store.add(roots[0].clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let tcp = socket.connect(server).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let request = "POST /new HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        let _ = tls.read_to_string(&mut reply).await;
        reply.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn served_new_limits_each_peer_address_separately() {
        let (ctx, dir) = context("chat.example", "").await;
        let names = ["localhost".to_owned()];
        let id = chatmail_tls::Identity::self_signed(dir.path(), &names).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let tls = id.web_config().unwrap();
        let server = tokio::spawn(crate::serve(listener, tls, ctx, shutdown.clone()));
        for _ in 0..BURST {
            let status = post_over_tls(addr, "127.0.0.1", &id.chain).await;
            assert_eq!(status, "HTTP/1.1 200 OK");
        }
        let status = post_over_tls(addr, "127.0.0.1", &id.chain).await;
        assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
        // Another source address has its own budget.
        let status = post_over_tls(addr, "127.0.0.2", &id.chain).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        shutdown.cancel();
        let _ = server.await;
    }

    struct Short;

    impl Probe for Short {
        fn read(&self) -> Readings {
            Readings {
                memory: Some(1_000_000),
                ..Readings::default()
            }
        }
    }

    #[tokio::test]
    async fn new_answers_503_under_resource_pressure() {
        let (ctx, _dir) = context("chat.example", "").await;
        let mut ctx = Arc::into_inner(ctx).unwrap();
        ctx.accounts = ctx.accounts.with_probe(Arc::new(Short));
        let reply = send(
            crate::router(Arc::new(ctx)),
            post("/new", Some("192.0.2.1")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            reply.body,
            r#"{"reason":"registration paused: not enough memory"}"#
        );
    }

    #[tokio::test]
    async fn closed_registration_answers_403_with_a_reason() {
        let (ctx, _dir) = context("chat.example", "[registration]\nopen = false\n").await;
        let reply = send(crate::router(ctx), post("/new", Some("192.0.2.1"))).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.body, r#"{"reason":"registration is closed"}"#);
    }

    #[test]
    fn dclogin_url_for_ip_relay_names_the_hosts() {
        let domain = MailDomain::parse("1.2.3.4").unwrap();
        assert_eq!(
            dclogin_url("abc123xyz@[1.2.3.4]", "pass word&1", &domain),
            "dclogin:abc123xyz@[1.2.3.4]?p=pass%20word%261&v=1&ih=1.2.3.4&sh=1.2.3.4&ic=3"
        );
    }

    #[test]
    fn dclogin_url_for_named_relay_relies_on_dns() {
        let domain = MailDomain::parse("_chat.test").unwrap();
        assert_eq!(
            dclogin_url("abc123xyz@_chat.test", "pw", &domain),
            "dclogin:abc123xyz@_chat.test?p=pw&v=1&ic=3"
        );
    }
}
