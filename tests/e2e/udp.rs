//! The relay over real loopback sockets, driven by ip2p-client. Every
//! test runs on each datapath.
#![allow(clippy::cast_possible_truncation)] // tests count small
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ip2p_client::{Client, Received};
use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use ip2p_tests::{peer, recv};

const WAIT: Duration = Duration::from_secs(2);

fn start(datapath: DatapathKind, extra: &str) -> Node {
    start_with(datapath, "", "", extra)
}

/// A node with `top` among its top-level keys (two workers unless it
/// says), `auth` added to its [auth] table, and the tables in `extra`.
fn start_with(datapath: DatapathKind, top: &str, auth: &str, extra: &str) -> Node {
    let workers = if top.contains("workers") { "" } else { "workers = 2" };
    let text = format!(
        r#"
        {top}
        listen = ["127.0.0.1:0"]
        realm = "ip2p.test"
        {workers}
        [auth]
        users = [{{ name = "alice", password = "wonderland" }}, {{ name = "bob", password = "builder" }}]
        secrets = ["rest-secret-for-tests"]
        {auth}
        [peers]
        allow = ["127.0.0.2/32"]
        {extra}
        "#
    );
    ip2p_tests::start_node(datapath, &text)
}

fn server(node: &Node) -> SocketAddr {
    node.local_addrs()[0]
}

fn binding_reports_the_reflexive_address(dp: DatapathKind) {
    let node = start(dp, "");
    let mut c = Client::new(server(&node), "", "").unwrap();
    assert_eq!(c.binding().unwrap(), c.local_addr().unwrap());
}

fn send_and_data_indications(dp: DatapathKind) {
    let node = start(dp, "");
    let p = peer();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    assert_eq!(c.lifetime, Some(600));
    assert_eq!(c.mapped, Some(c.local_addr().unwrap()));
    c.create_permission(&[p.local_addr().unwrap()]).unwrap();
    c.send_indication(p.local_addr().unwrap(), b"hello peer").unwrap();
    let (data, from) = recv(&p);
    assert_eq!((data.as_slice(), from), (&b"hello peer"[..], relayed));
    p.send_to(b"hello client", relayed).unwrap();
    let got = c.recv(WAIT).unwrap();
    assert_eq!(got, Some(Received::Data { peer: p.local_addr().unwrap(), data: b"hello client".to_vec() }));
}

fn channels_both_ways(dp: DatapathKind) {
    let node = start(dp, "");
    let p = peer();
    let paddr = p.local_addr().unwrap();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4001, paddr).unwrap();
    for size in [0, 1, 3, 100, 1200, 8000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        c.send_channel(0x4001, &payload).unwrap();
        let (data, from) = recv(&p);
        assert_eq!(from, relayed);
        assert!(data == payload, "size {size}: the peer got {} bytes", data.len());
        p.send_to(&payload, relayed).unwrap();
        let got = c.recv(WAIT).unwrap();
        assert!(got == Some(Received::Channel { channel: 0x4001, data: payload }), "size {size} back");
    }
}

fn two_clients_relay_to_each_other(dp: DatapathKind) {
    let node = start(dp, "");
    let mut a = Client::new(server(&node), "alice", "wonderland").unwrap();
    let mut b = Client::new(server(&node), "bob", "builder").unwrap();
    let ra = a.allocate(None).unwrap();
    let rb = b.allocate(None).unwrap();
    a.channel_bind(0x4000, rb).unwrap();
    b.channel_bind(0x4000, ra).unwrap();
    for i in 0..20u8 {
        a.send_channel(0x4000, &[i; 50]).unwrap();
        assert_eq!(b.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4000, data: vec![i; 50] }));
        b.send_channel(0x4000, &[i; 60]).unwrap();
        assert_eq!(a.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4000, data: vec![i; 60] }));
    }
}

fn refresh_and_deallocate(dp: DatapathKind) {
    let node = start(dp, "");
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    c.allocate(Some(1200)).unwrap();
    assert_eq!(c.lifetime, Some(1200));
    assert_eq!(c.refresh(Some(100_000)).unwrap(), 3600);
    assert_eq!(node.allocations(), 1);
    assert_eq!(c.refresh(Some(0)).unwrap(), 0);
    assert_eq!(node.allocations(), 0);
    assert_eq!(c.refresh(None).unwrap_err().code(), Some(437));
}

