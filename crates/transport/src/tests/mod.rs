//! Delivery tests against real peers on 127.0.0.1 (see [`peer`]), reached
//! through static routes, and MX resolution against a real DNS server
//! (see [`dns`]).

mod dns;
mod peer;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use hickory_resolver::config::ResolverConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use self::peer::{HttpsPeer, SmtpBehaviour, SmtpPeer, closed_port};
use super::*;

const MESSAGE: &[u8] = b"From: <alice@_sender.test>\r\nTo: <bob@_peer.test>\r\n\
Subject: [...]\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n.hidden line\r\n..two dots\r\n\
-----END PGP MESSAGE-----\r\n";

/// A resolver with no servers: static routes and IP addresses need none.
fn no_dns() -> hickory_resolver::TokioResolver {
    let config = ResolverConfig::from_parts(None, vec![], vec![]);
    hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default())
        .build()
        .unwrap()
}

/// Settings of `_sender.test` with a static route for `domain`.
fn settings(domain: &str, https_port: Option<u16>, smtp_port: u16) -> Arc<Settings> {
    let https = https_port.map_or(String::new(), |p| format!("https_port = {p}\n"));
    let text = format!(
        "mail_domain = \"_sender.test\"\n\
         [federation.static_routes.\"{domain}\"]\nhost = \"127.0.0.1\"\n{https}smtp_port = {smtp_port}\n"
    );
    Arc::new(chatmail_config::parse(&text).unwrap())
}

fn transport(domain: &str, https_port: Option<u16>, smtp_port: u16) -> Transport {
    Transport::new(settings(domain, https_port, smtp_port), no_dns()).unwrap()
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|r| r.to_string()).collect()
}

fn delivered(recipients: &[String]) -> Vec<(String, Outcome)> {
    recipients
        .iter()
        .map(|r| (r.clone(), Outcome::Delivered))
        .collect()
}

