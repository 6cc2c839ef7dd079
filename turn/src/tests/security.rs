//! What an attacker must not get from the core: a way into the host,
//! unbounded state, an amplifier, a long-lived credential. Each test fails
//! on the core before these rules.

use super::harness::*;

/// A REST credential for `name` (`<expiry>:<user>`) under the test secret.
fn rest(name: &str) -> Creds {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"new secret").unwrap();
    mac.update(name.as_bytes());
    creds(name, &base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

const UDP: Attribute<'static> = Attribute::RequestedTransport(RequestedTransport::UDP);

#[test]
fn the_hosts_addresses_are_peers_only_at_live_relayed_addresses() {
    let mut cfg = config();
    // Even with everything allowed.
    cfg.policy.allow = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    cfg.policy.host = vec!["192.0.2.9".parse().unwrap()];
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let _ra = h.allocate(CLIENT, &c);
    let rb = h.allocate("127.0.0.1:40002", &c);
    // The listener, a free relay port, another local service, the host's
    // other address, the unspecified address: refused, whatever the lists.
    for denied in ["127.0.0.1:3478", "127.0.0.1:50099", "127.0.0.1:22", "192.0.2.9:9478", "0.0.0.0:80"] {
        let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(denied)], &c);
        assert_eq!(r.code(), Some(403), "{denied}");
        let r = h.authed(
            CLIENT,
            Method::CHANNEL_BIND,
            &[Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(denied)],
            &c,
        );
        assert_eq!(r.code(), Some(403), "{denied}");
    }
    // Another allocation's relayed address is a peer.
    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(XorPeerAddress(rb))], &c);
    assert_eq!(r.class(), Class::Success);
    // The permission is for the IP, but no packet goes to another port
    // there: not to the listener (a nested allocation), not to a service.
    for port in [3478, 22, 50099] {
        let tid = h.tid();
        let send = h.build_send(tid, &format!("127.0.0.1:{port}"), b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.send_through_node(CLIENT, &send).0, Verdict::Drop(DropReason::DeniedAddress), "port {port}");
    }
    // Nor to the relayed address once its allocation is gone.
    assert_eq!(
        h.authed("127.0.0.1:40002", Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(),
        Class::Success
    );
    let tid = h.tid();
    let send = h.build_send(tid, &rb.to_string(), b"x");
    assert_eq!(h.send_through_node(CLIENT, &send).0, Verdict::Drop(DropReason::DeniedAddress));
    assert_eq!(h.server.stats().dropped.denied_address, 4);
}

#[test]
fn the_rest_quota_counts_the_user_part_and_the_address_counts_too() {
    let limits = QuotaLimits { total: 0, per_user: 2, per_prefix: 3 };
    let mut h = Harness::with(config(), Quotas::new(limits));
    // One user with three expiries is one user.
    for (i, expiry) in [600, 1200].iter().enumerate() {
        let name = format!("{}:mallory", UNIX0 + expiry);
        h.allocate(&format!("198.51.100.{}:4000", i + 1), &rest(&name));
    }
    let third = rest(&format!("{}:mallory", UNIX0 + 1800));
    assert_eq!(h.authed("198.51.100.3:4000", Method::ALLOCATE, &[UDP], &third).code(), Some(486));
    assert_eq!(h.server.stats().allocations_refused.user_quota, 1);
    // Many users from one address: the address's limit (486).
    for port in [5000, 5001, 5002] {
        h.allocate(&format!("203.0.113.5:{port}"), &rest(&format!("{}:user{port}", UNIX0 + 600)));
    }
    let r = h.authed("203.0.113.5:5003", Method::ALLOCATE, &[UDP], &rest(&format!("{}:user5003", UNIX0 + 600)));
    assert_eq!(r.code(), Some(486));
    assert_eq!(h.server.stats().allocations_refused.ip_quota, 1);
}

