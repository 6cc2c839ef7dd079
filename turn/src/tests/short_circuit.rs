//! The local short-circuit: between allocations of one worker, and across
//! workers of one node (the owner's state obeyed without the owner, or its
//! inbox when it must decide).

use super::harness::*;

/// Two workers of one node, owning half of the test's ports each, with
/// `tweak` applied to both configurations.
fn two_workers_with(tweak: impl Fn(&mut Config)) -> (Harness, Harness) {
    let shared = Arc::new(NodeState::new(Quotas::default()));
    // One clock for the node.
    let now = crate::testing::t0();
    let worker = |id: u16, ports| {
        let mut cfg = config();
        cfg.ports = ports;
        tweak(&mut cfg);
        let mut h = Harness::new();
        h.now = now;
        h.server = Server::new(Arc::new(cfg), shared.clone(), h.now, UNIX0, u64::from(id)).on_worker(id);
        h
    };
    (worker(0, 50000..=50049), worker(1, 50050..=50099))
}

fn two_workers() -> (Harness, Harness) {
    two_workers_with(|_| {})
}

/// A client of worker `a` sends `packet` to a relayed address of worker
/// `b`, which gets it through its inbox: what `b` does with it (ranges
/// into the returned buffer).
fn across(a: &mut Harness, b: &mut Harness, from: &str, packet: &[u8]) -> (Result<Transmit, DropReason>, Vec<u8>) {
    let (v, mut buf) = a.send_through_node(from, packet);
    let Verdict::ToOwner(ToOwner { worker, from, transmit }) = v else { panic!("not handed over: {v:?}") };
    assert_eq!(worker, 1);
    let data = PEER_HEADROOM..buf.len() - PEER_TAILROOM;
    (b.server.handle_inbox(b.now, transmit.to, from, &mut buf, data), buf)
}

/// A client of worker `a` sends `packet` to a relayed address of another
/// worker, which `a` delivers itself: what it sends (ranges into the
/// returned buffer), or why not.
fn direct(a: &mut Harness, from: &str, packet: &[u8]) -> (Result<Transmit, DropReason>, Vec<u8>) {
    match a.send_through_node(from, packet) {
        (Verdict::Forward(t), buf) => (Ok(t), buf),
        (Verdict::Drop(reason), buf) => (Err(reason), buf),
        (v, _) => panic!("not delivered by the sender: {v:?}"),
    }
}

#[test]
fn the_local_short_circuit_enforces_permissions_and_channels_both_ways() {
    const B: &str = "127.0.0.1:40002";
    let mut h = Harness::new();
    let c = Harness::alice();
    let ra = h.allocate(CLIENT, &c);
    let rb = h.allocate(B, &c);
    let peer = |a: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(a));
    let bind = |n: u16, a: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(a)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let a_to_b = write_channel_data(&mut cd, 0x4000, b"hi", Transport::Datagram).unwrap();
    let a_to_b = cd[..a_to_b].to_vec();

    // B has no permission for A's relayed address: dropped on B's side,
    // as a datagram from outside would be.
    assert_eq!(h.send_through_node(CLIENT, &a_to_b).0, Verdict::Drop(DropReason::NoPermission));

    // With one, B gets a Data indication from A's relayed address.
    assert_eq!(h.authed(B, Method::CREATE_PERMISSION, &[peer(ra)], &c).class(), Class::Success);
    let (v, buf) = h.send_through_node(CLIENT, &a_to_b);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!((t.via, t.to), (Via::Listener(ListenerId::udp(0)), addr(B)));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.message_type(), MessageType::new(Method::DATA, Class::Indication));
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(ra)));
    assert_eq!(m.get::<Data>().unwrap(), Some(Data(b"hi")));

    // With a channel to A, ChannelData; and back from B to A the same way.
    assert_eq!(h.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let (v, buf) = h.send_through_node(CLIENT, &a_to_b);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4001, &b"hi"[..]));
    let len = write_channel_data(&mut cd, 0x4001, b"yo", Transport::Datagram).unwrap();
    let (v, buf) = h.send_through_node(B, &cd[..len]);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!(t.to, addr(CLIENT));
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4000, &b"yo"[..]));
    // Without room around the payload (a stream's frame), it goes to this
    // worker's own inbox, and from there to B as before.
    let Verdict::ToOwner(ToOwner { worker, from, transmit }) = h.send(CLIENT, &a_to_b) else { panic!() };
    assert_eq!((worker, from, transmit.to, transmit.range), (0, ra, rb, 4..6));
    let mut buf = vec![0u8; PEER_HEADROOM + 2 + PEER_TAILROOM];
    buf[PEER_HEADROOM..PEER_HEADROOM + 2].copy_from_slice(b"hi");
    let t = h.server.handle_inbox(h.now, rb, from, &mut buf, PEER_HEADROOM..PEER_HEADROOM + 2).unwrap();
    assert_eq!(ChannelData::parse(&buf[t.range]).unwrap().channel(), 0x4001);

    // Expiry: A refreshes its permission, B does not; after 300 s A's
    // packets leave A and stop at B.
    h.advance(240);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer(rb)], &c).class(), Class::Success);
    h.advance(60);
    assert_eq!(h.send_through_node(CLIENT, &a_to_b).0, Verdict::Drop(DropReason::NoPermission));
    let stats = h.server.stats();
    assert_eq!(stats.short_circuited, 6, "every packet to a local relayed address");
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (6, 4), "relayed counts on both sides");
    assert_eq!(stats.dropped.no_permission, 2);

    // A peer elsewhere goes out through the relay socket.
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, PEER, b"out");
    let (v, _) = h.send_through_node(CLIENT, &send);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert!(matches!(t.via, Via::Relay(_)) && t.to == addr(PEER));
    // Once B's allocation is gone, its address is just a port of this
    // host (anything may bind it now): never sent to.
    assert_eq!(h.authed(B, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, &rb.to_string(), b"gone");
    let (v, _) = h.send_through_node(CLIENT, &send);
    assert_eq!(v, Verdict::Drop(DropReason::DeniedAddress));
}

