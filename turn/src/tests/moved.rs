//! A handover: allocations exported by one core and adopted by the next
//! (another process, with the same relay sockets) keep their relayed
//! addresses, permissions, channels, lifetimes and credentials; what cannot
//! move says so, and what does not fit is refused whole.

use super::harness::*;

/// `h`'s allocations adopted by a new core at the same moment, with the
/// nonces `h`'s clients hold.
fn take_over(h: &Harness) -> Harness {
    let mut next = Harness::new();
    next.now = h.now;
    next.nonces = h.nonces.clone();
    for moved in h.server.export(h.now).moved {
        let moved = moved.try_map(|_, bound| {
            next.sockets.held.push(bound);
            Ok::<_, ()>(Held { addr: bound, socket: None })
        });
        next.server.adopt(next.now, moved.unwrap(), &mut next.sockets).unwrap();
    }
    next
}

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4 + data.len() + 3];
    let len = write_channel_data(&mut buf, channel, data, Transport::Datagram).unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn an_allocation_moves_with_its_permissions_channels_and_lifetime() {
    let mut h = Harness::new();
    let c = Harness::alice();
    let relayed = h.allocate(CLIENT, &c);
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    h.advance(100);

    let export = h.server.export(h.now);
    assert_eq!((export.moved.len(), export.staying), (1, 0));
    let moved = &export.moved[0];
    let relay = MovedRelay { socket: h.only_token(), bound: relayed, advertised: relayed };
    assert_eq!(moved.relays, [Some(relay), None]);
    assert_eq!(moved.lifetime, Duration::from_secs(500));
    assert_eq!(moved.permissions[0].lifetime, Duration::from_secs(200));
    assert_eq!(moved.channels[0].lifetime, Duration::from_secs(500));

    let mut next = take_over(&h);
    assert_eq!(next.server.allocations(), 1);
    assert_eq!(next.server.shared.quotas.of_user("alice"), 1, "counted against its user");
    // Both ways on the channel, without a new Allocate or ChannelBind.
    match next.send(CLIENT, &channel_data(0x4000, b"out")) {
        Verdict::Forward(t) => assert_eq!(t.to, addr(PEER)),
        other => panic!("{other:?}"),
    }
    let token = next.only_token();
    let (v, buf) = next.peer_sends(token, PEER, b"back");
    let t = v.unwrap();
    assert_eq!(t.to, addr(CLIENT));
    assert_eq!(ChannelData::parse(&buf[t.range]).unwrap().data(), b"back");
    // A Refresh with the nonce the client already holds.
    let nonce = next.nonces[CLIENT].clone();
    let r = next.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(600))], &c);
    assert_eq!((r.class(), &next.nonces[CLIENT]), (Class::Success, &nonce), "no new challenge");

    // The permission lapses when it would have (200 s left).
    next.advance(201);
    assert_eq!(next.send(CLIENT, &channel_data(0x4000, b"late")), Verdict::Drop(DropReason::NoPermission));
}

#[test]
fn the_lifetime_left_is_kept() {
    let mut h = Harness::new();
    h.allocate(CLIENT, &Harness::alice());
    h.advance(590);
    let mut next = take_over(&h);
    let token = next.only_token();
    next.advance(9);
    assert_eq!(next.server.allocations(), 1);
    next.advance(2);
    assert_eq!(next.server.allocations(), 0, "expired at 600 s, counted from the first process's start");
    assert_eq!(next.sockets.closed, [token]);
    assert_eq!(next.server.shared.quotas.total(), 0);
}

#[test]
fn what_cannot_move_stays_and_what_does_not_fit_is_refused_whole() {
    // A client over TCP: its UDP allocation moves (its connection with the
    // datapath); an RFC 6062 TCP allocation stays (its peer connections
    // cannot move).
    let mut h = Harness::new();
    h.listener = ListenerId::stream(0);
    h.allocate(CLIENT, &Harness::alice());
    let tcp = Attribute::RequestedTransport(ip2p_wire::attr::RequestedTransport::TCP);
    let r = h.authed("127.0.0.1:40001", Method::ALLOCATE, &[tcp], &Harness::alice());
    assert_eq!(r.class(), Class::Success);
    let export = h.server.export(h.now);
    assert_eq!((export.moved.len(), export.staying), (1, 1));
    assert_eq!(export.moved[0].listener, ListenerId::stream(0));
    let next = take_over(&h);
    assert!(next.server.has_allocation(ListenerId::stream(0), addr(CLIENT)));
    assert!(!next.server.has_allocation(ListenerId::udp(0), addr(CLIENT)));

    let mut h = Harness::new();
    h.allocate(CLIENT, &Harness::alice());
    let moved = h.server.export(h.now).moved.remove(0);
    let bound = moved.relays[0].unwrap().bound;
    let held = |addr| moved.clone().try_map(|_, _| Ok::<_, ()>(Held { addr, socket: None })).unwrap();
    let mut next = Harness::new();
    // A relay address this process does not have.
    let other: SocketAddr = "127.0.0.9:50001".parse().unwrap();
    let mut elsewhere = held(other);
    elsewhere.relays[0] = elsewhere.relays[0].take().map(|r| MovedRelay { bound: other, advertised: other, ..r });
    let r = next.server.adopt(next.now, elsewhere, &mut next.sockets);
    assert_eq!(r, Err(AdoptError::RelayAddress(other)));
    // A socket bound to another address than the relay's.
    let r = next.server.adopt(next.now, held(other), &mut next.sockets);
    assert!(matches!(r, Err(AdoptError::Socket(_))), "{r:?}");
    assert_eq!((next.server.allocations(), next.server.shared.quotas.total()), (0, 0), "nothing half-adopted");
    // Once, not twice.
    next.sockets.held.push(bound);
    next.server.adopt(next.now, held(bound), &mut next.sockets).unwrap();
    let r = next.server.adopt(next.now, held(bound), &mut next.sockets);
    assert_eq!(r, Err(AdoptError::Duplicate));
    assert_eq!(next.server.allocations(), 1);
}

