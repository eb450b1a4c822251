//! `cargo xtask bench`: submission throughput and 250-to-EXISTS latency
//! against a release `madmail` on loopback.
//!
//! Recipients log in over IMAP and wait in IDLE; sender connections submit
//! 4 KiB encrypted-shaped messages over implicit TLS. Phase one sends as
//! fast as the senders can (accepted msg/s); phase two paces a fixed rate
//! and measures, for every message, the time from the sender reading `250`
//! to the recipient reading the `* N EXISTS` that covers it. Peak RSS is
//! the relay's VmHWM.
//!
//! With `--federation`, the same two phases run between two relays (module
//! `federation`): submitted on A, delivered by A's queue to B over
//! `/mxdeliv` and, in a second run, over SMTP, and read on B.
//!
//! With `--idle`, the relay's memory per idle IMAP connection in IDLE over
//! TLS, without and with COMPRESS=DEFLATE (module `idle`).
//!
//! With `--target`, the same two phases run against a server already
//! running, madmail or another one, with the accounts of a credentials
//! file (module `target`); the peak RSS is then that of `--pid`, if given.
//!
//! With `--peers`, the same load runs against madmail and then against
//! Postfix + Dovecot set up as the chatmail relay runs them (module
//! `peers`), and the figures are printed side by side with their ratios.

mod federation;
pub(crate) mod idle;
mod peers;
mod target;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::relay::RelayProcess;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchOptions {
    /// Concurrent sender connections.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Recipients waiting in IDLE.
    #[arg(long, default_value_t = 64)]
    recipients: usize,
    /// Messages in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Rate of the latency phase, messages per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Duration of the latency phase, seconds.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Relay to relay instead: senders on relay A, recipients on relay B,
    /// over `/mxdeliv` and over SMTP, side by side.
    #[arg(long)]
    federation: bool,
    /// Memory per idle IMAP connection instead (IDLE over TLS, without and
    /// with COMPRESS=DEFLATE).
    #[arg(long)]
    idle: bool,
    /// Idle connections opened by `--idle`.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Accounts the `--idle` connections log in as (round robin).
    #[arg(long, default_value_t = 8)]
    accounts: usize,
    /// The relay binary (default: build the release binary).
    #[arg(long)]
    madmail: Option<PathBuf>,
    /// A server already running instead of a relay started by the bench:
    /// `IP:SMTPS_PORT,IMAPS_PORT` (implicit TLS on both).
    #[arg(long, requires_all = ["credentials", "ca"])]
    target: Option<target::Target>,
    /// With `--target`: one `address password` per line, the senders first,
    /// then the recipients.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// With `--target`: the PEM certificate (or CA) the target's TLS
    /// certificate chains to; it must name the target's IP address.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// With `--target`: the server's process, whose peak RSS is reported.
    #[arg(long)]
    pid: Option<u32>,
    /// Madmail and then Postfix + Dovecot (installed from Debian's packages
    /// if missing) under the identical load, side by side.
    #[arg(long, conflicts_with_all = ["target", "federation", "idle"])]
    peers: bool,
}

pub(crate) const PASSWORD: &str = "bench-password-1";

/// Per recipient: when each 250 was read, and how many of them an EXISTS
/// has covered so far.
#[derive(Default)]
struct Arrivals {
    acked: Vec<Instant>,
    latencies: Vec<Duration>,
    seen: usize,
    /// When the last EXISTS arrived.
    last_seen: Option<Instant>,
}

type Book = Arc<Vec<Mutex<Arrivals>>>;

/// `given`, or the release binary, built first.
pub(crate) fn relay_binary(
    root: &std::path::Path,
    given: Option<&std::path::Path>,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    crate::cargo(root, &["build", "--release", "-p", "chatmail", "--locked"])?;
    Ok(crate::target_dir(root).join("release/madmail"))
}

/// The load generator's runtime.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn run(root: &std::path::Path, options: BenchOptions) -> anyhow::Result<()> {
    if options.target.is_some() {
        return runtime()?.block_on(bench_target(&options));
    }
    let binary = relay_binary(root, options.madmail.as_deref())?;
    let runtime = runtime()?;
    if options.peers {
        peers::install()?;
        return runtime.block_on(side_by_side(binary, &options));
    }
    if options.federation {
        return runtime.block_on(federation::bench(&binary, &options));
    }
    if options.idle {
        return runtime.block_on(idle::bench(&binary, &options));
    }
    runtime.block_on(bench(binary, options))
}