#[test]
fn the_short_circuit_across_workers_obeys_the_owners_state_without_the_owner() {
    const B: &str = "127.0.0.1:40002";
    let (mut a, mut b) = two_workers();
    let c = Harness::alice();
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    let bind = |n: u16, x: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(x)];
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"hi", Transport::Datagram).unwrap();
    let a_to_b = cd[..len].to_vec();

    // No permission on B's side: dropped by A, as B would.
    assert_eq!(direct(&mut a, CLIENT, &a_to_b).0, Err(DropReason::NoPermission));
    // A permission: a Data indication from A's relayed address, sent by A
    // from its own socket of B's listener to B's client.
    assert_eq!(b.authed(B, Method::CREATE_PERMISSION, &[peer(ra)], &c).class(), Class::Success);
    let (v, buf) = direct(&mut a, CLIENT, &a_to_b);
    let t = v.unwrap();
    assert_eq!((t.via, t.to), (Via::Listener(b.listener), addr(B)));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(ra)));
    assert_eq!(m.get::<Data>().unwrap(), Some(Data(b"hi")));
    // A channel: ChannelData.
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let (v, buf) = direct(&mut a, CLIENT, &a_to_b);
    let t = v.unwrap();
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4001, &b"hi"[..]));
    // B's permission expires (A keeps refreshing its own): dropped, though
    // B's channel (10 minutes) is still bound.
    for h in [&mut a, &mut b] {
        h.advance(240);
    }
    assert_eq!(a.authed(CLIENT, Method::CREATE_PERMISSION, &[peer(rb)], &c).class(), Class::Success);
    for h in [&mut a, &mut b] {
        h.advance(60);
    }
    assert_eq!(direct(&mut a, CLIENT, &a_to_b).0, Err(DropReason::NoPermission));
    // A refresh of B's permission is seen at once.
    assert_eq!(b.authed(B, Method::CREATE_PERMISSION, &[peer(ra)], &c).class(), Class::Success);
    assert!(direct(&mut a, CLIENT, &a_to_b).0.is_ok());
    // Counted as relayed on both sides and short-circuited, all by A; B
    // was never asked.
    let (sa, sb) = (a.server.stats().clone(), b.server.stats().clone());
    assert_eq!((sa.to_peer_packets, sa.to_client_packets, sa.short_circuited), (5, 3, 5));
    assert_eq!((sa.crossed, sa.to_owner, sa.dropped.no_permission), (5, 0, 2));
    assert_eq!((sb.to_peer_packets, sb.to_client_packets, sb.short_circuited, sb.dropped.no_permission), (0, 0, 0, 0));
    // Each session counts what reached the other: A's sent, B's received
    // (counted by A into B's view).
    let three = |to: bool| Usage {
        packets_to_peers: if to { 3 } else { 0 },
        bytes_to_peers: if to { 6 } else { 0 },
        packets_from_peers: if to { 0 } else { 3 },
        bytes_from_peers: if to { 0 } else { 6 },
    };
    assert_eq!(a.server.sessions(a.now)[0].usage, three(true));
    assert_eq!(b.server.sessions(b.now)[0].usage, three(false));

    // Once B's allocation is gone, A finds no live relayed address there
    // and sends nothing (the port is the host's, whatever binds it next).
    assert_eq!(b.authed(B, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    let (v, _) = a.send_through_node(CLIENT, &a_to_b);
    assert_eq!(v, Verdict::Drop(DropReason::DeniedAddress));
}

#[test]
fn the_short_circuit_across_workers_ends_with_the_owners_allocation() {
    const B: &str = "127.0.0.1:40002";
    let (mut a, mut b) = two_workers();
    let c = Harness::alice();
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    let bind = |n: u16, x: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(x)];
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"hi", Transport::Datagram).unwrap();
    // A keeps its allocation, permission and channel fresh; B does not,
    // and B's timer has not run yet when its allocation lapses: A's look
    // at B's view already says so.
    for round in 0..3 {
        assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
        assert_eq!(a.authed(CLIENT, Method::REFRESH, &[], &c).class(), Class::Success);
        if round == 0 {
            assert!(direct(&mut a, CLIENT, &cd[..len]).0.is_ok());
        }
        if round < 2 {
            a.advance(300);
            b.now += Duration::from_secs(300);
        }
    }
    assert_eq!(direct(&mut a, CLIENT, &cd[..len]).0, Err(DropReason::NoAllocation));
    assert_eq!(a.server.stats().short_circuited, 1, "a drop for want of an allocation is not short-circuited");
    // Once B's timer runs, the port is just the host's.
    b.advance(0);
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).code(), Some(403));
    assert_eq!(a.send_through_node(CLIENT, &cd[..len]).0, Verdict::Drop(DropReason::DeniedAddress));
}

