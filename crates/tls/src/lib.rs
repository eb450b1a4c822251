//! chatmail-tls: the server's rustls configuration.
//!
//! The certificate comes from PEM files, or is a self-signed ECDSA P-256
//! certificate generated on first start and kept in the state directory
//! (`tls/cert.pem`, `tls/key.pem`), so clients that pin it keep working
//! across restarts. Only the ring crypto provider is used.
//!
//! Configurations built from one certificate: the relay's (TLS 1.3 only,
//! docs/specifications.md §3), the MX one (TLS 1.2 and 1.3), the web one
//! (TLS 1.2 and 1.3, ALPN `http/1.1`) and the port 443 one, which also
//! offers ALPN `imap` and `smtp` (docs/specifications.md §7); whoever
//! serves port 443 refuses mail sessions that negotiated less than TLS 1.3.
//!
//! With ACME ([`acme`]) the same configurations are built from [`Certs`]
//! holding a [`CurrentCert`], a resolver whose certificate the renewal task
//! replaces: every listener serves the new certificate from its next
//! handshake on, without a restart. Certificate files that another program
//! renews are watched the same way ([`Certs::watch_files`], module
//! `files`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod acme;
mod current;
mod files;

pub use current::CurrentCert;
pub use files::POLL_INTERVAL;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("watching certificate files needs a Tokio runtime")]
    NoRuntime,
}

/// ALPN protocol id of IMAP over TLS on a shared port.
pub const ALPN_IMAP: &[u8] = b"imap";
/// ALPN protocol id of SMTP submission over TLS on a shared port.
pub const ALPN_SMTP: &[u8] = b"smtp";

/// A certificate chain and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads a PEM certificate chain and private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pem_error = |path: &Path, e: rustls_pki_types::pem::Error| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_error(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, e))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.to_owned(),
                message: "no certificate found".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
        Ok(Self { chain, key })
    }

    /// Loads the self-signed certificate kept in `dir`, generating it for
    /// `names` (DNS names or IP addresses) on first use.
    pub fn self_signed(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        // The names the certificate was made for; a changed domain needs a
        // new certificate, since clients check the name even when they do
        // not check the issuer.
        let names_file = dir.join("names.txt");
        let wanted = names.join("\n") + "\n";
        let current = std::fs::read_to_string(&names_file).ok();
        if !cert.exists() || !key.exists() || current.as_deref() != Some(wanted.as_str()) {
            let (cert_pem, key_pem) = generate(names)?;
            write_private(dir, &key, key_pem.as_bytes())?;
            write_private(dir, &cert, cert_pem.as_bytes())?;
            write_private(dir, &names_file, wanted.as_bytes())?;
        }
        Self::from_files(&cert, &key)
    }

    /// The relay configuration: TLS 1.3 only (docs/specifications.md §3), no ALPN.
    pub fn relay_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Relay)
    }

    /// The MX configuration (port 25): TLS 1.2 and 1.3, since other relays'
    /// MTAs may not speak 1.3 yet; no ALPN.
    pub fn mx_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Mx)
    }

    /// The HTTPS configuration: TLS 1.2 and 1.3, ALPN `http/1.1`.
    pub fn web_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Web)
    }

    /// The port 443 configuration: TLS 1.2 and 1.3, ALPN `imap` and `smtp`
    /// (mail through networks that only pass HTTPS, docs/specifications.md
    /// §7), then `h2` when `http2` is set, then `http/1.1`. rustls picks the
    /// first protocol of this list that the client offers.
    pub fn multiplex_config(&self, http2: bool) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Multiplex { http2 })
    }

    fn config(&self, profile: Profile) -> Result<Arc<ServerConfig>, TlsError> {
        profile.build(|builder| builder.with_single_cert(self.chain.clone(), self.key.clone_key()))
    }

    /// The certificate and signing key as rustls serves them.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let provider = ring::default_provider();
        let signer = provider
            .key_provider
            .load_private_key(self.key.clone_key())?;
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), signer)))
    }
}

/// The certificate source of every listener: one fixed [`Identity`], or a
/// [`CurrentCert`] whose certificate is replaced while the server runs
/// (ACME renewals, watched files); configurations built from it follow
/// each replacement.
#[derive(Clone)]
pub enum Certs {
    Fixed(Arc<Identity>),
    Live(Arc<CurrentCert>),
}

