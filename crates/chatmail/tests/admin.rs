//! The admin surfaces of a real relay process: the HTTPS admin API with its
//! token, size cap and failure rate; the CLI verbs over the control socket;
//! invite tokens through `/new?token=` and a first login; a ban that ends
//! a client's IDLE at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, https_post, https_post_named, tls_config};
use chatmail_testkit::relay::{RelayOptions, RelayProcess};
use serde_json::{Value, json};

const ADMIN: &str = "[admin]\nenabled = true\n";
const PASSWORD: &str = "admin-test-password";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

async fn relay(last_octet: u8, extra: &str) -> RelayProcess {
    let ip = Ipv4Addr::new(127, 0, 65, last_octet);
    RelayProcess::start_with(binary(), &RelayOptions::on(ip, extra))
        .await
        .unwrap()
}

struct Api {
    https: SocketAddr,
    /// The name the relay's certificate carries (`None`: its address).
    name: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

impl Api {
    fn of(relay: &RelayProcess) -> Api {
        let token = relay
            .cli(&["admin-token", "--raw"])
            .unwrap()
            .trim()
            .to_owned();
        Api {
            https: relay.addr(relay.ports.https),
            name: relay.server_name().map(str::to_owned),
            tls: tls_config(&relay.cert_path()).unwrap(),
            token,
        }
    }

    /// Posts `body` raw; returns the reply envelope (the HTTP status must be 200).
    async fn post(&self, body: &[u8]) -> Value {
        let name = self.name.as_deref();
        let (status, reply) = https_post_named(self.https, name, &self.tls, "/api/admin", body)
            .await
            .unwrap();
        assert_eq!(status, 200, "{reply}");
        serde_json::from_str(&reply).unwrap()
    }

    async fn call_with(&self, token: &str, method: &str, resource: &str, body: Value) -> Value {
        let envelope = json!({
            "method": method,
            "resource": resource,
            "headers": { "Authorization": format!("Bearer {token}") },
            "body": body,
        });
        self.post(envelope.to_string().as_bytes()).await
    }

    async fn call(&self, method: &str, resource: &str, body: Value) -> Value {
        self.call_with(&self.token, method, resource, body).await
    }
}

#[tokio::test]
async fn the_api_answers_every_resource_in_the_envelope_and_guards_its_token() {
    let relay = relay(2, ADMIN).await;
    let api = Api::of(&relay);
    assert_eq!(api.token.len(), 64);

    let status = api.call("GET", "/admin/status", Value::Null).await;
    assert_eq!(status["status"], 200, "{status}");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["body"]["registration"], "open");
    assert_eq!(status["body"]["users"]["registered"], 0);
    let storage = api.call("GET", "/admin/storage", Value::Null).await;
    assert!(
        storage["body"]["disk"]["total_bytes"].as_u64().unwrap() > 0,
        "{storage}"
    );

    let created = api.call("POST", "/admin/accounts", Value::Null).await;
    assert_eq!(created["status"], 201, "{created}");
    let email = created["body"]["email"].as_str().unwrap().to_owned();
    let list = api
        .call("GET", "/admin/accounts", json!({ "limit": 10 }))
        .await;
    assert_eq!(list["body"]["total"], 1, "{list}");
    assert_eq!(list["body"]["accounts"][0]["username"], email.as_str());
    let quota = json!({ "username": email, "max_bytes": 1_000_000 });
    let quota = api.call("PUT", "/admin/quota", quota).await;
    assert_eq!(quota["body"]["max_bytes"], 1_000_000, "{quota}");
    let closed = api
        .call("POST", "/admin/registration", json!({ "action": "close" }))
        .await;
    assert_eq!(closed["body"]["status"], "closed");
    let invite = json!({ "max_uses": 2, "comment": "api" });
    let invite = api.call("POST", "/admin/registration-token", invite).await;
    assert_eq!(invite["status"], 201, "{invite}");
    let tokens = api
        .call("GET", "/admin/registration-token", Value::Null)
        .await;
    assert_eq!(tokens["body"]["total"], 1);
    let ban = json!({ "username": email, "reason": "test" });
    assert_eq!(
        api.call("POST", "/admin/blocklist", ban).await["status"],
        200
    );
    let blocked = api.call("GET", "/admin/blocklist", Value::Null).await;
    assert_eq!(blocked["body"]["blocked"][0]["reason"], "test");
    let queue = api.call("GET", "/admin/queue", Value::Null).await;
    assert_eq!(queue["body"]["messages"], 0, "{queue}");
    let flush = api
        .call("POST", "/admin/queue", json!({ "action": "flush" }))
        .await;
    assert_eq!(flush["status"], 200, "{flush}");
    let deleted = api
        .call("DELETE", "/admin/accounts", json!({ "username": email }))
        .await;
    assert_eq!(deleted["body"]["deleted"], email.as_str());

