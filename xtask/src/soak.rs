//! `cargo xtask soak --minutes N`: a release relay under steady load for a
//! long time, sampled every 10 s.
//!
//! The load: `--idle` IMAP connections in IDLE over TLS that receive
//! nothing (spread over source addresses as in `bench --idle`), recipients
//! idling on their INBOX, and senders submitting 4 KiB encrypted-shaped
//! messages over implicit TLS at half the capacity measured by a burst at
//! the start (or `--rate`). A cleaner per recipient expunges what arrived
//! every 10 s, counting it, so the store stays small and every accepted
//! message is accounted for; a probe pair measures 250-to-EXISTS latency
//! one message at a time, ten times a second.
//!
//! Each sample prints the relay's VmRSS, its open file descriptors, the
//! messages accepted and refused, connection errors, idle connections
//! still open, and the probe's latency quantiles over the window. The run
//! fails (non-zero exit) when a message was refused, lost or stored twice,
//! a connection broke, or an idle connection was closed.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::relay::RelayProcess;

use crate::bench::PASSWORD;
use crate::bench::idle::{Target, check_fd_limit, open_many, rss_kib};

/// Options of `cargo xtask soak`.
#[derive(clap::Args)]
pub struct SoakOptions {
    /// Length of the steady phase in minutes.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Idle IMAP connections held open during the whole run.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Concurrent sender connections.
    #[arg(long, default_value_t = 16)]
    senders: usize,
    /// Recipients (each with an IDLE connection and a cleaner).
    #[arg(long, default_value_t = 16)]
    recipients: usize,
    /// Steady rate in messages per second (default: half the capacity the
    /// opening burst measures).
    #[arg(long)]
    rate: Option<f64>,
    /// Message size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// The relay binary (default: build the release binary).
    #[arg(long)]
    madmail: Option<PathBuf>,
}

/// Interval between samples and between cleaner passes.
const SAMPLE: Duration = Duration::from_secs(10);
/// Length of the opening burst that measures capacity.
const BURST: Duration = Duration::from_secs(15);
/// Probe messages per second.
const PROBE_RATE: u32 = 10;
/// Longest a probe message may take to show up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters shared by the load tasks and the sampler.
#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    cleaned: AtomicU64,
    idle_closed: AtomicU64,
    /// Probe latencies of the current window.
    window: Mutex<Vec<Duration>>,
    /// Every probe latency of the steady phase.
    all: Mutex<Vec<Duration>>,
}

impl Counters {
    fn record_latency(&self, latency: Duration) {
        if let Ok(mut window) = self.window.lock() {
            window.push(latency);
        }
        if let Ok(mut all) = self.all.lock() {
            all.push(latency);
        }
    }

    fn take_window(&self) -> Vec<Duration> {
        self.window
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default()
    }
}

/// One sample of the relay.
struct Sample {
    rss_kib: u64,
    fds: usize,
}

pub fn run(root: &Path, options: SoakOptions) -> anyhow::Result<()> {
    let binary = crate::bench::relay_binary(root, options.madmail.as_deref())?;
    crate::bench::runtime()?.block_on(soak(&binary, &options))
}

/// Logs `user` in over IMAPS and selects INBOX.
async fn inbox(
    addr: std::net::SocketAddr,
    tls: &Arc<rustls::ClientConfig>,
    user: &str,
) -> anyhow::Result<Imap> {
    let mut imap = Imap::login(addr, tls, user, PASSWORD)
        .await
        .map_err(anyhow::Error::msg)?;
    imap.command("SELECT INBOX")
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(imap)
}