#[test]
fn a_reservation_counts_against_its_user_and_goes_with_its_allocation() {
    let mut h = Harness::with(config(), Quotas::new(QuotaLimits { total: 0, per_user: 2, per_prefix: 0 }));
    let c = Harness::alice();
    let even = [UDP, Attribute::EvenPort(EvenPort { reserve_next: true })];
    for round in 0..100 {
        let r = h.authed(CLIENT, Method::ALLOCATE, &even, &c);
        assert_eq!(r.class(), Class::Success, "round {round}: {:?}", r.code());
        assert_eq!(h.server.shared.quotas.of_user("alice"), 2, "the allocation and its reserved port");
        assert_eq!(h.server.shared.reservations(), 1);
        // Over quota while it holds the reservation.
        let r = h.authed("127.0.0.1:40001", Method::ALLOCATE, &[UDP], &c);
        assert_eq!(r.code(), Some(486));
        // Deleting the allocation gives both back, at once.
        let r = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c);
        assert_eq!(r.class(), Class::Success);
        assert_eq!((h.server.shared.quotas.of_user("alice"), h.server.shared.reservations()), (0, 0));
        assert!(h.sockets.open.is_empty());
    }
    assert_eq!(h.server.gauges(h.now).timers, 0);
}

#[test]
fn timers_are_bounded_by_live_allocations_however_many_refreshes() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    for _ in 0..30_000 {
        let r = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(600))], &c);
        assert_eq!(r.class(), Class::Success);
    }
    assert_eq!(h.server.gauges(h.now).timers, 1, "one entry for one allocation");
    assert_eq!(h.server.poll_timeout(), Some(h.now + Duration::from_secs(600)));
    h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c);
    assert_eq!(h.server.gauges(h.now).timers, 0);
    assert_eq!(h.server.poll_timeout(), None);
}

/// The smallest well-formed request of each kind that does not
/// authenticate, and its answer: at most 4x, no SOFTWARE.
#[test]
fn unauthenticated_answers_are_at_most_four_times_the_request() {
    for realm in ["ip2p".to_owned(), "r".repeat(MAX_REALM)] {
        unauthenticated_answers_with_realm(&realm);
    }
}

fn unauthenticated_answers_with_realm(realm: &str) {
    let mut cfg = config();
    cfg.credentials.realm = realm.to_owned();
    let mut h = Harness::with(cfg, Quotas::default());
    let mut table = Vec::new();
    let cases: Vec<(&str, Method, Vec<Attribute<'static>>, bool)> = vec![
        ("Binding", Method::BINDING, vec![], false),
        ("Binding with FINGERPRINT", Method::BINDING, vec![], true),
        ("Allocate", Method::ALLOCATE, vec![UDP], false),
        ("Allocate without REQUESTED-TRANSPORT", Method::ALLOCATE, vec![], false),
        ("Refresh", Method::REFRESH, vec![], false),
        ("CreatePermission", Method::CREATE_PERMISSION, vec![peer_attr(PEER)], false),
        (
            "ChannelBind",
            Method::CHANNEL_BIND,
            vec![Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)],
            false,
        ),
        ("Connect", Method::CONNECT, vec![peer_attr(PEER)], false),
        ("ConnectionBind", Method::CONNECTION_BIND, vec![Attribute::ConnectionId(ConnectionId(1))], false),
        ("an unknown method", Method::new(0x0FF).unwrap(), vec![], false),
    ];
    for from in [CLIENT, "[2001:db8::1]:40000"] {
        for (name, method, attrs, fingerprint) in &cases {
            let tid = h.tid();
            let mut buf = vec![0u8; 256];
            let mut w = MessageWriter::new(&mut buf, MessageType::new(*method, Class::Request), tid).unwrap();
            for a in attrs {
                w.add_attribute(a).unwrap();
            }
            let len = if *fingerprint { w.fingerprint().unwrap() } else { w.finish() };
            let response = h.exchange(from, &buf[..len]);
            let m = response.msg();
            assert!(m.get::<Software>().unwrap().is_none(), "{name}: SOFTWARE to an unverified source");
            assert!(response.0.len() <= 4 * len, "{name} from {from}: {len} bytes get {}", response.0.len());
            table.push((name.to_owned(), len, response.0.len()));
        }
    }
    // A well-formed Allocate gets the whole challenge, even with the
    // longest realm.
    let tid = h.tid();
    let allocate = h.build(Method::ALLOCATE, tid, &[UDP], None);
    assert!(h.exchange(CLIENT, &allocate).msg().get::<Nonce>().unwrap().is_some());
    // The table docs/security.md shows (`cargo test -- --nocapture`).
    for (name, req, resp) in table {
        println!("| {name} | {req} | {resp} | {:.1}x | realm of {} bytes", resp as f64 / req as f64, realm.len());
    }
}

