//! `cargo xtask bench --federation`: relay-to-relay throughput and latency.
//!
//! Two release relays per transport, A on `127.0.0.2` and B on
//! `127.0.0.3` (IP-only, so nothing is DKIM-signed or verified), A routing
//! B's domain statically: once with B's `/mxdeliv` port (HTTPS first), once
//! without it (SMTP with STARTTLS only). Senders submit on A, recipients
//! wait in IDLE on B. Reported per transport: accepted msg/s on A, the
//! time until B has stored everything (delivered msg/s), and at a paced
//! rate the latency from the `250` on A to the `EXISTS` on B.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::relay::{RelayOptions, RelayProcess};

use super::{BenchOptions, Book, PASSWORD, Quantiles, clear_latencies, paced, send_phase};

/// Limits high enough that the relays, not the rate limiter, are measured.
const LIMITS: &str = "[limits]\nmax_user_send_per_minute = 100000000\nmax_user_send_burst = 100000000\n\
     new_accounts_per_minute = 0\n";
/// Longest wait for B to have stored every accepted message.
const DRAIN: Duration = Duration::from_secs(300);

/// One result line per transport.
struct Figures {
    transport: &'static str,
    accepted_per_s: f64,
    delivered_per_s: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    measured: usize,
}

pub(super) async fn bench(binary: &Path, options: &BenchOptions) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    for (transport, https) in [("/mxdeliv", true), ("smtp", false)] {
        figures.push(scenario(binary, options, transport, https).await?);
    }
    println!(
        "relay to relay, {} B messages, {} senders on A, {} recipients on B:",
        options.size, options.senders, options.recipients
    );
    for f in &figures {
        println!(
            "  {:<9} accepted {:>6.0} msg/s, delivered {:>6.0} msg/s; at {} msg/s ({} messages) 250-to-EXISTS p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            f.transport,
            f.accepted_per_s,
            f.delivered_per_s,
            options.rate,
            f.measured,
            ms(f.p50),
            ms(f.p99),
            ms(f.max)
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn scenario(
    binary: &Path,
    options: &BenchOptions,
    transport: &'static str,
    https: bool,
) -> anyhow::Result<Figures> {
    let err = anyhow::Error::msg;
    let b_options = RelayOptions::on(Ipv4Addr::new(127, 0, 0, 3), LIMITS);
    let b = RelayProcess::start_with(binary, &b_options)
        .await
        .map_err(err)?;
    let a_options = RelayOptions::on(Ipv4Addr::new(127, 0, 0, 2), LIMITS);
    let mut a = RelayProcess::configure(binary, &a_options).map_err(err)?;
    a.append_config(&b.route(https)).map_err(err)?;
    a.launch().await.map_err(err)?;

    let book: Book = Arc::new((0..options.recipients).map(|_| Mutex::default()).collect());
    let recipients: Vec<String> = (0..options.recipients)
        .map(|n| b.address(&format!("rcpt{n:05}")))
        .collect();
    let tls_b = tls_config(&b.cert_path()).map_err(err)?;
    for (index, rcpt) in recipients.iter().enumerate() {
        let mut imap = Imap::login(b.addr(b.ports.imaps), &tls_b, rcpt, PASSWORD)
            .await
            .map_err(err)?;
        imap.command("SELECT INBOX").await.map_err(err)?;
        imap.idle().await.map_err(err)?;
        tokio::spawn(super::watch(imap, book.clone(), index));
    }
    let tls_a = tls_config(&a.cert_path()).map_err(err)?;
    let mut smtps = Vec::new();
    for n in 0..options.senders {
        let from = a.address(&format!("send{n:05}"));
        let smtp = Smtp::login(a.addr(a.ports.submissions), &tls_a, &from, PASSWORD)
            .await
            .map_err(err)?;
        smtps.push((from, smtp));
    }
    let recipients = Arc::new(recipients);

    let started = Instant::now();
    let per_sender = options.messages.div_ceil(options.senders);
    let smtps = send_phase(smtps, &recipients, &book, per_sender, None, options.size).await?;
    let accepted = started.elapsed();
    let total = per_sender * options.senders;
    drain(&book, total).await?;
    let delivered = started.elapsed();
    clear_latencies(&book)?;

    let (per_sender, interval) = paced(options);
    send_phase(
        smtps,
        &recipients,
        &book,
        per_sender,
        Some(interval),
        options.size,
    )
    .await?;
    drain(&book, total + per_sender * options.senders).await?;
    let q = Quantiles::of(&book);
    Ok(Figures {
        transport,
        accepted_per_s: total as f64 / accepted.as_secs_f64(),
        delivered_per_s: total as f64 / delivered.as_secs_f64(),
        p50: q.p50,
        p99: q.p99,
        max: q.max,
        measured: q.count,
    })
}

/// Waits until the recipients have seen `expected` messages in all.
async fn drain(book: &Book, expected: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + DRAIN;
    loop {
        let seen: usize = book
            .iter()
            .map(|e| e.lock().map(|a| a.seen).unwrap_or(0))
            .sum();
        if seen >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {seen} of {expected} messages reached relay B within {DRAIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
