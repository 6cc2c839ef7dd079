//! Binding and Allocate: each request's answer and errors, address
//! families, EVEN-PORT reservations, lifetimes, Refresh, capacity, and
//! what is not a request.

use super::harness::*;

#[test]
fn binding_answers_with_the_reflexive_address_and_mirrors_fingerprint() {
    let mut h = Harness::new();
    let tid = h.tid();
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), tid).unwrap();
    let len = w.fingerprint().unwrap();
    let r = h.exchange(CLIENT, &buf[..len]);
    let m = r.msg();
    assert_eq!(m.message_type(), MessageType::new(Method::BINDING, Class::Success));
    assert_eq!(m.transaction_id(), &tid);
    assert_eq!(m.get::<XorMappedAddress>().unwrap(), Some(XorMappedAddress(addr(CLIENT))));
    assert!(m.verify_fingerprint().is_ok());

    let plain = h.build(Method::BINDING, tid, &[], None);
    assert!(!h.exchange(CLIENT, &plain).msg().has_fingerprint());

    let unknown = h.build(
        Method::BINDING,
        tid,
        &[Attribute::Unknown(RawAttribute { typ: AttrType(0x0024), value: &[0; 4] })],
        None,
    );
    let r = h.exchange(CLIENT, &unknown);
    assert_eq!(r.code(), Some(420));
    let listed: Vec<_> = r.msg().get::<UnknownAttributes>().unwrap().unwrap().iter().collect();
    assert_eq!(listed, [AttrType(0x0024)]);
}

#[test]
fn allocate_challenges_then_allocates() {
    let mut h = Harness::new();
    let tid = h.tid();
    let req = h.build(Method::ALLOCATE, tid, &[Attribute::RequestedTransport(RequestedTransport::UDP)], None);
    let challenge = h.exchange(CLIENT, &req);
    assert_eq!(challenge.code(), Some(401));
    let m = challenge.msg();
    assert_eq!(m.get::<Realm>().unwrap(), Some(Realm(REALM)));
    assert!(challenge.nonce().starts_with("obMatJos2AAAB"));
    assert!(m.get::<PasswordAlgorithms>().unwrap().is_some());
    assert_eq!(m.integrity_kind(), None);
    assert!(h.sockets.open.is_empty());

    let c = Harness::alice();
    let tid = h.tid();
    let req = h.build(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(RequestedTransport::UDP)],
        Some((&c, &challenge.nonce())),
    );
    let r = h.exchange(CLIENT, &req);
    let m = r.msg();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.verify_integrity(LongTermKey::md5("alice", REALM, "wonderland").as_bytes()), Ok(IntegrityKind::Sha1));
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 1);
    assert!((50000..=50099).contains(&relayed[0].port()));
    assert_eq!(r.lifetime(), Some(600));
    assert_eq!(m.get::<XorMappedAddress>().unwrap(), Some(XorMappedAddress(addr(CLIENT))));
    assert_eq!(m.get::<Software>().unwrap(), Some(Software("ip2p test")));
    assert_eq!(h.sockets.open.values().next(), Some(&(relayed[0], false)));
    assert_eq!(h.server.allocations(), 1);

    // A retransmission of the same request gets the same answer, not 437.
    let again = h.exchange(CLIENT, &req);
    assert_eq!(again.class(), Class::Success);
    assert_eq!(again.relayed(), relayed);
    assert_eq!(h.sockets.open.len(), 1);
    // A new Allocate on the same 5-tuple is a mismatch.
    let tid = h.tid();
    let other = h.build(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(RequestedTransport::UDP)],
        Some((&c, &challenge.nonce())),
    );
    let r = h.exchange(CLIENT, &other);
    assert_eq!(r.code(), Some(437));
    assert!(r.msg().verify_integrity(LongTermKey::md5("alice", REALM, "wonderland").as_bytes()).is_ok());
}

#[test]
fn allocate_validates_transport_and_lifetime() {
    let mut h = Harness::new();
    let c = Harness::alice();
    assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &[], &c).code(), Some(400));
    // RFC 6062 §5.1: TCP needs a TCP or TLS control connection (400);
    // another protocol is unsupported (442).
    let tcp = [Attribute::RequestedTransport(RequestedTransport::TCP)];
    assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &tcp, &c).code(), Some(400));
    let sctp = [Attribute::RequestedTransport(RequestedTransport(132))];
    assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &sctp, &c).code(), Some(442));
    for (i, (asked, granted)) in [(10, 600), (1200, 1200), (100_000, 3600)].into_iter().enumerate() {
        let from = format!("127.0.0.1:{}", 41000 + i);
        let attrs = [Attribute::RequestedTransport(RequestedTransport::UDP), Attribute::Lifetime(Lifetime(asked))];
        assert_eq!(h.authed(&from, Method::ALLOCATE, &attrs, &c).lifetime(), Some(granted), "asked {asked}");
    }
    assert!(h.sockets.open.is_empty() || h.sockets.open.len() == 3);
}

