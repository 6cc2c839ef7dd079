//! What this node says of itself in the registry: its addresses and
//! URLs as clients reach them, its load and capacity, its traffic.

use std::net::{IpAddr, SocketAddr};

use super::record::{MAX_ALLOCATIONS, NodeRecord};
use crate::node::NodeHandle;

/// What this node says of itself now; `traffic` is its packets and bytes
/// a second.
pub(super) fn own(node: &NodeHandle, fleet: &crate::config::Fleet, started: u64, traffic: (u64, u64)) -> NodeRecord {
    let advertised = |a: &SocketAddr| SocketAddr::new(node.advertised(a.ip()), a.port());
    let addresses: Vec<SocketAddr> = node.listen().iter().map(advertised).collect();
    let tls_addresses: Vec<SocketAddr> = node.tls_listen().iter().map(advertised).collect();
    let host = |a: &SocketAddr| match &fleet.advertise {
        Some(name) => host_port(name, a.port()),
        None => a.to_string(),
    };
    let mut urls = Vec::new();
    for a in &addresses {
        let h = host(a);
        urls.extend([format!("stun:{h}"), format!("turn:{h}?transport=udp"), format!("turn:{h}?transport=tcp")]);
    }
    urls.extend(tls_addresses.iter().map(|a| format!("turns:{}?transport=tcp", host(a))));
    urls.dedup();
    NodeRecord {
        id: fleet.node.clone(),
        region: fleet.region.clone(),
        version: crate::VERSION.to_owned(),
        urls,
        addresses,
        tls_addresses,
        allocations: node.allocations() as u64,
        capacity: capacity(node),
        packets_per_second: traffic.0,
        bytes_per_second: traffic.1,
        draining: node.draining(),
        started,
    }
}

/// The node's allocation limit: `allocation.max_allocations`, or the one
/// the node derived from its ports and descriptors.
fn capacity(node: &NodeHandle) -> u64 {
    match node.quota_limits().total {
        0 => node.relay_ports() as u64,
        n => n as u64,
    }
    .clamp(1, MAX_ALLOCATIONS)
}

/// `name:port`, an IPv6 address in brackets.
fn host_port(name: &str, port: u16) -> String {
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{name}:{port}"),
    }
}

/// Packets and payload bytes the node relayed so far, both ways, the
/// sockets' and the XDP fast path's.
pub(super) fn relayed(node: &NodeHandle) -> (u64, u64) {
    let (mut packets, mut bytes) = (0, 0);
    for w in node.stats() {
        packets += w.turn.to_peer_packets + w.turn.to_client_packets;
        bytes += w.turn.to_peer_bytes + w.turn.to_client_bytes;
    }
    if let Some(x) = node.xdp_outcomes() {
        packets += x.to_peer.packets + x.to_client.packets;
        bytes += x.to_peer.bytes + x.to_client.bytes;
    }
    (packets, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_goes_in_brackets() {
        assert_eq!(host_port("2001:db8::1", 3478), "[2001:db8::1]:3478");
        assert_eq!(host_port("turn.example.org", 443), "turn.example.org:443");
    }
}
