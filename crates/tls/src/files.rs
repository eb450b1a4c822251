//! `tls.mode = "files"`: a certificate and key that another program
//! (certbot, an operator's script) replaces while the relay runs.
//!
//! Flow: [`crate::Certs::watch_files`] loads the pair once, exactly like
//! [`Identity::from_files`] plus a check that the key belongs to the first
//! certificate, serves it through a [`CurrentCert`] and spawns a task that
//! looks at both files every [`POLL_INTERVAL`]. It only reads their
//! metadata (device, inode, length, modification time, following symbolic
//! links), so an atomic rename, a symbolic link switched to a new version
//! (certbot's `live/` directory) and an in-place write are all noticed. A
//! change is acted upon once both files have looked the same for two polls
//! in a row, so a pair caught while being written is not read; the new pair
//! is then loaded, checked and served from the next handshake on, by every
//! listener at once.
//!
//! A pair that cannot be used (half-written, unreadable, or a key that does
//! not match the certificate) keeps the old certificate in service and is
//! reported with one warning; the files are tried again only after they
//! change again.
//!
//! The task holds the resolver weakly: it ends at the first poll after the
//! last server configuration using the certificate is gone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

use crate::{CurrentCert, Identity, TlsError};

/// Time between two looks at the files.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// What identifies one version of a file without reading it; `None` for a
/// file that is missing or cannot be examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

/// The stamps of the certificate and the key file, in that order.
type PairStamp = [Option<FileStamp>; 2];

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
    })
}

/// The certificate and key file of `tls.mode = "files"`.
#[derive(Debug, Clone)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Pair {
    fn stamp(&self) -> PairStamp {
        [file_stamp(&self.cert), file_stamp(&self.key)]
    }

    /// Reads both files; the key must belong to the first certificate.
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let certified = Identity::from_files(&self.cert, &self.key)?.certified_key()?;
        certified.keys_match()?;
        Ok(certified)
    }
}

/// What a poll decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing to do (no change, still changing, or already refused).
    Wait,
    /// The files changed and have settled: load them.
    Load(PairStamp),
}

/// The decisions of the watcher, apart from the files themselves.
#[derive(Debug)]
struct Watch {
    /// The files' stamp when the certificate in service was loaded.
    served: PairStamp,
    /// The stamp seen at the previous poll.
    previous: PairStamp,
    /// A settled stamp whose pair could not be used (warned about once).
    refused: Option<PairStamp>,
}

impl Watch {
    fn new(served: PairStamp) -> Self {
        Self {
            served,
            previous: served,
            refused: None,
        }
    }

    /// One poll, given the files' current stamp.
    fn poll(&mut self, now: PairStamp) -> Step {
        let settled = now == self.previous;
        self.previous = now;
        if !settled || now == self.served || self.refused == Some(now) {
            return Step::Wait;
        }
        Step::Load(now)
    }

    /// The pair with stamp `stamp` is now in service.
    fn loaded(&mut self, stamp: PairStamp) {
        self.served = stamp;
        self.refused = None;
    }

    /// The pair with stamp `stamp` could not be used.
    fn refused(&mut self, stamp: PairStamp) {
        self.refused = Some(stamp);
    }
}

/// Loads the pair, serves it through a new [`CurrentCert`] and spawns the
/// task that keeps it fresh (see the module doc); the task's handle is for
/// tests, dropping it leaves the task running.
pub(crate) fn watch(
    cert: &Path,
    key: &Path,
    every: Duration,
) -> Result<(Arc<CurrentCert>, JoinHandle<()>), TlsError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| TlsError::NoRuntime)?;
    let pair = Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
    };
    // The stamp before the read: a change during the read is noticed later.
    let stamp = pair.stamp();
    let current = Arc::new(CurrentCert::new(pair.load()?));
    let task = runtime.spawn(keep_fresh(pair, Arc::downgrade(&current), stamp, every));
    Ok((current, task))
}