fn expiry_closes_the_allocation(dp: DatapathKind) {
    let node = start(dp, "[allocation]\ndefault_lifetime = 1\nmax_lifetime = 1");
    let p = peer();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.create_permission(&[p.local_addr().unwrap()]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(node.allocations(), 0);
    assert_eq!(c.refresh(None).unwrap_err().code(), Some(437));
    // The relay socket is gone: nothing comes back through it.
    p.send_to(b"late", relayed).unwrap();
    assert_eq!(c.recv(Duration::from_millis(200)).unwrap(), None);
    assert!(node.stats().iter().map(|s| s.turn.allocations_expired).sum::<u64>() >= 1);
}

fn credentials_and_nonces(dp: DatapathKind) {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let node = start_with(dp, "", "nonce_lifetime = 1", "");
    let mut wrong = Client::new(server(&node), "alice", "nope").unwrap();
    assert_eq!(wrong.allocate(None).unwrap_err().code(), Some(401));

    let user =
        format!("{}:web", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600);
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"rest-secret-for-tests").unwrap();
    mac.update(user.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut rest = Client::new(server(&node), &user, &password).unwrap();
    rest.allocate(None).unwrap();
    // The nonce lives 1 s: the next request gets 438, and the client's
    // retry with the fresh nonce succeeds.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(rest.refresh(None).unwrap(), 600);
    // A REST username past its expiry, however well signed, gets 401.
    let old = "1000:web";
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"rest-secret-for-tests").unwrap();
    mac.update(old.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(Client::new(server(&node), old, &password).unwrap().allocate(None).unwrap_err().code(), Some(401));
    let mut failures = ip2p_turn::AuthFailures::default();
    for s in node.stats() {
        failures.add(&s.turn.auth_failures);
    }
    let expected = ip2p_turn::AuthFailures { bad_integrity: 1, stale_nonce: 1, expired: 1, ..Default::default() };
    assert_eq!(failures, expected, "the wrong password, the stale nonce, the expired username");
}

fn denied_peers_and_quotas(dp: DatapathKind) {
    let node = start(dp, "[allocation]\nuser_quota = 1");
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    c.allocate(None).unwrap();
    // 127.0.0.3 is loopback and not in the allow list; 127.0.0.1 is this
    // host's (the listener's) own address.
    for denied in ["127.0.0.3:9", &server(&node).to_string()] {
        let denied: SocketAddr = denied.parse().unwrap();
        assert_eq!(c.create_permission(&[denied]).unwrap_err().code(), Some(403), "{denied}");
        assert_eq!(c.channel_bind(0x4000, denied).unwrap_err().code(), Some(403), "{denied}");
    }
    let mut second = Client::new(server(&node), "alice", "wonderland").unwrap();
    assert_eq!(second.allocate(None).unwrap_err().code(), Some(486));
    let mut other = Client::new(server(&node), "bob", "builder").unwrap();
    other.allocate(None).unwrap();
}

fn unpermitted_peers_are_dropped_and_counted(dp: DatapathKind) {
    let node = start(dp, "");
    let p = peer();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    p.send_to(b"unsolicited", relayed).unwrap();
    assert_eq!(c.recv(Duration::from_millis(300)).unwrap(), None);
    let dropped: u64 = node.stats().iter().map(|s| s.turn.dropped.no_permission).sum();
    assert_eq!(dropped, 1);
}

/// `allocation.bandwidth` lets a second's worth through at once and drops
/// (and counts) the rest of a burst.
fn bandwidth_limit_drops_the_excess(dp: DatapathKind) {
    let node = start(dp, "[allocation]\nbandwidth = 5000");
    let p = peer();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    c.allocate(None).unwrap();
    c.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    for _ in 0..20 {
        c.send_channel(0x4000, &[9; 1000]).unwrap();
    }
    let mut received = 0;
    p.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 2048];
    while p.recv_from(&mut buf).is_ok() {
        received += 1;
    }
    let dropped: u64 = node.stats().iter().map(|s| s.turn.dropped.rate_limit).sum();
    // Five in the burst; a sixth if sending took over 200 ms.
    assert!((5..=6).contains(&received), "{received} passed");
    assert_eq!(received + dropped, 20);
}

/// The worker that owns a relayed port with the default range
/// (49152-65535) split between two workers.
fn owner_of_two(relayed: SocketAddr) -> usize {
    usize::from(relayed.port() >= 57344)
}

