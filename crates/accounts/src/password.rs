//! Password hashing with Argon2id.
//!
//! Parameters: m = 19 MiB, t = 2, p = 1, the OWASP minimum for Argon2id.
//! Memory-hard enough that a stolen database is expensive to attack, yet
//! one hash stays in the tens of milliseconds on a small VPS core, which
//! matters because new accounts appear by first login. Repeat logins mostly
//! skip the KDF through [`crate::cache`]. The parameters travel inside the
//! stored PHC string, so they can be raised later without breaking old
//! hashes.
//!
//! Hashing and verifying run on the blocking pool: they would otherwise stall
//! a runtime thread for the whole KDF.
//!
//! Invariant: at most [`KdfLimit`]'s permit count of KDF runs exist at once
//! in the process (each holds 19 MiB), however many logins arrive. The permit
//! travels into the blocking task, so a login abandoned mid-hash keeps it
//! until the KDF really ends. A caller that gets no permit within
//! [`PERMIT_WAIT`] fails with [`HashError::Busy`] instead of queueing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Memory cost in KiB (19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
const TIME_COST: u32 = 2;
/// Lanes.
const PARALLELISM: u32 = 1;

/// How long a login waits for a KDF permit before giving up.
pub(crate) const PERMIT_WAIT: Duration = Duration::from_secs(2);

/// Why hashing failed (never on valid input; reported as temporary).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("too many password checks in progress")]
    Busy,
    #[error("hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn hasher() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, TIME_COST, PARALLELISM, None)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    let hash = hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(hash.to_string())
}

fn verify_now(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // The parameters come from the PHC string itself.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// The bound on concurrent KDF runs, shared by every service of a process.
pub(crate) struct KdfLimit {
    permits: Arc<Semaphore>,
    /// How long to wait for a permit.
    wait: Duration,
    /// KDF runs in progress, and the most seen at once (observability and
    /// tests).
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl KdfLimit {
    pub(crate) fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            wait,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The bound for this machine: 2 × available cores (at least 2) at
    /// once, each waiting at most [`PERMIT_WAIT`].
    pub(crate) fn for_this_machine() -> Arc<KdfLimit> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(KdfLimit::new((2 * cores).max(2), PERMIT_WAIT))
    }

    /// The most KDF runs seen at once.
    #[cfg(test)]
    pub(crate) fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Runs `kdf` on the blocking pool under a permit, or fails with
    /// [`HashError::Busy`] when none frees up within the wait.
    async fn run<T, F>(self: &Arc<Self>, kdf: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        let limit = Arc::clone(self);
        Ok(tokio::task::spawn_blocking(move || limit.under(permit, kdf)).await?)
    }

    /// Runs `kdf` while holding `permit`, counting concurrent runs.
    fn under<T>(&self, permit: OwnedSemaphorePermit, kdf: impl FnOnce() -> T) -> T {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let result = kdf();
        self.running.fetch_sub(1, Ordering::SeqCst);
        drop(permit);
        result
    }
}

/// A PHC string for `password`, with a random salt.
pub(crate) async fn hash(limit: &Arc<KdfLimit>, password: String) -> Result<String, HashError> {
    limit.run(move || hash_now(&password)).await?
}

/// Whether `password` matches the PHC string. A malformed stored hash
/// matches nothing.
pub(crate) async fn verify(
    limit: &Arc<KdfLimit>,
    password: String,
    phc: String,
) -> Result<bool, HashError> {
    limit.run(move || verify_now(&password, &phc)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> Arc<KdfLimit> {
        KdfLimit::for_this_machine()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let started = std::time::Instant::now();
        let phc = hash(&limit(), "correct horse".into()).await.unwrap();
        eprintln!("argon2id hash took {:?}", started.elapsed());
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            verify(&limit(), "correct horse".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(!verify(&limit(), "wrong horse".into(), phc).await.unwrap());
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let a = hash(&limit(), "shared-password".into()).await.unwrap();
        let b = hash(&limit(), "shared-password".into()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn malformed_stored_hash_matches_nothing() {
        let result = verify(&limit(), "x".into(), "not a phc string".into()).await;
        assert!(!result.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_runs_more_kdfs_at_once_than_it_has_permits() {
        let limit = Arc::new(KdfLimit::new(2, Duration::from_secs(60)));
        let phc = hash(&limit, "the-password".into()).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let (limit, phc) = (Arc::clone(&limit), phc.clone());
            tasks.spawn(async move { verify(&limit, "wrong".into(), phc).await });
        }
        while let Some(result) = tasks.join_next().await {
            assert!(!result.unwrap().unwrap());
        }
        assert_eq!(limit.peak(), 2);
    }

    #[tokio::test]
    async fn fails_busy_when_no_permit_frees_up_in_time() {
        let limit = Arc::new(KdfLimit::new(1, Duration::from_millis(50)));
        let held = Arc::clone(&limit.permits).acquire_owned().await.unwrap();
        let result = hash(&limit, "password".into()).await;
        assert!(matches!(result, Err(HashError::Busy)), "{result:?}");
        drop(held);
        assert!(hash(&limit, "password".into()).await.is_ok());
    }
}