async fn soak(binary: &Path, options: &SoakOptions) -> anyhow::Result<()> {
    check_fd_limit(options.idle)?;
    let limits = format!(
        "[limits]\nmax_user_send_per_minute = 100000000\nmax_user_send_burst = 100000000\n\
         new_accounts_per_minute = 0\nmax_imap_connections = {}\n",
        (options.idle + 1000).max(5000)
    );
    let relay = RelayProcess::start(binary, &limits)
        .await
        .map_err(anyhow::Error::msg)?;
    let pid = relay.pid().context("relay not running")?;
    let tls = tls_config(&relay.cert_path()).map_err(anyhow::Error::msg)?;
    let counters = Arc::new(Counters::default());
    let mut tasks = JoinSet::new();

    let target = Target {
        addr: relay.addr(relay.ports.imaps),
        connector: TlsConnector::from(tls.clone()),
        compress: false,
    };
    let idle_users: Vec<String> = (0..8)
        .map(|a| relay.address(&format!("idle{a:05}")))
        .collect();
    let opened = Instant::now();
    let streams = open_many(&target, &idle_users, options.idle, Ipv4Addr::UNSPECIFIED).await?;
    println!(
        "soak: {} idle IMAP connections open in {:.1} s",
        streams.len(),
        opened.elapsed().as_secs_f64()
    );
    for mut stream in streams {
        let counters = counters.clone();
        tasks.spawn(async move {
            let mut buf = [0u8; 512];
            // Keepalives only; a read of 0 or an error is a closed session.
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            counters.idle_closed.fetch_add(1, Ordering::Relaxed);
        });
    }

    let imaps = relay.addr(relay.ports.imaps);
    let recipients: Arc<Vec<String>> = Arc::new(
        (0..options.recipients.max(1))
            .map(|n| relay.address(&format!("soak{n:05}")))
            .collect(),
    );
    let mut cleaners = Vec::new();
    for rcpt in recipients.iter() {
        let mut watcher = inbox(imaps, &tls, rcpt).await?;
        watcher.idle().await.map_err(anyhow::Error::msg)?;
        let counters = counters.clone();
        tasks.spawn(async move {
            while let Ok(Some(_)) = watcher.next_line().await {}
            counters.errors.fetch_add(1, Ordering::Relaxed);
        });
        cleaners.push(inbox(imaps, &tls, rcpt).await?);
    }
    let cleaners = Arc::new(tokio::sync::Mutex::new(cleaners));

    let submissions = relay.addr(relay.ports.submissions);
    let mut smtps = Vec::new();
    for n in 0..options.senders.max(1) {
        let from = relay.address(&format!("sndr{n:05}"));
        let smtp = Smtp::login(submissions, &tls, &from, PASSWORD)
            .await
            .map_err(anyhow::Error::msg)?;
        smtps.push((from, smtp));
    }

    // The opening burst: capacity with this load around it.
    let burst_end = Instant::now() + BURST;
    let smtps = send_until(smtps, &recipients, &counters, burst_end, None, options.size).await?;
    let burst = counters.accepted.load(Ordering::Relaxed);
    let capacity = burst as f64 / BURST.as_secs_f64();
    let rate = options.rate.unwrap_or(capacity / 2.0);
    println!(
        "soak: capacity {capacity:.0} msg/s ({burst} in {} s); steady rate {rate:.0} msg/s for {} min",
        BURST.as_secs(),
        options.minutes
    );
    clean_all(&cleaners, &counters).await?;

    let steady_end = Instant::now() + Duration::from_secs(options.minutes * 60);
    let probe = Probe {
        from: relay.address("probe0001"),
        to: relay.address("probe0002"),
    };
    let mut probe_sender = Smtp::login(submissions, &tls, &probe.from, PASSWORD)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut probe_reader = inbox(imaps, &tls, &probe.to).await?;
    let probe_counters = counters.clone();
    let probe_size = options.size;
    let probe_task = tokio::spawn(async move {
        run_probe(
            &probe,
            &mut probe_sender,
            &mut probe_reader,
            &probe_counters,
            steady_end,
            probe_size,
        )
        .await
    });
    let interval = Duration::from_secs_f64(smtps.len() as f64 / rate.max(0.1));
    let senders = {
        let (recipients, counters, size) = (recipients.clone(), counters.clone(), options.size);
        tokio::spawn(async move {
            send_until(
                smtps,
                &recipients,
                &counters,
                steady_end,
                Some(interval),
                size,
            )
            .await
        })
    };

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE, SAMPLE);
    let mut last_accepted = counters.accepted.load(Ordering::Relaxed);
    println!(
        "{:>6} {:>10} {:>6} {:>9} {:>7} {:>7} {:>6} {:>6} {:>9} {:>9} {:>9}",
        "time",
        "RSS MiB",
        "fds",
        "accepted",
        "msg/s",
        "refused",
        "errors",
        "idle",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    while Instant::now() < steady_end {
        ticker.tick().await;
        clean_all(&cleaners, &counters).await?;
        ensure!(relay.is_running(), "the relay exited during the soak");
        let sample = Sample {
            rss_kib: rss_kib(pid)?,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
        };
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let q = Quantiles::of(counters.take_window());
        println!(
            "{:>5}s {:>10.1} {:>6} {:>9} {:>7.0} {:>7} {:>6} {:>6} {:>9.2} {:>9.2} {:>9.2}",
            started.elapsed().as_secs(),
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            accepted,
            (accepted - last_accepted) as f64 / SAMPLE.as_secs_f64(),
            counters.refused.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
            options.idle as u64 - counters.idle_closed.load(Ordering::Relaxed),
            q.p50_ms,
            q.p99_ms,
            q.max_ms,
        );
        last_accepted = accepted;
        samples.push(sample);
    }
    senders.await??;
    probe_task.await??;
    // Local deliveries are stored before the 250: one more pass finds
    // everything that is left.
    clean_all(&cleaners, &counters).await?;
    summary(&counters, &samples, started.elapsed(), rate, capacity)
}

