//! Sessions through the admin API (`/api/v1/sessions`): a client's
//! known traffic each way counted exactly, listed and filtered, ended by
//! the operator (its Refresh then gets 437, its port is free), kept with
//! its id and counts across a handover; bad requests answered with JSON
//! errors. The XDP fast path's share is `xdp.rs`'s
//! `sessions_count_what_the_fast_path_carries`.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ip2p_client::{Client, ClientError, Received};
use ip2p_tests::{Relay, RelayOptions, TempDir, get, http, peer, recv};
use serde_json::Value;

const CONFIG: &str = "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n\
    [auth]\nusers = [{ name = \"alice\", password = \"wonderland\" }, { name = \"bob\", password = \"builder\" }]\n\
    [peers]\nallow = [\"127.0.0.2/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The JSON of a 200 answer to GET `path`.
pub(super) fn api(admin: SocketAddr, path: &str) -> Value {
    let (code, body) = get(admin, path, None);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn delete(admin: SocketAddr, path: &str) -> (u16, String) {
    http(admin, &format!("DELETE {path} HTTP/1.1\r\nHost: {admin}\r\n\r\n"))
}

/// Sends `sizes` each way on `channel` between `client` and `peer`:
/// the payload bytes each way.
pub(super) fn exchange(
    client: &mut Client,
    channel: u16,
    relayed: SocketAddr,
    peer: &UdpSocket,
    sizes: &[usize],
) -> u64 {
    for &n in sizes {
        client.send_channel(channel, &vec![7; n]).unwrap();
        assert_eq!(recv(peer).0.len(), n);
        peer.send_to(&vec![9; n], relayed).unwrap();
        let back = client.recv(Duration::from_secs(2)).unwrap();
        assert_eq!(back, Some(Received::Channel { channel, data: vec![9; n] }));
    }
    sizes.iter().map(|&n| n as u64).sum()
}

/// The one session of `user`, by the API.
fn session_of(admin: SocketAddr, user: &str) -> Value {
    let list = api(admin, &format!("/api/v1/sessions?user={user}"));
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list}");
    sessions[0].clone()
}

/// A relay of `config` where alice holds a channel 0x4000 to a peer:
/// the relay, alice, her relayed address and the peer.
fn alice_bound(dp: &'static str, config: &str) -> (Relay, Client, SocketAddr, UdpSocket) {
    let relay = Relay::start(&RelayOptions::new(dp, config));
    let p = peer();
    let mut alice = Client::new(relay.addr, "alice", "wonderland").unwrap();
    let relayed = alice.allocate(None).unwrap();
    alice.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    (relay, alice, relayed, p)
}

fn counted_exactly_listed_and_filtered(dp: &'static str) {
    let (relay, mut alice, relayed, p) = alice_bound(dp, CONFIG);
    let admin = relay.admin.unwrap();
    let bytes = exchange(&mut alice, 0x4000, relayed, &p, &[1, 100, 1200, 37]);
    // A Send indication and a Data indication count too.
    alice.send_indication(p.local_addr().unwrap(), b"indicated").unwrap();
    assert_eq!(recv(&p).0, b"indicated");
    let mut bob = Client::tcp(relay.addr, "bob", "builder").unwrap();
    bob.allocate(None).unwrap();

    let s = session_of(admin, "alice");
    assert_eq!(s["packets_to_peers"], 5, "{dp}: {s}");
    assert_eq!(s["bytes_to_peers"], bytes + 9, "{dp}: {s}");
    assert_eq!(s["packets_from_peers"], 4, "{dp}: {s}");
    assert_eq!(s["bytes_from_peers"], bytes, "{dp}: {s}");
    assert_eq!(s["user"], "alice");
    assert_eq!(s["username"], "alice");
    assert_eq!(s["realm"], "ip2p.test");
    assert_eq!(s["transport"], "udp");
    assert_eq!(s["client"], alice.local_addr().unwrap().to_string());
    assert_eq!(s["relayed"], serde_json::json!([relayed.to_string()]));
    assert_eq!((s["permissions"].as_u64(), s["channels"].as_u64()), (Some(1), Some(1)));
    let started = s["started"].as_u64().unwrap();
    assert!(s["expires"].as_u64().unwrap() >= started + 590, "{s}");
    assert_eq!(s["id"].as_str().unwrap().len(), 16);
    // One by id; the list and its filters.
    assert_eq!(api(admin, &format!("/api/v1/sessions/{}", s["id"].as_str().unwrap()))["id"], s["id"]);
    assert_eq!(api(admin, "/api/v1/sessions")["sessions"].as_array().unwrap().len(), 2);
    let b = session_of(admin, "bob");
    assert_eq!((b["transport"].as_str(), b["packets_to_peers"].as_u64()), (Some("tcp"), Some(0)));
    for (filter, n) in [("transport=tcp", 1), ("transport=tls", 0), ("client=127.0.0.1", 2), ("client=127.0.0.9", 0)] {
        let got = api(admin, &format!("/api/v1/sessions?{filter}"))["sessions"].as_array().unwrap().len();
        assert_eq!(got, n, "{dp}: {filter}");
    }
}

