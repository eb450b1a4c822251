//! Mailbox transcripts: expunge numbering, flags, APPEND through the gate,
//! literal bounds, MOVE, SEARCH and EXAMINE.

use super::*;

#[tokio::test]
async fn numbers_expunges_after_several_deletions() {
    let h = setup().await;
    for n in 1..=5 {
        h.deliver(&message(n)).await;
    }
    let mut client = h.logged_in().await;
    client.ok("SELECT INBOX").await;
    let all = client.ok("FETCH 1:* (UID)").await;
    let uids: Vec<u32> = all
        .iter()
        .map(|l| number_after(std::slice::from_ref(l), "UID"))
        .collect();
    assert_eq!(
        client.ok("STORE 2,3,5 +FLAGS.SILENT (\\Deleted)").await,
        Vec::<String>::new()
    );
    let expunged = client.ok("EXPUNGE").await;
    assert_eq!(
        expunged,
        vec!["* 2 EXPUNGE\r\n", "* 2 EXPUNGE\r\n", "* 3 EXPUNGE\r\n"]
    );
    let rest = client.ok("FETCH 1:* (UID)").await;
    assert_eq!(
        rest,
        vec![
            format!("* 1 FETCH (UID {})\r\n", uids[0]),
            format!("* 2 FETCH (UID {})\r\n", uids[3])
        ]
    );
    let (_, status) = client.command("FETCH 3 (UID)").await;
    assert!(status.starts_with("BAD"), "{status}");
}

#[tokio::test]
async fn reports_other_sessions_changes_at_the_next_command() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut watcher = h.logged_in().await;
    watcher.ok("SELECT INBOX").await;
    let mut other = h.logged_in().await;
    other.ok("SELECT INBOX").await;
    other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("EXPUNGE").await;
    h.deliver(&message(2)).await;
    assert_eq!(
        watcher.ok("NOOP").await,
        vec!["* 1 EXPUNGE\r\n", "* 1 EXISTS\r\n"]
    );
}

#[tokio::test]
async fn fetching_a_body_without_peek_sets_seen() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut client = h.logged_in().await;
    client.ok("SELECT INBOX").await;
    let fetched = client.ok("FETCH 1 (BODY[])").await;
    assert!(
        fetched[0].contains("body 1") && fetched[0].ends_with(" FLAGS (\\Seen))\r\n"),
        "{fetched:?}"
    );
    assert_eq!(
        client.ok("FETCH 1 (FLAGS)").await,
        vec!["* 1 FETCH (FLAGS (\\Seen))\r\n"]
    );
}

#[tokio::test]
async fn appends_only_encrypted_messages() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    client
        .send(format!("p1 APPEND INBOX {{{}}}\r\n", PLAIN.len()).as_bytes())
        .await;
    assert!(client.line().await.starts_with("+ "));
    client.send(PLAIN).await;
    client.send(b"\r\n").await;
    let (_, status) = client.until_tagged("p1").await;
    assert_eq!(
        status,
        "NO [CANNOT] Encryption Needed: Invalid Unencrypted Mail"
    );
    client
        .send(format!("e1 APPEND INBOX (\\Seen) {{{}}}\r\n", ENCRYPTED.len()).as_bytes())
        .await;
    assert!(client.line().await.starts_with("+ "));
    client.send(ENCRYPTED).await;
    client.send(b"\r\n").await;
    let (_, status) = client.until_tagged("e1").await;
    assert!(status.starts_with("OK [APPENDUID "), "{status}");
    let status_line = client.ok("STATUS INBOX (MESSAGES UNSEEN)").await;
    assert_eq!(
        status_line,
        vec!["* STATUS \"INBOX\" (MESSAGES 1 UNSEEN 0)\r\n"]
    );
}

