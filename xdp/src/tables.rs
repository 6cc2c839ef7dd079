//! The program's tables as Rust sees them: `#[repr(C)]` mirrors of
//! bpf/ip2p.h, field for field, and the entries for one channel.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// `struct flow_key`: one direction of one channel as the packet shows it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The address the datagram was sent to on this host (zero: a wildcard
    /// listener).
    pub local: [u8; 16],
    /// Where it came from.
    pub remote: [u8; 16],
    /// Network byte order.
    pub local_port: [u8; 2],
    /// Network byte order.
    pub remote_port: [u8; 2],
    /// Network byte order; zero in the peer table.
    pub channel: [u8; 2],
    /// 4 or 6.
    pub family: u8,
    /// Zero.
    pub pad: u8,
}

/// `struct flow_out`: where a matching packet goes, and until when.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowOut {
    /// CLOCK_MONOTONIC nanoseconds; past it the packet goes to user space.
    pub deadline_ns: u64,
    /// The new source address (zero: the FIB picks it).
    pub src: [u8; 16],
    /// The new destination.
    pub dst: [u8; 16],
    /// Network byte order.
    pub src_port: [u8; 2],
    /// Network byte order.
    pub dst_port: [u8; 2],
    /// Network byte order: the header to prepend; zero strips it.
    pub channel: [u8; 2],
    /// [`FlowOut::HOST`] or zero.
    pub flags: u16,
    /// Index into the per-allocation counters.
    pub slot: u32,
    /// The program's: the interface the sender was last found behind
    /// (zero: not yet).
    pub in_ifindex: u32,
    /// The program's: when, CLOCK_MONOTONIC nanoseconds.
    pub in_checked_ns: u64,
}

impl FlowOut {
    /// `FLOW_HOST`: the peer is another allocation's relayed address here.
    pub const HOST: u16 = 1;
}

/// `struct flow_counters`: one allocation's fast-path traffic on one CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Datagrams, `[to peer, to client]`.
    pub packets: [u64; 2],
    /// UDP payload bytes as sent, `[to peer, to client]`.
    pub bytes: [u64; 2],
}

/// `struct outcome_count`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeCount {
    /// Packets.
    pub packets: u64,
    /// UDP payload bytes as sent (forwarded packets only).
    pub bytes: u64,
}

// SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit
// padding fields: every bit pattern is valid, none is uninitialised.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowOut {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowCounters {}
// SAFETY: as above.
unsafe impl aya::Pod for OutcomeCount {}

/// `enum outcome`: what the program did with packets that matched an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Forwarded client → peer.
    pub to_peer: OutcomeCount,
    /// Forwarded peer → client.
    pub to_client: OutcomeCount,
    /// Passed to the kernel: the entry was past its deadline.
    pub expired: OutcomeCount,
    /// Passed: no route or no neighbour for the destination (or forwarding
    /// off on the interface).
    pub no_route: OutcomeCount,
    /// Passed: larger than the egress MTU.
    pub too_big: OutcomeCount,
    /// Passed: the route back to its source does not leave by the interface
    /// it came in by (strict reverse-path filtering).
    pub spoofed: OutcomeCount,
}

impl Outcomes {
    /// How many outcomes the program counts (`OUT_MAX`).
    pub const COUNT: u32 = 6;

    pub(crate) fn set(&mut self, index: u32, count: OutcomeCount) {
        let field = match index {
            0 => &mut self.to_peer,
            1 => &mut self.to_client,
            2 => &mut self.expired,
            3 => &mut self.no_route,
            4 => &mut self.too_big,
            _ => &mut self.spoofed,
        };
        *field = count;
    }
}

