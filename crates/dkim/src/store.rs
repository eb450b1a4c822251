//! The key file: `<dir>/dkim-<selector>.pem`, PKCS#8 PEM, mode 0600.
//!
//! Invariants: a key file is never half-written and never replaced. A new
//! key is written to a temporary file, synced, then hard-linked to its
//! final name, which fails if another process created the key first; the
//! loser then loads the winner's key, so every process signs with the key
//! that is on disk (and in DNS).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;

use crate::{Algorithm, DkimError, DkimKey, is_dns_name};

/// Upper bound of a key file; a PEM RSA-8192 key is about 6.5 KB.
const MAX_KEY_FILE: u64 = 64 * 1024;

impl DkimKey {
    /// Loads the key of `selector` from `dir`, generating and storing it
    /// first if there is none. A stored key of another algorithm is an
    /// error: its public half is what DNS publishes under this selector.
    pub fn load_or_generate(
        dir: &Path,
        selector: &str,
        algorithm: Algorithm,
    ) -> Result<DkimKey, DkimError> {
        if !is_dns_name(selector) {
            return Err(DkimError::InvalidSelector(selector.to_owned()));
        }
        let path = key_path(dir, selector);
        let key = match read_key(&path, selector)? {
            Some(key) => key,
            None => {
                let der = DkimKey::generate_pkcs8(algorithm)?;
                store_new(dir, &path, &der)?;
                // Re-read: if another process won the race, use its key.
                read_key(&path, selector)?.ok_or_else(|| DkimError::Read {
                    path: path.clone(),
                    source: io::ErrorKind::NotFound.into(),
                })?
            }
        };
        if key.algorithm() != algorithm {
            return Err(DkimError::AlgorithmMismatch {
                path,
                found: key.algorithm(),
                wanted: algorithm,
            });
        }
        Ok(key)
    }

    /// Loads the key of `selector` from `dir` without ever creating one;
    /// `None` if there is no key file yet (the relay makes it on first
    /// start). For tools that only inspect, such as `madmail doctor`.
    pub fn load(dir: &Path, selector: &str) -> Result<Option<DkimKey>, DkimError> {
        if !is_dns_name(selector) {
            return Err(DkimError::InvalidSelector(selector.to_owned()));
        }
        read_key(&key_path(dir, selector), selector)
    }

    /// Where the key of `selector` is kept in `dir`.
    pub fn path(dir: &Path, selector: &str) -> PathBuf {
        key_path(dir, selector)
    }
}

fn key_path(dir: &Path, selector: &str) -> PathBuf {
    dir.join(format!("dkim-{selector}.pem"))
}

/// Reads and parses the key file; `None` if it does not exist.
fn read_key(path: &Path, selector: &str) -> Result<Option<DkimKey>, DkimError> {
    let read_error = |source| DkimError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(err)),
    };
    let mut pem = Vec::new();
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut pem)
        .map_err(read_error)?;
    let invalid = || DkimError::InvalidKey {
        path: path.to_owned(),
    };
    if pem.len() as u64 > MAX_KEY_FILE {
        return Err(invalid());
    }
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| invalid())?;
    match DkimKey::from_pkcs8_der(selector, der.secret_pkcs8_der()) {
        Ok(key) => Ok(Some(key)),
        Err(DkimError::UnsupportedKey) => Err(invalid()),
        Err(err) => Err(err),
    }
}

/// Writes a new key file atomically with mode 0600, never replacing one.
fn store_new(dir: &Path, path: &Path, der: &[u8]) -> Result<(), DkimError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DkimError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_error(dir))?;
    let tmp = temp_path(path);
    remove_if_present(&tmp).map_err(write_error(&tmp))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_error(&tmp))?;
    let written = file
        .write_all(pem_encode(der).as_bytes())
        .and_then(|()| file.sync_all());
    drop(file);
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let removed = fs::remove_file(&tmp);
    linked.map_err(write_error(path))?;
    removed.map_err(write_error(&tmp))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error(dir))
}

/// `.dkim-<selector>.pem.<pid>.tmp` beside the key file.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// PEM with the `PRIVATE KEY` label and 64-column base64 (RFC 7468 §10).
fn pem_encode(der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generates_once_then_reuses_the_stored_key() {
        let dir = tempfile::tempdir().unwrap();
        for algorithm in [Algorithm::Ed25519, Algorithm::Rsa] {
            let selector = algorithm.key_type();
            let first = DkimKey::load_or_generate(dir.path(), selector, algorithm).unwrap();
            let path = dir.path().join(format!("dkim-{selector}.pem"));
            let pem = fs::read_to_string(&path).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);

            let second = DkimKey::load_or_generate(dir.path(), selector, algorithm).unwrap();
            assert_eq!(first.txt_record(), second.txt_record());
            assert_eq!(fs::read_to_string(&path).unwrap(), pem);
        }
        // Only the two key files remain: no temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn load_never_creates_a_key() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DkimKey::load(dir.path(), "s1").unwrap().is_none());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let made = DkimKey::load_or_generate(dir.path(), "s1", Algorithm::Ed25519).unwrap();
        let loaded = DkimKey::load(dir.path(), "s1").unwrap().unwrap();
        assert_eq!(made.txt_record(), loaded.txt_record());
        assert_eq!(
            DkimKey::path(dir.path(), "s1"),
            dir.path().join("dkim-s1.pem")
        );
    }

    #[test]
    fn creates_the_key_directory() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("state/dkim");
        DkimKey::load_or_generate(&nested, "s1", Algorithm::Ed25519).unwrap();
        assert!(nested.join("dkim-s1.pem").exists());
    }

    #[test]
    fn refuses_a_stored_key_of_another_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        DkimKey::load_or_generate(dir.path(), "s1", Algorithm::Ed25519).unwrap();
        let err = DkimKey::load_or_generate(dir.path(), "s1", Algorithm::Rsa).unwrap_err();
        assert!(matches!(
            err,
            DkimError::AlgorithmMismatch {
                found: Algorithm::Ed25519,
                wanted: Algorithm::Rsa,
                ..
            }
        ));
    }

    #[test]
    fn refuses_a_corrupt_key_file_instead_of_replacing_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dkim-s1.pem");
        fs::write(
            &path,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = DkimKey::load_or_generate(dir.path(), "s1", Algorithm::Ed25519).unwrap_err();
        assert!(matches!(err, DkimError::InvalidKey { .. }));
        assert!(fs::read_to_string(&path).unwrap().contains("AAAA"));
    }

    #[test]
    fn loads_a_key_stored_by_another_tool() {
        let dir = tempfile::tempdir().unwrap();
        let der = crate::key::tests::rsa_der();
        fs::write(dir.path().join("dkim-opendkim.pem"), pem_encode(der)).unwrap();
        let key = DkimKey::load_or_generate(dir.path(), "opendkim", Algorithm::Rsa).unwrap();
        assert_eq!(
            key.txt_record(),
            crate::key::tests::rsa_key("opendkim").txt_record()
        );
    }

    #[test]
    fn rejects_selectors_that_are_not_dns_labels() {
        let dir = tempfile::tempdir().unwrap();
        let err = DkimKey::load_or_generate(dir.path(), "../x", Algorithm::Rsa).unwrap_err();
        assert!(matches!(err, DkimError::InvalidSelector(_)));
    }
}
