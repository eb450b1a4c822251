//! Account creation over HTTPS (docs/specifications.md §1).
//!
//! Flow of `POST /new`: the client's rate limit
//! (`chatmail_accounts::Accounts::allow_new_request`, `429`) → no resource
//! shortage (`chatmail_accounts::pressure`, `503`) → with `?token=`: the
//! invite token reserves the fresh address for its first login (`403` if
//! the token cannot admit anyone more), which works even while
//! registration is closed; without one: registration open (`403`) → fresh
//! random credentials. Every refusal carries `{"reason": "..."}`.
//!
//! Invariants:
//! - client addresses live only in the rate limiter's bounded in-memory map
//!   and are never logged;
//! - IPv6 clients are limited per /64, since one host usually owns one;
//! - a client whose address is unknown shares one budget with all such
//!   clients; a full map refuses newcomers (`chatmail_limits::Gcra`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chatmail_config::MailDomain;
use serde::Serialize;

use crate::Context;

/// The peer address of an HTTP connection, as the handlers see it
/// (`ConnectInfo<ClientAddr>`, set by `conn`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

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
pub async fn create(State(ctx): State<Arc<Context>>, request: Request) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|info| info.0.0.ip());
    if !ctx.accounts.allow_new_request(client) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    }
    let token = invite_token(request.uri());
    if token.is_none() && !ctx.accounts.registration_open() {
        return refuse(StatusCode::FORBIDDEN, "registration is closed");
    }
    if let Some(shortage) = ctx.accounts.shortage() {
        let reason = format!("registration paused: {shortage}");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, &reason);
    }
    let (email, password) = match token {
        None => ctx.accounts.generate(),
        Some(token) => match ctx.accounts.reserve_invite(&token).await {
            Ok(Some(credentials)) => credentials,
            Ok(None) => return refuse(StatusCode::FORBIDDEN, "invalid or used-up invite token"),
            Err(e) => {
                tracing::warn!(error = %e, "reserving an invite failed");
                return refuse(StatusCode::SERVICE_UNAVAILABLE, "try again later");
            }
        },
    };
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

/// The `token` query parameter, if any.
fn invite_token(uri: &axum::http::Uri) -> Option<String> {
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        let value = urlencoding::decode(value).ok()?;
        (!value.is_empty()).then(|| value.into_owned())
    })
}

/// `GET /new`: where a browser lands when following the QR code's URL
/// (an invite's `?token=` is kept).
pub async fn redirect(State(ctx): State<Arc<Context>>, uri: axum::http::Uri) -> Response {
    let target = match invite_token(&uri) {
        Some(token) => format!(
            "dcaccount:{}/new?token={}",
            ctx.base_url,
            urlencoding::encode(&token)
        ),
        None => format!("dcaccount:{}/new", ctx.base_url),
    };
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

    /// `limits.new_accounts_burst` by default.
    const BURST: u32 = 10;

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

    #[tokio::test]
    async fn an_invite_token_opens_a_closed_relay_once() {
        let (ctx, _dir) = context("chat.example", "[registration]\nopen = false\n").await;
        let invite = chatmail_store::NewInvite {
            token: "join-us".into(),
            max_uses: 1,
            expires: None,
            comment: String::new(),
        };
        ctx.accounts.store().create_invite(invite, 1).await.unwrap();
        let router = crate::router(ctx.clone());
        let reply = send(router.clone(), post("/new?token=wrong", Some("192.0.2.1"))).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(
            reply.body,
            r#"{"reason":"invalid or used-up invite token"}"#
        );
        let reply = send(
            router.clone(),
            post("/new?token=join-us", Some("192.0.2.1")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let account: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let (email, password) = (
            account["email"].as_str().unwrap(),
            account["password"].as_str().unwrap(),
        );
        // The one use is held for that address; its first login takes it.
        let reply = send(
            router.clone(),
            post("/new?token=join-us", Some("192.0.2.1")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        ctx.accounts.login(email, password).await.unwrap();
        let reply = send(router, get_request("/new?token=join-us")).await;
        assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            reply.location,
            "dcaccount:https://chat.example/new?token=join-us"
        );
    }

    fn get_request(path: &str) -> axum::http::Request<Body> {
        axum::http::Request::get(path).body(Body::empty()).unwrap()
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
