//! The XDP program itself, run by the kernel through BPF_PROG_TEST_RUN:
//! byte-exact output frames for each direction and family (the expected
//! frames are built here with checksums computed from scratch, the program
//! updates them incrementally), and every case it must leave to the kernel
//! passed untouched. Each test runs in a network namespace of its own (an
//! unshared thread), where a veth holds the relay's addresses and static
//! neighbours stand in for the client and the peer. Needs root, as the
//! end-to-end tests do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use ip2p_xdp::{Capacity, Channel, FastPath, FlowCounters};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const RELAY_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xe1];

fn sh(cmd: &str) {
    let status = Command::new("sh").arg("-c").arg(cmd).status().expect("sh");
    assert!(status.success(), "{cmd}");
}

/// Runs `f` on a thread in a new network namespace holding the relay's
/// interface: r0 (10.9.0.1/24, fd09::1/64), with forwarding off everywhere
/// but on lo (which the program's FIB lookups name), the client at .2/::2
/// and the peer at .3/::3 as permanent neighbours. The namespace goes with
/// the thread.
fn in_netns<T: Send>(f: impl FnOnce(&mut FastPath) -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run as root");
            sh("ip link set lo up \
                && ip link add r0 address 02:00:00:00:00:01 type veth peer name r1 \
                && ip addr add 10.9.0.1/24 dev r0 && ip -6 addr add fd09::1/64 dev r0 nodad \
                && ip link set r0 up && ip link set r1 up \
                && sysctl -qw net.ipv4.conf.all.forwarding=0 net.ipv6.conf.all.forwarding=0 \
                && sysctl -qw net.ipv4.conf.lo.forwarding=1 net.ipv6.conf.lo.forwarding=1 \
                && ip neigh replace 10.9.0.2 lladdr 02:00:00:00:00:c1 dev r0 nud permanent \
                && ip neigh replace 10.9.0.3 lladdr 02:00:00:00:00:e1 dev r0 nud permanent \
                && ip neigh replace fd09::2 lladdr 02:00:00:00:00:c1 dev r0 nud permanent \
                && ip neigh replace fd09::3 lladdr 02:00:00:00:00:e1 dev r0 nud permanent");
            let mut fast = FastPath::load(Capacity { channels: 64, slots: 16 }).expect("load the program");
            f(&mut fast)
        })
        .join()
        .expect("test thread")
    })
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn channel(v6: bool, listen: &str) -> Channel {
    let (client, relayed, peer) = if v6 {
        ("[fd09::2]:40000", "[fd09::1]:50000", "[fd09::3]:5000")
    } else {
        ("10.9.0.2:40000", "10.9.0.1:50000", "10.9.0.3:5000")
    };
    Channel {
        listen: addr(listen),
        client: addr(client),
        relayed: addr(relayed),
        peer: addr(peer),
        // An RFC 5766 number for IPv6 (coturn's clients use them).
        channel: if v6 { 0x7aa1 } else { 0x4001 },
        host: false,
        until: Instant::now() + Duration::from_secs(60),
        slot: 5,
    }
}

/// Two clients of this node with a channel to each other's relayed
/// address (a pair, `host` set): A (the client of `channel`, another port)
/// and B (at the peer's address).
fn pair(v6: bool, listen: &str) -> (Channel, Channel) {
    let c = channel(v6, listen);
    let (a_client, b_client, b_relayed) = if v6 {
        ("[fd09::2]:40001", "[fd09::3]:6000", "[fd09::1]:50001")
    } else {
        ("10.9.0.2:40001", "10.9.0.3:6000", "10.9.0.1:50001")
    };
    let a = Channel { client: addr(a_client), peer: addr(b_relayed), channel: 0x4003, host: true, ..c };
    let b =
        Channel { client: addr(b_client), relayed: addr(b_relayed), peer: a.relayed, channel: 0x4ffe, slot: 6, ..a };
    (a, b)
}

