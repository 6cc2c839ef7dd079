//! Live permissions and channels are judged again whenever what judges
//! them changes: a reload's peer policy, the host's own addresses, a
//! handover into a stricter node. What is now denied ends at once, in the
//! core and in every mirror of it (the events an XDP table follows).

use super::harness::*;

fn channel_data(channel: u16, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4 + data.len() + 3];
    let len = write_channel_data(&mut buf, channel, data, Transport::Datagram).unwrap();
    buf.truncate(len);
    buf
}

fn events(h: &mut Harness) -> Vec<Event> {
    std::iter::from_fn(|| h.server.poll_event()).collect()
}

/// A harness with events on whose client (alice) holds a channel 0x4000
/// to `peer`; the events so far are taken.
fn bound_to(cfg: Config, peer: &str) -> (Harness, Creds) {
    let mut h = Harness::with(Config { events: true, ..cfg }, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(peer)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    assert!(matches!(events(&mut h)[..], [Event::Path(_)]));
    assert!(matches!(h.send(CLIENT, &channel_data(0x4000, b"x")), Verdict::Forward(_)));
    (h, c)
}

#[test]
fn a_reload_that_denies_a_peer_ends_its_permission_and_channel_at_once() {
    let (mut h, c) = bound_to(config(), PEER);
    let mut stricter = config();
    stricter.events = true;
    stricter.policy.deny = vec!["127.0.0.2/32".parse().unwrap()];
    h.server.reconfigure(std::sync::Arc::new(stricter), h.now);

    let relay = h.only_token();
    assert_eq!(events(&mut h), [Event::RelayGone(relay)], "its fast-path entries go, none come back");
    assert_eq!(h.send(CLIENT, &channel_data(0x4000, b"x")), Verdict::Drop(DropReason::NoChannel));
    let tid = h.tid();
    let send = h.build_send(tid, PEER, b"x");
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::DeniedAddress));
    assert!(h.peer_sends(relay, PEER, b"back").0.is_err(), "nor does the peer reach the client");
    assert_eq!(h.server.stats().revoked, 2, "a permission and a channel");
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).code(), Some(403));
}

#[test]
fn a_reload_that_changes_nothing_for_a_peer_leaves_it_alone() {
    let (mut h, _) = bound_to(config(), PEER);
    let mut same = config();
    same.events = true;
    same.policy.deny = vec!["198.51.100.0/24".parse().unwrap()];
    h.server.reconfigure(std::sync::Arc::new(same), h.now);
    assert_eq!(events(&mut h), [], "nothing to republish");
    assert!(matches!(h.send(CLIENT, &channel_data(0x4000, b"x")), Verdict::Forward(_)));
    assert_eq!(h.server.stats().revoked, 0);
}

#[test]
fn an_address_the_host_gains_is_no_peer_once_judged_again() {
    let mut cfg = config();
    cfg.policy.allow = vec!["0.0.0.0/0".parse().unwrap()];
    let (mut h, c) = bound_to(cfg, "8.8.8.8:53");
    // A VIP fails over to this host: 8.8.8.8 is now one of its own.
    h.server.shared.local.set(LocalRanges::new(["8.8.8.8/32".parse().unwrap()]));
    h.server.rejudge(h.now);

    let relay = h.only_token();
    assert_eq!(events(&mut h), [Event::RelayGone(relay)]);
    assert_eq!(h.send(CLIENT, &channel_data(0x4000, b"GET /")), Verdict::Drop(DropReason::NoChannel));
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr("8.8.8.8:53")], &c).code(), Some(403));
    assert_eq!(h.server.stats().revoked, 2);
    // And back: the address left the host, and is a peer again.
    h.server.shared.local.set(LocalRanges::default());
    h.server.rejudge(h.now);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr("8.8.8.8:53")], &c).class(), Class::Success);
}

