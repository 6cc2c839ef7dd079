//! The forwarding-state events a mirror of it (a kernel fast path) is
//! built from: published when a path starts or its deadline moves, when an
//! allocation's paths end, and never for a path the core would not
//! forward unconditionally.

use super::harness::*;

fn with_events(change: impl FnOnce(&mut Config)) -> Harness {
    let mut cfg = config();
    cfg.events = true;
    change(&mut cfg);
    Harness::with(cfg, Quotas::default())
}

fn events(h: &mut Harness) -> Vec<Event> {
    std::iter::from_fn(|| h.server.poll_event()).collect()
}

fn bind(n: u16, peer: &str) -> [Attribute<'static>; 2] {
    [Attribute::ChannelNumber(ChannelNumber(n)), peer_attr(peer)]
}

#[test]
fn a_path_carries_its_channels_and_permissions_deadline_and_ends_with_its_allocation() {
    // Allocations live 60 s here, but their end withdraws their paths
    // (RelayGone): a path's deadline is its permission's (300 s) and its
    // channel's (600 s), so a Refresh moves none.
    let mut h = with_events(|c| c.default_lifetime = Duration::from_secs(60));
    let c = Harness::alice();
    let relayed = h.allocate(CLIENT, &c);
    let t0 = h.now;
    assert_eq!(events(&mut h), [], "no channel, no path");
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    let relay = *h.sockets.open.keys().next().unwrap();
    let session = h.server.sessions(h.now)[0].id;
    let path = |channel, peer, until| {
        Event::Path(ChannelPath {
            relay,
            listener: ListenerId::udp(0),
            client: addr(CLIENT),
            relayed,
            channel,
            peer: addr(peer),
            host: false,
            until,
            session,
        })
    };
    let secs = |s| t0 + Duration::from_secs(s);
    assert_eq!(events(&mut h), [path(0x4000, PEER, secs(300))], "the permission's");

    h.now = secs(30);
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(3600))], &c).class(), Class::Success);
    assert_eq!(events(&mut h), [], "a Refresh moves no path");
    // CreatePermission renews the permission: the path moves on.
    h.now = secs(200);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    assert_eq!(events(&mut h), [path(0x4000, PEER, secs(500))]);
    // Replayed within 10 s of it: nothing to write again.
    for at in [201, 205, 209] {
        h.now = secs(at);
        assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
        assert_eq!(events(&mut h), [], "at {at} s");
    }
    h.now = secs(215);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    assert_eq!(events(&mut h), [path(0x4000, PEER, secs(515))], "more than 10 s later");
    // A second channel to the same peer IP publishes itself alone.
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4001, "127.0.0.2:7001"), &c).class(), Class::Success);
    assert_eq!(events(&mut h), [path(0x4001, "127.0.0.2:7001", secs(515))]);

    // Deleted: every path of its relay ends; draining says so too.
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    assert_eq!(events(&mut h), [Event::RelayGone(relay)]);
    h.server.drain();
    assert_eq!(events(&mut h), [Event::Draining]);
}

/// A client with 256 channels replaying its signed Refresh, or a
/// CreatePermission for one of its peers, makes no work for a mirror.
#[test]
fn replayed_requests_with_many_channels_publish_nothing() {
    let mut h = with_events(|c| c.policy.allow.push("198.51.100.0/24".parse().unwrap()));
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    for i in 0..256u16 {
        let peer = format!("198.51.100.{}:{}", i % 4, 1000 + i);
        assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000 + i, &peer), &c).class(), Class::Success);
    }
    assert_eq!(events(&mut h).len(), 256);
    for _ in 0..100 {
        h.now += Duration::from_millis(1);
        assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &c).class(), Class::Success);
        let permission = [peer_attr("198.51.100.1:1")];
        assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &permission, &c).class(), Class::Success);
    }
    assert_eq!(events(&mut h), []);
}

#[test]
fn expiry_ends_the_paths() {
    let mut h = with_events(|_| {});
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    let relay = *h.sockets.open.keys().next().unwrap();
    assert!(matches!(events(&mut h)[..], [Event::Path(_)]));
    h.advance(600);
    assert_eq!(events(&mut h), [Event::RelayGone(relay)]);
}

#[test]
fn only_paths_the_core_forwards_unconditionally_are_published() {
    let c = Harness::alice();
    // Off: nothing is queued.
    let mut h = Harness::new();
    h.allocate(CLIENT, &c);
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    assert_eq!(events(&mut h), []);

    // Under a bandwidth limit, every packet is counted against it.
    let mut h = with_events(|c| c.bandwidth = 10_000);
    h.allocate(CLIENT, &c);
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    assert_eq!(events(&mut h), []);

    // A client over TCP or TLS.
    let mut h = with_events(|_| {});
    h.listener = ListenerId::stream(0);
    h.allocate(CLIENT, &c);
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    assert_eq!(events(&mut h), []);

    // A peer that is a relayed address of this node, with the
    // short-circuit off: the kernel carries it between the sockets.
    let mut h = with_events(|c| c.short_circuit = false);
    h.allocate(CLIENT, &c);
    let other = h.allocate("127.0.0.1:40002", &c);
    let channel = [Attribute::ChannelNumber(ChannelNumber(0x4000)), Attribute::XorPeerAddress(XorPeerAddress(other))];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &channel, &c).class(), Class::Success);
    assert_eq!(events(&mut h), []);
}

/// With the short-circuit on, a channel to another allocation's relayed
/// address is published as a host path (half of a pair a fast path can
/// carry), and a reload that turns the short-circuit off withdraws it.
#[test]
fn a_channel_between_two_allocations_here_is_a_host_path() {
    let c = Harness::alice();
    let mut h = with_events(|_| {});
    let mine = h.allocate(CLIENT, &c);
    let other = h.allocate("127.0.0.1:40002", &c);
    let channel = [Attribute::ChannelNumber(ChannelNumber(0x4000)), Attribute::XorPeerAddress(XorPeerAddress(other))];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &channel, &c).class(), Class::Success);
    let published = events(&mut h);
    let [Event::Path(p)] = published[..] else { panic!("one path: {published:?}") };
    assert!(p.host, "{p:?}");
    assert_eq!((p.relayed, p.peer, p.channel), (mine, other, 0x4000));

    h.server.reconfigure(Arc::new(Config { events: true, short_circuit: false, ..config() }), h.now);
    let after = events(&mut h);
    assert!(after.iter().all(|e| matches!(e, Event::RelayGone(_))), "withdrawn, not published again: {after:?}");
    assert!(!after.is_empty());
}

#[test]
fn a_reload_into_a_bandwidth_limit_withdraws_the_paths_and_out_of_it_restores_them() {
    let mut h = with_events(|_| {});
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    let relay = *h.sockets.open.keys().next().unwrap();
    let published = events(&mut h);
    let limited = Config { events: true, bandwidth: 10_000, ..config() };
    h.server.reconfigure(Arc::new(limited), h.now);
    assert_eq!(events(&mut h), [Event::RelayGone(relay)]);
    h.server.reconfigure(Arc::new(Config { events: true, ..config() }), h.now);
    assert_eq!(events(&mut h)[1..], published[..], "withdrawn, then published again");
}
