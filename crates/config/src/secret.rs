//! Per-installation secrets kept in the state directory (the TURN
//! credential secret, the Shadowsocks key).
//!
//! Invariants: a secret file is written atomically (temporary file, fsync,
//! rename, fsync of the directory) with mode 0600 and is never rewritten
//! once present; a file of the wrong size is an error, never silently
//! replaced (that would invalidate everything handed out under it).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Bytes of every secret.
pub const LEN: usize = 32;

/// Why a secret could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret {path} has {len} bytes, expected {LEN}")]
    Corrupt { path: PathBuf, len: usize },
}

/// Reads `state_dir/file`, which must exist (a command that only shows
/// what a secret gives must not create one the relay's user cannot read).
pub fn load(state_dir: &Path, file: &str) -> Result<[u8; LEN], SecretError> {
    let path = state_dir.join(file);
    let bytes = std::fs::read(&path).map_err(|source| SecretError::Io {
        path: path.clone(),
        source,
    })?;
    exact(path, &bytes)
}

/// Reads `state_dir/file`, creating it with random bytes if it does not
/// exist yet. Blocking file I/O: call at start-up.
pub fn load_or_create(state_dir: &Path, file: &str) -> Result<[u8; LEN], SecretError> {
    let path = state_dir.join(file);
    let io = |source| SecretError::Io {
        path: path.clone(),
        source,
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret: [u8; LEN] = rand::random();
            write_atomically(state_dir, &path, &secret).map_err(io)?;
            return Ok(secret);
        }
        Err(e) => return Err(io(e)),
    };
    exact(path, &bytes)
}

fn exact(path: PathBuf, bytes: &[u8]) -> Result<[u8; LEN], SecretError> {
    <[u8; LEN]>::try_from(bytes).map_err(|_| SecretError::Corrupt {
        path,
        len: bytes.len(),
    })
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_secret_once_and_keeps_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = load_or_create(&state, "some-secret").unwrap();
        let path = state.join("some-secret");
        assert_eq!(std::fs::read(&path).unwrap(), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("tmp").exists());
        assert_eq!(load_or_create(&state, "some-secret").unwrap(), first);
        assert_eq!(load(&state, "some-secret").unwrap(), first);
        assert_ne!(load_or_create(&state, "other-secret").unwrap(), first);
        assert!(matches!(
            load(&state, "missing"),
            Err(SecretError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn refuses_a_secret_file_of_the_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short"), b"short").unwrap();
        let err = load_or_create(dir.path(), "short").unwrap_err();
        assert!(matches!(err, SecretError::Corrupt { len: 5, .. }), "{err}");
    }
}
