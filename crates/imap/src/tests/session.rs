//! Session transcripts: login and capabilities, STARTTLS, the Delta Chat
//! loop and IDLE.

use super::*;

#[tokio::test]
async fn login_answers_with_the_chatmail_capabilities() {
    let h = setup().await;
    let mut client = h.connect().await;
    assert!(client.greeting.contains("AUTH=PLAIN") && !client.greeting.contains("LOGINDISABLED"));
    let (_, status) = client
        .command(&format!("LOGIN \"{ALICE}\" \"{PASSWORD}\""))
        .await;
    assert!(status.starts_with("OK [CAPABILITY IMAP4rev1 "), "{status}");
    for capability in [
        "IDLE",
        "MOVE",
        "UIDPLUS",
        "QUOTA",
        "METADATA",
        " ID ",
        "ENABLE",
        "XCHATMAIL",
        "XDELTAPUSH",
    ] {
        assert!(
            status.contains(capability),
            "{capability} missing in {status}"
        );
    }
    assert!(status.contains(" COMPRESS=DEFLATE "), "{status}");
    assert!(!client.greeting.contains("COMPRESS"));
    let lines = client.ok("ID (\"name\" \"Delta Chat\")").await;
    assert_eq!(lines, vec!["* ID (\"name\" \"madmail\")\r\n"]);
}

#[tokio::test]
async fn refuses_a_wrong_password() {
    let h = setup().await;
    h.account().await;
    let mut client = h.connect().await;
    let (_, status) = client
        .command(&format!("LOGIN {ALICE} wrong-password-1"))
        .await;
    assert_eq!(status, "NO [AUTHENTICATIONFAILED] Invalid credentials");
    let (_, status) = client.command("SELECT INBOX").await;
    assert!(status.starts_with("BAD"), "{status}");
}

