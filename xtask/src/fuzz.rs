//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/`.
//!
//! Flow:
//! 1. build `fuzz/` (a workspace of its own) with the coverage
//!    instrumentation libFuzzer needs (`-Cpasses=sancov-module` and the
//!    `sanitizer-coverage` options, as cargo-fuzz passes them), for the host
//!    target only so that build scripts stay uninstrumented, into
//!    `<target>/fuzz`, profile `fuzz`;
//! 2. the committed corpora, `fuzz/corpus.tar.xz` (one directory per
//!    target, 1.2 MB packed instead of 57 MB in 13,000 files), are unpacked
//!    under `<target>/fuzz/committed`;
//! 3. per target: the seeds (the fixtures of the crates, see [`seeds`])
//!    and the committed corpus are copied into a working corpus; the findings of earlier runs in
//!    `fuzz/regressions/<target>` are replayed first, then libFuzzer runs
//!    for `--seconds` or `--runs`, with a memory and a per-input time limit;
//! 4. one line per target: executions, coverage (libFuzzer's `cov`, edges
//!    reached, and `ft`, features), corpus size and findings. A finding (a
//!    crash, a time-out, a leak or too much memory) is copied to
//!    `<target>/fuzz/findings/<target>/` and fails the run.
//!
//! `--merge` writes the working corpora back, minimised (`-merge=1`), and
//! packs them into `fuzz/corpus.tar.xz` again (sorted, with fixed times
//! and owners), for committing after a long run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

/// Every target, in the order they run.
const TARGETS: &[&str] = &[
    "smtp_command",
    "smtp_data",
    "imap_command",
    "gate",
    "dkim_verify",
    "mxdeliv_envelope",
    "config",
];

/// The instrumentation cargo-fuzz uses, minus the sanitizer: these are
/// stable `-C` options, so the stable toolchain builds the targets.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg=fuzzing",
];

const HOST: &str = "x86_64-unknown-linux-gnu";

/// The committed corpora, relative to the workspace root.
const ARCHIVE: &str = "fuzz/corpus.tar.xz";

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Debug, Clone)]
pub struct FuzzOptions {
    /// Only these targets (repeatable); all by default.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Seconds per target (the smoke run of the test command).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Executions per target instead of a time limit (the long run).
    #[arg(long)]
    pub runs: Option<u64>,
    /// Parallel fuzzing processes per target (libFuzzer `-fork`).
    #[arg(long, default_value_t = 1)]
    pub jobs: u32,
    /// Write the minimised working corpora back into `fuzz/corpus.tar.xz`.
    #[arg(long)]
    pub merge: bool,
    /// libFuzzer's random seed; 0 picks one at random. Fixed by default,
    /// so that the smoke run of the test command tries the same inputs on
    /// every machine and a run that passed here passes there.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Default for FuzzOptions {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            seconds: 10,
            runs: None,
            jobs: 1,
            merge: false,
            seed: 1,
        }
    }
}

/// What one target's run printed at its end.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    runs: u64,
    cov: u64,
    ft: u64,
    corpus: u64,
}

pub fn run(root: &Path, options: &FuzzOptions) -> Result<()> {
    let targets: Vec<&str> = if options.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for name in &options.targets {
            ensure!(TARGETS.contains(&name.as_str()), "no fuzz target {name}");
        }
        options.targets.iter().map(String::as_str).collect()
    };
    let out = crate::target_dir(root).join("fuzz");
    build(root, &out)?;
    let bins = out.join(HOST).join("fuzz");
    let committed = unpack(root, &out)?;
    let mut failed = Vec::new();
    for target in targets {
        let work = out.join("work").join(target);
        prepare_corpus(root, target, &committed.join(target), &work)?;
        replay(root, &bins.join(target), target)?;
        let started = Instant::now();
        let (summary, findings) = fuzz(&bins.join(target), target, &work, &out, options)?;
        println!(
            "fuzz {target}: {} runs in {:.0} s, cov {}, ft {}, corpus {}, findings {}",
            summary.runs,
            started.elapsed().as_secs_f64(),
            summary.cov,
            summary.ft,
            summary.corpus,
            findings.len(),
        );
        if !findings.is_empty() {
            for finding in &findings {
                println!("  finding: {}", finding.display());
            }
            failed.push(target);
        }
        if options.merge {
            merge(&bins.join(target), &committed.join(target), &work)?;
        }
    }
    if options.merge {
        pack(root, &out)?;
    }
    ensure!(failed.is_empty(), "fuzz findings in: {}", failed.join(", "));
    Ok(())
}

