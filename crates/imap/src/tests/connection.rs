//! Connection transcripts: write timeouts, LOGOUT and shutdown, implicit
//! TLS with per-IP limits.

use super::*;

/// Pipelines commands into a session over a tiny buffer and never reads;
/// returns how long (in paused time) the session took to give up, and how.
async fn stall_session(h: &Harness, login: bool) -> (Duration, Option<std::io::ErrorKind>) {
    let (client, server) = tokio::io::duplex(1024);
    let session = Session::new(server, h.ctx.clone(), true, h.shutdown.clone());
    let session = tokio::spawn(session.run());
    let mut client = Client::new(client);
    client.line().await;
    if login {
        client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    }
    // From here on time is virtual; nothing reads the responses.
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let Client { mut writer, .. } = client;
    tokio::spawn(async move {
        for n in 0..10_000 {
            let command = format!("p{n} CAPABILITY\r\n");
            if writer.write_all(command.as_bytes()).await.is_err() {
                break;
            }
        }
        // Keep the stream open: the session must give up by itself.
        std::future::pending::<()>().await;
    });
    let ended = tokio::time::timeout(Duration::from_secs(3600), session).await;
    let kind = match ended {
        Ok(Ok(Err(crate::SessionError::Io(e)))) => Some(e.kind()),
        _ => None,
    };
    (started.elapsed(), kind)
}

#[tokio::test]
async fn closes_a_session_whose_client_never_reads() {
    let h = setup().await;
    let (took, kind) = stall_session(&h, false).await;
    assert_eq!(kind, Some(std::io::ErrorKind::TimedOut), "after {took:?}");
    assert!(took >= crate::session::UNAUTHENTICATED_WRITE_TIMEOUT);
    assert!(took < crate::session::AUTHENTICATED_WRITE_TIMEOUT);
}

#[tokio::test]
async fn gives_a_logged_in_client_longer_to_read() {
    let h = setup().await;
    let (took, kind) = stall_session(&h, true).await;
    assert_eq!(kind, Some(std::io::ErrorKind::TimedOut), "after {took:?}");
    assert!(took >= crate::session::AUTHENTICATED_WRITE_TIMEOUT);
    assert!(took < 2 * crate::session::AUTHENTICATED_WRITE_TIMEOUT);
}

#[tokio::test]
async fn says_bye_on_logout_and_shutdown() {
    let h = setup().await;
    let mut client = h.connect().await;
    let (lines, status) = client.command("LOGOUT").await;
    assert_eq!(
        (lines, status.as_str()),
        (
            vec!["* BYE Logging out\r\n".to_owned()],
            "OK LOGOUT completed"
        )
    );
    let mut client = h.connect().await;
    h.shutdown.cancel();
    assert_eq!(client.line().await, "* BYE Server shutting down\r\n");
}

#[tokio::test]
async fn serves_implicit_tls_with_per_ip_limits_until_shutdown() {
    let (h, cert) = harness_with("[limits]\nmax_imap_connections = 5\n").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(crate::serve(
        listener,
        crate::Mode::ImplicitTls,
        h.ctx.clone(),
        crate::slots(&h.ctx),
        h.shutdown.clone(),
    ));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut first = Client::new(tls_connect(cert, tcp).await);
    assert!(first.line().await.starts_with("* OK [CAPABILITY IMAP4rev1"));
    first.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    // One fifth of 5 is one connection per IP address. Over the limit the
    // server closes the TCP connection without waiting for a ClientHello.
    let mut second = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed without handshake: {read:?}"
    );
    h.shutdown.cancel();
    assert_eq!(first.line().await, "* BYE Server shutting down\r\n");
    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "serve returned after shutdown"
    );
}
