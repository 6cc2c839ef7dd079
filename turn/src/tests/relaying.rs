//! Relaying: permissions, channels, Send and Data indications both ways,
//! the bandwidth limit, clients over a stream, channel number ranges, and
//! this node's own relayed addresses as peers.

use super::harness::*;

#[test]
fn permissions_gate_peer_traffic_both_ways() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();

    // Without a permission, nothing passes either way.
    let (v, _) = h.peer_sends(token, PEER, b"hi");
    assert_eq!(v, Err(DropReason::NoPermission));
    let tid = h.tid();
    let send = h.build_send(tid, PEER, b"hello");
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::NoPermission));

    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER), peer_attr("[::1]:9")], &c);
    assert_eq!(r.code(), Some(443), "an IPv6 peer needs an IPv6 relayed address");
    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER), peer_attr("127.0.0.3:1")], &c);
    assert_eq!(r.code(), Some(403), "127.0.0.3 is not allowed");
    let (v, _) = h.peer_sends(token, PEER, b"hi");
    assert_eq!(v, Err(DropReason::NoPermission), "a refused request installs nothing");
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[], &c).code(), Some(400));
    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c);
    assert_eq!(r.class(), Class::Success);

    // Send indication: forwarded where the DATA value lies.
    let v = h.send(CLIENT, &send);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!((t.via, t.to), (Via::Relay(token), addr(PEER)));
    assert_eq!(&send[t.range], b"hello");

    // A peer datagram (any port of the permitted IP) becomes a Data indication.
    let (v, buf) = h.peer_sends(token, "127.0.0.2:7777", b"world!");
    let Ok(t) = v else { panic!("{v:?}") };
    assert_eq!((t.via, t.to), (Via::Listener(ListenerId::udp(0)), addr(CLIENT)));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.message_type(), MessageType::new(Method::DATA, Class::Indication));
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(addr("127.0.0.2:7777"))));
    assert_eq!(m.get::<Data>().unwrap(), Some(Data(b"world!")));

    // Permissions last 300 s.
    h.advance(299);
    assert!(h.peer_sends(token, PEER, b"x").0.is_ok());
    h.advance(1);
    assert_eq!(h.peer_sends(token, PEER, b"x").0, Err(DropReason::NoPermission));
    let stats = h.server.stats();
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (1, 2));
    assert_eq!(stats.dropped.no_permission, 4);
}

#[test]
fn bandwidth_is_limited_per_allocation_and_direction() {
    let mut cfg = config();
    cfg.bandwidth = 1000; // bytes a second, each way
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    let mut cd = [0u8; 512];
    let len = write_channel_data(&mut cd, 0x4000, &[7; 400], Transport::Datagram).unwrap();

    // A second's worth comes at once: two 400-byte packets, not three.
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::RateLimit));
    // The other direction has its own budget.
    assert!(h.peer_sends(token, PEER, &[1; 900]).0.is_ok());
    assert_eq!(h.peer_sends(token, PEER, &[1; 200]).0, Err(DropReason::RateLimit));
    // Half a second later, half a second's worth more (but the Send
    // indication path counts as well).
    h.now += Duration::from_millis(500);
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::RateLimit));
    let tid = h.tid();
    let send = h.build_send(tid, PEER, &[3; 400]);
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::RateLimit));
    assert!(h.peer_sends(token, PEER, &[1; 600]).0.is_ok());
    // Idle time banks at most one second's worth.
    h.now += Duration::from_secs(60);
    assert!(matches!(h.send(CLIENT, &send), Verdict::Forward(_)));
    assert!(matches!(h.send(CLIENT, &send), Verdict::Forward(_)));
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::RateLimit));
    let stats = h.server.stats();
    assert_eq!(stats.dropped.rate_limit, 5);
    assert_eq!((stats.to_peer_packets, stats.to_peer_bytes), (5, 2000));
    assert_eq!((stats.to_client_packets, stats.to_client_bytes), (2, 1500));
}