/// Prints the result and fails when anything went wrong.
fn summary(
    counters: &Counters,
    samples: &[Sample],
    elapsed: Duration,
    rate: f64,
    capacity: f64,
) -> anyhow::Result<()> {
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let cleaned = counters.cleaned.load(Ordering::Relaxed);
    let probes = counters.all.lock().map(|a| a.len()).unwrap_or(0) as u64;
    let lost = accepted.saturating_sub(cleaned);
    let extra = cleaned.saturating_sub(accepted);
    let refused = counters.refused.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let idle_closed = counters.idle_closed.load(Ordering::Relaxed);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let tenth = (samples.len() / 10).max(1);
    let mean =
        |part: &[Sample]| part.iter().map(|s| s.rss_kib).sum::<u64>() / part.len().max(1) as u64;
    let first = mean(&samples[..tenth.min(samples.len())]);
    let last = mean(&samples[samples.len().saturating_sub(tenth)..]);
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let fds_min = samples.iter().map(|s| s.fds).min().unwrap_or(0);
    let fds_max = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let q = Quantiles::of(counters.all.lock().map(|a| a.clone()).unwrap_or_default());
    println!(
        "soak: {:.1} min at {rate:.0} msg/s (capacity {capacity:.0}): {accepted} accepted \
         (probe {probes} of them), {cleaned} read back and expunged, {lost} lost, \
         {extra} stored twice, {refused} refused, {errors} connection errors, {idle_closed} idle connections closed",
        elapsed.as_secs_f64() / 60.0
    );
    println!(
        "soak: RSS {:.1} MiB in the first tenth, {:.1} MiB in the last, peak {:.1} MiB; \
         fds {fds_min} to {fds_max}; probe 250-to-EXISTS p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        mib(first),
        mib(last),
        mib(peak),
        q.p50_ms,
        q.p99_ms,
        q.max_ms
    );
    ensure!(
        lost == 0 && extra == 0 && refused == 0 && errors == 0 && idle_closed == 0,
        "the soak saw failures"
    );
    Ok(())
}