/// The bench against a relay it starts (accounts created on first login).
async fn bench(binary: PathBuf, options: BenchOptions) -> anyhow::Result<()> {
    madmail(&binary, &options).await.map(drop)
}

/// The load against a madmail relay the bench starts.
async fn madmail(binary: &std::path::Path, options: &BenchOptions) -> anyhow::Result<Figures> {
    let limits = "[limits]\nmax_user_send_per_minute = 100000000\nmax_user_send_burst = 100000000\n\
         new_accounts_per_minute = 0\n";
    let relay = RelayProcess::start(binary, limits)
        .await
        .map_err(anyhow::Error::msg)?;
    let tls = tls_config(&relay.cert_path()).map_err(anyhow::Error::msg)?;
    let pids: Vec<u32> = relay.pid().into_iter().collect();
    let account = |address: String| target::Account {
        address,
        password: PASSWORD.to_owned(),
    };
    let load = Load {
        target: target::Target {
            submissions: relay.addr(relay.ports.submissions),
            imaps: relay.addr(relay.ports.imaps),
        },
        tls,
        senders: (0..options.senders)
            .map(|n| account(format!("send{n:05}@[127.0.0.1]")))
            .collect(),
        recipients: (0..options.recipients)
            .map(|n| account(format!("rcpt{n:05}@[127.0.0.1]")))
            .collect(),
        processes: Box::new(move || pids.clone()),
    };
    run_load(load, options).await
}

/// Madmail, then Postfix + Dovecot, under the same load; one table.
async fn side_by_side(binary: PathBuf, options: &BenchOptions) -> anyhow::Result<()> {
    println!("== madmail ({})", load_average());
    let ours = madmail(&binary, options).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let root = std::env::temp_dir().join("madmail-bench-peers");
    let accounts = peers::accounts(options.senders + options.recipients, PASSWORD);
    let peer = peers::Peers::start(&root, &accounts).await?;
    println!("== Postfix + Dovecot ({})", load_average());
    let mut senders = accounts;
    let recipients = senders.split_off(options.senders);
    let load = Load {
        target: peers::Peers::target(),
        tls: tls_config(&peer.certificate()).map_err(anyhow::Error::msg)?,
        senders,
        recipients,
        processes: Box::new(|| peer.processes()),
    };
    let theirs = run_load(load, options).await;
    peer.stop().await;
    let theirs = theirs?;

    println!(
        "\n| server | accepted msg/s | delivered msg/s | server CPU per message | \
         250→EXISTS p50 | p99 | memory (PSS) under load |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, f) in [("madmail", &ours), ("Postfix + Dovecot", &theirs)] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} MiB |",
            f.throughput,
            f.delivered,
            f.cpu_per_message * 1e3,
            f.latency.p50.as_secs_f64() * 1e3,
            f.latency.p99.as_secs_f64() * 1e3,
            f.rss_kib as f64 / 1024.0
        );
    }
    println!(
        "madmail against Postfix + Dovecot: {:.1}x the accepted rate, {:.1}x the delivered rate, \
         {:.1}x less CPU per message, {:.0}x lower p50 latency, {:.1}x less memory",
        ours.throughput / theirs.throughput,
        ours.delivered / theirs.delivered,
        theirs.cpu_per_message / ours.cpu_per_message,
        theirs.latency.p50.as_secs_f64() / ours.latency.p50.as_secs_f64(),
        theirs.rss_kib as f64 / ours.rss_kib as f64,
    );
    Ok(())
}

/// What one load measured.
struct Figures {
    /// Accepted messages per second in the throughput phase.
    throughput: f64,
    /// Messages per second of the throughput phase, counted from its start
    /// until the last of them was announced in IDLE.
    delivered: f64,
    /// CPU seconds the machine spent per accepted message in the
    /// throughput phase, the load generator's own share taken out.
    cpu_per_message: f64,
    latency: Quantiles,
    /// Memory of the server's processes after the throughput phase: their
    /// summed proportional set size.
    rss_kib: u64,
}

/// `/proc/loadavg`'s first three fields, for the record beside a figure.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    format!("load average {}", fields.join(" "))
}