fn sum(bytes: &[u8]) -> u32 {
    bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Options of a test frame beyond its addresses.
#[derive(Clone, Copy)]
struct Shape {
    ttl: u8,
    /// IPv4 flags and fragment offset.
    frag: u16,
    udp_checksum: bool,
    /// IPv4 TOS, IPv6 traffic class.
    tos: u8,
    /// IPv6 flow label.
    flow: u32,
}

const SENT: Shape = Shape { ttl: 61, frag: 0x4000, udp_checksum: true, tos: 0, flow: 0 };
const RELAYED: Shape = Shape { ttl: 64, ..SENT };

/// An Ethernet frame with one UDP datagram, every checksum computed here.
fn frame(macs: ([u8; 6], [u8; 6]), src: SocketAddr, dst: SocketAddr, payload: &[u8], shape: Shape) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend(src.port().to_be_bytes());
    udp.extend(dst.port().to_be_bytes());
    udp.extend(udp_len.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    let (mut f, pseudo) = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let mut ip = vec![0x45, shape.tos];
            ip.extend((20 + udp_len).to_be_bytes());
            ip.extend([0x12, 0x34]);
            ip.extend(shape.frag.to_be_bytes());
            ip.extend([shape.ttl, 17, 0, 0]);
            ip.extend(s.ip().octets());
            ip.extend(d.ip().octets());
            let c = !fold(sum(&ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let mut pseudo = [s.ip().octets(), d.ip().octets()].concat();
            pseudo.extend([0, 17]);
            pseudo.extend(udp_len.to_be_bytes());
            (ip, pseudo)
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            let first = 0x6000_0000 | u32::from(shape.tos) << 20 | (shape.flow & 0xf_ffff);
            let mut ip = first.to_be_bytes().to_vec();
            ip.extend(udp_len.to_be_bytes());
            ip.extend([17, shape.ttl]);
            ip.extend(s.ip().octets());
            ip.extend(d.ip().octets());
            let mut pseudo = [s.ip().octets(), d.ip().octets()].concat();
            pseudo.extend(u32::from(udp_len).to_be_bytes());
            pseudo.extend([0, 0, 0, 17]);
            (ip, pseudo)
        }
        _ => unreachable!("one family"),
    };
    if shape.udp_checksum {
        let c = match !fold(sum(&pseudo) + sum(&udp)) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    let ethertype: [u8; 2] = if src.is_ipv4() { [0x08, 0x00] } else { [0x86, 0xdd] };
    let mut eth = [macs.1, macs.0].concat();
    eth.extend(ethertype);
    f.extend(udp);
    [eth, f].concat()
}

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    [&channel.to_be_bytes()[..], &(data.len() as u16).to_be_bytes(), data].concat()
}

/// ChannelData from the client leaves as the bare payload, from the relayed
/// address to the peer; a datagram from the peer leaves as ChannelData from
/// the listen address to the client.
fn both_directions(v6: bool, listen: &str) {
    let c = channel(v6, listen);
    let shown_listen = if v6 { addr("[fd09::1]:3478") } else { addr("10.9.0.1:3478") };
    in_netns(|fast| {
        let mut tables = fast.tables().expect("tables");
        tables.install(&c).expect("install");
        // Odd and even payload lengths: the checksum's trailing byte.
        for payload in [&b"hello"[..], b"hello, peer!"] {
            let sent = frame((CLIENT_MAC, RELAY_MAC), c.client, shown_listen, &channel_data(c.channel, payload), SENT);
            let (action, out) = run(fast, &sent).expect("run");
            assert_eq!(action, XDP_TX, "client -> peer is forwarded (back out of r0)");
            assert_eq!(out, frame((RELAY_MAC, PEER_MAC), c.relayed, c.peer, payload, RELAYED));

            let sent = frame((PEER_MAC, RELAY_MAC), c.peer, c.relayed, payload, SENT);
            let (action, out) = run(fast, &sent).expect("run");
            assert_eq!(action, XDP_TX, "peer -> client is forwarded");
            let expected =
                frame((RELAY_MAC, CLIENT_MAC), shown_listen, c.client, &channel_data(c.channel, payload), RELAYED);
            assert_eq!(out, expected);
        }
        let counted = tables.counters(5).expect("counters");
        assert_eq!(counted, FlowCounters { packets: [2, 2], bytes: [17, 17] });
        let outcomes = fast.outcomes().expect("outcomes");
        assert_eq!((outcomes.to_peer.packets, outcomes.to_client.packets), (2, 2));
    });
}

#[test]
fn relays_ipv4_both_ways() {
    both_directions(false, "10.9.0.1:3478");
}

#[test]
fn relays_ipv6_both_ways() {
    both_directions(true, "[fd09::1]:3478");
}

/// A wildcard listener's entries match whatever address the client used,
/// and the FIB picks the source of the way back, as a socket would.
#[test]
fn relays_through_a_wildcard_listener() {
    both_directions(false, "0.0.0.0:3478");
    both_directions(true, "[::]:3478");
}

/// IPv4 without a UDP checksum: nothing vouches for the payload, the
/// kernel judges it.
#[test]
fn an_ipv4_datagram_without_a_checksum_goes_to_the_kernel() {
    let c = channel(false, "10.9.0.1:3478");
    in_netns(|fast| {
        fast.tables().expect("tables").install(&c).expect("install");
        let none = Shape { udp_checksum: false, ..SENT };
        passes(
            fast,
            &frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &channel_data(0x4001, b"abc"), none),
            "to a peer",
        );
        passes(fast, &frame((PEER_MAC, RELAY_MAC), c.peer, c.relayed, b"abc", none), "to a client");
    });
}

