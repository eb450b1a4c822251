//! End-to-end runs with real Delta Chat clients.
//!
//! Flow of `cargo xtask e2e`:
//! 1. a Python venv with the pinned clients (`tests-vm/requirements.txt`) is
//!    created once under the target directory and reinstalled only when the
//!    requirements file changed (a copy of it is kept as a stamp);
//! 2. the `madmail` binary is taken from `--madmail` or built with
//!    `cargo build -p chatmail`;
//! 3. a temporary directory gets one config and state directory per relay.
//!    By default (see [`federation`]): relays `_relay1.test` and
//!    `_relay2.test` on 127.0.0.2/.3, federating over `/mxdeliv` through a
//!    `dnsmasq` zone; `_relay3.test` and `_relay4.test` on 127.0.0.4/.5,
//!    federating over SMTP only; unless `--no-cmping`, IP-only relays on
//!    127.0.0.1 and 127.0.0.6 for `cmping`. All on the standard ports
//!    (root). With `--no-federation`: the main relay (`_madmail.test`,
//!    loopback, free high ports) and, unless `--no-cmping`, the IP-only
//!    relay `127.0.0.1` on 993/465/443;
//!    Relays 1 and 2 (or the main relay) publish server METADATA and TURN
//!    credentials ([`RelaySpec::with_features`]). In both set-ups a
//!    no-log relay (`_nolog.test`, free high loopback ports) runs too, and,
//!    when libfaketime is installed, the clock relay (`_clock.test`, free
//!    high loopback ports, a small quota, its wall clock moved by the
//!    scenarios through [`FakeClock`]);
//! 4. the relays start and are ready once every listening port accepts;
//! 5. pytest runs once per relay set ([`PytestRun`]), the last ones
//!    `test_no_log.py` against the no-log relay and
//!    `test_quota_retention.py` against the clock relay: the relays are
//!    described by `MADMAIL_*` and `MADMAIL2_*` variables (see
//!    `tests-vm/README.md`);
//! 6. the relays are killed (also when anything above fails: [`Relay`]
//!    kills on drop), then the DNS server, and the relay logs are printed
//!    if pytest failed.
//!
//! Invariant: no relay process outlives the run, and the temporary
//! directory is removed unless `--keep` is given.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

#[path = "e2e_federation.rs"]
mod federation;
#[path = "e2e_relay.rs"]
mod relay;

pub(crate) use chatmail_testkit::clock::FakeClock;
pub(crate) use relay::{Relay, RelaySpec};

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
    /// Skip the cmping relays, which need ports 993, 465, 443 and 25 on
    /// 127.0.0.1 (and 127.0.0.6 with federation).
    #[arg(long)]
    pub no_cmping: bool,
    /// Only the single main relay on free high ports: no federation relays,
    /// no DNS server, no root needed (besides the cmping relay).
    #[arg(long)]
    pub no_federation: bool,
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
    let started = Instant::now();
    let mut topology = match opts.no_federation {
        true => single_relay(&madmail, &scratch.path, &opts)?,
        false => federation::start(&madmail, &scratch.path, &opts)?,
    };
    add_no_log_relay(&mut topology, &madmail, &scratch.path, &opts)?;
    add_clock_relay(&mut topology, &madmail, &scratch.path, &opts)?;
    let mut passed = true;
    for pytest in &topology.runs {
        println!("===== scenarios: {} =====", pytest.label);
        passed &= run_pytest(&root, &venv, &scratch.path, pytest, &opts)?;
    }
    for relay in &mut topology.relays {
        relay.stop();
    }
    println!("relays and scenarios took {:.0?}", started.elapsed());
    if passed && opts.filter.is_none() {
        let bin = venv.join("bin");
        crate::demo::check(&root, &madmail, &bin.join("python"), &venv_path(&bin)?)?;
    }
    if !passed {
        topology.relays.iter().for_each(Relay::print_log_tail);
        bail!(
            "end-to-end scenarios failed (logs above{})",
            scratch.kept_note()
        );
    }
    println!("end-to-end scenarios passed{}", scratch.kept_note());
    Ok(())
}

