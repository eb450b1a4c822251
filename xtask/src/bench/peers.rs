//! `cargo xtask bench --peers`: Postfix + Dovecot from Debian's packages,
//! set up the way the chatmail relay runs them, beside madmail under the
//! identical load in one run.
//!
//! Postfix takes submissions on implicit TLS with SASL through Dovecot's
//! auth socket and hands every message to Dovecot over LMTP
//! (`virtual_transport`); Dovecot stores Maildir with `mail_fsync =
//! always`, serves IMAPS and wakes IDLE. Both run as children of the bench
//! (`master -d`, `dovecot -F`) from configuration files in their own
//! directory, so nothing under `/etc` is touched and nothing stays running.
//! What the chatmail relay adds on top is left out, which favours the
//! peer: the `filtermail` proxy filter (the encryption gate), OpenDKIM,
//! the quota and zlib plugins, and the Python auth and push services.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::target::{Account, Target};

/// The peer's address and ports (loopback; madmail's bench relay uses
/// 127.0.0.1).
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 30);
const SMTPS: u16 = 10465;
const IMAPS: u16 = 10993;
const DOMAIN: &str = "bench.test";

const MASTER: &str = "/usr/lib/postfix/sbin/master";
const DOVECOT: &str = "/usr/sbin/dovecot";

/// Postfix + Dovecot running for the bench; stopped on drop.
pub(crate) struct Peers {
    root: PathBuf,
    postfix: Child,
    dovecot: Child,
}

/// Installs the Debian packages unless present, and the `vmail` user.
pub(crate) fn install() -> anyhow::Result<()> {
    let present = [
        MASTER,
        DOVECOT,
        "/usr/lib/dovecot/lmtp",
        "/usr/lib/dovecot/imap",
    ]
    .iter()
    .all(|p| Path::new(p).exists());
    if !present {
        eprintln!("installing postfix, dovecot-imapd and dovecot-lmtpd from Debian");
        let mut preseed = std::process::Command::new("debconf-set-selections")
            .stdin(Stdio::piped())
            .spawn()?;
        if let Some(stdin) = preseed.stdin.as_mut() {
            use std::io::Write;
            stdin.write_all(b"postfix postfix/main_mailer_type select No configuration\n")?;
        }
        preseed.wait()?;
        let status = std::process::Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(["postfix", "dovecot-imapd", "dovecot-lmtpd", "openssl"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        anyhow::ensure!(status.success(), "apt-get install failed: {status}");
    }
    let known = std::process::Command::new("id")
        .arg("vmail")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !known.success() {
        let status = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg("vmail")
            .status()?;
        anyhow::ensure!(status.success(), "useradd vmail failed: {status}");
    }
    Ok(())
}

impl Peers {
    /// Writes the configuration under `root` (emptied first) with
    /// `accounts` and starts both servers.
    pub(crate) async fn start(root: &Path, accounts: &[Account]) -> anyhow::Result<Self> {
        if root.exists() {
            std::fs::remove_dir_all(root)?;
        }
        for dir in ["tls", "postfix", "queue", "data", "run", "state", "mail"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        run(
            "chown",
            &["postfix".as_ref(), root.join("data").as_os_str()],
        )?;
        run(
            "chown",
            &["vmail:vmail".as_ref(), root.join("mail").as_os_str()],
        )?;
        certificate(root)?;
        std::fs::write(root.join("users"), users(accounts)?)?;
        let vmail = output("id", &["-u", "vmail"])?;
        std::fs::write(root.join("dovecot.conf"), dovecot_conf(root, vmail.trim()))?;
        std::fs::write(root.join("postfix/main.cf"), main_cf(root))?;
        std::fs::write(
            root.join("postfix/master.cf"),
            MASTER_CF.replace("@IP@", &IP.to_string()),
        )?;
        let check = std::process::Command::new("postfix")
            .arg("-c")
            .arg(root.join("postfix"))
            .arg("check")
            .status()?;
        anyhow::ensure!(check.success(), "postfix check failed");

        let postfix = Command::new(MASTER)
            .arg("-c")
            .arg(root.join("postfix"))
            .arg("-d")
            .kill_on_drop(true)
            .spawn()?;
        let dovecot = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(root.join("dovecot.conf"))
            .kill_on_drop(true)
            .spawn()?;
        let peers = Self {
            root: root.to_path_buf(),
            postfix,
            dovecot,
        };
        for port in [SMTPS, IMAPS] {
            wait_listening(port).await?;
        }
        Ok(peers)
    }

    pub(crate) fn target() -> Target {
        Target {
            submissions: (IP, SMTPS).into(),
            imaps: (IP, IMAPS).into(),
        }
    }

    pub(crate) fn certificate(&self) -> PathBuf {
        self.root.join("tls/cert.pem")
    }

    /// The process IDs of every Postfix and Dovecot process of this run.
    pub(crate) fn processes(&self) -> Vec<u32> {
        let roots: Vec<u32> = [self.postfix.id(), self.dovecot.id()]
            .into_iter()
            .flatten()
            .collect();
        descendants(&roots)
    }

    /// Stops both servers the way their own tools do.
    pub(crate) async fn stop(mut self) {
        let _ = Command::new("dovecot")
            .arg("-c")
            .arg(self.root.join("dovecot.conf"))
            .arg("stop")
            .status()
            .await;
        if let Some(pid) = self.postfix.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.postfix.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.dovecot.wait()).await;
    }
}

/// The bench accounts at the peer's domain: `count` of them.
pub(crate) fn accounts(count: usize, password: &str) -> Vec<Account> {
    (0..count)
        .map(|n| Account {
            address: format!("user{n:05}@{DOMAIN}"),
            password: password.to_owned(),
        })
        .collect()
}

/// Dovecot's `passwd-file`: every account with a `SHA512-CRYPT` hash made
/// by `doveadm pw`, the scheme the chatmail relay stores.
fn users(accounts: &[Account]) -> anyhow::Result<String> {
    let mut hashes = std::collections::HashMap::new();
    let mut text = String::new();
    for account in accounts {
        if !hashes.contains_key(&account.password) {
            let hash = output(
                "doveadm",
                &["pw", "-s", "SHA512-CRYPT", "-p", &account.password],
            )?;
            hashes.insert(account.password.clone(), hash.trim().to_owned());
        }
        text.push_str(&format!(
            "{}:{}\n",
            account.address, hashes[&account.password]
        ));
    }
    Ok(text)
}

/// A self-signed P-256 server certificate (not a CA) naming the peer's IP
/// address.
fn certificate(root: &Path) -> anyhow::Result<()> {
    let subject = format!("/CN={IP}");
    let san = format!("subjectAltName=IP:{IP}");
    let key = root.join("tls/key.pem");
    let cert = root.join("tls/cert.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &subject, "-addext", &san])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "openssl req failed: {status}");
    Ok(())
}

fn dovecot_conf(root: &Path, vmail_uid: &str) -> String {
    let r = root.display();
    format!(
        "instance_name = madmail-bench-peers
base_dir = {r}/run
state_dir = {r}/state
listen = {IP}
protocols = imap lmtp
auth_mechanisms = plain
default_client_limit = 20000
first_valid_uid = {vmail_uid}
mail_uid = vmail
mail_gid = vmail
mail_location = maildir:{r}/mail/%u
mail_fsync = always
log_path = {r}/dovecot.log
imap_capability = IMAP4rev1 IDLE MOVE QUOTA CONDSTORE NOTIFY METADATA
service imap {{
  process_limit = 50000
}}
service imap-login {{
  service_count = 1
  process_limit = 10000
  process_min_avail = 10
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {IMAPS}
    ssl = yes
  }}
}}
service lmtp {{
  user = vmail
  unix_listener {r}/queue/private/dovecot-lmtp {{
    user = postfix
    group = postfix
    mode = 0600
  }}
}}
service auth {{
  unix_listener {r}/queue/private/auth {{
    user = postfix
    group = postfix
    mode = 0660
  }}
}}
service auth-worker {{
  user = vmail
}}
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT {r}/users
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={r}/mail/%u
}}
ssl = required
ssl_cert = <{r}/tls/cert.pem
ssl_key = <{r}/tls/key.pem
ssl_min_protocol = TLSv1.2
"
    )
}

