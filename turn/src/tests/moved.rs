//! A handover: allocations exported by one core and adopted by the next
//! (another process, with the same relay sockets) keep their relayed
//! addresses, permissions, channels, lifetimes and credentials; what cannot
//! move says so, and what does not fit is refused whole.

use super::*;

/// `h`'s allocations adopted by a new core at the same moment, with the
/// nonces `h`'s clients hold.
fn take_over(h: &Harness) -> Harness {
    let mut next = Harness::new();
    next.now = h.now;
    next.nonces = h.nonces.clone();
    let export = h.server.export(h.now);
    for (moved, _) in &export.moved {
        let held = moved.relays.map(|r| {
            r.map(|(bound, _)| {
                next.sockets.held.push(bound);
                Held { addr: bound, socket: None }
            })
        });
        next.server.adopt(next.now, moved, held, &mut next.sockets).unwrap();
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
    let (moved, tokens) = &export.moved[0];
    assert_eq!(moved.relays[0], Some((relayed, relayed)));
    assert_eq!(tokens[0], Some(h.only_token()));
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
    assert_eq!(export.moved[0].0.listener, ListenerId::stream(0));
    let next = take_over(&h);
    assert!(next.server.has_allocation(ListenerId::stream(0), addr(CLIENT)));
    assert!(!next.server.has_allocation(ListenerId::udp(0), addr(CLIENT)));

    let mut h = Harness::new();
    h.allocate(CLIENT, &Harness::alice());
    let export = h.server.export(h.now);
    let (moved, _) = &export.moved[0];
    let bound = moved.relays[0].unwrap().0;
    let mut next = Harness::new();
    // A relay address this process does not have.
    let mut elsewhere = moved.clone();
    let other: SocketAddr = "127.0.0.9:50001".parse().unwrap();
    elsewhere.relays[0] = Some((other, other));
    let held = [Some(Held { addr: other, socket: None }), None];
    let r = next.server.adopt(next.now, &elsewhere, held, &mut next.sockets);
    assert_eq!(r, Err(AdoptError::RelayAddress(other)));
    // No socket for it.
    let r = next.server.adopt(next.now, moved, [None, None], &mut next.sockets);
    assert!(matches!(r, Err(AdoptError::Socket(_))), "{r:?}");
    assert_eq!((next.server.allocations(), next.server.shared.quotas.total()), (0, 0), "nothing half-adopted");
    // Once, not twice.
    next.sockets.held.push(bound);
    next.server.adopt(next.now, moved, [Some(Held { addr: bound, socket: None }), None], &mut next.sockets).unwrap();
    let r = next.server.adopt(next.now, moved, [Some(Held { addr: bound, socket: None }), None], &mut next.sockets);
    assert_eq!(r, Err(AdoptError::Duplicate));
    assert_eq!(next.server.allocations(), 1);
}
