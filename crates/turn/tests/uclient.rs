//! The TURN server against coturn's own client, `turnutils_uclient`,
//! relaying to coturn's `turnutils_peer` (Debian package `coturn`), over
//! UDP and TCP, on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chatmail_turn::Credentials;
use chatmail_turn::peers::Peers;
use chatmail_turn::server::{Options, serve};
use tokio_util::sync::CancellationToken;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A TURN server on a free loopback port; stops when dropped.
struct Server {
    addr: SocketAddr,
    credentials: Arc<Credentials>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A port free for both UDP and TCP on loopback.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((LOOPBACK, port)).is_ok() {
            return port;
        }
    }
}

/// Starts a server whose peer rule allows `allowed` (loopback is denied
/// otherwise, as on a real relay).
async fn start(allowed: &[&str]) -> Server {
    start_with(allowed, 10, 100).await
}

/// [`start`] with at most `per_client` allocations per client address and
/// `tcp_connections` TCP connections.
async fn start_with(allowed: &[&str], per_client: usize, tcp_connections: usize) -> Server {
    let credentials = Arc::new(Credentials::from_secret(rand_secret(), 3600));
    let addr = SocketAddr::new(LOOPBACK, free_port());
    let allowed = allowed.iter().map(|net| net.parse().unwrap()).collect();
    let options = Options {
        realm: "relay.test".into(),
        listen: addr,
        udp: true,
        tcp: true,
        relay_addresses: vec![LOOPBACK],
        relay_ports: 50_000..=59_999,
        peers: Peers::new(allowed, vec![LOOPBACK]),
        max_allocations: 100,
        max_allocations_per_client: per_client,
        max_bandwidth: 0,
        max_tcp_connections: tcp_connections,
    };
    let stop = CancellationToken::new();
    tokio::spawn(serve(options, credentials.clone(), stop.clone()));
    // The sockets are bound as soon as the task runs.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Server {
        addr,
        credentials,
        stop,
    }
}

fn rand_secret() -> [u8; 32] {
    let mut secret = [0; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = (std::process::id() as usize + i * 31) as u8;
    }
    secret
}

/// Whether coturn's tools are installed (skip, saying so, if not).
fn have_coturn() -> bool {
    let found = std::process::Command::new("turnutils_uclient")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("skipped: turnutils_uclient not installed (Debian package coturn)");
    }
    found
}

/// A UDP echo peer (`turnutils_peer`) on a free loopback port.
fn start_peer() -> (tokio::process::Child, u16) {
    let port = free_port();
    let child = tokio::process::Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, port)
}

/// What one `turnutils_uclient` run printed and how it ended.
struct Run {
    output: String,
    /// Messages echoed back through the relay (`tot_recv_msgs`).
    received: u64,
}

/// Runs the client against the server at `server` with `username`/`password`, sending
/// 20 messages to the peer on `peer_port`; `extra` adds flags or overrides
/// those (`-t`: TCP, `-n`: messages, `-z`: milliseconds between them).
async fn uclient(
    server: SocketAddr,
    username: &str,
    password: &str,
    peer_port: u16,
    extra: &[&str],
) -> Run {
    let mut command = tokio::process::Command::new("turnutils_uclient");
    command
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-u", username, "-w", password])
        .args(["-p", &server.port().to_string()])
        .args(["-n", "20", "-l", "120", "-z", "5", "-c"])
        .args(extra)
        .arg("127.0.0.1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("turnutils_uclient did not finish in 30 s")
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let received = output
        .rsplit("tot_recv_msgs=")
        .next()
        .filter(|_| output.contains("tot_recv_msgs="))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0);
    Run { output, received }
}

impl Run {
    /// The lines where the client reports an error response.
    fn errors(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|line| line.to_ascii_lowercase().contains("error"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_for_a_fresh_credential_over_udp_and_tcp() {
    if !have_coturn() {
        return;
    }
    let server = start(&["127.0.0.0/8"]).await;
    let (_peer, peer_port) = start_peer();
    let (username, password) = server.credentials.mint_now();
    for transport in [&[][..], &["-t"][..]] {
        let run = uclient(server.addr, &username, &password, peer_port, transport).await;
        eprintln!(
            "{transport:?}: {}",
            run.output
                .lines()
                .filter(|l| l.contains("tot_"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        assert!(run.received >= 18, "{transport:?}: {}", run.output);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_expired_and_foreign_credentials() {
    if !have_coturn() {
        return;
    }
    let server = start(&["127.0.0.0/8"]).await;
    let (_peer, peer_port) = start_peer();
    let expired = server.credentials.mint(1_000_000_000);
    let foreign = Credentials::from_secret([9; 32], 3600).mint_now();
    for (what, (username, password)) in [("expired", expired), ("foreign", foreign)] {
        let run = uclient(server.addr, &username, &password, peer_port, &[]).await;
        eprintln!("{what}: {}", run.errors().join(" | "));
        assert_eq!(run.received, 0, "{what}: {}", run.output);
        assert!(
            run.errors().iter().any(|l| l.contains("error 401")),
            "{what}: {}",
            run.output
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_peers_on_loopback_by_default() {
    if !have_coturn() {
        return;
    }
    let server = start(&[]).await;
    let (_peer, peer_port) = start_peer();
    let (username, password) = server.credentials.mint_now();
    let run = uclient(server.addr, &username, &password, peer_port, &[]).await;
    eprintln!("loopback peer: {}", run.errors().join(" | "));
    assert_eq!(run.received, 0, "{}", run.output);
    assert!(
        run.errors().iter().any(|l| l.contains("error 403")),
        "{}",
        run.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_allocations_per_client_address() {
    if !have_coturn() {
        return;
    }
    let server = start_with(&["127.0.0.0/8"], 2, 100).await;
    let (_peer, peer_port) = start_peer();
    let (username, password) = server.credentials.mint_now();
    // Four clients from one address: two allocations, two refused.
    let run = uclient(server.addr, &username, &password, peer_port, &["-m", "4"]).await;
    eprintln!("four clients, cap 2: {}", run.errors().join(" | "));
    assert!(
        run.errors().iter().any(|l| l.contains("error 508")),
        "{}",
        run.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tcp_pool_makes_room_from_idle_connections_not_from_calls() {
    if !have_coturn() {
        return;
    }
    let server = start_with(&["127.0.0.0/8"], 10, 20).await;
    let (_peer, peer_port) = start_peer();
    let (username, password) = server.credentials.mint_now();
    // A call over TCP for about 4 s...
    let call = {
        let addr = server.addr;
        tokio::spawn(async move {
            let extra = ["-t", "-n", "40", "-z", "100"];
            uclient(addr, &username, &password, peer_port, &extra).await
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ...while five addresses open three times the pool and stay silent.
    let mut idle = Vec::new();
    for n in 0..60u8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(
                Ipv4Addr::new(127, 0, 3, 1 + n % 5).into(),
                0,
            ))
            .unwrap();
        if let Ok(tcp) = socket.connect(server.addr).await {
            idle.push(tcp);
        }
    }
    // A newcomer still gets its call through over TCP.
    let (username, password) = server.credentials.mint_now();
    let extra = ["-t", "-n", "5"];
    let newcomer = uclient(server.addr, &username, &password, peer_port, &extra).await;
    eprintln!(
        "newcomer during the flood: received {} of 5",
        newcomer.received
    );
    assert!(newcomer.received >= 4, "{}", newcomer.output);
    let run = call.await.unwrap();
    eprintln!("call during the flood: received {} of 40", run.received);
    assert!(run.received >= 36, "{}", run.output);
    drop(idle);
}
