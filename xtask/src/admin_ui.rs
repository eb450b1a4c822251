//! `cargo xtask admin-ui`: builds the admin web UI (`admin-leptos/`) into a
//! directory the relay serves: `index.html`, `admin.js`, `admin_bg.wasm`.
//!
//! Steps: the `wasm32-unknown-unknown` target, the `wasm-bindgen` CLI of
//! exactly the version the UI pins, and binaryen's `wasm-opt` are made
//! present first (installed under `$HOME/.cache/madmail/tools` when
//! missing); then cargo builds the UI, wasm-bindgen writes the glue, and
//! wasm-opt shrinks the module.
//!
//! Invariants: the UI is its own cargo workspace with its own target
//! directory (`$CARGO_TARGET_DIR/admin-ui`), so it never invalidates the
//! server's build; Debian's binaryen (108) breaks the module, so only
//! `wasm-opt` 120 or newer is used.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

/// The wasm target the UI compiles for.
const TARGET: &str = "wasm32-unknown-unknown";

/// Must equal the `wasm-bindgen = "=…"` pin in admin-leptos/Cargo.toml:
/// the glue and the module are only compatible at the same version.
const WASM_BINDGEN_VERSION: &str = "0.2.130";

/// The binaryen release installed from npm when no good `wasm-opt` exists.
const BINARYEN_VERSION: &str = "132.0.0";

/// The oldest `wasm-opt` that keeps the module working.
const MIN_WASM_OPT: u32 = 120;

/// Builds the UI from `root/admin-leptos` into `out`.
pub fn build(root: &Path, out: &Path) -> anyhow::Result<()> {
    let ui = root.join("admin-leptos");
    let tools = tools_dir()?;
    ensure_wasm_target()?;
    let wasm_bindgen = ensure_wasm_bindgen(&tools)?;
    let wasm_opt = ensure_wasm_opt(&tools)?;

    let target_dir = target_dir(&ui, "admin-ui");
    // The module's panic messages name source files: cargo home and the
    // target directory are remapped, so the release binary that embeds the
    // module names no build path (`cargo xtask dist` checks). Flags from
    // the environment replace those of .cargo/config.toml, so its
    // `--cfg erase_components` is repeated here.
    let rustflags = [
        "--cfg".to_owned(),
        "erase_components".to_owned(),
        format!(
            "--remap-path-prefix={}=/cargo",
            crate::dist::cargo_home()?.display()
        ),
        format!("--remap-path-prefix={}=/target", target_dir.display()),
    ];
    run(Command::new(cargo())
        .args(["build", "--release", "--locked", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .current_dir(&ui))?;
    let module = target_dir
        .join(TARGET)
        .join("release")
        .join("madmail-admin-ui.wasm");

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    run(Command::new(&wasm_bindgen)
        .arg(&module)
        .arg("--out-dir")
        .arg(out)
        .args(["--target", "web", "--no-typescript", "--out-name", "admin"]))?;
    let wasm = out.join("admin_bg.wasm");
    let before = size(&wasm)?;
    run(Command::new(&wasm_opt)
        .arg("-Oz")
        .args(WASM_FEATURES)
        .args(["--strip-debug", "--strip-producers"])
        .arg(&wasm)
        .arg("-o")
        .arg(&wasm))?;
    std::fs::copy(ui.join("index.html"), out.join("index.html"))
        .context("copying admin-leptos/index.html")?;
    println!(
        "admin UI in {}: admin_bg.wasm {} KiB (before wasm-opt {} KiB)",
        out.display(),
        size(&wasm)? / 1024,
        before / 1024
    );
    Ok(())
}

/// Runs the UI's unit tests (zone lines, formatting, routes: the parts
/// that need no browser) as a host build, in a target directory of their
/// own beside the wasm build's.
pub fn test(root: &Path) -> anyhow::Result<()> {
    let ui = root.join("admin-leptos");
    let target_dir = target_dir(&ui, "admin-ui-host");
    run(Command::new(cargo())
        .args(["test", "--locked"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&ui))
}

/// `$CARGO_TARGET_DIR/<name>`, so the UI's builds never share the
/// server's directory; without `CARGO_TARGET_DIR`, the UI's own `target/`.
fn target_dir(ui: &Path, name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| PathBuf::from(dir).join(name))
        .unwrap_or_else(|| ui.join("target"))
}

/// The wasm features rustc emits for this target by default, which
/// wasm-opt must accept and may use.
const WASM_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// `$HOME/.cache/madmail/tools`: where missing tools are installed.
fn tools_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache/madmail/tools"))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = stdout(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed to add the wasm target")?;
    if installed.lines().any(|line| line.trim() == TARGET) {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// A `wasm-bindgen` of [`WASM_BINDGEN_VERSION`]: from PATH, from the tools
/// directory, or installed there. Its lock file names crate versions the
/// registry may lack, so the install is not `--locked`.
fn ensure_wasm_bindgen(tools: &Path) -> anyhow::Result<PathBuf> {
    let wanted = format!("wasm-bindgen {WASM_BINDGEN_VERSION}");
    let fits = |program: &Path| {
        stdout(Command::new(program).arg("--version"))
            .is_some_and(|version| version.trim() == wanted)
    };
    let installed = tools.join("bin/wasm-bindgen");
    for candidate in [PathBuf::from("wasm-bindgen"), installed.clone()] {
        if fits(&candidate) {
            return Ok(candidate);
        }
    }
    run(Command::new(cargo())
        .args([
            "install",
            "wasm-bindgen-cli",
            "--version",
            WASM_BINDGEN_VERSION,
            "--root",
        ])
        .arg(tools))?;
    ensure!(
        fits(&installed),
        "{} is not {wanted} after installing it",
        installed.display()
    );
    Ok(installed)
}

/// A `wasm-opt` of binaryen [`MIN_WASM_OPT`] or newer: from PATH, from
/// the tools directory, or installed there from npm.
fn ensure_wasm_opt(tools: &Path) -> anyhow::Result<PathBuf> {
    let prefix = tools.join("binaryen");
    let installed = prefix.join("node_modules/.bin/wasm-opt");
    let fits = |program: &Path| {
        stdout(Command::new(program).arg("--version"))
            .and_then(|version| wasm_opt_version(&version))
            .is_some_and(|version| version >= MIN_WASM_OPT)
    };
    for candidate in [PathBuf::from("wasm-opt"), installed.clone()] {
        if fits(&candidate) {
            return Ok(candidate);
        }
    }
    run(Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&prefix)
        .arg(format!("binaryen@{BINARYEN_VERSION}")))
    .context("npm (Node.js) is needed to install binaryen's wasm-opt")?;
    ensure!(
        fits(&installed),
        "{} is missing or older than {MIN_WASM_OPT} after installing it",
        installed.display()
    );
    Ok(installed)
}

/// The release number in `wasm-opt version 132 (version_132)`.
fn wasm_opt_version(text: &str) -> Option<u32> {
    let rest = text.trim().strip_prefix("wasm-opt version ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The standard output of a program that ran and succeeded; `None` when it
/// cannot start or fails.
fn stdout(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_wasm_opt_release_number() {
        assert_eq!(
            wasm_opt_version("wasm-opt version 132 (version_132)\n"),
            Some(132)
        );
        assert_eq!(wasm_opt_version("wasm-opt version 108"), Some(108));
        assert_eq!(wasm_opt_version("something else"), None);
    }
}
