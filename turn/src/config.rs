//! The server's configuration: plain values, mapped from the relay's
//! settings file by the relay.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::auth::Credentials;
use crate::policy::PeerPolicy;

/// A family of relayed addresses this node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayIp {
    /// The local address relay sockets bind to.
    pub bind: IpAddr,
    /// The address to advertise in XOR-RELAYED-ADDRESS, when the node sits
    /// behind 1:1 NAT (most clouds); `None` advertises `bind`.
    pub external: Option<IpAddr>,
}

/// Which channel numbers ChannelBind accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelNumbers {
    /// 0x4000..=0x7FFF, as RFC 5766 §11 allowed: what coturn accepts and its
    /// client tools use.
    #[default]
    Rfc5766,
    /// 0x4000..=0x4FFF only, as RFC 8656 says.
    Rfc8656,
}

impl ChannelNumbers {
    /// Whether ChannelBind may bind `n`.
    #[must_use]
    pub const fn allows(self, n: u16) -> bool {
        match self {
            Self::Rfc5766 => ip2p_wire::is_rfc5766_channel(n),
            Self::Rfc8656 => ip2p_wire::is_valid_channel(n),
        }
    }
}

/// The server's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// SOFTWARE in responses to Allocate and Refresh (RFC 8656 §5).
    pub software: Option<String>,
    /// Lifetime given when the client asks for less (RFC 8656: 600 s).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (RFC 8656 recommends at most 3600 s).
    pub max_lifetime: Duration,
    /// Relay addresses by family (IPv4, then IPv6): none where the node
    /// does not relay that family, several to offer more than one
    /// address's ports (up to [`MAX_RELAY_IPS`] per family).
    pub relay_ips: [Vec<RelayIp>; 2],
    /// The relay ports this server may use (each worker gets its own slice).
    pub ports: RangeInclusive<u16>,
    /// Which channel numbers may be bound.
    pub channel_numbers: ChannelNumbers,
    /// Whom peers may be.
    pub policy: PeerPolicy,
    /// How requests authenticate.
    pub credentials: Credentials,
    /// Where a draining node sends new allocations (300 Try Alternate);
    /// without any they get 508.
    pub alternates: Vec<SocketAddr>,
    /// The local short-circuit between allocations of this node (see
    /// [`Server::handle_client`](crate::Server::handle_client)).
    pub short_circuit: bool,
    /// Payload bytes a second each allocation may relay in each direction
    /// (a second's worth may come in a burst); 0 = no limit. Past it,
    /// packets are dropped and counted.
    pub bandwidth: u64,
    /// Responses a second to unauthenticated requests per source prefix
    /// (/24, /56); 0 = no limit. Past it, requests go unanswered.
    pub unauthenticated_rate: u32,
    /// Queue an [`crate::Event`] for every change to the forwarding state
    /// (see [`Server::poll_event`](crate::Server::poll_event)); whoever turns it on must poll them.
    pub events: bool,
    /// Queue a [`crate::SessionEvent`] when a session begins and ends (see
    /// [`Server::poll_session_event`](crate::Server::poll_session_event));
    /// whoever turns it on must poll them.
    pub session_events: bool,
    /// A session opened with a TURN REST credential ends when the
    /// credential expires, whatever lifetime it asks for.
    pub strict_expiry: bool,
    /// Fleet-wide quotas: a new allocation waits for a fleet's word on
    /// the user and prefix quotas (see
    /// [`Server::poll_admission`](crate::Server::poll_admission)), with
    /// what decides when the fleet cannot say; whoever turns it on must
    /// poll the requests and answer each. `None`: the node's own quotas
    /// alone.
    pub admission: Option<Fallback>,
}

/// What an Allocate gets when the fleet cannot say (its store is down, or
/// too slow, or the worker holds too many parked requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The node's own limits decide.
    Local,
    /// 508 Insufficient Capacity.
    Refuse,
}

/// The most relay addresses per family.
pub const MAX_RELAY_IPS: usize = 8;

impl Config {
    pub(crate) fn relay_ips(&self, family: usize) -> &[RelayIp] {
        self.relay_ips.get(family).map_or(&[], Vec::as_slice)
    }

    /// The relay address of `ip`'s family that `is` picks, and its index
    /// among all of them (IPv4 ones first): the index names its owners
    /// table.
    pub(crate) fn relay_where(&self, ip: IpAddr, is: impl Fn(&RelayIp) -> bool) -> Option<(usize, RelayIp)> {
        let family = usize::from(ip.is_ipv6());
        let base = if family == 1 { self.relay_ips(0).len() } else { 0 };
        let (i, relay) = self.relay_ips(family).iter().enumerate().find(|(_, r)| is(r))?;
        Some((base + i, *relay))
    }

    /// The relay address bound to `ip`, with its index.
    pub(crate) fn relay_bound_to(&self, ip: IpAddr) -> Option<(usize, RelayIp)> {
        self.relay_where(ip, |r| r.bind == ip)
    }

    /// The index of the relay address advertised as `ip`.
    pub(crate) fn relay_advertised_as(&self, ip: IpAddr) -> Option<usize> {
        self.relay_where(ip, |r| r.external.unwrap_or(r.bind) == ip).map(|(i, _)| i)
    }
}