    let unknown = api.call("GET", "/admin/nothing", Value::Null).await;
    assert_eq!(
        (unknown["status"].as_u64(), unknown["error"].as_str()),
        (Some(404), Some("unknown resource: /admin/nothing"))
    );
    let wrong_method = api.call("DELETE", "/admin/status", Value::Null).await;
    assert_eq!(wrong_method["status"], 405);
    let mut huge = br#"{"method":"GET","resource":"/admin/status","body":""#.to_vec();
    huge.resize(huge.len() + (1 << 20), b'x');
    huge.extend_from_slice(br#""}"#);
    let too_large = api.post(&huge).await;
    assert_eq!(
        (too_large["status"].as_u64(), too_large["error"].as_str()),
        (Some(413), Some("request body too large"))
    );
    let missing = api
        .post(br#"{"method":"GET","resource":"/admin/status"}"#)
        .await;
    assert_eq!(
        (missing["status"].as_u64(), missing["resource"].as_str()),
        (Some(401), Some(""))
    );

    // Ten wrong tokens, then even the right one is refused for a while.
    for i in 0..10 {
        let wrong = api
            .call_with(&format!("guess{i}"), "GET", "/admin/status", Value::Null)
            .await;
        assert_eq!(wrong["status"], 401, "{wrong}");
        assert_eq!(wrong["body"], Value::Null);
    }
    let throttled = api.call("GET", "/admin/status", Value::Null).await;
    assert_eq!(throttled["status"], 429, "{throttled}");
    // The control socket is not affected.
    assert!(
        relay
            .cli(&["status"])
            .unwrap()
            .contains("registration: closed")
    );
}

#[tokio::test]
async fn the_api_is_off_unless_enabled() {
    let relay = relay(3, "").await;
    let tls = tls_config(&relay.cert_path()).unwrap();
    let body = br#"{"method":"GET","resource":"/admin/status"}"#;
    let (status, _) = https_post(relay.addr(relay.ports.https), &tls, "/api/admin", body)
        .await
        .unwrap();
    assert_eq!(status, 404);
    // The token exists all the same, for the day the API is switched on.
    assert_eq!(
        relay.cli(&["admin-token", "--raw"]).unwrap().trim().len(),
        64
    );
}

#[tokio::test]
async fn a_ban_ends_a_live_idle_session_within_a_second() {
    let relay = relay(4, "").await;
    let tls = tls_config(&relay.cert_path()).unwrap();
    let imaps = relay.addr(relay.ports.imaps);
    let user = relay.address("idlebanme");
    let mut imap = Imap::login(imaps, &tls, &user, PASSWORD).await.unwrap();
    imap.command("SELECT INBOX").await.unwrap();
    imap.idle().await.unwrap();

    let started = Instant::now();
    let out = relay.cli(&["accounts", "ban", &user, "abuse"]).unwrap();
    assert!(out.contains("1 session(s) cut"), "{out}");
    let bye = tokio::time::timeout(Duration::from_secs(1), imap.next_line())
        .await
        .expect("no BYE within a second of the ban")
        .unwrap();
    assert_eq!(
        bye.as_deref(),
        Some("* BYE Account disabled by the operator\r\n")
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    let refused = Imap::login(imaps, &tls, &user, PASSWORD).await;
    assert!(refused.is_err(), "a banned account logged in");
    let list = relay.cli(&["accounts", "ban-list"]).unwrap();
    assert!(list.contains(&user) && list.contains("abuse"), "{list}");
    relay.cli(&["accounts", "unban", &user]).unwrap();
    drop(Imap::login(imaps, &tls, &user, PASSWORD).await.unwrap());

    // A delete cuts the session too and keeps the name from coming back.
    let mut imap = Imap::login(imaps, &tls, &user, PASSWORD).await.unwrap();
    imap.idle().await.unwrap();
    relay.cli(&["accounts", "delete", &user]).unwrap();
    let bye = tokio::time::timeout(Duration::from_secs(1), imap.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        bye.as_deref(),
        Some("* BYE Account disabled by the operator\r\n")
    );
    assert!(Imap::login(imaps, &tls, &user, PASSWORD).await.is_err());
}

#[tokio::test]
async fn cli_verbs_change_the_running_relay_and_refuse_when_it_is_down() {
    let mut relay = relay(5, "").await;
    let tls = tls_config(&relay.cert_path()).unwrap();
    let (imaps, https) = (relay.addr(relay.ports.imaps), relay.addr(relay.ports.https));
    assert_eq!(
        relay.cli(&["registration", "status"]).unwrap().trim(),
        "open"
    );
    assert_eq!(
        relay.cli(&["registration", "close"]).unwrap().trim(),
        "closed"
    );
    let uninvited = relay.address("uninvited");
    assert!(
        Imap::login(imaps, &tls, &uninvited, PASSWORD)
            .await
            .is_err()
    );

    let created = relay
        .cli(&[
            "registration-tokens",
            "create",
            "--max-uses",
            "1",
            "--comment",
            "friends",
            "--expires",
            "7d",
        ])
        .unwrap();
    let mut lines = created.lines();
    let token = lines.next().unwrap().to_owned();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "dcaccount:https://{}:{}/new?token={token}",
            relay.ip, relay.ports.https
        )
    );
    let (status, reply) = https_post(https, &tls, &format!("/new?token={token}"), b"")
        .await
        .unwrap();
    assert_eq!(status, 200, "{reply}");
    let account: Value = serde_json::from_str(&reply).unwrap();
    let (email, password) = (
        account["email"].as_str().unwrap(),
        account["password"].as_str().unwrap(),
    );
    drop(Imap::login(imaps, &tls, email, password).await.unwrap());
    let (status, reply) = https_post(https, &tls, &format!("/new?token={token}"), b"")
        .await
        .unwrap();
    assert_eq!(
        (status, reply.as_str()),
        (403, r#"{"reason":"invalid or used-up invite token"}"#)
    );
    let shown = relay
        .cli(&["registration-tokens", "status", &token])
        .unwrap();
    assert!(
        shown.contains("exhausted") && shown.contains("used 1/1"),
        "{shown}"
    );
    assert!(
        relay
            .cli(&["tokens", "list"])
            .unwrap()
            .contains("1 token(s)")
    );

    let list = relay.cli(&["accounts", "list"]).unwrap();
    assert!(
        list.contains(email) && list.contains("1 account(s)"),
        "{list}"
    );
    let quota = relay
        .cli(&["accounts", "quota", email, "--set", "2000000"])
        .unwrap();
    assert!(quota.contains("/ 2000000 bytes"), "{quota}");
    let added = relay
        .cli(&["accounts", "add", &relay.address("byoperato")])
        .unwrap();
    assert_eq!(added.split_whitespace().count(), 2, "{added}");
    let status = relay.cli(&["status"]).unwrap();
    assert!(
        status.contains("accounts: 2") && status.contains("registration: closed"),
        "{status}"
    );
    relay
        .cli(&["registration-tokens", "delete", &token])
        .unwrap();
    let json: Value =
        serde_json::from_str(&relay.cli(&["tokens", "list", "--json"]).unwrap()).unwrap();
    assert_eq!(json["total"], 0);

    let blocked = relay.cli(&["federation", "block", "Spam.Example"]).unwrap();
    assert_eq!(blocked, "policy: block\nspam.example\n");
    // The running relay applies it to the next message.
    let submissions = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login(submissions, &tls, email, password)
        .await
        .unwrap();
    smtp.command(&format!("MAIL FROM:<{email}>")).await.unwrap();
    let (code, text) = smtp.command("RCPT TO:<bob@spam.example>").await.unwrap();
    assert_eq!(code, 554, "{text}");
    assert!(text.contains("federation policy"), "{text}");
    let (code, text) = smtp.command("RCPT TO:<bob@friend.example>").await.unwrap();
    assert_eq!(code, 250, "{text}");
    relay
        .cli(&["federation", "block", "other.example"])
        .unwrap();
    let list = relay
        .cli(&["federation", "remove", "spam.example"])
        .unwrap();
    assert_eq!(list, "policy: block\nother.example\n");

    // The switch and the rules survive a restart.
    relay.restart().await.unwrap();
    assert_eq!(
        relay.cli(&["registration", "status"]).unwrap().trim(),
        "closed"
    );
    let list = relay.cli(&["federation", "list"]).unwrap();
    assert_eq!(list, "policy: block\nother.example\n");
    relay.kill();
    let down = relay
        .cli(&["registration", "open"])
        .unwrap_err()
        .to_string();
    assert!(down.contains("the relay is not running"), "{down}");
}

#[test]
fn completions_and_man_pages_come_from_the_command_definitions() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(binary())
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    for verb in ["registration-tokens", "blocklist", "federation", "ban-list"] {
        assert!(bash.contains(verb), "bash completion lacks {verb}");
    }
    assert!(run(&["completions", "zsh"]).contains("#compdef madmail"));
    let dir = tempfile::tempdir().unwrap();
    run(&["man", dir.path().to_str().unwrap()]);
    let page = std::fs::read_to_string(dir.path().join("madmail-accounts-ban.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("Block an address"), "{page}");
    assert!(dir.path().join("madmail.1").exists());
}

/// The resources for federation, live settings, services, reload, DNS and
/// the doctor, each through the HTTPS envelope.
#[tokio::test]
async fn the_operator_resources_answer_through_the_envelope() {
    // A named relay, so that it needs DNS records, asking a DNS server
    // that never answers, so that a doctor run lasts its query timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns = silent.local_addr().unwrap();
    let extra = format!("{ADMIN}[federation]\ndns_servers = [\"{dns}\"]\n");
    let options = RelayOptions {
        domain: Some("_admin9.test".into()),
        ..RelayOptions::on(Ipv4Addr::new(127, 0, 65, 9), &extra)
    };
    let relay = RelayProcess::start_with(binary(), &options).await.unwrap();
    let api = Api::of(&relay);

    let rule = json!({ "domain": "Spam.Example", "action": "block" });
    let blocked = api.call("POST", "/admin/federation/rules", rule).await;
    assert_eq!(blocked["status"], 200, "{blocked}");
    assert_eq!(
        blocked["body"],
        json!({ "policy": "block", "domains": ["spam.example"], "total": 1 })
    );
    let policy = json!({ "policy": "allow", "domains": ["friend.example", "[192.0.2.1]"] });
    let allowed = api.call("POST", "/admin/federation", policy).await;
    assert_eq!(allowed["body"]["policy"], "allow", "{allowed}");
    assert_eq!(
        allowed["body"]["domains"],
        json!(["friend.example", "192.0.2.1"])
    );
    let gone = json!({ "domain": "friend.example" });
    let removed = api
        .call("DELETE", "/admin/federation/rules", gone.clone())
        .await;
    assert_eq!(
        removed["body"]["domains"],
        json!(["192.0.2.1"]),
        "{removed}"
    );
    let again = api.call("DELETE", "/admin/federation/rules", gone).await;
    assert_eq!(again["status"], 404, "{again}");
    let rules = api.call("GET", "/admin/federation", Value::Null).await;
    assert_eq!(rules["body"]["total"], 1, "{rules}");
    let servers = api
        .call("GET", "/admin/federation/servers", Value::Null)
        .await;
    assert_eq!(
        servers["body"],
        json!({ "total": 0, "servers": [] }),
        "{servers}"
    );

    let set = json!({ "action": "set", "value": 1_500_000 });
    let size = api
        .call("POST", "/admin/settings/max_message_size", set)
        .await;
    assert_eq!(size["status"], 200, "{size}");
    assert_eq!(
        (
            size["body"]["value"].as_u64(),
            size["body"]["is_set"].as_bool()
        ),
        (Some(1_500_000), Some(true))
    );
    let settings = api.call("GET", "/admin/settings", Value::Null).await;
    let listed = settings["body"]["settings"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|s| s["key"] == "max_message_size" && s["value"] == 1_500_000),
        "{settings}"
    );
    let fixed = json!({ "action": "set", "value": 7 });
    let fixed = api
        .call("POST", "/admin/settings/max_imap_connections", fixed)
        .await;
    assert_eq!(fixed["status"], 409, "{fixed}");
    assert!(
        fixed["error"]
            .as_str()
            .unwrap()
            .contains("cannot change while the relay runs"),
        "{fixed}"
    );
    let unknown = api.call("GET", "/admin/settings/nope", Value::Null).await;
    assert_eq!(
        (unknown["status"].as_u64(), unknown["error"].as_str()),
        (Some(404), Some("unknown setting: nope"))
    );
    let reset = json!({ "action": "reset" });
    let reset = api
        .call("POST", "/admin/settings/max_message_size", reset)
        .await;
    assert_eq!(reset["body"]["is_set"], false, "{reset}");

    let services = api.call("GET", "/admin/services", Value::Null).await;
    let names: Vec<&str> = services["body"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["turn", "iroh", "shadowsocks"], "{services}");
    let enable = json!({ "action": "enable" });
    let refused = api
        .call("POST", "/admin/services/shadowsocks", enable)
        .await;
    assert_eq!(refused["status"], 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("shadowsocks is not configured"),
        "{refused}"
    );

    relay
        .append_config("[limits]\nmax_message_size = 2000000\n")
        .unwrap();
    let reloaded = api.call("POST", "/admin/reload", Value::Null).await;
    assert_eq!(reloaded["status"], 200, "{reloaded}");
    assert_eq!(
        reloaded["body"]["changed"],
        json!(["limits.max_message_size"])
    );
    relay
        .append_config("[tls.extra]\nnonsense = true\n")
        .unwrap();
    let broken = api.call("POST", "/admin/reload", Value::Null).await;
    assert_eq!(broken["status"], 400, "{broken}");
    let after = api
        .call("GET", "/admin/settings/max_message_size", Value::Null)
        .await;
    assert_eq!(after["body"]["value"], 2_000_000, "{after}");

    let dns = api.call("GET", "/admin/dns", Value::Null).await;
    assert_eq!(dns["body"]["domain"], relay.domain.as_str(), "{dns}");
    assert!(
        dns["body"]["zone"].as_str().unwrap().contains(" IN "),
        "{dns}"
    );
    assert!(
        dns["body"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "TXT" && r["value"].as_str().unwrap().starts_with("v=DKIM1")),
        "{dns}"
    );

    // Two runs at once: one reports, the other is told to wait.
    let (first, second) = tokio::join!(
        api.call("GET", "/admin/doctor", Value::Null),
        api.call("GET", "/admin/doctor", Value::Null)
    );
    let mut statuses = [first["status"].as_u64(), second["status"].as_u64()];
    statuses.sort();
    assert_eq!(statuses, [Some(200), Some(409)], "{first} {second}");
    let report = if first["status"] == 200 {
        &first
    } else {
        &second
    };
    let checks = report["body"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"].as_str().unwrap().starts_with("listen imaps")
                && c["status"] == "pass"),
        "{report}"
    );
    assert!(
        checks.iter().any(|c| c["status"] == "fail"),
        "no DNS answer, yet: {report}"
    );
    assert_eq!(report["body"]["passed"], false, "{report}");
    drop(silent);
}
