//! The fleet on a real redis-server (started by each test on a loopback
//! port): the registry of live nodes, what a node does when the store is
//! down, slow or talks nonsense.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip2p_tests::redis::Redis;
use ip2p_tests::{Relay, RelayOptions, get};
use nix::sys::signal::Signal;
use serde_json::Value;

pub(super) const SECRET: &str = "fleet-test-secret-0123456789";

/// The configuration of node `id` of the fleet at `url`, with `extra`
/// appended to its `[fleet]` section.
pub(super) fn config(url: &str, id: &str, extra: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 1\n\
         [auth]\nusers = [{{ name = \"alice\", password = \"wonderland\" }}]\nsecrets = [\"{SECRET}\"]\n\
         [peers]\nallow = [\"127.0.0.2/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [fleet]\nredis = \"{url}\"\nnode = \"{id}\"\nregion = \"test\"\n{extra}"
    )
}

/// A node `id` of the fleet on `redis`, with `extra` appended to its
/// `[fleet]` section.
pub(super) fn node(dp: &'static str, redis: &Redis, id: &str, extra: &str) -> Relay {
    Relay::start(&RelayOptions::new(dp, &config(&redis.url(), id, extra)))
}

/// `GET /api/v1/fleet` on `admin`.
pub(super) fn fleet(admin: SocketAddr) -> Value {
    let (code, body) = get(admin, "/api/v1/fleet", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The ids `admin` lists, sorted.
pub(super) fn ids(admin: SocketAddr) -> Vec<String> {
    let nodes = fleet(admin)["nodes"].as_array().cloned().unwrap_or_default();
    nodes.iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect()
}

/// Waits up to `limit` for `admin` to list exactly `want`; how long it took.
pub(super) fn until_listed(admin: SocketAddr, want: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = ids(admin);
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "after {limit:?}, {got:?} listed, not {want:?}: {}", fleet(admin));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn the_registry_lists_live_nodes_and_drops_a_dead_one(dp: &'static str) {
    let redis = Redis::start();
    let a = node(dp, &redis, "a", "");
    let b = node(dp, &redis, "b", "");
    let c = node(dp, &redis, "c", "");
    until_listed(a.admin.unwrap(), &["a", "b", "c"], Duration::from_secs(5));
    // Each node's view is its own last read: b's may come a beat later.
    until_listed(b.admin.unwrap(), &["a", "b", "c"], Duration::from_secs(2));
    let listed = fleet(b.admin.unwrap());
    assert_eq!((&listed["fleet"], &listed["node"], &listed["store_up"]), (&"ip2p".into(), &"b".into(), &true.into()));
    let c_record = listed["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "c").unwrap().clone();
    assert_eq!(c_record["region"], "test", "{c_record}");
    assert_eq!(c_record["addresses"], serde_json::json!([c.addr.to_string()]), "{c_record}");
    assert_eq!(c_record["draining"], false);
    assert!(c_record["capacity"].as_u64().unwrap() > 0, "{c_record}");
    assert!(c_record["urls"].as_array().unwrap().contains(&format!("turn:{}?transport=udp", c.addr).into()));
    let metrics = a.metrics();
    assert_eq!((metrics["ip2p_fleet_store_up"], metrics["ip2p_fleet_nodes"]), (1.0, 3.0));

    // Killed: gone within 5 s. Stopped: gone at once.
    c.signal(Signal::SIGKILL);
    let took = until_listed(a.admin.unwrap(), &["a", "b"], Duration::from_secs(5));
    eprintln!("{dp}: a killed node left the registry in {took:?}");
    b.signal(Signal::SIGINT);
    until_listed(a.admin.unwrap(), &["a"], Duration::from_millis(2500));
}

/// Records no node writes (garbage, absurd values) are left out and
/// counted; a store that goes away is reported, and joined again when it
/// is back, empty.
fn bad_records_and_a_store_that_comes_back(dp: &'static str) {
    let mut redis = Redis::start();
    let a = node(dp, &redis, "a", "");
    until_listed(a.admin.unwrap(), &["a"], Duration::from_secs(5));
    let far = "99999999999999";
    redis.cli(&["ZADD", "ip2p:{ip2p}:nodes", far, "garbage", far, "absurd"]);
    redis.cli(&["HSET", "ip2p:{ip2p}:records", "garbage", "{not json"]);
    let absurd = r#"{"id":"absurd","region":"test","version":"x","urls":[],"addresses":[],"tls_addresses":[],"allocations":5,"capacity":0,"packets_per_second":0,"bytes_per_second":0,"draining":false,"started":0}"#;
    redis.cli(&["HSET", "ip2p:{ip2p}:records", "absurd", absurd]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ids(a.admin.unwrap()), ["a"]);
    assert!(a.metrics()["ip2p_fleet_records_ignored_total"] >= 2.0);

    redis.stop();
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.metrics()["ip2p_fleet_store_up"] != 0.0 {
        assert!(Instant::now() < deadline, "{dp}: the store's loss not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    a.wait_for("fleet: the store does not answer");
    assert_eq!(get(a.admin.unwrap(), "/readyz", None).0, 200, "{dp}: ready without the store");
    assert!(redis.spawn());
    a.wait_for("fleet: the store answers");
    assert_eq!(a.metrics()["ip2p_fleet_store_up"], 1.0);
    // Its record written again into the empty store.
    assert!(redis.cli(&["HGET", "ip2p:{ip2p}:records", "a"]).contains(r#""id":"a""#), "{dp}");
}

/// A store that hangs (stopped, its connections open) costs the node no
/// request: the API answers, and the store's loss is seen within a second
/// or so.
fn a_hanging_store_stalls_nothing(dp: &'static str) {
    let redis = Redis::start();
    let a = node(dp, &redis, "a", "");
    until_listed(a.admin.unwrap(), &["a"], Duration::from_secs(5));
    redis.hang();
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.metrics()["ip2p_fleet_store_up"] != 0.0 {
        assert!(Instant::now() < deadline, "{dp}: a hanging store not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = ip2p_client::Client::new(a.addr, "alice", "wonderland").unwrap();
    client.allocate(None).unwrap();
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(3);
    while a.metrics()["ip2p_fleet_store_up"] != 1.0 {
        assert!(Instant::now() < deadline, "{dp}: the store back not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Without `[fleet]` there is no fleet to list; keys of it without
/// `fleet.redis` are refused, as are bad values.
fn without_a_fleet_and_bad_settings(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(
        dp,
        "listen = [\"127.0.0.1:0\"]\n[auth]\nusers = [{ name = \"a\", password = \"b\" }]\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let (code, body) = get(relay.admin.unwrap(), "/api/v1/fleet", None);
    assert!(code == 404 && body.contains("fleet.redis"), "{code} {body}");
    let dir = ip2p_tests::TempDir::new("fleet-config");
    for (fleet, says) in [
        ("region = \"eu\"", "fleet.region"),
        ("redis = \"http://127.0.0.1:1\"", "fleet.redis"),
        ("redis = \"redis://127.0.0.1:1\"\nnode = \"a b\"", "fleet.node"),
        ("redis = \"redis://127.0.0.1:1\"\nredirect_above = 1.5", "fleet.redirect_above"),
        ("redis = \"redis://127.0.0.1:1\"\nwhen_store_down = \"wait\"", "when_store_down"),
    ] {
        let out =
            std::process::Command::new(ip2p_tests::relay_bin())
                .args(["--datapath", dp, "check-config"])
                .arg(dir.file(
                    "r.toml",
                    &format!("listen = [\"127.0.0.1:0\"]\n[auth]\nusers = [{{ name = \"a\", password = \"b\" }}]\n[fleet]\n{fleet}\n"),
                ))
                .output()
                .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{fleet}: {err}");
    }
}

on_both_datapaths! {
    names:
    the_registry_lists_live_nodes_and_drops_a_dead_one: the_registry_lists_live_nodes_and_drops_a_dead_one();
    bad_records_and_a_store_that_comes_back: bad_records_and_a_store_that_comes_back();
    a_hanging_store_stalls_nothing: a_hanging_store_stalls_nothing();
    without_a_fleet_and_bad_settings: without_a_fleet_and_bad_settings();
}
