//! The node's limits on TCP and TLS connections, counted across workers
//! at accept time (never per packet): client connections, and RFC 6062's
//! peer and data connections, each against the node's total and its
//! client's address (an IPv6 client's /64). A connection from a load
//! balancer that sends the PROXY protocol counts against its client's
//! address once its header has said which that is.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ip2p_turn::client_prefix;

/// Connection limits of the node, counted across workers at accept time
/// (never per packet): client connections, and RFC 6062's peer and data
/// connections, each against the node's total and its client's address
/// (an IPv6 client's /64).
#[derive(Debug)]
pub(crate) struct ConnLimits {
    pub(crate) max_total: usize,
    pub(crate) max_per_ip: u32,
    /// How long a connection may stay without an allocation.
    pub(crate) idle: Duration,
    /// How long a TLS handshake may take.
    pub(crate) handshake: Duration,
    /// Most unsent bytes per connection.
    pub(crate) send_buffer: usize,
    /// Load balancers whose connections begin with a PROXY header.
    pub(crate) proxy_from: Vec<ipnet::IpNet>,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection counted against the [`ConnLimits`]: dropping it gives
/// its place back.
#[derive(Debug)]
pub(crate) struct ConnTicket {
    limits: Arc<ConnLimits>,
    /// The client's address (or /64) it counts against: none yet for a
    /// balancer's connection before its PROXY header.
    prefix: Option<IpAddr>,
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        self.limits.release(self.prefix);
    }
}

impl ConnLimits {
    pub(crate) fn new(
        max_total: usize,
        max_per_ip: u32,
        idle: Duration,
        handshake: Duration,
        send_buffer: usize,
        proxy_from: Vec<ipnet::IpNet>,
    ) -> Self {
        Self {
            max_total,
            max_per_ip,
            idle,
            handshake,
            send_buffer,
            proxy_from,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Whether connections from `ip` begin with a PROXY header.
    pub(crate) fn proxied(&self, ip: IpAddr) -> bool {
        self.proxy_from.iter().any(|net| net.contains(&ip))
    }

    /// Counts a new connection from `ip`; `None` (and nothing counted)
    /// when a limit is reached. A balancer's connection counts only in
    /// the total until [`Self::attribute`] names its client.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnTicket> {
        if self.proxied(ip) {
            let _guard = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if self.total.load(Ordering::Relaxed) >= self.max_total {
                return None;
            }
            self.total.fetch_add(1, Ordering::Relaxed);
            return Some(ConnTicket { limits: self.clone(), prefix: None });
        }
        self.add(ip, self.max_total, self.max_per_ip)
    }

    /// Counts a balancer's connection (`ticket`) against the address of
    /// the client its PROXY header named; `false` (and nothing changed)
    /// when that address has its most connections already.
    pub(crate) fn attribute(&self, ticket: &mut ConnTicket, ip: IpAddr) -> bool {
        let prefix = client_prefix(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ticket.prefix.is_some() {
            return true;
        }
        let n = per_ip.entry(prefix).or_insert(0);
        if *n >= self.max_per_ip {
            if *n == 0 {
                per_ip.remove(&prefix);
            }
            return false;
        }
        *n += 1;
        ticket.prefix = Some(prefix);
        true
    }

    /// Counts a connection that exists already (one handed over), past
    /// the limits if need be: always `Some`.
    pub(crate) fn count(self: &Arc<Self>, ip: IpAddr) -> Option<ConnTicket> {
        self.add(ip, usize::MAX, u32::MAX)
    }

    /// Counts a connection of the client at `ip` if the node has fewer
    /// than `max_total` and its address fewer than `max_per_ip`.
    fn add(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: u32) -> Option<ConnTicket> {
        let prefix = client_prefix(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.total.load(Ordering::Relaxed) >= max_total {
            return None;
        }
        let n = per_ip.entry(prefix).or_insert(0);
        if *n >= max_per_ip {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(ConnTicket { limits: self.clone(), prefix: Some(prefix) })
    }

    /// Connections counted now.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn release(&self, prefix: Option<IpAddr>) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(prefix) = prefix
            && let Some(n) = per_ip.get_mut(&prefix)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&prefix);
            }
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: u32, proxy_from: &[&str]) -> Arc<ConnLimits> {
        let proxy_from = proxy_from.iter().map(|n| n.parse().unwrap()).collect();
        let second = Duration::from_secs(1);
        Arc::new(ConnLimits::new(total, per_ip, second, second, 1, proxy_from))
    }

    #[test]
    fn a_balancers_connections_count_against_their_clients() {
        let l = limits(4, 1, &["10.9.0.0/24"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let balancer = ip("10.9.0.7");
        let mut a = l.admit(balancer).unwrap();
        let mut b = l.admit(balancer).unwrap();
        assert_eq!(l.total(), 2, "the balancer's connections count in the total at once");
        assert!(l.attribute(&mut a, ip("192.0.2.1")));
        assert!(!l.attribute(&mut b, ip("192.0.2.1")), "the client's one connection is taken");
        assert!(l.admit(ip("192.0.2.1")).is_none(), "and counts for its direct connections too");
        assert!(l.attribute(&mut b, ip("192.0.2.2")));
        drop(a);
        assert!(l.admit(ip("192.0.2.1")).is_some(), "a dropped ticket gives the client's place back");
        let unnamed = l.admit(balancer).unwrap();
        drop(unnamed);
        assert_eq!(l.total(), 1, "one held by b (the direct one was dropped at once)");
        assert!(l.admit(ip("10.9.1.1")).is_some(), "outside the balancers' networks: an ordinary client");
    }

    #[test]
    fn limits_count_per_ip_and_in_total() {
        let l = Arc::new(limits(3, 2, &[]));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert!(l.admit(a).is_none(), "per-IP limit");
        let _b1 = l.admit(b).unwrap();
        assert!(l.admit(b).is_none(), "total limit");
        drop(a1);
        let b2 = l.admit(b);
        assert!(b2.is_some(), "a dropped ticket gives its place back");
        assert_eq!(l.total(), 3);
    }

    #[test]
    fn an_ipv6_client_is_capped_by_its_64() {
        let l = Arc::new(limits(100, 2, &[]));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held: Vec<_> = ["2001:db8:1:1::1", "2001:db8:1:1::2"].iter().map(|a| l.admit(ip(a)).unwrap()).collect();
        assert!(l.admit(ip("2001:db8:1:1:ffff::3")).is_none(), "a third address of the same /64");
        assert!(l.admit(ip("2001:db8:1:2::1")).is_some());
        drop(held);
    }
}
