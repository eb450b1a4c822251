//! `POST /mxdeliv`: mail from another relay over HTTPS (docs/specifications.md §6).
//!
//! Request: `X-Mail-From: <sender>` (absent or empty: the null sender),
//! one `X-Mail-To: <recipient>` per recipient, the raw RFC 5322 message as
//! the body. The checks are those of port 25, in the same order, through
//! `chatmail_inbound::Inbound`.
//!
//! Replies: 200 stored (durable); 400 with the SMTP reply line for a
//! refused message (DKIM, 523, From) or a malformed request; 403 federation
//! policy; 404 a recipient that is not a local user; 405 another method
//! (the router); 413 body over `max_message_size` (by `Content-Length`
//! before reading, else while spooling); 503 temporary failure (DNS,
//! store, no room for the body now): the sender retries as after a 4xx.
//!
//! Resources: the sender and every recipient are checked before a byte of
//! the body is read; the body is spooled as it arrives
//! (`chatmail_limits::Spools`, shared with SMTP), never buffered whole by
//! the HTTP layer.
//!
//! Invariant: one status for the whole request, so delivery is all or
//! nothing: any refused recipient refuses the message and nothing is stored.
//! Each request counts once in `chatmail_metrics` (source `mxdeliv`):
//! accepted, or refused with the reason of its refusal.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chatmail_inbound::{Envelope, Kind, Refusal, normalize_line_endings};
use chatmail_metrics::Source;
use http_body_util::BodyExt as _;

use crate::Context;
use crate::new::ClientAddr;

/// `POST /mxdeliv`.
pub async fn deliver(
    State(ctx): State<Arc<Context>>,
    client: Option<Extension<ConnectInfo<ClientAddr>>>,
    request: Request,
) -> Response {
    let client = client.map(|Extension(ConnectInfo(ClientAddr(addr)))| addr.ip());
    let (parts, body) = request.into_parts();
    match handle(&ctx, client, &parts.headers, body).await {
        Ok(()) => {
            chatmail_metrics::accepted(Source::Mxdeliv);
            (StatusCode::OK, "250 2.0.0 OK\n").into_response()
        }
        Err(refusal) => {
            chatmail_metrics::refused(Source::Mxdeliv, refusal.reason);
            refused(&refusal)
        }
    }
}

/// The envelope is checked in full before a byte of the body is read;
/// the body is then spooled under the process's budgets.
async fn handle(
    ctx: &Context,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Refusal> {
    let inbound = &ctx.inbound;
    let (sender, addresses) = envelope(headers, ctx.settings.limits().max_recipients)?;
    inbound.check_sender(sender.as_deref())?;
    let mut accounts = Vec::with_capacity(addresses.len());
    for address in &addresses {
        let account = inbound.check_recipient(address, client).await?;
        if !accounts.contains(&account) {
            accounts.push(account);
        }
    }
    let max = ctx.settings.limits().max_message_size;
    if content_length(headers).is_some_and(|length| length > max) {
        return Err(Refusal::too_big());
    }
    let mut spool = inbound.spools().begin(client, max);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::body_not_received())?;
        if let Some(data) = frame.data_ref() {
            spool.write(data).await.map_err(|e| Refusal::from(&e))?;
        }
    }
    let body = spool.finish().await.map_err(|e| Refusal::from(&e))?;
    // The body did not pass through SMTP DATA: give it the wire form.
    let message = normalize_line_endings(&body);
    let envelope = Envelope {
        sender: sender.as_deref(),
        client,
    };
    inbound.accept(envelope, &accounts, &message).await?;
    Ok(())
}

/// The envelope of a request: the `X-Mail-From` sender (`None`: the null
/// sender) and the `X-Mail-To` recipients, at most `max`; else the
/// refusal of the request (HTTP 400, whatever its SMTP code).
pub fn envelope(headers: &HeaderMap, max: usize) -> Result<(Option<String>, Vec<String>), Refusal> {
    Ok((sender(headers)?, recipients(headers, max)?))
}

/// The declared `Content-Length`, if any.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse().ok())
}

/// The `X-Mail-From` address; `None` when absent or empty (null sender).
fn sender(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let mut values = headers.get_all("x-mail-from").iter();
    let (first, None) = (values.next(), values.next()) else {
        return Err(Refusal::two_senders());
    };
    let Some(value) = first else {
        return Ok(None);
    };
    let address = address(value).ok_or(Refusal::bad_sender_header())?;
    Ok(Some(address).filter(|a| !a.is_empty()))
}