#[test]
fn address_families_and_dual_allocations() {
    let mut cfg = config();
    cfg.relay_ips[1] = vec![RelayIp { bind: "::1".parse().unwrap(), external: None }];
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let udp = Attribute::RequestedTransport(RequestedTransport::UDP);
    let v6 = [udp, Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV6))];
    let r = h.authed("127.0.0.1:41001", Method::ALLOCATE, &v6, &c);
    assert!(r.relayed()[0].is_ipv6());
    let dual = [udp, Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6))];
    let r = h.authed("127.0.0.1:41002", Method::ALLOCATE, &dual, &c);
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    let both = [
        udp,
        Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV4)),
        Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)),
    ];
    assert_eq!(h.authed("127.0.0.1:41003", Method::ALLOCATE, &both, &c).code(), Some(400));
    let aaf_v4 = [udp, Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV4))];
    assert_eq!(h.authed("127.0.0.1:41004", Method::ALLOCATE, &aaf_v4, &c).code(), Some(400));
    let unknown = [udp, Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily(9)))];
    assert_eq!(h.authed("127.0.0.1:41005", Method::ALLOCATE, &unknown, &c).code(), Some(440));

    // Refresh of the dual allocation deleting only IPv6.
    let del_v6 = [
        Attribute::Lifetime(Lifetime(0)),
        Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV6)),
    ];
    let r = h.authed("127.0.0.1:41002", Method::REFRESH, &del_v6, &c);
    assert_eq!((r.class(), r.lifetime()), (Class::Success, Some(0)));
    assert_eq!(h.sockets.open.len(), 2, "v6-only allocation and the dual's v4 remain");
    let v6_again = [Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV6))];
    assert_eq!(h.authed("127.0.0.1:41002", Method::REFRESH, &v6_again, &c).code(), Some(443));

    // Without IPv6 relaying: 440 for IPv6, partial success for dual.
    let mut h = Harness::new();
    assert_eq!(h.authed("127.0.0.1:41006", Method::ALLOCATE, &v6, &c).code(), Some(440));
    let r = h.authed("127.0.0.1:41007", Method::ALLOCATE, &dual, &c);
    assert_eq!(r.relayed().len(), 1);
    let e = r.msg().get::<AddressErrorCode>().unwrap().unwrap();
    assert_eq!((e.family, e.code), (AddressFamily::IPV6, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED));
}

#[test]
fn the_draft_additional_address_family_code_is_accepted() {
    // coturn 4.6's clients ask for a dual allocation with 0x8032.
    let mut h = Harness::new();
    let mut config = config();
    config.relay_ips[1] = vec![RelayIp { bind: "::1".parse().unwrap(), external: None }];
    h.server = Server::new(Arc::new(config), Arc::new(NodeState::new(Quotas::default())), h.now, UNIX0, 42);
    let c = Harness::alice();
    let legacy = Attribute::Unknown(ip2p_wire::RawAttribute { typ: ip2p_wire::AttrType(0x8032), value: &[2, 0, 0, 0] });
    let r = h.authed(CLIENT, Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::UDP), legacy], &c);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.relayed().len(), 2, "IPv4 and IPv6");
}

#[test]
fn even_port_reservation_and_dont_fragment() {
    let mut h = Harness::new();
    let c = Harness::alice();
    let udp = Attribute::RequestedTransport(RequestedTransport::UDP);
    for i in 0..10 {
        let r = h.authed(
            &format!("127.0.0.1:{}", 42000 + i),
            Method::ALLOCATE,
            &[udp, Attribute::EvenPort(EvenPort { reserve_next: false })],
            &c,
        );
        assert_eq!(r.relayed()[0].port() % 2, 0);
    }
    let token_even = [
        udp,
        Attribute::ReservationToken(ReservationToken(&[1; 8])),
        Attribute::EvenPort(EvenPort { reserve_next: false }),
    ];
    assert_eq!(h.authed("127.0.0.1:42102", Method::ALLOCATE, &token_even, &c).code(), Some(400));
    let unknown = [udp, Attribute::ReservationToken(ReservationToken(&[1; 8]))];
    assert_eq!(h.authed("127.0.0.1:42101", Method::ALLOCATE, &unknown, &c).code(), Some(508));

    let df = [udp, Attribute::DontFragment(DontFragment)];
    let relayed = h.authed("127.0.0.1:42103", Method::ALLOCATE, &df, &c).relayed()[0];
    assert!(h.sockets.open.values().any(|&(a, df)| a == relayed && df));
}

