//! Machine-read documents: mail client autoconfiguration and the MTA-STS
//! policy (docs/specifications.md §7).
//!
//! - Autoconfig (Thunderbird's `config-v1.1.xml` format, also read by
//!   Delta Chat) at both the well-known and the ISP path: IMAP 993 SSL,
//!   143 STARTTLS, 443 SSL; SMTP 465 SSL, 587 STARTTLS, 443 SSL.
//! - MTA-STS (RFC 8461) only when asked for by the host `mta-sts.<domain>`;
//!   other hosts get 404, since the policy is bound to that name.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::Context;
use crate::html::escape;

pub const AUTOCONFIG_PATH: &str = "/.well-known/autoconfig/mail/config-v1.1.xml";
pub const AUTOCONFIG_ISP_PATH: &str = "/mail/config-v1.1.xml";
pub const MTA_STS_PATH: &str = "/.well-known/mta-sts.txt";

/// Seconds a sender may cache the MTA-STS policy: four weeks.
const MTA_STS_MAX_AGE: u32 = 2_419_200;

/// `GET` autoconfig XML.
pub async fn autoconfig(State(ctx): State<Arc<Context>>) -> Response {
    let host = escape(&ctx.settings.domain.host());
    let server = |kind: &str, port: u16, socket: &str| {
        format!(
            "<{kind}Server type=\"{}\"><hostname>{host}</hostname><port>{port}</port>\
             <socketType>{socket}</socketType><username>%EMAILADDRESS%</username>\
             <authentication>password-cleartext</authentication></{kind}Server>\n",
            if kind == "incoming" { "imap" } else { "smtp" }
        )
    };
    let servers = [
        server("incoming", 993, "SSL"),
        server("incoming", 143, "STARTTLS"),
        server("incoming", 443, "SSL"),
        server("outgoing", 465, "SSL"),
        server("outgoing", 587, "STARTTLS"),
        server("outgoing", 443, "SSL"),
    ]
    .concat();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <clientConfig version=\"1.1\">\n<emailProvider id=\"{host}\">\n\
         <domain>{host}</domain>\n<displayName>{host} chatmail</displayName>\n\
         {servers}</emailProvider>\n</clientConfig>\n"
    );
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

/// `GET /.well-known/mta-sts.txt` on `mta-sts.<domain>`.
pub async fn mta_sts(State(ctx): State<Arc<Context>>, uri: Uri, headers: HeaderMap) -> Response {
    let domain = ctx.settings.domain.host();
    let wanted = format!("mta-sts.{domain}");
    if !request_host(&uri, &headers).is_some_and(|h| h.eq_ignore_ascii_case(&wanted)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    // RFC 8461 §3.2: key/value lines, CRLF (LF also allowed) line ends.
    let policy = format!(
        "version: STSv1\r\nmode: enforce\r\nmx: {domain}\r\nmax_age: {MTA_STS_MAX_AGE}\r\n"
    );
    // RFC 8461 §3.3: served as text/plain.
    ([(header::CONTENT_TYPE, "text/plain")], policy).into_response()
}

/// The host a request was sent to, without port or trailing dot: the
/// `Host` header (HTTP/1.1) or the URI authority (HTTP/2 `:authority`).
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let host = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => host.rsplit_once(':').map_or(host, |(name, _port)| name),
        None => uri.host()?,
    };
    Some(host.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use crate::router;
    use crate::testutil::{context, get, send};

    #[tokio::test]
    async fn autoconfig_is_served_at_both_paths() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        for path in [super::AUTOCONFIG_PATH, super::AUTOCONFIG_ISP_PATH] {
            let reply = send(router(ctx.clone()), get(path, None)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert!(reply.content_type.starts_with("application/xml"));
            let xml = reply.body;
            assert!(xml.starts_with("<?xml"));
            assert_eq!(
                xml.matches("<hostname>chat.example.org</hostname>").count(),
                6
            );
            assert_eq!(
                xml.matches("<username>%EMAILADDRESS%</username>").count(),
                6
            );
            for server in [
                "type=\"imap\"><hostname>chat.example.org</hostname><port>993</port><socketType>SSL<",
                "<port>143</port><socketType>STARTTLS<",
                "type=\"imap\"><hostname>chat.example.org</hostname><port>443</port><socketType>SSL<",
                "<port>465</port><socketType>SSL<",
                "<port>587</port><socketType>STARTTLS<",
                "type=\"smtp\"><hostname>chat.example.org</hostname><port>443</port><socketType>SSL<",
            ] {
                assert!(xml.contains(server), "missing {server}");
            }
        }
    }

    #[tokio::test]
    async fn mta_sts_policy_is_served_on_the_mta_sts_host() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let reply = send(
            router(ctx),
            get(super::MTA_STS_PATH, Some("MTA-STS.chat.example.org:443")),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content_type, "text/plain");
        assert_eq!(
            reply.body,
            "version: STSv1\r\nmode: enforce\r\nmx: chat.example.org\r\nmax_age: 2419200\r\n"
        );
    }

    #[tokio::test]
    async fn mta_sts_policy_is_not_served_on_other_hosts() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        for host in [Some("chat.example.org"), Some("mta-sts.evil.example"), None] {
            let reply = send(router(ctx.clone()), get(super::MTA_STS_PATH, host)).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{host:?}");
        }
    }

    #[tokio::test]
    async fn mta_sts_host_is_read_from_the_uri_over_http2() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let uri = format!("https://mta-sts.chat.example.org{}", super::MTA_STS_PATH);
        let reply = send(router(ctx), get(&uri, None)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
}
