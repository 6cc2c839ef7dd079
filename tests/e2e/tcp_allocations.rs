//! RFC 6062 TCP allocations on real loopback sockets: Connect to a TCP
//! peer, ConnectionAttempt from one, ConnectionBind data connections over
//! TCP and TLS, and what closes what. Every test runs on each datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use ip2p_tests::support::Pki;

const WAIT: Duration = Duration::from_secs(5);

fn start(dp: DatapathKind, pki: &Pki) -> Node {
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        workers = 2
        {tls}
        [auth]
        users = [{{ name = "alice", password = "wonderland" }}, {{ name = "bob", password = "builder" }}]
        [peers]
        allow = ["127.0.0.2/32"]
        "#,
        tls = pki.tls_table("127.0.0.1:0"),
    );
    ip2p_tests::start_node(dp, &text)
}

/// A client over TCP, or over TLS.
fn client(node: &Node, pki: &Pki, tls: bool) -> Client {
    if tls {
        Client::tls(node.tls_addrs()[0], "localhost", pki.roots.clone(), "alice", "wonderland").unwrap()
    } else {
        Client::tcp(node.local_addrs()[0], "alice", "wonderland").unwrap()
    }
}

/// Reads exactly `n` bytes from a data connection.
fn recv_exactly(c: &mut Client, n: usize) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} bytes came", got.len());
        let chunk = c.recv_raw(Duration::from_millis(200)).unwrap();
        got.extend_from_slice(&chunk);
    }
    got
}

fn peer_recv_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.read_exact(&mut got).unwrap();
    got
}

/// Both directions, a megabyte each way (more than every buffer on the
/// way holds: back-pressure, nothing lost), through the data connection.
fn exchange(data: &mut Client, peer: &mut TcpStream) {
    data.send_raw(b"hello peer").unwrap();
    assert_eq!(peer_recv_exactly(peer, 10), b"hello peer");
    peer.write_all(b"hello client").unwrap();
    assert_eq!(recv_exactly(data, 12), b"hello client");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = peer.try_clone().unwrap();
    let sent = big.clone();
    let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    assert_eq!(recv_exactly(data, big.len()), big, "peer to client");
    t.join().unwrap();
    for chunk in big.chunks(50_000) {
        data.send_raw(chunk).unwrap();
    }
    assert_eq!(peer_recv_exactly(peer, big.len()), big, "client to peer");
}

fn connect_to_a_tcp_peer(dp: DatapathKind, tls: bool) {
    let pki = Pki::new(&format!("tcp-alloc-connect-{tls}"));
    let node = start(dp, &pki);
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let peer_addr = listener.local_addr().unwrap();
    let mut control = client(&node, &pki, tls);
    let relayed = control.allocate_tcp().unwrap();
    let conn = control.connect(peer_addr).unwrap();
    let (mut peer, seen) = listener.accept().unwrap();
    assert_eq!(seen, relayed, "the peer sees the relayed address");
    assert_eq!(control.connect(peer_addr).unwrap_err().code(), Some(446), "one connection per peer");
    let mut data = client(&node, &pki, tls);
    assert_eq!(data.connection_bind(conn + 1).unwrap_err().code(), Some(400), "an unknown CONNECTION-ID");
    let mut data = client(&node, &pki, tls);
    data.connection_bind(conn).unwrap();
    exchange(&mut data, &mut peer);
    // The peer closes: the data connection closes (RFC 6062 §5.5).
    drop(peer);
    assert!(data.closed_by_server(WAIT).unwrap(), "the data connection outlived its peer");
    // The control connection and its allocation are still there.
    assert_eq!(control.refresh(None).unwrap(), 600);
    // Its session counts the application's bytes each way (TLS taken
    // off), the ended data connection's included.
    let sessions = node.handle().sessions(&Default::default());
    let s = sessions.iter().find(|s| s.tcp).unwrap();
    assert_eq!((s.usage.bytes_to_peers, s.usage.bytes_from_peers), (1_000_010, 1_000_012), "{dp:?} tls {tls}");
}

