//! IPv6 over ::1: listeners of both families (UDP, TCP and TLS), IPv6 and
//! dual relayed addresses (REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-
//! FAMILY) and the IPv6 ranges of the peer policy. Every test runs on each
//! datapath.
//!
//! ::1 is this host's only IPv6 loopback address, and the host's addresses
//! are never peers but at a live relayed address: the IPv6 peer is another
//! client's IPv6 relayed address, with the short-circuit off so that the
//! datagrams cross the kernel between the two relay sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ip2p_client::{Client, Received};
use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use ip2p_tests::support::Pki;
use ip2p_wire::AddressFamily;

const WAIT: Duration = Duration::from_secs(2);

fn start(dp: DatapathKind, pki: &Pki, relay_ips: &str) -> Node {
    let text = format!(
        r#"
        listen = ["127.0.0.1:0", "[::1]:0"]
        realm = "ip2p.test"
        workers = 2
        [relay]
        ips = [{relay_ips}]
        short_circuit = false
        {tls}
        [auth]
        users = [{{ name = "alice", password = "wonderland" }}]
        [peers]
        allow = ["127.0.0.2/32"]
        "#,
        tls = pki.tls_table("[::1]:0"),
    );
    ip2p_tests::start_node(dp, &text)
}

fn v6_listener(node: &Node) -> SocketAddr {
    *node.local_addrs().iter().find(|a| a.is_ipv6()).unwrap()
}

fn peer(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer received nothing");
    (buf[..n].to_vec(), from)
}

/// Channel data both ways between `c` (at `relayed`) and another client
/// of the node, `p`, at its relayed address `p_relayed`: `p` gets Data
/// indications and answers with Send indications.
fn round_trip_relayed(c: &mut Client, channel: u16, relayed: SocketAddr, p: &mut Client, p_relayed: SocketAddr) {
    p.create_permission(&[relayed]).unwrap();
    c.channel_bind(channel, p_relayed).unwrap();
    c.send_channel(channel, b"to the peer").unwrap();
    assert_eq!(p.recv(WAIT).unwrap(), Some(Received::Data { peer: relayed, data: b"to the peer".to_vec() }));
    p.send_indication(relayed, b"to the client").unwrap();
    assert_eq!(c.recv(WAIT).unwrap(), Some(Received::Channel { channel, data: b"to the client".to_vec() }));
}

/// A client of `node` with an IPv6 relayed address, to be a peer.
fn v6_peer(node: &Node) -> (Client, SocketAddr) {
    let mut p = Client::new(v6_listener(node), "alice", "wonderland").unwrap();
    let relayed = p.allocate_families(Some(AddressFamily::IPV6), false).unwrap()[0];
    (p, relayed)
}

/// Channel data both ways between `c` and `p` through `relayed`.
fn round_trip(c: &mut Client, channel: u16, p: &UdpSocket, relayed: SocketAddr) {
    c.channel_bind(channel, p.local_addr().unwrap()).unwrap();
    c.send_channel(channel, b"to the peer").unwrap();
    assert_eq!(recv(p), (b"to the peer".to_vec(), relayed));
    p.send_to(b"to the client", relayed).unwrap();
    assert_eq!(c.recv(WAIT).unwrap(), Some(Received::Channel { channel, data: b"to the client".to_vec() }));
}

fn ipv6_relaying_over_every_transport(dp: DatapathKind) {
    let pki = Pki::new("ipv6");
    let node = start(dp, &pki, r#""127.0.0.1", "::1""#);
    let server = v6_listener(&node);
    let clients = [
        Client::new(server, "alice", "wonderland").unwrap(),
        Client::tcp(server, "alice", "wonderland").unwrap(),
        Client::tls(node.tls_addrs()[0], "localhost", pki.roots.clone(), "alice", "wonderland").unwrap(),
    ];
    for mut c in clients {
        assert!(c.local_addr().unwrap().is_ipv6());
        assert_eq!(c.binding().unwrap(), c.local_addr().unwrap());
        let relayed = c.allocate_families(Some(AddressFamily::IPV6), false).unwrap();
        assert_eq!(relayed.len(), 1);
        assert_eq!(relayed[0].ip(), "::1".parse::<std::net::IpAddr>().unwrap());
        let (mut p, p_relayed) = v6_peer(&node);
        round_trip_relayed(&mut c, 0x4000, relayed[0], &mut p, p_relayed);
        // Without REQUESTED-ADDRESS-FAMILY the relayed address is IPv4,
        // whatever the client's own family (RFC 8656 §7.2).
        let mut v4 = Client::new(server, "alice", "wonderland").unwrap();
        assert!(v4.allocate(None).unwrap().is_ipv4());
    }
}

fn dual_allocation(dp: DatapathKind) {
    let pki = Pki::new("dual");
    let node = start(dp, &pki, r#""127.0.0.1", "::1""#);
    let mut c = Client::tcp(v6_listener(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate_families(None, true).unwrap();
    assert_eq!(relayed.len(), 2, "{relayed:?}");
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6(), "{relayed:?}");
    let p4 = peer("127.0.0.2");
    let (mut p6, p6_relayed) = v6_peer(&node);
    round_trip(&mut c, 0x4000, &p4, relayed[0]);
    round_trip_relayed(&mut c, 0x4001, relayed[1], &mut p6, p6_relayed);
    // A Refresh keeps both.
    assert_eq!(c.refresh(None).unwrap(), 600);
    round_trip(&mut c, 0x4000, &p4, relayed[0]);
    round_trip_relayed(&mut c, 0x4001, relayed[1], &mut p6, p6_relayed);
}

fn ipv6_policy_and_missing_family(dp: DatapathKind) {
    let pki = Pki::new("v6policy");
    let node = start(dp, &pki, r#""127.0.0.1", "::1""#);
    let mut c = Client::new(v6_listener(&node), "alice", "wonderland").unwrap();
    c.allocate_families(Some(AddressFamily::IPV6), false).unwrap();
    for denied in
        ["[fd00::1]:5000", "[fe80::1]:5000", "[2001:db8::1]:5000", "[ff02::1]:5", "[::]:5", "[::1]:5", "[::7f00:2]:5"]
    {
        let err = c.create_permission(&[denied.parse().unwrap()]).unwrap_err();
        assert_eq!(err.code(), Some(403), "{denied} must be denied");
    }
    // An IPv4-mapped peer is the IPv4 address it maps: not for an IPv6
    // relayed address (443), and denied by the policy on an IPv4 one.
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
    assert_eq!(c.create_permission(&[mapped]).unwrap_err().code(), Some(443));
    let mut v4 = Client::new(v6_listener(&node), "alice", "wonderland").unwrap();
    v4.allocate(None).unwrap();
    assert_eq!(v4.create_permission(&[mapped]).unwrap_err().code(), Some(403));
    drop(node);
    // A node without an IPv6 relay address answers 440 to an IPv6 request.
    let node = start(dp, &pki, r#""127.0.0.1""#);
    let mut c = Client::new(v6_listener(&node), "alice", "wonderland").unwrap();
    assert_eq!(c.allocate_families(Some(AddressFamily::IPV6), false).unwrap_err().code(), Some(440));
}

on_both_datapaths! {
    every_transport: ipv6_relaying_over_every_transport();
    dual: dual_allocation();
    policy: ipv6_policy_and_missing_family();
}
