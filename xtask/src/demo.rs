//! The quick-trial check: `madmail demo` starts, prints two `dclogin:` links
//! that a real Delta Chat client can use, and stops cleanly on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Runs the demo, the `tests-vm/demo` scenario against its links, then
/// interrupts the demo and checks that it exits successfully.
pub fn check(root: &Path, madmail: &Path, python: &Path, path_env: &std::ffi::OsStr) -> Result<()> {
    let mut demo = Command::new(madmail)
        .args(["demo", "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting madmail demo")?;
    let stdout = demo.stdout.take().context("demo stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut links = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("dclogin:") => links.push(line),
            Ok(line) if line.starts_with("Press Ctrl-C") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = demo.kill();
                bail!("madmail demo printed no complete banner within 30 s");
            }
        }
    }
    let status = Command::new(python)
        .current_dir(root)
        .args(["-m", "pytest", "tests-vm/demo", "-v"])
        .env("PATH", path_env)
        .env("MADMAIL_DEMO_LINKS", links.join("\n"))
        .status()
        .context("starting pytest")?;
    let interrupted = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()?;
    let exit = demo.wait()?;
    anyhow::ensure!(status.success(), "the demo scenario failed");
    anyhow::ensure!(
        interrupted.success() && exit.success(),
        "madmail demo did not stop cleanly: {exit}"
    );
    println!("quick trial (madmail demo) works with a real Delta Chat client");
    Ok(())
}
