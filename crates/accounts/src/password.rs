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

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

/// Memory cost in KiB (19 MiB).
const MEMORY_KIB: u32 = 19 * 1024;
/// Iterations.
const TIME_COST: u32 = 2;
/// Lanes.
const PARALLELISM: u32 = 1;

/// Why hashing failed (never on valid input; reported as temporary).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
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

/// A PHC string for `password`, with a random salt.
pub(crate) async fn hash(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || hash_now(&password)).await?
}

/// Whether `password` matches the PHC string. A malformed stored hash
/// matches nothing.
pub(crate) async fn verify(password: String, phc: String) -> Result<bool, HashError> {
    let check = move || {
        let Ok(parsed) = PasswordHash::new(&phc) else {
            return false;
        };
        // The parameters come from the PHC string itself.
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    };
    Ok(tokio::task::spawn_blocking(check).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let started = std::time::Instant::now();
        let phc = hash("correct horse".into()).await.unwrap();
        eprintln!("argon2id hash took {:?}", started.elapsed());
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse".into(), phc.clone()).await.unwrap());
        assert!(!verify("wrong horse".into(), phc).await.unwrap());
    }

    #[tokio::test]
    async fn same_password_gets_different_salts() {
        let a = hash("shared-password".into()).await.unwrap();
        let b = hash("shared-password".into()).await.unwrap();
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn malformed_stored_hash_matches_nothing() {
        assert!(!verify("x".into(), "not a phc string".into()).await.unwrap());
    }
}
