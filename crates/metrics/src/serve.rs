//! The scrape endpoint: `GET /metrics` on its own listener; every other
//! path is 404.
//!
//! Before each answer the caller's `refresh` runs (the relay reads the
//! queue length from the store there), bounded by [`REFRESH_TIMEOUT`] so a
//! slow store delays a scrape but never hangs it.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `Content-Type` of the exposition (OpenMetrics text, which Prometheus
/// reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Longest wait for `refresh` before answering with the values at hand.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until `shutdown` is cancelled;
/// `refresh` runs before each scrape to update gauges read from elsewhere.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    refresh: F,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let scrape = move || {
        let refresh = refresh.clone();
        async move {
            if tokio::time::timeout(REFRESH_TIMEOUT, refresh())
                .await
                .is_err()
            {
                tracing::warn!("metrics: refreshing the gauges timed out");
            }
            let headers = [(header::CONTENT_TYPE, CONTENT_TYPE)];
            (StatusCode::OK, headers, crate::render()).into_response()
        }
    };
    let app = Router::new().route("/metrics", get(scrape));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn serves_the_exposition_after_refreshing_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refreshed = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let counter = refreshed.clone();
        let refresh = move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        };
        let server = tokio::spawn(serve(listener, refresh, shutdown.clone()));
        let reply = get(addr, "/metrics").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("application/openmetrics-text"), "{reply}");
        assert!(reply.contains("# TYPE madmail_logins counter"), "{reply}");
        assert!(reply.ends_with("# EOF\n"), "{reply}");
        assert_eq!(refreshed.load(Ordering::SeqCst), 1);
        let reply = get(addr, "/").await;
        assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
