//! `cargo xtask nix-check`: the Nix checks that run without nixpkgs.
//!
//! 1. Every `.nix` file of the repository (tracked, or new and not ignored)
//!    must parse: `nix-instantiate --parse`.
//! 2. Every `.nix` file must be formatted (`nixpkgs-fmt --check`, the
//!    flake's `formatter`) and free of unused bindings (`deadnix --fail`).
//!    Both tools are pinned crates.io releases, installed with `cargo
//!    install --locked` into `~/.cache/madmail/tools` only when the pinned
//!    version is missing there, so CI builds them once.
//! 3. The module evaluation tests of `tests-vm/nix/eval.nix` run against
//!    nixpkgs' `lib` when `NIXPKGS_LIB` names one (a nixpkgs checkout, its
//!    `lib` directory, or a nixpkgs.lib checkout); otherwise a `SKIP:` line
//!    says so. Each test is one `{ name; ok; detail; }` of the evaluated
//!    list; a case whose configuration does not evaluate is evaluated once
//!    more without `tryEval`, so the Nix error is printed.
//! 4. With `NIXPKGS_LIB` and `systemd-analyze`, the madmail unit of the
//!    default configuration (rendered by `eval.nix` as NixOS writes it) is
//!    scored by `systemd-analyze security --offline=true`; anything worse
//!    than "OK" (exposure above 4.9) fails. Otherwise a `SKIP:` line.
//!
//! Invariant: a missing `nix-instantiate` is an error with an install hint,
//! never a silent pass; a missing nixpkgs lib or `systemd-analyze` is always
//! announced with `SKIP:`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

const INSTALL_HINT: &str =
    "nix-instantiate not found: install Nix (Debian: `apt-get install -y nix-bin`)";
const EVAL_TESTS: &str = "tests-vm/nix/eval.nix";
/// Linters from crates.io, pinned: (crate and binary name, version).
const LINTERS: [(&str, &str); 2] = [("nixpkgs-fmt", "1.3.0"), ("deadnix", "1.3.1")];
/// systemd's "OK" ends below 5.0 (`badness_table` of
/// src/analyze/analyze-security.c: MEDIUM from 50, in tenths).
const MAX_EXPOSURE_TENTHS: u32 = 49;
/// Failed cases whose Nix error is printed in full.
const EXPLAINED_FAILURES: usize = 3;

/// Runs every check that the installed tools allow; see the module docs.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let version =
        run(root, Command::new("nix-instantiate").arg("--version")).context(INSTALL_HINT)?;
    println!("nix: {}", String::from_utf8_lossy(&version.stdout).trim());
    let files = nix_files(root)?;
    parse_all(root, &files)?;
    lint_all(root, &files)?;
    match std::env::var_os("NIXPKGS_LIB").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let lib = lib_dir(Path::new(&dir))?;
            eval_tests(root, &lib)?;
            unit_security(root, &lib)
        }
        None => {
            println!(
                "SKIP: module evaluation tests: set NIXPKGS_LIB to a nixpkgs `lib` directory to run them"
            );
            println!("SKIP: unit security score: it scores the unit the module evaluation renders");
            Ok(())
        }
    }
}

fn parse_all(root: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for file in files {
        let output = run(
            root,
            Command::new("nix-instantiate").arg("--parse").arg(file),
        )?;
        if !output.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&output.stderr).trim());
            failed.push(file.display().to_string());
        }
    }
    if !failed.is_empty() {
        bail!("these .nix files do not parse: {}", failed.join(", "));
    }
    println!("nix: {} .nix files parse", files.len());
    Ok(())
}

