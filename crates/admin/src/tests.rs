use std::sync::Arc;

use chatmail_accounts::Accounts;
use chatmail_store::{Store, StoreOptions};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{Admin, Api, Request, Services};

async fn admin(dir: &TempDir) -> Admin {
    admin_of(dir, "mail_domain = \"example.org\"\n").await
}

/// An admin core over a fresh store in `dir`, for the configuration
/// `head` (top-level keys, then tables; `state_dir` and `[tls]` are
/// added around it).
async fn admin_of(dir: &TempDir, head: &str) -> Admin {
    let config = format!(
        "state_dir = \"{}\"\n{head}[tls]\nmode = \"self-signed\"\n",
        dir.path().display()
    );
    let settings = Arc::new(chatmail_config::parse(&config).unwrap());
    let store = Store::open(StoreOptions {
        path: dir.path().join("db.sqlite"),
        max_batch: 64,
    })
    .await
    .unwrap();
    let accounts = Accounts::new(store, settings.clone());
    let base = "https://example.org".to_owned();
    Admin::new(settings, accounts, Services::default(), base)
}

async fn call(admin: &Admin, method: &str, resource: &str, body: Value) -> (u16, Value) {
    let reply = admin.handle(Request::new(method, resource, body)).await;
    assert_eq!(reply.resource, resource);
    let body = match reply.error {
        Some(e) => json!({ "error": e }),
        None => reply.body,
    };
    (reply.status, body)
}

