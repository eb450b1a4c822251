//! Which peers a TURN allocation may talk to.
//!
//! A TURN server relays to any address a client names, so without a rule
//! it is a door into the operator's network: the relay's own services on
//! loopback, the LAN behind it, cloud metadata endpoints on link-local
//! addresses. By default [`Peers`] refuses loopback, private (RFC 1918,
//! RFC 6598 shared, RFC 4193 unique-local), link-local, unspecified,
//! multicast, broadcast, documentation and reserved ranges, and the
//! relay's own addresses; IPv4-mapped IPv6 addresses are judged as the
//! IPv4 address they carry. Ranges the operator lists in
//! `[turn] allowed_peers` are allowed before any of that is checked (the
//! tests list loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The peer rule of one TURN server.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// Ranges allowed whatever else is true of them.
    allowed: Vec<IpNet>,
    /// The relay's own addresses (listening and relayed).
    own: Vec<IpAddr>,
}

impl Peers {
    /// The rule with `allowed` ranges and the relay's `own` addresses.
    pub fn new(allowed: Vec<IpNet>, own: Vec<IpAddr>) -> Self {
        let own = own.into_iter().map(canonical).collect();
        Self { allowed, own }
    }

    /// Whether data may be relayed to and from `peer`.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        if self.allowed.iter().any(|net| net.contains(&peer)) {
            return true;
        }
        if self.own.contains(&peer) {
            return false;
        }
        match peer {
            IpAddr::V4(ip) => public_v4(ip),
            IpAddr::V6(ip) => public_v6(ip),
        }
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is an ordinary public unicast IPv4 address.
fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b); // RFC 6598
    let reserved = a >= 240 || a == 0; // RFC 1112 §4, RFC 1122 §3.2.1.3
    let benchmarking = a == 198 && (b == 18 || b == 19); // RFC 2544
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || shared
        || reserved
        || benchmarking)
}

/// Whether `ip` is an ordinary global unicast IPv6 address.
fn public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00; // RFC 4193
    let link_local = first & 0xffc0 == 0xfe80; // RFC 4291 §2.5.6
    let documentation = first == 0x2001 && ip.segments()[1] == 0x0db8; // RFC 3849
    let nat64 = ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]; // RFC 6052
    // Only 2000::/3 is global unicast today (RFC 4291 §2.4).
    let global = first & 0xe000 == 0x2000;
    global
        && !(unique_local || link_local || documentation || nat64)
        && !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn refuses_loopback_private_link_local_and_special_ranges() {
        let peers = Peers::default();
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!peers.allows(ip(denied)), "{denied} allowed");
        }
    }

    #[test]
    fn allows_public_addresses_but_not_the_relays_own() {
        let peers = Peers::new(vec![], vec![ip("203.0.114.7"), ip("2a01:4f8::7")]);
        assert!(peers.allows(ip("203.0.114.8")));
        assert!(peers.allows(ip("2a01:4f8::8")));
        assert!(peers.allows(ip("::ffff:203.0.114.8")));
        assert!(!peers.allows(ip("203.0.114.7")));
        assert!(!peers.allows(ip("::ffff:203.0.114.7")));
        assert!(!peers.allows(ip("2a01:4f8::7")));
    }

    #[test]
    fn listed_ranges_are_allowed_before_anything_else() {
        let peers = Peers::new(vec!["127.0.0.0/8".parse().unwrap()], vec![ip("127.0.0.1")]);
        assert!(peers.allows(ip("127.0.0.1")));
        assert!(peers.allows(ip("::ffff:127.0.0.5")));
        assert!(!peers.allows(ip("10.0.0.1")));
    }
}
