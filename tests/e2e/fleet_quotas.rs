//! Fleet-wide quotas on a real redis-server: a user's allocations count
//! across every node, a dead node's stop counting, and with the store
//! down new allocations follow `fleet.when_store_down`.

use std::time::{Duration, Instant};

use ip2p_client::{Client, ClientError};
use ip2p_tests::Relay;
use ip2p_tests::redis::Redis;
use nix::sys::signal::Signal;

use super::fleet::{node, until_listed};

fn allocate(relay: &Relay) -> Result<Client, ClientError> {
    let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
    c.allocate(None).map(|_| c)
}

/// Retries an Allocate on `relay` until it succeeds, within `limit`.
fn allocate_within(relay: &Relay, limit: Duration) -> (Client, Duration) {
    let start = Instant::now();
    loop {
        match allocate(relay) {
            Ok(c) => return (c, start.elapsed()),
            Err(ClientError::Rejected(486, _)) if start.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("after {:?}: {e}", start.elapsed()),
        }
    }
}

const QUOTA: &str = "[allocation]\nuser_quota = 2\n";

fn a_user_quota_holds_across_three_nodes(dp: &'static str) {
    let redis = Redis::start();
    let (a, b, c) = (node(dp, &redis, "a", QUOTA), node(dp, &redis, "b", QUOTA), node(dp, &redis, "c", QUOTA));
    until_listed(a.admin.unwrap(), &["a", "b", "c"], Duration::from_secs(5));
    let mut on_a = allocate(&a).unwrap();
    let _on_b = allocate(&b).unwrap();
    for relay in [&c, &a, &b] {
        match allocate(relay) {
            Err(ClientError::Rejected(486, _)) => {}
            other => panic!("{dp}: a third allocation: {other:?}"),
        }
    }
    assert_eq!(c.metrics()["ip2p_fleet_admissions_total{word=\"over_user\"}"], 1.0);
    assert_eq!(c.metrics()["ip2p_allocations_refused_total{reason=\"user_quota\"}"], 1.0);
    // One ends on a: the user has room on c within a second or so.
    on_a.refresh(Some(0)).unwrap();
    let (_on_c, took) = allocate_within(&c, Duration::from_secs(3));
    eprintln!("{dp}: a released allocation counted out in {took:?}");
    // A node that dies: its allocations stop counting within 5 s.
    b.signal(Signal::SIGKILL);
    let (_again, took) = allocate_within(&a, Duration::from_secs(6));
    eprintln!("{dp}: a dead node's allocations counted out in {took:?}");
    assert!(took < Duration::from_secs(5), "{dp}: {took:?}");
}

/// Redis stops in the middle: existing allocations go on; new ones are
/// admitted under the node's own limits (`local`, the default) or
/// refused with 508 (`refuse`); when it is back the counts are whole
/// again.
fn with_the_store_down_new_allocations_follow_when_store_down(dp: &'static str) {
    let mut redis = Redis::start();
    let local = node(dp, &redis, "local", QUOTA);
    let refuse = node(dp, &redis, "refuse", &format!("when_store_down = \"refuse\"\n{QUOTA}"));
    until_listed(local.admin.unwrap(), &["local", "refuse"], Duration::from_secs(5));
    let mut held = allocate(&local).unwrap();
    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(3);
    while local.metrics()["ip2p_fleet_store_up"] != 0.0 || refuse.metrics()["ip2p_fleet_store_up"] != 0.0 {
        assert!(Instant::now() < deadline, "{dp}: the store's loss not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(held.refresh(Some(600)).unwrap(), 600, "{dp}: an existing allocation goes on");
    let started = Instant::now();
    let _second = allocate(&local).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "{dp}: answered at once: {:?}", started.elapsed());
    match allocate(&local) {
        Err(ClientError::Rejected(486, _)) => {}
        other => panic!("{dp}: the node's own quota of 2: {other:?}"),
    }
    match allocate(&refuse) {
        Err(ClientError::Rejected(508, _)) => {}
        other => panic!("{dp}: refuse: {other:?}"),
    }
    assert_eq!(refuse.metrics()["ip2p_allocations_refused_total{reason=\"store_down\"}"], 1.0);
    // Back, empty: the nodes write their counts again; alice holds 2.
    assert!(redis.spawn());
    let deadline = Instant::now() + Duration::from_secs(3);
    while redis.cli(&["HGET", "ip2p:{ip2p}:quota:user:alice", "local"]).trim() != "2" {
        assert!(Instant::now() < deadline, "{dp}: the counts not written again");
        std::thread::sleep(Duration::from_millis(50));
    }
    while refuse.metrics()["ip2p_fleet_store_up"] != 1.0 {
        assert!(Instant::now() < deadline, "{dp}: refuse never saw the store again");
        std::thread::sleep(Duration::from_millis(50));
    }
    match allocate(&refuse) {
        Err(ClientError::Rejected(486, _)) => {}
        other => panic!("{dp}: counted across the fleet again: {other:?}"),
    }
}

/// A burst across the nodes: 30 Allocates of one user at once on three
/// nodes with a quota of 5 make at most one per node more than 5 (the
/// check and the count are one script in Redis: exactly 5 here).
fn a_burst_across_nodes_overshoots_by_at_most_one_a_node(dp: &'static str) {
    let redis = Redis::start();
    let quota = "[allocation]\nuser_quota = 5\n";
    let nodes = [node(dp, &redis, "a", quota), node(dp, &redis, "b", quota), node(dp, &redis, "c", quota)];
    until_listed(nodes[0].admin.unwrap(), &["a", "b", "c"], Duration::from_secs(5));
    let made = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for relay in &nodes {
            for _ in 0..10 {
                s.spawn(|| {
                    if let Ok(c) = allocate(relay) {
                        made.lock().unwrap().push(c);
                    }
                });
            }
        }
    });
    let made = made.into_inner().unwrap().len();
    eprintln!("{dp}: a burst of 30 with a quota of 5 made {made}");
    assert!((5..=5 + nodes.len()).contains(&made), "{dp}: {made} made");
}

on_both_datapaths! {
    names:
    a_user_quota_holds_across_three_nodes: a_user_quota_holds_across_three_nodes();
    with_the_store_down_new_allocations_follow_when_store_down: with_the_store_down_new_allocations_follow_when_store_down();
    a_burst_across_nodes_overshoots_by_at_most_one_a_node: a_burst_across_nodes_overshoots_by_at_most_one_a_node();
}
