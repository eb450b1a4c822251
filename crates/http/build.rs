//! Embeds the admin web UI (`admin-leptos/`, built by `cargo xtask
//! admin-ui` into `admin-leptos/dist`, or into `MADMAIL_ADMIN_UI_DIR`) when
//! its files are there; without them the binary serves a page saying how
//! to build it.

use std::path::PathBuf;

const FILES: [&str; 3] = ["index.html", "admin.js", "admin_bg.wasm"];

fn main() {
    println!("cargo:rerun-if-env-changed=MADMAIL_ADMIN_UI_DIR");
    let dir = match std::env::var_os("MADMAIL_ADMIN_UI_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap())
            .join("../../admin-leptos/dist"),
    };
    println!("cargo:rerun-if-changed={}", dir.display());
    let paths: Vec<PathBuf> = FILES.iter().map(|f| dir.join(f)).collect();
    for path in &paths {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let code = if paths.iter().all(|p| p.is_file()) {
        let include = |p: &PathBuf| {
            let p = p.canonicalize().unwrap();
            format!("include_bytes!({:?})", p.display().to_string())
        };
        format!(
            "/// The built admin web UI: index.html, the glue, the module.\n\
             pub const ADMIN_UI: Option<[&[u8]; 3]> = Some([{}, {}, {}]);\n",
            include(&paths[0]),
            include(&paths[1]),
            include(&paths[2])
        )
    } else {
        "/// The admin web UI was not built into this binary.\n\
         pub const ADMIN_UI: Option<[&[u8]; 3]> = None;\n"
            .to_owned()
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("admin_ui.rs");
    std::fs::write(out, code).unwrap();
}
