//! `cargo xtask nix-check`: the Nix checks that run without nixpkgs.
//!
//! 1. Every `.nix` file of the repository (tracked, or new and not ignored)
//!    must parse: `nix-instantiate --parse`.
//! 2. The module evaluation tests of `tests-vm/nix/eval.nix` run against
//!    nixpkgs' `lib` when `NIXPKGS_LIB` names one (a nixpkgs checkout, its
//!    `lib` directory, or a nixpkgs.lib checkout); otherwise a `SKIP:` line
//!    says so. Each test is one `{ name; ok; detail; }` of the evaluated list.
//!
//! Invariant: a missing `nix-instantiate` is an error with an install hint,
//! never a silent pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};

const INSTALL_HINT: &str =
    "nix-instantiate not found: install Nix (Debian: `apt-get install -y nix-bin`)";
const EVAL_TESTS: &str = "tests-vm/nix/eval.nix";

/// Runs the parse check and, when `NIXPKGS_LIB` is set, the module evaluation tests.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let version =
        run(root, Command::new("nix-instantiate").arg("--version")).context(INSTALL_HINT)?;
    println!("nix: {}", String::from_utf8_lossy(&version.stdout).trim());
    parse_all(root)?;
    match std::env::var_os("NIXPKGS_LIB").filter(|v| !v.is_empty()) {
        Some(dir) => eval_tests(root, &lib_dir(Path::new(&dir))?),
        None => {
            println!(
                "SKIP: module evaluation tests: set NIXPKGS_LIB to a nixpkgs `lib` directory to run them"
            );
            Ok(())
        }
    }
}

fn parse_all(root: &Path) -> anyhow::Result<()> {
    let files = nix_files(root)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no .nix files found under {}",
        root.display()
    );
    let mut failed = Vec::new();
    for file in &files {
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

fn eval_tests(root: &Path, lib: &Path) -> anyhow::Result<()> {
    let output = run(
        root,
        Command::new("nix-instantiate")
            .args([
                "--eval", "--strict", "--json", EVAL_TESTS, "--argstr", "libPath",
            ])
            .arg(lib),
    )?;
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
