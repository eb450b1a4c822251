//! Connection floods with idle and slow clients on every client port at
//! once: submission over TLS (465) and with STARTTLS (587), IMAP over TLS
//! (993) and plain (143), TURN over TCP and the Shadowsocks proxy. (Port
//! 25 and 443 have their own floods in `slots.rs`.)
//!
//! Ten attacker addresses open twice each pool's size on every port; half
//! of the connections stay silent, half send a byte a second and never a
//! whole command (over TLS on 465 and 993). Meanwhile a newcomer from
//! another address must be served on each port within 1 s (on TURN over
//! TCP: its first request answered; then a call with coturn's
//! `turnutils_uclient` must get through, which takes the client seconds
//! of its own).
//!
//! Found before the fix: TURN over TCP counted connections with a cap of
//! its own that never evicted, so five addresses holding their share shut
//! everyone else out of it for the 10-minute idle timeout.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatmail_testkit::client::{Smtp, tcp_from, tls_config};
use chatmail_testkit::relay::{RelayProcess, closed_port, free_udp_tcp_port};
use chatmail_testkit::socks::SsLocal;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use crate::common::{
    NORMAL, PASSWORD, RELAY_IP, attacker, baseline_memory, imap, login, mib, relay, report,
    tls_from,
};

/// Each pool's size (a fifth of it per address).
const POOL: usize = 100;
/// Attacker addresses; together they want twice each pool.
const ATTACKERS: u8 = 10;
const SERVED_BOUND: Duration = Duration::from_secs(1);
/// Peak resident growth allowed over the whole flood.
const MEMORY_BOUND_MIB: f64 = 100.0;

/// A held attacker connection, plain or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Held connections with the port each is on.
type Held = Vec<(Port, Box<dyn Conn>)>;

/// One port under attack.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Port {
    Submissions,
    Submission,
    Imaps,
    Imap,
    TurnTcp,
    Proxy,
}

impl Port {
    const ALL: [Port; 6] = [
        Port::Submissions,
        Port::Submission,
        Port::Imaps,
        Port::Imap,
        Port::TurnTcp,
        Port::Proxy,
    ];

    fn name(self) -> &'static str {
        match self {
            Port::Submissions => "465",
            Port::Submission => "587",
            Port::Imaps => "993",
            Port::Imap => "143",
            Port::TurnTcp => "turn-tcp",
            Port::Proxy => "proxy",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Port::Submissions | Port::Imaps)
    }
}

/// The relay's ports beside the usual six.
struct Extra {
    turn: u16,
    proxy: u16,
}

impl Extra {
    fn port(&self, relay: &RelayProcess, port: Port) -> u16 {
        match port {
            Port::Submissions => relay.ports.submissions,
            Port::Submission => relay.ports.submission,
            Port::Imaps => relay.ports.imaps,
            Port::Imap => relay.ports.imap,
            Port::TurnTcp => self.turn,
            Port::Proxy => self.proxy,
        }
    }
}

/// Opens one attacker connection from attacker address `n`.
async fn open(relay: &RelayProcess, extra: &Extra, port: Port, n: usize) -> Option<Box<dyn Conn>> {
    let source = attacker(100 + (n % ATTACKERS as usize) as u8);
    let addr = relay.addr(extra.port(relay, port));
    if port.tls() {
        let config = tls_config(&relay.cert_path()).ok()?;
        let tls = tls_from(source, addr, &config).await.ok()?;
        Some(Box::new(tls))
    } else {
        let tcp = tcp_from(Some(source), addr).await.ok()?;
        Some(Box::new(tcp))
    }
}

/// Whether a held connection is still open (not closed by the relay).
async fn still_open(conn: &mut Box<dyn Conn>) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(Duration::from_millis(1), conn.read(&mut buf)).await {
            Err(_) => return true,
            Ok(Ok(0) | Err(_)) => return false,
            Ok(Ok(_)) => {}
        }
    }
}

