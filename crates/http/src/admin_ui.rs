//! The admin web UI (`admin-leptos/`) under `[admin] web_path`, served
//! while the admin API is: the page, its glue and its module, embedded in
//! the binary at build time (`build.rs`). The page names the API path in
//! its `madmail-api` meta tag; the server writes `[admin] path` there.
//!
//! Every answer forbids framing and everything the page does not need
//! (scripts only from here, plus the page's own module loader by hash;
//! connections only to this origin).

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine as _;
use sha2::Digest as _;

use crate::Context;

include!(concat!(env!("OUT_DIR"), "/admin_ui.rs"));

/// The meta tag the built page carries, with the default API path.
const API_META: &str = r#"<meta name="madmail-api" content="/api/admin">"#;

const NOT_BUILT: &str = "The admin web UI was not built into this binary: \
run `cargo xtask admin-ui`, then build madmail again.\n";

/// The policy for the page: its inline module loader is allowed by hash.
static POLICY: LazyLock<String> = LazyLock::new(|| {
    let page = ADMIN_UI.map_or("", |[page, _, _]| std::str::from_utf8(page).unwrap_or(""));
    let hashes: String = inline_scripts(page)
        .map(|script| {
            let digest = sha2::Sha256::digest(script.as_bytes());
            let hash = base64::engine::general_purpose::STANDARD.encode(digest);
            format!(" 'sha256-{hash}'")
        })
        .collect();
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'{hashes}; \
         style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
});

/// The contents of the page's `<script>` elements without `src`.
fn inline_scripts(page: &str) -> impl Iterator<Item = &str> {
    page.split("<script").skip(1).filter_map(|rest| {
        let (attributes, body) = rest.split_once('>')?;
        let body = body.split_once("</script>")?.0;
        (!attributes.contains("src=")).then_some(body)
    })
}

/// Adds the UI's routes under `web_path` when the API is served.
pub fn routes(router: Router<Arc<Context>>, ctx: &Context) -> Router<Arc<Context>> {
    let admin = &ctx.settings.config.admin;
    if ctx.admin.is_none() || admin.web_path.is_empty() {
        return router;
    }
    let base = admin.web_path.clone();
    let slash = format!("{base}/");
    router
        .route(
            &base,
            get(move || async move { Redirect::permanent(&slash) }),
        )
        .route(&format!("{base}/"), get(page))
        .route(&format!("{base}/admin.js"), get(glue))
        .route(&format!("{base}/admin_bg.wasm"), get(module))
}

fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(&POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page(State(ctx): State<Arc<Context>>) -> Response {
    let Some([page, _, _]) = ADMIN_UI else {
        return (StatusCode::NOT_FOUND, NOT_BUILT).into_response();
    };
    let api = &ctx.settings.config.admin.path;
    let meta = format!(r#"<meta name="madmail-api" content="{}">"#, escape(api));
    let page = String::from_utf8_lossy(page).replacen(API_META, &meta, 1);
    let html = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
    guarded((html, page).into_response())
}

async fn glue() -> Response {
    asset(1, "text/javascript; charset=utf-8")
}

async fn module() -> Response {
    asset(2, "application/wasm")
}

fn asset(index: usize, kind: &'static str) -> Response {
    match ADMIN_UI {
        Some(files) => guarded(([(header::CONTENT_TYPE, kind)], files[index]).into_response()),
        None => (StatusCode::NOT_FOUND, NOT_BUILT).into_response(),
    }
}

/// The path as an attribute value (validated paths have no quotes, but
/// the page must not depend on that).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_module_loaders_are_found_and_external_scripts_skipped() {
        let page = "<script type=\"module\">import x;</script><script src=\"a.js\"></script>";
        assert_eq!(inline_scripts(page).collect::<Vec<_>>(), ["import x;"]);
        assert!(POLICY.contains("frame-ancestors 'none'"));
    }
}