/// Busy CPU ticks of the whole machine and of this process.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy = stat
        .lines()
        .next()
        .map(|line| {
            line.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system idle iowait irq softirq steal: idle and
                // iowait are not busy.
                .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let own = stat_fields(&own)
        .iter()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    (busy, own)
}

/// The fields of a `/proc/<pid>/stat` line after the parenthesised command
/// name (which may itself hold spaces): the state first, then the parent.
pub(crate) fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The `name` line of `/proc/<pid>/<file>` (a size in kB), summed over
/// `pids`. With `smaps_rollup` and `Pss:`, pages shared between the
/// processes count once in the sum.
fn summed_kib(pids: &[u32], file: &str, name: &str) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Waits until every recipient has seen an EXISTS for each message it was
/// sent, at most `limit`; returns when the last one arrived, or `None`.
async fn drained(book: &Book, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        let done = book.iter().all(|entry| {
            entry
                .lock()
                .map(|a| a.seen >= a.acked.len())
                .unwrap_or(true)
        });
        if done {
            return book
                .iter()
                .filter_map(|entry| entry.lock().ok().and_then(|a| a.last_seen))
                .max();
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The bench against `--target`.
async fn bench_target(options: &BenchOptions) -> anyhow::Result<()> {
    let (Some(target), Some(credentials), Some(ca)) =
        (options.target, &options.credentials, &options.ca)
    else {
        anyhow::bail!("--target needs --credentials and --ca");
    };
    let (senders, recipients) =
        target::read_accounts(credentials, options.senders, options.recipients)?;
    let tls = tls_config(ca).map_err(anyhow::Error::msg)?;
    let pids: Vec<u32> = options.pid.into_iter().collect();
    let load = Load {
        target,
        tls,
        senders,
        recipients,
        processes: Box::new(move || pids.clone()),
    };
    run_load(load, options).await.map(drop)
}

/// The server under load and the accounts that load it.
struct Load<'a> {
    target: target::Target,
    tls: Arc<rustls::ClientConfig>,
    senders: Vec<target::Account>,
    recipients: Vec<target::Account>,
    /// The server's processes now, for their memory.
    processes: Box<dyn Fn() -> Vec<u32> + 'a>,
}

/// Both phases against `load`.
async fn run_load(load: Load<'_>, options: &BenchOptions) -> anyhow::Result<Figures> {
    let tls = &load.tls;
    let recipients: Vec<String> = load.recipients.iter().map(|r| r.address.clone()).collect();
    let book: Book = Arc::new((0..recipients.len()).map(|_| Mutex::default()).collect());
    for (index, rcpt) in load.recipients.iter().enumerate() {
        let mut imap = Imap::login(load.target.imaps, tls, &rcpt.address, &rcpt.password)
            .await
            .map_err(anyhow::Error::msg)?;
        imap.command("SELECT INBOX")
            .await
            .map_err(anyhow::Error::msg)?;
        imap.idle().await.map_err(anyhow::Error::msg)?;
        tokio::spawn(watch(imap, book.clone(), index));
    }
    let mut smtps = Vec::new();
    for sender in &load.senders {
        let (from, password) = (&sender.address, &sender.password);
        let smtp = Smtp::login(load.target.submissions, tls, from, password)
            .await
            .map_err(anyhow::Error::msg)?;
        smtps.push((from.clone(), smtp));
    }
    let recipients = Arc::new(recipients);

    let started = Instant::now();
    let ticks = cpu_ticks();
    let per_sender = options.messages.div_ceil(options.senders);
    let smtps = send_phase(smtps, &recipients, &book, per_sender, None, options.size).await?;
    let elapsed = started.elapsed();
    let after = cpu_ticks();
    let rss_kib = summed_kib(&(load.processes)(), "smaps_rollup", "Pss:");
    let accepted = per_sender * options.senders;
    let throughput = accepted as f64 / elapsed.as_secs_f64();
    let server_ticks = (after.0 - ticks.0).saturating_sub(after.1 - ticks.1);
    let cpu_per_message = server_ticks as f64 / USER_HZ / accepted as f64;
    println!(
        "throughput: {accepted} messages of {} B from {} connections in {:.2} s = {throughput:.0} msg/s, \
         server CPU {:.2} ms per message",
        options.size,
        options.senders,
        elapsed.as_secs_f64(),
        cpu_per_message * 1e3
    );
    let delivered = match drained(&book, Duration::from_secs(300)).await {
        Some(last) => accepted as f64 / last.duration_since(started).as_secs_f64(),
        None => anyhow::bail!("the throughput phase was not delivered to IDLE within 300 s"),
    };
    println!("delivered: every message seen in IDLE, {delivered:.0} msg/s end to end");
    tokio::time::sleep(Duration::from_secs(1)).await;
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let q = Quantiles::of(&book);
    println!(
        "latency at {} msg/s: {} messages, 250-to-EXISTS p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        options.rate,
        q.count,
        q.p50.as_secs_f64() * 1e3,
        q.p99.as_secs_f64() * 1e3,
        q.max.as_secs_f64() * 1e3
    );
    let processes = (load.processes)();
    if !processes.is_empty() {
        let hwm = summed_kib(&processes, "status", "VmHWM:");
        println!(
            "server peak RSS: {hwm} kB (VmHWM of the {} process(es) still running, \
             summed: pages they share count in each)",
            processes.len()
        );
    }
    Ok(Figures {
        throughput,
        delivered,
        cpu_per_message,
        latency: q,
        rss_kib,
    })
}

/// The ticks per second in which `/proc` counts CPU time (`USER_HZ`, 100
/// on every Linux this runs on).
const USER_HZ: f64 = 100.0;

/// Runs every sender for `count` messages, optionally one per `interval`;
/// returns the connections for the next phase.
async fn send_phase(
    smtps: Vec<(String, Smtp)>,
    recipients: &Arc<Vec<String>>,
    book: &Book,
    count: usize,
    interval: Option<Duration>,
    size: usize,
) -> anyhow::Result<Vec<(String, Smtp)>> {
    let mut tasks = Vec::new();
    for (n, (from, mut smtp)) in smtps.into_iter().enumerate() {
        let (recipients, book) = (recipients.clone(), book.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticker = interval.map(|i| {
                let start = tokio::time::Instant::now() + i.mul_f64(n as f64 / 64.0);
                tokio::time::interval_at(start, i)
            });
            for k in 0..count {
                if let Some(ticker) = ticker.as_mut() {
                    ticker.tick().await;
                }
                let index = (n + k * 7) % recipients.len();
                let message = encrypted(&from, &recipients[index], size);
                let mut arrivals = None;
                let reply = smtp
                    .send(&from, &[recipients[index].as_str()], &message)
                    .await;
                match reply {
                    Ok((250, _)) => arrivals = Some(Instant::now()),
                    Ok((code, text)) => eprintln!("{from}: {code} {text}"),
                    Err(e) => return Err(anyhow::anyhow!("{from}: {e}")),
                }
                if let (Some(at), Ok(mut entry)) = (arrivals, book[index].lock()) {
                    entry.acked.push(at);
                }
            }
            Ok((from, smtp))
        }));
    }
    let mut smtps = Vec::new();
    for task in tasks {
        smtps.push(task.await??);
    }
    Ok(smtps)
}

