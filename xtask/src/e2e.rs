//! End-to-end runs with real Delta Chat clients.
//!
//! Flow of `cargo xtask e2e`:
//! 1. a Python venv with the pinned clients (`tests-vm/requirements.txt`) is
//!    created once under the target directory and reinstalled only when the
//!    requirements file changed (a copy of it is kept as a stamp);
//! 2. the `madmail` binary is taken from `--madmail` or built with
//!    `cargo build -p chatmail`;
//! 3. a temporary directory gets one config and state directory per relay:
//!    the main relay (`_madmail.test`, loopback, free high ports) and, unless
//!    `--no-cmping`, an IP-only relay (`127.0.0.1`) on the standard ports
//!    993/465/443 that `cmping` insists on;
//! 4. the relays start and are ready once every listening port accepts;
//! 5. `pytest tests-vm/scenarios` runs with the relay described by
//!    `MADMAIL_*` variables (see `tests-vm/README.md`);
//! 6. the relays are killed (also when anything above fails: [`Relay`]
//!    kills on drop) and their logs are printed if pytest failed.
//!
//! Invariant: no relay process outlives the run, and the temporary
//! directory is removed unless `--keep` is given.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

/// Options of `cargo xtask e2e`.
#[derive(clap::Args, Debug, Clone)]
pub struct E2eOptions {
    /// An already-built `madmail` binary; by default `cargo build -p chatmail`
    /// builds one.
    #[arg(long, value_name = "PATH")]
    pub madmail: Option<PathBuf>,
    /// Only run the scenarios matching this pytest `-k` expression.
    #[arg(short = 'k', value_name = "FILTER")]
    pub filter: Option<String>,
    /// Keep the temporary directory (configs, relay state and logs).
    #[arg(long)]
    pub keep: bool,
    /// Skip the cmping relay, which needs 127.0.0.1 ports 993, 465 and 443.
    #[arg(long)]
    pub no_cmping: bool,
    /// Log filter for the relays.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Python used to create the venv.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Further arguments for pytest (after `--`).
    #[arg(last = true)]
    pub pytest_args: Vec<String>,
}

/// How long a relay may take until all its ports accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of each relay log printed when the run failed.
const LOG_TAIL_LINES: usize = 200;

/// Runs the end-to-end scenarios; fails if any scenario fails.
pub fn run(opts: E2eOptions) -> Result<()> {
    let root = workspace_root()?;
    let venv = ensure_venv(&root, &opts.python)?;
    let madmail = match &opts.madmail {
        Some(path) => path
            .canonicalize()
            .with_context(|| format!("--madmail {}", path.display()))?,
        None => build_madmail(&root)?,
    };
    let scratch = Scratch::create(opts.keep)?;

    let main_spec = RelaySpec::loopback("main", "_madmail.test")?;
    let start = |spec: &RelaySpec| Relay::start(&madmail, &scratch.path, spec, &opts.log_level);
    let mut main = start(&main_spec)?;
    main.wait_ready()?;
    let mut relays = vec![main];
    if !opts.no_cmping {
        let mut cmping = start(&RelaySpec::standard_ports("cmping"))?;
        cmping.wait_ready().context(
            "the cmping relay needs 127.0.0.1 ports 993, 465 and 443 \
             (free, and root to bind them); --no-cmping skips it",
        )?;
        relays.push(cmping);
    }

    let passed = run_pytest(&root, &venv, &scratch.path, &main_spec, &opts)?;
    for relay in &mut relays {
        relay.stop();
    }
    if passed && opts.filter.is_none() {
        let bin = venv.join("bin");
        crate::demo::check(&root, &madmail, &bin.join("python"), &venv_path(&bin)?)?;
    }
    if !passed {
        relays.iter().for_each(Relay::print_log_tail);
        bail!(
            "end-to-end scenarios failed (logs above{})",
            scratch.kept_note()
        );
    }
    println!("end-to-end scenarios passed{}", scratch.kept_note());
    Ok(())
}

