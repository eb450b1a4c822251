//! COMPRESS=DEFLATE transcripts: the client side deflates and inflates
//! too, as Delta Chat does right after LOGIN.

use super::*;
use crate::compress::Layer;

/// Sends COMPRESS DEFLATE; the raw stream after the tagged OK.
async fn enable(mut client: Client<DuplexStream>) -> (DuplexStream, u32) {
    let (lines, status) = client.command("COMPRESS DEFLATE").await;
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(status, "OK DEFLATE active");
    assert!(client.reader.buffer().is_empty(), "nothing after the OK");
    let next_tag = client.next_tag;
    (client.reader.into_inner().unsplit(client.writer), next_tag)
}

/// Switches a logged-in client to deflate (RFC 4978 §3).
async fn compress(client: Client<DuplexStream>) -> Client<Layer<DuplexStream>> {
    let (stream, next_tag) = enable(client).await;
    let mut layer = Layer::new(stream);
    assert!(layer.start_deflate(b""));
    let mut client = Client::new(layer);
    client.next_tag = next_tag;
    client
}

/// A 1 MiB body of varied text lines.
fn big_message() -> Vec<u8> {
    let mut body = b"Message-ID: <big@example.org>\r\nFrom: bob000001@example.org\r\n\r\n".to_vec();
    let mut x: u32 = 12345;
    while body.len() < 1 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        body.extend_from_slice(format!("{:08x} line {}\r\n", x, body.len()).as_bytes());
    }
    body
}

#[tokio::test]
async fn serves_a_whole_delta_chat_session_over_deflate() {
    let h = setup().await;
    let big = big_message();
    h.deliver(&big).await;
    let client = h.logged_in().await;
    let mut client = compress(client).await;
    let select = client.ok("SELECT \"INBOX\"").await;
    assert!(select.iter().any(|l| l == "* 1 EXISTS\r\n"), "{select:?}");
    let lines = client
        .ok("UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])")
        .await;
    assert_eq!(lines.len(), 1, "one FETCH response");
    let expected = format!(
        "* 1 FETCH (UID 1 RFC822.SIZE {} BODY[] {{{}}}\r\n",
        big.len(),
        big.len()
    );
    assert!(lines[0].starts_with(&expected), "{}", &lines[0][..80]);
    assert!(lines[0].contains(std::str::from_utf8(&big).unwrap()));

    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    h.deliver(&message(2)).await;
    assert_eq!(client.line().await, "* 2 EXISTS\r\n");
    client.send(b"DONE\r\n").await;
    let (_, status) = client.until_tagged("i1").await;
    assert_eq!(status, "OK IDLE terminated");

    let (_, status) = client.command("COMPRESS DEFLATE").await;
    assert_eq!(status, "NO [COMPRESSIONACTIVE] DEFLATE active");
    client.send(b"z LOGOUT\r\n").await;
    assert_eq!(client.line().await, "* BYE Logging out\r\n");
    assert_eq!(client.line().await, "z OK LOGOUT completed\r\n");
}

#[tokio::test]
async fn refuses_compress_before_login() {
    let h = setup().await;
    let mut client = h.connect().await;
    let (_, status) = client.command("COMPRESS DEFLATE").await;
    assert!(status.starts_with("BAD"), "{status}");
    client.ok("NOOP").await;
}

#[tokio::test]
async fn answers_keepalives_compressed_during_idle() {
    let h = setup().await;
    let client = h
        .connect_with(true, |session| {
            session.keepalive = Duration::from_millis(50);
        })
        .await;
    let mut client = client;
    client.ok(&format!("LOGIN {ALICE} {PASSWORD}")).await;
    let mut client = compress(client).await;
    client.ok("SELECT INBOX").await;
    client.send(b"i1 IDLE\r\n").await;
    assert_eq!(client.line().await, "+ idling\r\n");
    assert_eq!(client.line().await, "* OK Still here\r\n");
    client.send(b"DONE\r\n").await;
    let (_, status) = client.until_tagged("i1").await;
    assert_eq!(status, "OK IDLE terminated");
}

#[tokio::test]
async fn ends_the_connection_on_corrupt_compressed_input() {
    let h = setup().await;
    let client = h.logged_in().await;
    let (mut stream, _) = enable(client).await;
    // A reserved block type (RFC 1951 §3.2.3).
    stream.write_all(&[0xff; 8]).await.unwrap();
    let mut rest = Vec::new();
    let read = stream.read_to_end(&mut rest);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("server closes")
        .ok();
}
