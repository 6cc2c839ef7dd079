//! RFC 6062: TCP allocations, Connect, ConnectionAttempt, ConnectionBind.

use super::harness::*;
use ip2p_wire::attr::ConnectionId;

fn tcp_allocate(h: &mut Harness, from: &str, c: &Creds) -> Response {
    h.authed(from, Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::TCP)], c)
}

fn stream_harness() -> Harness {
    let mut h = Harness::new();
    h.listener = ListenerId::stream(0);
    h
}

#[test]
fn tcp_allocations_need_a_stream_and_no_udp_only_attributes() {
    let mut h = Harness::new();
    let c = Harness::alice();
    assert_eq!(tcp_allocate(&mut h, CLIENT, &c).code(), Some(400), "over UDP");
    let mut h = stream_harness();
    let tcp = Attribute::RequestedTransport(RequestedTransport::TCP);
    for extra in [
        Attribute::EvenPort(EvenPort { reserve_next: false }),
        Attribute::DontFragment(ip2p_wire::attr::DontFragment),
        Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)),
    ] {
        assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &[tcp, extra], &c).code(), Some(400));
    }
    let r = tcp_allocate(&mut h, CLIENT, &c);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(h.sockets.tcp.len(), 1, "a TCP listener, no UDP socket");
    assert!(h.sockets.open.is_empty());
    assert_eq!(h.sockets.tcp.values().next().unwrap().1, "alice");
    // Send indications and ChannelBind have no place on it.
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).code(), Some(400));
    // Deleting it closes the listener.
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).lifetime(), Some(0));
    assert!(h.sockets.tcp.is_empty());
}

#[test]
fn connect_is_answered_when_the_connection_is_up_or_failed() {
    let mut h = stream_harness();
    let c = Harness::alice();
    assert_eq!(tcp_allocate(&mut h, CLIENT, &c).class(), Class::Success);
    let token = *h.sockets.tcp.keys().next().unwrap();
    let relayed = h.sockets.tcp[&token].0;
    // Policy and missing attributes: answered at once.
    assert_eq!(h.authed(CLIENT, Method::CONNECT, &[], &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CONNECT, &[peer_attr("10.0.0.1:80")], &c).code(), Some(403));
    // A valid Connect is answered later.
    let tid = h.tid();
    let nonce = {
        let first = h.build(Method::CONNECT, tid, &[peer_attr(PEER)], None);
        h.exchange(CLIENT, &first).nonce()
    };
    let tid = h.tid();
    let req = h.build(Method::CONNECT, tid, &[peer_attr(PEER)], Some((&c, &nonce)));
    assert_eq!(h.send(CLIENT, &req), Verdict::Deferred);
    assert_eq!(h.sockets.connects, [(token, relayed, addr(PEER))]);
    assert_eq!(h.server.stats().dropped.ignored, 0, "deferred is not dropped");
    // A second Connect to the same peer meanwhile: 446.
    assert_eq!(h.authed(CLIENT, Method::CONNECT, &[peer_attr(PEER)], &c).code(), Some(446));
    // The connection is up: success with CONNECTION-ID, signed.
    let mut reply = vec![0u8; REPLY_BUFFER];
    let t = h.server.tcp_connected(token, addr(PEER), Some(77), &mut reply).unwrap();
    assert_eq!((t.via, t.to), (Via::Listener(ListenerId::stream(0)), addr(CLIENT)));
    let r = Response(reply[t.range].to_vec());
    assert_eq!((r.class(), r.msg().method(), *r.msg().transaction_id()), (Class::Success, Method::CONNECT, tid));
    assert_eq!(r.msg().get::<ConnectionId>().unwrap(), Some(ConnectionId(77)));
    let key = LongTermKey::md5("alice", REALM, "wonderland");
    assert!(r.msg().verify_integrity(key.as_bytes()).is_ok());
    assert!(h.server.tcp_connected(token, addr(PEER), Some(77), &mut reply).is_none(), "answered once");
    // A connection that already exists: 446; one that fails: 447.
    h.sockets.conns.insert(77, (token, addr(PEER), Some(true)));
    assert_eq!(h.authed(CLIENT, Method::CONNECT, &[peer_attr(PEER)], &c).code(), Some(446));
    let other = "127.0.0.2:7001";
    assert_eq!(h.send_authed_deferred(CLIENT, Method::CONNECT, &[peer_attr(other)], &c), Verdict::Deferred);
    let t = h.server.tcp_connected(token, addr(other), None, &mut reply).unwrap();
    assert_eq!(Response(reply[t.range].to_vec()).code(), Some(447));
}

#[test]
fn incoming_connections_need_a_permission_and_bind_once() {
    let mut h = stream_harness();
    let c = Harness::alice();
    assert_eq!(tcp_allocate(&mut h, CLIENT, &c).class(), Class::Success);
    let token = *h.sockets.tcp.keys().next().unwrap();
    let mut reply = vec![0u8; REPLY_BUFFER];
    // Without a permission the peer is refused.
    h.sockets.conns.insert(5, (token, addr(PEER), None));
    assert!(h.server.tcp_incoming(h.now, token, addr(PEER), 5, &mut reply, &mut h.sockets).is_none());
    assert_eq!(h.sockets.conns[&5].2, Some(false));
    // With one, the client hears of it.
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    h.sockets.conns.insert(6, (token, addr(PEER), None));
    let t = h.server.tcp_incoming(h.now, token, addr(PEER), 6, &mut reply, &mut h.sockets).unwrap();
    let msg = Message::parse(&reply[t.range]).unwrap();
    assert_eq!(msg.message_type(), MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication));
    assert_eq!(msg.get::<ConnectionId>().unwrap(), Some(ConnectionId(6)));
    assert_eq!(msg.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(addr(PEER))));
    assert_eq!(h.sockets.conns[&6].2, Some(true));
    // ConnectionBind: on a fresh connection, by the same user, once.
    let data_conn = "127.0.0.1:40001";
    let bind = [Attribute::ConnectionId(ConnectionId(6))];
    assert_eq!(h.authed(data_conn, Method::CONNECTION_BIND, &[], &c).code(), Some(400), "no CONNECTION-ID");
    let bob = creds("bob", "builder");
    assert_eq!(h.authed(data_conn, Method::CONNECTION_BIND, &bind, &bob).code(), Some(400), "another user");
    assert_eq!(h.authed(CLIENT, Method::CONNECTION_BIND, &bind, &c).code(), Some(400), "the control connection");
    assert_eq!(h.authed(data_conn, Method::CONNECTION_BIND, &bind, &c).class(), Class::Success);
    assert_eq!(h.sockets.binds, [(6, ListenerId::stream(0), addr(data_conn))]);
    let again = "127.0.0.1:40002";
    assert_eq!(h.authed(again, Method::CONNECTION_BIND, &bind, &c).code(), Some(400), "bound already");
    h.listener = ListenerId::udp(0);
    assert_eq!(h.authed("127.0.0.1:40003", Method::CONNECTION_BIND, &bind, &c).code(), Some(400), "over UDP");
}
