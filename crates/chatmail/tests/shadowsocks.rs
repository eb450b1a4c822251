//! The Shadowsocks proxy of a real relay process: the link `madmail
//! proxy-link` prints works with Debian's `ss-local`, which then reaches
//! the relay's IMAP and HTTPS (whose index page shows the same link) and
//! nothing else; the metrics count both. The relay runs on its own
//! loopback address (`127.0.101.2`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use chatmail_testkit::client::tls_config;
use chatmail_testkit::relay::{RelayOptions, RelayProcess, closed_port, metric};
use chatmail_testkit::socks::{Link, SsLocal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// ed25519 keys: generating RSA keys in a debug build is slow.
const DKIM: &str = "[dkim]\nalgorithm = \"ed25519\"\n";

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_madmail").as_ref()
}

/// The first line the server at `host:port` sends through the proxy.
async fn greeting(client: &SsLocal, host: &str, port: u16) -> String {
    let mut stream = client.connect(host, port).await.unwrap();
    let mut line = Vec::new();
    let read = async {
        while !line.ends_with(b"\n") {
            if stream.read_u8().await.map(|b| line.push(b)).is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no greeting within 10 s");
    String::from_utf8_lossy(&line).into_owned()
}

#[tokio::test]
async fn ss_local_with_the_printed_link_reaches_imap_and_https_only() {
    if !SsLocal::installed() {
        eprintln!("skipped: ss-local not installed (Debian package shadowsocks-libev)");
        return;
    }
    let ip = Ipv4Addr::new(127, 0, 101, 2);
    let proxy = SocketAddr::new(ip.into(), closed_port(ip).unwrap());
    let metrics = SocketAddr::new(ip.into(), closed_port(ip).unwrap());
    let extra = format!(
        "{DKIM}[shadowsocks]\nenabled = true\nlisten = [\"{proxy}\"]\n\
         [metrics]\nenabled = true\nlisten = \"{metrics}\"\n"
    );
    let relay = RelayProcess::start_with(binary(), &RelayOptions::on(ip, &extra))
        .await
        .unwrap();
    let link = relay.cli(&["proxy-link"]).unwrap().trim().to_owned();
    let fields = Link::parse(&link).unwrap();
    assert_eq!(fields.method, "chacha20-ietf-poly1305");
    assert_eq!(
        (fields.host.as_str(), fields.port),
        (relay.domain.as_str(), proxy.port())
    );
    let client = SsLocal::start(&link).await.unwrap();

    // IMAP by the relay's address.
    let imap = greeting(&client, &relay.domain, relay.ports.imap).await;
    assert!(imap.starts_with("* OK"), "{imap}");

    // HTTPS, TLS end to end through the proxy: the index page shows the
    // same link as the command.
    let stream = client
        .connect(&relay.domain, relay.ports.https)
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(tls_config(&relay.cert_path()).unwrap());
    let name = rustls_pki_types::ServerName::IpAddress(IpAddr::V4(ip).into());
    let mut https = tls.connect(name, stream).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        relay.domain
    );
    https.write_all(request.as_bytes()).await.unwrap();
    let mut page = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), https.read_to_end(&mut page)).await;
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(&format!("<code>{link}</code>")), "{page}");
    assert!(page.contains("aria-label=\"Proxy QR code\""));

    // The MX port, the metrics port and other hosts stay out of reach.
    for (host, port) in [
        (relay.domain.as_str(), relay.ports.smtp),
        (relay.domain.as_str(), metrics.port()),
        ("example.org", relay.ports.imap),
    ] {
        let mut refused = client.connect(host, port).await.unwrap();
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut all));
        assert!(read.await.is_ok(), "{host}:{port} kept open");
        assert!(all.is_empty(), "{host}:{port} answered");
    }
    let tunnels = metric(metrics, "madmail_shadowsocks_tunnels_total")
        .await
        .unwrap();
    assert_eq!(tunnels, 2.0);
    let refused = "madmail_shadowsocks_refused_total{reason=\"destination\"}";
    assert_eq!(metric(metrics, refused).await.unwrap(), 3.0);
    assert!(
        metric(metrics, "madmail_shadowsocks_relayed_bytes_total")
            .await
            .unwrap()
            > 0.0
    );
}

#[test]
fn proxy_link_says_when_the_proxy_is_off() {
    let options = RelayOptions::on(Ipv4Addr::new(127, 0, 101, 3), DKIM);
    let relay = RelayProcess::configure(binary(), &options).unwrap();
    let err = relay.cli(&["proxy-link"]).unwrap_err().to_string();
    assert!(err.contains("[shadowsocks] enabled = true"), "{err}");
}
