//! Who counts as one client.
//!
//! An IPv4 address is one client. An IPv6 client is its /64: providers
//! hand a whole /64 (or more) to one customer, so counting full IPv6
//! addresses would give one host 2^64 shares. An IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`, what a dual-stack socket reports) is the IPv4 client.

use std::net::{IpAddr, Ipv4Addr};

/// The key every per-client bound is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// Clients whose address is unknown (in-memory sessions) share one key.
    Unknown,
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl ClientKey {
    /// The key of a client connecting from `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }

    /// The key of `ip`, or [`ClientKey::Unknown`].
    pub fn of_opt(ip: Option<IpAddr>) -> Self {
        ip.map_or(Self::Unknown, Self::of)
    }
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        Self::of(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ClientKey {
        ClientKey::of(text.parse().unwrap())
    }

    #[test]
    fn groups_ipv6_by_its_64_prefix() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[test]
    fn treats_ipv4_mapped_ipv6_as_ipv4_and_keeps_ipv4_whole() {
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_ne!(key("::1"), key("127.0.0.1"));
        assert_ne!(key("::1"), ClientKey::of_opt(None));
    }
}