#[tokio::test]
async fn answers_unavailable_when_password_checks_are_saturated() {
    let h = setup().await;
    let accounts = Accounts::with_kdf_bound(
        h.store().clone(),
        h.ctx.settings.clone(),
        0,
        Duration::from_millis(20),
    );
    let ctx = Arc::new(Context {
        settings: h.ctx.settings.clone(),
        accounts,
        tls: h.ctx.tls.clone(),
        turn: h.ctx.turn.clone(),
        iroh_relay: h.ctx.iroh_relay.clone(),
        spools: h.ctx.spools.clone(),
    });
    let (client, server) = tokio::io::duplex(1 << 16);
    tokio::spawn(Session::new(server, ctx, true, h.shutdown.clone()).run());
    let mut client = Client::new(client);
    client.line().await;
    let (_, status) = client.command(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    assert_eq!(status, "NO [UNAVAILABLE] Server busy, try again later");
}

#[tokio::test]
async fn authenticates_with_plain_and_sasl_ir() {
    use base64::Engine;
    let h = setup().await;
    let response =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{ALICE}\0{PASSWORD}"));
    let mut client = h.connect().await;
    client.ok(&format!("AUTHENTICATE PLAIN {response}")).await;
    let mut client = h.connect().await;
    client.send(b"t1 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(client.line().await, "+ \r\n");
    client.send(format!("{response}\r\n").as_bytes()).await;
    let (_, status) = client.until_tagged("t1").await;
    assert!(status.starts_with("OK [CAPABILITY"), "{status}");
}

#[tokio::test]
async fn disables_login_before_starttls() {
    let h = setup().await;
    let mut client = h.connect_with(false, |_| {}).await;
    assert!(client.greeting.contains("STARTTLS") && client.greeting.contains("LOGINDISABLED"));
    let (_, status) = client.command(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    assert!(status.starts_with("NO [PRIVACYREQUIRED]"), "{status}");
    let lines = client.ok("CAPABILITY").await;
    assert!(lines[0].contains("LOGINDISABLED"));
}

#[tokio::test]
async fn upgrades_with_starttls_and_discards_pipelined_commands() {
    let (h, cert) = harness().await;
    let mut plain = h.connect_with(false, |_| {}).await;
    // The LOGIN pipelined behind STARTTLS must never run.
    plain
        .send(format!("s1 STARTTLS\r\ns2 LOGIN {ALICE} {PASSWORD}\r\n").as_bytes())
        .await;
    let (_, status) = plain.until_tagged("s1").await;
    assert!(status.starts_with("OK"), "{status}");
    let stream = plain.reader.into_inner().unsplit(plain.writer);
    let tls = tls_connect(cert, stream).await;
    let mut client = Client::new(tls);
    let lines = client.ok("CAPABILITY").await;
    // Only the CAPABILITY line: the pipelined LOGIN left no answer.
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("AUTH=PLAIN") && !lines[0].contains("STARTTLS"),
        "{lines:?}"
    );
    client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
}

#[tokio::test]
async fn keeps_uidvalidity_and_raises_uidnext_across_sessions() {
    let h = setup().await;
    let mut client = h.logged_in().await;
    let first = client.ok("SELECT INBOX").await;
    let (validity, next) = (
        number_after(&first, "UIDVALIDITY"),
        number_after(&first, "UIDNEXT"),
    );
    assert!(first.iter().any(|l| l == "* 0 EXISTS\r\n"), "{first:?}");
    h.deliver(&message(1)).await;
    let mut other = h.logged_in().await;
    let second = other.ok("SELECT \"INBOX\"").await;
    assert_eq!(number_after(&second, "UIDVALIDITY"), validity);
    assert!(number_after(&second, "UIDNEXT") > next);
    assert!(second.iter().any(|l| l == "* 1 EXISTS\r\n"), "{second:?}");
}

#[tokio::test]
async fn runs_the_delta_chat_loop() {
    let h = setup().await;
    h.deliver(&message(1)).await;
    let mut client = h.logged_in().await;
    let quota = client.ok("GETQUOTAROOT \"INBOX\"").await;
    assert_eq!(quota[0], "* QUOTAROOT \"INBOX\" \"\"\r\n");
    assert!(
        quota[1].starts_with("* QUOTA \"\" (STORAGE 1 512000)"),
        "{quota:?}"
    );
    let (meta, status) = client
        .command(
            "GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay)",
        )
        .await;
    assert_eq!(status, "OK Getmetadata completed");
    assert_eq!(
        meta,
        vec![
            "* METADATA \"\" (/shared/comment NIL /shared/admin NIL /shared/vendor/deltachat/irohrelay NIL)\r\n"
        ]
    );
    let select = client.ok("SELECT \"INBOX\"").await;
    assert!(select.iter().any(|l| l == "* 1 EXISTS\r\n"));
    let headers = client.ok("UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE FROM CONTENT-TYPE SECURE-JOIN CHAT-VERSION)])").await;
    assert_eq!(headers.len(), 1, "{headers:?}");
    let uid = number_after(&headers, "UID");
    assert!(headers[0].contains("Message-ID: <m1@example.org>\r\nFrom: bob000001@example.org\r\nChat-Version: 1.0\r\n\r\n"), "{headers:?}");
    let bodies = client
        .ok(&format!("UID FETCH {uid} (FLAGS BODY.PEEK[])"))
        .await;
    assert!(
        bodies[0].contains("FLAGS ()") && bodies[0].contains("body 1\r\n"),
        "{bodies:?}"
    );
    let stored = client
        .ok(&format!("UID STORE {uid} +FLAGS (\\Deleted)"))
        .await;
    assert_eq!(
        stored,
        vec![format!("* 1 FETCH (UID {uid} FLAGS (\\Deleted))\r\n")]
    );
    client.ok("CLOSE").await;
    let select = client.ok("SELECT INBOX").await;
    assert!(
        select.iter().any(|l| l == "* 0 EXISTS\r\n"),
        "CLOSE expunged: {select:?}"
    );
    idle_sees_delivery(&h, &mut client).await;
}

/// IDLE must announce a delivery promptly.
async fn idle_sees_delivery(h: &Harness, client: &mut Client<DuplexStream>) {
    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    let store = h.store().clone();
    let account = h.account().await;
    let start = Instant::now();
    tokio::spawn(async move {
        let message = NewMessage {
            body: message(2).into(),
            flags: vec![],
            internal_date: 0,
        };
        store.deliver(&[account], message).await.unwrap();
    });
    assert_eq!(client.line().await, "* 1 EXISTS\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "IDLE took {:?}",
        start.elapsed()
    );
    client.send(b"DONE\r\n").await;
    let (lines, status) = client.until_tagged("i1").await;
    assert!(
        lines.is_empty() && status == "OK IDLE terminated",
        "{lines:?} {status}"
    );
}

#[tokio::test]
async fn sends_keepalives_during_idle() {
    let h = setup().await;
    let mut client = h
        .connect_with(true, |s| s.keepalive = Duration::from_millis(50))
        .await;
    client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    assert_eq!(client.line().await, "* OK Still here\r\n");
    client.send(b"DONE\r\n").await;
    client.until_tagged("i1").await;
}