/// A relayed packet is the relay's: the sender's ECN bits go on, its DSCP
/// and IPv6 flow label do not (they would mark the relay's traffic as the
/// client chose, past the relay's network).
#[test]
fn ecn_goes_on_dscp_and_the_flow_label_do_not() {
    for v6 in [false, true] {
        let c = channel(v6, if v6 { "[fd09::1]:3478" } else { "10.9.0.1:3478" });
        in_netns(|fast| {
            fast.tables().expect("tables").install(&c).expect("install");
            // DSCP 46 (EF) with ECT(1), and a flow label.
            let marked = Shape { tos: 0xb9, flow: 0x1_2345, ..SENT };
            let sent = frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &channel_data(c.channel, b"x"), marked);
            let (action, out) = run(fast, &sent).expect("run");
            assert_eq!(action, XDP_TX, "v6 {v6}");
            let relayed = Shape { ttl: 64, tos: 0x01, flow: 0, ..marked };
            assert_eq!(out, frame((RELAY_MAC, PEER_MAC), c.relayed, c.peer, b"x", relayed), "v6 {v6}");
        });
    }
}

/// A datagram whose source the relay's routes reach back through another
/// interface (a spoofed source, which strict rp_filter would drop) is the
/// kernel's to judge; so is one whose source has no route back.
#[test]
fn a_source_not_reached_back_by_its_interface_goes_to_the_kernel() {
    let mut c = channel(false, "10.9.0.1:3478");
    in_netns(|fast| {
        sh("ip link add s0 type veth peer name s1 && ip addr add 10.8.0.1/24 dev s0 \
            && ip link set s0 up && ip link set s1 up");
        let mut tables = fast.tables().expect("tables");
        for client in ["10.8.0.2:40000", "10.66.0.2:40000"] {
            c.client = addr(client);
            tables.install(&c).expect("install");
            let sent = frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &channel_data(c.channel, b"x"), SENT);
            passes(fast, &sent, client);
        }
        let outcomes = fast.outcomes().expect("outcomes");
        assert_eq!((outcomes.spoofed.packets, outcomes.no_route.packets, outcomes.to_peer.packets), (1, 1, 0));
    });
}