fn ended_by_the_operator(dp: &'static str) {
    let (relay, mut alice, relayed, _p) = alice_bound(dp, CONFIG);
    let admin = relay.admin.unwrap();
    let id = session_of(admin, "alice")["id"].as_str().unwrap().to_owned();

    let (code, body) = delete(admin, &format!("/api/v1/sessions/{id}"));
    assert_eq!(code, 200, "{dp}: {body}");
    let ended: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ended["id"], id.as_str());
    assert!(relay.wait_for("session ended by the operator").contains(&id), "{dp}");
    match alice.refresh(Some(600)) {
        Err(ClientError::Rejected(437, _)) => {}
        other => panic!("{dp}: a Refresh after the end: {other:?}"),
    }
    // Its port is free again (the relay closed its socket).
    std::thread::sleep(Duration::from_millis(100));
    UdpSocket::bind(relayed).unwrap_or_else(|e| panic!("{dp}: {relayed} still bound: {e}"));
    assert_eq!(api(admin, "/api/v1/sessions")["sessions"], serde_json::json!([]));
    assert_eq!(get(admin, &format!("/api/v1/sessions/{id}"), None).0, 404);
    assert_eq!(delete(admin, &format!("/api/v1/sessions/{id}")).0, 404, "{dp}: ended once");
    // The client may begin again.
    let mut again = Client::new(relay.addr, "alice", "wonderland").unwrap();
    again.allocate(None).unwrap();
    assert_ne!(session_of(admin, "alice")["id"].as_str().unwrap(), id);
}

fn bad_requests_get_json_errors(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, CONFIG));
    let admin = relay.admin.unwrap();
    let mut alice = Client::new(relay.addr, "alice", "wonderland").unwrap();
    alice.allocate(None).unwrap();
    let long = "u".repeat(10_000);
    for (path, code) in [
        ("/api/v1/sessions?users=alice", 400),
        ("/api/v1/sessions?client=not-an-ip", 400),
        ("/api/v1/sessions?transport=sctp", 400),
        ("/api/v1/sessions?user=a&user=b", 400),
        ("/api/v1/sessions/0123456789abcdef", 404),
        ("/api/v1/sessions/not-hex", 404),
        ("/api/v1/sessions/00000000000000000000", 404),
        ("/api/v1/nothing", 404),
    ] {
        let (got, body) = get(admin, path, None);
        assert_eq!(got, code, "{dp}: {path}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{dp}: {path}: not JSON: {body}"));
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()), "{dp}: {path}: {body}");
    }
    // A user name of 10,000 bytes does not fit a request here.
    let (got, _) = get(admin, &format!("/api/v1/sessions?user={long}"), None);
    assert_eq!(got, 431, "{dp}");
    let (got, body) = http(admin, &format!("POST /api/v1/sessions HTTP/1.1\r\nHost: {admin}\r\n\r\n"));
    assert_eq!(got, 405, "{dp}: {body}");
    let (got, _) = delete(admin, "/status");
    assert_eq!(got, 405, "{dp}: DELETE outside the API");
    // Nothing changed; the relay serves on.
    assert_eq!(session_of(admin, "alice")["packets_to_peers"], 0);
    assert_eq!(alice.refresh(Some(600)).unwrap(), 600);
}

fn kept_across_a_handover(dp: &'static str) {
    let dir = TempDir::new("sessions-handover");
    let socket = dir.file("handover.sock", "");
    let config = format!("{CONFIG}[handover]\nsocket = \"{}\"\n", socket.display());
    let (mut old, mut alice, relayed, p) = alice_bound(dp, &config);
    let admin = old.admin.unwrap();
    let before = exchange(&mut alice, 0x4000, relayed, &p, &[10, 20]);
    let s = session_of(admin, "alice");
    assert_eq!(s["bytes_to_peers"], before, "{dp}: {s}");

    let new = Relay::start(&RelayOptions::new(dp, &config).arg("--take-over"));
    new.wait_for("took over the previous process's node");
    // Until it exits, the old process answers on the shared admin socket too.
    assert!(old.exits(), "{dp}: the old process exits");
    let after = exchange(&mut alice, 0x4000, relayed, &p, &[30]);
    let moved = session_of(new.admin.unwrap(), "alice");
    assert_eq!((&moved["id"], &moved["started"]), (&s["id"], &s["started"]), "{dp}: {moved}");
    assert_eq!(moved["bytes_to_peers"], before + after, "{dp}: counted on: {moved}");
    assert_eq!(moved["packets_from_peers"], 3, "{dp}: counted on");
}

on_both_datapaths! {
    names:
    counted_exactly_listed_and_filtered: counted_exactly_listed_and_filtered();
    ended_by_the_operator: ended_by_the_operator();
    bad_requests_get_json_errors: bad_requests_get_json_errors();
    kept_across_a_handover: kept_across_a_handover();
}