/// Senders submit until `end`, each once per `interval` if given; returns
/// the connections. A broken connection counts as an error and ends its
/// sender.
async fn send_until(
    smtps: Vec<(String, Smtp)>,
    recipients: &Arc<Vec<String>>,
    counters: &Arc<Counters>,
    end: Instant,
    interval: Option<Duration>,
    size: usize,
) -> anyhow::Result<Vec<(String, Smtp)>> {
    let mut tasks = Vec::new();
    let count = smtps.len();
    for (n, (from, mut smtp)) in smtps.into_iter().enumerate() {
        let (recipients, counters) = (recipients.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticker = interval.map(|i| {
                let start = tokio::time::Instant::now() + i.mul_f64(n as f64 / count as f64);
                let mut ticker = tokio::time::interval_at(start, i);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            });
            let mut k = 0usize;
            while Instant::now() < end {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                let rcpt = &recipients[(n + k * 7) % recipients.len()];
                k += 1;
                let message = encrypted(&from, rcpt, size);
                match smtp.send(&from, &[rcpt.as_str()], &message).await {
                    Ok((250, _)) => {
                        counters.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((code, text)) => {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        eprintln!("{from}: {code} {text}");
                    }
                    Err(e) => return Err(anyhow::anyhow!("{from}: {e}")),
                }
            }
            Ok::<_, anyhow::Error>((from, smtp))
        }));
    }
    let mut smtps = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(pair) => smtps.push(pair),
            Err(e) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: sender stopped: {e}");
            }
        }
    }
    ensure!(!smtps.is_empty(), "every sender failed");
    Ok(smtps)
}

/// One cleaner pass per recipient.
async fn clean_all(
    cleaners: &tokio::sync::Mutex<Vec<Imap>>,
    counters: &Counters,
) -> anyhow::Result<()> {
    for cleaner in cleaners.lock().await.iter_mut() {
        clean(cleaner, counters).await?;
    }
    Ok(())
}

/// Counts what the selected INBOX holds and expunges it by UID.
async fn clean(imap: &mut Imap, counters: &Counters) -> anyhow::Result<()> {
    let found = imap
        .command("UID SEARCH ALL")
        .await
        .map_err(anyhow::Error::msg)?;
    let uids: Vec<u64> = found
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().filter_map(|u| u.parse().ok()))
        .collect();
    let (Some(low), Some(high)) = (uids.iter().min(), uids.iter().max()) else {
        return Ok(());
    };
    // New mail has higher UIDs; those between are gone already.
    let set = format!("{low}:{high}");
    imap.command(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))
        .await
        .map_err(anyhow::Error::msg)?;
    let expunged = imap
        .command(&format!("UID EXPUNGE {set}"))
        .await
        .map_err(anyhow::Error::msg)?;
    let count = expunged
        .iter()
        .filter(|l| l.ends_with(" EXPUNGE\r\n"))
        .count();
    ensure!(
        count == uids.len(),
        "expunged {count} of the {} messages found",
        uids.len()
    );
    counters.cleaned.fetch_add(count as u64, Ordering::Relaxed);
    Ok(())
}

/// The latency probe's two addresses.
struct Probe {
    from: String,
    to: String,
}

/// Sends one message at a time to an idling reader and records the time
/// from reading `250` to reading its `* N EXISTS`; cleans up every 1,000.
async fn run_probe(
    probe: &Probe,
    sender: &mut Smtp,
    reader: &mut Imap,
    counters: &Counters,
    end: Instant,
    size: usize,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / PROBE_RATE);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reader.idle().await.map_err(anyhow::Error::msg)?;
    let mut held = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        let message = encrypted(&probe.from, &probe.to, size);
        let reply = sender
            .send(&probe.from, &[probe.to.as_str()], &message)
            .await
            .map_err(anyhow::Error::msg)?;
        ensure!(reply.0 == 250, "probe: {} {}", reply.0, reply.1);
        let acked = Instant::now();
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::time::timeout(PROBE_TIMEOUT, reader.wait_exists())
            .await
            .context("probe: no EXISTS within 10 s")?
            .map_err(anyhow::Error::msg)?;
        counters.record_latency(acked.elapsed());
        held += 1;
        if held == 1000 {
            reader.done().await.map_err(anyhow::Error::msg)?;
            clean(reader, counters).await?;
            held = 0;
            reader.idle().await.map_err(anyhow::Error::msg)?;
        }
    }
    reader.done().await.map_err(anyhow::Error::msg)?;
    clean(reader, counters).await
}

/// Latency quantiles in milliseconds.
struct Quantiles {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Quantiles {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Self {
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
        }
    }
}
