//! The admin listener: `/metrics` counts exactly what a client did,
//! `/status` agrees, `/healthz` and `/readyz` answer, and `/readyz` turns
//! 503 once the node drains. On each datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ip2p_client::{Client, Received};
use ip2p_relay::admin::Admin;
use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::{self, Node};
use ip2p_tests::{get, http, metrics};

const WAIT: Duration = Duration::from_secs(2);

fn start(dp: DatapathKind) -> (Node, Admin) {
    let text = r#"
        listen = ["127.0.0.1:0"]
        realm = "ip2p.test"
        workers = 2
        [auth]
        users = [{ name = "alice", password = "wonderland" }]
        [peers]
        allow = ["127.0.0.2/32"]
        "#;
    let settings = ip2p_tests::settings(dp, text);
    let node = node::start(&settings).unwrap();
    let admin = Admin::start("127.0.0.1:0".parse().unwrap(), node.handle(), None).unwrap();
    (node, admin)
}

fn metrics_match_what_a_client_did(dp: DatapathKind) {
    let (node, admin) = start(dp);
    let addr = admin.local_addr();
    let server = node.local_addrs()[0];

    // A client relays 10 × 100 bytes to a peer over a channel; the peer
    // answers 7 × 50 bytes.
    let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut alice = Client::new(server, "alice", "wonderland").unwrap();
    let relayed = alice.allocate(None).unwrap();
    alice.create_permission(&[peer_addr]).unwrap();
    alice.channel_bind(0x4000, peer_addr).unwrap();
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        alice.send_channel(0x4000, &[1; 100]).unwrap();
        assert_eq!(peer.recv_from(&mut buf).unwrap().0, 100);
    }
    for _ in 0..7 {
        peer.send_to(&[2; 50], relayed).unwrap();
        match alice.recv(WAIT).unwrap() {
            Some(Received::Channel { data, .. }) => assert_eq!(data.len(), 50),
            other => panic!("{other:?}"),
        }
    }
    // A Send indication to an address the policy denies (loopback other
    // than the allowed 127.0.0.2) is dropped, never sent.
    alice.send_indication("127.0.0.3:9".parse().unwrap(), b"no").unwrap();
    // A wrong password: the challenge, then 401.
    let mut mallory = Client::new(server, "alice", "guess").unwrap();
    assert_eq!(mallory.allocate(None).unwrap_err().code(), Some(401));

    // The drop is counted once the worker has read it: wait for it.
    let deadline = std::time::Instant::now() + WAIT;
    let mut m = metrics(addr, None);
    while m[r#"ip2p_dropped_packets_total{reason="denied_address"}"#] < 1.0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        m = metrics(addr, None);
    }
    let expect = [
        (r#"ip2p_relayed_packets_total{direction="to_peer",path="socket"}"#, 10.0),
        (r#"ip2p_relayed_packets_total{direction="to_client",path="socket"}"#, 7.0),
        (r#"ip2p_relayed_bytes_total{direction="to_peer",path="socket"}"#, 1000.0),
        (r#"ip2p_relayed_bytes_total{direction="to_client",path="socket"}"#, 350.0),
        (r#"ip2p_responses_total{method="allocate",result="success"}"#, 1.0),
        // alice's challenge, mallory's challenge and mallory's failure.
        (r#"ip2p_responses_total{method="allocate",result="401"}"#, 3.0),
        (r#"ip2p_responses_total{method="create_permission",result="success"}"#, 1.0),
        (r#"ip2p_responses_total{method="channel_bind",result="success"}"#, 1.0),
        ("ip2p_requests_total", 6.0),
        ("ip2p_request_duration_seconds_count", 6.0),
        (r#"ip2p_request_duration_seconds_bucket{le="+Inf"}"#, 6.0),
        (r#"ip2p_auth_failures_total{reason="bad_integrity"}"#, 1.0),
        (r#"ip2p_auth_failures_total{reason="unknown_user"}"#, 0.0),
        (r#"ip2p_dropped_packets_total{reason="denied_address"}"#, 1.0),
        (r#"ip2p_dropped_packets_total{reason="no_permission"}"#, 0.0),
        (r#"ip2p_allocations{transport="udp"}"#, 1.0),
        (r#"ip2p_allocations{transport="tcp"}"#, 0.0),
        ("ip2p_allocations_created_total", 1.0),
        ("ip2p_permissions", 1.0),
        ("ip2p_channels", 1.0),
        ("ip2p_workers", 2.0),
        ("ip2p_workers_responding", 2.0),
        ("ip2p_draining", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(m.get(name).copied(), Some(value), "{name}");
    }
    let datapath = if dp == DatapathKind::IoUring { "io_uring" } else { "epoll" };
    assert_eq!(m.get(&format!(r#"ip2p_build_info{{version="0.1.0",datapath="{datapath}"}}"#)), Some(&1.0));
    let per_worker: f64 = (0..2).map(|w| m[&format!(r#"ip2p_worker_allocations{{worker="{w}"}}"#)]).sum();
    assert_eq!(per_worker, 1.0);
    assert!(m[r#"ip2p_worker_cpu_seconds_total{worker="0"}"#] > 0.0);
    let duration = m["ip2p_request_duration_seconds_sum"];
    assert!(duration > 0.0 && duration < 1.0, "{duration}");

    // /status says the same.
    let (code, body) = get(addr, "/status", None);
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["allocations"]["total"], 1, "{body}");
    assert_eq!(status["allocations"]["udp"], 1);
    assert_eq!(status["state"], "ready");
    assert_eq!(status["datapath"], datapath);
    assert_eq!(status["workers"], 2);
    assert_eq!(status["listen"][0], server.to_string());

    assert_eq!(get(addr, "/healthz", None), (200, "ok\n".into()));
    assert_eq!(get(addr, "/readyz", None), (200, "ready\n".into()));
    assert_eq!(get(addr, "/nothing", None).0, 404);
    assert_eq!(http(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").0, 405);

    // Draining: not ready, still alive, and the allocation still relays.
    node.drain();
    assert_eq!(get(addr, "/readyz", None), (503, "draining\n".into()));
    assert_eq!(get(addr, "/healthz", None).0, 200);
    assert_eq!(metrics(addr, None)["ip2p_draining"], 1.0);
    alice.send_channel(0x4000, &[3; 10]).unwrap();
    assert_eq!(peer.recv_from(&mut buf).unwrap().0, 10);
    let mut late = Client::new(server, "alice", "wonderland").unwrap();
    assert_eq!(late.allocate(None).unwrap_err().code(), Some(508));
    let m = metrics(addr, None);
    assert_eq!(m[r#"ip2p_allocations_refused_total{reason="draining"}"#], 1.0);
    assert_eq!(m[r#"ip2p_responses_total{method="allocate",result="508"}"#], 1.0);
    let status: serde_json::Value = serde_json::from_str(&get(addr, "/status", None).1).unwrap();
    assert_eq!(status["state"], "draining");
}

/// The admin port cannot be had twice: the second listener fails with an
/// error that names it.
#[test]
fn a_taken_admin_port_is_an_error() {
    let (node, admin) = start(DatapathKind::Epoll);
    let err = Admin::start(admin.local_addr(), node.handle(), None).unwrap_err();
    assert!(err.to_string().contains(&admin.local_addr().to_string()), "{err}");
    let _: SocketAddr = admin.local_addr();
}

#[test]
fn metrics_on_epoll() {
    metrics_match_what_a_client_did(DatapathKind::Epoll);
}

#[test]
fn metrics_on_io_uring() {
    metrics_match_what_a_client_did(DatapathKind::IoUring);
}

/// A node with a REST secret (something to mint credentials with) and
/// its admin listener at `addr`.
fn minting(addr: &str, token: Option<&str>) -> (Node, Admin) {
    let text = r#"
        listen = ["127.0.0.1:0"]
        realm = "ip2p.test"
        workers = 1
        [auth]
        secrets = ["an-e2e-rest-secret-of-some-length"]
        "#;
    let node = node::start(&ip2p_tests::settings(DatapathKind::Epoll, text)).unwrap();
    let admin = Admin::start(addr.parse().unwrap(), node.handle(), token.map(str::to_owned)).unwrap();
    (node, admin)
}

/// Off loopback without a token, the listener mints no credential and
/// shows no session, whatever the Host header says; it serves the probes
/// and /metrics. With a token it serves the rest to the token.
#[test]
fn off_loopback_without_a_token_only_probes_and_metrics_are_served() {
    let (_node, admin) = minting("0.0.0.0:0", None);
    let addr = SocketAddr::from(([127, 0, 0, 1], admin.local_addr().port()));
    for host in ["", "Host: 127.0.0.1\r\n", "Host: localhost\r\n", "Host: 1.2.3.4\r\n", "Host: [::1]\r\n"] {
        for path in ["/selftest/config", "/selftest", "/status", "/api/v1/sessions"] {
            let (code, body) = http(addr, &format!("GET {path} HTTP/1.0\r\n{host}\r\n"));
            assert_eq!(code, 403, "{path} {host:?}: {body}");
            assert!(body.contains("admin.token_file") && !body.contains("password"), "{body}");
        }
    }
    let mint = r#"{"user": "web-user"}"#;
    let (code, body) = ip2p_tests::post(addr, "/api/v1/credentials", mint, None);
    assert!(code == 403 && !body.contains("credential\""), "{code} {body}");
    assert_eq!(get(addr, "/metrics", None).0, 200);
    assert_eq!(get(addr, "/healthz", None).0, 200);
    assert_eq!(get(addr, "/readyz", None).0, 200);

    let token = "an-admin-token-0123456789";
    let (_node, admin) = minting("0.0.0.0:0", Some(token));
    let addr = SocketAddr::from(([127, 0, 0, 1], admin.local_addr().port()));
    assert_eq!(get(addr, "/selftest/config", None).0, 401);
    assert_eq!(get(addr, "/selftest/config", Some(token)).0, 200);
    assert_eq!(ip2p_tests::post(addr, "/api/v1/credentials", mint, None).0, 401);
    assert_eq!(ip2p_tests::post(addr, "/api/v1/credentials", mint, Some(token)).0, 200);
}

/// Connections held open to the API (the cap's worth and more, renewed)
/// do not fail a liveness probe: probes have connections of their own.
#[test]
fn idle_connections_cannot_fail_a_probe() {
    let (_node, admin) = minting("127.0.0.1:0", None);
    let addr = admin.local_addr();
    let cap = ip2p_relay::admin::MAX_CONNECTIONS + ip2p_relay::admin::PROBE_CONNECTIONS;
    let mut held: Vec<std::net::TcpStream> = (0..cap).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    for round in 0..20 {
        // The attacker renews a few connections each round.
        held.drain(..4);
        held.extend((0..8).map(|_| std::net::TcpStream::connect(addr).unwrap()));
        assert_eq!(get(addr, "/healthz", None), (200, "ok\n".into()), "round {round}");
        assert_eq!(get(addr, "/readyz", None).0, 200, "round {round}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The rest of the API waits its turn: past the cap it is "busy".
    let (code, _) = get(addr, "/metrics", None);
    assert!(code == 503 || code == 200, "{code}");
}
