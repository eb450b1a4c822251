//! HTTP/2 on 443, written as raw frames so that nothing on the client
//! side keeps to the rules:
//! - rapid reset: one connection opening request after request and
//!   cancelling each at once (`HEADERS` then `RST_STREAM`), as in
//!   CVE-2023-44487. Bound: the relay ends the connection (GOAWAY or
//!   close) before 10,000 resets, its CPU stays under 2 s;
//! - stream flood: one connection opening far more streams than the
//!   relay's `SETTINGS_MAX_CONCURRENT_STREAMS`, each a `POST /mxdeliv`
//!   whose body never comes. Bound: at most 16 are ever taken, the rest
//!   are refused, and memory stays flat.
//!
//! In both, a normal login meanwhile takes under 1 s.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::common::{
    VICTIM, attacker, baseline_memory, login_within, mib, relay, report, tls_from, tls_with_alpn,
};

const RESETS: u32 = 10_000;
const CPU_BOUND: Duration = Duration::from_secs(2);
const LOGIN_BOUND: Duration = Duration::from_secs(1);
/// The relay's `chatmail_http::MAX_STREAMS`.
const MAX_STREAMS: usize = 16;
/// Frame types (RFC 9113 §6).
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
/// `REFUSED_STREAM` (RFC 9113 §7).
const REFUSED_STREAM: u32 = 0x7;

/// One HTTP/2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// One frame as read: type, stream and payload.
struct Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a `RST_STREAM` or `GOAWAY`.
    fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let code = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(code.try_into().ok()?))
    }
}

/// The next frame, or `None` once the connection is closed or silent for
/// `silence`.
async fn next_frame(reader: &mut (impl AsyncRead + Unpin), silence: Duration) -> Option<Frame> {
    let mut head = [0u8; 9];
    match tokio::time::timeout(silence, reader.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return None,
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    Some(Frame {
        kind: head[3],
        stream,
        payload,
    })
}

/// An HPACK literal header field without indexing, new name (RFC 7541
/// §6.2.2), for names and values under 128 bytes.
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_the_connection_and_spares_everyone_else() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let config = tls_with_alpn(&relay, &[b"h2"]);
    let addr = relay.addr(relay.ports.https);
    let tls = tls_from(attacker(70), addr, &config).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let cpu_before = relay.cpu_time().unwrap();

    // GET / (HPACK: :method GET, :scheme https, :path /, :authority).
    let mut headers = vec![0x82, 0x87, 0x84, 0x41, 9];
    headers.extend_from_slice(b"127.0.0.1");
    let attack = tokio::spawn(async move {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        let mut sent = 0u32;
        for n in 0..RESETS {
            let stream = 2 * n + 1;
            out.extend(frame(HEADERS, 0x5, stream, &headers));
            out.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
            if out.len() > 16 * 1024 || n + 1 == RESETS {
                if writer.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
                sent = n + 1;
            }
        }
        sent
    });
    // What the relay answers: a GOAWAY's error code, or the close.
    let read = tokio::spawn(async move {
        while let Some(frame) = next_frame(&mut reader, Duration::from_secs(20)).await {
            if frame.kind == GOAWAY {
                return format!("GOAWAY {:#x}", frame.error_code().unwrap_or(0));
            }
        }
        "closed or silent for 20 s".to_owned()
    });
    let started = Instant::now();
    let login = login_within(&relay, LOGIN_BOUND).await;
    let answer = read.await.unwrap();
    let sent = attack.await.unwrap();
    let took = started.elapsed();
    let cpu = relay.cpu_time().unwrap().saturating_sub(cpu_before);
    report(
        "http2-rapid-reset",
        &[
            ("resets_written", sent.to_string()),
            ("answer", format!("{answer:?}")),
            ("answered_after", format!("{took:?}")),
            ("relay_cpu", format!("{cpu:?}")),
            ("login", format!("{login:?}")),
        ],
    );
    assert!(
        answer.starts_with("GOAWAY") || answer == "closed",
        "{answer}"
    );
    assert!(
        sent < RESETS || answer.starts_with("GOAWAY"),
        "all {sent} resets taken"
    );
    assert!(cpu < CPU_BOUND, "relay CPU {cpu:?}");
    assert!(login.is_ok_and(|took| took < LOGIN_BOUND));
}