#[test]
fn even_port_reservations_pair_rtp_and_rtcp() {
    // RFC 8656 §7.2: R=1 allocates an even port N and reserves N+1 for the
    // Allocate that presents the token (coturn's uclient does this for
    // RTP/RTCP pairs).
    let mut cfg = config();
    cfg.ports = 50000..=50005;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let udp = Attribute::RequestedTransport(RequestedTransport::UDP);
    let r =
        h.authed("127.0.0.1:46000", Method::ALLOCATE, &[udp, Attribute::EvenPort(EvenPort { reserve_next: true })], &c);
    let rtp = r.relayed()[0];
    assert_eq!(rtp.port() % 2, 0);
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    // N+1 is bound now, so no other process can take it either.
    assert_eq!(h.sockets.held, [SocketAddr::new(rtp.ip(), rtp.port() + 1)]);

    // Other allocations never get the reserved port.
    let mut ports = vec![rtp.port()];
    for i in 0..4 {
        ports.push(h.allocate(&format!("127.0.0.1:{}", 46001 + i), &c).port());
    }
    assert!(!ports.contains(&(rtp.port() + 1)), "{ports:?}");
    let with_token = [udp, Attribute::ReservationToken(ReservationToken(&token))];
    let r = h.authed("127.0.0.1:46010", Method::ALLOCATE, &with_token, &c);
    assert_eq!(r.relayed(), [SocketAddr::new(rtp.ip(), rtp.port() + 1)]);
    assert!(h.sockets.open.values().any(|&(a, _)| a == r.relayed()[0]), "the held socket became the relay");
    assert_eq!(h.authed("127.0.0.1:46011", Method::ALLOCATE, &with_token, &c).code(), Some(508), "used up");
    assert_eq!(h.server.shared.reservations(), 0);

    // N+1 taken by another process: that pair is given up, N closed again.
    let mut given_up = 0;
    for seed in 0..8 {
        let mut cfg = config();
        cfg.ports = 50000..=50003;
        let mut h = Harness::with(cfg, Quotas::default());
        h.server.rng = SmallRng::seed_from_u64(seed);
        h.sockets.taken.insert("127.0.0.1:50001".parse().unwrap());
        let r = h.authed(
            "127.0.0.1:46030",
            Method::ALLOCATE,
            &[udp, Attribute::EvenPort(EvenPort { reserve_next: true })],
            &c,
        );
        assert_eq!(r.relayed()[0].port(), 50002, "seed {seed}");
        assert_eq!(h.sockets.held.last().map(SocketAddr::port), Some(50003));
        assert_eq!(h.sockets.open.len(), 1, "50000 was closed if tried");
        given_up += h.sockets.closed.len();
    }
    assert!(given_up > 0, "some seed tried 50000 first");

    // A reservation lapses after 30 s.
    let mut h = Harness::new();
    let r =
        h.authed("127.0.0.1:46020", Method::ALLOCATE, &[udp, Attribute::EvenPort(EvenPort { reserve_next: true })], &c);
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    assert_eq!(h.server.shared.reservations(), 1);
    h.advance(31);
    assert_eq!(h.server.shared.reservations(), 0, "released (its socket closed) when it lapses");
    let with_token = [udp, Attribute::ReservationToken(ReservationToken(&token))];
    assert_eq!(h.authed("127.0.0.1:46021", Method::ALLOCATE, &with_token, &c).code(), Some(508));
    let dual_reserve = [
        udp,
        Attribute::EvenPort(EvenPort { reserve_next: true }),
        Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)),
    ];
    assert_eq!(h.authed("127.0.0.1:46022", Method::ALLOCATE, &dual_reserve, &c).code(), Some(400));
}

#[test]
fn external_addresses_are_advertised_and_bound_locally() {
    // Behind 1:1 NAT the relay binds its local address and advertises the
    // public one with the same port.
    let mut cfg = config();
    cfg.relay_ips[0] =
        vec![RelayIp { bind: "127.0.0.1".parse().unwrap(), external: Some("203.0.113.10".parse().unwrap()) }];
    let mut h = Harness::with(cfg, Quotas::default());
    let relayed = h.allocate(CLIENT, &Harness::alice());
    assert_eq!(relayed.ip(), "203.0.113.10".parse::<std::net::IpAddr>().unwrap());
    let bound = h.sockets.open.values().next().unwrap().0;
    assert_eq!(bound, SocketAddr::new("127.0.0.1".parse().unwrap(), relayed.port()));
}

