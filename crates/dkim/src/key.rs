//! The signing key and the DNS record that publishes it.
//!
//! A key is held as a parsed ring key pair (through mail-auth) plus the
//! public key in the form DNS wants: the DER SubjectPublicKeyInfo for RSA,
//! the raw 32 bytes for Ed25519 (RFC 8463 §4.2).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{DkimKey as KeyPair, Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{DkimError, is_dns_name};

/// RSA modulus size of generated keys (RFC 8301 §3.2: at least 1024,
/// 2048 recommended and fits a TXT record in two strings).
const RSA_BITS: usize = 2048;

/// Longest character-string of a TXT record (RFC 1035 §3.3.14).
const TXT_CHUNK: usize = 255;

/// DER `AlgorithmIdentifier` of rsaEncryption (RFC 8017 §A.1) with NULL
/// parameters, as used in a SubjectPublicKeyInfo (RFC 5280 §4.1.2.7).
const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// PKCS#8 v1 `PrivateKeyInfo` of an Ed25519 key up to the 32-byte seed
/// (RFC 8410 §7). v1 rather than ring's v2 so that OpenSSL reads the file.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// rsa-sha256 (RFC 6376 §3.3.1), understood by every verifier.
    #[default]
    Rsa,
    /// ed25519-sha256 (RFC 8463), short keys; not all verifiers know it.
    Ed25519,
}

impl Algorithm {
    /// The `k=` value of the DNS record (RFC 6376 §3.6.1, RFC 8463 §4.2).
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key_type())
    }
}

/// A DKIM signing key with its selector.
pub struct DkimKey {
    /// The `s=` tag; the key is published at `<selector>._domainkey.<domain>`.
    pub(crate) selector: String,
    /// Which algorithm `pair` is, so callers need not inspect it.
    algorithm: Algorithm,
    /// The private key, ready to sign.
    pub(crate) pair: KeyPair,
    /// The `p=` bytes of the DNS record before base64.
    public_key: Vec<u8>,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    /// Builds a key from a PKCS#8 DER private key (RSA or Ed25519; the
    /// algorithm is detected).
    pub fn from_pkcs8_der(selector: &str, der: &[u8]) -> Result<Self, DkimError> {
        if !is_dns_name(selector) {
            return Err(DkimError::InvalidSelector(selector.to_owned()));
        }
        let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der));
        let (algorithm, pair, public_key) = if let Ok(rsa) = RsaKey::<Sha256>::from_key_der(pkcs8) {
            let spki = rsa_spki(&rsa.public_key());
            (Algorithm::Rsa, KeyPair::Rsa(rsa), spki)
        } else if let Ok(ed) = Ed25519Key::from_pkcs8_maybe_unchecked_der(der) {
            let raw = ed.public_key();
            (Algorithm::Ed25519, KeyPair::Ed25519(ed), raw)
        } else {
            return Err(DkimError::UnsupportedKey);
        };
        Ok(DkimKey {
            selector: selector.to_owned(),
            algorithm,
            pair,
            public_key,
        })
    }

    /// Generates a new private key, returned as PKCS#8 DER.
    pub fn generate_pkcs8(algorithm: Algorithm) -> Result<Vec<u8>, DkimError> {
        match algorithm {
            Algorithm::Rsa => {
                use rsa::pkcs8::EncodePrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                    .map_err(|err| DkimError::Generate(err.to_string()))?;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|err| DkimError::Generate(err.to_string()))?;
                Ok(der.as_bytes().to_vec())
            }
            Algorithm::Ed25519 => {
                use rsa::rand_core::RngCore as _;
                let mut seed = [0u8; 32];
                rsa::rand_core::OsRng
                    .try_fill_bytes(&mut seed)
                    .map_err(|err| DkimError::Generate(err.to_string()))?;
                let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
                der.extend_from_slice(&seed);
                Ok(der)
            }
        }
    }

    /// The `s=` selector.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The signature algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Owner name of the key record: `<selector>._domainkey.<domain>.`
    /// (RFC 6376 §3.6.2.1), fully qualified for zone files.
    pub fn record_name(&self, domain: &str) -> String {
        format!(
            "{}._domainkey.{}.",
            self.selector,
            domain.trim_end_matches('.')
        )
    }

    /// The key record text: `v=DKIM1; k=<type>; p=<base64>` (RFC 6376 §3.6.1).
    pub fn txt_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.key_type(),
            BASE64.encode(&self.public_key)
        )
    }

    /// The record split into strings of at most 255 bytes; a verifier joins
    /// them without separator (RFC 6376 §3.6.2.2).
    pub fn txt_chunks(&self) -> Vec<String> {
        // The record is ASCII, so every byte offset is a char boundary.
        let record = self.txt_record();
        record
            .as_bytes()
            .chunks(TXT_CHUNK)
            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
            .collect()
    }

    /// One zone-file line: `<name> IN TXT ( "chunk" "chunk" )`.
    pub fn zone_record(&self, domain: &str) -> String {
        let strings: Vec<String> = self
            .txt_chunks()
            .iter()
            .map(|chunk| format!("\"{chunk}\""))
            .collect();
        format!(
            "{} IN TXT ( {} )",
            self.record_name(domain),
            strings.join(" ")
        )
    }
}

