//! One relay process of the end-to-end runs: what it listens on
//! ([`RelaySpec`], rendered into its configuration file) and the running
//! process ([`Relay`]), which is ready once every listening port accepts
//! and is killed when dropped.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a relay may take until all its ports accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of each relay log printed when the run failed.
const LOG_TAIL_LINES: usize = 200;

/// What one relay listens on and how it is named.
pub(crate) struct RelaySpec {
    /// Short name for files and log headers.
    pub(crate) name: &'static str,
    /// `mail_domain` of the relay.
    pub(crate) domain: String,
    /// IMAP implicit TLS.
    pub(crate) imaps: SocketAddr,
    /// SMTP submission implicit TLS.
    pub(crate) submissions: SocketAddr,
    /// STARTTLS listeners; `None` leaves the service off.
    pub(crate) imap: Option<SocketAddr>,
    pub(crate) submission: Option<SocketAddr>,
    /// HTTPS (`/new`, `/mxdeliv`).
    pub(crate) https: SocketAddr,
    /// SMTP MX for other relays; `None` leaves it off.
    pub(crate) smtp: Option<SocketAddr>,
    /// Further TOML appended to the configuration (`[federation]`).
    pub(crate) extra_toml: String,
    /// Further keys of the `[limits]` table.
    pub(crate) limits_toml: String,
    /// No-log mode (`[log] no_log`).
    pub(crate) no_log: bool,
    /// Further environment of the relay process (libfaketime for the
    /// clock relay, [`FakeClock::env`]).
    pub(crate) env: Vec<(String, String)>,
    /// The TURN port (UDP and TCP) once [`RelaySpec::with_features`]
    /// published metadata and started TURN.
    turn_port: Option<u16>,
    /// With features: the plain-HTTP front of the iroh relay (a tunnel to
    /// the HTTPS port, see [`RelaySpec::with_features`]) and the metrics
    /// endpoint.
    iroh_front: Option<TcpListener>,
    metrics: Option<SocketAddr>,
    /// With features: the Shadowsocks proxy's port.
    proxy_port: Option<u16>,
}

/// `[metadata] admin` of relays with features.
const FEATURE_ADMIN: &str = "operator@example.org";
/// `[metadata] comment` of relays with features.
const FEATURE_COMMENT: &str = "madmail end-to-end relay";

impl RelaySpec {
    /// A relay on loopback with free high ports for every service.
    pub(crate) fn loopback(name: &'static str, domain: &str) -> Result<Self> {
        let [imaps, submissions, imap, submission, https, smtp] = free_ports::<6>()?;
        Ok(Self {
            name,
            domain: domain.to_owned(),
            imaps,
            submissions,
            imap: Some(imap),
            submission: Some(submission),
            https,
            smtp: Some(smtp),
            extra_toml: String::new(),
            limits_toml: String::new(),
            no_log: false,
            env: Vec::new(),
            turn_port: None,
            iroh_front: None,
            metrics: None,
            proxy_port: None,
        })
    }