/// The newcomer on `port`: what it got and how long it took.
async fn newcomer(
    relay: &RelayProcess,
    extra: &Extra,
    port: Port,
    proxy: Option<&SsLocal>,
) -> (String, Duration) {
    let started = Instant::now();
    let addr = relay.addr(extra.port(relay, port));
    let served = async {
        let answer = match port {
            Port::Submissions => {
                let tls = tls_config(&relay.cert_path())?;
                Smtp::login(addr, &tls, NORMAL, PASSWORD).await?;
                "235 logged in".to_owned()
            }
            Port::Imaps => {
                login(relay).await?;
                "LOGIN and SELECT OK".to_owned()
            }
            Port::Submission => ask(tcp_from(None, addr).await?, "EHLO newcomer\r\n").await?,
            Port::Imap => ask(tcp_from(None, addr).await?, "a NOOP\r\n").await?,
            Port::TurnTcp => turn_challenge(tcp_from(None, addr).await?).await?,
            Port::Proxy => match proxy {
                Some(proxy) => {
                    let stream = proxy.connect(&relay.domain, relay.ports.imap).await?;
                    let mut line = String::new();
                    BufReader::new(stream).read_line(&mut line).await?;
                    format!("through the proxy: {}", line.trim_end())
                }
                None => "skipped: ss-local not installed".to_owned(),
            },
        };
        chatmail_testkit::Result::Ok(answer)
    };
    let answer = match tokio::time::timeout(SERVED_BOUND * 10, served).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => format!("(failed: {e})"),
        Err(_) => "(no answer)".into(),
    };
    (answer, started.elapsed())
}

/// Reads the greeting, sends `command`, returns the first line of the
/// answer.
async fn ask(tcp: tokio::net::TcpStream, command: &str) -> chatmail_testkit::Result<String> {
    let mut tcp = BufReader::new(tcp);
    let mut line = String::new();
    tcp.read_line(&mut line).await?;
    if line.is_empty() {
        return Err("closed before the greeting".into());
    }
    tcp.get_mut().write_all(command.as_bytes()).await?;
    line.clear();
    tcp.read_line(&mut line).await?;
    Ok(line.trim_end().to_owned())
}