/// The workspace checkout: the parent of this crate, else the nearest
/// ancestor of the working directory that holds `tests-vm/`.
fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cwd = std::env::current_dir()?;
    manifest
        .parent()
        .into_iter()
        .chain(cwd.ancestors())
        .find(|dir| dir.join("tests-vm/requirements.txt").is_file())
        .map(Path::to_path_buf)
        .context("no tests-vm/requirements.txt found above this crate or the working directory")
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Creates the venv if needed and (re)installs the pinned requirements when
/// they differ from the ones installed last time.
fn ensure_venv(root: &Path, python: &str) -> Result<PathBuf> {
    let requirements_path = root.join("tests-vm/requirements.txt");
    let requirements = fs::read_to_string(&requirements_path)
        .with_context(|| format!("reading {}", requirements_path.display()))?;
    let venv = target_dir(root).join("e2e-venv");
    let stamp = venv.join("installed-requirements.txt");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        return Ok(venv);
    }
    if !venv.join("bin/python").exists() {
        run_checked(Command::new(python).arg("-m").arg("venv").arg(&venv))?;
    }
    let pip = venv.join("bin/pip");
    run_checked(
        Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements_path),
    )?;
    fs::write(&stamp, requirements).context("writing the venv stamp")?;
    Ok(venv)
}

/// Builds the relay binary in debug mode and returns its path.
fn build_madmail(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_checked(
        Command::new(cargo)
            .current_dir(root)
            .args(["build", "-p", "chatmail"]),
    )?;
    let binary = target_dir(root).join("debug/madmail");
    ensure!(
        binary.exists(),
        "{} missing after the build",
        binary.display()
    );
    Ok(binary)
}

/// Runs a command, failing unless it exits successfully.
fn run_checked(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// `PATH` with the venv's `bin` first (deltachat-rpc-server, cmping).
fn venv_path(bin: &Path) -> Result<std::ffi::OsString> {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&rest));
    Ok(std::env::join_paths(paths)?)
}

/// Runs pytest over the scenarios; `Ok(false)` when a scenario failed.
fn run_pytest(
    root: &Path,
    venv: &Path,
    scratch: &Path,
    main: &RelaySpec,
    opts: &E2eOptions,
) -> Result<bool> {
    let bin = venv.join("bin");
    let path = venv_path(&bin)?;
    let mut command = Command::new(bin.join("python"));
    command
        .current_dir(root)
        .args(["-m", "pytest", "tests-vm/scenarios", "-v"])
        .arg("--basetemp")
        .arg(scratch.join("pytest"))
        .env("PATH", path)
        .envs(main.scenario_env());
    if let Some(filter) = &opts.filter {
        command.arg("-k").arg(filter);
    }
    if !opts.no_cmping {
        command.env("MADMAIL_CMPING_RELAY", "127.0.0.1");
    }
    command.args(&opts.pytest_args);
    let status = command.status().context("starting pytest")?;
    Ok(status.success())
}

/// What one relay listens on and how it is named.
struct RelaySpec {
    /// Short name for files and log headers.
    name: &'static str,
    /// `mail_domain` of the relay.
    domain: String,
    /// IMAP implicit TLS.
    imaps: SocketAddr,
    /// SMTP submission implicit TLS.
    submissions: SocketAddr,
    /// STARTTLS listeners; `None` leaves the service off.
    imap: Option<SocketAddr>,
    submission: Option<SocketAddr>,
    /// HTTPS (`/new`, `/mxdeliv`).
    https: SocketAddr,
    /// SMTP MX for other relays; `None` leaves it off.
    smtp: Option<SocketAddr>,
}

