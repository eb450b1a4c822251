//! `cargo xtask bench --idle`: the relay's memory per idle IMAP connection
//! in IDLE over implicit TLS, without and with COMPRESS=DEFLATE.
//!
//! Flow per variant, each against a fresh release relay: every account logs
//! in once (JIT creation runs Argon2 once per account; later logins hit the
//! verification cache) and stays in IDLE, so the relay is warm; then VmRSS
//! is read, `connections` more sessions log in, SELECT INBOX and enter IDLE,
//! and VmRSS is read again after a pause. The figure is the RSS delta per
//! connection. Kernel socket buffers are not part of RSS.
//!
//! The relay allows one fifth of `max_imap_connections` per client IP, so
//! client sockets are bound to source addresses `127.0.0.10`, `.11`, …
//! (at most [`PER_SOURCE`] each) before connecting; Linux routes all of
//! `127.0.0.0/8` to loopback. With COMPRESS the client deflates its own
//! output and inflates the server's (raw deflate, RFC 4978 §3) until the
//! `+` of IDLE; after that its deflate state is dropped, since nothing is
//! sent or read any more: only the relay's state is measured.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use chatmail_testkit::client::tls_config;
use chatmail_testkit::relay::RelayProcess;

use super::{BenchOptions, PASSWORD};

/// Most client sockets per source address (the relay's per-IP share must
/// be at least this).
const PER_SOURCE: usize = 1000;
/// Logins in flight at once.
const PARALLEL: usize = 64;
/// Wait after the last IDLE before reading RSS again.
const SETTLE: Duration = Duration::from_secs(3);
/// Longest server line the client accepts.
const MAX_LINE: usize = 64 * 1024;
/// File descriptors the bench keeps for itself besides the sockets.
const SPARE_FDS: u64 = 256;

/// One variant's measurement.
struct Figures {
    compress: bool,
    before_kib: u64,
    after_kib: u64,
}

pub(super) async fn bench(binary: &Path, options: &BenchOptions) -> anyhow::Result<()> {
    let n = options.connections;
    let accounts = options.accounts.max(1);
    check_fd_limit(n)?;
    let mut figures = Vec::new();
    for compress in [false, true] {
        figures.push(variant(binary, n, accounts, compress).await?);
    }
    println!(
        "idle IMAP connections in IDLE over TLS: {n} connections, {accounts} accounts, {} source addresses",
        n.div_ceil(PER_SOURCE)
    );
    for f in &figures {
        let delta = f.after_kib.saturating_sub(f.before_kib);
        println!(
            "  {:<9} relay RSS {:>7.1} MiB -> {:>7.1} MiB: {:.1} KiB per connection",
            if f.compress { "deflate" } else { "plain" },
            f.before_kib as f64 / 1024.0,
            f.after_kib as f64 / 1024.0,
            delta as f64 / n as f64
        );
    }
    Ok(())
}

/// Fails early, with the fix, when the open-file limit cannot hold the
/// client sockets (the relay inherits the same limit).
pub(crate) fn check_fd_limit(connections: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft {
        let need = connections as u64 + SPARE_FDS;
        ensure!(
            soft >= need,
            "open-file limit {soft} is below {need}: run with `ulimit -n 65536`"
        );
    }
    Ok(())
}

async fn variant(
    binary: &Path,
    n: usize,
    accounts: usize,
    compress: bool,
) -> anyhow::Result<Figures> {
    let headroom = accounts + 100;
    let limits = format!(
        "[limits]\nmax_imap_connections = {}\nnew_accounts_per_minute = 0\n",
        (n + headroom).max(PER_SOURCE * 5)
    );
    let relay = RelayProcess::start(binary, &limits)
        .await
        .map_err(anyhow::Error::msg)?;
    let pid = relay.pid().context("relay not running")?;
    let tls = tls_config(&relay.cert_path()).map_err(anyhow::Error::msg)?;
    let target = Target {
        addr: relay.addr(relay.ports.imaps),
        connector: TlsConnector::from(tls),
        compress,
    };
    let users: Vec<String> = (0..accounts)
        .map(|a| relay.address(&format!("idle{a:05}")))
        .collect();
    let warm = open_many(&target, &users, accounts, Ipv4Addr::LOCALHOST).await?;
    tokio::time::sleep(SETTLE).await;
    let before_kib = rss_kib(pid)?;
    let held = open_many(&target, &users, n, Ipv4Addr::UNSPECIFIED).await?;
    tokio::time::sleep(SETTLE).await;
    let after_kib = rss_kib(pid)?;
    ensure!(relay.is_running(), "relay exited during the bench");
    drop((warm, held));
    Ok(Figures {
        compress,
        before_kib,
        after_kib,
    })
}

/// The relay's IMAPS listener and how to talk to it.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) connector: TlsConnector,
    pub(crate) compress: bool,
}

/// Opens `count` idling sessions, spread over the accounts; from `fixed`
/// unless it is unspecified, else spread over `127.0.0.10`, `.11`, ….
pub(crate) async fn open_many(
    target: &Target,
    users: &[String],
    count: usize,
    fixed: Ipv4Addr,
) -> anyhow::Result<Vec<TlsStream<TcpStream>>> {
    let gate = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let source = if fixed.is_unspecified() {
            source_address(i)?
        } else {
            fixed
        };
        let user = users[i % users.len()].clone();
        let (addr, connector, compress) = (target.addr, target.connector.clone(), target.compress);
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            open_idle(addr, source, &connector, &user, compress)
                .await
                .with_context(|| format!("connection {i} from {source}"))
        });
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        streams.push(joined??);
    }
    Ok(streams)
}

