//! TURN through a real relay process: the credential a client reads from
//! IMAP METADATA works with coturn's `turnutils_uclient` against the
//! relay's own TURN server, and the entry exists exactly when that server
//! runs. Each test runs its relay on its own loopback address
//! (`127.0.7N.2`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use chatmail_testkit::client::{Imap, tls_config};
use chatmail_testkit::relay::{RelayOptions, RelayProcess, free_udp_tcp_port};

const PASSWORD: &str = "turn-test-password";
/// ed25519 keys: generating RSA keys in a debug build is slow.
const DKIM: &str = "[dkim]\nalgorithm = \"ed25519\"\n";
const TURN_KEY: &str = "/shared/vendor/deltachat/turn";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

/// The `turn` METADATA entry a fresh user of `relay` reads, if any.
async fn turn_entry(relay: &RelayProcess) -> Option<String> {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let user = relay.address("turncall1");
    let imaps = relay.addr(relay.ports.imaps);
    let mut imap = Imap::login(imaps, &tls, &user, PASSWORD).await.unwrap();
    let lines = imap
        .command(&format!("GETMETADATA \"\" ({TURN_KEY})"))
        .await
        .unwrap();
    assert!(lines.last().unwrap().contains("OK"), "{lines:?}");
    let line = lines.iter().find(|line| line.starts_with("* METADATA"))?;
    let value = line
        .split(TURN_KEY)
        .nth(1)?
        .trim()
        .trim_end_matches(')')
        .trim();
    (value != "NIL").then(|| value.trim_matches('"').to_owned())
}

#[tokio::test]
async fn the_metadata_credential_relays_through_the_relays_own_turn_server() {
    if std::process::Command::new("turnutils_uclient")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: turnutils_uclient not installed (Debian package coturn)");
        return;
    }
    let ip = Ipv4Addr::new(127, 0, 71, 2);
    let port = free_udp_tcp_port(ip).unwrap();
    let listen = SocketAddr::new(ip.into(), port);
    let extra = format!(
        "{DKIM}[turn]\nenabled = true\nhost = \"{ip}\"\nport = {port}\n\
         listen = [\"{listen}\"]\nallowed_peers = [\"127.0.0.0/8\"]\n"
    );
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    let entry = turn_entry(&relay).await.expect("no turn entry");
    let mut fields = entry.splitn(4, ':');
    let (host, entry_port) = (fields.next().unwrap(), fields.next().unwrap());
    let (username, password) = (fields.next().unwrap(), fields.next().unwrap());
    assert_eq!(
        (host, entry_port),
        (ip.to_string().as_str(), port.to_string().as_str())
    );

    let peer_port = free_udp_tcp_port(Ipv4Addr::LOCALHOST).unwrap();
    let _peer = tokio::process::Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = tokio::process::Command::new("turnutils_uclient")
        .args(["-e", "127.0.0.1", "-r", &peer_port.to_string()])
        .args(["-u", username, "-w", password, "-p", &port.to_string()])
        .args(["-n", "20", "-l", "120", "-z", "5", "-c"])
        .arg(IpAddr::from(ip).to_string())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), client)
        .await
        .unwrap()
        .unwrap();
    let output = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let totals = output
        .lines()
        .rfind(|line| line.contains("tot_recv_msgs="))
        .unwrap_or_default();
    eprintln!("turn through the relay: {totals}");
    assert!(totals.contains("tot_recv_msgs=20"), "{output}");
}

#[tokio::test]
async fn no_turn_server_no_turn_entry() {
    let ip = Ipv4Addr::new(127, 0, 72, 2);
    let extra = format!("{DKIM}[turn]\nenabled = false\n");
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    assert_eq!(turn_entry(&relay).await, None);
}
