//! The admin surfaces of a real relay process: the HTTPS admin API with its
//! token, size cap and failure rate; the CLI verbs over the control socket;
//! invite tokens through `/new?token=` and a first login; a ban that ends
//! a client's IDLE at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, https_post, tls_config};
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
            tls: tls_config(&relay.cert_path()).unwrap(),
            token,
        }
    }

    /// Posts `body` raw; returns the reply envelope (the HTTP status must be 200).
    async fn post(&self, body: &[u8]) -> Value {
        let (status, reply) = https_post(self.https, &self.tls, "/api/admin", body)
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