/// The sender's interface, once found, is trusted for a second: packets
/// on another interface are looked up at once, and a route that moves is
/// seen within the second.
#[test]
fn the_source_check_is_kept_for_a_second() {
    let c = channel(false, "10.9.0.1:3478");
    in_netns(|fast| {
        sh("ip link add s0 type veth peer name s1 && ip addr add 10.8.0.1/24 dev s0 \
            && ip link set s0 up && ip link set s1 up");
        fast.tables().expect("tables").install(&c).expect("install");
        let sent = frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &channel_data(c.channel, b"x"), SENT);
        assert_eq!(run(fast, &sent).expect("run").0, XDP_TX, "behind r0, where it came in");
        let s0 = nix::net::if_::if_nametoindex("s0").expect("s0");
        assert_eq!(fast.test_run(&sent, s0).expect("run").0, XDP_PASS, "the same source on s0: looked up, spoofed");
        // The client moves behind s0: within the second the finding holds.
        sh("ip route add 10.9.0.2/32 dev s0");
        assert_eq!(run(fast, &sent).expect("run").0, XDP_TX, "kept");
        std::thread::sleep(Duration::from_millis(1100));
        passes(fast, &sent, "looked up again: now spoofed on r0");
        assert_eq!(fast.outcomes().expect("outcomes").spoofed.packets, 2);
    });
}

/// ChannelData between two clients of this node goes straight from one
/// to the other with the receiver's channel number, counted for both
/// allocations as the short-circuit counts it (sent by one, delivered to
/// the other).
fn between_clients(v6: bool, listen: &str) {
    let (a, b) = pair(v6, listen);
    let shown_listen = if v6 { addr("[fd09::1]:3478") } else { addr("10.9.0.1:3478") };
    in_netns(|fast| {
        let mut tables = fast.tables().expect("tables");
        tables.install(&a).expect("install");
        tables.install(&b).expect("install");
        for payload in [&b"hello"[..], b"hello, peer!"] {
            let sent = frame((CLIENT_MAC, RELAY_MAC), a.client, shown_listen, &channel_data(a.channel, payload), SENT);
            let (action, out) = run(fast, &sent).expect("run");
            assert_eq!(action, XDP_TX, "A -> B is forwarded");
            let expected =
                frame((RELAY_MAC, PEER_MAC), shown_listen, b.client, &channel_data(b.channel, payload), RELAYED);
            assert_eq!(out, expected);

            let sent = frame((PEER_MAC, RELAY_MAC), b.client, shown_listen, &channel_data(b.channel, payload), SENT);
            let (action, out) = run(fast, &sent).expect("run");
            assert_eq!(action, XDP_TX, "B -> A is forwarded");
            let expected =
                frame((RELAY_MAC, CLIENT_MAC), shown_listen, a.client, &channel_data(a.channel, payload), RELAYED);
            assert_eq!(out, expected);
        }
        for slot in [a.slot, b.slot] {
            let counted = tables.counters(slot).expect("counters");
            assert_eq!(counted, FlowCounters { packets: [2, 2], bytes: [17, 17] }, "slot {slot}");
        }
        let outcomes = fast.outcomes().expect("outcomes");
        assert_eq!((outcomes.to_peer.packets, outcomes.to_client.packets), (4, 4));
    });
}

#[test]
fn relays_between_two_clients_of_this_node() {
    between_clients(false, "10.9.0.1:3478");
    between_clients(true, "[fd09::1]:3478");
    between_clients(false, "0.0.0.0:3478");
}

