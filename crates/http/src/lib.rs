//! chatmail-http: the relay's HTTPS endpoints (docs/specifications.md §1, §7).
//!
//! - `POST /new` (and the legacy `/cgi-bin/newemail.py`, which Delta Chat
//!   calls without following redirects) hands out fresh random credentials;
//!   nothing is stored until the first login creates the account. It is
//!   rate-limited per client address and refused while the machine is short
//!   of resources (`new`).
//! - `GET /new` redirects to `dcaccount:https://<domain>/new`.
//! - `POST /mxdeliv` takes mail from other relays (docs/specifications.md §6), with
//!   the checks of port 25 (`chatmail_inbound`); the envelope is checked
//!   before the body is read, and the body is spooled under the process's
//!   budgets and bounded by `max_message_size` (413 beyond).
//! - `POST /api/admin` (`[admin] path`, when `[admin] enabled`): the admin
//!   API (`chatmail_admin`), answered with HTTP 200 and the real status in
//!   the reply envelope; the body is read up to
//!   `chatmail_admin::MAX_REQUEST` bytes, before any token check (`admin`).
//! - `/robots.txt` disallows everything.
//! - `/`, `/info`, `/privacy`: server-rendered pages without JavaScript
//!   (`pages`); `/` carries the account QR code.
//! - Autoconfig XML and the MTA-STS policy (`wellknown`).
//! - `/relay`, `/ping`, `/generate_204`: forwarded to the built-in iroh
//!   relay while it runs (`iroh`).
//!
//! TLS is terminated by [`tls::serve`], which runs handshakes in their own
//! tasks and pools so a slow client never blocks the accept loop; on port
//! 443 it also hands ALPN `imap`/`smtp` connections to the mail services
//! ([`serve_multiplexed`]). Each HTTP connection is served by `conn` with
//! its header, HTTP/2 and idle bounds. Port 80 only redirects to HTTPS
//! ([`serve_http`]), except ACME challenges and the iroh relay's
//! captive-portal probe.

mod admin;
mod admin_ui;
mod conn;
mod html;
pub mod iroh;
mod mxdeliv;

/// The `/mxdeliv` envelope parser, for the fuzz targets in `fuzz/`
/// (feature `fuzzing`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::mxdeliv::envelope;
}
mod new;
mod pages;
mod redirect;
pub mod tls;
mod wellknown;

pub use redirect::serve_http;
pub use tls::{AlpnHandlers, MailHandler, MailStream, mail_handler};

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
    /// Pending ACME HTTP-01 challenges, answered on port 80 (`None`: the
    /// certificate does not come from ACME).
    pub acme_challenges: Option<Arc<chatmail_tls::acme::ChallengeStore>>,
    /// Where the built-in iroh relay listens (loopback); `None`: it does
    /// not run, and its paths are not routed.
    pub iroh: Option<Arc<iroh::Upstream>>,
    /// The `ss://` link of the Shadowsocks proxy, shown on `/`; `None`:
    /// the proxy does not run.
    pub proxy_link: Option<String>,
    /// The admin API, served at `[admin] path`; `None`: not served.
    pub admin: Option<Arc<chatmail_admin::Api>>,
}

/// The application's routes.
pub fn router(ctx: Arc<Context>) -> Router {
    // `/mxdeliv` bounds its body itself (it spools it); other routes take
    // no bodies worth the name.
    let body_limit = DefaultBodyLimit::max(64 * 1024);
    let mut router = Router::new();
    if ctx.admin.is_some() {
        let path = ctx.settings.config.admin.path.as_str();
        router = router.route(
            path,
            axum::routing::any(admin::handle).layer(DefaultBodyLimit::disable()),
        );
    }
    router = admin_ui::routes(router, &ctx);
    if ctx.iroh.is_some() {
        for path in iroh::PATHS {
            router = router.route(path, get(iroh::forward));
        }
    }
    router
        .route(
            "/mxdeliv",
            post(mxdeliv::deliver).layer(DefaultBodyLimit::disable()),
        )
        .route("/new", get(new::redirect).post(new::create))
        .route("/cgi-bin/newemail.py", get(new::redirect).post(new::create))
        .route("/robots.txt", get(robots))
        .route("/", get(pages::index))
        .route("/info", get(pages::info))
        .route("/privacy", get(pages::privacy))
        .route(wellknown::AUTOCONFIG_PATH, get(wellknown::autoconfig))
        .route(wellknown::AUTOCONFIG_ISP_PATH, get(wellknown::autoconfig))
        .route(wellknown::MTA_STS_PATH, get(wellknown::mta_sts))
        .layer(body_limit)
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
    serve_multiplexed(listener, tls, ctx, None, shutdown).await
}

/// Serves HTTPS on `listener` and, with `mail`, IMAP and SMTP for clients
/// that ask for them by ALPN (docs/specifications.md §7); `tls` must then
/// offer `imap` and `smtp` (`chatmail_tls::Identity::multiplex_config`).
pub async fn serve_multiplexed(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<Context>,
    mail: Option<AlpnHandlers>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tls::serve(listener, tls, router(ctx), mail, shutdown).await
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use chatmail_accounts::Accounts;
    use chatmail_dkim::StaticTxt;
    use chatmail_inbound::{Inbound, KeyLookup};
    use chatmail_store::{Store, StoreOptions};
    use tower::ServiceExt as _;

    use crate::Context;

    /// A context for `mail_domain` with `extra` configuration appended.
    pub async fn context(mail_domain: &str, extra: &str) -> (Arc<Context>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        // Named domains get certificates from files (never read here).
        let tls = if mail_domain.parse::<std::net::Ipv4Addr>().is_ok() {
            ""
        } else {
            "[tls]\nmode = \"files\"\ncert_path = \"/c.pem\"\nkey_path = \"/k.pem\"\n"
        };
        let text = format!(
            "mail_domain = \"{mail_domain}\"\nstate_dir = \"{}\"\n{tls}{extra}",
            dir.path().display()
        );
        let settings = Arc::new(chatmail_config::parse(&text).unwrap());
        let store = Store::open(StoreOptions {
            path: dir.path().join("mail.db"),
            max_batch: 16,
        })
        .await
        .unwrap();
        let accounts = Accounts::new(store, Arc::clone(&settings));
        let keys = KeyLookup::fixed(StaticTxt::new());
        let inbound = Inbound::new(Arc::clone(&settings), accounts.clone(), keys);
        let ctx = Context {
            base_url: format!("https://{}", settings.domain.host()),
            settings,
            accounts,
            inbound,
            acme_challenges: None,
            iroh: None,
            proxy_link: None,
            admin: None,
        };
        (Arc::new(ctx), dir)
    }

    /// A response's status, `Content-Type`, `Location` and body text.
    pub struct Reply {
        pub status: StatusCode,
        pub content_type: String,
        pub location: String,
        pub cache: String,
        pub body: String,
    }

    /// Sends `request` through `router` and collects the reply.
    pub async fn send(router: axum::Router, request: Request<Body>) -> Reply {
        let response = router.oneshot(request).await.unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let (content_type, location) = (header("content-type"), header("location"));
        let cache = header("cache-control");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Reply {
            status,
            content_type,
            location,
            cache,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// `GET path` with an optional `Host` header.
    pub fn get(path: &str, host: Option<&str>) -> Request<Body> {
        let mut request = Request::get(path);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        request.body(Body::empty()).unwrap()
    }
}