    /// An IP-only relay `127.0.0.1` on the standard implicit-TLS ports.
    pub(crate) fn standard_ports(name: &'static str) -> Self {
        let at = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            name,
            domain: "127.0.0.1".to_owned(),
            imaps: at(993),
            submissions: at(465),
            imap: None,
            submission: None,
            https: at(443),
            smtp: None,
            extra_toml: String::new(),
            limits_toml: String::new(),
            no_log: false,
            env: Vec::new(),
            turn_port: None,
            iroh_front: None,
            metrics: None,
            proxy_port: None,
        }
    }

    /// A relay on `ip` with every service on its standard port
    /// (993, 465, 143, 587, 443 and the MX on 25).
    pub(crate) fn standard(name: &'static str, domain: &str, ip: Ipv4Addr) -> Self {
        let at = |port| SocketAddr::from((ip, port));
        Self {
            name,
            domain: domain.to_owned(),
            imaps: at(993),
            submissions: at(465),
            imap: Some(at(143)),
            submission: Some(at(587)),
            https: at(443),
            smtp: Some(at(25)),
            extra_toml: String::new(),
            limits_toml: String::new(),
            no_log: false,
            env: Vec::new(),
            turn_port: None,
            iroh_front: None,
            metrics: None,
            proxy_port: None,
        }
    }

    /// Publishes the server METADATA entries (`[metadata] admin` and
    /// `comment`), serves the admin API, runs TURN (`[turn]` on a free port of the relay's IP,
    /// which is also the host clients get, so they need no DNS for it;
    /// loopback peers allowed) and the metrics endpoint, and sends clients
    /// to the built-in iroh relay through a plain-HTTP front: iroh's client
    /// trusts only the public web roots, so [`Relay::start`] runs a tunnel
    /// from the front to the HTTPS port that trusts the relay's own
    /// certificate. [`RelaySpec::scenario_env`] then tells the scenarios
    /// what to expect.
    pub(crate) fn with_features(mut self) -> Result<Self> {
        let ip = self.ip();
        let port = chatmail_testkit::relay::free_udp_tcp_port(ip).unwrap_or(3478);
        let front = TcpListener::bind((ip, 0))?;
        let [metrics] = free_ports::<1>()?;
        let proxy = SocketAddr::new(ip, free_ports::<1>()?[0].port());
        let toml = format!(
            "\n[metadata]\nadmin = \"{FEATURE_ADMIN}\"\ncomment = \"{FEATURE_COMMENT}\"\n\
             \n[turn]\nenabled = true\nhost = \"{ip}\"\nport = {port}\n\
             listen = [\"{}\"]\nallowed_peers = [\"127.0.0.0/8\"]\n\
             \n[iroh]\nurl = \"http://{}/\"\n\
             \n[metrics]\nenabled = true\nlisten = \"{metrics}\"\n\
             \n[shadowsocks]\nenabled = true\nhost = \"{ip}\"\nlisten = [\"{proxy}\"]\n\
             \n[admin]\nenabled = true\n",
            SocketAddr::new(ip, port),
            front.local_addr()?,
        );
        self.extra_toml.push_str(&toml);
        self.turn_port = Some(port);
        self.iroh_front = Some(front);
        self.metrics = Some(metrics);
        self.proxy_port = Some(proxy.port());
        Ok(self)
    }

    /// The address the relay's services listen on.
    pub(crate) fn ip(&self) -> std::net::IpAddr {
        self.imaps.ip()
    }

    /// Every address the relay listens on.
    fn addresses(&self) -> Vec<SocketAddr> {
        let mut all = vec![self.imaps, self.submissions, self.https];
        all.extend(self.imap.iter().chain(&self.submission).chain(&self.smtp));
        all
    }

    /// The relay's configuration file (every service, self-signed TLS).
    pub(crate) fn config_toml(&self, state_dir: &Path, log_level: &str) -> String {
        let list = |addr: Option<SocketAddr>| match addr {
            Some(addr) => format!("[\"{addr}\"]"),
            None => "[]".to_owned(),
        };
        format!(
            "mail_domain = \"{domain}\"\nstate_dir = \"{state}\"\n\n\
             [log]\nno_log = {no_log}\nlevel = \"{log_level}\"\n\n\
             [listen]\nsubmissions = {submissions}\nsubmission = {submission}\n\
             imaps = {imaps}\nimap = {imap}\nhttps = {https}\nsmtp = {smtp}\nhttp = []\n\n\
             [tls]\nmode = \"self-signed\"\n\n\
             [limits]\n# Every scenario's client connects from 127.0.0.1.\n\
             new_accounts_per_minute = 0\n{limits}{extra}",
            domain = self.domain,
            state = state_dir.display(),
            submissions = list(Some(self.submissions)),
            submission = list(self.submission),
            imaps = list(Some(self.imaps)),
            imap = list(self.imap),
            https = list(Some(self.https)),
            smtp = list(self.smtp),
            limits = self.limits_toml,
            extra = self.extra_toml,
            no_log = self.no_log,
        )
    }

    /// The `<prefix>_*` variables (`MADMAIL_*`, `MADMAIL2_*`) describing
    /// this relay to the scenarios.
    pub(crate) fn scenario_env(&self, prefix: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("DOMAIN", self.domain.clone()),
            ("HOST", self.imaps.ip().to_string()),
            ("IMAPS_PORT", self.imaps.port().to_string()),
            ("SUBMISSIONS_PORT", self.submissions.port().to_string()),
            ("HTTPS_PORT", self.https.port().to_string()),
        ];
        if let Some(imap) = self.imap {
            env.push(("IMAP_PORT", imap.port().to_string()));
        }
        if let Some(submission) = self.submission {
            env.push(("SUBMISSION_PORT", submission.port().to_string()));
        }
        if let Some(turn_port) = self.turn_port {
            env.extend([
                ("ADMIN", FEATURE_ADMIN.to_owned()),
                ("COMMENT", FEATURE_COMMENT.to_owned()),
                ("TURN_HOST", self.ip().to_string()),
                ("TURN_PORT", turn_port.to_string()),
            ]);
        }
        if let Some(front) = &self.iroh_front {
            let front = front
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            env.push(("IROH_URL", format!("http://{front}/")));
        }
        if let Some(metrics) = self.metrics {
            env.push(("METRICS_URL", format!("http://{metrics}/metrics")));
        }
        if let Some(port) = self.proxy_port {
            env.push(("PROXY_PORT", port.to_string()));
            // `with_features` turns the admin API on too.
            env.push(("ADMIN_API", "1".to_owned()));
        }
        if self.no_log {
            env.push(("NO_LOG", "1".to_owned()));
        }
        env.into_iter()
            .map(|(key, value)| (format!("{prefix}_{key}"), value))
            .collect()
    }
}

