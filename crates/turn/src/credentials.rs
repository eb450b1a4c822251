//! TURN REST credentials (the scheme coturn calls `use-auth-secret`).
//!
//! Flow: [`Credentials::load_or_create`] reads the 32-byte installation
//! secret from `<state_dir>/turn-secret`, generating it on first use;
//! [`Credentials::mint`] gives `(username, password)` where the username is
//! the expiry as Unix seconds and the password is
//! `base64(HMAC-SHA1(secret, username))`; [`Credentials::verify`] recomputes
//! the HMAC and checks the expiry.
//!
//! Invariants: the secret file is kept as `chatmail_config::secret` keeps
//! every installation secret (atomic, 0600, never rewritten, the wrong size
//! is an error: replacing it would invalidate every credential in
//! circulation); the secret never leaves this module (no `Debug` of it, no
//! logging).

use std::path::Path;

use chatmail_config::secret::{self, SecretError};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// Name of the secret file inside the state directory.
pub const SECRET_FILE: &str = "turn-secret";
/// Bytes of the installation secret.
const SECRET_LEN: usize = secret::LEN;
/// Longest username [`Credentials::verify`] looks at.
const MAX_USERNAME: usize = 256;
/// Minted expiries are multiples of this many seconds.
const EXPIRY_GRID: u64 = 3600;

type HmacSha1 = Hmac<Sha1>;

/// Mints and verifies TURN credentials with the installation secret.
pub struct Credentials {
    /// The shared HMAC key.
    secret: [u8; SECRET_LEN],
    /// Seconds a minted credential stays valid.
    lifetime: u64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a known secret (tests, or a secret kept elsewhere).
    pub fn from_secret(secret: [u8; SECRET_LEN], lifetime: u64) -> Self {
        Credentials { secret, lifetime }
    }

    /// Loads the secret from `state_dir/turn-secret`, creating it (random,
    /// mode 0600, atomically) if the file does not exist yet. Blocking file
    /// I/O: call at start-up.
    pub fn load_or_create(state_dir: &Path, lifetime: u64) -> Result<Self, SecretError> {
        let secret = secret::load_or_create(state_dir, SECRET_FILE)?;
        Ok(Self::from_secret(secret, lifetime))
    }

    /// Seconds a minted credential stays valid.
    pub fn lifetime(&self) -> u64 {
        self.lifetime
    }

    /// A fresh `(username, password)` valid until `now + lifetime` (Unix
    /// seconds) rounded down to the hour (unless that is not in the future), so that all credentials minted in
    /// one hour are the same one (a TURN server holds one entry per
    /// username it has seen).
    pub fn mint(&self, now: u64) -> (String, String) {
        let expiry = now.saturating_add(self.lifetime);
        let rounded = expiry - expiry % EXPIRY_GRID;
        let username = if rounded > now { rounded } else { expiry }.to_string();
        let password = self.password(&username);
        (username, password)
    }

    /// The password of `username` if its expiry (digits, optionally
    /// followed by `:<name>`) is not past `now`; `None` for an expired or
    /// malformed username.
    pub fn password_if_current(&self, username: &str, now: u64) -> Option<String> {
        let current = expiry(username).is_some_and(|expiry| expiry >= now);
        current.then(|| self.password(username))
    }

    /// `base64(HMAC-SHA1(secret, username))`.
    fn password(&self, username: &str) -> String {
        STANDARD.encode(self.mac(username).finalize().into_bytes())
    }

    /// [`Credentials::mint`] at the current system time.
    pub fn mint_now(&self) -> (String, String) {
        self.mint(unix_now())
    }

    /// Whether `password` belongs to `username` and the expiry in the
    /// username (digits, optionally followed by `:<name>`) is not past
    /// `now`. The comparison runs in constant time.
    pub fn verify(&self, username: &str, password: &str, now: u64) -> bool {
        if expiry(username).is_none_or(|expiry| expiry < now) {
            return false;
        }
        let Ok(tag) = STANDARD.decode(password.as_bytes()) else {
            return false;
        };
        self.mac(username).verify_slice(&tag).is_ok()
    }

    fn mac(&self, username: &str) -> HmacSha1 {
        let mut mac = <HmacSha1 as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(username.as_bytes());
        mac
    }
}

/// The expiry a REST username carries (digits, optionally followed by
/// `:<name>`); `None` for a malformed or overlong one.
pub fn expiry(username: &str) -> Option<u64> {
    if username.len() > MAX_USERNAME {
        return None;
    }
    username.split(':').next()?.parse().ok()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to `path` through a temporary file in `dir`, so a crash
/// leaves either no file or the whole one.
#[cfg(test)]
mod tests {
    use super::*;

    /// Secret bytes 0, 1, ..., 31.
    fn counting_secret() -> [u8; SECRET_LEN] {
        std::array::from_fn(|i| i as u8)
    }

    #[test]
    fn mints_the_coturn_rest_password_of_a_known_vector() {
        // Computed independently: python3 hmac.new(bytes(range(32)),
        // b"1700432000", hashlib.sha1), base64.
        // b"1700431200" (1,700,432,000 rounded down to the hour), base64.
        let credentials = Credentials::from_secret(counting_secret(), 432_000);
        let (username, password) = credentials.mint(1_700_000_000);
        assert_eq!(username, "1700431200");
        assert_eq!(password, "QCHLlCdaZB6WYrDXyPoFWzAoK5I=");
        // The same tool for username "1" (a lifetime under the hour is not
        // rounded below the present).
        let short = Credentials::from_secret(counting_secret(), 1);
        assert_eq!(short.mint(0).1, "RN7y4Y+6iM569O0mWjv2ceHsOFQ=");
    }

    #[test]
    fn verifies_its_own_credentials_until_they_expire() {
        let credentials = Credentials::from_secret(counting_secret(), 100);
        let (username, password) = credentials.mint(1000);
        assert!(credentials.verify(&username, &password, 1000));
        assert!(credentials.verify(&username, &password, 1100));
        assert!(!credentials.verify(&username, &password, 1101));
    }

    #[test]
    fn rejects_wrong_passwords_secrets_and_usernames() {
        let credentials = Credentials::from_secret(counting_secret(), 100);
        let (username, password) = credentials.mint(1000);
        let other = Credentials::from_secret([7; SECRET_LEN], 100);
        assert!(!other.verify(&username, &password, 1000));
        assert!(!credentials.verify("1101", &password, 1000));
        assert!(!credentials.verify(&username, "not base64!", 1000));
        assert!(!credentials.verify("soon", &password, 1000));
        assert!(!credentials.verify(&"9".repeat(300), &password, 1000));
    }

    #[test]
    fn accepts_the_timestamp_colon_name_form() {
        let credentials = Credentials::from_secret(counting_secret(), 100);
        let username = "1100:alice";
        let password = STANDARD.encode(credentials.mac(username).finalize().into_bytes());
        assert!(credentials.verify(username, &password, 1000));
        assert!(!credentials.verify(username, &password, 1101));
    }

    #[test]
    fn the_secret_file_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = Credentials::load_or_create(dir.path(), 100).unwrap();
        assert!(dir.path().join(SECRET_FILE).exists());
        let second = Credentials::load_or_create(dir.path(), 100).unwrap();
        let (username, password) = first.mint(1000);
        assert!(second.verify(&username, &password, 1000));
    }
}
