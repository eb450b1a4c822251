//! `madmail install` and `madmail uninstall`: set up madmail on a Debian
//! host from the static binary, or remove it.
//!
//! Layout (below `--root`, `/` by default):
//!
//! | path | mode | owner |
//! |---|---|---|
//! | `/usr/local/bin/madmail` | 0755 | root |
//! | `/etc/systemd/system/madmail.service` | 0644 | root |
//! | `/etc/madmail/` | 0750 | root:madmail |
//! | `/etc/madmail/chatmail.toml` | 0640 | root:madmail |
//! | `/var/lib/madmail/` (with the DKIM key) | 0700 | madmail:madmail |
//!
//! Invariants: an existing configuration is never overwritten; running
//! `install` again only refreshes the binary and the unit; `uninstall`
//! deletes configuration and state (every account and message) only with
//! `--purge`. With `--root` nothing outside that directory is touched: no
//! system user is created and systemd is not called; ownership is set only
//! when `<root>/etc/passwd` already names the `madmail` user.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, ensure};
use chatmail_config::{MailDomain, Settings};

/// The systemd unit of the release tarball, installed as is.
const UNIT: &str = include_str!("../../../dist/madmail.service");
/// The example configuration of the release tarball: the installed
/// configuration is this text with the domain filled in.
const EXAMPLE_CONFIG: &str = include_str!("../../../dist/chatmail.toml.example");
const EXAMPLE_DOMAIN_LINE: &str = "mail_domain = \"chat.example.org\"";
const EXAMPLE_TLS_LINE: &str = "mode = \"acme\"";

const USER: &str = "madmail";
const BINARY: &str = "usr/local/bin/madmail";
const UNIT_FILE: &str = "etc/systemd/system/madmail.service";
const CONFIG_DIR: &str = "etc/madmail";
const CONFIG: &str = "etc/madmail/chatmail.toml";
const STATE_DIR: &str = "var/lib/madmail";

/// Options of `madmail install`.
#[derive(clap::Args)]
pub struct InstallOptions {
    /// Mail domain: a DNS name pointing at this host, or an IPv4 address
    /// for an IP-only relay.
    #[arg(long)]
    domain: String,
    /// Install below this directory instead of `/` (images, tests): no
    /// system user is created and systemd is not called.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The madmail binary to install; default: the running one.
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// Options of `madmail uninstall`.
#[derive(clap::Args)]
pub struct UninstallOptions {
    /// Remove from below this directory instead of `/`.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Also delete /etc/madmail and /var/lib/madmail: every account, every
    /// message and the DKIM key.
    #[arg(long)]
    purge: bool,
}

/// Who owns the relay's files: the `madmail` user and group, when known.
#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// `madmail install`.
pub fn install(options: InstallOptions) -> anyhow::Result<ExitCode> {
    let domain = MailDomain::parse(&options.domain)
        .map_err(|e| anyhow::anyhow!("--domain {:?}: {e}", options.domain))?;
    let fresh_config = render_config(&domain)?;
    let source = match &options.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot find the running binary")?,
    };
    check_binary(&source)?;
    let root = Root::new(options.root.as_deref())?;
    let owner = root.system_user()?;

    root.dir(CONFIG_DIR, 0o750, owner.map(|o| (None, o.gid)))?;
    root.dir(STATE_DIR, 0o700, owner.map(|o| (Some(o.uid), o.gid)))?;
    install_binary(&source, &root.path(BINARY))?;
    println!("installed {}", root.path(BINARY).display());
    write_atomic(&root.path(UNIT_FILE), UNIT.as_bytes(), 0o644)?;
    println!("installed {}", root.path(UNIT_FILE).display());
    let config = root.path(CONFIG);
    if write_new(&config, fresh_config.as_bytes(), 0o640)? {
        println!("wrote {}", config.display());
    } else {
        println!("kept the existing {}", config.display());
    }
    if let Some(owner) = owner {
        chown(&config, None, owner.gid)?;
    }

    let settings = chatmail_config::load(&config).with_context(|| {
        format!(
            "{}: fix it, then run `madmail install` again",
            config.display()
        )
    })?;
    if settings.domain != domain {
        println!(
            "note: {} keeps mail_domain = {:?}; --domain {} was not applied",
            config.display(),
            settings.config.mail_domain,
            options.domain
        );
    }
    print_dns(&root, &settings, owner)?;
    root.reload_systemd();
    print_next_steps(&root, &settings);
    Ok(ExitCode::SUCCESS)
}