/// The relays of a run and the pytest invocations against them.
pub(crate) struct Topology {
    /// Running relays; dropped (killed) before the DNS server.
    pub(crate) relays: Vec<Relay>,
    /// One pytest run per relay set, in order.
    pub(crate) runs: Vec<PytestRun>,
    /// The DNS server the relays resolve each other through, if any.
    pub(crate) _dns: Option<federation::Dnsmasq>,
}

/// One pytest invocation: which scenarios, against which relays.
pub(crate) struct PytestRun {
    /// Shown before the run.
    pub(crate) label: &'static str,
    /// Scenario files or directories, relative to the workspace.
    pub(crate) paths: Vec<&'static str>,
    /// `MADMAIL*` variables describing the relays.
    pub(crate) env: Vec<(String, String)>,
}

/// `--no-federation`: the main relay on free high loopback ports and, unless
/// `--no-cmping`, the IP-only cmping relay; no second relay.
fn single_relay(madmail: &Path, scratch: &Path, opts: &E2eOptions) -> Result<Topology> {
    let main_spec = RelaySpec::loopback("main", "_madmail.test")?.with_features()?;
    let mut main = Relay::start(madmail, scratch, &main_spec, &opts.log_level)?;
    main.wait_ready()?;
    let mut env = main_spec.scenario_env("MADMAIL");
    env.push(("MADMAIL_LOG".into(), main.log.display().to_string()));
    env.push(("MADMAIL_CONFIG".into(), main.config.display().to_string()));
    let mut relays = vec![main];
    if !opts.no_cmping {
        let mut cmping = Relay::start(
            madmail,
            scratch,
            &RelaySpec::standard_ports("cmping"),
            &opts.log_level,
        )?;
        cmping.wait_ready().context(
            "the cmping relay needs 127.0.0.1 ports 993, 465 and 443 \
             (free, and root to bind them); --no-cmping skips it",
        )?;
        relays.push(cmping);
        env.push(("MADMAIL_CMPING_RELAY".into(), "127.0.0.1".into()));
    }
    let runs = vec![PytestRun {
        label: "single relay",
        paths: vec!["tests-vm/scenarios"],
        env,
    }];
    Ok(Topology {
        relays,
        runs,
        _dns: None,
    })
}

/// Starts the no-log relay (`_nolog.test` on free high loopback ports,
/// `[log] no_log = true`) and adds the run of `test_no_log.py` against it,
/// which drives a full scenario and then searches its log (`MADMAIL_LOG`)
/// for addresses.
fn add_no_log_relay(
    topology: &mut Topology,
    madmail: &Path,
    scratch: &Path,
    opts: &E2eOptions,
) -> Result<()> {
    let mut spec = RelaySpec::loopback("nolog", "_nolog.test")?;
    spec.no_log = true;
    let mut relay = Relay::start(madmail, scratch, &spec, &opts.log_level)?;
    relay.wait_ready()?;
    let mut env = spec.scenario_env("MADMAIL");
    env.push(("MADMAIL_LOG".into(), relay.log.display().to_string()));
    topology.relays.push(relay);
    topology.runs.push(PytestRun {
        label: "no-log relay",
        paths: vec!["tests-vm/scenarios/test_no_log.py"],
        env,
    });
    Ok(())
}

/// Quota of the clock relay: small, so that a few messages of about
/// 100 kB reach the trim threshold and the limit.
const CLOCK_RELAY_QUOTA: u64 = 1_050_000;