/// `N` distinct free loopback ports (all held open until each is chosen).
///
/// They come from below the kernel's ephemeral range: a port the kernel
/// hands out for `bind(0)` may also be handed to an outbound connection
/// (a client of a relay started before) between this choice and the
/// relay's own bind, which then fails with "Address already in use".
fn free_ports<const N: usize>() -> Result<[SocketAddr; N]> {
    use std::hash::{BuildHasher, Hasher};
    let (low, high) = below_ephemeral();
    let mut listeners = Vec::with_capacity(N);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    for attempt in 0u32..10_000 {
        if listeners.len() == N {
            break;
        }
        hasher.write_u32(attempt);
        let port = low + (hasher.finish() % u64::from(high - low)) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    anyhow::ensure!(
        listeners.len() == N,
        "finding free ports: fewer than {N} free in {low}..{high}"
    );
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for (addr, listener) in addrs.iter_mut().zip(&listeners) {
        *addr = listener.local_addr()?;
    }
    Ok(addrs)
}

/// Up to 12,000 ports just below the kernel's ephemeral range
/// (`ip_local_port_range`), never below 1024.
fn below_ephemeral() -> (u16, u16) {
    let first = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
        .max(2048);
    (first.saturating_sub(12_000).max(1024), first)
}

/// A running relay process; killed when dropped.
pub(crate) struct Relay {
    /// Name from the spec, for messages.
    name: &'static str,
    /// The process; `None` once stopped.
    child: Option<Child>,
    /// File receiving the relay's stdout and stderr.
    pub(crate) log: PathBuf,
    /// The relay's configuration file (for `madmail` commands).
    pub(crate) config: PathBuf,
    /// Addresses that must accept before the relay counts as ready.
    addresses: Vec<SocketAddr>,
}

impl Relay {
    /// Writes the relay's config (validated by the config crate) into
    /// `scratch/<name>/madmail.toml` and returns its path.
    pub(crate) fn write_config(
        scratch: &Path,
        spec: &RelaySpec,
        log_level: &str,
    ) -> Result<PathBuf> {
        let dir = scratch.join(spec.name);
        let state_dir = dir.join("state");
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let config = spec.config_toml(&state_dir, log_level);
        chatmail_config::parse(&config)
            .with_context(|| format!("generated config of relay {}", spec.name))?;
        let config_path = dir.join("madmail.toml");
        fs::write(&config_path, config)?;
        Ok(config_path)
    }

    /// Writes the config and starts the relay.
    pub(crate) fn start(
        madmail: &Path,
        scratch: &Path,
        spec: &RelaySpec,
        log_level: &str,
    ) -> Result<Self> {
        let config_path = Self::write_config(scratch, spec, log_level)?;
        let dir = scratch.join(spec.name);
        if let Some(front) = &spec.iroh_front {
            let target = chatmail_testkit::tunnel::Target {
                addr: spec.https,
                cert: dir.join("state").join("tls").join("cert.pem"),
                server_name: spec.domain.clone(),
            };
            chatmail_testkit::tunnel::spawn_thread(front.try_clone()?, target)
                .map_err(|e| anyhow::anyhow!("starting the iroh front of {}: {e}", spec.name))?;
        }
        let log = dir.join("relay.log");
        let log_file = fs::File::create(&log)?;
        let child = Command::new(madmail)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", madmail.display()))?;
        println!(
            "relay {} ({}) started, log: {}",
            spec.name,
            spec.domain,
            log.display()
        );
        Ok(Self {
            name: spec.name,
            child: Some(child),
            log,
            config: config_path,
            addresses: spec.addresses(),
        })
    }

    /// Polls until every listening port accepts a TCP connection.
    pub(crate) fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending = self.addresses.clone();
        while !pending.is_empty() {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.print_log_tail();
                bail!("relay {} exited before it was ready: {status}", self.name);
            }
            if Instant::now() > deadline {
                self.print_log_tail();
                bail!(
                    "relay {} not listening on {pending:?} after {READY_TIMEOUT:?}",
                    self.name
                );
            }
            pending.retain(|addr| {
                TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err()
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Kills the relay and reaps it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The process may have exited on its own: nothing left to do then.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Prints the end of the relay's log to stderr.
    pub(crate) fn print_log_tail(&self) {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "===== relay {} log ({}) =====",
            self.name,
            self.log.display()
        );
        lines[start..].iter().for_each(|line| eprintln!("{line}"));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_relay_config_is_accepted_by_the_config_crate() {
        let spec = RelaySpec::loopback("main", "_madmail.test").unwrap();
        let text = spec.config_toml(Path::new("/tmp/state"), "info");
        let settings = chatmail_config::parse(&text).unwrap();
        assert!(settings.self_signed);
        assert_eq!(settings.config.listen.imaps, vec![spec.imaps]);
        assert_eq!(
            settings.config.listen.submission,
            spec.submission.into_iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn cmping_relay_uses_standard_ports_and_no_starttls() {
        let spec = RelaySpec::standard_ports("cmping");
        let settings =
            chatmail_config::parse(&spec.config_toml(Path::new("/tmp/s"), "info")).unwrap();
        assert_eq!(settings.config.listen.imaps[0].port(), 993);
        assert_eq!(settings.config.listen.submissions[0].port(), 465);
        assert!(settings.config.listen.imap.is_empty());
        assert!(settings.config.listen.submission.is_empty());
    }

    #[test]
    fn relay_with_features_publishes_metadata_and_turn_and_tells_the_scenarios() {
        let spec = RelaySpec::standard("relay1", "_relay1.test", Ipv4Addr::new(127, 0, 0, 2))
            .with_features()
            .unwrap();
        let settings =
            chatmail_config::parse(&spec.config_toml(Path::new("/tmp/s"), "info")).unwrap();
        let config = &settings.config;
        assert!(config.turn.enabled);
        assert_eq!(config.turn.host.as_deref(), Some("127.0.0.2"));
        assert_eq!(config.turn.listen[0].port(), config.turn.port);
        assert_eq!(config.turn.listen[0].ip().to_string(), "127.0.0.2");
        assert_eq!(config.metadata.admin.as_deref(), Some(FEATURE_ADMIN));
        assert!(config.admin.enabled);
        assert!(!config.log.no_log);
        let env = spec.scenario_env("MADMAIL");
        let get = |key| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("MADMAIL_TURN_HOST"), Some("127.0.0.2"));
        assert_eq!(get("MADMAIL_ADMIN"), Some(FEATURE_ADMIN));
        let front = spec.iroh_front.as_ref().unwrap().local_addr().unwrap();
        let url = format!("http://{front}/");
        assert_eq!(config.iroh.url.as_deref(), Some(url.as_str()));
        assert_eq!(get("MADMAIL_IROH_URL"), Some(url.as_str()));
        assert!(config.shadowsocks.enabled);
        assert_eq!(config.shadowsocks.host.as_deref(), Some("127.0.0.2"));
        let proxy = config.shadowsocks.listen[0];
        assert_eq!(proxy.ip().to_string(), "127.0.0.2");
        assert_eq!(
            get("MADMAIL_PROXY_PORT"),
            Some(proxy.port().to_string().as_str())
        );
        assert!(config.metrics.enabled);
        let metrics = format!("http://{}/metrics", config.metrics.listen);
        assert_eq!(get("MADMAIL_METRICS_URL"), Some(metrics.as_str()));
        assert_eq!(get("MADMAIL_NO_LOG"), None);
    }

    #[test]
    fn no_log_relay_config_turns_logging_off_and_says_so() {
        let mut spec = RelaySpec::loopback("nolog", "_nolog.test").unwrap();
        spec.no_log = true;
        let settings =
            chatmail_config::parse(&spec.config_toml(Path::new("/tmp/s"), "info")).unwrap();
        assert!(settings.config.log.no_log);
        assert!(!settings.config.turn.enabled);
        let env = spec.scenario_env("MADMAIL");
        assert!(env.contains(&("MADMAIL_NO_LOG".to_owned(), "1".to_owned())));
        assert!(!env.iter().any(|(k, _)| k == "MADMAIL_TURN_HOST"));
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports::<5>().unwrap();
        let mut unique: Vec<u16> = ports.iter().map(|a| a.port()).collect();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 5);
        let (low, high) = below_ephemeral();
        assert!(low < high);
        assert!(ports.iter().all(|a| (low..high).contains(&a.port())));
    }

    #[test]
    fn scenario_env_names_every_port() {
        let spec = RelaySpec::loopback("main", "_madmail.test").unwrap();
        let env = spec.scenario_env("MADMAIL");
        let get = |key| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert_eq!(get("MADMAIL_HOST").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            get("MADMAIL_HTTPS_PORT"),
            Some(spec.https.port().to_string())
        );
        assert_eq!(
            get("MADMAIL_SUBMISSION_PORT"),
            spec.submission.map(|a| a.port().to_string())
        );
        let second = spec.scenario_env("MADMAIL2");
        assert!(second.iter().all(|(k, _)| k.starts_with("MADMAIL2_")));
        assert_eq!(second.len(), env.len());
    }

    #[test]
    fn standard_relay_listens_on_every_standard_port_of_its_address() {
        let mut spec = RelaySpec::standard("relay1", "_relay1.test", Ipv4Addr::new(127, 0, 0, 2));
        spec.extra_toml = "\n[federation]\ndns_servers = [\"127.0.0.1:5353\"]\n".into();
        let settings =
            chatmail_config::parse(&spec.config_toml(Path::new("/tmp/s"), "info")).unwrap();
        let listen = &settings.config.listen;
        let ports = |addrs: &[SocketAddr]| addrs.iter().map(|a| a.port()).collect::<Vec<_>>();
        assert_eq!(ports(&listen.smtp), [25]);
        assert_eq!(ports(&listen.submission), [587]);
        assert_eq!(ports(&listen.imap), [143]);
        assert!(
            listen
                .https
                .iter()
                .all(|a| a.ip().to_string() == "127.0.0.2")
        );
        assert_eq!(settings.config.federation.dns_servers[0].port(), 5353);
    }
}
