//! Developer tasks: `cargo xtask docs|test|nix-check|dist|e2e|bench|soak|fuzz|admin-ui|trial`.

mod admin_ui;
mod bench;
mod demo;
mod dist;
mod docs;
mod e2e;
mod fuzz;
mod nix;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Regenerate docs/config.md from the configuration schema.
    Docs,
    /// The whole test suite: unit, session and server tests, a short run of
    /// every fuzz target, the Nix checks, the static build check
    /// (`dist --check`), then the end-to-end scenarios with real Delta Chat
    /// clients.
    Test(e2e::E2eOptions),
    /// Nix checks: parse every .nix file; module evaluation tests when
    /// NIXPKGS_LIB points at a nixpkgs `lib` checkout.
    NixCheck,
    /// Static musl release binaries for Debian: build, check linkage,
    /// rebuild to compare bytes, write the tarballs.
    Dist(dist::DistOptions),
    /// Only the end-to-end scenarios with real Delta Chat clients.
    E2e(e2e::E2eOptions),
    /// Submission throughput and 250-to-EXISTS latency (release build).
    Bench(bench::BenchOptions),
    /// Steady load for `--minutes` with 10,000 idle IMAP connections; RSS,
    /// file descriptors and latency sampled every 10 s (release build).
    Soak(soak::SoakOptions),
    /// The libFuzzer targets of `fuzz/`: earlier findings replayed, then
    /// each target for `--seconds` (or `--runs`).
    Fuzz(fuzz::FuzzOptions),
    /// Build the admin web UI (`admin-leptos/`) into `admin-leptos/dist`,
    /// which the next build of madmail embeds.
    AdminUi,
    /// The quick trial: build the admin web UI, then run `madmail demo`
    /// (release build) until Ctrl-C.
    Trial,
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().command {
        Task::Docs => docs::run(&root),
        Task::Test(options) => test(&root, options),
        Task::NixCheck => nix::check(&root),
        Task::Dist(options) => {
            admin_ui::build(&root, &ui_dir(&root))?;
            dist::run(&root, options)
        }
        Task::AdminUi => admin_ui::build(&root, &ui_dir(&root)),
        Task::Trial => {
            admin_ui::build(&root, &ui_dir(&root))?;
            cargo(&root, &["run", "--release", "-p", "chatmail", "--", "demo"])
        }
        Task::E2e(options) => e2e::run(options),
        Task::Bench(options) => bench::run(&root, options),
        Task::Soak(options) => soak::run(&root, options),
        Task::Fuzz(options) => fuzz::run(&root, &options),
    }
}

fn test(root: &Path, e2e: e2e::E2eOptions) -> anyhow::Result<()> {
    // Before the long run: every later step builds with `--locked`.
    lock_files_current(root)?;
    // First, so that the madmail the tests run serves the admin web UI.
    admin_ui::build(root, &ui_dir(root))?;
    admin_ui::test(root)?;
    cargo(root, &["test", "--workspace", "--locked"])?;
    fuzz::run(root, &fuzz::FuzzOptions::default())?;
    nix::check(root)?;
    dist::run(
        root,
        dist::DistOptions {
            check: true,
            ..Default::default()
        },
    )?;
    e2e::run(e2e)
}

/// The workspaces with a `Cargo.lock` of their own: the main one, the
/// admin web UI and the fuzz targets.
const WORKSPACES: [&str; 3] = [".", "admin-leptos", "fuzz"];

/// Fails, naming the file, if a workspace's `Cargo.lock` no longer matches
/// its manifests (a changed dependency or feature not locked yet), which
/// `--locked` builds would only report minutes later.
fn lock_files_current(root: &Path) -> anyhow::Result<()> {
    for workspace in WORKSPACES {
        let dir = root.join(workspace);
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--locked", "--format-version", "1"])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .output()
            .with_context(|| format!("running cargo metadata in {}", dir.display()))?;
        anyhow::ensure!(
            output.status.success(),
            "{}/Cargo.lock is out of date (run `cargo metadata --format-version 1` there and commit the lock):\n{}",
            workspace,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Where `cargo xtask admin-ui` puts the UI (crates/http/build.rs embeds
/// it from there).
fn ui_dir(root: &Path) -> PathBuf {
    root.join("admin-leptos").join("dist")
}

/// Where cargo puts build output (`CARGO_TARGET_DIR` or `target/`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(args).current_dir(root).status()?;
    anyhow::ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// This crate's directory. `cargo xtask` (a `cargo run` alias) sets
/// `CARGO_MANIFEST_DIR` at run time, which stays right when a shared target
/// directory holds an xtask binary built from another checkout; the
/// compile-time value is the fallback for running the binary by hand.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

fn workspace_root() -> PathBuf {
    manifest_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
