//! Port 80: plain HTTP, which only sends browsers to HTTPS
//! (docs/specifications.md §7).
//!
//! Every request gets `301` to the same path on `base_url`, except ACME
//! HTTP-01 challenges (RFC 8555 §8.3), which must be answered here over
//! plain HTTP: [`acme_challenge`] is the place where an ACME client's
//! token store plugs in; until then it answers 404. The iroh relay's
//! captive-portal probe `/generate_204` is plain HTTP too, and forwarded to
//! the built-in relay while it runs.
//!
//! Bounds as on HTTPS: at most [`MAX_CONNECTIONS`] connections, a fifth
//! per client, the longest idle one evicted when full; each is served by
//! `crate::conn` (idle, header and HTTP/2 bounds).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chatmail_limits::Slots;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Context;
use crate::conn::{self, Guarded};

/// Plain HTTP connections at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// The port 80 routes.
pub fn router(ctx: Arc<Context>) -> Router {
    let mut router = Router::new();
    if ctx.iroh.is_some() {
        router = router.route(crate::iroh::PROBE_PATH, get(crate::iroh::forward));
    }
    router
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
        .fallback(to_https)
        .with_state(ctx)
}

/// Serves plain HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve_http(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Slots::fifth_per_client(MAX_CONNECTIONS);
    let router = router(ctx);
    let stop = shutdown.clone();
    conn::accept_loop(listener, shutdown, |tcp, peer| {
        let slot = slots.acquire(Some(peer.ip())).ok()?;
        let io = Guarded::new(tcp, ());
        Some(conn::serve(
            io,
            peer,
            router.clone(),
            Arc::new(slot),
            stop.clone(),
        ))
    })
    .await
}

/// RFC 8555 §8.3: `GET /.well-known/acme-challenge/<token>` answers the key
/// authorization of a pending challenge, 404 for any other token.
async fn acme_challenge(State(ctx): State<Arc<Context>>, Path(token): Path<String>) -> Response {
    match ctx.acme_challenges.as_ref().and_then(|c| c.get(&token)) {
        Some(key_authorization) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            key_authorization,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `301` to the same path and query on HTTPS.
async fn to_https(State(ctx): State<Arc<Context>>, uri: Uri) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let target = format!("{}{path}", ctx.base_url);
    (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, target)]).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;

    use crate::testutil::{context, get, send};

    #[tokio::test]
    async fn redirects_everything_to_https_with_path_and_query() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let reply = send(super::router(ctx.clone()), get("/info?x=1", None)).await;
        assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(reply.location, "https://chat.example.org/info?x=1");
        let reply = send(super::router(ctx), get("/", Some("evil.example"))).await;
        assert_eq!(reply.location, "https://chat.example.org/");
    }

    #[tokio::test]
    async fn acme_challenges_are_not_redirected() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let path = "/.well-known/acme-challenge/abc-123_x";
        let reply = send(super::router(ctx), get(path, None)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert!(reply.location.is_empty());
    }

    #[tokio::test]
    async fn pending_acme_challenge_is_answered_with_its_key_authorization() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let challenges = Arc::new(chatmail_tls::acme::ChallengeStore::default());
        let published = challenges.publish("tok-1".into(), "tok-1.thumbprint".into());
        let mut ctx = Arc::try_unwrap(ctx).ok().unwrap();
        ctx.acme_challenges = Some(challenges);
        let router = super::router(Arc::new(ctx));
        let reply = send(
            router.clone(),
            get("/.well-known/acme-challenge/tok-1", None),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "tok-1.thumbprint");
        drop(published);
        let reply = send(router, get("/.well-known/acme-challenge/tok-1", None)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn serves_redirects_over_tcp_until_shutdown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ctx, _dir) = context("chat.example.org", "").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(super::serve_http(listener, ctx, shutdown.clone()));
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /privacy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 301"), "{response}");
        assert!(response.contains("location: https://chat.example.org/privacy\r\n"));
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_captive_portal_probe_reaches_the_built_in_iroh_relay() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let relay = chatmail_iroh::spawn(chatmail_iroh::Options::default())
            .await
            .unwrap();
        let mut ctx = Arc::try_unwrap(ctx).ok().unwrap();
        ctx.iroh = Some(Arc::new(crate::iroh::Upstream::new(
            relay.upstream(),
            tokio_util::sync::CancellationToken::new(),
        )));
        let router = super::router(Arc::new(ctx));
        let request = axum::http::Request::get("/generate_204")
            .header("x-tailscale-challenge", "abc.123")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(router.clone(), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let answer = response.headers().get("x-tailscale-response").unwrap();
        assert_eq!(answer, "response abc.123");
        // Everything else is still only redirected.
        let reply = send(router, get("/relay", None)).await;
        assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY);
    }
}
