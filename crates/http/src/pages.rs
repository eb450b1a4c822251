//! The human-facing pages: `/` (account QR code, and the proxy's when it
//! runs), `/info` (limits from the configuration) and `/privacy` (operator
//! fields plus what the relay keeps).
//!
//! Everything is rendered on the server, without JavaScript; interpolated
//! values go through [`escape`]. On self-signed relays `/` shows a dclogin
//! QR code with fresh random credentials for every view: nothing is stored
//! until the first login, and the response is marked `no-store`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use qrcode::QrCode;
use qrcode::render::svg;

use crate::html::{escape, page, private_page};
use crate::{Context, new};

/// `GET /`.
pub async fn index(State(ctx): State<Arc<Context>>) -> Response {
    let host = escape(&ctx.settings.domain.host());
    let title = format!("{} chatmail relay", ctx.settings.domain.host());
    let mut body = format!("<h1>{host}</h1>");
    if !ctx.settings.registration().open {
        body += "<p>This relay does not accept new accounts at the moment.</p>";
        body += &proxy_code(&ctx);
        return Html(page(&title, &body)).into_response();
    }
    body += "<p>A chatmail relay: an e-mail server for \
             <a href=\"https://delta.chat\">Delta Chat</a> that only carries \
             end-to-end encrypted messages. Scan the code with Delta Chat \
             (\u{201c}Create new profile\u{201d}, \u{201c}Use other server\u{201d}) \
             or tap the button on a phone with Delta Chat installed.</p>";
    if ctx.settings.self_signed {
        // A dclogin code embeds a password: generate one per view.
        let (email, password) = ctx.accounts.generate();
        let url = new::dclogin_url(&email, &password, &ctx.settings.domain);
        body += &account_code(&url, &url);
        body += "<p class=\"note\">The code holds a fresh address and password made \
                 for this page view only; the account exists once Delta Chat first \
                 logs in with it. Reload the page for another one.</p>";
        body += &proxy_code(&ctx);
        return private_page(page(&title, &body));
    }
    let qr = format!("DCACCOUNT:{}/new", ctx.base_url);
    let link = format!("dcaccount:{}/new", ctx.base_url);
    body += &account_code(&qr, &link);
    body += &proxy_code(&ctx);
    Html(page(&title, &body)).into_response()
}

/// The Shadowsocks proxy's QR code and link, when the proxy runs.
fn proxy_code(ctx: &Context) -> String {
    let Some(link) = &ctx.proxy_link else {
        return String::new();
    };
    let qr = qr_svg(link, "Proxy QR code").unwrap_or_default();
    format!(
        "<h2>Proxy</h2><p>Where this relay cannot be reached directly, Delta Chat \
         can connect through its Shadowsocks proxy: scan the code in \
         \u{201c}Settings\u{201d}, \u{201c}Advanced\u{201d}, \u{201c}Proxy\u{201d}, \
         or copy the link. The proxy only reaches this relay.</p>{qr}\
         <p class=\"note\"><code>{}</code></p>",
        escape(link)
    )
}

/// The QR code of `data` and a button linking to `link`.
fn account_code(data: &str, link: &str) -> String {
    let qr = qr_svg(data, "Account QR code").unwrap_or_default();
    format!(
        "{qr}<a class=\"button\" href=\"{}\">Get an account in Delta Chat</a>",
        escape(link)
    )
}

/// `data` as an inline SVG QR code described as `label`; `None` if it is
/// too long to encode.
pub fn qr_svg(data: &str, label: &str) -> Option<String> {
    let code = QrCode::new(data.as_bytes()).ok()?;
    let svg = code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .min_dimensions(240, 240)
        .build();
    // Drop the XML declaration for inline use and hook up the style.
    let start = svg.find("<svg")?;
    Some(svg[start..].replacen(
        "<svg ",
        &format!(
            "<svg class=\"qr\" role=\"img\" aria-label=\"{}\" ",
            escape(label)
        ),
        1,
    ))
}

