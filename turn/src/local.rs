//! The host's own addresses as its kernel routes them: every address and
//! prefix delivered locally (the local table's local, anycast and
//! broadcast routes: interface addresses, AnyIP ranges, the IPv6
//! subnet-router anycast address forwarding creates). The node keeps it
//! current from the kernel's notifications; the policy reads it for each
//! peer a client names, without a lock.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use ipnet::IpNet;

/// A set of address ranges, merged and sorted for a binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRanges {
    // Inclusive ranges of addresses as numbers (IPv4 as its u32).
    v4: Vec<(u128, u128)>,
    v6: Vec<(u128, u128)>,
}

impl LocalRanges {
    /// The ranges `nets` cover.
    #[must_use]
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()).into(), u32::from(n.broadcast()).into())),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self { v4: merged(v4), v6: merged(v6) }
    }

    /// Whether `ip` is in one of the ranges.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => within(&self.v4, u32::from(a).into()),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }

    /// How many disjoint ranges there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sorts `ranges` and merges those that overlap or touch.
fn merged(mut ranges: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Whether `x` falls in one of the sorted, disjoint `ranges`.
fn within(ranges: &[(u128, u128)], x: u128) -> bool {
    let i = ranges.partition_point(|&(start, _)| start <= x);
    i > 0 && ranges.get(i - 1).is_some_and(|&(_, end)| x <= end)
}

/// The host's local ranges as the node last read them, shared by its
/// workers: replaced whole when the kernel's change, each replacement
/// counted so a worker knows to judge its live permissions again.
#[derive(Debug, Default)]
pub struct LocalAddrs {
    ranges: ArcSwap<LocalRanges>,
    generation: AtomicU64,
}

impl LocalAddrs {
    /// The current ranges.
    #[must_use]
    pub fn load(&self) -> arc_swap::Guard<Arc<LocalRanges>> {
        self.ranges.load()
    }

    /// Replaces the ranges (when they differ) and returns whether they did.
    pub fn set(&self, ranges: LocalRanges) -> bool {
        if **self.ranges.load() == ranges {
            return false;
        }
        self.ranges.store(Arc::new(ranges));
        self.generation.fetch_add(1, Ordering::Release);
        true
    }

    /// How many times the ranges changed.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(nets: &[&str]) -> LocalRanges {
        LocalRanges::new(nets.iter().map(|n| n.parse::<IpNet>().unwrap()))
    }

    #[test]
    fn prefixes_and_single_addresses_are_found_and_merged() {
        let r =
            ranges(&["127.0.0.0/8", "127.0.0.1/32", "10.0.0.5/32", "10.0.0.255/32", "192.0.2.0/24", "2001:db8::/128"]);
        assert_eq!(r.len(), 5, "127.0.0.1 merges into 127/8");
        for ip in ["127.0.0.0", "127.255.255.255", "10.0.0.5", "10.0.0.255", "192.0.2.77", "2001:db8::"] {
            assert!(r.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["126.255.255.255", "128.0.0.0", "10.0.0.4", "10.0.0.6", "2001:db8::1", "::1", "0.0.0.0"] {
            assert!(!r.contains(ip.parse().unwrap()), "{ip}");
        }
        let touching = ranges(&["10.0.0.0/25", "10.0.0.128/25", "255.255.255.255/32", "0.0.0.0/32"]);
        assert_eq!(touching.len(), 3);
        assert!(touching.contains("255.255.255.255".parse().unwrap()) && touching.contains("0.0.0.0".parse().unwrap()));
    }

    #[test]
    fn a_change_is_counted_and_the_same_set_is_not() {
        let local = LocalAddrs::default();
        assert!(!local.set(LocalRanges::default()));
        assert_eq!(local.generation(), 0);
        assert!(local.set(ranges(&["10.0.0.5/32"])));
        assert!(!local.set(ranges(&["10.0.0.5/32"])));
        assert_eq!(local.generation(), 1);
        assert!(local.load().contains("10.0.0.5".parse().unwrap()));
    }
}
