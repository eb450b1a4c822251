//! A full disk under the state directory (a tmpfs of 16 MiB, so root
//! only): a submission gets the temporary `452 4.3.1`, IMAP keeps serving
//! what is stored, nothing acknowledged is lost, and once there is space
//! again mail is taken without a restart.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chatmail_testkit::client::{Imap, Smtp, tls_config};
use chatmail_testkit::message::encrypted;
use chatmail_testkit::relay::RelayProcess;

const PASSWORD: &str = "disk-full-password";

/// A tmpfs mounted at a directory until dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system has no byte left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0x5a; 64 * 1024];
    loop {
        if file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            break;
        }
    }
    let small = [0x5a; 512];
    while file
        .write_all(&small)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[tokio::test]
async fn a_full_disk_refuses_mail_for_now_and_loses_nothing() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let ip = Ipv4Addr::new(127, 0, 65, 16);
    let binary = env!("CARGO_BIN_EXE_madmail").as_ref();
    let mut relay = RelayProcess::start_on(binary, ip, "").await.unwrap();
    let tls = tls_config(&relay.cert_path()).unwrap();
    let (alice, bob) = (relay.address("alice1234"), relay.address("bobbob123"));
    let imaps = relay.addr(relay.ports.imaps);
    // The accounts first: no new account is made with less than 1 GB free.
    for user in [&alice, &bob] {
        drop(Imap::login(imaps, &tls, user, PASSWORD).await.unwrap());
    }
    let status = relay
        .terminate(std::time::Duration::from_secs(15))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let state = relay.state_dir();
    let on_disk = state.with_extension("on-disk");
    std::fs::rename(&state, &on_disk).unwrap();
    let _tmpfs = Tmpfs::mount(&state, "16m");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", on_disk.display()))
        .arg(&state)
        .status()
        .unwrap();
    assert!(copied.success());
    relay.launch().await.unwrap();
    let submissions = relay.addr(relay.ports.submissions);
    let mut smtp = Smtp::login(submissions, &tls, &alice, PASSWORD)
        .await
        .unwrap();
    let send = |size| encrypted(&alice, &bob, size);
    for _ in 0..3 {
        let (code, text) = smtp.send(&alice, &[&bob], &send(4096)).await.unwrap();
        assert_eq!(code, 250, "{text}");
    }

    let filler = relay.state_dir().join("filler");
    fill(&filler);
    let (code, text) = smtp.send(&alice, &[&bob], &send(512 * 1024)).await.unwrap();
    assert_eq!(
        (code, text.as_str()),
        (452, "4.3.1 Insufficient system storage")
    );
    // The session goes on, and so does IMAP.
    assert_eq!(smtp.command("NOOP").await.unwrap().0, 250);
    let mut imap = Imap::login(imaps, &tls, &bob, PASSWORD).await.unwrap();
    let selected = imap.command("SELECT INBOX").await.unwrap();
    assert!(
        selected.iter().any(|l| l.trim_end() == "* 3 EXISTS"),
        "{selected:?}"
    );
    let fetched = imap.command("FETCH 3 (BODY.PEEK[])").await.unwrap();
    assert!(
        fetched.iter().any(|l| l.contains("BEGIN PGP MESSAGE")),
        "{fetched:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    let (code, text) = smtp.send(&alice, &[&bob], &send(512 * 1024)).await.unwrap();
    assert_eq!(code, 250, "{text}");
    assert!(relay.is_running());
    let mut imap = Imap::login(imaps, &tls, &bob, PASSWORD).await.unwrap();
    let selected = imap.command("SELECT INBOX").await.unwrap();
    assert!(
        selected.iter().any(|l| l.trim_end() == "* 4 EXISTS"),
        "{selected:?}"
    );
    drop(imap);
    let status = relay
        .terminate(std::time::Duration::from_secs(15))
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}