#[test]
fn unauthenticated_answers_are_rate_limited_per_prefix() {
    let mut cfg = config();
    cfg.unauthenticated_rate = 10;
    let mut h = Harness::with(cfg, Quotas::default());
    let binding = |h: &mut Harness, from: &str| {
        let tid = h.tid();
        let b = h.build(Method::BINDING, tid, &[], None);
        h.send(from, &b)
    };
    let answered = |h: &mut Harness, from: &str| {
        (0..50).filter(|i| matches!(binding(h, &from.replace("PORT", &i.to_string())), Verdict::Reply(_))).count()
    };
    assert_eq!(answered(&mut h, "198.51.100.7:PORT"), 10, "a second's worth");
    assert_eq!(answered(&mut h, "198.51.100.99:PORT"), 0, "the same /24");
    assert_eq!(answered(&mut h, "203.0.113.7:PORT"), 10, "another prefix has its own");
    assert_eq!(h.server.stats().dropped.response_rate_limit, 40 + 50 + 40);
    // Challenges too; an authenticated request is never limited.
    let tid = h.tid();
    let allocate = h.build(Method::ALLOCATE, tid, &[UDP], None);
    assert_eq!(h.send("198.51.100.7:1", &allocate), Verdict::Drop(DropReason::ResponseRateLimit));
    h.advance(1);
    let c = Harness::alice();
    h.allocate("198.51.100.7:2", &c);
    for _ in 0..50 {
        let r = h.authed("198.51.100.7:2", Method::REFRESH, &[], &c);
        assert_eq!(r.class(), Class::Success);
    }
}

#[test]
fn a_wrong_fingerprint_is_discarded() {
    let mut h = Harness::new();
    let tid = h.tid();
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), tid).unwrap();
    let len = w.fingerprint().unwrap();
    let mut bad = buf[..len].to_vec();
    *bad.last_mut().unwrap() ^= 1;
    assert_eq!(h.send(CLIENT, &bad), Verdict::Drop(DropReason::BadFingerprint));
    assert_eq!(h.server.stats().dropped.bad_fingerprint, 1);
    assert!(matches!(h.send(CLIENT, &buf[..len]), Verdict::Reply(_)), "the right one is answered");
}

#[test]
fn a_rest_credential_cannot_claim_to_live_too_long() {
    let mut h = Harness::new();
    // config(): at most a day ahead, and a minute for other clocks.
    h.allocate(CLIENT, &rest(&format!("{}:web", UNIX0 + 86_400 + crate::auth::REST_CLOCK_SLACK)));
    for expiry in [UNIX0 + 86_401 + crate::auth::REST_CLOCK_SLACK, u64::from(u32::MAX), 1 << 63] {
        let r = h.authed("127.0.0.1:40001", Method::ALLOCATE, &[UDP], &rest(&format!("{expiry}:web")));
        assert_eq!(r.code(), Some(401), "{expiry}");
    }
    assert_eq!(h.server.stats().auth_failures.too_long_lived, 3);
}

/// An IPv4-mapped peer (`::ffff:a.b.c.d`) is refused in a Send indication
/// too, even when the IPv4 address has a permission: no relay socket
/// sends to one, and nothing the core forwards names one.
#[test]
fn a_send_to_a_mapped_peer_is_refused_even_with_a_permission() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, "[::ffff:127.0.0.2]:7000", b"x");
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::DeniedAddress));
    let tid = h.tid();
    let send = h.build_send(tid, PEER, b"x");
    assert!(matches!(h.send(CLIENT, &send), Verdict::Forward(_)), "the IPv4 form goes");
}
