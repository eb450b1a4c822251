//! The built-in iroh relay behind the HTTPS port of a real relay process,
//! driven by iroh's own relay client (the protocol of iroh 0.35, which
//! Delta Chat 2.65's core speaks): two clients exchange packets through
//! port 443, `/ping` and `/generate_204` answer, the metrics count the
//! clients, and IMAP METADATA publishes the URL exactly while the relay
//! runs. iroh's client trusts only the public web roots, so it reaches the
//! self-signed relay through a TLS-terminating tunnel
//! (`chatmail_testkit::tunnel`). Each test runs its relay on its own
//! loopback address (`127.0.8N.2`). A stop request ends the relay
//! connections and the process.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use chatmail_testkit::client::{Imap, tls_config};
use chatmail_testkit::relay::{RelayOptions, RelayProcess, closed_port};
use chatmail_testkit::tunnel::{self, Target};
use futures::{SinkExt as _, StreamExt as _};
use iroh_base::{RelayUrl, SecretKey};
use iroh_relay::client::{Client, ClientBuilder, ReceivedMessage, SendMessage};
use iroh_relay::dns::DnsResolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "iroh-test-password";
/// ed25519 keys: generating RSA keys in a debug build is slow.
const DKIM: &str = "[dkim]\nalgorithm = \"ed25519\"\n";
const IROH_KEY: &str = "/shared/vendor/deltachat/irohrelay";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

/// A plain-HTTP address that leads to `relay`'s HTTPS port.
async fn tunnel_to(relay: &RelayProcess) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = Target {
        addr: relay.addr(relay.ports.https),
        cert: relay.cert_path(),
        server_name: relay.domain.clone(),
    };
    tokio::spawn(tunnel::serve(listener, target));
    addr
}

/// One HTTP/1.1 request on a fresh connection; the whole reply.
async fn http(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut reply));
    read.await.unwrap().unwrap();
    reply
}

/// The `irohrelay` METADATA entry a fresh user of `relay` reads.
async fn iroh_entry(relay: &RelayProcess) -> String {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let imaps = relay.addr(relay.ports.imaps);
    let user = relay.address("webxdcap1");
    let mut imap = Imap::login(imaps, &tls, &user, PASSWORD).await.unwrap();
    let lines = imap
        .command(&format!("GETMETADATA \"\" ({IROH_KEY})"))
        .await
        .unwrap();
    assert!(lines.last().unwrap().contains("OK"), "{lines:?}");
    let line = lines.iter().find(|l| l.starts_with("* METADATA")).unwrap();
    let value = line.split(IROH_KEY).nth(1).unwrap();
    value.trim().trim_end_matches(')').trim().to_owned()
}

/// An iroh relay client with the key made of `seed`, connected to `url`.
async fn client(url: &RelayUrl, seed: u8) -> (Client, iroh_base::NodeId) {
    let key = SecretKey::from_bytes(&[seed; 32]);
    let node = key.public();
    let builder = ClientBuilder::new(url.clone(), key, DnsResolver::new());
    let connect = tokio::time::timeout(Duration::from_secs(10), builder.connect());
    (connect.await.unwrap().unwrap(), node)
}