/// Messages per sender and the interval between them for the paced phase.
fn paced(options: &BenchOptions) -> (usize, Duration) {
    let total = u64::from(options.rate) * options.seconds;
    let per_sender = usize::try_from(total)
        .unwrap_or(usize::MAX)
        .div_ceil(options.senders);
    let interval = Duration::from_secs_f64(options.senders as f64 / f64::from(options.rate));
    (per_sender, interval)
}

/// Forgets the latencies recorded so far (between phases).
fn clear_latencies(book: &Book) -> anyhow::Result<()> {
    for entry in book.iter() {
        entry
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .latencies
            .clear();
    }
    Ok(())
}

/// Summary of the recorded 250-to-EXISTS latencies.
struct Quantiles {
    p50: Duration,
    p99: Duration,
    max: Duration,
    count: usize,
}

impl Quantiles {
    fn of(book: &Book) -> Self {
        let mut latencies: Vec<Duration> = book
            .iter()
            .flat_map(|entry| {
                entry
                    .lock()
                    .map(|a| a.latencies.clone())
                    .unwrap_or_default()
            })
            .collect();
        latencies.sort();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        Self {
            p50: pick(0.50),
            p99: pick(0.99),
            max: pick(1.0),
            count: latencies.len(),
        }
    }
}

/// Follows one recipient's IDLE stream and records latencies.
async fn watch(mut imap: Imap, book: Book, index: usize) {
    while let Ok(exists) = imap.wait_exists().await {
        let now = Instant::now();
        let Ok(mut entry) = book[index].lock() else {
            return;
        };
        let exists = exists as usize;
        while entry.seen < exists {
            let seen = entry.seen;
            match entry.acked.get(seen).copied() {
                Some(acked) => {
                    let latency = now.saturating_duration_since(acked);
                    entry.latencies.push(latency);
                }
                // EXISTS arrived before the sender read its 250.
                None => entry.latencies.push(Duration::ZERO),
            }
            entry.seen += 1;
        }
        entry.last_seen = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_start_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (smtpd (x) y) S 17 4242 4242 0 -1 4194560 1 0 0 0 3 5";
        let fields = stat_fields(stat);
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "17");
        assert_eq!(fields[11..13], ["3", "5"]);
        assert!(stat_fields("garbage").is_empty());
    }
}
