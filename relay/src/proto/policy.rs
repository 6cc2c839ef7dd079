//! Which peers a client may relay to.
//!
//! The classic TURN abuse is to relay into the relay host's own networks:
//! loopback services, the cloud metadata address, private subnets. So by
//! default every special-purpose range (RFC 6890 and its successors) is
//! denied; the operator's allow list re-opens ranges and the deny list
//! closes more. The node's own relayed addresses are always allowed, so two
//! clients relaying through this node can reach each other.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Special-purpose IPv4 ranges denied by default.
const DENIED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // carrier-grade NAT (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // deprecated 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and broadcast
];

/// Special-purpose IPv6 ranges denied by default. IPv4-mapped, 6to4 and
/// NAT64 addresses are judged by the IPv4 address they carry.
const DENIED_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::UNSPECIFIED, 128),
    (Ipv6Addr::LOCALHOST, 128),
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only
    (Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0), 48),  // benchmarking
    (Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28), // ORCHID
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28), // ORCHIDv2
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),    // documentation
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),    // SRv6 SIDs
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),     // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),    // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),    // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),     // multicast
];

/// The peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Ranges allowed even if special-purpose (e.g. 127.0.0.1/32 in tests).
    pub allow: Vec<IpNet>,
    /// Ranges denied even if public. The deny list wins over the allow list.
    pub deny: Vec<IpNet>,
    /// This node's own relay and external addresses: always allowed.
    pub own: Vec<IpAddr>,
}

impl PeerPolicy {
    /// Whether a client may relay to (and receive from) `ip`.
    #[must_use]
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        if self.own.iter().any(|own| canonical(*own) == ip) {
            return true;
        }
        if self.deny.iter().any(|net| contains(net, ip)) {
            return false;
        }
        self.allow.iter().any(|net| contains(net, ip)) || !is_special(ip)
    }
}

/// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) as the IPv4 address they are.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn contains(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        // A v4 range also covers the IPv4-mapped form, already canonical.
        (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
        (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
        _ => false,
    }
}

/// Whether `ip` (canonical) is in a special-purpose range.
fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => DENIED_V4.iter().any(|&(n, len)| Ipv4Net::new_assert(n, len).contains(&a)),
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_v4(a) {
                return is_special(IpAddr::V4(v4));
            }
            DENIED_V6.iter().any(|&(n, len)| Ipv6Net::new_assert(n, len).contains(&a))
        }
    }
}

/// The IPv4 address inside a 6to4 (2002::/16), NAT64 well-known prefix
/// (64:ff9b::/96) or IPv4-compatible (::/96) address.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = a.octets();
    match a.segments() {
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(Ipv4Addr::new(o[12], o[13], o[14], o[15])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_denied_by_default() {
        let p = PeerPolicy::default();
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.5",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
            "::7f00:1",
            "64:ff9b:1::1",
        ] {
            assert!(!p.allows(ip(s)), "{s} should be denied");
        }
        for s in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::", "64:ff9b::808:808"] {
            assert!(p.allows(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn allow_reopens_deny_closes_own_always_open() {
        let p = PeerPolicy {
            allow: vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            deny: vec!["10.9.0.0/16".parse().unwrap(), "8.8.8.0/24".parse().unwrap()],
            own: vec![ip("192.168.7.7")],
        };
        assert!(p.allows(ip("127.0.0.1")));
        assert!(p.allows(ip("::ffff:127.0.0.1")));
        assert!(!p.allows(ip("127.0.0.2")));
        assert!(p.allows(ip("10.1.1.1")));
        assert!(!p.allows(ip("10.9.1.1")), "deny wins over allow");
        assert!(!p.allows(ip("8.8.8.8")));
        assert!(p.allows(ip("192.168.7.7")), "own relayed address");
        assert!(!p.allows(ip("192.168.7.8")));
    }
}
