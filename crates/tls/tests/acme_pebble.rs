//! ACME against Debian's `pebble` test CA, started by each test on ports of
//! its own: issuance for three names, the issued chain checked by a TLS
//! client against pebble's root, renewal swapping the certificate of a
//! running listener, and HTTP-01 validated for real through a mock DNS
//! server (`pebble-challtestsrv`) that points the names at 127.0.0.1.
//!
//! Skipped with a note when pebble is not installed, unless `CI` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatmail_tls::acme::{Acme, AcmeConfig, ChallengeStore};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";
const DOMAIN: &str = "acme.test";

fn names() -> Vec<String> {
    vec![
        DOMAIN.to_string(),
        format!("mta-sts.{DOMAIN}"),
        format!("www.{DOMAIN}"),
    ]
}

fn pebble_missing() -> bool {
    if Path::new(PEBBLE).exists() && Path::new(CHALLTESTSRV).exists() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "pebble is required in CI (apt-get install pebble)"
    );
    eprintln!("pebble not installed: skipping");
    true
}

/// Kills the child process when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}");
}

/// A running pebble and what a client needs to use it.
struct Pebble {
    _process: Running,
    _dns: Option<Running>,
    directory: String,
    mgmt_port: u16,
    /// Root of pebble's own HTTPS certificate (not of what it issues).
    https_root: PathBuf,
}

/// Starts pebble; `http_port` is where it validates HTTP-01 challenges,
/// `None` to accept every challenge unvalidated.
async fn pebble(dir: &Path, http_port: Option<u16>) -> Pebble {
    let (cert, key) = chatmail_tls::generate(&["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("pebble-cert.pem"), dir.join("pebble-key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let (port, mgmt_port) = (free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
        "certificate": cert_path,
        "privateKey": key_path,
        "httpPort": http_port.unwrap_or_else(free_port),
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let config_path = dir.join("pebble.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut command = Command::new(PEBBLE);
    command
        .arg("-config")
        .arg(&config_path)
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let dns = match http_port {
        None => {
            command.env("PEBBLE_VA_ALWAYS_VALID", "1");
            None
        }
        Some(_) => {
            let (dns, dns_port) = mock_dns();
            // It serves TCP next to UDP: ready once TCP accepts.
            wait_for_port(dns_port).await;
            command
                .arg("-dnsserver")
                .arg(format!("127.0.0.1:{dns_port}"));
            Some(dns)
        }
    };
    let process = Running(command.spawn().unwrap());
    wait_for_port(port).await;
    wait_for_port(mgmt_port).await;
    Pebble {
        _process: process,
        _dns: dns,
        directory: format!("https://127.0.0.1:{port}/dir"),
        mgmt_port,
        https_root: cert_path,
    }
}

/// A DNS server that answers 127.0.0.1 for every A query and nothing for
/// AAAA, with its other challenge servers off.
fn mock_dns() -> (Running, u16) {
    let port = free_port();
    let child = Command::new(CHALLTESTSRV)
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{port}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Running(child), port)
}

impl Pebble {
    fn acme_config(&self, state: &Path) -> AcmeConfig {
        AcmeConfig {
            directory: self.directory.clone(),
            contact: Some("admin@acme.test".into()),
            ca_root: Some(self.https_root.clone()),
            names: names(),
            dir: state.join("acme"),
        }
    }

    /// The root pebble issues certificates under, from its management API.
    async fn issuing_root(&self) -> CertificateDer<'static> {
        let roots = roots_from(&self.https_root);
        let body = https_get(self.mgmt_port, "/roots/0", roots).await;
        CertificateDer::from_pem_slice(body.as_bytes()).unwrap()
    }
}

fn roots_from(pem: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

fn client(roots: RootCertStore) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn https_get(port: u16, path: &str, roots: RootCertStore) -> String {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = client(roots).connect(name, tcp).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_string()
}

/// Serves TLS with `config` on a fresh port until the test ends.
async fn tls_listener(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hello\r\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// The leaf certificate a client trusting only `root` sees at `addr` for
/// `name`, or the handshake error.
async fn leaf_seen(
    addr: SocketAddr,
    name: &str,
    root: &CertificateDer<'static>,
) -> Result<CertificateDer<'static>, std::io::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let tls = client(roots).connect(name, tcp).await?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().unwrap()[0].clone())
}

fn assert_ecdsa_p256(leaf: &CertificateDer<'_>) {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let spki = &cert.tbs_certificate.subject_pki;
    // id-ecPublicKey with the prime256v1 curve (RFC 5480 §2.1.1).
    assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_issued_served_and_renewed_without_restart() {
    if pebble_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pebble = pebble(dir.path(), None).await;
    let root = pebble.issuing_root().await;
    let acme = Arc::new(Acme::new(pebble.acme_config(dir.path())).unwrap());
    assert!(!acme.issued());
    let addr = tls_listener(acme.certs().relay_config().unwrap()).await;
    // The temporary self-signed certificate does not chain to pebble.
    assert!(leaf_seen(addr, DOMAIN, &root).await.is_err());

    acme.renew().await.unwrap();
    assert!(acme.issued());
    let first = leaf_seen(addr, DOMAIN, &root).await.unwrap();
    for name in names() {
        assert_eq!(
            leaf_seen(addr, &name, &root).await.unwrap(),
            first,
            "{name}"
        );
    }
    assert!(leaf_seen(addr, "other.test", &root).await.is_err());
    assert_ecdsa_p256(&first);

    // Renewal through the running task; the listener is never rebuilt.
    let task = tokio::spawn({
        let acme = acme.clone();
        async move { acme.run().await }
    });
    acme.renew_now();
    let mut second = first.clone();
    for _ in 0..300 {
        second = leaf_seen(addr, DOMAIN, &root).await.unwrap();
        if second != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
    assert_ne!(second, first, "renewal did not reach the listener");

    // A restart serves the stored certificate at once.
    let again = Acme::new(pebble.acme_config(dir.path())).unwrap();
    assert!(again.issued());
    let addr = tls_listener(again.certs().multiplex_config(true).unwrap()).await;
    assert_eq!(leaf_seen(addr, DOMAIN, &root).await.unwrap(), second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_challenges_are_validated_by_the_ca() {
    if pebble_missing() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let pebble = pebble(dir.path(), Some(http_port)).await;
    let acme = Acme::new(pebble.acme_config(dir.path())).unwrap();

    // Nothing answers on the challenge port yet: the CA refuses.
    let err = acme.renew().await.unwrap_err();
    assert!(err.to_string().contains("CA refused"), "{err}");
    assert!(!acme.issued());

    let answered = challenge_server(http_port, acme.challenges()).await;
    acme.renew().await.unwrap();
    assert!(acme.issued());
    // One validation per name.
    assert!(answered.load(Ordering::SeqCst) >= names().len());
    let root = pebble.issuing_root().await;
    let addr = tls_listener(acme.certs().mx_config().unwrap()).await;
    leaf_seen(addr, &format!("mta-sts.{DOMAIN}"), &root)
        .await
        .unwrap();
}

/// A minimal port 80: answers `GET /.well-known/acme-challenge/<token>`
/// from `store`; counts the answers given.
async fn challenge_server(port: u16, store: Arc<ChallengeStore>) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let path = request.split(' ').nth(1).unwrap_or("");
            let token = path.strip_prefix("/.well-known/acme-challenge/");
            let response = match token.and_then(|t| store.get(t)) {
                Some(body) => {
                    count.fetch_add(1, Ordering::SeqCst);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .into(),
            };
            let _ = tcp.write_all(response.as_bytes()).await;
        }
    });
    answered
}