impl From<Identity> for Certs {
    fn from(identity: Identity) -> Self {
        Self::Fixed(Arc::new(identity))
    }
}

impl Certs {
    /// `tls.mode = "files"`: the certificate chain and key in `cert` and
    /// `key` (as [`Identity::from_files`]; the key must belong to the first
    /// certificate), served through a [`CurrentCert`] that a task spawned
    /// on the current Tokio runtime keeps in step with the files: a renewed
    /// pair reaches every listener without a restart, a pair that cannot
    /// be used leaves the current one in service (module `files`). The
    /// task ends once no configuration built from the result is left.
    pub fn watch_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let (current, _task) = files::watch(cert, key, files::POLL_INTERVAL)?;
        Ok(Self::Live(current))
    }

    /// See [`Identity::relay_config`].
    pub fn relay_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Relay)
    }

    /// See [`Identity::mx_config`].
    pub fn mx_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Mx)
    }

    /// See [`Identity::web_config`].
    pub fn web_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Web)
    }

    /// See [`Identity::multiplex_config`].
    pub fn multiplex_config(&self, http2: bool) -> Result<Arc<ServerConfig>, TlsError> {
        self.config(Profile::Multiplex { http2 })
    }

    fn config(&self, profile: Profile) -> Result<Arc<ServerConfig>, TlsError> {
        match self {
            Self::Fixed(identity) => identity.config(profile),
            Self::Live(current) => {
                let resolver: Arc<dyn ResolvesServerCert> = current.clone();
                profile.build(|builder| Ok(builder.with_cert_resolver(resolver)))
            }
        }
    }
}

/// The protocol versions and ALPN ids of each kind of listener.
#[derive(Clone, Copy)]
enum Profile {
    Relay,
    Mx,
    Web,
    Multiplex { http2: bool },
}

impl Profile {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        static TLS12_13: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        match self {
            Self::Relay => TLS13,
            _ => TLS12_13,
        }
    }

    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Self::Relay | Self::Mx => Vec::new(),
            Self::Web => vec![b"http/1.1".to_vec()],
            Self::Multiplex { http2 } => {
                let mut alpn = vec![ALPN_IMAP.to_vec(), ALPN_SMTP.to_vec()];
                if http2 {
                    alpn.push(b"h2".to_vec());
                }
                alpn.push(b"http/1.1".to_vec());
                alpn
            }
        }
    }

    fn build(
        self,
        with_cert: impl FnOnce(
            rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>,
        ) -> Result<ServerConfig, rustls::Error>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(self.versions())?
            .with_no_client_auth();
        let mut config = with_cert(builder)?;
        config.alpn_protocols = self.alpn();
        Ok(Arc::new(config))
    }
}

/// Generates a self-signed ECDSA P-256 certificate; returns PEM (cert, key).
pub fn generate(names: &[String]) -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.clone());
    }
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub(crate) fn write_private(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_error)?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    std::fs::rename(&tmp, path).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["127.0.0.1".to_string(), "_chat.test".to_string()];
        let first = Identity::self_signed(dir.path(), &names).unwrap();
        let second = Identity::self_signed(dir.path(), &names).unwrap();
        assert_eq!(first.chain, second.chain);
        assert!(first.relay_config().is_ok());
        let mode = std::fs::metadata(dir.path().join("key.pem")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn self_signed_certificate_is_renewed_when_the_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::self_signed(dir.path(), &["_a.test".into()]).unwrap();
        let second = Identity::self_signed(dir.path(), &["_b.test".into()]).unwrap();
        assert_ne!(first.chain, second.chain);
    }

    #[test]
    fn missing_files_are_reported_with_their_path() {
        let err = Identity::from_files(
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn relay_and_web_configs_differ_in_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::self_signed(dir.path(), &["localhost".into()]).unwrap();
        let config = id.relay_config().unwrap();
        assert!(config.alpn_protocols.is_empty());
        let web = id.web_config().unwrap();
        assert_eq!(web.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn multiplex_config_offers_mail_before_http() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::self_signed(dir.path(), &["localhost".into()]).unwrap();
        let names = |c: Arc<ServerConfig>| {
            c.alpn_protocols
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
        };
        let plain = names(id.multiplex_config(false).unwrap());
        assert_eq!(plain, ["imap", "smtp", "http/1.1"]);
        let h2 = names(id.multiplex_config(true).unwrap());
        assert_eq!(h2, ["imap", "smtp", "h2", "http/1.1"]);
    }
}