/// The `X-Mail-To` addresses, at least one and at most `max`.
fn recipients(headers: &HeaderMap, max: usize) -> Result<Vec<String>, Refusal> {
    let values = headers.get_all("x-mail-to");
    let mut addresses = Vec::new();
    for value in values {
        if addresses.len() >= max {
            // A request is not retried piecemeal: 400, not 503.
            return Err(Refusal {
                kind: Kind::Malformed,
                ..Refusal::too_many_recipients()
            });
        }
        match address(value) {
            Some(address) if !address.is_empty() => addresses.push(address),
            _ => return Err(Refusal::bad_recipient_header()),
        }
    }
    if addresses.is_empty() {
        return Err(Refusal::no_recipient_header());
    }
    Ok(addresses)
}

/// A header value as an address: trimmed, angle brackets optional.
fn address(value: &axum::http::HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?.trim();
    let text = match text.strip_prefix('<') {
        Some(inner) => inner.strip_suffix('>')?,
        None => text,
    };
    let valid = text.len() <= 254 && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then(|| text.to_owned())
}

fn refused(refusal: &Refusal) -> Response {
    let status =
        StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, format!("{refusal}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use chatmail_accounts::Accounts;
    use chatmail_dkim::{Algorithm, DkimKey, StaticTxt};
    use chatmail_inbound::{Inbound, KeyLookup};
    use chatmail_store::{Store, StoreOptions};
    use tower::ServiceExt as _;

    use crate::{Context, router};

    const BOB: &str = "bob000001@example.org";
    const CAROL: &str = "carol0001@example.net";

    struct Harness {
        ctx: Arc<Context>,
        store: Store,
        key: DkimKey,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        async fn new(extra: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                "mail_domain = \"example.org\"\nstate_dir = \"{}\"\n[tls]\nmode = \"self-signed\"\n{extra}",
                dir.path().display()
            );
            let settings = Arc::new(chatmail_config::parse(&text).unwrap());
            let path = dir.path().join("mail.db");
            let store = Store::open(StoreOptions {
                path,
                max_batch: 16,
            })
            .await
            .unwrap();
            let accounts = Accounts::new(store.clone(), Arc::clone(&settings));
            accounts.login(BOB, "correct-horse").await.unwrap();
            let der = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
            let key = DkimKey::from_pkcs8_der("sel", &der).unwrap();
            let mut txt = StaticTxt::new();
            txt.insert_key(&key, "example.net");
            let inbound = Inbound::new(
                Arc::clone(&settings),
                accounts.clone(),
                KeyLookup::fixed(txt),
            );
            let ctx = Arc::new(Context {
                settings,
                accounts,
                base_url: "https://example.org".into(),
                inbound,
                acme_challenges: None,
                iroh: None,
                proxy_link: None,
                admin: None,
            });
            Self {
                ctx,
                store,
                key,
                _dir: dir,
            }
        }

        /// Sends a request; returns the status and the body text.
        async fn post(
            &self,
            from: Option<&str>,
            to: &[&str],
            body: Vec<u8>,
        ) -> (StatusCode, String) {
            let mut request = Request::builder().method(Method::POST).uri("/mxdeliv");
            if let Some(from) = from {
                request = request.header("X-Mail-From", from);
            }
            for rcpt in to {
                request = request.header("X-Mail-To", *rcpt);
            }
            self.send(request.body(Body::from(body)).unwrap()).await
        }

        async fn send(&self, request: Request<Body>) -> (StatusCode, String) {
            let response = router(Arc::clone(&self.ctx))
                .oneshot(request)
                .await
                .unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        async fn inbox(&self) -> Vec<Vec<u8>> {
            let account = self.store.account(BOB).await.unwrap().unwrap();
            let inbox = self
                .store
                .mailbox(account.id, "INBOX")
                .await
                .unwrap()
                .unwrap();
            let mut bodies = Vec::new();
            for meta in self.store.messages(inbox.id, 0).await.unwrap() {
                let body = self.store.body(inbox.id, meta.uid).await.unwrap().unwrap();
                bodies.push(body.to_vec());
            }
            bodies
        }

        fn sign(&self, message: &[u8]) -> Vec<u8> {
            self.key.sign(message, "example.net").unwrap()
        }
    }

    /// Carol's encrypted message to Bob (the gate's fixture body).
    fn encrypted() -> Vec<u8> {
        let fixture: &[u8] = include_bytes!("../../gate/testdata/encrypted.eml");
        let split = fixture.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = format!(
            "From: <{CAROL}>\r\nTo: <{BOB}>\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
             boundary=\"BOUNDARY\"\r\n\r\n"
        );
        [head.as_bytes(), &fixture[split + 4..]].concat()
    }

    #[tokio::test]
    async fn delivers_signed_encrypted_mail_with_200() {
        let h = Harness::new("").await;
        let signed = [b"Received: from x\r\n".as_slice(), &h.sign(&encrypted())].concat();
        let (status, body) = h.post(Some(CAROL), &[BOB], signed).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "250 2.0.0 OK\n"));
        assert_eq!(h.inbox().await, vec![encrypted()]);
    }

    #[tokio::test]
    async fn accepts_lf_bodies_and_stores_them_with_crlf() {
        let h = Harness::new("").await;
        let lf = String::from_utf8(h.sign(&encrypted()))
            .unwrap()
            .replace("\r\n", "\n");
        let (status, _) = h
            .post(Some(&format!("<{CAROL}>")), &[BOB], lf.into_bytes())
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h.inbox().await, vec![encrypted()]);
    }

    #[tokio::test]
    async fn accepts_a_bounce_from_the_null_sender() {
        let h = Harness::new("").await;
        let bounce: &[u8] = include_bytes!("../../gate/testdata/bounce.eml");
        let (status, _) = h.post(None, &[BOB], h.sign(bounce)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h.inbox().await.len(), 1);
    }

    #[tokio::test]
    async fn refuses_unsigned_mail_with_400_and_the_smtp_text() {
        let h = Harness::new("").await;
        let (status, body) = h.post(Some(CAROL), &[BOB], encrypted()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, "554 5.7.1 No DKIM signature found\n");
        assert!(h.inbox().await.is_empty());
    }

    #[tokio::test]
    async fn refuses_mis_signed_and_plaintext_mail_with_400() {
        let h = Harness::new("").await;
        let forged = String::from_utf8(h.sign(&encrypted()))
            .unwrap()
            .replacen("[...]", "[..]", 1);
        let (status, body) = h.post(Some(CAROL), &[BOB], forged.into_bytes()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, "554 5.7.1 No valid DKIM signature found\n");
        let plain = format!("From: <{CAROL}>\r\nTo: <{BOB}>\r\n\r\nhello\r\n");
        let (status, body) = h.post(Some(CAROL), &[BOB], h.sign(plain.as_bytes())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            "523 5.7.1 Encryption Needed: Invalid Unencrypted Mail\n"
        );
        assert!(h.inbox().await.is_empty());
    }

    #[tokio::test]
    async fn refuses_unknown_and_foreign_recipients_with_404() {
        let h = Harness::new("").await;
        let signed = h.sign(&encrypted());
        let (status, body) = h
            .post(Some(CAROL), &[BOB, "nobody001@example.org"], signed.clone())
            .await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "550 5.1.1 User unknown\n")
        );
        let (status, _) = h.post(Some(CAROL), &["x@elsewhere.example"], signed).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(h.inbox().await.is_empty());
    }

    #[tokio::test]
    async fn refuses_requests_without_recipients_with_400() {
        let h = Harness::new("").await;
        let (status, body) = h.post(Some(CAROL), &[], h.sign(&encrypted())).await;
        let expected = (
            StatusCode::BAD_REQUEST,
            "554 5.5.1 No X-Mail-To recipient\n",
        );
        assert_eq!((status, body.as_str()), expected);
        let (status, body) = h
            .post(Some(CAROL), &["not an address"], h.sign(&encrypted()))
            .await;
        let expected = (StatusCode::BAD_REQUEST, "501 5.1.3 Bad X-Mail-To\n");
        assert_eq!((status, body.as_str()), expected);
        let too_many = vec![BOB; 1001];
        let (status, body) = h.post(Some(CAROL), &too_many, h.sign(&encrypted())).await;
        let expected = (StatusCode::BAD_REQUEST, "452 4.5.3 Too many recipients\n");
        assert_eq!((status, body.as_str()), expected);
    }

    #[tokio::test]
    async fn other_methods_get_405() {
        let h = Harness::new("").await;
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let request = Request::builder()
                .method(method)
                .uri("/mxdeliv")
                .body(Body::empty());
            let (status, _) = h.send(request.unwrap()).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        }
    }

    #[tokio::test]
    async fn oversized_bodies_get_413() {
        let h = Harness::new("[limits]\nmax_message_size = 1024\n").await;
        let (status, _) = h.post(Some(CAROL), &[BOB], vec![b'a'; 4096]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let signed = h.sign(&encrypted());
        assert!(signed.len() > 1024);
        let (status, _) = h.post(Some(CAROL), &[BOB], signed).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(h.inbox().await.is_empty());
    }

    #[tokio::test]
    async fn refuses_blocked_domains_with_403() {
        let policy = "[federation]\npolicy = \"allow\"\ndomains = [\"friends.example\"]\n";
        let h = Harness::new(policy).await;
        let (status, body) = h.post(Some(CAROL), &[BOB], h.sign(&encrypted())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.starts_with("554 5.7.1"), "{body:?}");
        let (status, _) = h.post(None, &[BOB], h.sign(&encrypted())).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "the From domain is checked too"
        );
        assert!(h.inbox().await.is_empty());
    }
}