/// A request that sees the host's new addresses (its peer refused with
/// 403) judges the live permissions by them too, before the node's
/// command to judge again reaches this worker: nothing is relayed there
/// after the refusal.
#[test]
fn a_request_judged_by_new_host_addresses_ends_the_old_permissions_first() {
    let mut cfg = config();
    cfg.policy.allow = vec!["0.0.0.0/0".parse().unwrap()];
    let (mut h, c) = bound_to(cfg, "8.8.8.8:53");
    h.server.shared.local.set(LocalRanges::new(["8.8.8.8/32".parse().unwrap()]));
    // No rejudge() yet: the command is still on its way.
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr("8.8.8.8:53")], &c).code(), Some(403));
    assert_eq!(h.send(CLIENT, &channel_data(0x4000, b"GET /")), Verdict::Drop(DropReason::NoChannel));
    assert_eq!(h.server.stats().revoked, 2);
}

#[test]
fn a_peer_of_the_hosts_own_stays_through_a_rejudging() {
    // Two clients of this node talking through their relayed addresses.
    let mut h = Harness::with(Config { events: true, ..config() }, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let other = h.allocate("127.0.0.1:40002", &c).to_string();
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(&other)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    let _ = events(&mut h);
    h.server.rejudge(h.now);
    assert_eq!(events(&mut h), [], "nothing changed");
    assert_eq!(h.server.stats().revoked, 0);
}

#[test]
fn a_handover_into_a_stricter_node_keeps_only_what_its_policy_allows() {
    let (h, _) = bound_to(config(), PEER);
    let mut stricter = config();
    stricter.policy.deny = vec!["127.0.0.2/32".parse().unwrap()];
    let mut next = Harness::with(stricter, Quotas::default());
    next.now = h.now;
    for moved in h.server.export(h.now).moved {
        let moved = moved.try_map(|_, bound| {
            next.sockets.held.push(bound);
            Ok::<_, ()>(Held { addr: bound, socket: None })
        });
        next.server.adopt(next.now, moved.unwrap(), &mut next.sockets).unwrap();
    }
    assert_eq!(next.server.allocations(), 1, "the allocation moves");
    assert_eq!(next.send(CLIENT, &channel_data(0x4000, b"x")), Verdict::Drop(DropReason::NoChannel));
    assert_eq!(next.server.stats().revoked, 2);
}

/// What a crafted snapshot may hold: lifetimes past any limit are cut to
/// this node's, counts and channel numbers no core makes are refused.
#[test]
fn an_adopted_allocation_is_held_to_this_nodes_limits() {
    let (h, _) = bound_to(config(), PEER);
    let adopt = |change: &dyn Fn(&mut Moved<Held>)| {
        let mut next = Harness::with(config(), Quotas::default());
        next.now = h.now;
        let moved = h.server.export(h.now).moved.remove(0);
        let mut moved = moved
            .try_map(|_, bound| {
                next.sockets.held.push(bound);
                Ok::<_, ()>(Held { addr: bound, socket: None })
            })
            .unwrap();
        change(&mut moved);
        let result = next.server.adopt(next.now, moved, &mut next.sockets);
        (next, result)
    };
    let (mut next, result) = adopt(&|m| {
        m.lifetime = Duration::from_millis(u64::MAX);
        m.channels[0].lifetime = Duration::from_millis(u64::MAX);
        m.permissions[0].lifetime = Duration::from_millis(u64::MAX);
    });
    result.unwrap();
    next.advance(3600);
    assert_eq!(next.server.allocations(), 0, "lived past max_lifetime");

    for (what, change) in [
        ("channel number", &(|m: &mut Moved<Held>| m.channels[0].number = 0x3fff) as &dyn Fn(&mut Moved<Held>)),
        ("channels", &|m| m.channels = vec![m.channels[0]; 257]),
        ("permissions", &|m| m.permissions = vec![m.permissions[0]; 257]),
        ("family", &|m| m.relays.swap(0, 1)),
        ("user name", &|m| m.username = "u".repeat(600)),
    ] {
        let (next, result) = adopt(change);
        assert!(matches!(result, Err(AdoptError::Invalid(_))), "{what}: {result:?}");
        assert_eq!(next.server.allocations(), 0, "{what}");
        assert!(next.sockets.open.is_empty(), "{what}: a socket stays open");
    }
}