/// Pairs of clients of one node: every packet takes the local
/// short-circuit, whether both relayed addresses are on one worker or on
/// two, and arrives framed for its receiver.
fn client_pairs_on_one_node(dp: DatapathKind, workers: usize, extra: &str) {
    let node = start_with(dp, &format!("workers = {workers}"), "", extra);
    let mut pairs = Vec::new();
    let mut ips = std::collections::HashSet::new();
    // With two workers, pairs until some are split and some are not.
    let (mut split, mut together) = (0, 0);
    while pairs.len() < 6 || (workers == 2 && (split < 2 || together < 1) && pairs.len() < 40) {
        let mut a = Client::new(server(&node), "alice", "wonderland").unwrap();
        let mut b = Client::new(server(&node), "bob", "builder").unwrap();
        let (ra, rb) = (a.allocate(None).unwrap(), b.allocate(None).unwrap());
        ips.extend([ra.ip(), rb.ip()]);
        if owner_of_two(ra) == owner_of_two(rb) {
            together += 1;
        } else {
            split += 1;
        }
        a.channel_bind(0x4000, rb).unwrap();
        b.create_permission(&[ra]).unwrap();
        pairs.push((a, b, ra));
    }
    if workers == 2 {
        assert!(split >= 2 && together >= 1, "{split} split, {together} together");
    }
    for round in 0..20u8 {
        for (a, b, ra) in &mut pairs {
            a.send_channel(0x4000, &[round; 200]).unwrap();
            match b.recv(WAIT).unwrap() {
                Some(Received::Data { peer, data }) => assert_eq!((peer, data), (*ra, vec![round; 200])),
                other => panic!("{other:?}"),
            }
        }
    }
    // And back, over a channel B binds.
    for (a, b, ra) in &mut pairs {
        b.channel_bind(0x4001, *ra).unwrap();
        b.send_channel(0x4001, b"back").unwrap();
        match a.recv(WAIT).unwrap() {
            Some(Received::Channel { channel, data }) => assert_eq!((channel, &data[..]), (0x4000, &b"back"[..])),
            other => panic!("{other:?}"),
        }
    }
    let stats = node.stats();
    let short: u64 = stats.iter().map(|s| s.turn.short_circuited).sum();
    let relayed: u64 = stats.iter().map(|s| s.turn.to_peer_packets).sum();
    let delivered: u64 = stats.iter().map(|s| s.turn.to_client_packets).sum();
    assert_eq!(relayed, pairs.len() as u64 * 21);
    assert_eq!((short, delivered), (relayed, relayed), "every packet short-circuited and delivered");
    if extra.contains("127.0.0.2") {
        assert_eq!(ips.len(), 2, "both relay addresses in use");
    }
}

/// Two clients whose allocations live on different workers of a node
/// with two.
fn a_pair_across_workers(node: &Node) -> (Client, Client, SocketAddr, SocketAddr) {
    for _ in 0..40 {
        let mut a = Client::new(server(node), "alice", "wonderland").unwrap();
        let mut b = Client::new(server(node), "bob", "builder").unwrap();
        let (ra, rb) = (a.allocate(None).unwrap(), b.allocate(None).unwrap());
        if owner_of_two(ra) != owner_of_two(rb) {
            return (a, b, ra, rb);
        }
    }
    panic!("no pair across the workers in 40 tries");
}

