//! TLS client configurations for both transports.
//!
//! Invariants:
//! - only the ring crypto provider is used;
//! - certificates are checked against the web PKI roots, except for
//!   `_`-prefixed test domains and IP-literal domains (docs/specifications.md §6),
//!   whose relays use self-signed certificates; there any certificate is
//!   accepted, but the handshake signature is still verified, so the peer
//!   must hold the key of the certificate it presents.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

use crate::TransportError;

/// Whether deliveries to `domain` accept any certificate: `_`-prefixed
/// test domains and IP literals (docs/specifications.md §6).
pub(crate) fn accepts_any_certificate(domain: &str) -> bool {
    domain.starts_with('_') || domain.starts_with('[')
}

/// A peer host that is neither an IP address nor a valid DNS name, so it
/// cannot be named in the TLS handshake.
#[derive(Debug, thiserror::Error)]
#[error("`{host}` is not a valid TLS name")]
pub(crate) struct NameError {
    host: String,
}

/// The TLS name to present and check for `host` (a DNS name or an IP).
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, NameError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| NameError {
        host: host.to_owned(),
    })
}

/// The four client configurations: strict or lenient, HTTPS or SMTP.
pub(crate) struct Connectors {
    strict_https: TlsConnector,
    lenient_https: TlsConnector,
    strict_smtp: TlsConnector,
    lenient_smtp: TlsConnector,
}

impl Connectors {
    pub(crate) fn new() -> Result<Self, TransportError> {
        let provider = Arc::new(ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        let roots = Arc::new(roots);
        let strict = || -> Result<ClientConfig, TransportError> {
            Ok(ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(TransportError::Tls)?
                .with_root_certificates(roots.clone())
                .with_no_client_auth())
        };
        let lenient = || -> Result<ClientConfig, TransportError> {
            Ok(ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(TransportError::Tls)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(provider.clone())))
                .with_no_client_auth())
        };
        Ok(Self {
            strict_https: connector(strict()?, true),
            lenient_https: connector(lenient()?, true),
            strict_smtp: connector(strict()?, false),
            lenient_smtp: connector(lenient()?, false),
        })
    }

    /// The connector for `/mxdeliv` (ALPN `http/1.1`).
    pub(crate) fn https(&self, any_certificate: bool) -> &TlsConnector {
        if any_certificate {
            &self.lenient_https
        } else {
            &self.strict_https
        }
    }

    /// The connector for SMTP STARTTLS.
    pub(crate) fn smtp(&self, any_certificate: bool) -> &TlsConnector {
        if any_certificate {
            &self.lenient_smtp
        } else {
            &self.strict_smtp
        }
    }
}

fn connector(mut config: ClientConfig, http: bool) -> TlsConnector {
    if http {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    TlsConnector::from(Arc::new(config))
}

/// Accepts any certificate but checks that the peer signed the handshake
/// with the certificate's key (for peers whose certificate is judged
/// elsewhere, or not at all: test domains and IP literals).
#[derive(Debug)]
pub struct AnyCertificate(Arc<CryptoProvider>);

impl AnyCertificate {
    /// A verifier that checks handshake signatures with `provider`'s
    /// algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self(provider)
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_domains_and_ip_literals_accept_any_certificate() {
        assert!(accepts_any_certificate("_relay1.test"));
        assert!(accepts_any_certificate("[127.0.0.1]"));
        assert!(!accepts_any_certificate("chat.example.org"));
    }

    #[test]
    fn ip_hosts_become_ip_server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("mx.example.org"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn connectors_build_with_web_pki_roots() {
        assert!(Connectors::new().is_ok());
    }
}
