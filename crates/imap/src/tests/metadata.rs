//! METADATA transcripts: server entries from the configuration, the TURN
//! entry, and the device token sequence Delta Chat sends.

use super::*;

const CONFIGURED: &str = r#"
[metadata]
admin = "postmaster@example.org"
comment = "Test relay"
app_versions = '{"clients":[]}'
[iroh]
url = "https://iroh.example.org"
[turn]
enabled = true
host = "turn.example.org"
port = 3479
credential_lifetime = 432000
[limits]
max_recipients = 50
"#;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The single value of a one-entry `* METADATA` line.
fn single_value(lines: &[String], entry: &str) -> String {
    assert_eq!(lines.len(), 1, "{lines:?}");
    let prefix = format!("* METADATA \"\" ({entry} ");
    let rest = lines[0].strip_prefix(&prefix).expect("entry echoed");
    rest.trim_end().strip_suffix(')').unwrap().to_owned()
}

#[tokio::test]
async fn publishes_the_configured_server_entries() {
    let (h, _) = harness_with(CONFIGURED).await;
    let mut client = h.logged_in().await;
    let (lines, status) = client
        .command(
            "GETMETADATA \"\" (/shared/admin /shared/comment /shared/vendor/deltachat/irohrelay \
             /shared/vendor/deltachat/maxsmtprecipients /shared/vendor/deltachat/appversions \
             /shared/vendor/deltachat/unknown)",
        )
        .await;
    assert_eq!(status, "OK Getmetadata completed");
    assert_eq!(
        lines,
        vec![
            "* METADATA \"\" (/shared/admin \"mailto:postmaster@example.org\" \
             /shared/comment \"Test relay\" \
             /shared/vendor/deltachat/irohrelay \"https://iroh.example.org\" \
             /shared/vendor/deltachat/maxsmtprecipients \"50\" \
             /shared/vendor/deltachat/appversions \"{\\\"clients\\\":[]}\" \
             /shared/vendor/deltachat/unknown NIL)\r\n"
        ]
    );
}

#[tokio::test]
async fn withholds_turn_and_iroh_entries_without_their_servers_but_announces_push() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let lines = client
        .ok("GETMETADATA \"\" (/shared/admin /shared/vendor/deltachat/turn /shared/vendor/deltachat/maxsmtprecipients /shared/vendor/deltachat/irohrelay)")
        .await;
    assert_eq!(
        lines,
        vec![
            "* METADATA \"\" (/shared/admin NIL /shared/vendor/deltachat/turn NIL \
             /shared/vendor/deltachat/maxsmtprecipients \"1000\" \
             /shared/vendor/deltachat/irohrelay NIL)\r\n"
        ]
    );
}

#[tokio::test]
async fn withholds_max_recipients_while_push_is_off() {
    let (h, _) = harness_with("[push]\nenabled = false\n").await;
    let mut client = h.logged_in().await;
    let lines = client
        .ok("GETMETADATA \"\" /shared/vendor/deltachat/maxsmtprecipients")
        .await;
    assert_eq!(
        single_value(&lines, "/shared/vendor/deltachat/maxsmtprecipients"),
        "NIL"
    );
}

#[tokio::test]
async fn hands_out_turn_credentials_that_the_minter_accepts() {
    let (h, _) = harness_with(CONFIGURED).await;
    let mut client = h.logged_in().await;
    let before = unix_now();
    let lines = client
        .ok("GETMETADATA \"\" /shared/vendor/deltachat/turn")
        .await;
    let value = single_value(&lines, "/shared/vendor/deltachat/turn");
    let value = value.trim_matches('"');
    let parts: Vec<&str> = value.splitn(4, ':').collect();
    assert_eq!(parts[..2], ["turn.example.org", "3479"], "{value}");
    let expiry: u64 = parts[2].parse().unwrap();
    // The lifetime is 5 days, the expiry rounded down to the hour.
    assert!(
        (before + 432_000 - 3600..=unix_now() + 432_000).contains(&expiry),
        "{value}"
    );
    assert_eq!(expiry % 3600, 0, "{value}");
    let minter = h.ctx.turn.as_ref().unwrap();
    assert!(minter.verify(parts[2], parts[3], unix_now()));
    assert!(!minter.verify(parts[2], parts[3], expiry + 1));
}