/// An Allocate request without a credential over TCP (RFC 8656); the
/// response's type (`0x0113`: the 401 challenge).
async fn turn_challenge(mut tcp: tokio::net::TcpStream) -> chatmail_testkit::Result<String> {
    let mut request = vec![0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(b"madmailflood");
    // REQUESTED-TRANSPORT: UDP.
    request.extend_from_slice(&[0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    tcp.write_all(&request).await?;
    let mut header = [0u8; 20];
    tcp.read_exact(&mut header).await?;
    if header[8..20] != request[8..20] {
        return Err("a response to another transaction".into());
    }
    Ok(format!(
        "STUN response type {:#06x}",
        u16::from_be_bytes([header[0], header[1]])
    ))
}

/// Whether coturn's client is installed (Debian package `coturn`).
fn have_uclient() -> bool {
    std::process::Command::new("turnutils_uclient")
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A call over TURN-over-TCP with coturn's client: the credential from
/// the newcomer's METADATA, 5 messages to an echo peer; how many came back.
async fn turn_call(relay: &RelayProcess, port: u16) -> chatmail_testkit::Result<String> {
    let mut imap = imap(relay, NORMAL).await?;
    let lines = imap
        .command("GETMETADATA \"\" (/shared/vendor/deltachat/turn)")
        .await?;
    let entry = lines
        .iter()
        .filter(|line| line.starts_with("* METADATA"))
        .find_map(|line| line.rsplit('"').nth(1))
        .ok_or("no turn entry")?;
    let mut fields = entry.splitn(4, ':').skip(2);
    let (Some(username), Some(password)) = (fields.next(), fields.next()) else {
        return Err(format!("a turn entry without a credential: {entry}").into());
    };
    let peer_port = free_udp_tcp_port(RELAY_IP)?;
    let _peer = tokio::process::Command::new("turnutils_peer")
        .args(["-L", &RELAY_IP.to_string(), "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let output = tokio::process::Command::new("turnutils_uclient")
        .args(["-t", "-n", "5", "-z", "5", "-c", "-l", "120"])
        .args(["-e", &RELAY_IP.to_string(), "-r", &peer_port.to_string()])
        .args(["-u", username, "-w", password, "-p", &port.to_string()])
        .arg(RELAY_IP.to_string())
        .kill_on_drop(true)
        .output()
        .await?;
    let output = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let received = output
        .rsplit("tot_recv_msgs=")
        .next()
        .filter(|_| output.contains("tot_recv_msgs="))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .unwrap_or("0");
    Ok(format!("call: {received} of 5 echoed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_idle_and_slow_clients_do_not_shut_out_any_port() {
    let _serial = crate::common::SERIAL.lock().await;
    let extra = Extra {
        turn: free_udp_tcp_port(RELAY_IP).unwrap(),
        proxy: closed_port(RELAY_IP).unwrap(),
    };
    let sections = format!(
        "max_smtp_connections = {POOL}\nmax_imap_connections = {POOL}\n\
         [turn]\nenabled = true\nport = {turn}\nlisten = [\"{RELAY_IP}:{turn}\"]\n\
         allowed_peers = [\"127.0.0.0/8\"]\nmax_tcp_connections = {POOL}\n\
         [shadowsocks]\nenabled = true\nlisten = [\"{RELAY_IP}:{proxy}\"]\n\
         max_connections = {POOL}\n",
        turn = extra.turn,
        proxy = extra.proxy,
    );
    let relay = relay(&sections, "").await;
    let proxy = if SsLocal::installed() {
        let link = relay.cli(&["proxy-link"]).unwrap();
        Some(SsLocal::start(link.trim()).await.unwrap())
    } else {
        eprintln!(
            "ss-local not installed (Debian package shadowsocks-libev): the proxy's newcomer is skipped"
        );
        None
    };
    let before = baseline_memory(&relay).await;

    // Every port flooded at once: twice each pool, from ten addresses.
    let started = Instant::now();
    let mut silent: Held = Vec::new();
    let slow: Arc<Mutex<Held>> = Arc::default();
    let mut refused = Vec::new();
    for port in Port::ALL {
        let mut failed = 0;
        for n in 0..2 * POOL {
            match open(&relay, &extra, port, n).await {
                Some(conn) if n % 2 == 0 => silent.push((port, conn)),
                Some(conn) => slow.lock().await.push((port, conn)),
                None => failed += 1,
            }
        }
        refused.push((port, failed));
    }
    let opened = started.elapsed();
    let trickle = {
        let slow = Arc::clone(&slow);
        tokio::spawn(async move {
            loop {
                for (_, conn) in slow.lock().await.iter_mut() {
                    let _ = conn.write_all(b"a").await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut answers = Vec::new();
    for port in Port::ALL {
        answers.push((port, newcomer(&relay, &extra, port, proxy.as_ref()).await));
    }
    let call_started = Instant::now();
    let call = if have_uclient() {
        turn_call(&relay, extra.turn)
            .await
            .unwrap_or_else(|e| format!("(failed: {e})"))
    } else {
        "skipped: turnutils_uclient not installed (Debian package coturn)".to_owned()
    };
    let call_took = call_started.elapsed();
    trickle.abort();
    let peak = relay.memory().unwrap();
    let mut held = Vec::new();
    for port in Port::ALL {
        let mut open = 0;
        for (p, conn) in silent.iter_mut().chain(slow.lock().await.iter_mut()) {
            if *p == port && still_open(conn).await {
                open += 1;
            }
        }
        held.push((port, open));
    }

    let mut figures = vec![
        ("attack_connections_per_port", (2 * POOL).to_string()),
        ("pool", POOL.to_string()),
        ("opened_in", format!("{opened:?}")),
        (
            "peak_mib",
            format!("+{:.1}", mib(peak.hwm_kib.saturating_sub(before.rss_kib))),
        ),
    ];
    for ((port, failed), (_, open)) in refused.iter().zip(&held) {
        figures.push((port.name(), format!("refused={failed},still_open={open}")));
    }
    for (port, (answer, took)) in &answers {
        figures.push((port.name(), format!("{answer:?} in {took:?}")));
    }
    figures.push(("turn_call", format!("{call:?} in {call_took:?}")));
    report("port-floods", &figures);
    assert!(
        call.contains(" 5 of 5") || call.starts_with("skipped"),
        "TURN call during the flood: {call}"
    );

    for (port, (answer, took)) in &answers {
        let ok = match port {
            Port::Submissions => answer.starts_with("235"),
            Port::Imaps => answer.contains("OK"),
            Port::Submission => answer.starts_with("250"),
            Port::Imap => answer.starts_with("a OK"),
            Port::TurnTcp => answer.ends_with("0x0113"),
            Port::Proxy => answer.contains("* OK") || answer.starts_with("skipped"),
        };
        assert!(ok, "newcomer on {}: {answer}", port.name());
        assert!(
            *took < SERVED_BOUND,
            "newcomer on {} took {took:?}",
            port.name()
        );
    }
    let grew = mib(peak.hwm_kib.saturating_sub(before.rss_kib));
    assert!(grew < MEMORY_BOUND_MIB, "peak grew by {grew:.1} MiB");
}
