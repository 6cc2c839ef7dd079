//! Which peers a client may relay to.
//!
//! The classic TURN abuse is to relay into the relay host's own networks:
//! loopback services, the cloud metadata address, private subnets, the
//! host's own listeners (coturn's CVE-2020-26262, and its bypass through
//! `::ffff:127.0.0.1`). So:
//!
//! - every range of the IANA special-purpose registries (IPv4 and IPv6)
//!   that is not globally reachable is denied by default; the operator's
//!   allow list re-opens ranges and the deny list closes more (the deny list
//!   wins);
//! - every rule is checked against the address and against each IPv4
//!   address embedded in it (IPv4-mapped, IPv4-compatible, NAT64 well-known
//!   and local-use prefixes, 6to4, Teredo's server and client), so no
//!   spelling of an address escapes the rule for it;
//! - IPv4-mapped addresses are always denied: a relay socket of either
//!   family cannot send to one;
//! - the host's own addresses are [`Judgement::Host`]: the node's listen,
//!   relay, external and admin addresses, 0.0.0.0 and ::, every address
//!   the kernel delivers locally ([`LocalRanges`], kept current by the
//!   node), and all of loopback (127.0.0.0/8 and ::1: any of them reaches
//!   every service bound to 0.0.0.0). Whatever the lists say, the server
//!   allows one only at the relayed address of a live allocation of this
//!   node (the short-circuit between two of its clients), never at a
//!   listener, the admin port or any other local service. One exception:
//!   a loopback address the operator named on its own
//!   ([`PeerPolicy::loopback_peers`], tests' and `--dev`'s echo peer).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::local::LocalRanges;

/// Special-purpose IPv4 ranges that are not globally reachable (IANA's
/// IPv4 Special-Purpose Address Registry), and multicast: denied by default.
const DENIED_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private (RFC 1918)
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // carrier-grade NAT (RFC 6598)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments, DS-Lite, NAT64 discovery
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // deprecated 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and broadcast
];

/// Special-purpose IPv6 ranges that are not globally reachable (IANA's
/// IPv6 Special-Purpose Address Registry), and multicast: denied by
/// default. Addresses that embed an IPv4 address are also judged by it.
const DENIED_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::UNSPECIFIED, 96),                      // ::, ::1 and IPv4-compatible (deprecated)
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 63),  // discard-only and dummy prefixes
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF protocol assignments (Teredo among them)
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // SRv6 SIDs
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),  // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),  // multicast
];

/// The globally reachable assignments inside 2001::/23 (the registry lists
/// them apart): not denied by default.
const GLOBAL_V6: &[(Ipv6Addr, u8)] = &[
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128),    // PCP anycast
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128),    // TURN anycast
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 3), 128),    // DNS-SD SRP anycast
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32),     // AMT
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48), // AS112-v6
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28),  // ORCHIDv2
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28),  // Drone Remote ID
];

/// How the policy sees a peer's IP address (ports aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// A peer anywhere else: allowed.
    Allowed,
    /// Denied: by the deny list, by default, or a form no socket sends to.
    Denied,
    /// One of the host's own addresses: allowed only at the relayed address
    /// of a live allocation of this node (the server decides with the port).
    Host,
}

/// The peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Ranges allowed even if special-purpose (e.g. 127.0.0.0/8 in tests).
    pub allow: Vec<IpNet>,
    /// Ranges denied even if public. The deny list wins over the allow list.
    pub deny: Vec<IpNet>,
    /// The node's own addresses: listen, relay, external and admin. 0.0.0.0
    /// and :: count as the host's without being listed, and so does every
    /// address the kernel delivers locally (given to [`Self::judge`]).
    pub host: Vec<IpAddr>,
    /// Loopback addresses that are peers nonetheless: each named on its
    /// own in the allow list, none of them in `host`.
    pub loopback_peers: Vec<IpAddr>,
}