/// Both entries of one channel: ChannelData from `client` to `listen` on
/// `channel` goes from `relayed` to `peer`, and datagrams from `peer` to
/// `relayed` go from `listen` to `client` on `channel`, until `until`.
/// The client and the relayed address share a family (the program does not
/// translate between IPv4 and IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// The listener's address (unspecified: a wildcard listener).
    pub listen: SocketAddr,
    /// The client.
    pub client: SocketAddr,
    /// The relayed address as bound.
    pub relayed: SocketAddr,
    /// The peer.
    pub peer: SocketAddr,
    /// The channel number (0x4000..=0x4FFF).
    pub channel: u16,
    /// The peer is another allocation's relayed address on this node: the
    /// program carries ChannelData on it straight to that allocation's
    /// client when that one's channel back is installed too, and leaves
    /// everything else to the sockets.
    pub host: bool,
    /// When the entries die.
    pub until: Instant,
    /// The allocation's counter slot.
    pub slot: u32,
}

impl Channel {
    /// Whether the program can carry it: one family on both sides.
    #[must_use]
    pub fn supported(&self) -> bool {
        let v4 = self.client.is_ipv4();
        self.listen.is_ipv4() == v4 && self.relayed.is_ipv4() == v4 && self.peer.is_ipv4() == v4
    }

    /// The key of its ChannelData from the client.
    #[must_use]
    pub fn client_key(&self) -> FlowKey {
        key(self.listen, self.client, self.channel)
    }

    /// The key of its datagrams from the peer.
    #[must_use]
    pub fn peer_key(&self) -> FlowKey {
        key(self.relayed, self.peer, 0)
    }

    pub(crate) fn out_to_peer(&self, deadline_ns: u64) -> FlowOut {
        self.out(self.relayed, self.peer, 0, deadline_ns)
    }

    pub(crate) fn out_to_client(&self, deadline_ns: u64) -> FlowOut {
        self.out(self.listen, self.client, self.channel, deadline_ns)
    }

    fn out(&self, src: SocketAddr, dst: SocketAddr, channel: u16, deadline_ns: u64) -> FlowOut {
        FlowOut {
            deadline_ns,
            src: ip_bytes(src.ip()),
            dst: ip_bytes(dst.ip()),
            src_port: src.port().to_be_bytes(),
            dst_port: dst.port().to_be_bytes(),
            channel: channel.to_be_bytes(),
            flags: if self.host { FlowOut::HOST } else { 0 },
            slot: self.slot,
            in_ifindex: 0,
            in_checked_ns: 0,
        }
    }
}

fn key(local: SocketAddr, remote: SocketAddr, channel: u16) -> FlowKey {
    FlowKey {
        local: ip_bytes(local.ip()),
        remote: ip_bytes(remote.ip()),
        local_port: local.port().to_be_bytes(),
        remote_port: remote.port().to_be_bytes(),
        channel: channel.to_be_bytes(),
        family: if local.is_ipv4() { 4 } else { 6 },
        pad: 0,
    }
}

/// An address as the tables hold it: IPv4 in the first 4 bytes.
fn ip_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes bpf/ip2p.h gives (checked against the compiled program's
    /// BTF when the maps are created, too).
    #[test]
    fn layouts_match_the_c_header() {
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowOut>(), 64);
        assert_eq!(size_of::<FlowCounters>(), 32);
        assert_eq!(size_of::<OutcomeCount>(), 16);
    }

    #[test]
    fn keys_hold_addresses_in_network_order() {
        let c = Channel {
            listen: "10.0.0.1:3478".parse().unwrap(),
            client: "192.0.2.7:40000".parse().unwrap(),
            relayed: "10.0.0.1:50000".parse().unwrap(),
            peer: "198.51.100.9:5000".parse().unwrap(),
            channel: 0x4001,
            host: false,
            until: Instant::now(),
            slot: 3,
        };
        let k = c.client_key();
        assert_eq!(k.local[..4], [10, 0, 0, 1]);
        assert_eq!(k.local[4..], [0; 12]);
        assert_eq!(k.local_port, [0x0d, 0x96]);
        assert_eq!(k.channel, [0x40, 0x01]);
        assert_eq!(k.family, 4);
        assert_eq!(c.peer_key().channel, [0, 0]);
        assert!(c.supported());
        let mixed = Channel { client: "[2001:db8::1]:1".parse().unwrap(), ..c };
        assert!(!mixed.supported());
    }
}
