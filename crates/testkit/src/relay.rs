//! A `madmail` process on loopback with its own state directory and free
//! ports, for tests that need the real binary (restarts, SIGKILL) and for
//! benchmarks.
//!
//! Every relay listens on one loopback address (`127.0.0.1` unless chosen
//! with [`RelayOptions::ip`]); Linux routes all of `127.0.0.0/8` to the
//! loopback interface, so two relays on `127.0.0.2` and `127.0.0.3` run side
//! by side without DNS. A relay can be [configured](RelayProcess::configure)
//! without starting, so that a peer can route to it while it is down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::Result;

/// The relay's listening ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub submissions: u16,
    pub submission: u16,
    pub imaps: u16,
    pub imap: u16,
    pub https: u16,
    pub smtp: u16,
}

/// Ports this process has handed out: a released port is not handed out
/// again, so two helpers' ports never collide within one test binary.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<(IpAddr, u16)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Records `port` on `ip` as handed out; `false` if it was before.
fn first_time(ip: IpAddr, port: u16) -> bool {
    HANDED_OUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((ip, port))
}

/// A port on `ip` that nothing listens on (bound, then released), never
/// one this process handed out before.
pub fn closed_port(ip: Ipv4Addr) -> Result<u16> {
    loop {
        let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
        if first_time(ip.into(), port) {
            return Ok(port);
        }
    }
}

/// A port on `ip` free for both TCP and UDP (TURN listens on both), never
/// one this process handed out before.
pub fn free_udp_tcp_port(ip: impl Into<IpAddr>) -> Result<u16> {
    let ip = ip.into();
    loop {
        let tcp = TcpListener::bind((ip, 0))?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind((ip, port)).is_ok() && first_time(ip, port) {
            return Ok(port);
        }
    }
}

impl Ports {
    /// Six currently free ports on `127.0.0.1`.
    pub fn free() -> Result<Self> {
        Self::free_on(Ipv4Addr::LOCALHOST)
    }

    /// Six currently free ports on the local address `ip`, none handed
    /// out before in this process.
    pub fn free_on(ip: impl Into<IpAddr>) -> Result<Self> {
        let ip = ip.into();
        let mut holders = Vec::new();
        let mut next = || -> Result<u16> {
            loop {
                let listener = TcpListener::bind((ip, 0))?;
                let port = listener.local_addr()?.port();
                holders.push(listener);
                if first_time(ip, port) {
                    return Ok(port);
                }
            }
        };
        Ok(Self {
            submissions: next()?,
            submission: next()?,
            imaps: next()?,
            imap: next()?,
            https: next()?,
            smtp: next()?,
        })
    }
}

/// Where and as what a relay runs.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The local address every listener binds (IPv6 needs a `domain`).
    pub ip: IpAddr,
    /// The mail domain; `None`: the IP address (an IP-only relay, whose
    /// addresses read `user@[ip]`).
    pub domain: Option<String>,
    /// TOML appended verbatim to the generated top-level settings.
    pub extra: String,
}

impl RelayOptions {
    /// An IP-only relay on `ip` with `extra` settings.
    pub fn on(ip: Ipv4Addr, extra: &str) -> Self {
        Self {
            ip: IpAddr::V4(ip),
            domain: None,
            extra: extra.to_owned(),
        }
    }
}

/// A relay process (running or not).
pub struct RelayProcess {
    binary: PathBuf,
    /// Keeps the state directory alive; removed on drop.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Environment of the relay process and its commands (e.g. a
    /// [`crate::clock::FakeClock`]).
    env: Vec<(String, String)>,
    /// Where the relay listens.
    pub ports: Ports,
    /// The local address the relay listens on.
    pub ip: IpAddr,
    /// The relay's mail domain (the IP address for IP-only relays).
    pub domain: String,
}

impl RelayProcess {
    /// Writes a configuration (IP-only domain `127.0.0.1`, self-signed TLS,
    /// `extra` appended verbatim) and starts `binary` with it.
    pub async fn start(binary: &Path, extra: &str) -> Result<Self> {
        Self::start_with(binary, &RelayOptions::on(Ipv4Addr::LOCALHOST, extra)).await
    }

    /// An IP-only relay on `ip` with `extra` settings, started.
    pub async fn start_on(binary: &Path, ip: Ipv4Addr, extra: &str) -> Result<Self> {
        Self::start_with(binary, &RelayOptions::on(ip, extra)).await
    }

    /// [`RelayProcess::configure`], then [`RelayProcess::launch`].
    pub async fn start_with(binary: &Path, options: &RelayOptions) -> Result<Self> {
        let mut relay = Self::configure(binary, options)?;
        relay.launch().await?;
        Ok(relay)
    }