/// Time spent between export and adoption comes off every lifetime; what
/// ran out meanwhile is left out.
#[test]
fn an_allocation_ages_on_the_way() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    h.advance(100);
    let moved = h.server.export(h.now).moved.remove(0);
    let aged = moved.clone().aged(Duration::from_secs(250)).unwrap();
    assert_eq!(aged.lifetime, Duration::from_secs(250));
    assert!(aged.permissions.is_empty(), "the 200 s permission ran out");
    assert_eq!(aged.channels[0].lifetime, Duration::from_secs(250));
    assert_eq!(moved.aged(Duration::from_secs(500)), None, "the allocation ran out");
}

/// With the `serde` feature a moved allocation is written in the relay's
/// handover snapshot format (docs/upgrades.md), and read back whole.
#[test]
fn a_moved_allocation_is_written_in_the_snapshot_format() {
    let mut h = Harness::new();
    h.listener = ListenerId::stream(1);
    let c = Harness::alice();
    let relayed = h.allocate(CLIENT, &c);
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    let moved = h.server.export(h.now).moved.remove(0).try_map(|_, _| Ok::<_, ()>(7usize)).unwrap();
    let json: serde_json::Value = serde_json::to_value(&moved).unwrap();
    assert_eq!((json["listener"].as_u64(), json["transport"].as_str()), (Some(1), Some("tcp")));
    assert_eq!(json["relays"][0]["fd"], 7);
    assert_eq!(json["relays"][0]["bound"], relayed.to_string());
    assert_eq!(json["relays"][1], serde_json::Value::Null);
    assert_eq!((json["lifetime_ms"].as_u64(), json["integrity"].as_str()), (Some(600_000), Some("sha1")));
    assert_eq!(json["key"].as_str().map(str::len), Some(32), "MD5: 16 bytes in hex");
    assert_eq!(json["txid"].as_str().map(str::len), Some(24));
    assert_eq!(json["permissions"][0]["lifetime_ms"], 300_000);
    assert_eq!(json["channels"][0]["number"], 0x4000);
    let back: Moved<usize> = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, moved);
    // A snapshot of version 1 had no `transport`: a UDP client.
    let mut v1 = json;
    v1.as_object_mut().unwrap().remove("transport");
    assert_eq!(serde_json::from_value::<Moved<usize>>(v1).unwrap().listener, ListenerId::udp(1));
}

/// The next process goes on with the same session: its id, start and
/// counts; what was moved without them (an earlier snapshot) begins anew.
#[test]
fn a_session_moves_with_its_id_start_and_counts() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    assert!(matches!(h.send(CLIENT, &channel_data(0x4000, b"abc")), Verdict::Forward(_)));
    h.advance(10);
    let before = h.server.sessions(h.now).remove(0);
    let mut next = take_over(&h);
    let after = next.server.sessions(next.now).remove(0);
    assert_eq!((after.id, after.started, after.usage), (before.id, before.started, before.usage));
    assert!(matches!(next.send(CLIENT, &channel_data(0x4000, b"de")), Verdict::Forward(_)));
    assert_eq!(next.server.sessions(next.now)[0].usage.bytes_to_peers, 5, "counted on");

    let mut moved = h
        .server
        .export(h.now)
        .moved
        .remove(0)
        .try_map(|_, bound| Ok::<_, ()>(Held { addr: bound, socket: None }))
        .unwrap();
    moved.session = None;
    let mut fresh = Harness::new();
    fresh.now = h.now;
    fresh.sockets.held.extend(moved.relays.iter().flatten().map(|r| r.bound));
    fresh.server.adopt(fresh.now, moved, &mut fresh.sockets).unwrap();
    let s = fresh.server.sessions(fresh.now).remove(0);
    assert_ne!(s.id, before.id);
    // This harness's clock began a moment after the first one's.
    assert!((UNIX0 + 9..=UNIX0 + 10).contains(&s.started), "{}", s.started);
    assert_eq!(s.usage, Usage::default());
}
