//! Account creation over HTTPS (docs/specifications.md §1).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chatmail_config::MailDomain;
use serde::Serialize;

use crate::Context;

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
pub async fn create(State(ctx): State<Arc<Context>>) -> Response {
    if !ctx.settings.registration().open {
        let reason = serde_json::json!({ "reason": "registration is closed" });
        return (StatusCode::FORBIDDEN, Json(reason)).into_response();
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