#[test]
fn what_needs_the_owner_goes_through_its_inbox() {
    const B: &str = "127.0.0.1:40002";
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    let bind = |n: u16, x: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(x)];
    let mut cd = [0u8; 1100];
    let len = write_channel_data(&mut cd, 0x4000, &[7; 1000], Transport::Datagram).unwrap();
    let a_to_b = cd[..len].to_vec();

    // A bandwidth limit: the owner's buckets decide (1,000 B/s each way).
    let (mut a, mut b) = two_workers_with(|c| c.bandwidth = 1000);
    let c = Harness::alice();
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    assert!(across(&mut a, &mut b, CLIENT, &a_to_b).0.is_ok());
    a.advance(1); // A's bucket refills; B's does not (its clock stands still)
    assert_eq!(across(&mut a, &mut b, CLIENT, &a_to_b).0, Err(DropReason::RateLimit));
    assert_eq!((a.server.stats().crossed, a.server.stats().to_owner), (2, 2));
    assert_eq!(b.server.stats().dropped.rate_limit, 1);

    // A stream client: only its owner holds its connection.
    let (mut a, mut b) = two_workers();
    b.listener = ListenerId::stream(0);
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let (v, _) = across(&mut a, &mut b, CLIENT, &a_to_b);
    assert_eq!(v.unwrap().via, Via::Listener(ListenerId::stream(0)));
}

#[test]
fn several_relay_addresses_take_turns_and_short_circuit_on_each() {
    // Two ports on each of two addresses: four allocations, then 508.
    let mut cfg = config();
    let (ip1, ip2): (std::net::IpAddr, std::net::IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    cfg.relay_ips[0] = vec![RelayIp { bind: ip1, external: None }, RelayIp { bind: ip2, external: None }];
    cfg.ports = 50000..=50001;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let clients = ["127.0.0.1:40001", "127.0.0.1:40002", "127.0.0.1:40003", "127.0.0.1:40004"];
    let relayed: Vec<SocketAddr> = clients.iter().map(|from| h.allocate(from, &c)).collect();
    assert_eq!(relayed.iter().filter(|a| a.ip() == ip2).count(), 2, "{relayed:?}");
    assert_eq!(relayed.iter().collect::<HashSet<_>>().len(), 4);
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:40005", Method::ALLOCATE, &udp, &c).code(), Some(508));

    // A relayed address on the second IP is found by the short-circuit.
    let (a, b) = (relayed[0], *relayed.iter().find(|r| r.ip() != relayed[0].ip()).unwrap());
    let b_client = clients[relayed.iter().position(|r| *r == b).unwrap()];
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    assert_eq!(h.authed(clients[0], Method::CREATE_PERMISSION, &[peer(b)], &c).class(), Class::Success);
    assert_eq!(h.authed(b_client, Method::CREATE_PERMISSION, &[peer(a)], &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, &b.to_string(), b"across addresses");
    let (v, buf) = h.send_through_node(clients[0], &send);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!(t.to, addr(b_client));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(a)));
    assert_eq!(h.server.stats().short_circuited, 1);
}

#[test]
fn the_local_short_circuit_can_be_turned_off() {
    let mut cfg = config();
    cfg.short_circuit = false;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let rb = h.allocate("127.0.0.1:40002", &c);
    let permit = [Attribute::XorPeerAddress(XorPeerAddress(rb))];
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &permit, &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, &rb.to_string(), b"x");
    let (v, _) = h.send_through_node(CLIENT, &send);
    assert!(matches!(v, Verdict::Forward(Transmit { via: Via::Relay(_), .. })), "{v:?}");
    assert_eq!(h.server.stats().short_circuited, 0);
}