/// A packet between clients on two workers is delivered by the sender's
/// worker as the destination's allocation says: its permissions and
/// channels, counted once each way; under a bandwidth limit the
/// destination's bucket decides (through its owner).
fn across_workers_the_destination_decides(dp: DatapathKind, bandwidth: bool) {
    let node = start(dp, if bandwidth { "[allocation]\nbandwidth = 5000" } else { "" });
    let (mut a, mut b, ra, rb) = a_pair_across_workers(&node);
    let sum = |f: fn(&ip2p_turn::Stats) -> u64| node.stats().iter().map(|s| f(&s.turn)).sum::<u64>();
    a.channel_bind(0x4000, rb).unwrap();
    let quiet = Duration::from_millis(200);
    // No permission on B's side: nothing arrives.
    for i in 0..3u8 {
        a.send_channel(0x4000, &[i; 100]).unwrap();
    }
    assert_eq!(b.recv(quiet).unwrap(), None);
    assert_eq!(sum(|s| s.dropped.no_permission), 3);
    if bandwidth {
        // B's bucket (5,000 B/s, a second's burst) emptied by a peer
        // outside: A's packets (A's own bucket full) are dropped at B's.
        let p = peer();
        b.create_permission(&[ra, p.local_addr().unwrap()]).unwrap();
        for _ in 0..5 {
            p.send_to(&[1; 1000], rb).unwrap();
            assert!(matches!(b.recv(WAIT).unwrap(), Some(Received::Data { .. })));
        }
        for _ in 0..3 {
            a.send_channel(0x4000, &[2; 1000]).unwrap();
        }
        assert_eq!(b.recv(quiet).unwrap(), None);
        assert_eq!(sum(|s| s.dropped.rate_limit), 3);
        assert_eq!(sum(|s| s.to_owner), 6, "under a limit the owner decides every crossing");
        return;
    }
    // A permission: Data indications from A's relayed address.
    b.create_permission(&[ra]).unwrap();
    a.send_channel(0x4000, b"data").unwrap();
    assert_eq!(b.recv(WAIT).unwrap(), Some(Received::Data { peer: ra, data: b"data".to_vec() }));
    // A channel: ChannelData on B's number.
    b.channel_bind(0x4001, ra).unwrap();
    for i in 0..10u8 {
        a.send_channel(0x4000, &[i; 300]).unwrap();
        assert_eq!(b.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4001, data: vec![i; 300] }));
    }
    // Counted once each way, as crossings, none through an inbox.
    assert_eq!((sum(|s| s.to_peer_packets), sum(|s| s.to_client_packets)), (14, 11));
    assert_eq!((sum(|s| s.short_circuited), sum(|s| s.crossed), sum(|s| s.to_owner)), (14, 14, 0));
    assert_eq!(sum(|s| s.to_client_bytes), 4 + 3000);
}

/// With `busy_poll_us`, a worker relays as usual, polls for a while after
/// work, and then sleeps: an idle relay does not spin.
fn busy_polling_relays_then_sleeps(dp: DatapathKind) {
    let node = start_with(dp, "workers = 1\nbusy_poll_us = 2000", "", "");
    let p = peer();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    for i in 0..50u8 {
        c.send_channel(0x4000, &[i; 64]).unwrap();
        assert_eq!(recv(&p), (vec![i; 64], relayed));
    }
    std::thread::sleep(Duration::from_millis(100));
    let cpu = || node.stats()[0].cpu;
    let before = cpu();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu() - before;
    // A spinning worker would use about the whole second.
    assert!(used < Duration::from_millis(250), "an idle worker used {used:?} of CPU in 1 s");
}

fn many_clients_at_once(dp: DatapathKind) {
    let node = start(dp, "");
    let p = peer();
    let paddr = p.local_addr().unwrap();
    let mut clients: Vec<Client> = (0..60).map(|_| Client::new(server(&node), "bob", "builder").unwrap()).collect();
    let mut relayed = Vec::new();
    for c in &mut clients {
        relayed.push(c.allocate(None).unwrap());
        c.channel_bind(0x4abc, paddr).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_channel(0x4abc, &(i as u32).to_be_bytes()).unwrap();
    }
    let mut seen = vec![false; clients.len()];
    for _ in 0..clients.len() {
        let (data, from) = recv(&p);
        let i = u32::from_be_bytes(data.try_into().unwrap()) as usize;
        assert_eq!(from, relayed[i]);
        seen[i] = true;
    }
    assert!(seen.iter().all(|s| *s));
    let per_worker: Vec<usize> = node.stats().iter().map(|s| s.allocations).collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 60);
}

/// A burst far larger than the receive buffers (2 here): some datagrams may
/// be lost, as on any full queue, but the allocation and later traffic are
/// not. On io_uring the buffers do run out (and are re-armed).
fn burst_beyond_the_buffers(dp: DatapathKind) {
    let node = start_with(dp, "io_uring_buffers = 2", "", "");
    let p = peer();
    let paddr = p.local_addr().unwrap();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4002, paddr).unwrap();
    let burst = [7u8; 200];
    for _ in 0..5000 {
        p.send_to(&burst, relayed).unwrap();
    }
    // Drain what made it through, then check the path still works.
    let mut delivered = 0;
    while let Some(Received::Channel { channel: 0x4002, .. }) = c.recv(Duration::from_millis(300)).unwrap() {
        delivered += 1;
    }
    assert!(delivered > 0);
    for i in 0..10u8 {
        c.send_channel(0x4002, &[i; 10]).unwrap();
        assert_eq!(recv(&p), (vec![i; 10], relayed));
        p.send_to(&[i; 20], relayed).unwrap();
        assert_eq!(c.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4002, data: vec![i; 20] }));
    }
    assert_eq!(node.allocations(), 1);
    if dp == DatapathKind::IoUring {
        let exhausted: u64 = node.stats().iter().map(|s| s.out_of_buffers).sum();
        assert!(exhausted > 0, "the burst should have used up the buffers ({delivered} delivered)");
    }
}

