//! Peers that take the connection and then never answer, or answer one
//! byte a minute, hold no more than their share of the outbound queue's
//! parallel deliveries: mail to a healthy relay keeps flowing at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::relay::{RelayOptions, RelayProcess};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const PASSWORD: &str = "stalled-peer-password";
const EXTRA: &str = "[dkim]\nalgorithm = \"ed25519\"\n";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

fn ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 70, host)
}

/// A peer on `addr` that accepts every connection and then sends a byte
/// every `pause` (never, for `None`), holding the connections open.
async fn stalled_peer(addr: SocketAddr, pause: Option<Duration>) -> u16 {
    let listener = TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    match pause {
                        Some(pause) => {
                            tokio::time::sleep(pause).await;
                            if stream.write_all(b"2").await.is_err() {
                                return;
                            }
                        }
                        None => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                }
            });
        }
    });
    port
}

/// A static route for the IP-literal domain of `host` to `port` for both
/// `/mxdeliv` and SMTP.
fn route(host: Ipv4Addr, port: u16) -> String {
    format!(
        "[federation.static_routes.\"[{host}]\"]\nhost = \"{host}\"\nhttps_port = {port}\nsmtp_port = {port}\n"
    )
}

#[tokio::test]
async fn mail_to_a_healthy_peer_flows_while_stalled_peers_hold_their_deliveries() {
    let silent = stalled_peer(SocketAddr::new(ip(10).into(), 0), None).await;
    let trickle = stalled_peer(
        SocketAddr::new(ip(11).into(), 0),
        Some(Duration::from_secs(60)),
    )
    .await;
    let mut b = RelayProcess::configure(binary(), &RelayOptions::on(ip(3), EXTRA)).unwrap();
    b.launch().await.unwrap();
    let mut a = RelayProcess::configure(binary(), &RelayOptions::on(ip(2), EXTRA)).unwrap();
    a.append_config(&format!(
        "{}{}{}",
        b.route(true),
        route(ip(10), silent),
        route(ip(11), trickle)
    ))
    .unwrap();
    // Few slots, so that the stalled peers could take every one of them.
    a.append_config(
        "[federation]\nmax_parallel_deliveries = 8\n\
         [limits]\nmax_user_send_per_minute = 1000\nmax_user_send_burst = 1000\n",
    )
    .unwrap();
    a.launch().await.unwrap();

    let tls_a = tls_config(&a.cert_path()).unwrap();
    let tls_b = tls_config(&b.cert_path()).unwrap();
    let alice = a.address("alice1234");
    let bob = b.address("bobbob123");
    let imaps_b = b.addr(b.ports.imaps);
    drop(Imap::login(imaps_b, &tls_b, &bob, PASSWORD).await.unwrap());
    let mut smtp = Smtp::login(a.addr(a.ports.submissions), &tls_a, &alice, PASSWORD)
        .await
        .unwrap();
    for n in 0..8 {
        for host in [10, 11] {
            let to = format!("stalled{n:02}@[{}]", ip(host));
            let (code, text) = smtp
                .send(&alice, &[&to], &encrypted(&alice, &to, 1024))
                .await
                .unwrap();
            assert_eq!(code, 250, "{text}");
        }
    }
    // Let the stalled attempts start and hang.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let sent = Instant::now();
    for _ in 0..3 {
        let (code, text) = smtp
            .send(&alice, &[&bob], &encrypted(&alice, &bob, 1024))
            .await
            .unwrap();
        assert_eq!(code, 250, "{text}");
    }
    let mut imap = Imap::login(imaps_b, &tls_b, &bob, PASSWORD).await.unwrap();
    loop {
        let selected = imap.command("SELECT INBOX").await.unwrap();
        if selected.iter().any(|l| l.trim_end() == "* 3 EXISTS") {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "mail to the healthy peer is stuck behind the stalled ones: {selected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "3 messages to the healthy peer arrived in {:?}",
        sent.elapsed()
    );
    let queue = a.cli(&["queue", "list"]).unwrap();
    assert!(queue.contains("stalled"), "{queue}");
}