/// The pair's other half decides: without its channel back (a permission
/// alone, answered with a Data indication), with it lapsed, or for a
/// datagram arriving on the wire from one relayed address to another, the
/// sockets do.
#[test]
fn a_pair_needs_both_halves_alive() {
    for v6 in [false, true] {
        let (a, mut b) = pair(v6, if v6 { "[fd09::1]:3478" } else { "10.9.0.1:3478" });
        in_netns(|fast| {
            let mut tables = fast.tables().expect("tables");
            tables.install(&a).expect("install");
            let sent = frame((CLIENT_MAC, RELAY_MAC), a.client, a.listen, &channel_data(a.channel, b"x"), SENT);
            passes(fast, &sent, "no channel back");
            // A channel back to some other peer is not this pair's.
            tables.install(&Channel { peer: b.client, host: false, ..b }).expect("install");
            passes(fast, &sent, "the other's channel is to someone else");
            tables.remove(&Channel { peer: b.client, host: false, ..b });
            b.until = Instant::now() + Duration::from_millis(50);
            tables.install(&b).expect("install");
            assert_eq!(run(fast, &sent).expect("run").0, XDP_TX, "both alive");
            std::thread::sleep(Duration::from_millis(60));
            passes(fast, &sent, "the channel back lapsed");
            assert_eq!(fast.outcomes().expect("outcomes").expired.packets, 1);
            let wire = frame((PEER_MAC, RELAY_MAC), a.relayed, b.relayed, b"spoofed?", SENT);
            passes(fast, &wire, "from a relayed address on the wire");
            tables.remove(&b);
            passes(fast, &sent, "B gone");
        });
    }
}

/// Runs the program on `frame` arriving on r0.
fn run(fast: &mut FastPath, frame: &[u8]) -> Result<(u32, Vec<u8>), ip2p_xdp::Error> {
    let r0 = nix::net::if_::if_nametoindex("r0").expect("r0");
    fast.test_run(frame, r0)
}

fn passes(fast: &mut FastPath, sent: &[u8], why: &str) {
    let (action, out) = run(fast, sent).expect("run");
    assert_eq!(action, XDP_PASS, "{why}: passed to the kernel");
    assert_eq!(out, sent, "{why}: untouched");
}

#[test]
fn leaves_everything_else_to_the_kernel() {
    for v6 in [false, true] {
        let c = channel(v6, if v6 { "[fd09::1]:3478" } else { "10.9.0.1:3478" });
        let stranger = if v6 { addr("[fd09::3]:5001") } else { addr("10.9.0.3:5001") };
        in_netns(|fast| {
            fast.tables().expect("tables").install(&c).expect("install");
            let data = channel_data(c.channel, b"payload");
            let to_listen = |payload: &[u8]| frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, payload, SENT);
            passes(
                fast,
                &frame((PEER_MAC, RELAY_MAC), stranger, c.relayed, b"x", SENT),
                "a peer port without a channel",
            );
            passes(fast, &to_listen(&channel_data(0x4002, b"payload")), "an unbound channel");
            let mut padded = data.clone();
            padded.push(0);
            passes(fast, &to_listen(&padded), "padded ChannelData");
            passes(fast, &to_listen(&data[..data.len() - 1]), "short ChannelData");
            let stun = [&[0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42][..], &[7; 12]].concat();
            passes(fast, &to_listen(&stun), "a STUN message");
            let odd_port = frame((CLIENT_MAC, RELAY_MAC), c.client, SocketAddr::new(c.listen.ip(), 3479), &data, SENT);
            passes(fast, &odd_port, "ChannelData to another port");
            let mut trailer = to_listen(&data);
            trailer.extend([0; 6]);
            passes(fast, &trailer, "a frame longer than its IP packet");
            if v6 {
                passes(
                    fast,
                    &frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &data, Shape { udp_checksum: false, ..SENT }),
                    "IPv6 without a UDP checksum",
                );
            } else {
                let fragment = Shape { frag: 0x2000, ..SENT };
                passes(fast, &frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &data, fragment), "a first fragment");
                passes(
                    fast,
                    &frame((PEER_MAC, RELAY_MAC), c.peer, c.relayed, b"x", Shape { frag: 0x0003, ..SENT }),
                    "a later fragment",
                );
                let mut options = to_listen(&data);
                options[14] = 0x46;
                passes(fast, &options, "IP options");
                let mut bad = to_listen(&data);
                bad[24] ^= 1;
                passes(fast, &bad, "a wrong IPv4 header checksum");
            }
            // 1500 bytes of IP from the peer is 1504 with the header: over r0's MTU.
            let ip_overhead = if v6 { 48 } else { 28 };
            let big = vec![0x55; 1500 - ip_overhead];
            passes(fast, &frame((PEER_MAC, RELAY_MAC), c.peer, c.relayed, &big, SENT), "over the MTU with the header");
            let fits = vec![0x55; 1500 - ip_overhead - 4];
            let (action, _) = run(fast, &frame((PEER_MAC, RELAY_MAC), c.peer, c.relayed, &fits, SENT)).expect("run");
            assert_eq!(action, XDP_TX, "exactly the MTU with the header");
            let outcomes = fast.outcomes().expect("outcomes");
            assert_eq!(outcomes.too_big.packets, 1);
        });
    }
}