#[tokio::test]
async fn mxdeliv_delivers_with_sender_and_recipient_headers() {
    let https = HttpsPeer::start(StatusCode::OK, "").await;
    let smtp = SmtpPeer::start(SmtpBehaviour::default()).await;
    let transport = transport("_peer.test", Some(https.port), smtp.port);
    let to = rcpts(&["bob@_peer.test", "carol@_peer.test"]);
    let report = transport
        .deliver("_peer.test", Some("alice@_sender.test"), &to, MESSAGE)
        .await;
    assert_eq!(
        report,
        Report {
            via: Some(Via::MxDeliv),
            results: delivered(&to)
        }
    );
    let posted = https.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].from.as_deref(), Some("alice@_sender.test"));
    assert_eq!(posted[0].to, to);
    assert_eq!(posted[0].body, MESSAGE);
    assert_eq!(smtp.mail_commands.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn null_sender_omits_the_x_mail_from_header() {
    let https = HttpsPeer::start(StatusCode::OK, "").await;
    let transport = transport("_peer.test", Some(https.port), closed_port().await);
    let to = rcpts(&["bob@_peer.test"]);
    let report = transport.deliver("_peer.test", None, &to, MESSAGE).await;
    assert_eq!(report.via, Some(Via::MxDeliv));
    assert_eq!(https.posted.lock().unwrap()[0].from, None);
}

#[tokio::test]
async fn mxdeliv_reuses_one_keep_alive_connection() {
    let https = HttpsPeer::start(StatusCode::OK, "").await;
    let transport = transport("_peer.test", Some(https.port), closed_port().await);
    let to = rcpts(&["bob@_peer.test"]);
    for _ in 0..3 {
        let report = transport
            .deliver("_peer.test", Some("a@_sender.test"), &to, MESSAGE)
            .await;
        assert_eq!(report.via, Some(Via::MxDeliv));
    }
    assert_eq!(https.posted.lock().unwrap().len(), 3);
    assert_eq!(https.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn mxdeliv_404_is_permanent_and_does_not_try_smtp() {
    let https = HttpsPeer::start(StatusCode::NOT_FOUND, "550 5.1.1 no such user here").await;
    let smtp = SmtpPeer::start(SmtpBehaviour::default()).await;
    let transport = transport("_peer.test", Some(https.port), smtp.port);
    let to = rcpts(&["nobody@_peer.test"]);
    let report = transport
        .deliver("_peer.test", Some("a@_sender.test"), &to, MESSAGE)
        .await;
    let permanent = Outcome::Permanent("550 5.1.1 no such user here".into());
    assert_eq!(
        report,
        Report {
            via: None,
            results: vec![(to[0].clone(), permanent)]
        }
    );
    assert_eq!(smtp.mail_commands.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn mxdeliv_down_falls_back_to_smtp_over_tls() {
    let smtp = SmtpPeer::start(SmtpBehaviour::default()).await;
    let transport = transport("_peer.test", Some(closed_port().await), smtp.port);
    let to = rcpts(&["bob@_peer.test", "carol@_peer.test"]);
    let report = transport
        .deliver("_peer.test", Some("alice@_sender.test"), &to, MESSAGE)
        .await;
    assert_eq!(
        report,
        Report {
            via: Some(Via::Smtp),
            results: delivered(&to)
        }
    );
    let mailed = smtp.mailed.lock().unwrap().clone();
    assert_eq!(mailed.len(), 1);
    assert!(mailed[0].tls, "the message went over TLS");
    assert_eq!(mailed[0].from, "alice@_sender.test");
    assert_eq!(mailed[0].to, to);
    assert_eq!(mailed[0].data, MESSAGE, "dot-stuffing is undone exactly");
}

#[tokio::test]
async fn smtp_fallback_makes_later_deliveries_skip_mxdeliv() {
    let https = HttpsPeer::start(StatusCode::BAD_GATEWAY, "").await;
    let smtp = SmtpPeer::start(SmtpBehaviour::default()).await;
    let transport = transport("_peer.test", Some(https.port), smtp.port);
    let to = rcpts(&["bob@_peer.test"]);
    for _ in 0..2 {
        let report = transport.deliver("_peer.test", None, &to, MESSAGE).await;
        assert_eq!(report.via, Some(Via::Smtp));
    }
    assert_eq!(
        https.posted.lock().unwrap().len(),
        1,
        "the second delivery skipped /mxdeliv"
    );
    assert_eq!(smtp.mailed.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn smtp_reports_each_recipient_separately() {
    let smtp = SmtpPeer::start(SmtpBehaviour::default()).await;
    let transport = transport("_peer.test", None, smtp.port);
    let to = rcpts(&["bob@_peer.test", "reject@_peer.test", "later@_peer.test"]);
    let report = transport
        .deliver("_peer.test", Some("a@_sender.test"), &to, MESSAGE)
        .await;
    assert_eq!(report.via, Some(Via::Smtp));
    let outcomes: Vec<Outcome> = report.results.into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Delivered,
            Outcome::Permanent("550 5.1.1 no such user".into()),
            Outcome::Temporary("450 4.2.1 mailbox busy".into()),
        ]
    );
    assert_eq!(
        smtp.mailed.lock().unwrap()[0].to,
        rcpts(&["bob@_peer.test"])
    );
}

#[tokio::test]
async fn smtp_4xx_for_every_recipient_is_temporary() {
    let smtp = SmtpPeer::start(SmtpBehaviour::default()).await;
    let transport = transport("_peer.test", None, smtp.port);
    let to = rcpts(&["later@_peer.test"]);
    let report = transport
        .deliver("_peer.test", Some("a@_sender.test"), &to, MESSAGE)
        .await;
    assert_eq!(report.via, None);
    assert!(
        matches!(&report.results[0].1, Outcome::Temporary(t) if t.contains("450 4.2.1 mailbox busy")),
        "{report:?}"
    );
    assert!(smtp.mailed.lock().unwrap().is_empty());
}

#[tokio::test]
async fn smtp_4xx_after_data_is_temporary() {
    let behaviour = SmtpBehaviour {
        data_reply: "451 4.3.0 disk full",
        ..Default::default()
    };
    let smtp = SmtpPeer::start(behaviour).await;
    let transport = transport("_peer.test", None, smtp.port);
    let to = rcpts(&["bob@_peer.test"]);
    let report = transport
        .deliver("_peer.test", Some("a@_sender.test"), &to, MESSAGE)
        .await;
    assert_eq!(report.via, None);
    assert!(
        matches!(&report.results[0].1, Outcome::Temporary(t) if t.contains("451 4.3.0 disk full"))
    );
}

#[tokio::test]
async fn smtp_without_starttls_sends_nothing() {
    let smtp = SmtpPeer::start(SmtpBehaviour {
        starttls: false,
        ..Default::default()
    })
    .await;
    let transport = transport("_peer.test", None, smtp.port);
    let to = rcpts(&["bob@_peer.test"]);
    let report = transport
        .deliver("_peer.test", Some("a@_sender.test"), &to, MESSAGE)
        .await;
    assert!(matches!(&report.results[0].1, Outcome::Temporary(t) if t.contains("STARTTLS")));
    assert_eq!(smtp.mail_commands.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn ordinary_domains_refuse_self_signed_certificates() {
    let https = HttpsPeer::start(StatusCode::OK, "").await;
    let smtp = SmtpPeer::start(SmtpBehaviour::default()).await;
    let transport = transport("peer.test", Some(https.port), smtp.port);
    let to = rcpts(&["bob@peer.test"]);
    let report = transport
        .deliver("peer.test", Some("a@_sender.test"), &to, MESSAGE)
        .await;
    assert_eq!(report.via, None);
    assert!(
        matches!(&report.results[0].1, Outcome::Temporary(t) if t.contains("TLS")),
        "{report:?}"
    );
    assert!(https.posted.lock().unwrap().is_empty());
    assert_eq!(smtp.mail_commands.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unreachable_peer_is_a_temporary_failure() {
    let smtp_port = closed_port().await;
    let transport = transport("_peer.test", Some(closed_port().await), smtp_port);
    let to = rcpts(&["bob@_peer.test", "carol@_peer.test"]);
    let report = transport.deliver("_peer.test", None, &to, MESSAGE).await;
    assert_eq!(report.via, None);
    assert_eq!(report.results.len(), 2);
    // The text names the host, the port and the step that failed.
    let want = format!("451 4.4.1 127.0.0.1: SMTP: cannot connect to 127.0.0.1 port {smtp_port}: ");
    assert!(
        report
            .results
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Temporary(t) if t.starts_with(&want))),
        "{report:?}"
    );
}