/// A TCP connection to `to` from the peer's address, 127.0.0.2 (the
/// kernel would pick 127.0.0.1, this host's own address).
fn connect_from_peer(to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

fn a_peer_connects_in(dp: DatapathKind) {
    let pki = Pki::new("tcp-alloc-incoming");
    let node = start(dp, &pki);
    let mut control = client(&node, &pki, false);
    let relayed = control.allocate_tcp().unwrap();
    // No permission: the peer is refused and the client hears nothing.
    let mut refused = connect_from_peer(relayed);
    refused.set_read_timeout(Some(WAIT)).unwrap();
    assert!(matches!(refused.read(&mut [0u8; 16]), Ok(0) | Err(_)), "a peer without permission stayed");
    assert_eq!(control.wait_connection_attempt(Duration::from_millis(300)).unwrap(), None);
    // With a permission for its address: ConnectionAttempt, then a bind.
    control.create_permission(&["127.0.0.2:1".parse().unwrap()]).unwrap();
    // A process of this host (at 127.0.0.1) is not that peer, nor any peer.
    let mut local = TcpStream::connect(relayed).unwrap();
    local.set_read_timeout(Some(WAIT)).unwrap();
    assert!(matches!(local.read(&mut [0u8; 16]), Ok(0) | Err(_)), "a connection from the host was kept");
    let mut peer = connect_from_peer(relayed);
    let (from, conn) = control.wait_connection_attempt(WAIT).unwrap().expect("no ConnectionAttempt");
    assert_eq!(from, peer.local_addr().unwrap());
    // Another user cannot take it.
    let mut bob = Client::tcp(node.local_addrs()[0], "bob", "builder").unwrap();
    assert_eq!(bob.connection_bind(conn).unwrap_err().code(), Some(400));
    let mut data = client(&node, &pki, false);
    data.connection_bind(conn).unwrap();
    exchange(&mut data, &mut peer);
    // Deleting the allocation closes its data connections.
    control.refresh(Some(0)).unwrap();
    assert!(data.closed_by_server(WAIT).unwrap(), "the data connection outlived its allocation");
    peer.set_read_timeout(Some(WAIT)).unwrap();
    assert!(matches!(peer.read(&mut [0u8; 16]), Ok(0) | Err(_)), "the peer connection outlived its allocation");
}

fn failures(dp: DatapathKind) {
    let pki = Pki::new("tcp-alloc-failures");
    let node = start(dp, &pki);
    // TCP allocations over UDP: 400.
    let mut udp = Client::new(node.local_addrs()[0], "alice", "wonderland").unwrap();
    assert_eq!(udp.allocate_tcp().unwrap_err().code(), Some(400));
    let mut control = client(&node, &pki, false);
    control.allocate_tcp().unwrap();
    // Nothing listens there: 447.
    let closed: SocketAddr = {
        let l = TcpListener::bind("127.0.0.2:0").unwrap();
        l.local_addr().unwrap()
    };
    assert_eq!(control.connect(closed).unwrap_err().code(), Some(447));
    // The peer policy applies: 403; so does the host's own: its listener.
    assert_eq!(control.connect("10.1.2.3:80".parse().unwrap()).unwrap_err().code(), Some(403));
    assert_eq!(control.connect(node.local_addrs()[0]).unwrap_err().code(), Some(403));
    // A Connect on a UDP allocation: 400.
    let mut plain = client(&node, &pki, false);
    plain.allocate(None).unwrap();
    assert_eq!(plain.connect(closed).unwrap_err().code(), Some(400));
}

on_both_datapaths! {
    connect_over_tcp: connect_to_a_tcp_peer(false);
    connect_over_tls: connect_to_a_tcp_peer(true);
    incoming: a_peer_connects_in();
    errors: failures();
}