/// Starts the clock relay (`_clock.test` on free high loopback ports, a
/// quota of [`CLOCK_RELAY_QUOTA`] bytes, no sending rate limit worth
/// mentioning, default retention) under libfaketime, and adds the run of
/// `test_quota_retention.py`, which moves its clock through the offset file
/// (`MADMAIL_FAKETIME_FILE`) and runs `madmail expire` on the same clock.
/// Without libfaketime the run is left out, with a note.
fn add_clock_relay(
    topology: &mut Topology,
    madmail: &Path,
    scratch: &Path,
    opts: &E2eOptions,
) -> Result<()> {
    let mut spec = clock_relay_spec()?;
    fs::create_dir_all(scratch.join(spec.name))?;
    let Some(clock) =
        FakeClock::create(scratch.join(spec.name).join("faketime")).map_err(anyhow::Error::msg)?
    else {
        println!(
            "SKIP: quota, trim and retention scenarios need libfaketime \
             (Debian package `faketime`)"
        );
        return Ok(());
    };
    spec.env = clock.env();
    let mut relay = Relay::start(madmail, scratch, &spec, &opts.log_level)?;
    relay.wait_ready()?;
    let mut env = spec.scenario_env("MADMAIL");
    env.extend([
        ("MADMAIL_LOG".into(), relay.log.display().to_string()),
        ("MADMAIL_BIN".into(), madmail.display().to_string()),
        ("MADMAIL_CONFIG".into(), relay.config.display().to_string()),
        ("MADMAIL_QUOTA".into(), CLOCK_RELAY_QUOTA.to_string()),
        (
            "MADMAIL_FAKETIME_LIB".into(),
            clock.library.display().to_string(),
        ),
        (
            "MADMAIL_FAKETIME_FILE".into(),
            clock.file.display().to_string(),
        ),
    ]);
    topology.relays.push(relay);
    topology.runs.push(PytestRun {
        label: "clock relay",
        paths: vec!["tests-vm/scenarios/test_quota_retention.py"],
        env,
    });
    Ok(())
}

/// The clock relay's listeners and limits (its clock comes on top).
fn clock_relay_spec() -> Result<RelaySpec> {
    let mut spec = RelaySpec::loopback("clock", "_clock.test")?;
    spec.limits_toml = format!(
        "max_mailbox_size = {CLOCK_RELAY_QUOTA}\n\
         max_user_send_per_minute = 10000\nmax_user_send_burst = 1000\n"
    );
    Ok(spec)
}

/// The workspace checkout: the parent of this crate, else the nearest
/// ancestor of the working directory that holds `tests-vm/`.
fn workspace_root() -> Result<PathBuf> {
    let manifest = crate::manifest_dir();
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
/// A `-k` filter that selects nothing in this run is not a failure.
fn run_pytest(
    root: &Path,
    venv: &Path,
    scratch: &Path,
    pytest: &PytestRun,
    opts: &E2eOptions,
) -> Result<bool> {
    let bin = venv.join("bin");
    let path = venv_path(&bin)?;
    let mut command = Command::new(bin.join("python"));
    command
        .current_dir(root)
        .args(["-m", "pytest", "-v"])
        .args(&pytest.paths)
        .arg("--basetemp")
        .arg(scratch.join("pytest"))
        .env("PATH", path)
        .env_remove("MADMAIL2_DOMAIN")
        .envs(pytest.env.iter().map(|(k, v)| (k, v)));
    if let Some(filter) = &opts.filter {
        command.arg("-k").arg(filter);
    }
    command.args(&opts.pytest_args);
    let status = command.status().context("starting pytest")?;
    // pytest exit code 5: no test was collected.
    let nothing_selected = status.code() == Some(5) && opts.filter.is_some();
    Ok(status.success() || nothing_selected)
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
    fn clock_relay_has_the_small_quota_and_default_retention() {
        let spec = clock_relay_spec().unwrap();
        let text = spec.config_toml(Path::new("/tmp/s"), "info");
        let config = chatmail_config::parse(&text).unwrap().config;
        assert_eq!(config.limits.max_mailbox_size, CLOCK_RELAY_QUOTA);
        assert!(
            config.limits.max_user_send_burst >= 100,
            "scenarios send bursts"
        );
        // The scenarios expect the default rules (docs/specifications.md §5).
        assert_eq!(config.retention.delete_mails_after, 20);
        assert_eq!(config.retention.delete_large_after, 7);
        assert_eq!(config.retention.large_message_size, 200_000);
        assert_eq!(config.retention.delete_inactive_users_after, 90);
        assert!(
            !config.log.no_log,
            "the scenarios read `expiry done` from the log"
        );
    }
}
