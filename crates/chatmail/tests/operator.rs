//! Changing a running relay without a restart: `madmail reload` and
//! SIGHUP read the configuration file again (a limit changes for the next
//! connection; a key that needs a restart makes the whole reload refused),
//! `/admin/settings` overrides a limit, and `madmail services` stops and
//! starts the TURN server (its port closes and opens again).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, tls_config};
use chatmail_testkit::mx::Mx;
use chatmail_testkit::relay::{RelayOptions, RelayProcess, free_udp_tcp_port};
use serde_json::Value;

const PASSWORD: &str = "operator-test-password";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

async fn relay(last_octet: u8, extra: &str) -> RelayProcess {
    let ip = Ipv4Addr::new(127, 0, 65, last_octet);
    RelayProcess::start_with(binary(), &RelayOptions::on(ip, extra))
        .await
        .unwrap()
}

/// The `SIZE` a new port-25 connection advertises.
async fn advertised_size(relay: &RelayProcess) -> u64 {
    let mut mx = Mx::connect(relay.addr(relay.ports.smtp)).await.unwrap();
    let (code, text) = mx.command("EHLO operator.test").await.unwrap();
    assert_eq!(code, 250, "{text}");
    let size = text
        .lines()
        .find_map(|l| l.split("SIZE ").nth(1))
        .expect(&text);
    size.trim().parse().unwrap()
}

/// Polls until the advertised size is `want` (a SIGHUP is asynchronous).
async fn wait_for_size(relay: &RelayProcess, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let size = advertised_size(relay).await;
        if size == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "SIZE stayed {size}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rewrite(relay: &RelayProcess, from: &str, to: &str) {
    let path = relay.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

fn json(relay: &RelayProcess, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&relay.cli(&args).unwrap()).unwrap()
}

#[tokio::test]
async fn reload_changes_a_limit_live_and_refuses_keys_that_need_a_restart() {
    let relay = relay(6, "").await;
    assert_eq!(advertised_size(&relay).await, 31_457_280);

    relay
        .append_config("[limits]\nmax_message_size = 2000000\n")
        .unwrap();
    let out = relay.cli(&["reload"]).unwrap();
    assert!(out.contains("applied: limits.max_message_size"), "{out}");
    assert_eq!(advertised_size(&relay).await, 2_000_000);

    // A key that only a restart applies: nothing of the file applies.
    rewrite(
        &relay,
        "max_message_size = 2000000",
        "max_message_size = 1900000\nmax_imap_connections = 7",
    );
    let refused = relay.cli(&["reload"]).unwrap_err().to_string();
    assert!(
        refused.contains("need a restart: limits.max_imap_connections")
            && refused.contains("(409)"),
        "{refused}"
    );
    assert_eq!(advertised_size(&relay).await, 2_000_000);

    // SIGHUP does the same as `madmail reload`.
    rewrite(&relay, "\nmax_imap_connections = 7", "");
    let pid = relay.pid().unwrap().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for_size(&relay, 1_900_000).await;

    // Raising above the size at start would outgrow the memory budget.
    rewrite(
        &relay,
        "max_message_size = 1900000",
        "max_message_size = 40000000",
    );
    let refused = relay.cli(&["reload"]).unwrap_err().to_string();
    assert!(refused.contains("can only be lowered"), "{refused}");
    // A broken file changes nothing and names the problem.
    rewrite(
        &relay,
        "max_message_size = 40000000",
        "max_message_size = \"big\"",
    );
    let refused = relay.cli(&["reload"]).unwrap_err().to_string();
    assert!(refused.contains("limits.max_message_size"), "{refused}");
    assert_eq!(advertised_size(&relay).await, 1_900_000);
    assert!(relay.is_running());
}

#[tokio::test]
async fn settings_override_a_live_limit_and_keep_it_across_a_restart() {
    let mut relay = relay(7, "").await;
    let set = json(&relay, &["settings", "set", "max_message_size", "1500000"]);
    assert_eq!(
        (set["value"].as_u64(), set["is_set"].as_bool()),
        (Some(1_500_000), Some(true))
    );
    assert_eq!(set["default"], 31_457_280);
    assert_eq!(advertised_size(&relay).await, 1_500_000);

    let refused = relay
        .cli(&["settings", "set", "max_imap_connections", "5"])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("cannot change while the relay runs"),
        "{refused}"
    );
    let unknown = relay
        .cli(&["settings", "get", "nope"])
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("unknown setting: nope") && unknown.contains("(404)"),
        "{unknown}"
    );
    let list = json(&relay, &["settings", "list"]);
    let live: Vec<&str> = list["settings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["live"] == true)
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        live,
        [
            "login_deadline",
            "max_mailbox_size",
            "max_message_size",
            "max_recipients"
        ]
    );

    relay.restart().await.unwrap();
    assert_eq!(
        advertised_size(&relay).await,
        1_500_000,
        "the override is durable"
    );
    relay
        .cli(&["settings", "reset", "max_message_size"])
        .unwrap();
    assert_eq!(advertised_size(&relay).await, 31_457_280);
}

/// The METADATA `turn` entry a client sees.
async fn has_turn_entry(relay: &RelayProcess) -> bool {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let imaps = relay.addr(relay.ports.imaps);
    let user = relay.address("operator1");
    let mut imap = Imap::login(imaps, &tls, &user, PASSWORD).await.unwrap();
    let key = "/shared/vendor/deltachat/turn";
    let lines = imap
        .command(&format!("GETMETADATA \"\" ({key})"))
        .await
        .unwrap();
    let line = lines.iter().find(|l| l.starts_with("* METADATA")).unwrap();
    !line.contains("NIL")
}

async fn turn_port_open(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

#[tokio::test]
async fn a_service_switched_off_closes_its_port_and_comes_back() {
    let ip = Ipv4Addr::new(127, 0, 65, 8);
    let port = free_udp_tcp_port(ip).unwrap();
    let listen = SocketAddr::new(ip.into(), port);
    let extra = format!(
        "[turn]\nenabled = true\nhost = \"{ip}\"\nport = {port}\nlisten = [\"{listen}\"]\n"
    );
    let mut relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    assert!(turn_port_open(listen).await && has_turn_entry(&relay).await);

    let off = json(&relay, &["services", "disable", "turn"]);
    assert_eq!(off["status"], "disabled", "{off}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while turn_port_open(listen).await {
        assert!(Instant::now() < deadline, "the TURN port stayed open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !has_turn_entry(&relay).await,
        "clients are no longer told of it"
    );
    let status = json(&relay, &["status"]);
    assert_eq!(status["services"]["turn"], false, "{status}");

    // Not configured in the file: it cannot be switched on.
    let refused = relay
        .cli(&["services", "enable", "shadowsocks"])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("shadowsocks is not configured") && refused.contains("(409)"),
        "{refused}"
    );

    // Off survives a restart; on again, it binds anew.
    relay.restart().await.unwrap();
    assert!(!has_turn_entry(&relay).await);
    let on = json(&relay, &["services", "enable", "turn"]);
    assert_eq!(on["status"], "enabled", "{on}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !turn_port_open(listen).await {
        assert!(
            Instant::now() < deadline,
            "the TURN port did not open again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(has_turn_entry(&relay).await);
    let list = relay.cli(&["services", "list"]).unwrap();
    assert!(
        list.contains("turn\tenabled") && list.contains("shadowsocks\tdisabled\t(not configured)"),
        "{list}"
    );
}
