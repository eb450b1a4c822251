//! Which destinations the proxy forwards, and where to.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use shadowsocks::relay::socks5::Address;

/// The relay's own client ports, under the names and addresses that mean
/// this relay.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Lowercase host names of the relay (the mail domain and its
    /// `mta-sts.`/`www.` names).
    names: Vec<String>,
    /// Destination port to the listener that serves it.
    ports: HashMap<u16, SocketAddr>,
}

impl Targets {
    /// Targets for the host `names` and the relay's client `listeners`
    /// (the first listener on a port wins; an unspecified listen address
    /// is reached on loopback).
    pub fn new(
        names: impl IntoIterator<Item = String>,
        listeners: impl IntoIterator<Item = SocketAddr>,
    ) -> Self {
        let names = names
            .into_iter()
            .map(|name| normalise(&name).to_owned())
            .collect();
        let mut ports = HashMap::new();
        for mut listener in listeners {
            match listener.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => {
                    listener.set_ip(Ipv4Addr::LOCALHOST.into())
                }
                IpAddr::V6(ip) if ip.is_unspecified() => {
                    listener.set_ip(Ipv6Addr::LOCALHOST.into())
                }
                _ => {}
            }
            ports.entry(listener.port()).or_insert(listener);
        }
        Self { names, ports }
    }

    /// The listener to connect to for `destination`, or `None` when it
    /// names another host or a port the relay serves no client on.
    pub fn resolve(&self, destination: &Address) -> Option<SocketAddr> {
        let (ours, port) = match destination {
            Address::SocketAddress(addr) => (is_local(addr.ip()), addr.port()),
            Address::DomainNameAddress(name, port) => {
                let name = normalise(name);
                let ours = match name.parse::<IpAddr>() {
                    Ok(ip) => is_local(ip),
                    Err(_) => self.names.iter().any(|own| own.eq_ignore_ascii_case(name)),
                };
                (ours, *port)
            }
        };
        if !ours {
            return None;
        }
        self.ports.get(&port).copied()
    }
}

/// `name` without a trailing dot or IPv6 brackets.
fn normalise(name: &str) -> &str {
    let name = name.strip_suffix('.').unwrap_or(name);
    name.strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name)
}

/// Whether `ip` is an address of this host: only those can be bound.
fn is_local(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    !ip.is_unspecified() && !ip.is_multicast() && std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets::new(
            ["Relay.Example".to_owned(), "www.relay.example".to_owned()],
            [
                "0.0.0.0:993".parse().unwrap(),
                "127.0.0.1:465".parse().unwrap(),
                "[::]:443".parse().unwrap(),
                "127.0.0.2:993".parse().unwrap(),
            ],
        )
    }

    fn name(host: &str, port: u16) -> Address {
        Address::DomainNameAddress(host.to_owned(), port)
    }

    fn ip(addr: &str) -> Address {
        Address::SocketAddress(addr.parse().unwrap())
    }

    #[test]
    fn the_relays_names_and_ports_reach_its_listeners() {
        let t = targets();
        let imap = Some("127.0.0.1:993".parse().unwrap());
        assert_eq!(t.resolve(&name("relay.example", 993)), imap);
        assert_eq!(t.resolve(&name("RELAY.example.", 993)), imap);
        assert_eq!(t.resolve(&ip("127.0.0.1:993")), imap);
        assert_eq!(t.resolve(&name("127.0.0.1", 993)), imap);
        assert_eq!(
            t.resolve(&name("www.relay.example", 443)),
            Some("[::1]:443".parse().unwrap())
        );
        assert_eq!(
            t.resolve(&name("relay.example", 465)),
            Some("127.0.0.1:465".parse().unwrap())
        );
    }

    #[test]
    fn other_hosts_and_ports_are_refused() {
        let t = targets();
        assert_eq!(t.resolve(&name("relay.example", 22)), None);
        assert_eq!(t.resolve(&name("relay.example", 25)), None);
        assert_eq!(t.resolve(&name("other.example", 993)), None);
        assert_eq!(t.resolve(&name("relay.example.evil", 993)), None);
        assert_eq!(t.resolve(&ip("192.0.2.1:993")), None);
        assert_eq!(t.resolve(&ip("0.0.0.0:993")), None);
        assert_eq!(t.resolve(&ip("224.0.0.1:993")), None);
        assert_eq!(t.resolve(&name("192.0.2.1", 993)), None);
    }
}