/// `GET /info`.
pub async fn info(State(ctx): State<Arc<Context>>) -> Html<String> {
    let config = &ctx.settings.config;
    let limits = &config.limits;
    let retention = &config.retention;
    let registration = if ctx.settings.registration().open {
        "open"
    } else {
        "closed"
    };
    let rows = [
        ("Registration", registration.to_owned()),
        ("Largest message", size(limits.max_message_size)),
        ("Storage per account", size(limits.max_mailbox_size)),
        ("Recipients per message", limits.max_recipients.to_string()),
        (
            "Sending rate",
            format!(
                "{} messages per minute (bursts of {})",
                limits.max_user_send_per_minute, limits.max_user_send_burst
            ),
        ),
        ("Messages deleted after", days(retention.delete_mails_after)),
        (
            "Seen large messages deleted after",
            format!(
                "{} (over {})",
                days(retention.delete_large_after),
                size(retention.large_message_size)
            ),
        ),
        (
            "Unused accounts deleted after",
            days(retention.delete_inactive_users_after),
        ),
    ];
    let list: String = rows
        .iter()
        .map(|(k, v)| format!("<dt>{}</dt><dd>{}</dd>", escape(k), escape(v)))
        .collect();
    let host = escape(&ctx.settings.domain.host());
    let body = format!(
        "<h1>About {host}</h1><p>This relay accepts only end-to-end encrypted \
         messages (and the few unencrypted ones Delta Chat needs to set up \
         encryption). Its limits:</p><dl>{list}</dl>\
         <p class=\"note\">When an account is nearly full, its oldest messages \
         are removed to make room; messages of the last day are kept.</p>"
    );
    Html(page("Relay information", &body))
}

/// `GET /privacy`.
pub async fn privacy(State(ctx): State<Arc<Context>>) -> Html<String> {
    let web = &ctx.settings.config.web;
    let retention = &ctx.settings.config.retention;
    let mut operator = String::new();
    let fields = [
        ("Operator", &web.privacy_operator),
        ("Postal address", &web.privacy_postal),
        ("Contact", &web.privacy_mail),
        ("Data protection officer", &web.privacy_supervisor),
    ];
    for (label, value) in fields {
        if let Some(value) = value.as_deref().filter(|v| !v.trim().is_empty()) {
            operator += &format!("<dt>{}</dt><dd>{}</dd>", escape(label), escape(value));
        }
    }
    let operator = if operator.is_empty() {
        "<p>The operator of this relay has not published contact details.</p>".to_owned()
    } else {
        format!("<dl>{operator}</dl>")
    };
    let host = escape(&ctx.settings.domain.host());
    let body = format!(
        "<h1>Privacy on {host}</h1><h2>Who runs this relay</h2>{operator}\
         <h2>What is stored</h2><ul>\
         <li>Your address and a hash of your password.</li>\
         <li>The day of your last login (not the time).</li>\
         <li>Messages waiting for your devices. They are end-to-end \
         encrypted: the relay cannot read them.</li>\
         <li>If you enable notifications, the push token of each device.</li>\
         </ul><h2>What is not stored</h2><ul>\
         <li>No IP addresses, neither in the database nor linked to accounts.</li>\
         <li>No message contents in logs.</li></ul>\
         <h2>What is deleted, and when</h2><ul>\
         <li>Every message after {}.</li>\
         <li>Messages over {} already seen after {}.</li>\
         <li>Accounts not used for {}, with all their messages.</li></ul>",
        days(retention.delete_mails_after),
        size(retention.large_message_size),
        days(retention.delete_large_after),
        days(retention.delete_inactive_users_after),
    );
    Html(page("Privacy", &body))
}

/// A byte count for people, in the unit it was configured in:
/// `30 MiB`, `200 kB`.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    match bytes {
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= 1_000_000 && b % 1_000_000 == 0 => format!("{} MB", b / 1_000_000),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b if b >= 1000 && b % 1000 == 0 => format!("{} kB", b / 1000),
        b if b >= MIB => format!("{} MiB", b.div_ceil(MIB)),
        b => format!("{b} bytes"),
    }
}

