//! HTTP/2 rapid reset on 443: one connection opening request after
//! request and cancelling each at once (`HEADERS` then `RST_STREAM`), as
//! in CVE-2023-44487, written as raw frames.
//!
//! Bound: the relay ends the connection (GOAWAY or close) before 10,000
//! resets, its CPU stays under 2 s, and a normal login meanwhile takes
//! under 1 s.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{attacker, login_within, relay, report, tls_from, tls_with_alpn};

const RESETS: u32 = 10_000;
const CPU_BOUND: Duration = Duration::from_secs(2);
const LOGIN_BOUND: Duration = Duration::from_secs(1);

/// One HTTP/2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
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
        out.extend(frame(4, 0, 0, &[]));
        let mut sent = 0u32;
        for n in 0..RESETS {
            let stream = 2 * n + 1;
            out.extend(frame(1, 0x5, stream, &headers));
            out.extend(frame(3, 0, stream, &8u32.to_be_bytes()));
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
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(20), reader.read(&mut chunk)).await {
                Ok(Ok(len @ 1..)) => buf.extend_from_slice(&chunk[..len]),
                Ok(_) => break "closed".to_owned(),
                Err(_) => break "still open after 20 s".to_owned(),
            }
            let mut at = 0;
            while buf.len() >= at + 9 {
                let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
                if buf.len() < at + 9 + len {
                    break;
                }
                if buf[at + 3] == 7 && len >= 8 {
                    let code = &buf[at + 9 + 4..at + 9 + 8];
                    let code = u32::from_be_bytes([code[0], code[1], code[2], code[3]]);
                    return format!("GOAWAY {code:#x}");
                }
                at += 9 + len;
            }
            buf.drain(..at);
        }
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
