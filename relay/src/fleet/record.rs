//! A node's record in the fleet's registry: what others steer by. Each
//! node writes its own every second; a record read from the store is
//! checked before it counts (one with absurd values is ignored).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The most URLs or addresses a record may list.
const MAX_LISTED: usize = 64;
/// The largest allocation count or capacity a record may claim.
pub(super) const MAX_ALLOCATIONS: u64 = 100_000_000;

/// One node as the registry lists it (`GET /api/v1/fleet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its `fleet.node`.
    pub id: String,
    /// Its `fleet.region`.
    pub region: String,
    /// The relay's version.
    pub version: String,
    /// Its URLs, as `iceServers` lists them (`stun:`, `turn:` over UDP and
    /// TCP, `turns:`).
    pub urls: Vec<String>,
    /// The addresses its UDP and TCP listeners are reached at (what an
    /// ALTERNATE-SERVER names).
    pub addresses: Vec<SocketAddr>,
    /// Those of its TLS listeners.
    pub tls_addresses: Vec<SocketAddr>,
    /// Live allocations.
    pub allocations: u64,
    /// The most it takes.
    pub capacity: u64,
    /// Datagrams relayed a second, both ways (over the last second).
    pub packets_per_second: u64,
    /// Their payload bytes a second.
    pub bytes_per_second: u64,
    /// It drains: it takes no new allocations.
    pub draining: bool,
    /// When this process began serving (unix seconds).
    pub started: u64,
}

impl NodeRecord {
    /// Whether a record read from the store is one a node writes: names
    /// as the configuration allows them, counts within bounds.
    #[must_use]
    pub fn is_sane(&self) -> bool {
        let name = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        let usable = |a: &SocketAddr| !a.ip().is_unspecified() && a.port() != 0;
        name(&self.id)
            && name(&self.region)
            && self.version.len() <= 64
            && self.urls.len() <= MAX_LISTED
            && self.urls.iter().all(|u| u.len() <= 300)
            && self.addresses.len() <= MAX_LISTED
            && self.tls_addresses.len() <= MAX_LISTED
            && self.addresses.iter().chain(&self.tls_addresses).all(usable)
            && self.capacity > 0
            && self.capacity <= MAX_ALLOCATIONS
            && self.allocations <= MAX_ALLOCATIONS
    }

    /// Its load: the share of its capacity in use.
    #[must_use]
    pub fn load(&self) -> f64 {
        self.allocations as f64 / self.capacity.max(1) as f64
    }

    /// Whether it takes new allocations below `share` of its capacity.
    #[must_use]
    pub fn has_room(&self, share: f64) -> bool {
        !self.draining && self.load() < share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> NodeRecord {
        NodeRecord {
            id: "relay-1".into(),
            region: "eu".into(),
            version: "0.1.0".into(),
            urls: vec!["turn:192.0.2.1:3478?transport=udp".into()],
            addresses: vec!["192.0.2.1:3478".parse().unwrap()],
            tls_addresses: vec![],
            allocations: 10,
            capacity: 100,
            packets_per_second: 0,
            bytes_per_second: 0,
            draining: false,
            started: 0,
        }
    }

    #[test]
    fn a_record_with_absurd_values_is_not_sane() {
        assert!(record().is_sane());
        let bad: [fn(&mut NodeRecord); 7] = [
            |r| r.id = "a b".into(),
            |r| r.region = String::new(),
            |r| r.capacity = 0,
            |r| r.allocations = u64::MAX,
            |r| r.addresses = vec!["0.0.0.0:3478".parse().unwrap()],
            |r| r.urls = vec!["x".repeat(301)],
            |r| r.tls_addresses = vec!["192.0.2.1:0".parse().unwrap()],
        ];
        for (i, spoil) in bad.iter().enumerate() {
            let mut r = record();
            spoil(&mut r);
            assert!(!r.is_sane(), "{i}: {r:?}");
        }
    }

    #[test]
    fn room_is_below_the_share_and_not_while_draining() {
        let mut r = record();
        assert!(r.has_room(0.9));
        r.allocations = 90;
        assert!(!r.has_room(0.9));
        r.allocations = 0;
        r.draining = true;
        assert!(!r.has_room(0.9));
    }
}
