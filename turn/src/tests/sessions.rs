//! Sessions: each allocation's id, owner and what it relayed each way,
//! counted exactly on every path through the core, and ending one at the
//! operator's word.

use super::harness::*;

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4 + data.len() + 3];
    let len = write_channel_data(&mut buf, channel, data, Transport::Datagram).unwrap();
    buf.truncate(len);
    buf
}

/// Alice's allocation with a channel 0x4000 to PEER.
fn bound() -> (Harness, Creds) {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    (h, c)
}

#[test]
fn a_session_counts_payload_bytes_each_way_and_nothing_dropped() {
    let (mut h, _) = bound();
    for data in [&b"hello"[..], b"0123456789", b"x"] {
        assert!(matches!(h.send(CLIENT, &channel_data(0x4000, data)), Verdict::Forward(_)));
    }
    let tid = h.tid();
    let send = h.build_send(tid, PEER, b"7 bytes");
    assert!(matches!(h.send(CLIENT, &send), Verdict::Forward(_)));
    // Dropped: no channel, no permission.
    assert!(matches!(h.send(CLIENT, &channel_data(0x4001, b"lost")), Verdict::Drop(_)));
    let send = h.build_send(tid, "127.0.0.9:1", b"lost");
    assert!(matches!(h.send(CLIENT, &send), Verdict::Drop(_)));
    let relay = h.only_token();
    assert!(h.peer_sends(relay, PEER, &[1; 8]).0.is_ok());
    assert!(h.peer_sends(relay, "127.0.0.2:9", &[2; 100]).0.is_ok(), "another port of the permitted IP");
    assert!(h.peer_sends(relay, "127.0.0.9:7000", b"lost").0.is_err());

    let sessions = h.server.sessions(h.now);
    let [s] = &sessions[..] else { panic!("{sessions:?}") };
    let usage = Usage { packets_to_peers: 4, bytes_to_peers: 23, packets_from_peers: 2, bytes_from_peers: 108 };
    assert_eq!(s.usage, usage);
    assert_eq!((s.user.as_str(), s.username.as_str(), s.client), ("alice", "alice", addr(CLIENT)));
    assert_eq!((s.permissions, s.channels, s.started), (1, 1, UNIX0));
    assert_eq!(s.expires, UNIX0 + 600);
    assert_eq!(s.relays, [relay]);
    h.advance(30);
    assert_eq!(h.server.sessions(h.now)[0].id, s.id, "an id for the session's life");
}

#[test]
fn each_allocation_is_a_session_of_its_own() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    h.allocate("127.0.0.1:40001", &c);
    let sessions = h.server.sessions(h.now);
    assert_eq!(sessions.len(), 2);
    assert_ne!(sessions[0].id, sessions[1].id);
}

#[test]
fn an_ended_session_is_gone_for_its_client_at_once_and_its_port_is_freed() {
    let (mut h, c) = bound();
    let relay = h.only_token();
    let id = h.server.sessions(h.now)[0].id;
    assert!(!h.server.end_session(h.now, SessionId(id.0 ^ 1)), "no such session");
    assert!(h.server.end_session(h.now, id));
    assert!(!h.server.end_session(h.now, id), "ended once");
    assert_eq!(h.send(CLIENT, &channel_data(0x4000, b"x")), Verdict::Drop(DropReason::NoAllocation));
    let refresh = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(600))], &c);
    assert_eq!(refresh.code(), Some(437));
    assert!(h.server.sessions(h.now).is_empty());
    // The worker's next look at its timers closes the socket.
    assert_eq!(h.server.poll_timeout(), Some(h.now));
    h.advance(0);
    assert!(h.sockets.open.is_empty(), "its relay socket closed");
    assert!(h.peer_sends(relay, PEER, b"late").0.is_err());
    assert_eq!(h.server.stats().allocations_expired, 0, "killed, not expired");
    assert_eq!(h.server.shared.quotas.total(), 0);
    // The client may begin again.
    h.allocate(CLIENT, &c);
    assert_eq!(h.server.sessions(h.now).len(), 1);
}

