//! Fleet-wide sessions and revocations on a real redis-server: any node
//! lists every node's sessions and ends one wherever it lives; a
//! revocation on one node ends the user's sessions on every node within a
//! second and is refused everywhere, also by a node that starts later.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip2p_client::{Client, ClientError};
use ip2p_tests::redis::Redis;
use ip2p_tests::{Relay, delete, get, post};
use serde_json::Value;

use super::fleet::{node, until_listed};

/// A fresh TURN REST credential of `user`, minted by `admin`.
fn credential(admin: SocketAddr, user: &str) -> (String, String) {
    let (code, body) = post(admin, "/api/v1/credentials", &format!(r#"{{"user": "{user}"}}"#), None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let s = &v["iceServers"][0];
    (s["username"].as_str().unwrap().to_owned(), s["credential"].as_str().unwrap().to_owned())
}

fn allocated(relay: &Relay, (user, password): &(String, String)) -> Client {
    let mut c = Client::new(relay.addr, user, password).unwrap();
    if let Err(e) = c.allocate(None) {
        let m = relay.metrics();
        let failures: Vec<_> = m.iter().filter(|(k, v)| k.contains("auth_failures") && **v > 0.0).collect();
        panic!("{user}: {e}: {failures:?}");
    }
    c
}

fn json(admin: SocketAddr, path: &str) -> Value {
    let (code, body) = get(admin, path, None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls until `admin` lists no session of `user`; how long it took.
fn until_gone(admin: SocketAddr, user: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while !json(admin, &format!("/api/v1/sessions?user={user}"))["sessions"].as_array().unwrap().is_empty() {
        assert!(start.elapsed() < limit, "{user}'s sessions still live after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn any_node_lists_and_ends_every_nodes_sessions(dp: &'static str) {
    let redis = Redis::start();
    let (a, b, c) = (node(dp, &redis, "a", ""), node(dp, &redis, "b", ""), node(dp, &redis, "c", ""));
    until_listed(b.admin.unwrap(), &["a", "b", "c"], Duration::from_secs(5));
    let cred = credential(a.admin.unwrap(), "web-user");
    let _on_a = allocated(&a, &cred);
    let mut on_c = allocated(&c, &cred);
    let listed = json(b.admin.unwrap(), "/api/v1/sessions?scope=fleet&user=web-user");
    let sessions = listed["sessions"].as_array().unwrap();
    let mut nodes: Vec<&str> = sessions.iter().map(|s| s["node"].as_str().unwrap()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["a", "c"], "{dp}: {listed}");
    assert_eq!(listed["nodes"], serde_json::json!(["a", "b", "c"]), "{dp}: every node answered");
    assert!(sessions.iter().all(|s| s["user"] == "web-user" && s["transport"] == "udp"), "{listed}");
    // Ended from a, where it does not live.
    let id = sessions.iter().find(|s| s["node"] == "c").unwrap()["id"].as_str().unwrap().to_owned();
    let (code, body) = delete(a.admin.unwrap(), &format!("/api/v1/sessions/{id}"), None);
    assert_eq!(code, 200, "{dp}: {body}");
    assert!(body.contains(r#""node":"c""#), "{body}");
    match on_c.refresh(Some(600)) {
        Err(ClientError::Rejected(437, _)) => {}
        other => panic!("{dp}: the ended session's Refresh: {other:?}"),
    }
    let (code, body) = delete(a.admin.unwrap(), &format!("/api/v1/sessions/{id}"), None);
    assert_eq!(code, 404, "{dp}: gone everywhere: {body}");
    let (code, body) = get(a.admin.unwrap(), "/api/v1/sessions?scope=galaxy", None);
    assert!(code == 400 && body.contains("scope"), "{body}");
}

fn a_revocation_on_one_node_holds_on_every_node(dp: &'static str) {
    let redis = Redis::start();
    let (a, b, c) = (node(dp, &redis, "a", ""), node(dp, &redis, "b", ""), node(dp, &redis, "c", ""));
    until_listed(b.admin.unwrap(), &["a", "b", "c"], Duration::from_secs(5));
    let cred = credential(a.admin.unwrap(), "web-user");
    let _on_c = allocated(&c, &cred);
    let started = Instant::now();
    let (code, body) = post(a.admin.unwrap(), "/api/v1/revocations", r#"{"user": "web-user"}"#, None);
    assert!(code == 200 && body.contains(r#""fleet":true"#), "{dp}: {code} {body}");
    until_gone(c.admin.unwrap(), "web-user", Duration::from_secs(1));
    eprintln!("{dp}: a revocation on a ended the session on c in {:?}", started.elapsed());
    let fresh = credential(b.admin.unwrap(), "web-user");
    match Client::new(b.addr, &fresh.0, &fresh.1).unwrap().allocate(None) {
        Err(ClientError::Rejected(401, _)) => {}
        other => panic!("{dp}: a fresh credential on b: {other:?}"),
    }
    // A node that starts now refuses it from its first packet.
    let d = node(dp, &redis, "d", "");
    match Client::new(d.addr, &fresh.0, &fresh.1).unwrap().allocate(None) {
        Err(ClientError::Rejected(401, _)) => {}
        other => panic!("{dp}: a node that started later: {other:?}"),
    }
    // Lifted on b: served on a again within a second.
    assert_eq!(delete(b.admin.unwrap(), "/api/v1/revocations/web-user", None).0, 200);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match Client::new(a.addr, &fresh.0, &fresh.1).unwrap().allocate(None) {
            Ok(_) => break,
            Err(ClientError::Rejected(401, _)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => panic!("{dp}: after the lift: {other:?}"),
        }
    }
}

on_both_datapaths! {
    names:
    any_node_lists_and_ends_every_nodes_sessions: any_node_lists_and_ends_every_nodes_sessions();
    a_revocation_on_one_node_holds_on_every_node: a_revocation_on_one_node_holds_on_every_node();
}
