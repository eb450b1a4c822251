//! Certificates from an ACME CA (RFC 8555), renewed while the server runs.
//!
//! Flow: [`Acme::new`] loads the certificate kept in the state directory
//! (`cert.pem`, `key.pem`, plus `order.txt` naming the CA and the names it
//! was issued for) or, on first start, a temporary self-signed one, and
//! puts it in a [`CurrentCert`] that every listener's configuration
//! resolves through ([`Acme::certs`]). [`Acme::run`] orders a new
//! certificate when none was issued yet, when the CA or the names changed,
//! or once two thirds of its lifetime have passed, stores it and replaces
//! the served one: new handshakes on all listeners get it at once.
//!
//! Challenges are HTTP-01 (RFC 8555 §8.3), answered on port 80 from
//! [`Acme::challenges`]; certificate keys are ECDSA P-256, fresh for each
//! order. The account key (`account.pem`) is created once and reused.
//! Failed orders are retried after 5 minutes, doubling up to 6 hours, which
//! stays within Let's Encrypt's failed-validation limits.

mod challenges;
mod order;

pub use challenges::{ChallengeStore, MAX_PENDING, Published};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Notify;

use crate::{Certs, CurrentCert, Identity, TlsError};

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("ACME protocol: {0}")]
    Protocol(#[from] rustls_acme::acme::AcmeError),
    #[error("CA refused: {0}")]
    Rejected(String),
    #[error("CA did not decide the {0} in time")]
    Timeout(&'static str),
    #[error("too many pending challenges")]
    TooManyChallenges,
    #[error("certificate key: {0}")]
    Key(#[from] rcgen::Error),
    #[error("certificate from CA: {0}")]
    BadCertificate(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What to ask the CA for, and where to keep the result.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact e-mail address given to the CA.
    pub contact: Option<String>,
    /// PEM root certificate(s) trusted for the CA's HTTPS instead of the
    /// web PKI (private CAs, tests).
    pub ca_root: Option<PathBuf>,
    /// The names of the certificate; the first one is also its subject.
    pub names: Vec<String>,
    /// Where the account key and the certificate are kept (`state_dir/acme`).
    pub dir: PathBuf,
}

/// Validity of the certificate being served, from an ACME order.
#[derive(Debug, Clone, Copy)]
struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    /// Renew once two thirds of the lifetime have passed.
    fn renew_at(self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }
}

/// Obtains, keeps and renews the server's ACME certificate.
pub struct Acme {
    client: order::Client,
    config: AcmeConfig,
    current: Arc<CurrentCert>,
    challenges: Arc<ChallengeStore>,
    /// `None` until a certificate of the configured CA and names is served.
    validity: Mutex<Option<Validity>>,
    renew: Notify,
}

impl Acme {
    /// Loads the stored certificate (or a temporary self-signed one) and the
    /// account key, creating the key on first use. Does not contact the CA.
    pub fn new(config: AcmeConfig) -> Result<Self, AcmeError> {
        let tls = client_config(config.ca_root.as_deref())?;
        let account_key = load_or_create_account_key(&config.dir)?;
        let contact = config
            .contact
            .iter()
            .map(|c| format!("mailto:{}", c.trim_start_matches("mailto:")))
            .collect();
        let (identity, validity) = match load_stored(&config) {
            Some(stored) => stored,
            None => (temporary(&config.names)?, None),
        };
        Ok(Self {
            client: order::Client {
                tls,
                directory: config.directory.clone(),
                contact,
                account_key,
            },
            current: Arc::new(CurrentCert::new(identity.certified_key()?)),
            challenges: Arc::default(),
            validity: Mutex::new(validity),
            renew: Notify::new(),
            config,
        })
    }

    /// The certificate source for every listener's configuration.
    pub fn certs(&self) -> Certs {
        Certs::Live(self.current.clone())
    }

    /// The pending HTTP-01 challenges, for the port 80 server.
    pub fn challenges(&self) -> Arc<ChallengeStore> {
        self.challenges.clone()
    }

    /// Whether the served certificate comes from the configured CA (false
    /// while the temporary self-signed one is served).
    pub fn issued(&self) -> bool {
        self.validity().is_some()
    }

    /// Makes [`Acme::run`] order a new certificate now.
    pub fn renew_now(&self) {
        self.renew.notify_one();
    }

    /// Orders a certificate, stores it and serves it from the next
    /// handshake on.
    pub async fn renew(&self) -> Result<(), AcmeError> {
        let issued = order::issue(&self.client, &self.config.names, &self.challenges).await?;
        let dir = &self.config.dir;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Parse before storing: a CA answer that is not a usable chain must
        // not replace a working certificate.
        let identity = parse_issued(&issued.chain_pem, &issued.key_pem)?;
        let validity = validity(&identity)?;
        let certified = identity.certified_key()?;
        crate::write_private(dir, &key, issued.key_pem.as_bytes())?;
        crate::write_private(dir, &cert, issued.chain_pem.as_bytes())?;
        crate::write_private(
            dir,
            &dir.join("order.txt"),
            order_id(&self.config).as_bytes(),
        )?;
        self.current.replace(certified);
        *self.validity.lock().unwrap_or_else(PoisonError::into_inner) = Some(validity);
        tracing::info!(names = ?self.config.names, "ACME certificate installed");
        Ok(())
    }

    /// Keeps the certificate fresh; never returns (drop or abort the task
    /// to stop it).
    pub async fn run(&self) {
        let mut failures = 0u32;
        loop {
            let wait = match failures {
                0 => self.until_renewal(),
                n => retry_delay(n),
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.renew.notified() => {}
            }
            match self.renew().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry = retry_delay(failures).as_secs();
                    tracing::warn!("ACME order failed, retrying in {retry} s: {e}");
                }
            }
        }
    }

    fn validity(&self) -> Option<Validity> {
        *self.validity.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn until_renewal(&self) -> Duration {
        self.validity().map_or(Duration::ZERO, |v| {
            v.renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default()
        })
    }
}

/// 5 minutes after the first failure, doubling up to 6 hours.
fn retry_delay(failures: u32) -> Duration {
    let minutes = 5u64 << failures.saturating_sub(1).min(7);
    Duration::from_secs(minutes.min(6 * 60) * 60)
}

/// What a stored certificate must have been ordered for to be served.
fn order_id(config: &AcmeConfig) -> String {
    format!("{}\n{}\n", config.directory, config.names.join("\n"))
}

/// The stored certificate, if it was issued by the configured CA for the
/// configured names and parses.
fn load_stored(config: &AcmeConfig) -> Option<(Identity, Option<Validity>)> {
    let dir = &config.dir;
    let ordered = std::fs::read_to_string(dir.join("order.txt")).ok()?;
    if ordered != order_id(config) {
        return None;
    }
    let identity = Identity::from_files(&dir.join("cert.pem"), &dir.join("key.pem")).ok()?;
    let validity = validity(&identity).ok()?;
    Some((identity, Some(validity)))
}

/// Served until the first order succeeds, so that listeners can start.
fn temporary(names: &[String]) -> Result<Identity, AcmeError> {
    let (cert, key) = crate::generate(names)?;
    parse_issued(&cert, &key)
}

fn parse_issued(chain_pem: &str, key_pem: &str) -> Result<Identity, AcmeError> {
    let bad = |e: rustls_pki_types::pem::Error| AcmeError::BadCertificate(e.to_string());
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    if chain.is_empty() {
        return Err(AcmeError::BadCertificate("empty chain".into()));
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(bad)?;
    Ok(Identity { chain, key })
}

fn validity(identity: &Identity) -> Result<Validity, AcmeError> {
    let leaf = identity
        .chain
        .first()
        .ok_or_else(|| AcmeError::BadCertificate("empty chain".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| AcmeError::BadCertificate(e.to_string()))?;
    let time = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok(Validity {
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}

/// The account's ECDSA P-256 key as PKCS#8 DER, kept in `account.pem`.
fn load_or_create_account_key(dir: &Path) -> Result<Vec<u8>, AcmeError> {
    let path = dir.join("account.pem");
    let pem = match std::fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let pem = key.serialize_pem();
            crate::write_private(dir, &path, pem.as_bytes())?;
            pem
        }
        Err(source) => return Err(TlsError::Read { path, source }.into()),
    };
    Ok(rcgen::KeyPair::from_pem(&pem)?.serialize_der())
}

/// HTTPS client settings for talking to the CA: the web PKI roots, or only
/// the roots in `ca_root`.
fn client_config(ca_root: Option<&Path>) -> Result<Arc<ClientConfig>, AcmeError> {
    let mut roots = RootCertStore::empty();
    match ca_root {
        Some(path) => {
            let pem_error = |e: rustls_pki_types::pem::Error| TlsError::Pem {
                path: path.to_owned(),
                message: e.to_string(),
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(pem_error)? {
                roots
                    .add(cert.map_err(pem_error)?)
                    .map_err(TlsError::from)?;
            }
        }
        None => {
            roots.add_parsable_certificates(
                webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned(),
            );
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
