//! TURN over TCP and TLS (RFC 8656 §3.1, §3.3) on real loopback sockets,
//! driven by ip2p-client. Every test runs on each datapath.
#![allow(clippy::cast_possible_truncation)] // tests count small
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_client::{Client, Received};
use ip2p_relay::config::{DatapathKind, Settings};
use ip2p_relay::datapath::stats::StreamCounters;
use ip2p_relay::node::{self, Node};
use ip2p_tests::support::Pki;
use ip2p_tests::{peer, recv};

const WAIT: Duration = Duration::from_secs(2);

/// A node serving UDP and TCP on one port and TLS on another, with the
/// tables in `extra`.
fn start(dp: DatapathKind, pki: &Pki, extra: &str) -> (Node, Settings) {
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        realm = "ip2p.test"
        workers = 2
        {tls}
        [auth]
        users = [{{ name = "alice", password = "wonderland" }}]
        [peers]
        allow = ["127.0.0.2/32"]
        {extra}
        "#,
        tls = pki.tls_table("127.0.0.1:0"),
    );
    let settings = ip2p_tests::settings(dp, &text);
    (node::start(&settings).unwrap(), settings)
}

fn tcp(node: &Node) -> Client {
    Client::tcp(node.local_addrs()[0], "alice", "wonderland").unwrap()
}

fn tls(node: &Node, pki: &Pki) -> Client {
    Client::tls(node.tls_addrs()[0], "localhost", pki.roots.clone(), "alice", "wonderland").unwrap()
}

fn streams(node: &Node) -> StreamCounters {
    node.stats().iter().fold(StreamCounters::default(), |mut t, w| {
        t.add(&w.streams);
        t
    })
}

/// Waits up to `WAIT` for `f` to hold.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Allocate, Send and Data indications, channels both ways (odd lengths, so
/// stream padding is exercised), refresh: all over `c`.
fn relay_both_ways(c: &mut Client) {
    assert_eq!(c.binding().unwrap(), c.local_addr().unwrap());
    let relayed = c.allocate(None).unwrap();
    assert_eq!(c.mapped, Some(c.local_addr().unwrap()), "XOR-MAPPED-ADDRESS is the TCP 5-tuple's");
    let p = peer();
    let paddr = p.local_addr().unwrap();
    c.create_permission(&[paddr]).unwrap();
    c.send_indication(paddr, b"hello peer").unwrap();
    assert_eq!(recv(&p), (b"hello peer".to_vec(), relayed));
    p.send_to(b"hello client", relayed).unwrap();
    assert_eq!(c.recv(WAIT).unwrap(), Some(Received::Data { peer: paddr, data: b"hello client".to_vec() }));
    c.channel_bind(0x4001, paddr).unwrap();
    for len in [1usize, 5, 6, 7, 1200] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        c.send_channel(0x4001, &data).unwrap();
        assert_eq!(recv(&p), (data.clone(), relayed));
        p.send_to(&data, relayed).unwrap();
        assert_eq!(c.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4001, data }));
    }
    assert_eq!(c.refresh(None).unwrap(), 600);
}

fn tcp_relays_both_ways(dp: DatapathKind) {
    let pki = Pki::new("tcp");
    let (node, _) = start(dp, &pki, "");
    relay_both_ways(&mut tcp(&node));
}

fn tls_relays_both_ways(dp: DatapathKind) {
    let pki = Pki::new("tls");
    let (node, _) = start(dp, &pki, "");
    let mut c = tls(&node, &pki);
    let (version, alpn) = c.tls_info().unwrap();
    assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(alpn.as_deref(), Some(&b"stun.turn"[..]));
    relay_both_ways(&mut c);

    // TLS 1.2 works too.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(pki.roots.clone())
        .with_no_client_auth();
    let mut c12 =
        Client::tls_with_config(node.tls_addrs()[0], "localhost", Arc::new(config), "alice", "wonderland").unwrap();
    assert_eq!(c12.tls_info().unwrap().0, Some(rustls::ProtocolVersion::TLSv1_2));
    relay_both_ways(&mut c12);
}

fn closing_the_connection_deletes_the_allocation(dp: DatapathKind) {
    let pki = Pki::new("close");
    let (node, _) = start(dp, &pki, "");
    let mut c = tcp(&node);
    let relayed = c.allocate(None).unwrap();
    let mut t = tls(&node, &pki);
    t.allocate(None).unwrap();
    assert_eq!(node.allocations(), 2);
    drop(c);
    assert!(eventually(|| node.allocations() == 1), "the TCP allocation outlived its connection");
    drop(t);
    assert!(eventually(|| node.allocations() == 0), "the TLS allocation outlived its connection");
    assert!(eventually(|| streams(&node).open == 0));
    // Its relayed address is gone: a new allocation may get it, nothing else.
    let p = peer();
    p.send_to(b"anyone?", relayed).unwrap();
}