async fn keep_fresh(pair: Pair, current: Weak<CurrentCert>, served: PairStamp, every: Duration) {
    let mut watch = Watch::new(served);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(current) = current.upgrade() else {
            return;
        };
        let Step::Load(stamp) = watch.poll(pair.stamp()) else {
            continue;
        };
        match pair.load() {
            Ok(certified) => {
                current.replace(certified);
                watch.loaded(stamp);
                tracing::info!(cert = %pair.cert.display(), "TLS certificate reloaded from its files");
            }
            Err(error) => {
                watch.refused(stamp);
                tracing::warn!(
                    %error,
                    "TLS certificate files changed but cannot be used; the previous certificate stays in service"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: u64) -> PairStamp {
        let file = FileStamp {
            dev: 1,
            ino: n,
            len: 100,
            mtime: (0, 0),
        };
        [Some(file), Some(file)]
    }

    #[test]
    fn unchanged_files_are_left_alone() {
        let mut watch = Watch::new(stamp(1));
        assert_eq!(watch.poll(stamp(1)), Step::Wait);
        assert_eq!(watch.poll(stamp(1)), Step::Wait);
    }

    #[test]
    fn a_change_is_loaded_once_it_has_settled() {
        let mut watch = Watch::new(stamp(1));
        assert_eq!(watch.poll(stamp(2)), Step::Wait, "just changed");
        assert_eq!(watch.poll(stamp(3)), Step::Wait, "still changing");
        assert_eq!(watch.poll(stamp(3)), Step::Load(stamp(3)));
        watch.loaded(stamp(3));
        assert_eq!(watch.poll(stamp(3)), Step::Wait);
    }

    #[test]
    fn a_refused_pair_is_tried_again_only_after_another_change() {
        let mut watch = Watch::new(stamp(1));
        watch.poll(stamp(2));
        assert_eq!(watch.poll(stamp(2)), Step::Load(stamp(2)));
        watch.refused(stamp(2));
        for _ in 0..3 {
            assert_eq!(watch.poll(stamp(2)), Step::Wait, "warned once only");
        }
        watch.poll(stamp(4));
        assert_eq!(watch.poll(stamp(4)), Step::Load(stamp(4)));
    }

    #[test]
    fn going_back_to_the_served_files_needs_no_reload() {
        let mut watch = Watch::new(stamp(1));
        watch.poll(stamp(2));
        assert_eq!(watch.poll(stamp(1)), Step::Wait);
        assert_eq!(watch.poll(stamp(1)), Step::Wait);
    }

    #[test]
    fn a_missing_file_counts_as_a_change() {
        let mut watch = Watch::new(stamp(1));
        let missing = [stamp(1)[0], None];
        watch.poll(missing);
        assert_eq!(watch.poll(missing), Step::Load(missing));
    }

    /// A certificate for `name` with its key, written to `dir/<file>.pem`
    /// by rename (as certbot and most tools do).
    fn write_pair(dir: &Path, name: &str) -> Vec<u8> {
        let (cert, key) = crate::generate(&[name.to_owned()]).unwrap();
        crate::write_private(dir, &dir.join("key.pem"), key.as_bytes()).unwrap();
        crate::write_private(dir, &dir.join("cert.pem"), cert.as_bytes()).unwrap();
        leaf_of(&cert)
    }

    fn leaf_of(pem: &str) -> Vec<u8> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    fn served(current: &CurrentCert) -> Vec<u8> {
        current.get().cert[0].to_vec()
    }

    const FAST: Duration = Duration::from_millis(20);

    /// Waits until the served certificate is `leaf` (fails after 5 s).
    async fn until_served(current: &CurrentCert, leaf: &[u8]) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while served(current) != leaf {
                tokio::time::sleep(FAST).await;
            }
        });
        assert!(waited.await.is_ok(), "new certificate not served");
    }

    /// Many poll intervals: long enough for any reload to have happened.
    async fn several_polls() {
        tokio::time::sleep(FAST * 15).await;
    }

    fn paths(dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join("cert.pem"), dir.join("key.pem"))
    }

    #[tokio::test]
    async fn renamed_files_are_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "a.example");
        let (cert, key) = paths(dir.path());
        let (current, _task) = watch(&cert, &key, FAST).unwrap();
        assert_eq!(served(&current), first);
        let second = write_pair(dir.path(), "b.example");
        until_served(&current, &second).await;
    }

    #[tokio::test]
    async fn files_written_in_place_are_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "a.example");
        let (cert, key) = paths(dir.path());
        let (current, _task) = watch(&cert, &key, FAST).unwrap();
        let (cert_pem, key_pem) = crate::generate(&["b.example".to_owned()]).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        std::fs::write(&cert, &cert_pem).unwrap();
        until_served(&current, &leaf_of(&cert_pem)).await;
    }

    #[tokio::test]
    async fn a_switched_symlink_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let [v1, v2, live] = ["v1", "v2", "live"].map(|d| dir.path().join(d));
        let first = write_pair(&v1, "a.example");
        let second = write_pair(&v2, "b.example");
        std::os::unix::fs::symlink(&v1, &live).unwrap();
        let (cert, key) = paths(&live);
        let (current, _task) = watch(&cert, &key, FAST).unwrap();
        assert_eq!(served(&current), first);
        let tmp = dir.path().join("live.tmp");
        std::os::unix::fs::symlink(&v2, &tmp).unwrap();
        std::fs::rename(&tmp, &live).unwrap();
        until_served(&current, &second).await;
    }

    #[tokio::test]
    async fn a_half_written_or_mismatched_pair_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_pair(dir.path(), "a.example");
        let (cert, key) = paths(dir.path());
        let (current, _task) = watch(&cert, &key, FAST).unwrap();
        let full = std::fs::read(&cert).unwrap();
        std::fs::write(&cert, &full[..full.len() / 2]).unwrap();
        several_polls().await;
        assert_eq!(served(&current), first, "half-written certificate");
        // A new certificate whose key never arrives.
        let (other_cert, _) = crate::generate(&["b.example".to_owned()]).unwrap();
        std::fs::write(&cert, &other_cert).unwrap();
        several_polls().await;
        assert_eq!(served(&current), first, "certificate without its key");
        // The matching key arrives: now the pair is good.
        let third = write_pair(dir.path(), "c.example");
        until_served(&current, &third).await;
    }

    #[tokio::test]
    async fn a_mismatched_pair_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "a.example");
        let (other_cert, _) = crate::generate(&["b.example".to_owned()]).unwrap();
        let (cert, key) = paths(dir.path());
        std::fs::write(&cert, other_cert).unwrap();
        let refused = watch(&cert, &key, FAST).err().unwrap();
        assert!(matches!(refused, TlsError::Rustls(_)), "{refused}");
    }

    #[tokio::test]
    async fn the_task_ends_when_the_certificate_is_no_longer_used() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "a.example");
        let (cert, key) = paths(dir.path());
        let (current, task) = watch(&cert, &key, FAST).unwrap();
        let config = crate::Certs::Live(current).relay_config().unwrap();
        several_polls().await;
        assert!(!task.is_finished(), "a configuration still uses it");
        drop(config);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(ended.is_ok(), "the task kept running");
    }

    #[test]
    fn watching_outside_a_runtime_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "a.example");
        let (cert, key) = paths(dir.path());
        let outside = watch(&cert, &key, FAST).err().unwrap();
        assert!(matches!(outside, TlsError::NoRuntime), "{outside}");
    }
}