/// Wraps a PKCS#1 RSAPublicKey into a SubjectPublicKeyInfo, the form every
/// DKIM verifier accepts in `p=` (RFC 6376 §3.6.1 and its Appendix C).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let mut bit_string = vec![0x03];
    der_length(pkcs1.len() + 1, &mut bit_string);
    bit_string.push(0x00); // no unused bits
    bit_string.extend_from_slice(pkcs1);

    let mut spki = vec![0x30];
    der_length(RSA_ALGORITHM_ID.len() + bit_string.len(), &mut spki);
    spki.extend_from_slice(&RSA_ALGORITHM_ID);
    spki.extend_from_slice(&bit_string);
    spki
}

/// Appends a DER definite length (X.690 §8.1.3).
fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One RSA key for all tests: generation takes a while in debug builds.
    pub(crate) fn rsa_der() -> &'static [u8] {
        static DER: OnceLock<Vec<u8>> = OnceLock::new();
        DER.get_or_init(|| DkimKey::generate_pkcs8(Algorithm::Rsa).unwrap())
    }

    pub(crate) fn rsa_key(selector: &str) -> DkimKey {
        DkimKey::from_pkcs8_der(selector, rsa_der()).unwrap()
    }

    pub(crate) fn ed25519_key(selector: &str) -> DkimKey {
        let der = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
        DkimKey::from_pkcs8_der(selector, &der).unwrap()
    }

    #[test]
    fn rsa_record_holds_the_spki_of_the_private_key() {
        use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
        let key = rsa_key("opendkim");
        assert_eq!(key.algorithm(), Algorithm::Rsa);
        let record = key.txt_record();
        let p = record.strip_prefix("v=DKIM1; k=rsa; p=").unwrap();
        let spki = BASE64.decode(p).unwrap();
        let public = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
        let private = rsa::RsaPrivateKey::from_pkcs8_der(rsa_der()).unwrap();
        assert_eq!(public, private.to_public_key());
    }

    #[test]
    fn ed25519_record_holds_the_raw_32_byte_key() {
        let key = ed25519_key("ed");
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let record = key.txt_record();
        let p = record.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
        assert_eq!(BASE64.decode(p).unwrap().len(), 32);
    }

    #[test]
    fn generated_ed25519_keys_are_v1_and_distinct() {
        let a = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
        let b = DkimKey::generate_pkcs8(Algorithm::Ed25519).unwrap();
        assert_eq!(a.len(), 48);
        assert!(a.starts_with(&ED25519_PKCS8_V1_PREFIX));
        assert_ne!(a, b);
    }

    #[test]
    fn loads_ed25519_keys_in_pkcs8_v2_form() {
        let v2 = Ed25519Key::generate_pkcs8().unwrap();
        let key = DkimKey::from_pkcs8_der("s", &v2).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
    }

    #[test]
    fn txt_chunks_are_at_most_255_bytes_and_join_to_the_record() {
        for key in [rsa_key("opendkim"), ed25519_key("ed")] {
            let chunks = key.txt_chunks();
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 255));
            assert_eq!(chunks.concat(), key.txt_record());
        }
        // A 2048-bit RSA record needs more than one string.
        assert!(rsa_key("opendkim").txt_chunks().len() >= 2);
    }

    #[test]
    fn record_name_is_fully_qualified_under_domainkey() {
        let key = ed25519_key("opendkim");
        assert_eq!(
            key.record_name("example.org"),
            "opendkim._domainkey.example.org."
        );
        assert_eq!(
            key.record_name("example.org."),
            "opendkim._domainkey.example.org."
        );
    }

    #[test]
    fn zone_record_quotes_every_chunk() {
        let key = rsa_key("opendkim");
        let line = key.zone_record("example.org");
        assert!(line.starts_with("opendkim._domainkey.example.org. IN TXT ( \"v=DKIM1; k=rsa; p="));
        assert_eq!(line.matches('"').count(), 2 * key.txt_chunks().len());
    }

    #[test]
    fn rejects_garbage_der_and_bad_selectors() {
        assert!(matches!(
            DkimKey::from_pkcs8_der("s", b"not a key"),
            Err(DkimError::UnsupportedKey)
        ));
        assert!(matches!(
            DkimKey::from_pkcs8_der("../x", rsa_der()),
            Err(DkimError::InvalidSelector(_))
        ));
    }

    #[test]
    fn debug_output_hides_the_private_key() {
        let text = format!("{:?}", rsa_key("opendkim"));
        assert_eq!(
            text,
            "DkimKey { selector: \"opendkim\", algorithm: Rsa, .. }"
        );
    }

    #[test]
    fn der_lengths_use_short_and_long_forms() {
        let mut out = Vec::new();
        der_length(0x7f, &mut out);
        der_length(0x80, &mut out);
        der_length(0x10e, &mut out);
        assert_eq!(out, [0x7f, 0x81, 0x80, 0x82, 0x01, 0x0e]);
    }
}