fn garbage_closes_only_that_connection(dp: DatapathKind) {
    let pki = Pki::new("garbage");
    let (node, _) = start(dp, &pki, "");
    let mut good = tcp(&node);
    good.allocate(None).unwrap();
    let mut bad = tcp(&node);
    bad.allocate(None).unwrap();
    bad.send_raw(&[0xFF; 16]).unwrap();
    assert!(bad.closed_by_server(WAIT).unwrap(), "garbage must close the connection");
    assert!(eventually(|| node.allocations() == 1));
    assert_eq!(streams(&node).closed_framing, 1);
    // Plaintext on the TLS port is a TLS error: that connection closes too.
    let mut plain = TcpStream::connect(node.tls_addrs()[0]).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(&[0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    let mut buf = [0u8; 512];
    let mut answer = Vec::new();
    while let Ok(n @ 1..) = plain.read(&mut buf) {
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.first().is_none_or(|&b| b == 0x15), "only a TLS alert may come back, got {answer:?}");
    assert!(eventually(|| streams(&node).closed_tls == 1));
    // The good connection never noticed.
    let p = peer();
    good.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    good.send_channel(0x4000, b"still fine").unwrap();
    assert_eq!(recv(&p).0, b"still fine");
}

fn a_slow_reader_does_not_stall_others(dp: DatapathKind) {
    let pki = Pki::new("slow");
    let (node, _) = start(dp, &pki, "[connections]\nsend_buffer = 65600");
    let mut slow = tcp(&node);
    let slow_relayed = slow.allocate(None).unwrap();
    let flood = peer();
    slow.channel_bind(0x4000, flood.local_addr().unwrap()).unwrap();
    let mut fast = tcp(&node);
    let fast_relayed = fast.allocate(None).unwrap();
    let p = peer();
    fast.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    // The slow client reads nothing while 24 MB come for it: the kernel's
    // buffers fill, then its bounded queue, then packets are dropped.
    let payload = [7u8; 1200];
    for i in 0..20_000 {
        flood.send_to(&payload, slow_relayed).unwrap();
        if i % 2000 == 0 {
            // Meanwhile the other connection is served.
            p.send_to(b"ping", fast_relayed).unwrap();
            assert_eq!(
                fast.recv(WAIT).unwrap(),
                Some(Received::Channel { channel: 0x4000, data: b"ping".to_vec() }),
                "the fast client was stalled"
            );
        }
    }
    assert!(eventually(|| streams(&node).dropped_backlog > 0), "nothing dropped: {:?}", streams(&node));
    // The slow client is still connected and gets data once it reads.
    assert!(matches!(slow.recv(WAIT).unwrap(), Some(Received::Channel { .. })));
}

fn idle_connections_close(dp: DatapathKind) {
    let pki = Pki::new("idle");
    let (node, _) = start(dp, &pki, "[connections]\nidle_timeout = 1\ntls_handshake_timeout = 1\nsend_buffer = 65600");
    let mut idle = tcp(&node);
    let mut busy = tcp(&node);
    busy.allocate(None).unwrap();
    let mut silent = TcpStream::connect(node.tls_addrs()[0]).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    assert!(idle.closed_by_server(Duration::from_secs(4)).unwrap(), "an idle connection stayed open");
    assert!(matches!(silent.read(&mut [0u8; 64]), Ok(0) | Err(_)), "a handshake that never starts stayed open");
    assert!(eventually(|| streams(&node).closed_idle == 2), "{:?}", streams(&node));
    // A connection with an allocation is not idle.
    assert_eq!(busy.refresh(None).unwrap(), 600);
}

fn certificates_reload_without_dropping_connections(dp: DatapathKind) {
    let mut pki = Pki::new("reload");
    let (node, settings) = start(dp, &pki, "");
    let old_roots = pki.roots.clone();
    let mut before = tls(&node, &pki);
    before.allocate(None).unwrap();
    pki.issue();
    settings.tls.as_ref().unwrap().reload().unwrap();
    // New handshakes get the new certificate...
    let mut after = tls(&node, &pki);
    after.allocate(None).unwrap();
    assert!(
        Client::tls(node.tls_addrs()[0], "localhost", old_roots, "alice", "wonderland").is_err(),
        "the old certificate is still served"
    );
    // ...and the connection made before still works.
    assert_eq!(before.refresh(None).unwrap(), 600);
    // A broken file is refused and the current certificate stays.
    std::fs::write(pki.key(), "not a key").unwrap();
    assert!(settings.tls.as_ref().unwrap().reload().is_err());
    tls(&node, &pki).allocate(None).unwrap();
}

/// A TCP client and a TLS client paired with UDP clients of the same node:
/// their frames take the local short-circuit (copied to the owning
/// worker's inbox, on either worker), and the UDP side's come back to them
/// the same way.
fn stream_clients_short_circuit_to_udp_clients(dp: DatapathKind) {
    let pki = Pki::new("pairs");
    let (node, _) = start(dp, &pki, "");
    let mut sent = 0;
    for mut a in [tcp(&node), tls(&node, &pki), tcp(&node), tcp(&node)] {
        let mut b = Client::new(node.local_addrs()[0], "alice", "wonderland").unwrap();
        let (ra, rb) = (a.allocate(None).unwrap(), b.allocate(None).unwrap());
        a.channel_bind(0x4000, rb).unwrap();
        b.channel_bind(0x4001, ra).unwrap();
        for len in [1usize, 7, 1200] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            a.send_channel(0x4000, &data).unwrap();
            assert_eq!(b.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4001, data: data.clone() }));
            b.send_channel(0x4001, &data).unwrap();
            assert_eq!(a.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4000, data }));
            sent += 2;
        }
    }
    let stats = node.stats();
    let short: u64 = stats.iter().map(|s| s.turn.short_circuited).sum();
    let relayed: u64 = stats.iter().map(|s| s.turn.to_peer_packets).sum();
    assert_eq!((short, relayed), (sent, sent));
}

on_both_datapaths! {
    tcp: tcp_relays_both_ways();
    tls: tls_relays_both_ways();
    close: closing_the_connection_deletes_the_allocation();
    garbage: garbage_closes_only_that_connection();
    slow_reader: a_slow_reader_does_not_stall_others();
    idle: idle_connections_close();
    reload: certificates_reload_without_dropping_connections();
    short_circuit: stream_clients_short_circuit_to_udp_clients();
}
