//! Where mail for a domain goes, and how to open a TCP connection there.
//!
//! Order of precedence: a static route from the configuration (no DNS at
//! all), then an IP-literal domain (`[1.2.3.4]`, straight to that address),
//! then the domain's MX records. The result is a list of [`Hop`]s in the
//! order they must be tried, or the [`Outcome`] for every recipient when
//! the domain cannot receive mail.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chatmail_config::Settings;
use hickory_resolver::TokioResolver;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, Record};
use tokio::net::{TcpSocket, TcpStream};

use crate::Outcome;

/// Port of `/mxdeliv` on MX hosts found in DNS.
const HTTPS_PORT: u16 = 443;
/// Port of the SMTP MX on MX hosts found in DNS (RFC 5321 §4.5.4.2 does
/// not name it; it is the well-known `smtp` port).
const SMTP_PORT: u16 = 25;
/// MX hosts tried per delivery at most; more are ignored.
const MAX_HOPS: usize = 10;
/// Addresses tried per host at most.
const MAX_ADDRESSES: usize = 4;
/// Time allowed for one TCP connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One host to try, with its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hop {
    /// Host name (no trailing dot) or IP address.
    pub host: String,
    /// Port of `/mxdeliv`; `None`: SMTP only.
    pub https_port: Option<u16>,
    /// Port of the SMTP MX.
    pub smtp_port: u16,
}

impl Hop {
    fn dns(host: String) -> Self {
        Self {
            host,
            https_port: Some(HTTPS_PORT),
            smtp_port: SMTP_PORT,
        }
    }
}

/// The hosts mail for `domain` goes to, best first.
pub(crate) async fn resolve(
    settings: &Settings,
    resolver: &TokioResolver,
    domain: &str,
) -> Result<Vec<Hop>, Outcome> {
    let routes = &settings.config.federation.static_routes;
    // Keys are written like `mail_domain`: `relay.test`, `1.2.3.4` or
    // `[1.2.3.4]` all name their domain.
    let route = routes
        .iter()
        .find(|(key, _)| chatmail_config::MailDomain::parse(key).is_ok_and(|d| d.matches(domain)))
        .map(|(_, route)| route);
    if let Some(route) = route {
        return Ok(vec![Hop {
            host: route.host.clone(),
            https_port: route.https_port,
            smtp_port: route.smtp_port,
        }]);
    }
    if let Some(ip) = chatmail_config::domain::ip_literal(domain) {
        return Ok(vec![Hop::dns(ip.to_string())]);
    }
    let hosts = mx_hosts(resolver, domain).await?;
    Ok(hosts.into_iter().map(Hop::dns).collect())
}

/// The MX hosts of `domain` by preference.
async fn mx_hosts(resolver: &TokioResolver, domain: &str) -> Result<Vec<String>, Outcome> {
    let bare = domain.trim_end_matches('.');
    let fqdn = format!("{bare}.");
    match resolver.mx_lookup(fqdn.as_str()).await {
        Ok(lookup) => hosts_from(lookup.answers(), bare),
        Err(e) if e.is_nx_domain() => Err(Outcome::Permanent(format!(
            "550 5.1.2 Domain {bare} does not exist (NXDOMAIN)"
        ))),
        // RFC 5321 §5.1: no MX records, the domain itself is the implicit MX.
        Err(e) if e.is_no_records_found() => Ok(vec![bare.to_owned()]),
        Err(e) => Err(Outcome::Temporary(format!(
            "451 4.4.3 MX lookup for {bare} failed: {e}"
        ))),
    }
}

/// Orders the MX records of an answer; detects a null MX.
fn hosts_from(answers: &[Record], domain: &str) -> Result<Vec<String>, Outcome> {
    let mut records: Vec<(u16, &hickory_resolver::proto::rr::Name)> = answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(mx) => Some((mx.preference, &mx.exchange)),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        // RFC 5321 §5.1: only aliases answered; the domain is its own MX.
        return Ok(vec![domain.to_owned()]);
    }
    // RFC 7505 §3: a single MX record whose exchange is "." means "no mail".
    if records.len() == 1 && records[0].1.is_root() {
        return Err(Outcome::Permanent(
            "556 5.1.10 Recipient address has null MX".into(),
        ));
    }
    // RFC 5321 §5.1: lower preference values first.
    records.sort_by_key(|(preference, _)| *preference);
    let mut hosts: Vec<String> = Vec::new();
    for (_, exchange) in records {
        let host = exchange
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !exchange.is_root() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts.truncate(MAX_HOPS);
    if hosts.is_empty() {
        return Err(Outcome::Permanent(
            "556 5.1.10 Recipient address has null MX".into(),
        ));
    }
    Ok(hosts)
}

/// Why no TCP connection to a peer host could be opened; the text names
/// the host, the port and the step that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: NetError,
    },
    #[error("{host} has no address")]
    NoAddress { host: String },
    /// The last address tried refused or failed.
    #[error("cannot connect to {host} port {port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    /// The last address tried did not answer within [`CONNECT_TIMEOUT`].
    #[error("connecting to {host} port {port} timed out")]
    Timeout { host: String, port: u16 },
}

/// Opens TCP connections to peer hosts: resolves names, tries the
/// addresses in turn, and sends from the relay's own address when its mail
/// domain is an IP literal, since a peer accepts an IP-literal From only
/// from that address (docs/specifications.md §2).
#[derive(Clone)]
pub(crate) struct Dialer {
    resolver: TokioResolver,
    /// Local address to send from; `None`: the system's choice.
    source: Option<IpAddr>,
}

impl Dialer {
    pub(crate) fn new(resolver: TokioResolver, settings: &Settings) -> Self {
        let source = match settings.domain {
            chatmail_config::MailDomain::Ip(ip) => Some(IpAddr::V4(ip)),
            chatmail_config::MailDomain::Name(_) => None,
        };
        Self { resolver, source }
    }

    /// Opens a TCP connection to `host:port` (`TCP_NODELAY` set: requests
    /// and replies are small and must not wait for delayed ACKs).
    pub(crate) async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .resolver
                .lookup_ip(format!("{host}."))
                .await
                .map_err(|source| ConnectError::Resolve {
                    host: host.to_owned(),
                    source,
                })?
                .iter()
                .take(MAX_ADDRESSES)
                .collect(),
        };
        let host = || host.to_owned();
        let mut last = ConnectError::NoAddress { host: host() };
        for ip in addresses {
            let address = SocketAddr::new(ip, port);
            last = match tokio::time::timeout(CONNECT_TIMEOUT, self.dial(address)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(source)) => ConnectError::Connect {
                    host: host(),
                    port,
                    source,
                },
                Err(_) => ConnectError::Timeout { host: host(), port },
            };
        }
        Err(last)
    }

    async fn dial(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source.filter(|s| s.is_ipv4() == address.is_ipv4()) {
            match socket.bind(SocketAddr::new(source, 0)) {
                Ok(()) => {}
                // Not an address of this host (behind NAT, say): the
                // system's choice is then the only one.
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
                Err(e) => return Err(e),
            }
        }
        let stream = socket.connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}