#[test]
fn an_entry_past_its_deadline_goes_to_the_kernel() {
    let mut c = channel(false, "10.9.0.1:3478");
    in_netns(|fast| {
        let mut tables = fast.tables().expect("tables");
        c.until = Instant::now() + Duration::from_millis(50);
        tables.install(&c).expect("install");
        let sent = frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &channel_data(0x4001, b"x"), SENT);
        assert_eq!(run(fast, &sent).expect("run").0, XDP_TX, "alive");
        std::thread::sleep(Duration::from_millis(60));
        passes(fast, &sent, "expired");
        assert_eq!(fast.outcomes().expect("outcomes").expired.packets, 1);
        // A refresh moves the deadline: forwarded again.
        c.until = Instant::now() + Duration::from_secs(60);
        tables.install(&c).expect("refresh");
        assert_eq!(run(fast, &sent).expect("run").0, XDP_TX, "refreshed");
        // Removed: the kernel's again.
        tables.remove(&c);
        passes(fast, &sent, "removed");
    });
}

/// Without a route (or with forwarding off on lo, which the kernel's FIB
/// lookup for XDP needs) the packet goes the socket way.
#[test]
fn no_route_goes_to_the_kernel() {
    let mut c = channel(false, "10.9.0.1:3478");
    c.peer = addr("10.77.0.3:5000");
    in_netns(|fast| {
        fast.tables().expect("tables").install(&c).expect("install");
        let sent = frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &channel_data(0x4001, b"x"), SENT);
        passes(fast, &sent, "no route to the peer");
        sh("sysctl -qw net.ipv4.conf.lo.forwarding=0");
        c.peer = addr("10.9.0.3:5000");
        fast.tables().expect("tables").install(&c).expect("install");
        passes(fast, &sent, "forwarding off on lo");
        // Off, the route back to the client is not looked up either.
        assert_eq!(fast.outcomes().expect("outcomes").no_route.packets, 2);
    });
}

/// Whether `frame`'s IP header holds (lengths agreeing with the frame's,
/// the IPv4 header checksum), and whether its UDP checksum does (or an
/// IPv4 datagram has none).
fn checks(frame: &[u8]) -> (bool, bool) {
    let header = ip_and_lengths(frame);
    (header, header && udp_checksum(frame))
}

fn ip_and_lengths(frame: &[u8]) -> bool {
    let (ip_len, udp) = match frame.get(12..14) {
        Some([0x08, 0x00]) => {
            let Some(ip) = frame.get(14..34) else { return false };
            if ip[0] != 0x45 || fold(sum(ip)) != 0xffff {
                return false;
            }
            (usize::from(u16::from_be_bytes([ip[2], ip[3]])), frame.get(34..))
        }
        Some([0x86, 0xdd]) => {
            let Some(ip) = frame.get(14..54) else { return false };
            (usize::from(u16::from_be_bytes([ip[4], ip[5]])) + 40, frame.get(54..))
        }
        _ => return false,
    };
    let Some(udp) = udp else { return false };
    ip_len + 14 == frame.len() && udp.len() >= 8 && usize::from(u16::from_be_bytes([udp[4], udp[5]])) == udp.len()
}