#[test]
fn refresh_extends_and_deletes() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    h.advance(500);
    let r = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(900))], &c);
    assert_eq!(r.lifetime(), Some(900));
    h.advance(800);
    assert_eq!(h.server.allocations(), 1, "refreshed at 500 s for 900 s");
    let r = h.authed(CLIENT, Method::REFRESH, &[], &c);
    assert_eq!(r.lifetime(), Some(600), "no LIFETIME: the default");
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &creds("bob", "builder")).code(), Some(441));
    let r = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c);
    assert_eq!((r.class(), r.lifetime()), (Class::Success, Some(0)));
    assert_eq!(h.server.allocations(), 0);
    assert!(h.sockets.open.is_empty());
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &c).code(), Some(437));
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).code(), Some(437));
}

#[test]
fn allocations_expire_and_release_their_ports_and_quota() {
    let mut h = Harness::with(config(), Quotas::new(QuotaLimits { per_user: 1, ..QuotaLimits::default() }));
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:40001", Method::ALLOCATE, &udp, &c).code(), Some(486));
    assert_eq!(h.server.stats().allocations_refused.user_quota, 1);
    assert_eq!(h.server.poll_timeout(), Some(h.now + Duration::from_secs(600)));
    h.advance(599);
    assert_eq!(h.server.allocations(), 1);
    h.advance(1);
    assert_eq!(h.server.allocations(), 0);
    assert!(h.sockets.open.is_empty());
    assert_eq!(h.server.stats().allocations_expired, 1);
    h.allocate("127.0.0.1:40001", &c);
}

#[test]
fn capacity_limits_answer_508() {
    let mut cfg = config();
    cfg.ports = 50000..=50002;
    let mut h = Harness::with(cfg, Quotas::default());
    h.sockets.taken.insert(addr("127.0.0.1:50001"));
    let c = Harness::alice();
    let a = h.allocate("127.0.0.1:45000", &c);
    let b = h.allocate("127.0.0.1:45001", &c);
    let mut ports = [a.port(), b.port()];
    ports.sort_unstable();
    assert_eq!(ports, [50000, 50002], "the taken port is skipped");
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:45002", Method::ALLOCATE, &udp, &c).code(), Some(508));
    assert_eq!(h.server.allocations(), 2);
    let refused = h.server.stats().allocations_refused;
    assert_eq!((refused.no_relay_port, refused.node_full), (1, 0));

    let mut h = Harness::with(config(), Quotas::new(QuotaLimits { total: 1, ..QuotaLimits::default() }));
    h.allocate("127.0.0.1:45003", &c);
    assert_eq!(h.authed("127.0.0.1:45004", Method::ALLOCATE, &udp, &c).code(), Some(508));
    let refused = h.server.stats().allocations_refused;
    assert_eq!((refused.no_relay_port, refused.node_full), (0, 1));
    assert_eq!(h.server.stats().responses.get("allocate", "508"), 1);
}

#[test]
fn a_draining_server_sends_new_allocations_elsewhere_and_keeps_the_others() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    h.server.drain();
    // No alternate of the client's family: 508.
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:40001", Method::ALLOCATE, &udp, &c).code(), Some(508));
    // With one: 300 and ALTERNATE-SERVER, signed.
    let mut config = config();
    config.alternates = vec!["[2001:db8::1]:3478".parse().unwrap(), "192.0.2.7:3478".parse().unwrap()];
    h.server.reconfigure(Arc::new(config), h.now);
    let r = h.authed("127.0.0.1:40002", Method::ALLOCATE, &udp, &c);
    assert_eq!(r.code(), Some(300));
    let alternate = r.msg().get::<ip2p_wire::attr::AlternateServer>().unwrap().unwrap().0;
    assert_eq!(alternate, "192.0.2.7:3478".parse::<SocketAddr>().unwrap());
    assert!(r.msg().verify_integrity(LongTermKey::md5("alice", REALM, "wonderland").as_bytes()).is_ok());
    // The existing allocation still refreshes.
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &c).lifetime(), Some(600));
}

#[test]
fn what_is_not_a_request_is_dropped_quietly() {
    let mut h = Harness::new();
    assert_eq!(h.send(CLIENT, b""), Verdict::Drop(DropReason::NotTurn));
    assert_eq!(h.send(CLIENT, &[0x80; 40]), Verdict::Drop(DropReason::NotTurn));
    assert_eq!(h.send(CLIENT, &[0x00, 0x01, 0x00, 0x00]), Verdict::Drop(DropReason::NotTurn));
    let tid = h.tid();
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Success), tid).unwrap();
    let len = w.finish();
    assert_eq!(h.send(CLIENT, &buf[..len]), Verdict::Drop(DropReason::Ignored));
    let unknown_method = h.build(Method::new(0x0FF).unwrap(), tid, &[], None);
    assert_eq!(h.exchange(CLIENT, &unknown_method).code(), Some(400));
    let token = RelayToken(77);
    assert_eq!(h.peer_sends(token, PEER, b"x").0, Err(DropReason::NoAllocation));
}