fn build(root: &Path, out: &Path) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--locked",
            "--profile",
            "fuzz",
            "--target",
            HOST,
            "--bins",
        ])
        .current_dir(root.join("fuzz"))
        .env("CARGO_TARGET_DIR", out)
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        // The main build's flags (if any) are not the fuzz build's.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .context("running cargo build in fuzz/")?;
    ensure!(status.success(), "building the fuzz targets failed");
    Ok(())
}

/// Unpacks `fuzz/corpus.tar.xz` into `<out>/committed`; returns the
/// directory that holds one corpus directory per target.
fn unpack(root: &Path, out: &Path) -> Result<PathBuf> {
    let dir = out.join("committed");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let archive = root.join(ARCHIVE);
    if archive.exists() {
        let status = Command::new("tar")
            .arg("-xJf")
            .arg(&archive)
            .arg("-C")
            .arg(&dir)
            .status()
            .context("running tar")?;
        ensure!(status.success(), "unpacking {} failed", archive.display());
    }
    Ok(dir.join("corpus"))
}

/// Packs `<out>/committed/corpus` into `fuzz/corpus.tar.xz`, the same
/// bytes for the same files.
fn pack(root: &Path, out: &Path) -> Result<()> {
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .arg("-cJf")
        .arg(root.join(ARCHIVE))
        .arg("-C")
        .arg(out.join("committed"))
        .arg("corpus")
        .env("XZ_OPT", "-6")
        .status()
        .context("running tar")?;
    ensure!(status.success(), "packing {ARCHIVE} failed");
    Ok(())
}

/// A fresh working corpus: the seeds and the committed corpus.
fn prepare_corpus(root: &Path, target: &str, committed: &Path, work: &Path) -> Result<()> {
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work)?;
    for (i, seed) in seeds(root, target)?.into_iter().enumerate() {
        fs::write(work.join(format!("seed-{i:03}")), seed)?;
    }
    if committed.is_dir() {
        for entry in fs::read_dir(committed)? {
            let path = entry?.path();
            if let Some(name) = path.file_name() {
                fs::copy(&path, work.join(name))?;
            }
        }
    }
    Ok(())
}

/// Runs every earlier finding once; each must pass now.
fn replay(root: &Path, bin: &Path, target: &str) -> Result<()> {
    let dir = root.join("fuzz/regressions").join(target);
    if !dir.is_dir() {
        return Ok(());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    if files.is_empty() {
        return Ok(());
    }
    let output = Command::new(bin)
        .args(&files)
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !output.status.success() {
        let log = String::from_utf8_lossy(&output.stderr);
        bail!("fuzz {target}: an earlier finding fails again:\n{log}");
    }
    println!("fuzz {target}: {} earlier finding(s) pass", files.len());
    Ok(())
}

fn fuzz(
    bin: &Path,
    target: &str,
    work: &Path,
    out: &Path,
    options: &FuzzOptions,
) -> Result<(Summary, Vec<PathBuf>)> {
    let findings = out.join("findings").join(target);
    fs::create_dir_all(&findings)?;
    let mut command = Command::new(bin);
    command
        .arg(format!("-artifact_prefix={}/", findings.display()))
        .args(["-rss_limit_mb=2048", "-timeout=10", "-max_len=65536"])
        .arg("-print_final_stats=1")
        .arg(format!("-seed={}", options.seed));
    match options.runs {
        Some(runs) => command.arg(format!("-runs={runs}")),
        None => command.arg(format!("-max_total_time={}", options.seconds)),
    };
    if options.jobs > 1 {
        command.arg(format!("-fork={}", options.jobs));
    }
    let before = listing(&findings)?;
    let output = command
        .arg(work)
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let new: Vec<PathBuf> = listing(&findings)?
        .into_iter()
        .filter(|path| !before.contains(path))
        .collect();
    if !output.status.success() && new.is_empty() {
        bail!("fuzz {target}: libFuzzer failed without a finding:\n{log}");
    }
    if !new.is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
    }
    Ok((summary(&log), new))
}