#[tokio::test]
async fn refuses_an_oversize_literal_without_a_continuation() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let size = h.ctx.settings.limits().max_message_size + 1;
    client
        .send(format!("big APPEND INBOX {{{size}}}\r\n").as_bytes())
        .await;
    assert_eq!(client.line().await, "big NO [TOOBIG] Literal too big\r\n");
    client.ok("NOOP").await;
}

#[tokio::test]
async fn large_append_literals_draw_on_the_shared_body_budget() {
    // Bodies in memory: four of the largest (100 kB, each counted twice),
    // half of that for one client.
    let limits =
        "[limits]\nmax_message_size = 100000\nmax_body_memory = 0\nmax_spool_size = 100000\n";
    let h = setup_with(limits).await;
    let spools = h.ctx.spools.clone();
    let mut client = h.connect().await;
    client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    // A body of the same client (in-memory sessions share one) holds
    // half of its share: no continuation.
    let held = spools.try_load(None, 100_000).unwrap();
    client.send(b"b1 APPEND INBOX {70000}\r\n").await;
    assert_eq!(
        client.line().await,
        "b1 NO [UNAVAILABLE] Server busy, try again\r\n"
    );
    drop(held);
    client.send(b"b2 APPEND INBOX {70000}\r\n").await;
    assert_eq!(client.line().await, "+ Ready for literal data\r\n");
    assert_eq!(spools.usage().1, 140_000, "twice the literal");
    let mut literal = vec![b'x'; 70_000];
    literal.extend_from_slice(b"\r\n");
    client.send(&literal).await;
    let (_, status) = client.until_tagged("b2").await;
    assert!(status.starts_with("NO [CANNOT]"), "{status}");
    // The next command releases the literal's bytes.
    client.ok("NOOP").await;
    assert_eq!(spools.usage().1, 0);
}

#[tokio::test]
async fn bounds_literals_tightly_before_login() {
    let h = setup().await;
    let mut client = h.connect().await;
    client.send(b"big APPEND INBOX {1000000}\r\n").await;
    assert_eq!(client.line().await, "big BAD Log in first\r\n");
    client.send(b"pw LOGIN user {100000}\r\n").await;
    assert_eq!(client.line().await, "pw NO [TOOBIG] Literal too big\r\n");
    client.ok("NOOP").await;
}

#[tokio::test]
async fn moves_messages_by_uid() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    h.deliver(&message(2)).await;
    let mut client = h.logged_in().await;
    client.ok("CREATE Archive").await;
    let (_, status) = client.command("CREATE Archive").await;
    assert!(status.starts_with("NO [ALREADYEXISTS]"), "{status}");
    let select = client.ok("SELECT INBOX").await;
    let next = number_after(&select, "UIDNEXT");
    let moved = client.ok(&format!("UID MOVE {} Archive", next - 2)).await;
    assert!(moved[0].starts_with("* OK [COPYUID "), "{moved:?}");
    assert_eq!(moved[1], "* 1 EXPUNGE\r\n");
    assert_eq!(
        client.ok("STATUS Archive (MESSAGES)").await,
        vec!["* STATUS \"Archive\" (MESSAGES 1)\r\n"]
    );
    assert_eq!(
        client.ok("FETCH 1:* (UID)").await,
        vec![format!("* 1 FETCH (UID {})\r\n", next - 1)]
    );
    let (_, status) = client.command("UID MOVE 1:* Nowhere").await;
    assert!(status.starts_with("NO [TRYCREATE]"), "{status}");
    let list = client.ok("LIST \"\" \"*\"").await;
    assert!(
        list.iter()
            .any(|l| l.starts_with("* LIST (\\HasNoChildren")
                && l.ends_with("\"/\" \"Archive\"\r\n")),
        "{list:?}"
    );
    assert!(
        list.iter().any(|l| l.ends_with("\"/\" \"INBOX\"\r\n")),
        "{list:?}"
    );
}