fn days(n: u32) -> String {
    if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;

    use crate::router;
    use crate::testutil::{context, get, send};

    #[tokio::test]
    async fn index_shows_the_dcaccount_qr_code_and_link() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let reply = send(router(ctx), get("/", None)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.content_type.starts_with("text/html"),
            "{}",
            reply.content_type
        );
        assert!(reply.body.contains("<svg class=\"qr\""));
        assert!(!reply.body.contains("<?xml"));
        assert!(
            reply
                .body
                .contains("href=\"dcaccount:https://chat.example.org/new\"")
        );
        assert!(!reply.body.contains("<script"));
    }

    #[test]
    fn sizes_read_in_the_unit_they_were_configured_in() {
        assert_eq!(super::size(31_457_280), "30 MiB");
        assert_eq!(super::size(200_000), "200 kB");
        assert_eq!(super::size(2_000_000), "2 MB");
        assert_eq!(super::size(4096), "4 KiB");
        assert_eq!(super::size(1_500_001), "2 MiB");
        assert_eq!(super::size(12), "12 bytes");
    }

    #[test]
    fn qr_code_encodes_a_dcaccount_url() {
        let svg = super::qr_svg("DCACCOUNT:https://chat.example.org/new", "Account").unwrap();
        assert!(svg.starts_with("<svg class=\"qr\""));
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("<path"));
        // Too much for any QR version: no code instead of a panic.
        assert!(super::qr_svg(&"x".repeat(8000), "Account").is_none());
    }

    #[tokio::test]
    async fn index_on_a_self_signed_relay_shows_fresh_dclogin_credentials() {
        let (ctx, _dir) = context("1.2.3.4", "").await;
        let router = router(ctx);
        let first = send(router.clone(), get("/", None)).await;
        let second = send(router, get("/", None)).await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.cache, "no-store");
        let link = |body: &str| {
            let start = body.find("href=\"dclogin:").unwrap() + 6;
            body[start..start + body[start..].find('"').unwrap()].to_owned()
        };
        let (a, b) = (link(&first.body), link(&second.body));
        assert!(
            a.contains("@[1.2.3.4]?p=") && a.contains("&amp;ic=3"),
            "{a}"
        );
        assert_ne!(a, b, "every view gets its own credentials");
        assert!(first.body.contains("<svg class=\"qr\""));
    }

    #[tokio::test]
    async fn index_shows_the_proxy_link_exactly_when_the_proxy_runs() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let reply = send(router(ctx.clone()), get("/", None)).await;
        assert!(!reply.body.contains("ss://"));
        assert!(!reply.body.contains("Proxy QR code"));
        let link = "ss://Y2hhY2hhMjAtaWV0Zi1wb2x5MTMwNTpwdw@chat.example.org:8388#chat";
        let with_proxy = crate::Context {
            settings: ctx.settings.clone(),
            accounts: ctx.accounts.clone(),
            base_url: ctx.base_url.clone(),
            inbound: ctx.inbound.clone(),
            acme_challenges: None,
            iroh: None,
            proxy_link: Some(link.into()),
            admin: None,
        };
        let reply = send(router(Arc::new(with_proxy)), get("/", None)).await;
        assert!(reply.body.contains("aria-label=\"Proxy QR code\""));
        assert!(reply.body.contains(&format!("<code>{link}</code>")));
        assert!(reply.body.contains("aria-label=\"Account QR code\""));
    }

    #[tokio::test]
    async fn index_without_registration_has_no_code() {
        let (ctx, _dir) = context("chat.example.org", "[registration]\nopen = false\n").await;
        let reply = send(router(ctx), get("/", None)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(!reply.body.contains("<svg"));
        assert!(reply.body.contains("does not accept new accounts"));
    }

    #[tokio::test]
    async fn info_lists_the_configured_limits() {
        let extra = "[limits]\nmax_message_size = 10485760\nmax_mailbox_size = 104857600\n\
                     max_user_send_per_minute = 30\n[retention]\ndelete_mails_after = 15\n";
        let (ctx, _dir) = context("chat.example.org", extra).await;
        let reply = send(router(ctx), get("/info", None)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.content_type.starts_with("text/html"));
        for expected in [
            "<dd>10 MiB</dd>",
            "<dd>100 MiB</dd>",
            "<dd>30 messages per minute (bursts of 10)</dd>",
            "<dd>15 days</dd>",
            "<dd>open</dd>",
            "<dd>90 days</dd>",
        ] {
            assert!(reply.body.contains(expected), "missing {expected}");
        }
    }

    #[tokio::test]
    async fn privacy_shows_escaped_operator_fields() {
        let extra =
            "[web]\nprivacy_operator = \"Alice <&> Co\"\nprivacy_mail = \"privacy@example.org\"\n";
        let (ctx, _dir) = context("chat.example.org", extra).await;
        let reply = send(router(ctx), get("/privacy", None)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.body.contains("<dd>Alice &lt;&amp;&gt; Co</dd>"));
        assert!(reply.body.contains("<dd>privacy@example.org</dd>"));
        assert!(!reply.body.contains("Alice <&>"));
        assert!(reply.body.contains("No IP addresses"));
        assert!(reply.body.contains("Every message after 20 days"));
    }

    #[tokio::test]
    async fn privacy_without_operator_fields_says_so() {
        let (ctx, _dir) = context("chat.example.org", "").await;
        let reply = send(router(ctx), get("/privacy", None)).await;
        assert!(reply.body.contains("has not published contact details"));
        assert!(reply.body.contains("day of your last login"));
    }
}
