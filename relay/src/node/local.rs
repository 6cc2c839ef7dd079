//! The host's own addresses, as its kernel sees them and kept current: the
//! local routing table's local, anycast and broadcast routes (interface
//! addresses, AnyIP prefixes, the IPv6 subnet-router anycast addresses
//! forwarding creates), read over rtnetlink at start and again whenever
//! the kernel announces a change to an address or to that table. An
//! address added after start (a VIP failover, SLAAC, a secondary IP) is
//! refused as a peer within milliseconds, and the workers judge their live
//! permissions against it at once.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use ip2p_turn::{LocalRanges, NodeState};
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// The local routing table (`ip route show table local`).
const RT_TABLE_LOCAL: u8 = 255;
/// How often (seconds) the watcher looks up from its socket to see if it
/// should stop.
const TICK_SECS: i64 = 1;

/// A subscription to the kernel's address and route changes.
pub(crate) struct LocalWatch {
    events: Socket,
    dumps: Socket,
    stop: Arc<AtomicBool>,
}

impl LocalWatch {
    /// Subscribes (before the first read, so no change falls between).
    pub(crate) fn open() -> io::Result<Self> {
        let mut events = Socket::new(NETLINK_ROUTE)?;
        events.bind_auto()?;
        for group in
            [libc::RTNLGRP_IPV4_IFADDR, libc::RTNLGRP_IPV4_ROUTE, libc::RTNLGRP_IPV6_IFADDR, libc::RTNLGRP_IPV6_ROUTE]
        {
            events.add_membership(group)?;
        }
        // A burst of route changes must not overrun it often (an overrun
        // costs a full read, nothing else).
        let _ = events.set_rx_buf_sz(1 << 20);
        let timeout = nix::sys::time::TimeVal::new(TICK_SECS, 0);
        nix::sys::socket::setsockopt(&events, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)?;
        let mut dumps = Socket::new(NETLINK_ROUTE)?;
        dumps.bind_auto()?;
        dumps.connect(&SocketAddr::new(0, 0))?;
        // The kernel then sends the local table alone, not every route.
        let _ = dumps.set_netlink_get_strict_chk(true);
        Ok(Self { events, dumps, stop: Arc::default() })
    }

    /// The local table as it stands.
    pub(crate) fn read(&self) -> io::Result<LocalRanges> {
        let mut nets = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            dump_local(&self.dumps, family, &mut nets)?;
        }
        Ok(LocalRanges::new(nets))
    }

    /// A flag that stops the watcher (within a second) once set.
    pub(crate) fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Watches on a thread of its own: after each change, stores the new
    /// table in `state` and, when it differs, calls `changed`.
    pub(crate) fn spawn(self, state: Weak<NodeState>, changed: impl Fn() + Send + 'static) -> io::Result<()> {
        std::thread::Builder::new().name("ip2p-local-addrs".into()).spawn(move || self.run(&state, &changed))?;
        Ok(())
    }

    fn run(self, state: &Weak<NodeState>, changed: &dyn Fn()) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut failing = false;
        while !self.stop.load(Ordering::Relaxed) {
            let reread = match self.events.recv(&mut &mut buf[..], 0) {
                Ok(n) => buf.get(..n).is_some_and(announces_change),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                // ENOBUFS: changes were lost; read the table whole.
                Err(_) => true,
            };
            if !reread {
                continue;
            }
            let Some(state) = state.upgrade() else { return };
            match self.read() {
                Ok(ranges) => {
                    failing = false;
                    if state.local.set(ranges) {
                        tracing::info!(ranges = state.local.load().len(), "the host's addresses changed");
                        changed();
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(error = %e, "cannot read the host's addresses; judging peers by the last read");
                }
                Err(_) => {}
            }
        }
    }
}

/// Appends the local, anycast and broadcast routes of `family` in the
/// local table to `nets`.
fn dump_local(socket: &Socket, family: AddressFamily, nets: &mut Vec<IpNet>) -> io::Result<()> {
    let mut route = RouteMessage::default();
    route.header.address_family = family;
    route.header.table = RT_TABLE_LOCAL;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(header, NetlinkPayload::from(RouteNetlinkMessage::GetRoute(route)));
    request.finalize();
    let mut out = vec![0u8; request.buffer_len()];
    request.serialize(&mut out);
    socket.send(&out, 0)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        buf.clear();
        buf.resize(64 * 1024, 0);
        let n = socket.recv(&mut &mut buf[..], 0)?;
        for msg in messages(buf.get(..n).unwrap_or_default()) {
            match msg?.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    let code = e.code.map_or(0, |c| -c.get());
                    return Err(io::Error::from_raw_os_error(code));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => nets.extend(local_net(&r)),
                _ => {}
            }
        }
    }
}

/// The messages of one netlink datagram, in order; a malformed one ends it.
fn messages(mut bytes: &[u8]) -> impl Iterator<Item = io::Result<NetlinkMessage<RouteNetlinkMessage>>> + '_ {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(msg) => {
                let len = (msg.header.length as usize).max(16);
                bytes = bytes.get(len.next_multiple_of(4)..).unwrap_or_default();
                Some(Ok(msg))
            }
            Err(e) => {
                bytes = &[];
                Some(Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))
            }
        }
    })
}

/// The prefix a route delivers locally, if it is one of the local table's
/// local, anycast or broadcast routes.
fn local_net(route: &RouteMessage) -> Option<IpNet> {
    if !matches!(route.header.kind, RouteType::Local | RouteType::Anycast | RouteType::Broadcast)
        || table(route) != u32::from(RT_TABLE_LOCAL)
    {
        return None;
    }
    let len = route.header.destination_prefix_length;
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => IpNet::new(IpAddr::V4(*v4), len).ok(),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => IpNet::new(IpAddr::V6(*v6), len).ok(),
        _ => None,
    })
}

/// A route's table (the attribute holds ids past 255).
fn table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(route.header.table))
}

/// Whether a datagram of notifications says anything about the host's
/// addresses: an address came or went, or a route of the local table
/// changed. What cannot be read counts as a change.
fn announces_change(bytes: &[u8]) -> bool {
    messages(bytes).any(|msg| match msg.map(|m| m.payload) {
        Err(_) | Ok(NetlinkPayload::Overrun(_)) => true,
        Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_))) => {
            true
        }
        Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r))) => {
            table(&r) == u32::from(RT_TABLE_LOCAL)
        }
        Ok(_) => false,
    })
}

/// Every address of this host's interfaces: what is known of the host when
/// rtnetlink cannot be used (no AnyIP prefixes, no changes after start).
pub(crate) fn interface_addresses() -> LocalRanges {
    LocalRanges::new(interface_ips().into_iter().map(IpNet::from))
}

fn interface_ips() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| {
            let a = a.address?;
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_table_holds_loopback_and_this_hosts_addresses() {
        let watch = LocalWatch::open().unwrap();
        let local = watch.read().unwrap();
        assert!(local.contains("127.0.0.1".parse().unwrap()));
        assert!(local.contains("127.200.0.9".parse().unwrap()), "127/8 is a local route");
        assert!(!local.contains("8.8.8.8".parse().unwrap()));
        for ip in interface_ips().into_iter().filter(IpAddr::is_ipv4) {
            assert!(local.contains(ip), "{ip} is an interface address");
        }
    }
}
