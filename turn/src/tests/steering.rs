//! A fleet's steering: a node at its threshold sends new allocations to
//! the alternate of the client's family and transport with 300 Try
//! Alternate; a draining one sends every new one there first.

use super::harness::*;
use crate::Steer;

fn alternate(r: &Response) -> SocketAddr {
    r.msg().get::<ip2p_wire::attr::AlternateServer>().unwrap().unwrap().0
}

#[test]
fn at_its_threshold_a_node_sends_new_allocations_to_the_alternate() {
    let mut h = Harness::new();
    let c = Harness::alice();
    let other: SocketAddr = "192.0.2.7:3478".parse().unwrap();
    h.server.shared.steering.set(Steer { plain: [Some(other), None], tls: [None; 2], tls_from: 1, above: 2 });
    h.allocate(CLIENT, &c);
    h.allocate("127.0.0.1:40001", &c);
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    let r = h.authed("127.0.0.1:40002", Method::ALLOCATE, &udp, &c);
    assert_eq!((r.code(), alternate(&r)), (Some(300), other));
    assert!(r.msg().verify_integrity(LongTermKey::md5("alice", REALM, "wonderland").as_bytes()).is_ok());
    assert_eq!(h.server.stats().allocations_refused.redirected, 1);
    // A bad request is still told so first.
    assert_eq!(h.authed("127.0.0.1:40003", Method::ALLOCATE, &[], &c).code(), Some(400));
    // Below the threshold again, served.
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    h.allocate("127.0.0.1:40002", &c);
    // No alternate of the client's transport: served, whatever the load.
    h.listener = ListenerId::stream(1);
    h.allocate("127.0.0.1:40004", &c);
    // Without a threshold, never.
    h.server.shared.steering.set(Steer { plain: [Some(other), None], tls: [None; 2], tls_from: 1, above: 0 });
    h.listener = ListenerId::udp(0);
    h.allocate("127.0.0.1:40005", &c);
}

#[test]
fn a_draining_node_prefers_the_fleets_choice_to_its_configured_alternates() {
    let mut h = Harness::new();
    let c = Harness::alice();
    let mut config = config();
    config.alternates = vec!["192.0.2.7:3478".parse().unwrap()];
    h.server.reconfigure(Arc::new(config), h.now);
    h.server.drain();
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &c);
    assert_eq!((r.code(), alternate(&r)), (Some(300), "192.0.2.7:3478".parse().unwrap()));
    let chosen: SocketAddr = "192.0.2.9:3478".parse().unwrap();
    h.server.shared.steering.set(Steer { plain: [Some(chosen), None], ..Steer::default() });
    let r = h.authed("127.0.0.1:40001", Method::ALLOCATE, &udp, &c);
    assert_eq!((r.code(), alternate(&r)), (Some(300), chosen));
}