#[tokio::test]
async fn answers_unknown_commands_with_bad_and_carries_on() {
    let h = setup().await;
    let mut client = h.connect().await;
    let (_, status) = client.command("FROBNICATE now").await;
    assert!(status.starts_with("BAD"), "{status}");
    client.send(b"\r\n").await;
    assert!(client.line().await.starts_with("* BAD"));
    let (_, status) = client.command("FETCH 1 (UID)").await;
    assert!(status.starts_with("BAD"), "{status}");
    client.ok("NOOP").await;
}

#[tokio::test]
async fn searches_by_flags_uids_and_headers() {
    let h = setup().await;
    for n in 1..=3 {
        h.deliver(&message(n)).await;
    }
    let mut client = h.logged_in().await;
    let select = client.ok("SELECT INBOX").await;
    let last = number_after(&select, "UIDNEXT") - 1;
    client.ok("STORE 2 +FLAGS.SILENT (\\Seen)").await;
    assert_eq!(client.ok("SEARCH UNSEEN").await, vec!["* SEARCH 1 3\r\n"]);
    assert_eq!(
        client.ok("UID SEARCH SEEN").await,
        vec![format!("* SEARCH {}\r\n", last - 1)]
    );
    assert_eq!(
        client.ok("SEARCH HEADER Message-ID m3@").await,
        vec!["* SEARCH 3\r\n"]
    );
    assert_eq!(client.ok("SEARCH NOT 1:2").await, vec!["* SEARCH 3\r\n"]);
    assert_eq!(
        client.ok("SEARCH BODY \"body 1\" SINCE 1-Jan-2020").await,
        vec!["* SEARCH 1\r\n"]
    );
    let (_, status) = client.command("SEARCH SENTON 1-Jan-2020").await;
    assert!(status.starts_with("BAD"), "{status}");
}

#[tokio::test]
async fn searches_huge_uid_and_sequence_ranges_correctly() {
    let h = setup().await;
    for n in 1..=40 {
        h.deliver(&message(n)).await;
    }
    let mut client = h.logged_in().await;
    let select = client.ok("SELECT INBOX").await;
    let last = number_after(&select, "UIDNEXT") - 1;
    let uids: Vec<String> = (last - 39..=last).map(|u| u.to_string()).collect();
    assert_eq!(
        client.ok("UID SEARCH UID 1:4294967295").await,
        vec![format!("* SEARCH {}\r\n", uids.join(" "))]
    );
    assert_eq!(
        client.ok("SEARCH 1:* NOT 3:38").await,
        vec!["* SEARCH 1 2 39 40\r\n"]
    );
    assert_eq!(
        client
            .ok(&format!("SEARCH OR UID {last} 2 UID 1:4294967295"))
            .await,
        vec!["* SEARCH 2 40\r\n"]
    );
}

#[tokio::test]
async fn defers_expunges_during_fetch_until_the_next_command() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    h.deliver(&message(2)).await;
    let mut watcher = h.logged_in().await;
    watcher.ok("SELECT INBOX").await;
    let mut other = h.logged_in().await;
    other.ok("SELECT INBOX").await;
    other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    other.ok("CLOSE").await;
    // RFC 3501 §7.4.1: no EXPUNGE during FETCH; numbering stays put.
    let fetched = watcher.ok("FETCH 2 (FLAGS)").await;
    assert_eq!(fetched, vec!["* 2 FETCH (FLAGS ())\r\n"]);
    assert_eq!(watcher.ok("NOOP").await, vec!["* 1 EXPUNGE\r\n"]);
}

#[tokio::test]
async fn examine_is_read_only() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut client = h.logged_in().await;
    let (_, status) = client.command("EXAMINE INBOX").await;
    assert_eq!(status, "OK [READ-ONLY] EXAMINE completed");
    let fetched = client.ok("FETCH 1 (BODY[] FLAGS)").await;
    assert!(fetched[0].ends_with("FLAGS ())\r\n"), "{fetched:?}");
    let (_, status) = client.command("STORE 1 +FLAGS (\\Deleted)").await;
    assert!(status.starts_with("NO [READ-ONLY]"), "{status}");
}