fn udp_checksum(frame: &[u8]) -> bool {
    let v4 = frame[12] == 0x08;
    let (udp, mut pseudo) =
        if v4 { (&frame[34..], frame[26..34].to_vec()) } else { (&frame[54..], frame[22..54].to_vec()) };
    if v4 {
        pseudo.extend([0, 17]);
        pseudo.extend((udp.len() as u16).to_be_bytes());
    } else {
        pseudo.extend((udp.len() as u32).to_be_bytes());
        pseudo.extend([0, 0, 0, 17]);
    }
    (v4 && udp[6..8] == [0, 0]) || fold(sum(&pseudo) + sum(udp)) == 0xffff
}

/// Any frame, and especially one near a frame the program would relay:
/// passed untouched, or relayed with its checksums still right when they
/// were right, the payload intact, and never dropped.
#[test]
fn never_drops_never_corrupts() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let c4 = channel(false, "10.9.0.1:3478");
    let c6 = channel(true, "[fd09::1]:3478");
    let (a4, b4) = pair(false, "10.9.0.1:3478");
    let (a6, b6) = pair(true, "[fd09::1]:3478");
    let installed = [c4, c6, a4, b4, a6, b6];
    let seeds: Vec<Vec<u8>> = installed
        .iter()
        .flat_map(|c| {
            [
                frame((CLIENT_MAC, RELAY_MAC), c.client, c.listen, &channel_data(c.channel, b"payload!"), SENT),
                frame((PEER_MAC, RELAY_MAC), c.peer, c.relayed, b"from the peer", SENT),
            ]
        })
        .collect();
    in_netns(move |fast| {
        let mut tables = fast.tables().expect("tables");
        for c in &installed {
            tables.install(c).expect("install");
        }
        let mutated =
            (0..seeds.len(), prop::collection::vec((0usize..120, any::<u8>()), 0..4), 0usize..140, any::<bool>())
                .prop_map(move |(seed, flips, cut, truncate)| {
                    let mut f = seeds[seed].clone();
                    for (at, byte) in flips {
                        if let Some(b) = f.get_mut(at) {
                            *b = byte;
                        }
                    }
                    if truncate {
                        f.truncate(cut.max(14));
                    }
                    f
                });
        // IP2P_XDP_CASES runs more (a long run in the background).
        let cases = std::env::var("IP2P_XDP_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        let fast = std::cell::RefCell::new(fast);
        runner
            .run(&mutated, |sent| {
                let (action, out) = run(&mut fast.borrow_mut(), &sent).expect("run");
                match action {
                    XDP_PASS => prop_assert_eq!(&out, &sent, "passed, but changed"),
                    XDP_TX | 4 => {
                        let (sent_ip, sent_udp) = checks(&sent);
                        let (out_ip, out_udp) = checks(&out);
                        prop_assert!(sent_ip, "relayed a frame whose IP header or lengths are wrong");
                        prop_assert!(out_ip, "relayed, and broke the IP header or lengths");
                        // A wrong UDP checksum stays wrong, for the receiver to drop.
                        prop_assert_eq!(out_udp, sent_udp, "relayed, and changed whether the UDP checksum holds");
                        let header = if sent[12] == 0x08 { 42 } else { 62 };
                        let (sent_payload, out_payload) = (&sent[header..], &out[header..]);
                        if out.len() < sent.len() {
                            prop_assert_eq!(out_payload, &sent_payload[4..]);
                        } else if out.len() == sent.len() {
                            // Between clients: only the channel number changes.
                            prop_assert_eq!(&out_payload[2..], &sent_payload[2..]);
                        } else {
                            prop_assert_eq!(&out_payload[4..], sent_payload);
                        }
                    }
                    other => prop_assert!(false, "action {other}: the program must never drop"),
                }
                Ok(())
            })
            .unwrap();
    });
}
