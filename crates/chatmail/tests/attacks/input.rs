//! Hostile input on the SMTP ports and to the encryption gate: smuggled
//! ends of DATA, commands injected before a STARTTLS handshake, oversized
//! lines and messages, deep and wide MIME trees, broken armor. Each test
//! prints the reply every input got and what it cost the relay.

use std::time::{Duration, Instant};

use chatmail_testkit::client::{Smtp, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::mx::Mx;
use chatmail_testkit::relay::RelayProcess;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::{NORMAL, PASSWORD, VICTIM, attacker, baseline_memory, mib, relay, report};

/// The fake ends of DATA that SMTP smuggling relies on, each followed by
/// a second transaction that a lenient server would run.
const SMUGGLED_ENDS: [(&str, &[u8]); 6] = [
    ("lf-dot-lf", b"\n.\n"),
    ("crlf-dot-lf", b"\r\n.\n"),
    ("lf-dot-crlf", b"\n.\r\n"),
    ("cr-dot-cr", b"\r.\r"),
    ("crlf-dot-cr", b"\r\n.\r"),
    ("crlf-nul-dot-crlf", b"\r\n\0.\r\n"),
];

/// A message to the victim with `end` and a whole second transaction
/// inside it, then the real end of DATA.
fn smuggling(sender: &str, end: &[u8]) -> Vec<u8> {
    let mut data = encrypted(sender, VICTIM, 1024);
    data.extend_from_slice(end);
    data.extend_from_slice(
        format!(
            "MAIL FROM:<{sender}>\r\nRCPT TO:<{VICTIM}>\r\nDATA\r\n\
             From: <{sender}>\r\nTo: <{VICTIM}>\r\nSubject: smuggled\r\n\r\nclick here\r\n"
        )
        .as_bytes(),
    );
    data.extend_from_slice(b"\r\n.\r\n");
    data
}

/// Port 25 from an attacker address, after STARTTLS.
async fn mx(relay: &RelayProcess) -> Mx {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.smtp);
    let mut mx = Mx::connect_from(Some(attacker(60)), addr).await.unwrap();
    mx.starttls(&tls, addr).await.unwrap();
    mx
}