    /// Picks free ports and writes the configuration without starting the
    /// process; [`RelayProcess::append_config`] may add more before
    /// [`RelayProcess::launch`].
    pub fn configure(binary: &Path, options: &RelayOptions) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("madmail-test-").tempdir()?;
        let ip = options.ip;
        let ports = Ports::free_on(ip)?;
        let domain = options.domain.clone().unwrap_or_else(|| ip.to_string());
        let at = |port: u16| format!("[\"{}\"]", SocketAddr::new(ip, port));
        let config = format!(
            "mail_domain = {domain:?}\nstate_dir = {:?}\n{}\n\
             [log]\nno_log = false\nlevel = \"warn\"\n\
             [listen]\nsubmissions = {}\nsubmission = {}\nimaps = {}\nimap = {}\nhttps = {}\nsmtp = {}\nhttp = []\n\
             [tls]\nmode = \"self-signed\"\n",
            dir.path().join("state").display().to_string(),
            options.extra,
            at(ports.submissions),
            at(ports.submission),
            at(ports.imaps),
            at(ports.imap),
            at(ports.https),
            at(ports.smtp),
        );
        std::fs::write(dir.path().join("chatmail.toml"), config)?;
        Ok(Self {
            binary: binary.to_owned(),
            dir,
            child: None,
            env: Vec::new(),
            ports,
            ip,
            domain,
        })
    }

    /// Appends TOML (whole tables, e.g. a [`RelayProcess::route`]) to the
    /// configuration; takes effect at the next (re)start.
    pub fn append_config(&self, toml: &str) -> Result<()> {
        let path = self.config_path();
        let mut config = std::fs::read_to_string(&path)?;
        config.push('\n');
        config.push_str(toml);
        std::fs::write(path, config)?;
        Ok(())
    }

    /// Adds environment for the process and its commands; takes effect at
    /// the next (re)start.
    pub fn set_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        self.env.extend(env);
    }

    /// The directory holding the configuration and the state directory
    /// (scratch files of a test may go there too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts the process (if not running) and waits until it listens.
    pub async fn launch(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let child = Command::new(&self.binary)
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let ports = [
            self.ports.imaps,
            self.ports.submissions,
            self.ports.https,
            self.ports.smtp,
        ];
        for _ in 0..400 {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("madmail exited early: {status}").into());
            }
            let ready = ports
                .iter()
                .all(|port| std::net::TcpStream::connect((self.ip, *port)).is_ok());
            if ready {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("madmail did not start listening within 20 s".into())
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a stop request) and waits at most `limit` for the
    /// process to exit; returns its exit status.
    pub async fn terminate(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.pid().ok_or("not running")?.to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !sent.success() {
            return Err("kill -TERM failed".into());
        }
        self.wait_exit(limit).await
    }

    /// Waits at most `limit` for the process to exit by itself; returns
    /// its exit status.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let child = self.child.as_mut().ok_or("not running")?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!("madmail still running after {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts the process again with the same state and ports.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch().await
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs `madmail <args…> --config <this relay's config>` to completion
    /// (e.g. `["queue", "list"]`); fails unless it exits successfully.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let (command, rest) = args.split_first().ok_or("no command")?;
        let output: Output = Command::new(&self.binary)
            .arg(command)
            .arg("--config")
            .arg(self.config_path())
            .args(rest)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "madmail {args:?} failed: {}: {stdout}{stderr}",
                output.status
            )
            .into());
        }
        Ok(stdout)
    }

    /// A static route (TOML table for `federation.static_routes`) that sends
    /// this relay's mail to its listeners: `/mxdeliv` first when `https` is
    /// true, else SMTP only.
    pub fn route(&self, https: bool) -> String {
        self.route_to(https.then_some(self.ports.https), self.ports.smtp)
    }

    /// A static route for this relay's domain to its IP with explicit ports
    /// (e.g. a closed one, to make a transport impossible).
    pub fn route_to(&self, https_port: Option<u16>, smtp_port: u16) -> String {
        let https = https_port.map_or(String::new(), |p| format!("https_port = {p}\n"));
        format!(
            "[federation.static_routes.{:?}]\nhost = \"{}\"\n{https}smtp_port = {smtp_port}\n",
            self.address_domain(),
            self.ip,
        )
    }

    /// The name its certificate is issued for, when that is a DNS name
    /// (pass to `login_named`); `None` for IP-only relays.
    pub fn server_name(&self) -> Option<&str> {
        if self.domain.parse::<Ipv4Addr>().is_ok() {
            None
        } else {
            Some(&self.domain)
        }
    }

    /// The domain part of this relay's addresses (`[ip]` for IP-only ones).
    pub fn address_domain(&self) -> String {
        if self.domain.parse::<Ipv4Addr>().is_ok() {
            format!("[{}]", self.domain)
        } else {
            self.domain.clone()
        }
    }

    /// The address of `local_part` at this relay.
    pub fn address(&self, local_part: &str) -> String {
        format!("{local_part}@{}", self.address_domain())
    }

    /// The relay's self-signed certificate (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.state_dir().join("tls/cert.pem")
    }

    /// The relay's `state_dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("chatmail.toml")
    }

    /// This relay's socket address for `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's memory now, from `/proc/<pid>/status`.
    pub fn memory(&self) -> Result<Memory> {
        let pid = self.pid().ok_or("relay not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))?;
            let kib = line
                .split_whitespace()
                .nth(1)
                .ok_or("malformed status line")?;
            Ok(kib.parse()?)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// CPU time the process has used so far (user and system), from
    /// `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Result<Duration> {
        let pid = self.pid().ok_or("relay not running")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').ok_or("malformed stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks =
            |i: usize| -> Result<u64> { Ok(fields.get(i).ok_or("short stat")?.parse::<u64>()?) };
        // utime and stime are fields 14 and 15 of stat; 12 and 13 here.
        let total = ticks(11)? + ticks(12)?;
        // USER_HZ is 100 on every Linux this runs on.
        Ok(Duration::from_millis(total * 10))
    }

    /// Resets the peak resident size (`VmHWM`) to the current size.
    pub fn reset_peak(&self) -> Result<()> {
        let pid = self.pid().ok_or("relay not running")?;
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
        Ok(())
    }
}

/// A process's resident memory.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident since start or the last reset (`VmHWM`), KiB.
    pub hwm_kib: u64,
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET /metrics` on `addr` (a relay's `[metrics] listen`): the value of
/// `series` (name and labels, as the exposition prints them).
pub async fn metric(addr: SocketAddr, series: &str) -> Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut reply)).await??;
    reply
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| format!("no {series} in:\n{reply}").into())
}