fn listing(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    Ok(paths)
}

/// The last status line (`#123 DONE cov: 456 ft: 789 corp: 12/3Kb ...`)
/// and the final executions (`stat::number_of_executed_units: 123`).
fn summary(log: &str) -> Summary {
    let mut summary = Summary::default();
    let number = |text: &str| {
        text.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    for line in log.lines() {
        if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
            summary.runs = number(rest.trim());
        }
        if !line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            let value = words.clone().next().unwrap_or("");
            match word {
                "cov:" => summary.cov = number(value),
                "ft:" => summary.ft = number(value),
                "corp:" => summary.corpus = number(value),
                _ => {}
            }
        }
    }
    summary
}

/// Minimises `work` into the committed corpus `dir`.
fn merge(bin: &Path, dir: &Path, work: &Path) -> Result<()> {
    let fresh = dir.with_extension("merging");
    if fresh.exists() {
        fs::remove_dir_all(&fresh)?;
    }
    fs::create_dir_all(&fresh)?;
    let status = Command::new(bin)
        .args(["-merge=1", "-max_len=65536"])
        .arg(&fresh)
        .arg(work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    ensure!(status.success(), "merging into {} failed", dir.display());
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&fresh, dir)?;
    println!(
        "fuzz: {} holds {} inputs",
        dir.display(),
        listing(dir)?.len()
    );
    Ok(())
}

/// The starting inputs of `target`, from the crates' fixtures. Targets
/// whose first byte picks a mode get each fixture once per mode.
fn seeds(root: &Path, target: &str) -> Result<Vec<Vec<u8>>> {
    let messages = || -> Result<Vec<Vec<u8>>> {
        let mut all = Vec::new();
        for dir in ["crates/gate/testdata", "crates/imap/testdata"] {
            for entry in fs::read_dir(root.join(dir))? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "eml") {
                    all.push(fs::read(&path)?);
                }
            }
        }
        all.sort();
        Ok(all)
    };
    let with_modes = |inputs: Vec<Vec<u8>>, modes: u8| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for input in inputs {
            for mode in 0..modes {
                let mut seed = vec![mode];
                seed.extend_from_slice(&input);
                out.push(seed);
            }
        }
        out
    };
    let lines = |text: &[&str]| text.iter().map(|l| l.as_bytes().to_vec()).collect();
    Ok(match target {
        "smtp_command" => lines(SMTP_COMMANDS),
        "smtp_data" => with_modes(lines(SMTP_DATA), 4),
        "imap_command" => with_modes(lines(IMAP_SESSIONS), 2),
        "gate" => with_modes(messages()?, 3),
        "dkim_verify" => with_modes(messages()?, 2),
        "mxdeliv_envelope" => lines(MXDELIV_HEADERS),
        "config" => vec![
            fs::read(root.join("dist/chatmail.toml.example"))?,
            b"mail_domain = \"chat.example.org\"\n[limits]\nmax_message_size = 1000\n".to_vec(),
            b"mail_domain = \"[192.0.2.1]\"\n[tls]\nmode = \"self-signed\"\n".to_vec(),
        ],
        _ => Vec::new(),
    })
}