fn main_cf(root: &Path) -> String {
    let r = root.display();
    format!(
        "compatibility_level = 3.6
queue_directory = {r}/queue
data_directory = {r}/data
maillog_file = {r}/postfix.log
maillog_file_prefixes = {r}
myhostname = {DOMAIN}
myorigin = {DOMAIN}
mydestination =
relayhost =
inet_interfaces = all
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_tls_cert_file = {r}/tls/cert.pem
smtpd_tls_key_file = {r}/tls/key.pem
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_sasl_authenticated, reject
message_size_limit = 31457280
mailbox_size_limit = 0
virtual_transport = lmtp:unix:private/dovecot-lmtp
virtual_mailbox_domains = {DOMAIN}
"
    )
}

/// Postfix's services without chroot; the submission listener is bound to
/// the peer's address by name, so `inet_interfaces` need not list it.
const MASTER_CF: &str = "\
@IP@:10465 inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=private/auth
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_client_connection_count_limit=1000
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
";

/// Waits until something listens on the peer's `port`.
async fn wait_listening(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect((IP, port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("nothing listens on {IP}:{port} after 10 s")
}

/// `roots` and every process below them.
fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = super::stat_fields(&stat)
                .get(1)
                .and_then(|p| p.parse().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    let mut found: Vec<u32> = roots.to_vec();
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        index += 1;
    }
    found
}

fn run(program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let status = std::process::Command::new(program).args(args).status()?;
    anyhow::ensure!(status.success(), "{program} failed: {status}");
    Ok(())
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program).args(args).output()?;
    anyhow::ensure!(out.status.success(), "{program} failed: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_include_the_roots_and_this_process() {
        let me = std::process::id();
        assert!(descendants(&[me]).contains(&me));
        let parent = std::os::unix::process::parent_id();
        assert!(descendants(&[parent]).contains(&me));
    }

    #[test]
    fn the_configuration_names_the_root_and_the_address() {
        let conf = dovecot_conf(Path::new("/r"), "999");
        assert!(conf.contains("mail_location = maildir:/r/mail/%u"));
        assert!(conf.contains("mail_fsync = always"));
        assert!(conf.contains("unix_listener /r/queue/private/dovecot-lmtp {"));
        let main = main_cf(Path::new("/r"));
        assert!(main.contains("virtual_transport = lmtp:unix:private/dovecot-lmtp"));
        assert!(
            MASTER_CF
                .replace("@IP@", "127.0.0.30")
                .starts_with("127.0.0.30:10465 inet")
        );
    }
}