/// `nixpkgs-fmt --check` and `deadnix --fail` over `files`.
fn lint_all(root: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let [fmt, deadnix] = LINTERS.map(|(name, version)| linter(name, version));
    let fmt = fmt?;
    let output = run(root, Command::new(&fmt).arg("--check").args(files))?;
    if !output.status.success() {
        print_output(&output);
        bail!(
            "these .nix files are not formatted; run `{} <file>`",
            fmt.display()
        );
    }
    println!("nix: {} .nix files formatted (nixpkgs-fmt)", files.len());
    let output = run(root, Command::new(deadnix?).arg("--fail").args(files))?;
    if !output.status.success() {
        print_output(&output);
        bail!("deadnix found unused bindings in .nix files");
    }
    println!("nix: no unused bindings (deadnix)");
    Ok(())
}

/// The pinned `name` binary, installed first when it is missing or another
/// version.
fn linter(name: &str, version: &str) -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let root = Path::new(&home).join(".cache/madmail/tools");
    let binary = root.join("bin").join(name);
    let installed = Command::new(&binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
    if installed {
        println!("nix: {name} {version} (cached in {})", root.display());
        return Ok(binary);
    }
    println!(
        "nix: {name} {version}: installing into {} (cargo install --locked)",
        root.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["install", "--locked", "--force", "--quiet", "--root"])
        .arg(&root)
        .args([name, "--version", version])
        // A temporary target directory: the workspace's stays untouched.
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .with_context(|| format!("cannot run cargo install {name}"))?;
    anyhow::ensure!(status.success(), "cargo install {name} {version} failed");
    Ok(binary)
}

fn print_output(output: &Output) {
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        if !text.trim().is_empty() {
            eprintln!("{}", text.trim_end());
        }
    }
}

/// Tracked `.nix` files plus new ones git does not ignore.
fn nix_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let output = run(
        root,
        Command::new("git").args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "*.nix",
        ]),
    )?;
    anyhow::ensure!(output.status.success(), "git ls-files failed");
    let mut files: Vec<PathBuf> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|path| root.join(path).is_file())
        .collect();
    files.sort();
    files.dedup();
    anyhow::ensure!(
        !files.is_empty(),
        "no .nix files found under {}",
        root.display()
    );
    Ok(files)
}

/// The directory whose `default.nix` is nixpkgs' `lib`.
fn lib_dir(given: &Path) -> anyhow::Result<PathBuf> {
    let nested = given.join("lib");
    let dir = if nested.join("default.nix").is_file() {
        nested
    } else {
        given.to_path_buf()
    };
    anyhow::ensure!(
        dir.join("default.nix").is_file() && dir.join("modules.nix").is_file(),
        "NIXPKGS_LIB={} is not a nixpkgs lib (no default.nix and modules.nix)",
        given.display()
    );
    Ok(dir)
}

/// `nix-instantiate --eval --strict --json` of `eval.nix` with `extra` arguments.
fn eval(root: &Path, lib: &Path, extra: &[&str]) -> anyhow::Result<Output> {
    run(
        root,
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", EVAL_TESTS])
            .args(["--argstr", "libPath"])
            .arg(lib)
            .args(extra),
    )
}

fn eval_tests(root: &Path, lib: &Path) -> anyhow::Result<()> {
    let output = eval(root, lib, &[])?;
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr).trim());
        bail!("{EVAL_TESTS} did not evaluate");
    }
    let results = parse_results(&String::from_utf8_lossy(&output.stdout))?;
    anyhow::ensure!(!results.is_empty(), "{EVAL_TESTS} defines no tests");
    let failed: Vec<&TestResult> = results.iter().filter(|r| !r.ok).collect();
    for result in &results {
        match result.ok {
            true => println!("  ok   {}", result.name),
            false => println!("  FAIL {}: {}", result.name, result.detail),
        }
    }
    if !failed.is_empty() {
        let mut shown = Vec::new();
        for result in failed.iter().take(EXPLAINED_FAILURES) {
            explain(root, lib, &result.name, &mut shown)?;
        }
        bail!(
            "{} of {} module evaluation tests failed",
            failed.len(),
            results.len()
        );
    }
    println!(
        "nix: {} module evaluation tests passed (lib: {})",
        results.len(),
        lib.display()
    );
    Ok(())
}

