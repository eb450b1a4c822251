//! MX resolution against a real DNS server: `dnsmasq` on 127.0.0.1 with a
//! random port, serving an MX zone, a null MX (RFC 7505), a name without
//! MX (implicit MX) and NXDOMAIN for everything else under `.test`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

use super::*;
use crate::route::{self, Hop};

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A dnsmasq process, killed when dropped.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

async fn dnsmasq() -> Dnsmasq {
    assert!(
        Path::new(DNSMASQ).exists(),
        "{DNSMASQ} is missing: install Debian's `dnsmasq-base` to run the MX tests"
    );
    let port = free_udp_port();
    let child = Command::new(DNSMASQ)
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            &format!("--port={port}"),
            "--local=/test/",
            "--mx-host=mx.test,b.mx.test,20",
            "--mx-host=mx.test,a.mx.test,10",
            "--host-record=a.mx.test,127.0.0.1",
            "--host-record=b.mx.test,127.0.0.1",
            // RFC 7505: preference 0, exchange "." (the root label).
            "--dns-rr=nullmx.test,15,000000",
            "--host-record=implicit.test,127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {DNSMASQ}: {e}"));
    let server = Dnsmasq { child, port };
    wait_until_answering(port).await;
    server
}

async fn wait_until_answering(port: u16) {
    let resolver = resolver(port);
    for _ in 0..50 {
        if resolver.lookup_ip("implicit.test.").await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("dnsmasq on port {port} does not answer");
}

/// A resolver that asks only 127.0.0.1:`port`.
fn resolver(port: u16) -> hickory_resolver::TokioResolver {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut udp = ConnectionConfig::udp();
    udp.port = port;
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = port;
    let server = NameServerConfig::new(ip, true, vec![udp, tcp]);
    let config = ResolverConfig::from_parts(None, vec![], vec![server]);
    let mut builder =
        hickory_resolver::Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    builder.options_mut().timeout = Duration::from_secs(2);
    builder.options_mut().attempts = 1;
    builder.build().unwrap()
}

fn no_routes() -> Settings {
    chatmail_config::parse("mail_domain = \"_sender.test\"\n").unwrap()
}

fn dns_hop(host: &str) -> Hop {
    Hop {
        host: host.into(),
        https_port: Some(443),
        smtp_port: 25,
    }
}

#[tokio::test]
async fn mx_hosts_are_tried_by_preference() {
    let dns = dnsmasq().await;
    let hops = route::resolve(&no_routes(), &resolver(dns.port), "mx.test").await;
    assert_eq!(hops, Ok(vec![dns_hop("a.mx.test"), dns_hop("b.mx.test")]));
}

#[tokio::test]
async fn null_mx_fails_permanently_with_556() {
    let dns = dnsmasq().await;
    let hops = route::resolve(&no_routes(), &resolver(dns.port), "nullmx.test").await;
    let expected = Outcome::Permanent("556 5.1.10 Recipient address has null MX".into());
    assert_eq!(hops, Err(expected.clone()));

    let transport = Transport::new(Arc::new(no_routes()), resolver(dns.port)).unwrap();
    let to = vec!["bob@nullmx.test".to_owned()];
    let report = transport.deliver("nullmx.test", None, &to, b"x\r\n").await;
    assert_eq!(
        report,
        Report {
            via: None,
            results: vec![(to[0].clone(), expected)]
        }
    );
}

#[tokio::test]
async fn a_domain_without_mx_is_its_own_implicit_mx() {
    let dns = dnsmasq().await;
    let hops = route::resolve(&no_routes(), &resolver(dns.port), "implicit.test").await;
    assert_eq!(hops, Ok(vec![dns_hop("implicit.test")]));
}

#[tokio::test]
async fn nxdomain_fails_permanently() {
    let dns = dnsmasq().await;
    let hops = route::resolve(&no_routes(), &resolver(dns.port), "missing.test").await;
    assert!(
        matches!(&hops, Err(Outcome::Permanent(t)) if t.contains("does not exist")),
        "{hops:?}"
    );
}

#[tokio::test]
async fn an_unreachable_dns_server_is_a_temporary_failure() {
    let hops = route::resolve(&no_routes(), &resolver(free_udp_port()), "mx.test").await;
    assert!(
        matches!(&hops, Err(Outcome::Temporary(t)) if t.starts_with("451 4.4.3")),
        "{hops:?}"
    );
}

#[tokio::test]
async fn static_routes_and_ip_literals_bypass_dns() {
    let settings = super::settings("routed.test", Some(8443), 2525);
    let unused = resolver(free_udp_port());
    let hops = route::resolve(&settings, &unused, "routed.test").await;
    let routed = Hop {
        host: "127.0.0.1".into(),
        https_port: Some(8443),
        smtp_port: 2525,
    };
    assert_eq!(hops, Ok(vec![routed]));
    let hops = route::resolve(&settings, &unused, "[192.0.2.7]").await;
    assert_eq!(hops, Ok(vec![dns_hop("192.0.2.7")]));
}

#[tokio::test]
async fn static_route_for_an_ip_domain_matches_with_or_without_brackets() {
    let unused = resolver(free_udp_port());
    for key in ["127.0.0.3", "[127.0.0.3]"] {
        let settings = super::settings(key, None, 2525);
        let hops = route::resolve(&settings, &unused, "[127.0.0.3]").await;
        let routed = Hop {
            host: "127.0.0.1".into(),
            https_port: None,
            smtp_port: 2525,
        };
        assert_eq!(hops, Ok(vec![routed]), "route key {key}");
    }
}