const SMTP_COMMANDS: &[&str] = &[
    "EHLO client.example.org",
    "HELO [192.0.2.1]",
    "MAIL FROM:<alice0001@example.org> SIZE=1000 BODY=8BITMIME SMTPUTF8",
    "MAIL FROM:<>",
    "MAIL FROM: <@route.example:alice0001@example.org> AUTH=<>",
    "RCPT TO:<bob000001@[192.0.2.1]>",
    "RCPT TO:<bob000001@example.org> NOTIFY=NEVER",
    "AUTH PLAIN AGFsaWNlMDAwMUBleGFtcGxlLm9yZwBwYXNzd29yZA==",
    "AUTH LOGIN",
    "DATA",
    "RSET",
    "NOOP anything",
    "VRFY bob000001",
    "STARTTLS",
    "QUIT",
];

const SMTP_DATA: &[&str] = &[
    "Subject: hi\r\n\r\nbody\r\n.\r\n",
    "..leading dot\r\n.\r\nMAIL FROM:<x@y>\r\n",
    "smuggled\n.\nMAIL FROM:<x@y>\r\n.\r\n",
    "bare\rcr\r.\r\r\n.\r\n",
    ".\r\n",
];

const IMAP_SESSIONS: &[&str] = &[
    "a1 CAPABILITY\r\na2 LOGIN alice0001@example.org password\r\n",
    "a1 LOGIN {21}\r\nalice0001@example.org {8}\r\npassword\r\n",
    "a1 AUTHENTICATE PLAIN\r\nAGFsaWNlAHBhc3N3b3Jk\r\n",
    "a1 ID (\"name\" \"Delta Chat\" \"version\" \"2.0\")\r\n",
    "a1 SELECT INBOX\r\na2 FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (FROM)])\r\n",
    "a1 APPEND INBOX (\\Seen) {5}\r\nhello\r\n",
    "a1 APPEND INBOX {5+}\r\nhello\r\n",
    "a1 UID SEARCH UNSEEN\r\na2 IDLE\r\nDONE\r\n",
    "a1 SETMETADATA INBOX (/private/devicetoken \"token\")\r\n",
    "a1 GETMETADATA \"\" /shared/vendor/deltachat/irohrelay\r\n",
    "a1 COMPRESS DEFLATE\r\n",
    "a1 UID STORE 1:3 +FLAGS.SILENT (\\Deleted)\r\na2 EXPUNGE\r\na3 LOGOUT\r\n",
];

const MXDELIV_HEADERS: &[&str] = &[
    "X-Mail-From: <alice0001@example.org>\r\nX-Mail-To: <bob000001@example.net>\r\n",
    "X-Mail-To: bob000001@example.net\r\nX-Mail-To: carol0001@example.net\r\n",
    "X-Mail-From:\r\nX-Mail-To: <bob000001@[192.0.2.1]>\r\nContent-Length: 10\r\n",
    "X-Mail-From: a@b\r\nX-Mail-From: c@d\r\nX-Mail-To: e@f\r\n",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_figures_of_a_libfuzzer_run() {
        let log = "INFO: Seed: 1\n\
                   #2\tINITED cov: 10 ft: 12 corp: 2/30b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 57 ft: 80 corp: 9/200b lim: 43 exec/s: 2048 rss: 31Mb\n\
                   #9000\tDONE   cov: 61 ft: 93 corp: 11/250b lim: 43 exec/s: 3000 rss: 31Mb\n\
                   Done 9000 runs in 3 second(s)\n\
                   stat::number_of_executed_units: 9000\n\
                   stat::peak_rss_mb:              31\n";
        assert_eq!(
            summary(log),
            Summary {
                runs: 9000,
                cov: 61,
                ft: 93,
                corpus: 11
            }
        );
    }
}