/// Sends to a peer that is gone (its port answers with ICMP unreachable)
/// are the peer's problem: the allocation's traffic to others goes on.
fn a_gone_peer_does_not_disturb_the_others(dp: DatapathKind) {
    let node = start(dp, "");
    let gone = peer();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let alive = peer();
    let mut c = Client::new(server(&node), "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4010, gone_addr).unwrap();
    c.channel_bind(0x4011, alive.local_addr().unwrap()).unwrap();
    for i in 0..50u8 {
        c.send_channel(0x4010, &[i; 100]).unwrap();
        c.send_channel(0x4011, &[i; 100]).unwrap();
        assert_eq!(recv(&alive), (vec![i; 100], relayed));
    }
    alive.send_to(b"still here", relayed).unwrap();
    assert_eq!(c.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4011, data: b"still here".to_vec() }));
    assert_eq!(c.refresh(None).unwrap(), 600);
}

/// RFC 8656 §7.2: EVEN-PORT with R gives port N and reserves N+1, which is
/// bound from then on (no other socket on the host can take it), and
/// becomes the relayed address of the Allocate that presents the token.
fn even_port_reservations_hold_the_next_port(dp: DatapathKind) {
    let node = start(dp, "");
    let mut rtp = Client::new(server(&node), "alice", "wonderland").unwrap();
    let (relayed, token) = rtp.allocate_even_pair().unwrap();
    assert_eq!(relayed.port() % 2, 0);
    let next = SocketAddr::new(relayed.ip(), relayed.port() + 1);
    assert_eq!(UdpSocket::bind(next).unwrap_err().kind(), std::io::ErrorKind::AddrInUse, "N+1 is held");
    let mut rtcp = Client::new(server(&node), "bob", "builder").unwrap();
    assert_eq!(rtcp.allocate_reserved(token).unwrap(), next);
    let p = peer();
    rtcp.channel_bind(0x4001, p.local_addr().unwrap()).unwrap();
    rtcp.send_channel(0x4001, b"rtcp out").unwrap();
    assert_eq!(recv(&p), (b"rtcp out".to_vec(), next));
    p.send_to(b"rtcp in", next).unwrap();
    assert_eq!(rtcp.recv(WAIT).unwrap(), Some(Received::Channel { channel: 0x4001, data: b"rtcp in".to_vec() }));
    let mut again = Client::new(server(&node), "alice", "wonderland").unwrap();
    assert_eq!(again.allocate_reserved(token).unwrap_err().code(), Some(508), "a token is used once");
}

on_both_datapaths! {
    binding: binding_reports_the_reflexive_address();
    send_and_data: send_and_data_indications();
    channels: channels_both_ways();
    client_to_client: two_clients_relay_to_each_other();
    refresh: refresh_and_deallocate();
    expiry: expiry_closes_the_allocation();
    credentials: credentials_and_nonces();
    policy_and_quota: denied_peers_and_quotas();
    unpermitted_peer: unpermitted_peers_are_dropped_and_counted();
    bandwidth_limit: bandwidth_limit_drops_the_excess();
    pairs_on_one_worker: client_pairs_on_one_node(1, "");
    pairs_across_workers: client_pairs_on_one_node(2, "");
    across_workers_the_destination_decides: across_workers_the_destination_decides(false);
    across_workers_under_a_bandwidth_limit: across_workers_the_destination_decides(true);
    pairs_on_two_relay_addresses: client_pairs_on_one_node(2, "[relay]\nips = [\"127.0.0.1\", \"127.0.0.3\"]");
    busy_poll: busy_polling_relays_then_sleeps();
    many_clients: many_clients_at_once();
    burst: burst_beyond_the_buffers();
    even_port_reservation: even_port_reservations_hold_the_next_port();
    gone_peer: a_gone_peer_does_not_disturb_the_others();
}
