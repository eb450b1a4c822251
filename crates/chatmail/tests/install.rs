//! `madmail install --root` and `madmail uninstall --root`: the real binary
//! lays out a Debian host below a temporary directory; the files, their
//! modes and contents are checked, then removed with and without `--purge`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const MADMAIL: &str = env!("CARGO_BIN_EXE_madmail");

fn madmail(args: &[&str], root: &Path) -> Output {
    Command::new(MADMAIL)
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

fn succeeded(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn install(root: &Path, domain: &str) -> String {
    succeeded(&madmail(&["install", "--domain", domain], root))
}

#[test]
fn install_lays_out_binary_unit_config_and_state_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let printed = install(root, "example.org");

    let binary = root.join("usr/local/bin/madmail");
    assert_eq!(fs::read(&binary).unwrap(), fs::read(MADMAIL).unwrap());
    assert_eq!(mode(&binary), 0o755);
    let version = Command::new(&binary).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("madmail "));

    let unit = root.join("etc/systemd/system/madmail.service");
    // Run-time value first: right even for a binary built in another checkout.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let shipped = crate_dir.join("../../dist/madmail.service");
    assert_eq!(
        fs::read_to_string(&unit).unwrap(),
        fs::read_to_string(shipped).unwrap()
    );
    assert_eq!(mode(&unit), 0o644);

    assert_eq!(mode(&root.join("etc/madmail")), 0o750);
    let config = root.join("etc/madmail/chatmail.toml");
    assert_eq!(mode(&config), 0o640);
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains("mail_domain = \"example.org\"\n"), "{text}");
    assert!(text.contains("mode = \"acme\"\n"), "{text}");
    let check = Command::new(MADMAIL)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(succeeded(&check).ends_with(": ok\n"));

    let state = root.join("var/lib/madmail");
    assert_eq!(mode(&state), 0o700);
    let key = state.join("dkim/dkim-opendkim.pem");
    assert_eq!(mode(&key), 0o600);
    assert!(
        printed.contains("example.org. 3600 IN MX 10 example.org.\n"),
        "{printed}"
    );
    assert!(
        printed.contains("opendkim._domainkey.example.org. 3600 IN TXT ( \"v=DKIM1; k=rsa; p="),
        "{printed}"
    );
    assert!(
        printed.contains("systemctl enable --now madmail"),
        "{printed}"
    );
    assert!(printed.contains("no `madmail` user"), "{printed}");
}

/// The DKIM TXT line of `madmail install`'s output.
fn dkim_record(printed: &str) -> &str {
    printed
        .lines()
        .find(|l| l.contains("._domainkey."))
        .unwrap_or_else(|| panic!("no DKIM record in {printed}"))
}

#[test]
fn second_install_keeps_an_edited_config_and_the_dkim_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let first = install(root, "example.org");
    let config = root.join("etc/madmail/chatmail.toml");
    let edited =
        fs::read_to_string(&config).unwrap() + "\n[metadata]\nadmin = \"ops@example.org\"\n";
    fs::write(&config, &edited).unwrap();
    // A stale binary and a damaged unit are replaced.
    fs::write(root.join("usr/local/bin/madmail"), "old").unwrap();
    fs::write(root.join("etc/systemd/system/madmail.service"), "").unwrap();

    let second = install(root, "other.example.net");
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    assert!(second.contains("kept the existing"), "{second}");
    assert!(
        second.contains("--domain other.example.net was not applied"),
        "{second}"
    );
    assert_eq!(dkim_record(&first), dkim_record(&second));
    assert_eq!(
        fs::read(root.join("usr/local/bin/madmail")).unwrap(),
        fs::read(MADMAIL).unwrap()
    );
    assert!(
        fs::read_to_string(root.join("etc/systemd/system/madmail.service"))
            .unwrap()
            .contains("ExecStart=/usr/local/bin/madmail run")
    );
}

