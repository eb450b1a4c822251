//! `cargo xtask dist`: static release binaries for Debian hosts.
//!
//! 1. The workspace's own packages are cleaned, then `cargo build --release
//!    --locked --target <arch>-unknown-linux-musl -p chatmail` runs in its
//!    own target directory (`$HOME/.cache/madmail/
//!    dist-target`, so it never invalidates the debug cache), with cargo
//!    home and the target directory remapped to fixed names and symbols
//!    stripped: the bytes depend on the source and the toolchain, not on
//!    where they were built. Cargo names workspace sources relative to the
//!    workspace, so the checkout's path needs no remapping, and leaving it
//!    out of the flags keeps the compiled dependencies valid for every
//!    checkout (a flag change rebuilds everything).
//! 2. The ELF program headers must hold no interpreter (`PT_INTERP`), and
//!    the dynamic section a static-pie binary keeps for relocating itself no
//!    `DT_NEEDED` library.
//! 3. The binary must not contain the workspace, cargo home or target
//!    directory path; the workspace packages are cleaned (as before the
//!    first build) and built again, and the new binary must be
//!    byte-identical (`--full-rebuild`: every package cleaned).
//! 4. A tarball with sorted entries, owner 0 and a fixed mtime
//!    (`SOURCE_DATE_EPOCH`, else the time of the last commit): the binary,
//!    `dist/madmail.service`, `dist/chatmail.toml.example` and `SHA256SUMS`.
//!
//! x86_64 always; aarch64 with `--aarch64` (Debian's cross compiler, C
//! code compiled against Debian's arm64 musl headers). `--check` also runs
//! each binary (`version`, `check-config` on the example; aarch64 under
//! qemu-user, or a `SKIP:` line without it) and scores the unit with
//! `systemd-analyze security --offline=true`: "OK" or better passes.
//!
//! Invariant: a missing tool (musl-gcc, systemd-analyze, a cross compiler
//! asked for) is an error with an install hint, never a silent pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, ensure};

use elf::linkage;
use tarball::{Entry, tar_gz};

mod elf;
mod tarball;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const UNIT: &str = "dist/madmail.service";
const EXAMPLE_CONFIG: &str = "dist/chatmail.toml.example";

/// Options of `cargo xtask dist`.
#[derive(clap::Args, Default)]
pub struct DistOptions {
    /// Also run the built binary and score the systemd unit.
    #[arg(long)]
    pub check: bool,
    /// Prove reproducibility with a second build of everything,
    /// dependencies included (about twice the time).
    #[arg(long)]
    pub full_rebuild: bool,
    /// Also build aarch64 (needs `gcc-aarch64-linux-gnu` and the rustup
    /// target `aarch64-unknown-linux-musl`).
    #[arg(long)]
    pub aarch64: bool,
    /// Where the tarballs go (default: `out/` in the dist target directory).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// One musl target.
struct Target {
    triple: &'static str,
    /// The architecture as it appears in the tarball name.
    arch: &'static str,
    /// ELF `e_machine` of its binaries.
    machine: u16,
    /// Linker and C compiler when cross-compiling; `None` uses `musl-gcc`
    /// through the cc crate's default.
    cross_gcc: Option<&'static str>,
    /// The musl headers C code is compiled against when cross-compiling
    /// (the cross compiler's own are glibc's, whose symbols musl lacks).
    musl_include: Option<&'static str>,
    /// What runs its binaries on this machine, when it is foreign.
    emulator: Option<&'static str>,
    install_hint: &'static str,
}

const X86_64: Target = Target {
    triple: "x86_64-unknown-linux-musl",
    arch: "x86_64",
    machine: 62,
    cross_gcc: None,
    musl_include: None,
    emulator: None,
    install_hint: "apt-get install -y musl-tools && rustup target add x86_64-unknown-linux-musl",
};

const AARCH64: Target = Target {
    triple: "aarch64-unknown-linux-musl",
    arch: "aarch64",
    machine: 183,
    cross_gcc: Some("aarch64-linux-gnu-gcc"),
    musl_include: Some("/usr/include/aarch64-linux-musl"),
    emulator: Some("qemu-aarch64"),
    install_hint: "dpkg --add-architecture arm64 && apt-get update && apt-get install -y gcc-aarch64-linux-gnu musl-dev:arm64 && rustup target add aarch64-unknown-linux-musl",
};

/// Builds, verifies and packs every requested target.
pub fn run(root: &Path, options: DistOptions) -> anyhow::Result<()> {
    let target_dir = dist_target_dir()?;
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("out"));
    let mtime = source_date_epoch(root)?;
    let mut targets = vec![&X86_64];
    if options.aarch64 {
        targets.push(&AARCH64);
    }
    let mut tarballs = Vec::new();
    for target in targets {
        let binary = build_verified(root, &target_dir, target, &options)?;
        if options.check {
            run_binary(root, &binary, target)?;
        }
        tarballs.push(pack(root, &binary, target, &out_dir, mtime)?);
    }
    write_sums(&out_dir, &tarballs)?;
    if options.check {
        score_unit(root)?;
    }
    Ok(())
}

