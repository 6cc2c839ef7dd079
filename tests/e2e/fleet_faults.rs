//! A fleet node with a bad neighbour: a Redis that refuses its password,
//! a server that answers garbage, a Redis that stops in the middle of
//! traffic; and a handover, which keeps the node's place in the fleet.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::redis::Redis;
use ip2p_tests::{Relay, RelayOptions, TempDir, get, peer};
use serde_json::Value;

use super::fleet::{config, fleet, node, until_listed};
use super::sessions::exchange;

/// Waits up to 3 s for `relay`'s store to be seen `up` (or down).
fn until_store(relay: &Relay, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while relay.metrics()["ip2p_fleet_store_up"] != f64::from(u8::from(up)) {
        assert!(Instant::now() < deadline, "the store never seen {}", if up { "up" } else { "down" });
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn a_refused_password_or_garbage_is_a_log_line_and_a_metric(dp: &'static str) {
    // A Redis that wants a password the URL does not give.
    let redis = Redis::start();
    let _ = redis.cli(&["CONFIG", "SET", "requirepass", "s3same/0pen-1234567z"]);
    let refused = node(dp, &redis, "a", "");
    let line = refused.wait_for("fleet: the store does not answer");
    assert!(line.to_lowercase().contains("auth"), "{dp}: {line}");
    until_store(&refused, false);
    let status: Value = serde_json::from_str(&get(refused.admin.unwrap(), "/status", None).1).unwrap();
    assert_eq!(status["fleet"]["store_up"], false, "{status}");
    Client::new(refused.addr, "alice", "wonderland").unwrap().allocate(None).unwrap();
    // With it (from a file, as a Secret holds it), joined.
    let dir = TempDir::new("fleet-password");
    let password = dir.file("password", "s3same/0pen-1234567z\n");
    let extra = format!("password_file = \"{}\"\n", password.display());
    let joined = Relay::start(&RelayOptions::new(dp, &config(&redis.url(), "b", &extra)));
    until_store(&joined, true);
    assert!(!joined.seen().join("\n").contains("s3same"), "{dp}: the password is never logged");
    // A server that answers anything with garbage.
    let garbage = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", garbage.local_addr().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    garbage.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((mut s, _)) = garbage.accept() {
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut [0u8; 4096]);
                let _ = s.write_all(b"?!\x00\xff not RESP at all\r\n");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let confused = Relay::start(&RelayOptions::new(dp, &config(&url, "c", "")));
    confused.wait_for("fleet: the store does not answer");
    until_store(&confused, false);
    assert!(confused.metrics()["ip2p_fleet_store_errors_total"] >= 1.0);
    Client::new(confused.addr, "alice", "wonderland").unwrap().allocate(None).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
}

/// Redis stops while a session relays: not one packet is lost.
fn the_store_stopping_loses_no_packet(dp: &'static str) {
    let mut redis = Redis::start();
    let a = node(dp, &redis, "a", "");
    until_listed(a.admin.unwrap(), &["a"], Duration::from_secs(5));
    let p = peer();
    let mut alice = Client::new(a.addr, "alice", "wonderland").unwrap();
    let relayed = alice.allocate(None).unwrap();
    alice.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    let start = Instant::now();
    let mut exchanged = 0;
    // 3 s of traffic, each packet both ways; Redis goes after one second.
    while start.elapsed() < Duration::from_secs(3) {
        if exchanged == 100 {
            redis.stop();
        }
        exchange(&mut alice, 0x4000, relayed, &p, &[100]);
        exchanged += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    until_store(&a, false);
    eprintln!("{dp}: {exchanged} packets each way, none lost, Redis gone after 100");
    assert!(exchanged > 100);
}

/// A handover keeps the node in the registry, and its allocations counted.
fn a_handover_keeps_the_node_in_the_fleet(dp: &'static str) {
    let redis = Redis::start();
    let dir = TempDir::new("fleet-handover");
    let socket = dir.path().join("handover.sock");
    let config = config(&redis.url(), "a", "[allocation]\nuser_quota = 5\n")
        + &format!("[handover]\nsocket = \"{}\"\n", socket.display());
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    until_listed(old.admin.unwrap(), &["a"], Duration::from_secs(5));
    let mut clients: Vec<Client> = (0..2)
        .map(|_| {
            let mut c = Client::new(old.addr, "alice", "wonderland").unwrap();
            c.allocate(None).unwrap();
            c
        })
        .collect();
    let counted = || redis.cli(&["HGET", "ip2p:{ip2p}:quota:user:alice", "a"]).trim().to_owned();
    assert_eq!(counted(), "2");
    let next = RelayOptions::new(dp, &config).arg("--take-over");
    let new = Relay::start(&RelayOptions { bin: Some(ip2p_tests::next_relay_bin()), ..next });
    new.wait_for("took over the previous process's node");
    assert!(old.exits(), "{dp}");
    // Never left the registry; the new process writes the record.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let live = redis.cli(&["ZRANGEBYSCORE", "ip2p:{ip2p}:nodes", "-inf", "+inf"]);
        assert!(live.contains('a'), "{dp}: left the registry: {live}");
        let nodes = fleet(new.admin.unwrap())["nodes"].clone();
        if nodes[0]["version"] == "0.0.0-next" {
            assert_eq!(nodes[0]["allocations"], 2, "{dp}: {nodes}");
            break;
        }
        assert!(Instant::now() < deadline, "{dp}: the new process's record: {nodes}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(counted(), "2", "{dp}: still counted");
    for c in &mut clients {
        c.refresh(Some(0)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !counted().is_empty() {
        assert!(Instant::now() < deadline, "{dp}: released after the handover: {}", counted());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The store found through a Sentinel, and a failover: the nodes follow
/// the new master by themselves.
fn a_sentinel_names_the_store_and_a_failover_moves_the_fleet(dp: &'static str) {
    let mut master = Redis::start();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sentinel = Redis::sentinel(&master, "ip2p-store");
    let url = format!("redis+sentinel://127.0.0.1:{}/ip2p-store", sentinel.port);
    let a = Relay::start(&RelayOptions::new(dp, &config(&url, "a", "")));
    until_listed(a.admin.unwrap(), &["a"], Duration::from_secs(5));
    assert!(master.cli(&["HGET", "ip2p:{ip2p}:records", "a"]).contains(r#""id":"a""#), "{dp}: on the master");
    master.stop();
    a.wait_for("fleet: the store does not answer");
    // The Sentinel promotes the replica; the node finds it and writes there.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !replica.cli(&["HGET", "ip2p:{ip2p}:records", "a"]).contains(r#""id":"a""#)
        || !replica.cli(&["ROLE"]).starts_with("master")
    {
        assert!(Instant::now() < deadline, "{dp}: no failover seen: {}", replica.cli(&["ROLE"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    until_store(&a, true);
    Client::new(a.addr, "alice", "wonderland").unwrap().allocate(None).unwrap();
}

/// A store over TLS (`rediss://`), its certificate checked against
/// `fleet.ca_file`: joined; without the CA, refused (a log line).
fn a_store_over_tls_is_checked_against_its_ca(dp: &'static str) {
    let pki = ip2p_tests::support::Pki::new(&format!("fleet-tls-{dp}"));
    let tls_port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (cert, key) = (pki.cert().display().to_string(), pki.key().display().to_string());
    let ca = pki.ca().display().to_string();
    let redis = Redis::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}");
    let trusted = Relay::start(&RelayOptions::new(dp, &config(&url, "a", &format!("ca_file = \"{ca}\"\n"))));
    until_store(&trusted, true);
    assert!(redis.cli(&["HGET", "ip2p:{ip2p}:records", "a"]).contains(r#""id":"a""#), "{dp}");
    let untrusted = Relay::start(&RelayOptions::new(dp, &config(&url, "b", "")));
    let line = untrusted.wait_for("fleet: the store does not answer");
    assert!(line.to_lowercase().contains("certificate") || line.to_lowercase().contains("tls"), "{dp}: {line}");
}

on_both_datapaths! {
    names:
    a_refused_password_or_garbage_is_a_log_line_and_a_metric: a_refused_password_or_garbage_is_a_log_line_and_a_metric();
    the_store_stopping_loses_no_packet: the_store_stopping_loses_no_packet();
    a_handover_keeps_the_node_in_the_fleet: a_handover_keeps_the_node_in_the_fleet();
    a_sentinel_names_the_store_and_a_failover_moves_the_fleet: a_sentinel_names_the_store_and_a_failover_moves_the_fleet();
    a_store_over_tls_is_checked_against_its_ca: a_store_over_tls_is_checked_against_its_ca();
}
