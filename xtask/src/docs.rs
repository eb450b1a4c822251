//! `cargo xtask docs`: writes `docs/config.md` from the configuration schema.

use std::path::Path;

/// Regenerates the configuration reference under `root`.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let path = root.join("docs/config.md");
    std::fs::write(&path, chatmail_config::reference::markdown())?;
    println!("wrote {}", path.display());
    Ok(())
}