/// Builds one target, checks its linkage, that it names no build
/// directory and that a rebuild gives the same bytes; returns the binary.
fn build_verified(
    root: &Path,
    target_dir: &Path,
    target: &Target,
    options: &DistOptions,
) -> anyhow::Result<PathBuf> {
    ensure_toolchain(target)?;
    let started = Instant::now();
    clean(root, target_dir, target, false)?;
    let binary = build(root, target_dir, target)?;
    let bytes = std::fs::read(&binary)?;
    let sum = sha256(&binary)?;
    println!(
        "dist: {}: built in {:.0} s; {} bytes ({:.1} MB), sha256 {sum}",
        target.triple,
        started.elapsed().as_secs_f64(),
        bytes.len(),
        bytes.len() as f64 / 1e6
    );
    let kind = check_static(&bytes, target)
        .with_context(|| format!("{} is not a static binary", binary.display()))?;
    println!(
        "dist: {}: no ELF interpreter, statically linked ({kind})",
        target.triple
    );
    for dir in [root, &cargo_home()?, target_dir] {
        let needle = dir.as_os_str().as_encoded_bytes();
        ensure!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} embeds the build path {}",
            binary.display(),
            dir.display()
        );
    }
    println!("dist: {}: no build paths embedded", target.triple);
    let started = Instant::now();
    clean(root, target_dir, target, options.full_rebuild)?;
    let again = sha256(&build(root, target_dir, target)?)?;
    ensure!(
        again == sum,
        "{}: the rebuild differs: sha256 {sum} then {again}",
        target.triple
    );
    println!(
        "dist: {}: rebuild identical ({:.0} s)",
        target.triple,
        started.elapsed().as_secs_f64()
    );
    Ok(binary)
}

/// Fails unless the ELF file is for `target` and needs no loader and no
/// shared library; returns "static" or "static-pie".
fn check_static(elf: &[u8], target: &Target) -> anyhow::Result<&'static str> {
    let linkage = linkage(elf).map_err(anyhow::Error::msg)?;
    ensure!(
        linkage.machine == target.machine,
        "ELF machine {} instead of {}",
        linkage.machine,
        target.machine
    );
    ensure!(
        !linkage.interpreter,
        "it has an ELF interpreter (PT_INTERP)"
    );
    ensure!(
        linkage.needed == 0,
        "it needs {} shared libraries (DT_NEEDED)",
        linkage.needed
    );
    Ok(if linkage.dynamic_section {
        "static-pie"
    } else {
        "static"
    })
}

/// `$HOME/.cache/madmail/dist-target`: apart from the debug cache, so the
/// two never evict each other's artifacts.
fn dist_target_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/madmail/dist-target"))
}