#[tokio::test]
async fn turn_host_defaults_to_the_mail_domain() {
    let (h, _) = harness_with("[turn]\nenabled = true\n").await;
    let mut client = h.logged_in().await;
    let lines = client
        .ok("GETMETADATA \"\" (/shared/vendor/deltachat/turn)")
        .await;
    let value = single_value(&lines, "/shared/vendor/deltachat/turn");
    assert!(value.starts_with("\"example.org:3478:"), "{value}");
}

#[tokio::test]
async fn adds_device_tokens_in_the_delta_chat_sequence() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let (_, status) = client
        .command("SETMETADATA INBOX (/private/devicetoken \"1111\")")
        .await;
    assert_eq!(status, "OK Setmetadata completed");
    let (lines, status) = client
        .command("GETMETADATA INBOX (/private/devicetoken)")
        .await;
    assert_eq!(status, "OK Getmetadata completed");
    assert_eq!(
        lines,
        vec!["* METADATA \"INBOX\" (/private/devicetoken \"1111\")\r\n"]
    );
    client
        .ok("SETMETADATA INBOX (/private/devicetoken \"2222\")")
        .await;
    let lines = client.ok("GETMETADATA INBOX /private/devicetoken").await;
    assert_eq!(
        lines,
        vec!["* METADATA \"INBOX\" (/private/devicetoken \"1111 2222\")\r\n"]
    );
}

#[tokio::test]
async fn limits_device_tokens_to_four_kibibytes() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let too_long = "x".repeat(4097);
    client.next_tag += 1;
    let tag = format!("a{}", client.next_tag);
    client
        .send(format!("{tag} SETMETADATA INBOX (/private/devicetoken {{4097}}\r\n").as_bytes())
        .await;
    assert!(client.line().await.starts_with("+ "));
    client.send(format!("{too_long})\r\n").as_bytes()).await;
    let (_, status) = client.until_tagged(&tag).await;
    assert_eq!(status, "NO [METADATA MAXSIZE 4096] Value too long");
    let longest = "y".repeat(4096);
    client
        .ok(&format!(
            "SETMETADATA INBOX (/private/devicetoken \"{longest}\")"
        ))
        .await;
    let lines = client.ok("GETMETADATA INBOX /private/devicetoken").await;
    assert!(lines[0].contains(&longest), "{lines:?}");
}

#[test]
fn device_tokens_live_ninety_days() {
    assert_eq!(chatmail_store::DEVICE_TOKEN_LIFETIME.as_secs(), 90 * 86_400);
}

#[tokio::test]
async fn stores_and_returns_device_tokens() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let (_, status) = client
        .command("SETMETADATA INBOX (/private/devicetoken \"token-one\")")
        .await;
    assert_eq!(status, "OK Setmetadata completed");
    client
        .ok("SETMETADATA INBOX (/private/devicetoken \"token-two\")")
        .await;
    let (lines, status) = client
        .command("GETMETADATA INBOX /private/devicetoken")
        .await;
    assert_eq!(status, "OK Getmetadata completed");
    assert_eq!(
        lines,
        vec!["* METADATA \"INBOX\" (/private/devicetoken \"token-one token-two\")\r\n"]
    );
}

#[tokio::test]
async fn refuses_device_tokens_with_spaces_and_accepts_nil() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    client
        .ok("SETMETADATA INBOX (/private/devicetoken \"token-one\")")
        .await;
    for bad in ["\"two words\"", "\"tab\tinside\""] {
        let command = format!("SETMETADATA INBOX (/private/devicetoken {bad})");
        let (_, status) = client.command(&command).await;
        assert!(status.starts_with("BAD"), "{bad}: {status}");
    }
    client
        .ok("SETMETADATA INBOX (/private/devicetoken NIL)")
        .await;
    let (lines, _) = client
        .command("GETMETADATA INBOX /private/devicetoken")
        .await;
    assert_eq!(
        lines,
        vec!["* METADATA \"INBOX\" (/private/devicetoken \"token-one\")\r\n"]
    );
}
