//! QUOTA transcripts: OVERQUOTA on APPEND, GETQUOTAROOT figures, and
//! expiry seen by an idle client.

use super::*;

/// A message of the last minute (never trimmed) filling `size` bytes.
fn recent_filler(size: usize) -> NewMessage {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    NewMessage {
        body: vec![b'x'; size].into(),
        flags: vec![],
        internal_date: i64::try_from(now).unwrap() - 60,
    }
}

#[tokio::test]
async fn append_beyond_the_quota_gets_overquota() {
    let h = setup().await;
    let account = h.account().await;
    let inbox = h.store().mailbox(account, "INBOX").await.unwrap().unwrap();
    h.store()
        .append(inbox.id, recent_filler(ENCRYPTED.len()))
        .await
        .unwrap();
    h.store().set_quota(Some(ENCRYPTED.len() as u64 * 3 / 2));
    let mut client = h.logged_in().await;
    client
        .send(format!("q1 APPEND INBOX {{{}}}\r\n", ENCRYPTED.len()).as_bytes())
        .await;
    assert!(client.line().await.starts_with("+ "));
    client.send(ENCRYPTED).await;
    client.send(b"\r\n").await;
    let (_, status) = client.until_tagged("q1").await;
    assert_eq!(status, "NO [OVERQUOTA] Quota exceeded");
    assert_eq!(h.store().uids(inbox.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn getquotaroot_reports_usage_and_the_configured_limit_in_kib() {
    let (h, _) = harness_with("[limits]\nmax_mailbox_size = 1048576\n").await;
    let account = h.account().await;
    let inbox = h.store().mailbox(account, "INBOX").await.unwrap().unwrap();
    h.store()
        .append(inbox.id, recent_filler(3 * 1024 + 1))
        .await
        .unwrap();
    let mut client = h.logged_in().await;
    let lines = client.ok("GETQUOTAROOT INBOX").await;
    assert_eq!(
        lines,
        vec![
            "* QUOTAROOT \"INBOX\" \"\"\r\n".to_owned(),
            "* QUOTA \"\" (STORAGE 4 1024)\r\n".to_owned(),
        ]
    );
    let lines = client.ok("GETQUOTA \"\"").await;
    assert_eq!(lines, vec!["* QUOTA \"\" (STORAGE 4 1024)\r\n".to_owned()]);
}

#[tokio::test]
async fn idle_client_sees_expunge_from_expiry() {
    let h = setup().await;
    h.deliver(&message(1)).await; // internal date in 2023: long expired
    let mut client = h.logged_in().await;
    client.ok("SELECT INBOX").await;
    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    let rules = chatmail_store::ExpireRules {
        delete_mails_after: 20,
        delete_large_after: 7,
        large_message_size: 200_000,
        delete_inactive_users_after: 0,
    };
    let report = h.store().expire(1_800_000_000, &rules).await.unwrap();
    assert_eq!(report.old_messages, 1);
    assert_eq!(client.line().await, "* 1 EXPUNGE\r\n");
    client.send(b"DONE\r\n").await;
    client.until_tagged("i1").await;
}