/// Prints the Nix error of a failed case, if it has one not `shown` yet.
fn explain(root: &Path, lib: &Path, case: &str, shown: &mut Vec<String>) -> anyhow::Result<()> {
    let output = eval(root, lib, &["--argstr", "explain", case])?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        if !shown.contains(&tail) {
            eprintln!("--- {case}: the Nix error\n{tail}");
            shown.push(tail);
        }
    }
    Ok(())
}

/// Scores the rendered unit with `systemd-analyze security --offline=true`.
fn unit_security(root: &Path, lib: &Path) -> anyhow::Result<()> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "SKIP: unit security score: systemd-analyze not found (Debian: apt-get install -y systemd)"
        );
        return Ok(());
    }
    let output = eval(root, lib, &["--arg", "unit", "true"])?;
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr).trim());
        bail!("{EVAL_TESTS} did not render the unit");
    }
    let (unit, _) = parse_string(String::from_utf8_lossy(&output.stdout).trim())?;
    let dir = std::env::temp_dir().join(format!("madmail-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("madmail.service");
    std::fs::write(&file, unit)?;
    let threshold = format!("--threshold={MAX_EXPOSURE_TENTHS}");
    let analysis = run(
        root,
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager", &threshold])
            .arg(&file),
    );
    std::fs::remove_dir_all(&dir)?;
    let analysis = analysis?;
    let stdout = String::from_utf8_lossy(&analysis.stdout);
    let overall = stdout
        .lines()
        .find(|line| line.contains("Overall exposure level"));
    let Some(overall) = overall else {
        print_output(&analysis);
        bail!("systemd-analyze printed no overall exposure level");
    };
    let overall = overall.trim_start_matches(|c: char| !c.is_ascii_alphabetic());
    println!("nix: {overall}");
    let exposure = exposure_tenths(overall)?;
    if exposure > MAX_EXPOSURE_TENTHS || !analysis.status.success() {
        print_output(&analysis);
        bail!("the madmail unit scores worse than OK (exposure above 4.9)");
    }
    Ok(())
}

/// `... madmail.service: 1.7 OK 🙂` → 17.
fn exposure_tenths(line: &str) -> anyhow::Result<u32> {
    let value = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .context("no exposure value")?;
    let (whole, tenth) = value
        .split_once('.')
        .context("exposure without a decimal")?;
    Ok(whole.parse::<u32>()? * 10 + tenth.parse::<u32>()?)
}

fn run(root: &Path, command: &mut Command) -> anyhow::Result<Output> {
    command
        .current_dir(root)
        .output()
        .with_context(|| format!("cannot run {:?}", command.get_program()))
}

/// One evaluated case of `tests-vm/nix/eval.nix`.
#[derive(Debug, PartialEq)]
struct TestResult {
    name: String,
    ok: bool,
    detail: String,
}

/// Reads the JSON list `[{"detail":"…","name":"…","ok":true}, …]` that
/// `nix-instantiate --json` prints (keys sorted, no nesting).
fn parse_results(json: &str) -> anyhow::Result<Vec<TestResult>> {
    let mut results = Vec::new();
    let mut rest = json
        .trim()
        .strip_prefix('[')
        .context("expected a JSON list")?;
    loop {
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if let Some(after) = rest.strip_prefix(']') {
            anyhow::ensure!(after.trim().is_empty(), "trailing text after the JSON list");
            return Ok(results);
        }
        let body = rest.strip_prefix('{').context("expected a JSON object")?;
        let (fields, after) = parse_object(body)?;
        let field = |key: &str| fields.iter().find(|f| f.key == key);
        let string = |key: &str| field(key).filter(|f| f.quoted).map(|f| f.value.clone());
        results.push(TestResult {
            name: string("name").context("a test without a name")?,
            ok: field("ok").is_some_and(|f| !f.quoted && f.value == "true"),
            detail: string("detail").unwrap_or_default(),
        });
        rest = after;
    }
}

/// One `"key": value` of a JSON object; `quoted` tells strings from literals.
struct Field {
    key: String,
    value: String,
    quoted: bool,
}

/// Parses `"key":value,…}` with string, `true` or `false` values.
fn parse_object(mut rest: &str) -> anyhow::Result<(Vec<Field>, &str)> {
    let mut fields = Vec::new();
    loop {
        rest = rest.trim_start().trim_start_matches(',').trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((fields, after));
        }
        let (key, after) = parse_string(rest)?;
        rest = after
            .trim_start()
            .strip_prefix(':')
            .context("expected `:`")?
            .trim_start();
        let quoted = rest.starts_with('"');
        let (value, after) = if quoted {
            parse_string(rest)?
        } else {
            let end = rest.find([',', '}']).context("unterminated JSON object")?;
            (rest[..end].trim().to_owned(), &rest[end..])
        };
        fields.push(Field { key, value, quoted });
        rest = after;
    }
}