impl PeerPolicy {
    /// How a peer at `ip` is judged on a host whose kernel delivers `local`
    /// locally (the port matters only for [`Judgement::Host`], which the
    /// server settles).
    #[must_use]
    pub fn judge(&self, ip: IpAddr, local: &LocalRanges) -> Judgement {
        if let IpAddr::V6(v6) = ip
            && v6.to_ipv4_mapped().is_some()
        {
            // RFC 4291 §2.5.5.2: only a dual-stack socket sends to these,
            // and relay sockets are IPv6-only or IPv4.
            return Judgement::Denied;
        }
        let embedded = embedded_v4(ip);
        let forms = || std::iter::once(ip).chain(embedded.iter().flatten().map(|v4| IpAddr::V4(*v4)));
        if forms().any(|f| self.deny.iter().any(|net| net.contains(&f))) {
            return Judgement::Denied;
        }
        if ip.is_unspecified() || self.host.contains(&ip) {
            return Judgement::Host;
        }
        if self.loopback_peers.contains(&ip) {
            return Judgement::Allowed;
        }
        let host = |ip: IpAddr| ip.is_loopback() || local.contains(ip) || self.host.contains(&ip);
        if host(ip) {
            return Judgement::Host;
        }
        // An address that embeds one of the host's: whatever reaches it, it
        // is not a relayed address of ours.
        if embedded.iter().flatten().any(|v4| host(IpAddr::V4(*v4))) {
            return Judgement::Denied;
        }
        if forms().any(|f| is_special(f) && !self.allow.iter().any(|net| net.contains(&f))) {
            return Judgement::Denied;
        }
        Judgement::Allowed
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

/// Whether `ip` (that form alone) is in a range denied by default.
fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => DENIED_V4.iter().any(|&(n, len)| Ipv4Net::new_assert(n, len).contains(&a)),
        IpAddr::V6(a) => {
            let within =
                |list: &[(Ipv6Addr, u8)]| list.iter().any(|&(n, len)| Ipv6Net::new_assert(n, len).contains(&a));
            within(DENIED_V6) && !within(GLOBAL_V6)
        }
    }
}

