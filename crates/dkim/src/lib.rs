//! DKIM for the relay: the signing key, signing of outgoing mail, the
//! inbound origin check, and the DNS record that publishes the key.
//!
//! Flow:
//! - On start the relay calls [`DkimKey::load_or_generate`]: the PKCS#8 PEM
//!   key `dkim-<selector>.pem` in the state directory is loaded, or created
//!   once (RSA-2048 by default, Ed25519 as an option) with mode 0600.
//! - Every outgoing message, on both transports and including bounces, goes
//!   through [`DkimKey::sign`], which prepends a `DKIM-Signature:` header
//!   (`c=relaxed/simple`, the headers of [`SIGNED_HEADERS`] signed and
//!   over-signed).
//! - Every inbound message (port 25 and `/mxdeliv`) goes through [`verify`],
//!   which demands a valid signature whose `d=` equals the From domain and
//!   answers with a typed [`OriginError`] carrying the exact SMTP reply.
//! - `madmail dns` prints [`DkimKey::zone_record`] (or
//!   [`DkimKey::record_name`] with [`DkimKey::txt_chunks`]).
//!
//! Invariants:
//! - Signing and the signature checks are synchronous and pure; the only
//!   I/O is the key file and the TXT lookup behind the [`TxtLookup`] trait.
//!   The DKIM library never queries DNS itself: every key it asks for is
//!   answered from records fetched through [`TxtLookup`].
//! - A temporary DNS failure never turns into a permanent rejection.
//! - The private key never appears in `Debug` output or errors.

mod headers;
mod key;
mod lookup;
mod sign;
mod store;
mod verify;

pub use key::{Algorithm, DkimKey};
pub use lookup::{LookupError, StaticTxt, TxtLookup};
pub use sign::SIGNED_HEADERS;
pub use verify::{OriginError, Verifier};

use std::path::PathBuf;

/// Errors of key handling and signing.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// The key file exists but could not be read.
    #[error("cannot read DKIM key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The key file (or its directory) could not be written.
    #[error("cannot write DKIM key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are no PKCS#8 RSA (2048 to 8192 bits) or Ed25519 key.
    #[error("not a PKCS#8 RSA or Ed25519 private key")]
    UnsupportedKey,
    /// The key file holds no usable PKCS#8 RSA or Ed25519 key.
    #[error("DKIM key {path} is not a PKCS#8 PEM RSA or Ed25519 private key")]
    InvalidKey { path: PathBuf },
    /// The stored key is of another algorithm than the configured one.
    #[error(
        "DKIM key {path} is {found} but {wanted} is configured: \
         choose a new selector or remove the key file"
    )]
    AlgorithmMismatch {
        path: PathBuf,
        found: Algorithm,
        wanted: Algorithm,
    },
    /// Key generation failed.
    #[error("DKIM key generation failed: {0}")]
    Generate(String),
    /// The selector is not a DNS label sequence usable as a file name.
    #[error("invalid DKIM selector {0:?}")]
    InvalidSelector(String),
    /// The signing domain is not a DNS domain name (IP literals cannot sign).
    #[error("invalid DKIM signing domain {0:?}")]
    InvalidDomain(String),
    /// The message has no From header, which RFC 6376 §5.4 requires to sign.
    #[error("message has no From header")]
    MissingFrom,
    /// The signing library refused the message or the key.
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// True for a DNS name of labels made of letters, digits, `-` and `_`
/// (underscore for test domains such as `_relay1.test`), at most 253 bytes.
pub(crate) fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_domains_and_underscore_test_domains() {
        assert!(is_dns_name("example.org"));
        assert!(is_dns_name("_relay1.test"));
        assert!(is_dns_name("opendkim"));
    }

    #[test]
    fn rejects_ip_literals_empty_labels_and_tag_injection() {
        assert!(!is_dns_name("[1.2.3.4]"));
        assert!(!is_dns_name("example..org"));
        assert!(!is_dns_name(".example.org"));
        assert!(!is_dns_name("example.org; s=evil"));
        assert!(!is_dns_name("../etc"));
        assert!(!is_dns_name(""));
        assert!(!is_dns_name(&"a".repeat(64)));
    }
}