/// Parses one JSON string literal at the start of `text`.
fn parse_string(text: &str) -> anyhow::Result<(String, &str)> {
    let body = text.strip_prefix('"').context("expected a JSON string")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
                    let code = u32::from_str_radix(&hex, 16).context("bad \\u escape")?;
                    out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                Some(other) => out.push(other),
                None => bail!("unterminated JSON string"),
            },
            c => out.push(c),
        }
    }
    bail!("unterminated JSON string")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_passing_and_failing_results() {
        let json = r#"[{"detail":"","name":"a","ok":true},{"detail":"not true: \"ports\"\n","name":"b","ok":false}]"#;
        let results = parse_results(json).unwrap();
        assert_eq!(
            results,
            vec![
                TestResult {
                    name: "a".into(),
                    ok: true,
                    detail: String::new()
                },
                TestResult {
                    name: "b".into(),
                    ok: false,
                    detail: "not true: \"ports\"\n".into()
                },
            ]
        );
    }

    #[test]
    fn rejects_output_that_is_not_a_list() {
        assert!(parse_results("{}").is_err());
        assert!(parse_results(r#"[{"name":"a","ok":true}"#).is_err());
        assert!(parse_results(r#"[{"ok":true}]"#).is_err());
    }

    #[test]
    fn a_result_without_ok_true_counts_as_failed() {
        let results = parse_results(r#"[{"name":"a","ok":"true"}]"#).unwrap();
        assert!(!results[0].ok);
    }

    #[test]
    fn reads_the_exposure_of_the_overall_line() {
        let line = "Overall exposure level for madmail.service: 1.7 OK 🙂";
        assert_eq!(exposure_tenths(line).unwrap(), 17);
        assert_eq!(
            exposure_tenths("Overall exposure level for x.service: 10.0 DANGEROUS").unwrap(),
            100
        );
        assert!(exposure_tenths("Overall exposure level for x.service: OK").is_err());
    }

    #[test]
    fn reads_a_rendered_unit_string() {
        let (text, rest) = parse_string(r#""[Unit]\nEnvironment=\"A=1\"\n""#).unwrap();
        assert_eq!(text, "[Unit]\nEnvironment=\"A=1\"\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn finds_lib_inside_a_checkout_or_given_directly() {
        let dir = std::env::temp_dir().join(format!("xtask-nix-lib-{}", std::process::id()));
        let lib = dir.join("lib");
        std::fs::create_dir_all(&lib).unwrap();
        assert!(lib_dir(&dir).is_err());
        std::fs::write(lib.join("default.nix"), "{ }").unwrap();
        std::fs::write(lib.join("modules.nix"), "{ }").unwrap();
        assert_eq!(lib_dir(&dir).unwrap(), lib);
        assert_eq!(lib_dir(&lib).unwrap(), lib);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