/// `madmail uninstall`.
pub fn uninstall(options: UninstallOptions) -> anyhow::Result<ExitCode> {
    let root = Root::new(options.root.as_deref())?;
    // A state directory configured elsewhere is never deleted: it might be
    // shared with something else, or a typo for `/`.
    let configured = chatmail_config::load(&root.path(CONFIG))
        .ok()
        .map(|s| s.config.state_dir)
        .filter(|dir| dir != &Path::new("/").join(STATE_DIR));
    let state_dir = root.path(STATE_DIR);
    if root.is_host() && root.path(UNIT_FILE).exists() && systemd_running() {
        run_logged(Command::new("systemctl").args(["disable", "--now", "madmail.service"]));
    }
    for file in [UNIT_FILE, BINARY] {
        if remove_file(&root.path(file))? {
            println!("removed {}", root.path(file).display());
        }
    }
    root.reload_systemd();
    if options.purge {
        for dir in [root.path(CONFIG_DIR), state_dir] {
            if dir.exists() {
                fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
                println!("removed {}", dir.display());
            }
        }
        if let Some(dir) = configured {
            println!(
                "kept the configured state_dir {}: delete it yourself",
                dir.display()
            );
        }
        if root.is_host() {
            println!("kept the system user {USER} (`userdel {USER}` removes it)");
        }
    } else {
        println!(
            "kept {} and {}: `madmail uninstall --purge` deletes them, with every account and message",
            root.path(CONFIG_DIR).display(),
            state_dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The example configuration with `domain` filled in; a domain that needs
/// a self-signed certificate (IPv4, `_` prefix) gets one instead of ACME.
/// Validated here, before anything is written.
fn render_config(domain: &MailDomain) -> anyhow::Result<String> {
    let mut config = EXAMPLE_CONFIG.replacen(
        EXAMPLE_DOMAIN_LINE,
        &format!("mail_domain = \"{}\"", domain.host()),
        1,
    );
    if domain.wants_self_signed() {
        config = config.replacen(EXAMPLE_TLS_LINE, "mode = \"self-signed\"", 1);
    }
    let settings = chatmail_config::parse(&config).context("the generated configuration")?;
    ensure!(
        &settings.domain == domain,
        "the generated configuration has mail_domain {:?}",
        settings.config.mail_domain
    );
    Ok(config)
}

/// Refuses a file that is not a madmail binary this host can run.
fn check_binary(path: &Path) -> anyhow::Result<()> {
    let output = Command::new(path)
        .arg("version")
        .output()
        .with_context(|| format!("cannot run {}", path.display()))?;
    let printed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && printed.starts_with("madmail "),
        "{} is not a madmail binary (`version` printed {printed:?})",
        path.display()
    );
    Ok(())
}

/// The target file system: `/` or `--root`.
struct Root {
    dir: PathBuf,
    host: bool,
}

impl Root {
    fn new(dir: Option<&Path>) -> anyhow::Result<Self> {
        let Some(dir) = dir else {
            ensure!(
                is_superuser(),
                "installing on this host needs root (or --root DIR for a directory tree)"
            );
            return Ok(Self {
                dir: PathBuf::from("/"),
                host: true,
            });
        };
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            host: false,
        })
    }

    /// Whether this is the running host (no `--root`).
    fn is_host(&self) -> bool {
        self.host
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// An absolute path of the installed system, below the root.
    fn rebase(&self, path: &Path) -> PathBuf {
        self.dir.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The `madmail` user: created on the host if missing; below `--root`
    /// only read from `<root>/etc/passwd`.
    fn system_user(&self) -> anyhow::Result<Option<Owner>> {
        let passwd = self.path("etc/passwd");
        if let Some(owner) = lookup_user(&passwd)? {
            return Ok(Some(owner));
        }
        if !self.host {
            println!(
                "--root: no `{USER}` user in {}: files keep their owner; create the user on the target (`useradd --system --user-group {USER}`) and give it /var/lib/madmail and group read access to /etc/madmail",
                passwd.display()
            );
            return Ok(None);
        }
        let status = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args([
                "--home-dir",
                "/var/lib/madmail",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .args(["--comment", "madmail chatmail relay", USER])
            .status()
            .context("cannot run useradd")?;
        ensure!(status.success(), "useradd {USER} failed");
        println!("created the system user {USER}");
        let owner = lookup_user(&passwd)?
            .with_context(|| format!("useradd did not add {USER} to {}", passwd.display()))?;
        Ok(Some(owner))
    }

    /// Creates `relative` (and its parents) with `mode`, and hands it to
    /// `owner` (uid when given, gid).
    fn dir(
        &self,
        relative: &str,
        mode: u32,
        owner: Option<(Option<u32>, u32)>,
    ) -> anyhow::Result<()> {
        let path = self.path(relative);
        fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            chown(&path, uid, gid)?;
        }
        Ok(())
    }

    /// `systemctl daemon-reload`, on the host when systemd runs it.
    fn reload_systemd(&self) {
        if self.host && systemd_running() {
            run_logged(Command::new("systemctl").arg("daemon-reload"));
        }
    }
}

/// The `madmail` entry of a passwd file, if any.
fn lookup_user(passwd: &Path) -> anyhow::Result<Option<Owner>> {
    let text = match fs::read_to_string(passwd) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", passwd.display())),
    };
    Ok(text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(USER)).then_some(())?;
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(Owner { uid, gid })
    }))
}