pub(crate) fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn ensure_toolchain(target: &Target) -> anyhow::Result<()> {
    let compiler = target.cross_gcc.unwrap_or("musl-gcc");
    let found = Command::new(compiler)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ensure!(
        found,
        "{compiler} not found: {} (Debian)",
        target.install_hint
    );
    if let Some(dir) = target.musl_include {
        ensure!(
            Path::new(dir).join("stdint.h").is_file(),
            "musl headers missing in {dir}: {} (Debian)",
            target.install_hint
        );
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    ensure!(
        sysroot.join("lib/rustlib").join(target.triple).is_dir(),
        "the Rust standard library for {} is missing: rustup target add {}",
        target.triple,
        target.triple
    );
    Ok(())
}

/// One release build; returns the path of the binary.
fn build(root: &Path, target_dir: &Path, target: &Target) -> anyhow::Result<PathBuf> {
    let cargo_home = cargo_home()?;
    // Later remappings win in rustc, so the most specific prefixes go last.
    let prefixes = [(cargo_home.as_path(), "/cargo"), (target_dir, "/target")];
    let rustflags: Vec<String> = prefixes
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect();
    // C sources (SQLite, ring) embed paths through __FILE__.
    let mut cflags: Vec<String> = prefixes
        .iter()
        .map(|(from, to)| format!("-ffile-prefix-map={}={to}", from.display()))
        .collect();
    if let (Some(gcc), Some(musl)) = (target.cross_gcc, target.musl_include) {
        cflags.extend(musl_include_flags(gcc, musl)?);
    }
    let env_triple = target.triple.replace('-', "_");
    let mut command = Command::new(cargo_bin());
    command
        .current_dir(root)
        .args(["build", "--release", "--locked", "--package", "chatmail"])
        .args(["--bin", "madmail", "--target", target.triple])
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env(format!("CFLAGS_{env_triple}"), cflags.join(" "));
    if let Some(gcc) = target.cross_gcc {
        command
            .env(
                format!("CARGO_TARGET_{}_LINKER", env_triple.to_uppercase()),
                gcc,
            )
            .env(format!("CC_{env_triple}"), gcc);
    }
    without_cargo_run_env(&mut command);
    let status = command.status().context("cannot run cargo")?;
    ensure!(status.success(), "cargo build for {} failed", target.triple);
    Ok(target_dir
        .join(target.triple)
        .join("release")
        .join("madmail"))
}

/// Compiler flags that replace the cross compiler's glibc headers with
/// musl's, keeping its own (`arm_neon.h`, ...) behind them, as `musl-gcc`
/// does for native builds.
fn musl_include_flags(gcc: &str, musl: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new(gcc)
        .arg("-print-file-name=include")
        .output()
        .with_context(|| format!("cannot run {gcc}"))?;
    let own = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    ensure!(
        output.status.success() && Path::new(&own).is_dir(),
        "{gcc} names no include directory"
    );
    Ok(vec![
        "-nostdinc".into(),
        "-isystem".into(),
        musl.into(),
        "-isystem".into(),
        own,
    ])
}

/// Drops the variables `cargo run` set for xtask to this checkout's
/// values: ring's build script watches `CARGO_MANIFEST_DIR`, so passing
/// them on would rebuild it, and everything above it, in every checkout.
fn without_cargo_run_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE";
        if set_by_cargo_run {
            command.env_remove(name.as_ref());
        }
    }
}