#[tokio::test]
async fn unknown_resources_and_methods_are_named_in_the_error() {
    let dir = TempDir::new().unwrap();
    let admin = admin(&dir).await;
    let (status, body) = call(&admin, "GET", "/admin/nothing", Value::Null).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown resource: /admin/nothing"))
    );
    let (status, body) = call(&admin, "PUT", "/admin/status", Value::Null).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method PUT not allowed"))
    );
    let (status, body) = call(
        &admin,
        "POST",
        "/admin/registration",
        json!({"action": "maybe"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        &admin,
        "DELETE",
        "/admin/accounts",
        json!({"username": "a@elsewhere.org"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn accounts_are_created_listed_found_quota_set_banned_and_deleted() {
    let dir = TempDir::new().unwrap();
    let admin = admin(&dir).await;
    let (status, created) = call(&admin, "POST", "/admin/accounts", Value::Null).await;
    assert_eq!(status, 201, "{created}");
    let email = created["email"].as_str().unwrap().to_owned();
    assert!(created["password"].as_str().unwrap().len() >= 12);
    let named = json!({"username": "operator1@example.org", "password": "long-enough-1"});
    assert_eq!(
        call(&admin, "POST", "/admin/accounts", named.clone())
            .await
            .0,
        201
    );
    assert_eq!(call(&admin, "POST", "/admin/accounts", named).await.0, 409);

    let (_, list) = call(&admin, "GET", "/admin/accounts", json!({"limit": 1})).await;
    assert_eq!(
        (
            list["total"].as_u64(),
            list["accounts"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );
    let (_, found) = call(
        &admin,
        "GET",
        "/admin/accounts",
        json!({"search": "OPERATOR"}),
    )
    .await;
    assert_eq!(found["accounts"][0]["username"], "operator1@example.org");
    assert_eq!(found["accounts"][0]["is_default_quota"], true);

    let quota = json!({"username": email, "max_bytes": 4096});
    let (status, set) = call(&admin, "PUT", "/admin/quota", quota).await;
    assert_eq!(
        (status, set["max_bytes"].as_u64()),
        (200, Some(4096)),
        "{set}"
    );
    let (_, one) = call(&admin, "GET", "/admin/accounts", json!({"username": email})).await;
    assert_eq!(
        (one["max_bytes"].as_u64(), one["is_default_quota"].as_bool()),
        (Some(4096), Some(false))
    );

    let ban = json!({"username": email, "reason": "spam"});
    assert_eq!(call(&admin, "POST", "/admin/blocklist", ban).await.0, 200);
    let (_, blocked) = call(&admin, "GET", "/admin/blocklist", Value::Null).await;
    assert_eq!(blocked["blocked"][0]["reason"], "spam");
    let (_, one) = call(&admin, "GET", "/admin/accounts", json!({"username": email})).await;
    assert_eq!(one["ban_reason"], "spam");

    let target = json!({"username": "operator1@example.org"});
    assert_eq!(
        call(&admin, "DELETE", "/admin/accounts", target.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        call(&admin, "DELETE", "/admin/accounts", target.clone())
            .await
            .0,
        404
    );
    // The deleted name stays blocked.
    let (_, blocked) = call(&admin, "GET", "/admin/blocklist", Value::Null).await;
    assert_eq!(blocked["total"], 2);
    assert_eq!(
        call(&admin, "DELETE", "/admin/blocklist", target.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        call(&admin, "DELETE", "/admin/blocklist", target).await.0,
        404
    );
}

#[tokio::test]
async fn invite_tokens_are_created_listed_and_deleted() {
    let dir = TempDir::new().unwrap();
    let admin = admin(&dir).await;
    let request = json!({"max_uses": 3, "comment": "team", "expires_in": "72h"});
    let (status, invite) = call(&admin, "POST", "/admin/registration-token", request).await;
    assert_eq!(status, 201, "{invite}");
    let token = invite["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 24);
    assert_eq!(invite["status"], "active");
    assert_eq!(
        invite["link"],
        format!("dcaccount:https://example.org/new?token={token}")
    );
    let expires = invite["expires_at"].as_i64().unwrap() - invite["created_at"].as_i64().unwrap();
    assert_eq!(expires, 72 * 3600);
    let again = json!({"token": token});
    assert_eq!(
        call(&admin, "POST", "/admin/registration-token", again.clone())
            .await
            .0,
        409
    );
    let (_, list) = call(&admin, "GET", "/admin/registration-token", Value::Null).await;
    assert_eq!(list["total"], 1);
    let bad = json!({"token": "no spaces"});
    assert_eq!(
        call(&admin, "POST", "/admin/registration-token", bad)
            .await
            .0,
        400
    );
    assert_eq!(
        call(&admin, "DELETE", "/admin/registration-token", again.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        call(&admin, "GET", "/admin/registration-token", again)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn the_api_wants_the_token_and_slows_down_guessers() {
    let dir = TempDir::new().unwrap();
    let admin = Arc::new(admin(&dir).await);
    let token = crate::load_token(dir.path(), true).unwrap();
    assert_eq!(token, crate::load_token(dir.path(), false).unwrap());
    assert_eq!(token.len(), 64);
    let api = Api::new(admin, token.clone());
    let peer = Some("192.0.2.7".parse().unwrap());
    let envelope = |bearer: &str| {
        json!({"method": "GET", "resource": "/admin/status", "headers": {"Authorization": format!("Bearer {bearer}")}})
            .to_string()
    };
    let reply = api.handle(envelope(&token).as_bytes(), peer).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["registration"], "open");
    assert_eq!(api.handle(b"{not json", peer).await.status, 400);
    for _ in 0..10 {
        let reply = api.handle(envelope("wrong").as_bytes(), peer).await;
        assert_eq!((reply.status, reply.resource.as_str()), (401, ""));
    }
    // Even the right token waits now; other clients do not.
    assert_eq!(
        api.handle(envelope(&token).as_bytes(), peer).await.status,
        429
    );
    let other = Some("192.0.2.8".parse().unwrap());
    assert_eq!(
        api.handle(envelope(&token).as_bytes(), other).await.status,
        200
    );
    let huge = vec![b' '; crate::MAX_REQUEST + 1];
    assert_eq!(api.handle(&huge, other).await.status, 413);
}

#[tokio::test]
async fn federation_rules_change_the_policy_at_once_and_persist() {
    let dir = TempDir::new().unwrap();
    let admin = admin(&dir).await;
    let (_, rules) = call(&admin, "GET", "/admin/federation", Value::Null).await;
    assert_eq!(rules, json!({"policy": "open", "domains": [], "total": 0}));
    let block = json!({"domain": "Spam.Example", "action": "block"});
    let (_, rules) = call(&admin, "POST", "/admin/federation/rules", block).await;
    assert_eq!(rules["policy"], "block");
    assert_eq!(rules["domains"], json!(["spam.example"]));
    assert!(!admin.settings.federation_allows("spam.example"));
    assert!(admin.settings.federation_allows("friend.example"));
    let allow = json!({"domain": "spam.example", "action": "allow"});
    let (_, rules) = call(&admin, "POST", "/admin/federation/rules", allow).await;
    assert_eq!(rules["total"], 0);
    assert!(admin.settings.federation_allows("spam.example"));
    let only = json!({"policy": "allow", "domains": ["friend.example", "[192.0.2.1]"]});
    let (status, rules) = call(&admin, "POST", "/admin/federation", only).await;
    assert_eq!(status, 200, "{rules}");
    assert!(admin.settings.federation_allows("[192.0.2.1]"));
    assert!(!admin.settings.federation_allows("other.example"));
    let gone = json!({"domain": "friend.example"});
    assert_eq!(
        call(&admin, "DELETE", "/admin/federation/rules", gone.clone())
            .await
            .0,
        200
    );
    assert_eq!(
        call(&admin, "DELETE", "/admin/federation/rules", gone)
            .await
            .0,
        404
    );
    let bad = json!({"domain": "no spaces"});
    assert_eq!(
        call(&admin, "POST", "/admin/federation/rules", bad).await.0,
        400
    );
    // A relay started on the same state finds the rules again.
    let again = self::admin(&dir).await;
    again.load_state().await.unwrap();
    assert!(again.settings.federation_allows("192.0.2.1"));
    assert!(!again.settings.federation_allows("friend.example"));
}

#[tokio::test]
async fn reload_without_a_file_settings_and_services_answer_in_the_envelope() {
    let dir = TempDir::new().unwrap();
    let admin = admin(&dir).await;
    let (status, body) = call(&admin, "POST", "/admin/reload", Value::Null).await;
    assert_eq!(status, 501, "{body}");
    let (status, _) = call(&admin, "GET", "/admin/reload", Value::Null).await;
    assert_eq!(status, 405);

    let set = json!({"action": "set", "value": 7});
    let (status, body) = call(&admin, "POST", "/admin/settings/max_recipients", set).await;
    assert_eq!((status, body["value"].as_u64()), (200, Some(7)), "{body}");
    assert_eq!(admin.settings.limits().max_recipients, 7);
    let reset = json!({"action": "reset"});
    let (_, body) = call(&admin, "POST", "/admin/settings/max_recipients", reset).await;
    assert_eq!(
        (body["value"].as_u64(), body["is_set"].as_bool()),
        (Some(1000), Some(false))
    );
    let (status, body) = call(
        &admin,
        "POST",
        "/admin/settings/max_recipients",
        json!({"action": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = call(&admin, "GET", "/admin/services", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["services"][0],
        json!({"name": "turn", "status": "disabled", "configured": false})
    );
    let enable = json!({"action": "enable"});
    let (status, body) = call(&admin, "POST", "/admin/services/turn", enable).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = call(&admin, "GET", "/admin/services/ftp", Value::Null).await;
    assert_eq!(status, 404);

    let (status, body) = call(&admin, "GET", "/admin/federation/servers", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["servers"].is_array());
}

#[tokio::test]
async fn dns_records_include_the_dkim_key_once_there_is_one() {
    let dir = TempDir::new().unwrap();
    let admin = admin(&dir).await;
    let (status, before) = call(&admin, "GET", "/admin/dns", Value::Null).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["domain"], "example.org");
    let kinds = |body: &Value| -> Vec<(String, String)> {
        body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().into(),
                    r["type"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert!(kinds(&before).contains(&("example.org.".into(), "MX".into())));
    assert!(
        !kinds(&before)
            .iter()
            .any(|(name, _)| name.contains("_domainkey"))
    );

    let key = chatmail_dkim::DkimKey::load_or_generate(
        &dir.path().join("dkim"),
        "opendkim",
        chatmail_dkim::Algorithm::Ed25519,
    )
    .unwrap();
    let (_, after) = call(&admin, "GET", "/admin/dns", Value::Null).await;
    let dkim = after["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "opendkim._domainkey.example.org.")
        .expect("a DKIM record");
    assert_eq!(dkim["value"], key.txt_record());
    assert!(after["zone"].as_str().unwrap().contains("_domainkey"));
    let (status, _) = call(&admin, "POST", "/admin/dns", Value::Null).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn doctor_reports_a_relay_that_is_not_listening_and_runs_once_at_a_time() {
    let dir = TempDir::new().unwrap();
    // An IP-only relay (no DNS to look up) whose listeners are all closed.
    let head = "mail_domain = \"127.0.0.1\"\n\
        [listen]\nimaps = [\"127.0.67.1:1993\"]\nsubmissions = [\"127.0.67.1:1465\"]\n";
    let admin = admin_of(&dir, head).await;

    let (first, second) = tokio::join!(
        call(&admin, "GET", "/admin/doctor", Value::Null),
        call(&admin, "GET", "/admin/doctor", Value::Null)
    );
    assert_eq!(second.0, 409, "{}", second.1);
    let (status, report) = first;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["passed"], false);
    let imaps = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().contains("127.0.67.1:1993"))
        .expect("the IMAP listener is checked");
    assert_eq!(imaps["status"], "fail");
    assert!(imaps["fix"].as_str().is_some_and(|fix| !fix.is_empty()));
}
