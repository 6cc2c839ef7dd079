//! Where new allocations go instead of this node: the choice a fleet
//! makes (the relay's fleet agent sets it every second from the other
//! nodes' load), read by every worker when an Allocate comes. A draining
//! node sends each new Allocate there, a node at or above its threshold
//! too; with no choice made, the node serves (or, draining, falls back to
//! the configured alternates, then 508).

use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use crate::ListenerId;

/// The choice the workers read: per client, the best other node's address
/// (RFC 8489 §14.15 ALTERNATE-SERVER), and the load at which to send them
/// there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steer {
    /// The alternate for clients over UDP and TCP, by family (IPv4,
    /// IPv6): another node's address of the same transport.
    pub plain: [Option<SocketAddr>; 2],
    /// The same for clients over TLS (another node's TLS listener).
    pub tls: [Option<SocketAddr>; 2],
    /// Stream listeners with this index and above are TLS ones (the
    /// datapath numbers its TCP listeners first).
    pub tls_from: u16,
    /// Live allocations at or above which a new one goes to the alternate
    /// (0: never, only while draining).
    pub above: usize,
}

impl Steer {
    /// The alternate for a client of `listener` at `from`, if any.
    #[must_use]
    pub fn alternate(&self, listener: ListenerId, from: SocketAddr) -> Option<SocketAddr> {
        let tls = listener.transport == ip2p_wire::Transport::Stream && listener.index >= self.tls_from;
        let by_family = if tls { &self.tls } else { &self.plain };
        by_family.get(usize::from(from.is_ipv6())).copied().flatten()
    }
}

/// The node's current [`Steer`], swapped whole.
#[derive(Debug, Default)]
pub struct Steering(Mutex<Steer>);

impl Steering {
    /// What the workers use from now on.
    pub fn set(&self, steer: Steer) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = steer;
    }

    /// The current choice (a lock per Allocate, never per packet).
    #[must_use]
    pub fn get(&self) -> Steer {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_the_alternate_of_its_family_and_transport() {
        let a = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let steer = Steer {
            plain: [a("192.0.2.2:3478"), a("[2001:db8::2]:3478")],
            tls: [a("192.0.2.2:443"), None],
            tls_from: 1,
            above: 10,
        };
        let v4: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::9]:5000".parse().unwrap();
        assert_eq!(steer.alternate(ListenerId::udp(3), v4), a("192.0.2.2:3478"));
        assert_eq!(steer.alternate(ListenerId::stream(0), v6), a("[2001:db8::2]:3478"));
        assert_eq!(steer.alternate(ListenerId::stream(1), v4), a("192.0.2.2:443"));
        assert_eq!(steer.alternate(ListenerId::stream(1), v6), None);
    }
}