/// Removes the release artifacts of the workspace's own packages, or with
/// `full` of every package, for `target`.
///
/// Before the first build: checkouts share the dist target directory, and
/// cargo names a workspace crate's artifacts by its path inside the
/// workspace and judges them fresh by modification times, so a crate
/// compiled from another checkout could be taken for this one's.
///
/// Before the second build: dependencies are compiled once by default,
/// since compiling all of them twice would double the longest step of a CI
/// run; they are still linked again, so linker or LTO nondeterminism shows.
fn clean(root: &Path, target_dir: &Path, target: &Target, full: bool) -> anyhow::Result<()> {
    let mut command = Command::new(cargo_bin());
    command
        .current_dir(root)
        .args(["clean", "--release", "--target", target.triple])
        .env("CARGO_TARGET_DIR", target_dir);
    if !full {
        for package in workspace_packages(root)? {
            command.args(["--package", &package]);
        }
    }
    let output = command.output().context("cannot run cargo clean")?;
    ensure!(
        output.status.success(),
        "cargo clean failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// The package names of the workspace members (`crates/*` and `xtask`).
fn workspace_packages(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut manifests = vec![root.join("xtask/Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates"))? {
        let manifest = entry?.path().join("Cargo.toml");
        if manifest.is_file() {
            manifests.push(manifest);
        }
    }
    let mut names = Vec::new();
    for manifest in manifests {
        let text = std::fs::read_to_string(&manifest)?;
        names.push(
            package_name(&text)
                .with_context(|| format!("no package name in {}", manifest.display()))?,
        );
    }
    names.sort();
    Ok(names)
}

/// The `name` of the `[package]` table of a manifest.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_owned());
        }
    }
    None
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The hex SHA-256 of a file (coreutils' `sha256sum`, always on Debian).
fn sha256(path: &Path) -> anyhow::Result<String> {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("cannot run sha256sum")?;
    ensure!(
        output.status.success(),
        "sha256sum {} failed",
        path.display()
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let sum = text.split_whitespace().next().unwrap_or_default();
    ensure!(
        sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()),
        "sha256sum printed {text:?}"
    );
    Ok(sum.to_owned())
}

/// `SOURCE_DATE_EPOCH` if set, else the commit time of `HEAD`.
fn source_date_epoch(root: &Path) -> anyhow::Result<u64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number"));
    }
    let output = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root)
        .output()
        .context("cannot run git: set SOURCE_DATE_EPOCH")?;
    ensure!(
        output.status.success(),
        "git log failed: set SOURCE_DATE_EPOCH"
    );
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("git log printed {text:?}"))
}