impl RelaySpec {
    /// A relay on loopback with free high ports for every service.
    fn loopback(name: &'static str, domain: &str) -> Result<Self> {
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
        })
    }

    /// An IP-only relay `127.0.0.1` on the standard implicit-TLS ports.
    fn standard_ports(name: &'static str) -> Self {
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
        }
    }

    /// Every address the relay listens on.
    fn addresses(&self) -> Vec<SocketAddr> {
        let mut all = vec![self.imaps, self.submissions, self.https];
        all.extend(self.imap.iter().chain(&self.submission).chain(&self.smtp));
        all
    }

    /// The relay's configuration file (every service, self-signed TLS).
    fn config_toml(&self, state_dir: &Path, log_level: &str) -> String {
        let list = |addr: Option<SocketAddr>| match addr {
            Some(addr) => format!("[\"{addr}\"]"),
            None => "[]".to_owned(),
        };
        format!(
            "mail_domain = \"{domain}\"\nstate_dir = \"{state}\"\n\n\
             [log]\nno_log = false\nlevel = \"{log_level}\"\n\n\
             [listen]\nsubmissions = {submissions}\nsubmission = {submission}\n\
             imaps = {imaps}\nimap = {imap}\nhttps = {https}\nsmtp = {smtp}\n\n\
             [tls]\nmode = \"self-signed\"\n",
            domain = self.domain,
            state = state_dir.display(),
            submissions = list(Some(self.submissions)),
            submission = list(self.submission),
            imaps = list(Some(self.imaps)),
            imap = list(self.imap),
            https = list(Some(self.https)),
            smtp = list(self.smtp),
        )
    }

    /// The `MADMAIL_*` variables describing this relay to the scenarios.
    fn scenario_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("MADMAIL_DOMAIN", self.domain.clone()),
            ("MADMAIL_HOST", self.imaps.ip().to_string()),
            ("MADMAIL_IMAPS_PORT", self.imaps.port().to_string()),
            (
                "MADMAIL_SUBMISSIONS_PORT",
                self.submissions.port().to_string(),
            ),
            ("MADMAIL_HTTPS_PORT", self.https.port().to_string()),
        ];
        if let Some(imap) = self.imap {
            env.push(("MADMAIL_IMAP_PORT", imap.port().to_string()));
        }
        if let Some(submission) = self.submission {
            env.push(("MADMAIL_SUBMISSION_PORT", submission.port().to_string()));
        }
        env
    }
}

/// `N` distinct free loopback ports (all held open until each is chosen).
fn free_ports<const N: usize>() -> Result<[SocketAddr; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports")?;
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for (addr, listener) in addrs.iter_mut().zip(&listeners) {
        *addr = listener.local_addr()?;
    }
    Ok(addrs)
}

/// A running relay process; killed when dropped.
struct Relay {
    /// Name from the spec, for messages.
    name: &'static str,
    /// The process; `None` once stopped.
    child: Option<Child>,
    /// File receiving the relay's stdout and stderr.
    log: PathBuf,
    /// Addresses that must accept before the relay counts as ready.
    addresses: Vec<SocketAddr>,
}

impl Relay {
    /// Writes the config (validated by the config crate) and starts the relay.
    fn start(madmail: &Path, scratch: &Path, spec: &RelaySpec, log_level: &str) -> Result<Self> {
        let dir = scratch.join(spec.name);
        let state_dir = dir.join("state");
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let config = spec.config_toml(&state_dir, log_level);
        chatmail_config::parse(&config)
            .with_context(|| format!("generated config of relay {}", spec.name))?;
        let config_path = dir.join("madmail.toml");
        fs::write(&config_path, config)?;
        let log = dir.join("relay.log");
        let log_file = fs::File::create(&log)?;
        let child = Command::new(madmail)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
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
            addresses: spec.addresses(),
        })
    }

    /// Polls until every listening port accepts a TCP connection.
    fn wait_ready(&mut self) -> Result<()> {
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
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The process may have exited on its own: nothing left to do then.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Prints the end of the relay's log to stderr.
    fn print_log_tail(&self) {
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

/// The run's temporary directory; removed on drop unless kept.
struct Scratch {
    /// Absolute path of the directory.
    path: PathBuf,
    /// Whether `--keep` asked to leave it behind.
    keep: bool,
}

impl Scratch {
    fn create(keep: bool) -> Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let name = format!("madmail-e2e-{}-{nanos:08x}", std::process::id());
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }

    /// A note telling where the kept files are, or nothing.
    fn kept_note(&self) -> String {
        match self.keep {
            true => format!("; files kept in {}", self.path.display()),
            false => String::new(),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: a leftover temp dir is harmless.
            let _ = fs::remove_dir_all(&self.path);
        }
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
    fn free_ports_are_distinct() {
        let ports = free_ports::<5>().unwrap();
        let mut unique: Vec<u16> = ports.iter().map(|a| a.port()).collect();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 5);
    }

    #[test]
    fn scenario_env_names_every_port() {
        let spec = RelaySpec::loopback("main", "_madmail.test").unwrap();
        let env = spec.scenario_env();
        let get = |key| env.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        assert_eq!(get("MADMAIL_HOST").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            get("MADMAIL_HTTPS_PORT"),
            Some(spec.https.port().to_string())
        );
        assert_eq!(
            get("MADMAIL_SUBMISSION_PORT"),
            spec.submission.map(|a| a.port().to_string())
        );
    }
}