#[test]
fn a_new_allocation_on_the_five_tuple_of_an_ended_one_stays() {
    let (mut h, c) = bound();
    let id = h.server.sessions(h.now)[0].id;
    assert!(h.server.end_session(h.now, id));
    h.allocate(CLIENT, &c);
    h.advance(0);
    let sessions = h.server.sessions(h.now);
    assert_eq!(sessions.len(), 1, "the new one");
    assert_ne!(sessions[0].id, id);
    assert!(matches!(h.authed(CLIENT, Method::REFRESH, &[], &c).class(), Class::Success));
}

fn session_events(h: &mut Harness) -> Vec<SessionEvent> {
    std::iter::from_fn(|| h.server.poll_session_event()).collect()
}

#[test]
fn each_session_begins_and_ends_once_with_its_reason_and_counts() {
    let mut h = Harness::with(Config { session_events: true, ..config() }, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    h.allocate("127.0.0.1:40001", &c);
    h.allocate("127.0.0.1:40002", &c);
    let started = session_events(&mut h);
    let ids: Vec<SessionId> = started
        .iter()
        .map(|e| match e {
            SessionEvent::Started(s) => s.id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 3);
    // Deleted by its client, with what it relayed.
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    assert!(matches!(h.send(CLIENT, &channel_data(0x4000, b"abcd")), Verdict::Forward(_)));
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    let ended = session_events(&mut h);
    let [SessionEvent::Ended(s, End::Deleted)] = &ended[..] else { panic!("{ended:?}") };
    assert_eq!((s.id, s.usage.bytes_to_peers), (ids[0], 4));
    // Ended by the operator: its end comes when the socket closes.
    assert!(h.server.end_session(h.now, ids[1]));
    h.advance(0);
    assert!(matches!(&session_events(&mut h)[..], [SessionEvent::Ended(s, End::Killed)] if s.id == ids[1]));
    // The node stops: the last one ends so, once.
    h.server.end_all(h.now, End::ShutDown, |_| false);
    assert!(matches!(&session_events(&mut h)[..], [SessionEvent::Ended(s, End::ShutDown)] if s.id == ids[2]));
    // Expiry.
    let mut h = Harness::with(Config { session_events: true, ..config() }, Quotas::default());
    h.allocate(CLIENT, &c);
    let _ = session_events(&mut h);
    h.advance(601);
    assert!(matches!(&session_events(&mut h)[..], [SessionEvent::Ended(_, End::Expired)]));
}

/// A TURN REST credential of `user` valid until `expiry` (unix seconds),
/// signed with the test configuration's secret.
fn rest(user: &str, expiry: u64) -> Creds {
    let username = format!("{expiry}:{user}");
    let password = crate::auth::rest_password(b"new secret", &username);
    creds(&username, &password)
}

#[test]
fn a_revoked_user_is_refused_until_the_revocation_ends_or_is_lifted() {
    let mut h = Harness::new();
    let web = rest("web-user", UNIX0 + 3600);
    h.allocate(CLIENT, &web);
    h.allocate("127.0.0.1:40001", &Harness::alice());
    h.server.shared.revocations.add("web-user", UNIX0 + 100, UNIX0).unwrap();
    assert_eq!(h.server.end_sessions_of(h.now, "web-user", End::Revoked), 1, "alice's stays");
    h.advance(0);
    assert_eq!(h.server.sessions(h.now).len(), 1);
    // A fresh credential of the same user: refused, as is every request.
    let fresh = rest("web-user", UNIX0 + 7200);
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:40002", Method::ALLOCATE, &udp, &fresh).code(), Some(401));
    assert_eq!(h.server.stats().auth_failures.revoked, 1);
    // Until it ends.
    h.advance(100);
    h.allocate("127.0.0.1:40002", &fresh);
    // Or is lifted.
    h.server.shared.revocations.add("web-user", UNIX0 + 1000, UNIX0).unwrap();
    assert_eq!(h.authed("127.0.0.1:40003", Method::ALLOCATE, &udp, &fresh).code(), Some(401));
    assert!(h.server.shared.revocations.remove("web-user"));
    h.allocate("127.0.0.1:40003", &fresh);
}

#[test]
fn with_strict_expiry_a_session_ends_with_its_credential() {
    let mut h = Harness::with(Config { strict_expiry: true, session_events: true, ..config() }, Quotas::default());
    let web = rest("web-user", UNIX0 + 100);
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP), Attribute::Lifetime(Lifetime(600))];
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &web);
    assert_eq!(r.lifetime(), Some(100), "cut to the credential's expiry");
    h.advance(30);
    let r = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(600))], &web);
    assert_eq!(r.lifetime(), Some(70));
    // A static user's allocation is not held to anything.
    h.allocate("127.0.0.1:40001", &Harness::alice());
    let _ = session_events(&mut h);
    h.advance(70);
    let ended = session_events(&mut h);
    assert!(
        matches!(&ended[..], [SessionEvent::Ended(s, End::CredentialExpired)] if s.user == "web-user"),
        "{ended:?}"
    );
    assert_eq!(h.server.sessions(h.now).len(), 1);

    // Without it, the lifetime asked for.
    let mut h = Harness::new();
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &web);
    assert_eq!(r.lifetime(), Some(600));
}