/// Runs the built binary (a foreign one under qemu-user, if installed):
/// `version` and `check-config` on the example.
fn run_binary(root: &Path, binary: &Path, target: &Target) -> anyhow::Result<()> {
    let command = |arg: &str| {
        let mut command = match target.emulator {
            Some(qemu) => {
                let mut command = Command::new(qemu);
                command.arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command.arg(arg);
        command
    };
    if let Some(qemu) = target.emulator
        && Command::new(qemu).arg("--version").output().is_err()
    {
        println!(
            "SKIP: dist: {}: running the binary needs {qemu} (apt-get install qemu-user)",
            target.triple
        );
        return Ok(());
    }
    let output = command("version").output()?;
    let printed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && printed.trim() == format!("madmail {VERSION}"),
        "`madmail version` printed {printed:?}"
    );
    let output = command("check-config")
        .arg(root.join(EXAMPLE_CONFIG))
        .output()?;
    ensure!(
        output.status.success(),
        "`madmail check-config {EXAMPLE_CONFIG}` failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    println!(
        "dist: {}: `madmail version`: {}; `madmail check-config {EXAMPLE_CONFIG}`: ok",
        target.triple,
        printed.trim()
    );
    Ok(())
}

/// Writes `madmail-<version>-<arch>-linux-musl.tar.gz` into `out_dir`;
/// returns its path.
fn pack(
    root: &Path,
    binary: &Path,
    target: &Target,
    out_dir: &Path,
    mtime: u64,
) -> anyhow::Result<PathBuf> {
    let dir = format!("madmail-{VERSION}-{}-linux-musl", target.arch);
    let mut entries = vec![
        Entry {
            name: "madmail",
            mode: 0o755,
            data: std::fs::read(binary)?,
        },
        Entry {
            name: "madmail.service",
            mode: 0o644,
            data: std::fs::read(root.join(UNIT))?,
        },
        Entry {
            name: "chatmail.toml.example",
            mode: 0o644,
            data: std::fs::read(root.join(EXAMPLE_CONFIG))?,
        },
    ];
    let mut sums = String::new();
    for (name, path) in [
        ("chatmail.toml.example", root.join(EXAMPLE_CONFIG)),
        ("madmail", binary.to_owned()),
        ("madmail.service", root.join(UNIT)),
    ] {
        sums.push_str(&format!("{}  {name}\n", sha256(&path)?));
    }
    entries.push(Entry {
        name: "SHA256SUMS",
        mode: 0o644,
        data: sums.into_bytes(),
    });
    let bytes = tar_gz(&dir, &mut entries, mtime)?;
    std::fs::create_dir_all(out_dir)?;
    let path = out_dir.join(format!("{dir}.tar.gz"));
    std::fs::write(&path, &bytes)?;
    println!(
        "dist: wrote {} ({} bytes, sha256 {})",
        path.display(),
        bytes.len(),
        sha256(&path)?
    );
    Ok(path)
}

/// `SHA256SUMS` beside the tarballs, for `sha256sum -c`.
fn write_sums(out_dir: &Path, tarballs: &[PathBuf]) -> anyhow::Result<()> {
    let mut text = String::new();
    for path in tarballs {
        let name = path.file_name().context("tarball without a name")?;
        text.push_str(&format!("{}  {}\n", sha256(path)?, name.to_string_lossy()));
    }
    std::fs::write(out_dir.join("SHA256SUMS"), text)?;
    Ok(())
}

/// Scores `dist/madmail.service` with `systemd-analyze security
/// --offline=true`; fails below "OK". systemd's table: exposure 0.0
/// PERFECT, from 0.1 SAFE, from 1.0 OK, from 5.0 MEDIUM, from 7.5 EXPOSED,
/// from 9.0 UNSAFE, 10.0 DANGEROUS.
fn score_unit(root: &Path) -> anyhow::Result<()> {
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(root.join(UNIT))
        .env("SYSTEMD_COLORS", "0")
        .output()
        .context("systemd-analyze not found: apt-get install -y systemd (Debian)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "systemd-analyze security failed: {}",
        stderr.trim()
    );
    // A directive systemd does not know is ignored, and its protection lost.
    ensure!(
        !stderr.contains("madmail.service"),
        "systemd-analyze complains about the unit:\n{}",
        stderr.trim()
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .context("systemd-analyze printed no overall exposure level")?;
    let tenths = exposure_tenths(line).context("cannot read the exposure")?;
    println!("dist: systemd-analyze: {}", line.trim());
    ensure!(
        tenths < 50,
        "the unit scores worse than OK: {}",
        line.trim()
    );
    Ok(())
}

/// `→ Overall exposure level for madmail.service: 2.1 OK 🙂` → 21.
fn exposure_tenths(line: &str) -> Option<u32> {
    let value = line.rsplit_once(": ")?.1.split_whitespace().next()?;
    let (whole, tenth) = value.split_once('.')?;
    let tenth: u32 = tenth.parse().ok().filter(|t| *t < 10)?;
    Some(whole.parse::<u32>().ok()? * 10 + tenth)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF-64 header with `segments` as (type, offset, size).
    #[test]
    fn reads_the_exposure_of_the_overall_line() {
        let line = "→ Overall exposure level for madmail.service: 2.1 OK 🙂";
        assert_eq!(exposure_tenths(line), Some(21));
        assert_eq!(
            exposure_tenths("Overall exposure level for x: 9.6 UNSAFE"),
            Some(96)
        );
        assert_eq!(exposure_tenths("Overall exposure level for x: high"), None);
    }

    #[test]
    fn finds_the_package_name_not_a_dependency_name() {
        let manifest = "[dependencies]\nname = \"dep\"\n\n[package]\nversion = \"1\"\nname = \"chatmail-store\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("chatmail-store"));
        assert_eq!(package_name("[workspace]\nmembers = []\n"), None);
    }
}