fn chown(path: &Path, uid: Option<u32>, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, uid, Some(gid))
        .with_context(|| format!("cannot change the owner of {}", path.display()))
}

/// `/proc/self` belongs to the effective user of the process.
fn is_superuser() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// systemd is the running init (sd_booted(3)).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Runs a command whose failure should be seen but not stop the rest.
fn run_logged(command: &mut Command) {
    let shown = format!("{command:?}").replace('"', "");
    match command.status() {
        Ok(status) if status.success() => println!("ran {shown}"),
        Ok(status) => println!("warning: {shown} failed ({status})"),
        Err(e) => println!("warning: cannot run {shown}: {e}"),
    }
}

/// Copies the binary into place unless it is already the installed one.
fn install_binary(source: &Path, target: &Path) -> anyhow::Result<()> {
    let same = match (source.canonicalize(), target.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Ok(());
    }
    let bytes = fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
    write_atomic(target, &bytes, 0o755)
}

/// Writes a file through a temporary one and a rename, so a reader (or a
/// running binary) sees the old or the new bytes, never a mix.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("a path without a directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().context("a path without a name")?;
    let tmp = dir.join(format!(".{}.new", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Writes a file that must not exist yet; `false` if it does.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<bool> {
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(bytes)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

/// `Ok(true)` if the file was there and is gone.
fn remove_file(path: &Path) -> anyhow::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// The records `madmail dns` prints, with the DKIM key generated now (in
/// the state directory below the root, handed to the service user).
fn print_dns(root: &Root, settings: &Settings, owner: Option<Owner>) -> anyhow::Result<()> {
    let mut local = settings.clone();
    local.config.state_dir = root.rebase(&settings.config.state_dir);
    if settings.config.state_dir != Path::new("/").join(STATE_DIR) {
        println!(
            "warning: state_dir is {}, but the unit lets the relay write only /{STATE_DIR}: add ReadWritePaths= in a drop-in (systemctl edit madmail)",
            settings.config.state_dir.display()
        );
    }
    println!("\nDNS records for {}:", settings.domain.host());
    crate::admin::dns(&local, false)?;
    let dkim = local.config.state_dir.join("dkim");
    if let (Some(owner), true) = (owner, dkim.is_dir()) {
        chown(&dkim, Some(owner.uid), owner.gid)?;
        for entry in fs::read_dir(&dkim)? {
            chown(&entry?.path(), Some(owner.uid), owner.gid)?;
        }
    }
    Ok(())
}

fn print_next_steps(root: &Root, settings: &Settings) {
    let config = Path::new("/").join(CONFIG);
    println!("\nNext steps:");
    if let MailDomain::Name(domain) = &settings.domain {
        println!(
            "  1. Point the A (and AAAA) record of {domain} at this host and publish the records above."
        );
    } else {
        println!("  1. Open the ports of docs/debian.md in the firewall.");
    }
    println!(
        "  2. Review {} (`madmail check-config {0}` after edits).",
        config.display()
    );
    if root.is_host() {
        println!("  3. systemctl enable --now madmail");
    } else {
        println!("  3. On the target: systemctl daemon-reload && systemctl enable --now madmail");
    }
    println!("  4. `madmail dns` prints the records again; `journalctl -u madmail` shows the log.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_has_the_lines_install_replaces() {
        assert_eq!(EXAMPLE_CONFIG.matches(EXAMPLE_DOMAIN_LINE).count(), 1);
        assert_eq!(EXAMPLE_CONFIG.matches(EXAMPLE_TLS_LINE).count(), 1);
    }

    #[test]
    fn ip_only_relay_gets_self_signed_instead_of_acme() {
        let domain = MailDomain::parse("203.0.113.7").unwrap();
        let config = render_config(&domain).unwrap();
        assert!(config.contains("mail_domain = \"203.0.113.7\""));
        let settings = chatmail_config::parse(&config).unwrap();
        assert!(settings.self_signed);
        assert!(config.contains("mode = \"self-signed\""));
    }

    #[test]
    fn a_domain_cannot_inject_configuration() {
        assert!(MailDomain::parse("a.org\"\nstate_dir = \"/tmp").is_err());
        let domain = MailDomain::parse(" Chat.Example.ORG ").unwrap();
        let config = render_config(&domain).unwrap();
        assert!(config.contains("mail_domain = \"chat.example.org\"\n"));
    }

    #[test]
    fn reads_uid_and_gid_of_the_madmail_entry() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/bash\nmadmailx:x:5:5::/:/bin/sh\nmadmail:x:998:997:relay:/var/lib/madmail:/usr/sbin/nologin\n",
        )
        .unwrap();
        let owner = lookup_user(&passwd).unwrap().unwrap();
        assert_eq!((owner.uid, owner.gid), (998, 997));
        assert!(lookup_user(&dir.path().join("missing")).unwrap().is_none());
    }
}