async fn submission(relay: &RelayProcess) -> Smtp {
    let tls = tls_config(&relay.cert_path()).unwrap();
    let addr = relay.addr(relay.ports.submissions);
    Smtp::login(addr, &tls, NORMAL, PASSWORD).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_ends_of_data_never_start_a_second_transaction() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let mx_sender = format!("peer@[{}]", attacker(60));
    let mut replies = Vec::new();
    let mut accepted = 0;
    for (name, end) in SMUGGLED_ENDS {
        // Submission on 465.
        let mut smtp = submission(&relay).await;
        smtp.begin_data(NORMAL, VICTIM).await.unwrap();
        smtp.write(&smuggling(NORMAL, end)).await.unwrap();
        let (code, text) = smtp.reply().await.unwrap();
        let (_, after) = smtp.command("NOOP").await.unwrap();
        assert_eq!(
            after, "2.0.0 OK",
            "{name} on 465: a smuggled command was answered"
        );
        accepted += usize::from(code == 250);
        replies.push(format!("{name}/465={code}"));
        // The MX on 25.
        let mut mx = mx(&relay).await;
        for (command, want) in [
            (format!("MAIL FROM:<{mx_sender}>"), 250),
            (format!("RCPT TO:<{VICTIM}>"), 250),
            ("DATA".to_owned(), 354),
        ] {
            let (got, text) = mx.command(&command).await.unwrap();
            assert_eq!(got, want, "{command}: {text}");
        }
        mx.write(&smuggling(&mx_sender, end)).await.unwrap();
        let (mx_code, mx_text) = mx.reply().await.unwrap();
        let (_, after) = mx.command("NOOP").await.unwrap();
        assert_eq!(
            after, "2.0.0 OK",
            "{name} on 25: a smuggled command was answered"
        );
        accepted += usize::from(mx_code == 250);
        replies.push(format!("{name}/25={mx_code}"));
        if end.contains(&0) {
            continue;
        }
        // Every bare CR or LF form is refused as such, on both ports.
        assert_eq!(
            (code, text.as_str()),
            (500, "5.5.2 Bare CR or LF not allowed"),
            "{name}"
        );
        assert_eq!(mx_code, 500, "{name} on 25: {mx_text}");
    }
    let stored = crate::common::stored(&relay).await;
    report(
        "smtp-smuggling",
        &[
            ("replies", replies.join(",")),
            ("accepted", accepted.to_string()),
            ("stored", stored.to_string()),
        ],
    );
    // At most the outer message of a NUL form, never a smuggled one.
    assert_eq!(stored, accepted, "a smuggled message was stored");
    assert!(
        accepted <= 2,
        "only the NUL forms may pass, as one message each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_before_the_starttls_handshake_are_discarded() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let tls = tls_config(&relay.cert_path()).unwrap();
    let mut results = Vec::new();
    for (port, name) in [(relay.ports.submission, "587"), (relay.ports.smtp, "25")] {
        let addr = relay.addr(port);
        let tcp = chatmail_testkit::client::tcp_from(Some(attacker(61)), addr)
            .await
            .unwrap();
        let mut plain = BufReader::new(tcp);
        let mut line = String::new();
        plain.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("220 "), "{line}");
        plain.get_mut().write_all(b"EHLO a.test\r\n").await.unwrap();
        loop {
            line.clear();
            plain.read_line(&mut line).await.unwrap();
            if line.starts_with("250 ") {
                break;
            }
        }
        // The injection: a command in the same packet as STARTTLS.
        plain
            .get_mut()
            .write_all(b"STARTTLS\r\nMAIL FROM:<injected@[127.0.1.61]>\r\n")
            .await
            .unwrap();
        line.clear();
        plain.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("220 "), "STARTTLS: {line}");
        let name_ip = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name_ip, plain.into_inner())
            .await
            .unwrap();
        let mut stream = BufReader::new(stream);
        // The first reply over TLS must answer this EHLO, not the MAIL
        // sent in the clear.
        stream
            .get_mut()
            .write_all(b"EHLO a.test\r\n")
            .await
            .unwrap();
        let mut first = String::new();
        stream.read_line(&mut first).await.unwrap();
        assert!(
            first.starts_with("250-") || first.starts_with("250 "),
            "{name}: {first}"
        );
        assert!(
            !first.contains("2.1.0"),
            "{name}: the injected MAIL was answered: {first}"
        );
        results.push(format!("{name}={}", first.trim_end()));
    }
    report(
        "starttls-injection",
        &[("first_reply_over_tls", results.join(","))],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_lines_and_messages_get_their_reply_and_cost_little() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("max_message_size = 1048576", "").await;
    let before = baseline_memory(&relay).await;
    let mut smtp = submission(&relay).await;
    // A 16 MiB command line.
    let mut line = vec![b'A'; 16 << 20];
    line.extend_from_slice(b"\r\n");
    smtp.write(&line).await.unwrap();
    let (line_code, line_text) = smtp.reply().await.unwrap();
    let (_, after) = smtp.command("NOOP").await.unwrap();
    assert_eq!(
        (line_code, line_text.as_str()),
        (500, "5.5.2 Line too long")
    );
    assert_eq!(after, "2.0.0 OK", "the session goes on after a long line");
    // A declared size over the limit, then an undeclared one.
    let (size_code, size_text) = smtp
        .command(&format!("MAIL FROM:<{NORMAL}> SIZE=2097152"))
        .await
        .unwrap();
    assert_eq!(
        (size_code, size_text.as_str()),
        (552, "5.3.4 Message exceeds maximum size")
    );
    let big = encrypted(NORMAL, VICTIM, 4 << 20);
    let (big_code, big_text) = smtp.send(NORMAL, &[VICTIM], &big).await.unwrap();
    assert_eq!(
        (big_code, big_text.as_str()),
        (552, "5.3.4 Message exceeds maximum size")
    );
    // A 512 KiB header line inside a message under the size limit.
    let header = format!("X-Long: {}\r\n", "h".repeat(512 << 10));
    let message = [header.as_bytes(), &encrypted(NORMAL, VICTIM, 2048)].concat();
    let (header_code, header_text) = smtp.send(NORMAL, &[VICTIM], &message).await.unwrap();
    let memory = relay.memory().unwrap();
    report(
        "oversized-input",
        &[
            ("line_16MiB", format!("{line_code} {line_text}")),
            ("declared_2MiB", format!("{size_code} {size_text}")),
            ("sent_4MiB", format!("{big_code} {big_text}")),
            ("header_512KiB", format!("{header_code} {header_text}")),
            (
                "peak_mib",
                format!("{:+.1}", mib(memory.hwm_kib) - mib(before.rss_kib)),
            ),
        ],
    );
    assert!(
        memory.hwm_kib < before.rss_kib + 40 * 1024,
        "peak {:.1} MiB over a baseline of {:.1} MiB",
        mib(memory.hwm_kib),
        mib(before.rss_kib)
    );
    // Refused, or taken whole: never half a message.
    assert_eq!(
        crate::common::stored(&relay).await,
        usize::from(header_code == 250)
    );
}