/// The IPv4 addresses an IPv6 address carries, in the forms that reach an
/// IPv4 host: IPv4-compatible (::/96), NAT64 (RFC 6052: 64:ff9b::/96, and
/// the local-use 64:ff9b:1::/48 at both its /96 and /48 positions), 6to4
/// (2002::/16) and Teredo (2001::/32: the server, and the client's
/// obfuscated address). IPv4-mapped addresses are refused before this.
fn embedded_v4(ip: IpAddr) -> [Option<Ipv4Addr>; 2] {
    let IpAddr::V6(a) = ip else { return [None, None] };
    let o = a.octets();
    let v4 = |b: [u8; 4]| Some(Ipv4Addr::from(b));
    let last = [o[12], o[13], o[14], o[15]];
    match a.segments() {
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => [v4(last), None],
        [0x64, 0xff9b, 1, ..] => [v4(last), v4([o[6], o[7], o[9], o[10]])],
        [0x2002, ..] => [v4([o[2], o[3], o[4], o[5]]), None],
        [0x2001, 0, ..] => [v4([o[4], o[5], o[6], o[7]]), v4(last.map(|b| !b))],
        _ => [None, None],
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
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.5",
            "198.18.0.1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "2002:7f00:1::",
            "64:ff9b::a00:1",
            "::7f00:1",
            "::8.8.8.8",
            "64:ff9b:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001:2::1",
            "100::1",
        ] {
            assert_eq!(p.judge(ip(s), &LocalRanges::default()), Judgement::Denied, "{s} should be denied");
        }
        for s in
            ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "2002:808:808::", "64:ff9b::808:808", "2001:1::2", "2001:20::1"]
        {
            assert_eq!(p.judge(ip(s), &LocalRanges::default()), Judgement::Allowed, "{s} should be allowed");
        }
        for s in ["0.0.0.0", "::", "127.0.0.1", "127.1.2.3", "::1"] {
            assert_eq!(p.judge(ip(s), &LocalRanges::default()), Judgement::Host, "{s} reaches this host");
        }
    }

    #[test]
    fn every_rule_applies_to_every_embedded_form() {
        let deny = PeerPolicy { deny: vec!["8.8.8.0/24".parse().unwrap()], ..PeerPolicy::default() };
        for s in ["8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::", "::8.8.8.8"] {
            assert_eq!(deny.judge(ip(s), &LocalRanges::default()), Judgement::Denied, "{s} embeds 8.8.8.8");
        }
        // Teredo: the server is in bits 32-63, the client inverted in the last 32.
        let mut teredo = PeerPolicy { allow: vec!["2001::/32".parse().unwrap()], ..deny.clone() };
        assert_eq!(
            teredo.judge(ip("2001:0:808:808::fefe:fefe"), &LocalRanges::default()),
            Judgement::Denied,
            "Teredo server 8.8.8.8"
        );
        assert_eq!(
            teredo.judge(ip("2001:0:101:101::f7f7:f7f7"), &LocalRanges::default()),
            Judgement::Denied,
            "Teredo client 8.8.8.8"
        );
        assert_eq!(
            teredo.judge(ip("2001:0:101:101::fefe:fefe"), &LocalRanges::default()),
            Judgement::Allowed,
            "server and client 1.1.1.1"
        );
        assert_eq!(
            teredo.judge(ip("2001:0:101:101::80ff:fffe"), &LocalRanges::default()),
            Judgement::Denied,
            "client 127.0.0.1"
        );
        // Re-opening a v6 range does not re-open the IPv4 behind it.
        teredo.allow = vec!["64:ff9b:1::/48".parse().unwrap()];
        assert_eq!(
            teredo.judge(ip("64:ff9b:1::a00:1"), &LocalRanges::default()),
            Judgement::Denied,
            "/96 position: 10.0.0.1"
        );
        assert_eq!(
            teredo.judge(ip("64:ff9b:1:a00:0:100::"), &LocalRanges::default()),
            Judgement::Denied,
            "/48 position: 10.0.0.1"
        );
        assert_eq!(
            teredo.judge(ip("64:ff9b:1::101:101"), &LocalRanges::default()),
            Judgement::Denied,
            "/48 position reads 0.0.0.0"
        );
        teredo.allow.push("0.0.0.0/8".parse().unwrap());
        assert_eq!(teredo.judge(ip("64:ff9b:1::101:101"), &LocalRanges::default()), Judgement::Allowed);
    }

    #[test]
    fn allow_reopens_deny_closes_mapped_never() {
        let p = PeerPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap(), "::/0".parse().unwrap()],
            deny: vec!["10.9.0.0/16".parse().unwrap(), "8.8.8.0/24".parse().unwrap()],
            ..PeerPolicy::default()
        };
        assert_eq!(p.judge(ip("127.0.0.1"), &LocalRanges::default()), Judgement::Host, "loopback is the host");
        assert_eq!(
            p.judge(ip("::ffff:127.0.0.1"), &LocalRanges::default()),
            Judgement::Denied,
            "no socket sends to a mapped address"
        );
        assert_eq!(p.judge(ip("10.1.1.1"), &LocalRanges::default()), Judgement::Allowed);
        assert_eq!(p.judge(ip("10.9.1.1"), &LocalRanges::default()), Judgement::Denied, "deny wins over allow");
        assert_eq!(p.judge(ip("8.8.8.8"), &LocalRanges::default()), Judgement::Denied);
        assert_eq!(
            p.judge(ip("::ffff:8.8.4.4"), &LocalRanges::default()),
            Judgement::Denied,
            "allow ::/0 does not open mapped"
        );
    }

    #[test]
    fn the_hosts_addresses_are_host_whatever_the_lists_say() {
        let p = PeerPolicy {
            allow: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            deny: vec![],
            host: vec![ip("192.0.2.7"), ip("127.0.0.1"), ip("2001:db8::7")],
            loopback_peers: vec![ip("127.0.0.1")],
        };
        for s in ["192.0.2.7", "127.0.0.1", "2001:db8::7", "0.0.0.0", "::"] {
            assert_eq!(p.judge(ip(s), &LocalRanges::default()), Judgement::Host, "{s}");
        }
        for s in ["::ffff:127.0.0.1", "::7f00:1", "64:ff9b::7f00:1", "2002:c000:207::", "::ffff:192.0.2.7"] {
            assert_eq!(p.judge(ip(s), &LocalRanges::default()), Judgement::Denied, "{s} embeds a host address");
        }
        assert_eq!(p.judge(ip("127.0.0.2"), &LocalRanges::default()), Judgement::Host, "all of 127/8 is the host");
    }

    #[test]
    fn what_the_kernel_delivers_locally_is_the_host_and_a_loopback_peer_named_alone_is_not() {
        let local = LocalRanges::new(["203.0.113.0/24", "2001:db8:1::/128"].map(|n| n.parse().unwrap()));
        let p = PeerPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap(), "::/0".parse().unwrap()],
            loopback_peers: vec![ip("127.0.0.2")],
            ..PeerPolicy::default()
        };
        for s in ["203.0.113.9", "2001:db8:1::", "127.0.0.3", "::1"] {
            assert_eq!(p.judge(ip(s), &local), Judgement::Host, "{s}");
        }
        for s in ["2002:cb00:7109::", "64:ff9b::cb00:7109", "::7f00:2", "64:ff9b::7f00:2"] {
            assert_eq!(p.judge(ip(s), &local), Judgement::Denied, "{s} embeds a local address");
        }
        assert_eq!(p.judge(ip("127.0.0.2"), &local), Judgement::Allowed, "named on its own");
        assert_eq!(p.judge(ip("2001:db8:1::1"), &local), Judgement::Allowed, "outside the local route");
        let denied = PeerPolicy { deny: vec!["127.0.0.2/32".parse().unwrap()], ..p };
        assert_eq!(denied.judge(ip("127.0.0.2"), &local), Judgement::Denied, "the deny list still wins");
    }
}