#[test]
fn channels_bind_and_carry_data_both_ways() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();
    let bind = |n: u16, p: &'static str| [Attribute::ChannelNumber(ChannelNumber(n)), peer_attr(p)];

    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x3FFF, PEER), &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x5000, PEER), &c).code(), Some(400), "RFC 8656 range");
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &[peer_attr(PEER)], &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, "10.0.0.1:5"), &c).code(), Some(403));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    assert_eq!(
        h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(),
        Class::Success,
        "rebind refreshes"
    );
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, "127.0.0.2:7001"), &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4001, PEER), &c).code(), Some(400));

    // Client → peer: the ChannelData payload, in place.
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"ping", Transport::Datagram).unwrap();
    let Verdict::Forward(t) = h.send(CLIENT, &cd[..len]) else { panic!() };
    assert_eq!((t.via, t.to, &cd[t.range.clone()]), (Via::Relay(token), addr(PEER), &b"ping"[..]));
    let len = write_channel_data(&mut cd, 0x4001, b"ping", Transport::Datagram).unwrap();
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoChannel));
    assert_eq!(h.send("127.0.0.1:1", &cd[..len]), Verdict::Drop(DropReason::NoAllocation));

    // Peer → client: ChannelData framed in the headroom (the bind installed
    // the permission); another port of the same IP gets a Data indication.
    let (v, buf) = h.peer_sends(token, PEER, b"pong");
    let Ok(t) = v else { panic!() };
    assert_eq!(t.range.len(), 8);
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4000, &b"pong"[..]));
    let (v, buf) = h.peer_sends(token, "127.0.0.2:7001", b"pong");
    let Ok(t) = v else { panic!() };
    assert!(Message::parse(&buf[t.range]).is_ok());

    // The permission (300 s) lapses before the channel (600 s) does:
    // traffic stops until the client refreshes it.
    h.advance(300);
    let len = write_channel_data(&mut cd, 0x4000, b"ping", Transport::Datagram).unwrap();
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoPermission));
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &c).lifetime(), Some(600), "keep the allocation alive");
    h.advance(300);
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoChannel), "channel expired at 600 s");
    // Once expired, the number can go to another peer.
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, "127.0.0.2:7001"), &c).class(), Class::Success);
}

#[test]
fn stream_clients_get_padded_channel_data_and_lose_the_allocation_with_the_connection() {
    let mut h = Harness::new();
    h.listener = ListenerId::stream(3);
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    // Client → peer: padded ChannelData from a stream; the padding stays behind.
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"pin", Transport::Stream).unwrap();
    assert_eq!(len, 8);
    let Verdict::Forward(t) = h.send(CLIENT, &cd[..len]) else { panic!() };
    assert_eq!(&cd[t.range], b"pin");
    // Peer → client: padded to 4 bytes (RFC 8656 §12.5), on the stream listener.
    let (v, buf) = h.peer_sends(token, PEER, b"pon");
    let Ok(t) = v else { panic!() };
    assert_eq!((t.via, t.to, t.range.len()), (Via::Listener(ListenerId::stream(3)), addr(CLIENT), 8));
    assert_eq!(ChannelData::parse(&buf[t.range]).unwrap().data(), b"pon");
    // The connection closes: the allocation and its relay socket go.
    assert!(h.server.has_allocation(ListenerId::stream(3), addr(CLIENT)));
    h.server.client_closed(h.now, ListenerId::udp(3), addr(CLIENT), &mut h.sockets);
    assert_eq!(h.server.allocations(), 1, "another listener's 5-tuple is another client");
    h.server.client_closed(h.now, ListenerId::stream(3), addr(CLIENT), &mut h.sockets);
    assert_eq!(h.server.allocations(), 0);
    assert!(h.sockets.open.is_empty());
}

#[test]
fn rfc5766_channel_numbers_when_configured() {
    let mut cfg = config();
    cfg.channel_numbers = ChannelNumbers::Rfc5766;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let bind = |n: u16| [Attribute::ChannelNumber(ChannelNumber(n)), peer_attr(PEER)];
    // RFC 5766 §11: 0x4000 through 0x7FFF; coturn's clients pick any of them.
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x7FFF), &c).class(), Class::Success);
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x3FFF), &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x8000), &c).code(), Some(400));
    let other = [Attribute::ChannelNumber(ChannelNumber(0x569d)), peer_attr("127.0.0.2:7001")];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &other, &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x569d, b"rtcp", Transport::Datagram).unwrap();
    let Verdict::Forward(t) = h.send(CLIENT, &cd[..len]) else { panic!() };
    assert_eq!(&cd[t.range], b"rtcp");
    // Data on an unbound channel of either range is dropped.
    let len = write_channel_data(&mut cd, 0x5000, b"x", Transport::Datagram).unwrap();
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoChannel));
}

#[test]
fn live_relayed_addresses_of_this_node_are_peers() {
    let mut cfg = config();
    cfg.policy.allow.clear(); // 127.0.0.0/8 is denied, but for our live relayed addresses
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let a = h.allocate(CLIENT, &c);
    let b = h.allocate("127.0.0.1:40001", &creds("bob", "builder"));
    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(XorPeerAddress(b))], &c);
    assert_eq!(r.class(), Class::Success);
    assert_ne!(a, b);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr("127.0.0.3:5")], &c).code(), Some(403));
}