#[test]
fn a_query_picks_sessions_by_user_client_and_id() {
    let mut h = Harness::new();
    h.allocate(CLIENT, &Harness::alice());
    h.allocate("127.0.0.5:40001", &Harness::alice());
    h.allocate("127.0.0.1:40002", &rest("web-user", UNIX0 + 3600));
    let ids = |q: SessionQuery| h.server.sessions_where(h.now, &q).iter().map(|s| s.user.clone()).collect::<Vec<_>>();
    assert_eq!(ids(SessionQuery::default()).len(), 3);
    assert_eq!(ids(SessionQuery { user: Some("web-user".into()), ..Default::default() }), ["web-user"]);
    let local = SessionQuery { client: Some("127.0.0.1".parse().unwrap()), ..Default::default() };
    assert_eq!(ids(local).len(), 2);
    let one = h.server.sessions(h.now)[1].id;
    let by_id = h.server.sessions_where(h.now, &SessionQuery { id: Some(one), ..Default::default() });
    assert_eq!(by_id.iter().map(|s| s.id).collect::<Vec<_>>(), [one]);
    let none = SessionQuery { user: Some("alice".into()), client: Some("127.0.0.9".parse().unwrap()), id: None };
    assert!(ids(none).is_empty());
}

#[test]
fn a_session_a_handover_cannot_move_ends_so_and_one_that_moves_does_not() {
    let events = Config { session_events: true, ..config() };
    let mut h = Harness::with(events.clone(), Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    h.allocate("127.0.0.1:40001", &c);
    let _ = session_events(&mut h);
    let mut export = h.server.export(h.now).moved;
    let ids: Vec<u64> = export.iter().map(|m| m.session.unwrap().id).collect();
    // The first moved; the other (say its client was on TLS) did not.
    h.server.end_all(h.now, End::HandedOver, |id| id.0 == ids[0]);
    let ended = session_events(&mut h);
    assert!(matches!(&ended[..], [SessionEvent::Ended(s, End::HandedOver)] if s.id.0 == ids[1]), "{ended:?}");

    // One the next process cannot take over ends there, with its counts.
    let mut moved = export.remove(0);
    moved.session.as_mut().unwrap().bytes_to_peers = 1234;
    let other: SocketAddr = "127.0.0.9:50001".parse().unwrap();
    let mut moved = moved.try_map(|_, _| Ok::<_, ()>(Held { addr: other, socket: None })).unwrap();
    moved.relays[0] = moved.relays[0].take().map(|r| MovedRelay { bound: other, advertised: other, ..r });
    let mut next = Harness::with(events, Quotas::default());
    assert!(next.server.adopt(next.now, moved, &mut next.sockets).is_err());
    let ended = session_events(&mut next);
    let [SessionEvent::Ended(s, End::HandedOver)] = &ended[..] else { panic!("{ended:?}") };
    assert_eq!((s.id.0, s.user.as_str(), s.relayed.as_slice()), (ids[0], "alice", &[other][..]));
    assert_eq!(s.usage.bytes_to_peers, 1234);
}