/// `multipart/encrypted` shaped, with `depth` nested multiparts or
/// `width` parts in its first part.
fn mime_tree(depth: usize, width: usize) -> Vec<u8> {
    let mut body = String::new();
    for level in 0..depth {
        body.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{level}\"\r\n\r\n--b{level}\r\n"
        ));
    }
    body.push_str("Content-Type: text/plain\r\n\r\nx\r\n");
    for level in (0..depth).rev() {
        body.push_str(&format!("--b{level}--\r\n"));
    }
    for part in 0..width {
        body.push_str(&format!(
            "--w\r\nContent-Type: text/plain\r\n\r\npart {part}\r\n"
        ));
    }
    if width > 0 {
        body.push_str("--w--\r\n");
    }
    let inner = if width > 0 {
        "Content-Type: multipart/mixed; boundary=\"w\"\r\n\r\n"
    } else {
        ""
    };
    format!(
        "From: <{NORMAL}>\r\nTo: <{VICTIM}>\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"e\"\r\n\r\n\
         --e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\
         --e\r\n{inner}{body}--e--\r\n"
    )
    .into_bytes()
}

/// An armored OpenPGP message whose packets are noise.
fn broken_armor() -> Vec<u8> {
    let noise: String = (0..600u32)
        .map(|i| {
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(i * 7 % 64) as usize],
            )
        })
        .collect();
    let lines: Vec<&str> = noise
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: <{NORMAL}>\r\nTo: <{VICTIM}>\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"e\"\r\n\r\n\
         --e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\
         --e\r\nContent-Type: application/octet-stream\r\n\r\n\
         -----BEGIN PGP MESSAGE-----\r\n\r\n{}\r\n=AAAA\r\n-----END PGP MESSAGE-----\r\n--e--\r\n",
        lines.join("\r\n")
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_wide_mime_and_broken_armor_are_refused_quickly() {
    let _serial = crate::common::SERIAL.lock().await;
    let relay = relay("", "").await;
    let before = baseline_memory(&relay).await;
    let mut smtp = submission(&relay).await;
    let mut figures = Vec::new();
    for (name, message) in [
        ("nested-2000", mime_tree(2000, 0)),
        ("parts-20000", mime_tree(0, 20_000)),
        ("broken-armor", broken_armor()),
    ] {
        let started = Instant::now();
        let (code, text) = smtp.send(NORMAL, &[VICTIM], &message).await.unwrap();
        let took = started.elapsed();
        assert_eq!(
            (code, text.as_str()),
            (523, "5.7.1 Encryption Needed: Invalid Unencrypted Mail"),
            "{name}"
        );
        assert!(took < Duration::from_secs(2), "{name} took {took:?}");
        figures.push((
            name,
            format!("{code}/{}ms/{}KiB", took.as_millis(), message.len() / 1024),
        ));
    }
    let memory = relay.memory().unwrap();
    let peak = mib(memory.hwm_kib) - mib(before.rss_kib);
    figures.push(("peak_mib", format!("{peak:+.1}")));
    report(
        "mime-and-armor",
        &figures
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<_>>(),
    );
    assert!(peak < 40.0, "peak {peak:+.1} MiB");
    assert_eq!(crate::common::stored(&relay).await, 0);
    // The relay still takes a normal message afterwards.
    let normal = encrypted(NORMAL, VICTIM, 2048);
    assert_eq!(smtp.send(NORMAL, &[VICTIM], &normal).await.unwrap().0, 250);
}