/// The source address of client connection `i`.
fn source_address(i: usize) -> anyhow::Result<Ipv4Addr> {
    let host = u8::try_from(10 + i / PER_SOURCE).context("too many connections")?;
    ensure!(host < 255, "too many connections");
    Ok(Ipv4Addr::new(127, 0, 0, host))
}

/// VmRSS of process `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}

/// Connects from `source`, logs in, optionally enables COMPRESS, selects
/// INBOX and enters IDLE; returns the TLS stream, left idle.
async fn open_idle(
    addr: SocketAddr,
    source: Ipv4Addr,
    connector: &TlsConnector,
    user: &str,
    compress: bool,
) -> anyhow::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = connector.connect(name, tcp).await?;
    let mut conn = Conn::new(stream);
    let greeting = conn.line().await?;
    ensure!(greeting.starts_with("* OK"), "greeting: {greeting}");
    conn.command("a", &format!("LOGIN \"{user}\" \"{PASSWORD}\""))
        .await?;
    if compress {
        conn.command("c", "COMPRESS DEFLATE").await?;
        conn.start_deflate()?;
    }
    conn.command("s", "SELECT INBOX").await?;
    conn.send("i IDLE\r\n").await?;
    loop {
        if conn.line().await?.starts_with('+') {
            return Ok(conn.stream);
        }
    }
}

/// A client connection with optional raw deflate in both directions.
struct Conn {
    stream: TlsStream<TcpStream>,
    /// Plain bytes received and not yet consumed as lines.
    pending: Vec<u8>,
    deflate: Option<(Compress, Decompress)>,
}

impl Conn {
    fn new(stream: TlsStream<TcpStream>) -> Self {
        Self {
            stream,
            pending: Vec::new(),
            deflate: None,
        }
    }

    /// RFC 4978 §3: everything after the tagged OK is raw deflate; the
    /// server sends nothing unasked, so no compressed byte is buffered yet.
    fn start_deflate(&mut self) -> anyhow::Result<()> {
        ensure!(self.pending.is_empty(), "data after COMPRESS OK");
        let compress = Compress::new(Compression::fast(), false);
        self.deflate = Some((compress, Decompress::new(false)));
        Ok(())
    }

    /// Sends `tag command` and reads up to the tagged reply, which must
    /// be OK.
    async fn command(&mut self, tag: &str, command: &str) -> anyhow::Result<()> {
        self.send(&format!("{tag} {command}\r\n")).await?;
        loop {
            let line = self.line().await?;
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                ensure!(rest.starts_with("OK"), "{command}: {line}");
                return Ok(());
            }
        }
    }

    async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let bytes = match &mut self.deflate {
            Some((compress, _)) => deflate(compress, text.as_bytes())?,
            None => text.as_bytes().to_vec(),
        };
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next line from the server, without its CRLF.
    async fn line(&mut self) -> anyhow::Result<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            ensure!(self.pending.len() <= MAX_LINE, "server line too long");
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                bail!("connection closed");
            }
            match &mut self.deflate {
                Some((_, decompress)) => inflate(decompress, &chunk[..read], &mut self.pending)?,
                None => self.pending.extend_from_slice(&chunk[..read]),
            }
        }
    }
}

/// Compresses `input` and ends with a sync flush, so the server can decode
/// the command at once (RFC 4978 §4).
fn deflate(compress: &mut Compress, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() + 64);
    let mut used = 0;
    loop {
        out.reserve(64);
        let before = compress.total_in();
        compress.compress_vec(&input[used..], &mut out, FlushCompress::Sync)?;
        used += usize::try_from(compress.total_in() - before)?;
        // Done once all input is in and the flush left spare room.
        if used == input.len() && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

/// Inflates `input` and appends the result to `out`.
fn inflate(decompress: &mut Decompress, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut used = 0;
    loop {
        out.reserve(16 * 1024);
        let before = decompress.total_in();
        let filled = out.len();
        decompress.decompress_vec(&input[used..], out, FlushDecompress::Sync)?;
        used += usize::try_from(decompress.total_in() - before)?;
        ensure!(out.len() <= MAX_LINE * 2, "server output too large");
        // Done once all input is in and the output did not fill up.
        if used == input.len() && out.len() < out.capacity() {
            return Ok(());
        }
        ensure!(
            out.len() > filled || used < input.len(),
            "inflate made no progress"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deflate_output_inflates_back_to_the_input() {
        let mut compress = Compress::new(Compression::fast(), false);
        let mut decompress = Decompress::new(false);
        let mut plain = Vec::new();
        for line in ["a LOGIN \"x\" \"y\"\r\n", "s SELECT INBOX\r\n"] {
            let packed = deflate(&mut compress, line.as_bytes()).unwrap();
            inflate(&mut decompress, &packed, &mut plain).unwrap();
        }
        assert_eq!(plain, b"a LOGIN \"x\" \"y\"\r\ns SELECT INBOX\r\n");
    }

    #[test]
    fn spreads_sources_at_most_per_source_each() {
        assert_eq!(source_address(0).unwrap(), Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(
            source_address(PER_SOURCE - 1).unwrap(),
            Ipv4Addr::new(127, 0, 0, 10)
        );
        assert_eq!(
            source_address(PER_SOURCE).unwrap(),
            Ipv4Addr::new(127, 0, 0, 11)
        );
        assert!(source_address(PER_SOURCE * 250).is_err());
    }
}
