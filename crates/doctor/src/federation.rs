//! The relay as another relay sees it, without delivering anything.
//!
//! Port 25: greeting, `EHLO` (must offer `STARTTLS`), `STARTTLS`, the
//! handshake, `EHLO` again over TLS, `QUIT` (`221`): every step a peer
//! takes before `MAIL FROM`.
//!
//! `/mxdeliv`: `POST /mxdeliv` with an empty body and no `X-Mail-To`
//! header. The endpoint parses the envelope before it looks at a
//! recipient, the sender policy or the body, and refuses this one with
//! `400` and `554 5.5.1 No X-Mail-To recipient` (crates/http/src/mxdeliv.rs).
//! That answer proves the endpoint is there and its checks run, stores
//! nothing, asks no DNS and does not count against the per-client budget
//! of unknown recipients (which a probe naming a nonexistent user would).
//! `GET /mxdeliv` would only show that a route exists (`405`); a `404`
//! means the host has no `/mxdeliv`, and peers fall back to port 25.

use std::net::SocketAddr;

use chatmail_config::Settings;

use crate::Check;
use crate::listeners::{Service, ehlo_host, smtp_starttls, unreachable_fix};
use crate::probe::{self, Lines, ProbeError};
use crate::tls::Client;

/// The reply text of a request without recipients.
const NO_RECIPIENT: &str = "5.5.1";

/// One check per port 25 listener and per HTTPS listener.
pub(crate) async fn check(settings: &Settings) -> Vec<Check> {
    let listen = &settings.config.listen;
    let client = match Client::new(settings) {
        Ok(client) => client,
        Err(e) => {
            return vec![Check::fail(
                "federation",
                e.to_string(),
                "check mail_domain",
            )];
        }
    };
    let host = ehlo_host(settings);
    let smtp = listen.smtp.iter().map(|&addr| smtp(&client, addr, &host));
    let https = listen
        .https
        .iter()
        .map(|&addr| mxdeliv(&client, addr, &host));
    let (mut checks, https) = tokio::join!(
        futures::future::join_all(smtp),
        futures::future::join_all(https)
    );
    checks.extend(https);
    checks.extend(missing(settings));
    checks
}

/// A warning for each inbound path that is not configured, a failure
/// when neither is.
fn missing(settings: &Settings) -> Option<Check> {
    let listen = &settings.config.listen;
    match (listen.smtp.is_empty(), listen.https.is_empty()) {
        (false, false) => None,
        (true, true) => Some(Check::fail(
            "federation",
            "neither [listen] smtp nor [listen] https is set: no other relay can deliver here",
            "listen on port 25 and 443",
        )),
        (true, false) => Some(Check::warn(
            "federation smtp",
            "no [listen] smtp: peers can deliver only over /mxdeliv",
            "listen on port 25 for peers that do not speak /mxdeliv",
        )),
        (false, true) => Some(Check::warn(
            "federation mxdeliv",
            "no [listen] https: peers fall back to SMTP on port 25",
            "listen on port 443",
        )),
    }
}

async fn smtp(client: &Client, addr: SocketAddr, host: &str) -> Check {
    let name = format!("federation smtp {addr}");
    let target = probe::target(addr);
    let session = async {
        let tcp = probe::connect(target).await?;
        let mut session = smtp_starttls(client, tcp, host).await?;
        session.lines.ehlo(host).await?;
        session.lines.quit().await?;
        Ok::<_, ProbeError>(session.version)
    };
    match session.await {
        Ok(version) => Check::pass(
            name,
            format!("EHLO offers STARTTLS, {version} handshake, EHLO over TLS, QUIT 221"),
        ),
        Err(ProbeError::NoStartTls) => Check::fail(
            name,
            format!("{target}: EHLO does not offer STARTTLS; chatmail relays refuse cleartext"),
            "run the relay's own MX on [listen] smtp, not another MTA",
        ),
        Err(e) => {
            let fix = unreachable_fix(Service::Smtp, addr, &e);
            Check::fail(name, format!("{target}: {e}"), &fix)
        }
    }
}

async fn mxdeliv(client: &Client, addr: SocketAddr, host: &str) -> Check {
    let name = format!("federation mxdeliv {addr}");
    let target = probe::target(addr);
    let answer = async {
        let tls = client.web(probe::connect(target).await?).await?;
        let mut lines = Lines::new(tls.stream);
        lines.http(&probe::request("POST", "/mxdeliv", host)).await
    };
    match answer.await {
        Ok((400, body)) if body.contains(NO_RECIPIENT) => Check::pass(
            name,
            format!(
                "POST /mxdeliv without recipients answered 400 {} (nothing delivered)",
                body.trim()
            ),
        ),
        Ok((404, _)) => Check::fail(
            name,
            format!("{target}: no /mxdeliv there (404): peers fall back to port 25"),
            "let [listen] https be served by the relay itself, or forward /mxdeliv to it",
        ),
        Ok((status, body)) => Check::fail(
            name,
            format!("{target}: POST /mxdeliv answered {status} {}", body.trim()),
            "forward /mxdeliv to the relay unchanged, or let it serve [listen] https itself",
        ),
        Err(e) => {
            let fix = unreachable_fix(Service::Https, addr, &e);
            Check::fail(name, format!("{target}: {e}"), &fix)
        }
    }
}