/// The next packet `client` receives (other frames skipped), with its sender.
async fn packet(client: &mut Client) -> (iroh_base::NodeId, Bytes) {
    let wait = async {
        loop {
            match client
                .next()
                .await
                .expect("relay connection closed")
                .unwrap()
            {
                ReceivedMessage::ReceivedPacket {
                    remote_node_id,
                    data,
                } => return (remote_node_id, data),
                ReceivedMessage::Ping(data) => client.send(SendMessage::Pong(data)).await.unwrap(),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("no packet within 10 s")
}

/// `GET /metrics` on `addr`: the value of `series`.
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    chatmail_testkit::relay::metric(addr, series).await.unwrap()
}

#[tokio::test]
async fn two_iroh_clients_exchange_packets_through_the_https_port() {
    let ip = Ipv4Addr::new(127, 0, 81, 2);
    let metrics = SocketAddr::new(ip.into(), closed_port(ip).unwrap());
    let extra = format!("{DKIM}[metrics]\nenabled = true\nlisten = \"{metrics}\"\n");
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    let https = relay.addr(relay.ports.https);
    assert_eq!(iroh_entry(&relay).await, format!("\"https://{https}/\""));

    let front = tunnel_to(&relay).await;
    let ping = http(front, "/ping", "").await;
    assert!(ping.starts_with("HTTP/1.1 200"), "{ping}");
    let probe = http(
        front,
        "/generate_204",
        "X-Tailscale-Challenge: madmail.test\r\n",
    )
    .await;
    assert!(probe.starts_with("HTTP/1.1 204"), "{probe}");
    let challenge = probe.to_ascii_lowercase();
    assert!(
        challenge.contains("x-tailscale-response: response madmail.test"),
        "{probe}"
    );

    let url: RelayUrl = format!("http://{front}/").parse().unwrap();
    let (mut alice, alice_node) = client(&url, 1).await;
    let (mut bob, bob_node) = client(&url, 2).await;
    // The relay forwards only to clients it has seen: retry until Bob's
    // registration has reached it.
    let hello = Bytes::from_static(b"realtime hello");
    let mut got = None;
    for _ in 0..20 {
        let send = SendMessage::SendPacket(bob_node, hello.clone());
        alice.send(send).await.unwrap();
        let wait = tokio::time::timeout(Duration::from_millis(500), packet(&mut bob));
        if let Ok(received) = wait.await {
            got = Some(received);
            break;
        }
    }
    assert_eq!(got, Some((alice_node, hello)));
    let reply = Bytes::from_static(b"realtime reply");
    bob.send(SendMessage::SendPacket(alice_node, reply.clone()))
        .await
        .unwrap();
    assert_eq!(packet(&mut alice).await, (bob_node, reply));

    assert_eq!(metric(metrics, "madmail_iroh_connections").await, 2.0);
    assert!(metric(metrics, "madmail_iroh_clients_accepted_total").await >= 2.0);
    // The relay's byte counter reaches the metrics within its interval.
    let mut relayed = 0.0;
    let deadline = tokio::time::Instant::now() + 2 * chatmail_iroh::METRICS_INTERVAL;
    while tokio::time::Instant::now() < deadline {
        relayed = metric(metrics, "madmail_iroh_relayed_bytes_total").await;
        if relayed > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(relayed >= 28.0, "relayed bytes: {relayed}");

    drop((alice, bob));
    for _ in 0..40 {
        if metric(metrics, "madmail_iroh_connections").await == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the closed relay clients are still counted");
}

#[tokio::test]
async fn a_stop_request_closes_the_relay_connections_and_the_process_exits() {
    let ip = Ipv4Addr::new(127, 0, 84, 2);
    let mut relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, DKIM))
        .await
        .unwrap();
    let front = tunnel_to(&relay).await;
    let url: RelayUrl = format!("http://{front}/").parse().unwrap();
    let (mut alice, _) = client(&url, 1).await;
    let (_bob, bob_node) = client(&url, 2).await;
    // The connection carries frames before the stop.
    let send = SendMessage::SendPacket(bob_node, Bytes::from_static(b"before the stop"));
    alice.send(send).await.unwrap();

    let started = std::time::Instant::now();
    let status = relay.terminate(Duration::from_secs(15)).await.unwrap();
    // Well within the 10 s grace period: the tunnels end at the stop.
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let closed = async {
        while let Some(frame) = alice.next().await {
            if frame.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the relay connection stayed open after the stop");
}

#[tokio::test]
async fn without_the_built_in_relay_nothing_is_routed_or_published() {
    let ip = Ipv4Addr::new(127, 0, 82, 2);
    let extra = format!("{DKIM}[iroh]\nenabled = false\n");
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    assert_eq!(iroh_entry(&relay).await, "NIL");
    let front = tunnel_to(&relay).await;
    for path in ["/relay", "/ping", "/generate_204"] {
        let reply = http(front, path, "").await;
        assert!(reply.starts_with("HTTP/1.1 404"), "{path}: {reply}");
    }
}

#[tokio::test]
async fn an_external_relay_url_is_published_as_configured() {
    let ip = Ipv4Addr::new(127, 0, 83, 2);
    let extra = format!("{DKIM}[iroh]\nenabled = false\nurl = \"https://iroh.example.org/\"\n");
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    assert_eq!(iroh_entry(&relay).await, "\"https://iroh.example.org/\"");
}
