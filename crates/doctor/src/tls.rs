//! The TLS client of the checks. It completes a handshake with whatever
//! certificate the relay presents (the handshake signature is still
//! verified, so the server proves it holds the key) and hands the chain
//! to module `cert`, which judges it: a check must be able to say *why* a
//! certificate is bad, which a verifying client would only refuse.

use std::sync::Arc;

use chatmail_config::{MailDomain, Settings};
use chatmail_transport::AnyCertificate;
use rustls::ClientConfig;
use rustls::crypto::{CryptoProvider, ring};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::probe::{ProbeError, REPLY_TIMEOUT};

/// A finished handshake.
pub(crate) struct Handshake<S> {
    pub stream: TlsStream<S>,
    /// The certificate chain the server presented, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// `TLS 1.3`, `TLS 1.2`.
    pub version: String,
}

/// TLS client settings for one relay.
pub(crate) struct Client {
    /// The name sent as SNI: the mail domain (no SNI for an IP address).
    name: ServerName<'static>,
    /// Without ALPN (mail ports).
    mail: TlsConnector,
    /// ALPN `http/1.1` (port 443, which also offers `imap` and `smtp`).
    web: TlsConnector,
}

impl Client {
    pub(crate) fn new(settings: &Settings) -> Result<Self, ProbeError> {
        let name = server_name(settings)?;
        let config = |alpn: &[&[u8]]| -> Result<TlsConnector, ProbeError> {
            let mut config = config()?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(Self {
            name,
            mail: config(&[])?,
            web: config(&[b"http/1.1"])?,
        })
    }

    /// A handshake over `stream` for a mail port.
    pub(crate) async fn mail<S>(&self, stream: S) -> Result<Handshake<S>, ProbeError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        handshake(&self.mail, self.name.clone(), stream).await
    }

    /// A handshake for HTTPS.
    pub(crate) async fn web(&self, stream: TcpStream) -> Result<Handshake<TcpStream>, ProbeError> {
        handshake(&self.web, self.name.clone(), stream).await
    }
}

async fn handshake<S>(
    connector: &TlsConnector,
    name: ServerName<'static>,
    stream: S,
) -> Result<Handshake<S>, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let stream = tokio::time::timeout(REPLY_TIMEOUT, connector.connect(name, stream))
        .await
        .map_err(|_| ProbeError::Timeout(REPLY_TIMEOUT))?
        .map_err(ProbeError::Tls)?;
    let (_, connection) = stream.get_ref();
    let chain = connection
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let version = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        other => format!("{other:?}"),
    };
    Ok(Handshake {
        stream,
        chain,
        version,
    })
}

/// The name a client of this relay asks for.
fn server_name(settings: &Settings) -> Result<ServerName<'static>, ProbeError> {
    match &settings.domain {
        MailDomain::Ip(ip) => Ok(ServerName::IpAddress(std::net::IpAddr::V4(*ip).into())),
        MailDomain::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| ProbeError::Unexpected(format!("mail domain {name:?}: {e}"))),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn config() -> Result<ClientConfig, ProbeError> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        // Any certificate is accepted for the handshake; module `cert`
        // judges it afterwards.
        .with_custom_certificate_verifier(Arc::new(AnyCertificate::new(provider)))
        .with_no_client_auth();
    Ok(config)
}
