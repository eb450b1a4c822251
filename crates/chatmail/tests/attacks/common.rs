//! What every attack needs: the relay process, a serial lock (figures of
//! one attack must not include another's load), memory and CPU readings,
//! the normal client whose latency each attack must not spoil, and the
//! report line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Imap, tls_config};
use chatmail_testkit::relay::{Memory, RelayOptions, RelayProcess};

pub const PASSWORD: &str = "attack-test-password";
/// The relay listens here; normal clients connect from here too.
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The account every attack aims at, and the normal client's.
pub const VICTIM: &str = "victim001@[127.0.0.1]";
pub const NORMAL: &str = "normal001@[127.0.0.1]";

/// One attack at a time: each measures a process's memory and a normal
/// client's latency, which another attack's load would distort.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The binary under attack: `MADMAIL_ATTACK_BINARY` (an older build, to
/// measure what an attack did before its fix), else this checkout's.
pub fn binary() -> PathBuf {
    std::env::var_os("MADMAIL_ATTACK_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_madmail").into())
}

/// Whether the binary is an older build that knows none of the settings
/// of the bounds (`MADMAIL_ATTACK_BASELINE`): those are then left out and
/// the defaults of that build apply; assertions still run and fail.
pub fn baseline() -> bool {
    std::env::var_os("MADMAIL_ATTACK_BASELINE").is_some()
}

/// Lets this process (and the relay it starts) open as many sockets as
/// the hard limit allows; returns that number.
pub fn raise_nofile() -> u64 {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum else {
        return u64::MAX;
    };
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    );
    limit
}

/// A started relay on [`RELAY_IP`] with `limits` (lines of `[limits]`)
/// and, unless measuring a baseline, `bounds` (settings of the bounds
/// under test); [`VICTIM`] and [`NORMAL`] exist.
pub async fn relay(limits: &str, bounds: &str) -> RelayProcess {
    raise_nofile();
    let bounds = if baseline() { "" } else { bounds };
    let extra = format!("[limits]\n{limits}\n{bounds}\n");
    let options = RelayOptions::on(RELAY_IP, &extra);
    let relay = RelayProcess::start_with(&binary(), &options).await.unwrap();
    for user in [VICTIM, NORMAL] {
        drop(imap(&relay, user).await.unwrap());
    }
    relay
}

/// Settles the allocator with some ordinary traffic, then reads memory.
pub async fn baseline_memory(relay: &RelayProcess) -> Memory {
    for _ in 0..3 {
        login(relay).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.reset_peak().unwrap();
    relay.memory().unwrap()
}

pub async fn imap(relay: &RelayProcess, user: &str) -> chatmail_testkit::Result<Imap> {
    let tls = tls_config(&relay.cert_path())?;
    Imap::login(relay.addr(relay.ports.imaps), &tls, user, PASSWORD).await
}

/// The normal client: IMAP LOGIN and SELECT over 993 from 127.0.0.1;
/// returns how long it took.
pub async fn login(relay: &RelayProcess) -> chatmail_testkit::Result<Duration> {
    let started = Instant::now();
    let mut imap = imap(relay, NORMAL).await?;
    let lines = imap.command("SELECT INBOX").await?;
    if !lines.last().is_some_and(|l| l.contains(" OK")) {
        return Err(format!("SELECT failed: {lines:?}").into());
    }
    Ok(started.elapsed())
}

/// The normal client's login while an attack runs, bounded so that a
/// starved relay fails the test instead of hanging it.
pub async fn login_within(relay: &RelayProcess, limit: Duration) -> Result<Duration, String> {
    match tokio::time::timeout(limit * 10, login(relay)).await {
        Ok(Ok(took)) => Ok(took),
        Ok(Err(e)) => Err(format!("login failed: {e}")),
        Err(_) => Err(format!("no login within {:?}", limit * 10)),
    }
}

/// A loopback source address for attacker `n` (never the normal client's).
pub fn attacker(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, n.max(1)))
}

/// A TLS client configuration for the relay, offering `alpn`.
pub fn tls_with_alpn(relay: &RelayProcess, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = (*tls_config(&relay.cert_path()).unwrap()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// TLS to `addr` from `source`, verifying the relay's IP certificate.
pub async fn tls_from(
    source: IpAddr,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = chatmail_testkit::client::tcp_from(Some(source), addr)
        .await
        .map_err(std::io::Error::other)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Prints the figures of an attack on one line (`docs/reliability.md`
/// takes them from there).
pub fn report(attack: &str, figures: &[(&str, String)]) {
    let parts: Vec<String> = figures.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("attack {attack}: {}", parts.join(" "));
}

/// Messages in the victim's INBOX.
pub async fn stored(relay: &RelayProcess) -> usize {
    let mut imap = imap(relay, VICTIM).await.unwrap();
    let lines = imap.command("SELECT INBOX").await.unwrap();
    lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("* ")?
                .strip_suffix(" EXISTS\r\n")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