#[test]
fn uninstall_keeps_config_and_state_unless_purged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    install(root, "example.org");
    let mailbox = root.join("var/lib/madmail/madmail.db");
    fs::write(&mailbox, "accounts and mail").unwrap();

    for _ in 0..2 {
        let printed = succeeded(&madmail(&["uninstall"], root));
        assert!(printed.contains("kept"), "{printed}");
        assert!(!root.join("usr/local/bin/madmail").exists());
        assert!(!root.join("etc/systemd/system/madmail.service").exists());
        assert!(root.join("etc/madmail/chatmail.toml").is_file());
        assert_eq!(fs::read_to_string(&mailbox).unwrap(), "accounts and mail");
    }

    // Installing again picks the kept state up; purging removes all of it.
    install(root, "example.org");
    let printed = succeeded(&madmail(&["uninstall", "--purge"], root));
    assert!(printed.contains("removed"), "{printed}");
    for gone in [
        "usr/local/bin/madmail",
        "etc/systemd/system/madmail.service",
        "etc/madmail",
        "var/lib/madmail",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }
    succeeded(&madmail(&["uninstall", "--purge"], root));
}

#[test]
fn ip_only_relay_gets_a_self_signed_config_and_no_dns_records() {
    let dir = tempfile::tempdir().unwrap();
    let printed = install(dir.path(), "203.0.113.7");
    let config = dir.path().join("etc/madmail/chatmail.toml");
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains("mail_domain = \"203.0.113.7\"\n"), "{text}");
    assert!(text.contains("mode = \"self-signed\"\n"), "{text}");
    assert!(
        printed.contains("IP-only relay: it needs no DNS records"),
        "{printed}"
    );
}

#[test]
fn invalid_domain_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("target");
    for domain in ["bad\"domain", "", "no spaces.org", "a..b"] {
        let output = madmail(&["install", "--domain", domain], &root);
        assert!(!output.status.success(), "accepted {domain:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--domain"), "{stderr}");
        assert!(!root.exists(), "{domain:?} left files behind");
    }
}

#[test]
fn a_file_that_is_not_madmail_is_not_installed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake");
    fs::write(&fake, "#!/bin/sh\necho hello\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("root");
    let output = madmail(
        &[
            "install",
            "--domain",
            "example.org",
            "--binary",
            fake.to_str().unwrap(),
        ],
        &root,
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not a madmail binary"));
    assert!(!root.exists());
}

/// With a `madmail` user in `<root>/etc/passwd`, the state belongs to it
/// and the configuration to its group. Changing owners needs root (CI runs
/// as root); elsewhere the test says it skipped.
#[test]
fn known_user_below_root_owns_state_and_reads_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    if fs::metadata(root).unwrap().uid() != 0 {
        eprintln!("SKIP: changing file owners needs root");
        return;
    }
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nmadmail:x:4242:4343::/var/lib/madmail:/usr/sbin/nologin\n",
    )
    .unwrap();
    let printed = install(root, "example.org");
    assert!(!printed.contains("no `madmail` user"), "{printed}");
    let owner = |p: &str| {
        let m = fs::metadata(root.join(p)).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner("var/lib/madmail"), (4242, 4343));
    assert_eq!(owner("var/lib/madmail/dkim"), (4242, 4343));
    assert_eq!(
        owner("var/lib/madmail/dkim/dkim-opendkim.pem"),
        (4242, 4343)
    );
    assert_eq!(owner("etc/madmail"), (0, 4343));
    assert_eq!(owner("etc/madmail/chatmail.toml"), (0, 4343));
    assert_eq!(owner("usr/local/bin/madmail"), (0, 0));
}

#[test]
fn purge_never_deletes_a_state_dir_configured_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("madmail.db"), "mail").unwrap();
    install(&root, "example.org");
    let config = root.join("etc/madmail/chatmail.toml");
    let text = fs::read_to_string(&config).unwrap().replace(
        "state_dir = \"/var/lib/madmail\"",
        &format!("state_dir = \"{}\"", elsewhere.display()),
    );
    fs::write(&config, text).unwrap();

    let printed = succeeded(&madmail(&["uninstall", "--purge"], &root));
    assert!(
        printed.contains("kept the configured state_dir"),
        "{printed}"
    );
    assert_eq!(
        fs::read_to_string(elsewhere.join("madmail.db")).unwrap(),
        "mail"
    );
    assert!(!root.join("var/lib/madmail").exists());
    assert!(!root.join("etc/madmail").exists());
}
