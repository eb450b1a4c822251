//! A stop request (SIGTERM) lets what is in flight finish: a DATA transfer
//! under way is acknowledged and stored, a `/mxdeliv` request under way is
//! delivered, a client in IDLE hears `* BYE` at once, and the process exits
//! with status 0 as soon as the last of them is done.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, dot_stuff, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::relay::RelayProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "shutdown-test-password";

fn binary() -> &'static std::path::Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

#[tokio::test]
async fn a_stop_request_lets_data_and_mxdeliv_in_flight_finish_then_exits() {
    let ip = Ipv4Addr::new(127, 0, 65, 10);
    let mut relay = RelayProcess::start_on(binary(), ip, "").await.unwrap();
    let tls = tls_config(&relay.cert_path()).unwrap();
    let (alice, bob) = (relay.address("alice1234"), relay.address("bobbob123"));
    let imaps = relay.addr(relay.ports.imaps);
    let mut idle = Imap::login(imaps, &tls, &bob, PASSWORD).await.unwrap();
    idle.command("SELECT INBOX").await.unwrap();
    idle.idle().await.unwrap();

    // A submission halfway through its DATA.
    let submissions = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login(submissions, &tls, &alice, PASSWORD)
        .await
        .unwrap();
    smtp.begin_data(&alice, &bob).await.unwrap();
    let data = dot_stuff(&encrypted(&alice, &bob, 64 * 1024));
    let (first, rest) = data.split_at(data.len() / 2);
    smtp.write(first).await.unwrap();

    // A `/mxdeliv` request halfway through its body.
    let peer = "carolcarol@[127.0.0.1]";
    let body = encrypted(peer, &bob, 64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(tls.clone());
    let tcp = tokio::net::TcpStream::connect(relay.addr(relay.ports.https))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(std::net::IpAddr::from(ip).into());
    let mut http = connector.connect(name, tcp).await.unwrap();
    let head = format!(
        "POST /mxdeliv HTTP/1.1\r\nHost: {ip}\r\nX-Mail-From: {peer}\r\nX-Mail-To: {bob}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    http.write_all(head.as_bytes()).await.unwrap();
    let (body_first, body_rest) = body.split_at(body.len() / 2);
    http.write_all(body_first).await.unwrap();
    http.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = relay.pid().unwrap().to_string();
    let asked = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let bye = tokio::time::timeout(Duration::from_secs(1), idle.next_line())
        .await
        .expect("no BYE within a second")
        .unwrap();
    assert!(
        bye.as_deref().is_some_and(|l| l.starts_with("* BYE")),
        "{bye:?}"
    );
    let bye_after = asked.elapsed();

    // The clients take their time over the rest: it is still accepted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    smtp.write(rest).await.unwrap();
    let (code, text) = smtp.reply().await.unwrap();
    assert_eq!(code, 250, "{text}");
    http.write_all(body_rest).await.unwrap();
    http.flush().await.unwrap();
    let mut reply = Vec::new();
    let _ = http.read_to_end(&mut reply).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let finished = asked.elapsed();
    // The session says goodbye instead of waiting for a next command.
    match smtp.command("NOOP").await {
        Ok((code, text)) => assert_eq!(code, 421, "{text}"),
        Err(e) => assert!(e.to_string().contains("closed"), "{e}"),
    }

    let status = relay.wait_exit(Duration::from_secs(5)).await.unwrap();
    let exited = asked.elapsed();
    assert!(status.success(), "{status}");
    eprintln!(
        "stop request: BYE after {bye_after:?}, in-flight done after {finished:?}, exit after {exited:?}"
    );
    assert!(exited - finished < Duration::from_secs(2), "{exited:?}");

    relay.launch().await.unwrap();
    let mut imap = Imap::login(imaps, &tls, &bob, PASSWORD).await.unwrap();
    let selected = imap.command("SELECT INBOX").await.unwrap();
    assert!(
        selected.iter().any(|l| l.trim_end() == "* 2 EXISTS"),
        "{selected:?}"
    );
}

/// A client that stalls in DATA does not hold the stop up for longer than
/// the grace period; its message was never acknowledged, so nothing is lost.
#[tokio::test]
async fn a_stalled_transfer_holds_the_stop_up_no_longer_than_the_grace_period() {
    let ip = Ipv4Addr::new(127, 0, 65, 11);
    let mut relay = RelayProcess::start_on(binary(), ip, "").await.unwrap();
    let tls = tls_config(&relay.cert_path()).unwrap();
    let (alice, bob) = (relay.address("alice1234"), relay.address("bobbob123"));
    let imaps = relay.addr(relay.ports.imaps);
    drop(Imap::login(imaps, &tls, &bob, PASSWORD).await.unwrap());
    let submissions = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login(submissions, &tls, &alice, PASSWORD)
        .await
        .unwrap();
    smtp.begin_data(&alice, &bob).await.unwrap();
    let data = dot_stuff(&encrypted(&alice, &bob, 4096));
    smtp.write(&data[..data.len() / 2]).await.unwrap();

    let asked = Instant::now();
    let status = relay.terminate(Duration::from_secs(15)).await.unwrap();
    let exited = asked.elapsed();
    assert!(status.success(), "{status}");
    eprintln!("stop request with a stalled DATA: exit after {exited:?}");
    assert!(exited >= Duration::from_secs(9), "{exited:?}");
    assert!(smtp.reply().await.is_err(), "a reply to half a message");
    relay.launch().await.unwrap();
    let mut imap = Imap::login(imaps, &tls, &bob, PASSWORD).await.unwrap();
    let selected = imap.command("SELECT INBOX").await.unwrap();
    assert!(
        selected.iter().any(|l| l.trim_end() == "* 0 EXISTS"),
        "{selected:?}"
    );
}