/// What the relay did with the streams of a flood.
#[derive(Debug, Default)]
struct Outcome {
    /// Streams refused with `RST_STREAM(REFUSED_STREAM)`.
    refused: usize,
    /// Streams reset with another code.
    reset: usize,
    /// Streams answered (a response `HEADERS`).
    answered: usize,
    /// The `GOAWAY` error code, if the relay ended the connection.
    goaway: Option<u32>,
}

impl Outcome {
    /// Reads until the relay is silent for `silence` or ends the
    /// connection.
    async fn read(&mut self, reader: &mut (impl AsyncRead + Unpin), silence: Duration) {
        while let Some(frame) = next_frame(reader, silence).await {
            match (frame.kind, frame.error_code()) {
                (HEADERS, _) if frame.stream > 0 => self.answered += 1,
                (RST_STREAM, Some(REFUSED_STREAM)) => self.refused += 1,
                (RST_STREAM, _) => self.reset += 1,
                (GOAWAY, code) => {
                    self.goaway = code;
                    return;
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_gets_no_more_than_max_streams() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let before = baseline_memory(&relay).await;
    let config = tls_with_alpn(&relay, &[b"h2"]);
    let addr = relay.addr(relay.ports.https);
    let tls = tls_from(attacker(73), addr, &config).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);

    // POST /mxdeliv to the victim, 1,000 bytes announced, none sent: the
    // relay takes each stream and waits for its body.
    let mut headers = vec![0x83, 0x87, 0x44, 8];
    headers.extend_from_slice(b"/mxdeliv");
    headers.extend([0x41, 9]);
    headers.extend_from_slice(b"127.0.0.1");
    headers.extend(literal("x-mail-from", "sender73@[127.0.1.73]"));
    headers.extend(literal("x-mail-to", VICTIM));
    headers.extend(literal("content-length", "1000"));
    let streams = move |range: std::ops::Range<u32>| {
        let mut out = Vec::new();
        for n in range {
            out.extend(frame(HEADERS, 0x4, 2 * n + 1, &headers));
        }
        out
    };

    // First a flood the relay can still answer stream by stream: 40 at
    // once, 16 taken, 24 refused.
    let first = 40;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(streams(0..first));
    writer.write_all(&out).await.unwrap();
    let mut held = Outcome::default();
    held.read(&mut reader, Duration::from_secs(2)).await;
    let login_held = login_within(&relay, LOGIN_BOUND).await;

    // Then far more: 10,000 streams more on the same connection.
    let more = 10_000;
    let started = Instant::now();
    let attack = tokio::spawn(async move {
        for chunk in (first..first + more).collect::<Vec<_>>().chunks(200) {
            let range = chunk[0]..chunk[chunk.len() - 1] + 1;
            if writer.write_all(&streams(range)).await.is_err() {
                break;
            }
        }
        writer
    });
    let mut flood = Outcome::default();
    flood.read(&mut reader, Duration::from_secs(5)).await;
    let ended = started.elapsed();
    let login = login_within(&relay, LOGIN_BOUND).await;
    let after = relay.memory().unwrap();
    drop(attack.await);
    report(
        "http2-stream-flood",
        &[
            ("first_streams", first.to_string()),
            ("first", format!("{held:?}")),
            ("then_streams", more.to_string()),
            ("then", format!("{flood:?}")),
            ("ended_after", format!("{ended:?}")),
            ("login_while_held", format!("{login_held:?}")),
            ("login", format!("{login:?}")),
            (
                "peak_growth_mib",
                format!("{:.1}", mib(after.hwm_kib.saturating_sub(before.rss_kib))),
            ),
        ],
    );
    // Every stream over the limit refused, none of the taken ones answered
    // (their bodies never came), nothing else.
    let taken = first as usize - held.refused;
    assert_eq!(taken, MAX_STREAMS, "{held:?}");
    assert_eq!((held.answered, held.reset, held.goaway), (0, 0, None));
    // The longer flood is cut short: the connection ends with a GOAWAY
    // long before the 10,000 streams are read.
    assert!(flood.goaway.is_some(), "{flood:?}");
    assert!(flood.refused < more as usize / 10, "{flood:?}");
    assert!(login_held.is_ok_and(|took| took < LOGIN_BOUND));
    assert!(login.is_ok_and(|took| took < LOGIN_BOUND));
    let growth = mib(after.hwm_kib.saturating_sub(before.rss_kib));
    assert!(growth < 50.0, "peak +{growth:.1} MiB");
}
