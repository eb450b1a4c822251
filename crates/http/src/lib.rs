//! chatmail-http: the relay's HTTPS endpoints (docs/specifications.md §1, §7).
//!
//! - `POST /new` (and the legacy `/cgi-bin/newemail.py`, which Delta Chat
//!   calls without following redirects) hands out fresh random credentials;
//!   nothing is stored until the first login creates the account.
//! - `GET /new` redirects to `dcaccount:https://<domain>/new`.
//! - `POST /mxdeliv` takes mail from other relays (docs/specifications.md §6), with
//!   the checks of port 25 (`chatmail_inbound`); the body is bounded by
//!   `max_message_size` (413 beyond).
//! - `/robots.txt` disallows everything.
//!
//! TLS is terminated by [`tls::TlsListener`], which runs handshakes in their
//! own tasks so a slow client never blocks the accept loop.

mod mxdeliv;
mod new;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use chatmail_accounts::Accounts;
use chatmail_config::Settings;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
pub struct Context {
    pub settings: Arc<Settings>,
    pub accounts: Accounts,
    /// How clients reach this server: `https://<domain>` or, on a
    /// non-standard port, `https://<domain>:<port>`.
    pub base_url: String,
    /// The inbound checks of `/mxdeliv`, shared with the MX on port 25.
    pub inbound: chatmail_inbound::Inbound,
}

/// The application's routes.
pub fn router(ctx: Arc<Context>) -> Router {
    let max = ctx.settings.limits().max_message_size;
    let body_limit = DefaultBodyLimit::max(usize::try_from(max).unwrap_or(usize::MAX));
    Router::new()
        .route("/mxdeliv", post(mxdeliv::deliver).layer(body_limit))
        .route("/new", get(new::redirect).post(new::create))
        .route("/cgi-bin/newemail.py", get(new::redirect).post(new::create))
        .route("/robots.txt", get(robots))
        .with_state(ctx)
}

async fn robots() -> &'static str {
    "User-agent: *\nDisallow: /\n"
}

/// Serves HTTPS on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = tls::TlsListener::new(listener, tls, shutdown.clone());
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
