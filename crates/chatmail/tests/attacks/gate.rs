//! Holes in the encryption gate and the inbound origin check, tried
//! against the running relay on every way in.
//!
//! Found before the fix: a message with `Content-Type: text/plain` first
//! and `multipart/encrypted` second was accepted (250); a cleartext
//! bounce from `MAILER-DAEMON@[6.6.6.6]` was accepted on port 25 and
//! `/mxdeliv` from any address; inbound mail whose `From:` is a user of
//! this relay was stored.

use chatmail_testkit::client::{Smtp, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::mx::Mx;
use chatmail_testkit::relay::RelayProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{NORMAL, PASSWORD, VICTIM, attacker, relay, report, tls_from, tls_with_alpn};

/// A cleartext delivery report from `from`, shaped like a real bounce.
fn bounce(from: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{VICTIM}>\r\nSubject: Undelivered\r\n\
         Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n\
         --r\r\nContent-Type: text/plain\r\n\r\nPlease click here.\r\n\
         --r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n\
         --r--\r\n"
    )
    .into_bytes()
}

/// Port 25 from an attacker address; the reply to the end of DATA.
async fn mx_deliver(relay: &RelayProcess, sender: &str, message: &[u8]) -> String {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.smtp);
    let mut mx = Mx::connect_from(Some(attacker(50)), addr).await.unwrap();
    mx.starttls(&tls, addr).await.unwrap();
    let (code, text) = mx.send(sender, &[VICTIM], message).await.unwrap();
    format!("{code} {text}")
}

/// `POST /mxdeliv` over HTTP/1.1 from an attacker address; the status
/// line and body.
async fn mxdeliv(relay: &RelayProcess, sender: Option<&str>, message: &[u8]) -> String {
    let config = tls_with_alpn(relay, &[b"http/1.1"]);
    let addr = relay.addr(relay.ports.https);
    let mut tls = tls_from(attacker(51), addr, &config).await.unwrap();
    let from = sender.map_or(String::new(), |s| format!("X-Mail-From: {s}\r\n"));
    let head = format!(
        "POST /mxdeliv HTTP/1.1\r\nHost: 127.0.0.1\r\n{from}X-Mail-To: {VICTIM}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        message.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(message).await.unwrap();
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    let status = reply.lines().next().unwrap_or("").to_owned();
    let body = reply
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    format!("{status} | {body}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_behind_a_second_content_type_is_refused() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let message = encrypted(NORMAL, VICTIM, 2048);
    let twice = [b"Content-Type: text/plain\r\n".as_slice(), &message].concat();
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login(addr, &tls, NORMAL, PASSWORD).await.unwrap();
    let (code, text) = smtp.send(NORMAL, &[VICTIM], &twice).await.unwrap();
    let (plain_code, _) = smtp.send(NORMAL, &[VICTIM], &message).await.unwrap();
    report(
        "gate-two-content-types",
        &[
            ("reply", format!("{code} {text}")),
            ("without_it", plain_code.to_string()),
        ],
    );
    assert_eq!(code, 523, "{text}");
    assert_eq!(
        plain_code, 250,
        "the same message with one Content-Type passes"
    );
    assert_eq!(crate::common::stored(&relay).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_bounces_and_local_senders_are_refused_inbound() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let forged = bounce("MAILER-DAEMON@[6.6.6.6]");
    let mx_bounce = mx_deliver(&relay, "", &forged).await;
    let http_bounce = mxdeliv(&relay, None, &forged).await;
    let local = encrypted(NORMAL, VICTIM, 2048);
    let mx_local = mx_deliver(&relay, "", &local).await;
    let http_local = mxdeliv(&relay, None, &local).await;
    let kept = crate::common::stored(&relay).await;
    report(
        "inbound-forgeries",
        &[
            ("mx_bounce", format!("{mx_bounce:?}")),
            ("mxdeliv_bounce", format!("{http_bounce:?}")),
            ("mx_local_from", format!("{mx_local:?}")),
            ("mxdeliv_local_from", format!("{http_local:?}")),
            ("stored", kept.to_string()),
        ],
    );
    assert!(mx_bounce.starts_with("554 5.7.1"), "{mx_bounce}");
    assert!(http_bounce.starts_with("HTTP/1.1 400"), "{http_bounce}");
    assert!(mx_local.starts_with("554 5.7.1 Local sender"), "{mx_local}");
    assert!(
        http_local.contains("554 5.7.1 Local sender"),
        "{http_local}"
    );
    assert_eq!(kept, 0, "nothing was stored");
}
