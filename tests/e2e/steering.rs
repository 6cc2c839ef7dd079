//! Load-aware steering in a fleet on a real redis-server: credentials
//! name the least loaded nodes, a full or draining node sends an Allocate
//! to another live node with 300 Try Alternate, and the client allocates
//! there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip2p_client::{Client, ClientError};
use ip2p_tests::redis::Redis;
use ip2p_tests::{Relay, post};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::fleet::{fleet, node, until_listed};

/// Waits until `admin`'s view says node `id` has `allocations`.
fn until_seen(admin: SocketAddr, id: &str, allocations: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let view = fleet(admin);
        let nodes = view["nodes"].as_array().unwrap();
        if nodes.iter().any(|n| n["id"] == id && n["allocations"] == allocations) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} with {allocations} allocations never seen: {view}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn allocated(relay: &Relay, n: usize) -> Vec<Client> {
    (0..n)
        .map(|_| {
            let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
            c.allocate(None).unwrap();
            c
        })
        .collect()
}

/// `POST /api/v1/credentials` on `admin` with `body`.
fn credentials(admin: SocketAddr, body: &str) -> Value {
    let (code, answer) = post(admin, "/api/v1/credentials", body, None);
    assert_eq!(code, 200, "{answer}");
    serde_json::from_str(&answer).unwrap()
}

fn credentials_name_the_least_loaded_nodes(dp: &'static str) {
    let redis = Redis::start();
    let advertised = "advertise = \"c.relay.example.org\"\n";
    let (a, b, c) = (node(dp, &redis, "a", ""), node(dp, &redis, "b", ""), node(dp, &redis, "c", advertised));
    let _on_a = allocated(&a, 2);
    let _on_c = allocated(&c, 1);
    // What a's last read says (each node's view is its own).
    until_listed(a.admin.unwrap(), &["a", "b", "c"], Duration::from_secs(5));
    until_seen(a.admin.unwrap(), "a", 2);
    until_seen(a.admin.unwrap(), "c", 1);
    let answer = credentials(a.admin.unwrap(), r#"{"user": "web-user", "ttl": 600}"#);
    let servers = answer["iceServers"].as_array().unwrap();
    let named = |i: usize| servers[i]["urls"].as_array().unwrap().clone();
    assert_eq!(servers.len(), 2, "{answer}");
    assert!(named(0).contains(&format!("turn:{}?transport=udp", b.addr).into()), "{dp}: b first: {answer}");
    // c's by the name it advertises.
    let c_url = format!("turn:c.relay.example.org:{}?transport=udp", c.addr.port());
    assert!(named(1).contains(&c_url.into()), "{dp}: c next: {answer}");
    // The credential is good on the node named.
    let user = servers[0]["username"].as_str().unwrap();
    let mut client = Client::new(b.addr, user, servers[0]["credential"].as_str().unwrap()).unwrap();
    client.allocate(None).unwrap();
    // Another region has no nodes: the least loaded of any.
    let elsewhere = credentials(c.admin.unwrap(), r#"{"user": "u", "region": "mars"}"#);
    assert_eq!(elsewhere["iceServers"].as_array().unwrap().len(), 2, "{elsewhere}");
    let (code, body) = post(a.admin.unwrap(), "/api/v1/credentials", r#"{"user": "u", "region": "a b"}"#, None);
    assert!(code == 400 && body.contains("region"), "{code} {body}");
}

/// Node `a` takes 2 allocations and redirects from the first
/// (`redirect_above = 0.5`); `b` has room.
fn a_full_node_sends_an_allocate_to_another_live_node(dp: &'static str) {
    let redis = Redis::start();
    let a = node(dp, &redis, "a", "redirect_above = 0.5\n[allocation]\nmax_allocations = 2\n");
    let b = node(dp, &redis, "b", "");
    until_listed(a.admin.unwrap(), &["a", "b"], Duration::from_secs(5));
    let _first = allocated(&a, 1);
    let mut second = Client::new(a.addr, "alice", "wonderland").unwrap();
    match second.allocate(None) {
        Err(ClientError::Rejected(300, _)) => {}
        other => panic!("{dp}: {other:?}"),
    }
    assert_eq!(second.alternate, Some(b.addr), "{dp}: to b, the live node with room");
    let mut there = Client::new(second.alternate.unwrap(), "alice", "wonderland").unwrap();
    there.allocate(None).unwrap();
    assert_eq!(a.metrics()["ip2p_allocations_refused_total{reason=\"redirected\"}"], 1.0);
    // With b gone, a serves up to its own limit.
    drop(b);
    until_listed(a.admin.unwrap(), &["a"], Duration::from_secs(5));
    second.allocate(None).unwrap();
}

fn a_draining_node_sends_new_allocations_to_the_fleet(dp: &'static str) {
    let redis = Redis::start();
    let a = node(dp, &redis, "a", "");
    let b = node(dp, &redis, "b", "");
    until_listed(a.admin.unwrap(), &["a", "b"], Duration::from_secs(5));
    let mut held = allocated(&a, 1);
    a.signal(Signal::SIGTERM);
    a.wait_for("draining");
    let mut late = Client::new(a.addr, "alice", "wonderland").unwrap();
    assert!(matches!(late.allocate(None), Err(ClientError::Rejected(300, _))), "{dp}");
    assert_eq!(late.alternate, Some(b.addr), "{dp}");
    // Its record says so: credentials from b name only b.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !fleet(b.admin.unwrap())["nodes"].as_array().unwrap().iter().any(|n| n["id"] == "a" && n["draining"] == true)
    {
        assert!(Instant::now() < deadline, "{dp}: a's draining not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answer = credentials(b.admin.unwrap(), r#"{"user": "u"}"#);
    assert_eq!(answer["iceServers"].as_array().unwrap().len(), 1, "{dp}: {answer}");
    held[0].refresh(Some(0)).unwrap();
}

on_both_datapaths! {
    names:
    credentials_name_the_least_loaded_nodes: credentials_name_the_least_loaded_nodes();
    a_full_node_sends_an_allocate_to_another_live_node: a_full_node_sends_an_allocate_to_another_live_node();
    a_draining_node_sends_new_allocations_to_the_fleet: a_draining_node_sends_new_allocations_to_the_fleet();
}
