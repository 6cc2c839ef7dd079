//! Who may use the relay, by the admin API: credentials for applications
//! (`POST /api/v1/credentials`: an RTCIceServer list the relay accepts),
//! revocations (a user's sessions end, its credentials are refused until
//! the revocation ends or is lifted; kept across a reload and a
//! handover), strict expiry (a session ends with its REST credential);
//! bad bodies refused with JSON errors.

use std::net::SocketAddr;
use std::time::Duration;

use ip2p_client::{Client, ClientError};
use ip2p_tests::{Relay, RelayOptions, TempDir, delete, get, post};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::usage::wait_record;

const SECRET: &str = "an-e2e-rest-secret-of-some-length";

fn config(extra: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n\
         [auth]\nsecrets = [\"{SECRET}\"]\nusers = [{{ name = \"alice\", password = \"wonderland\" }}]\n{extra}\
         [peers]\nallow = [\"127.0.0.2/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// A credential for `user` from the API: its ICE server entry.
fn mint(admin: SocketAddr, user: &str, ttl: u64) -> Value {
    let (code, body) = post(admin, "/api/v1/credentials", &format!(r#"{{"user": "{user}", "ttl": {ttl}}}"#), None);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["iceServers"][0].clone()
}

fn client_of(relay: &Relay, server: &Value) -> Client {
    let (user, pass) = (server["username"].as_str().unwrap(), server["credential"].as_str().unwrap());
    Client::new(relay.addr, user, pass).unwrap()
}

fn credentials_an_application_can_use(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("")));
    let admin = relay.admin.unwrap();
    let server = mint(admin, "web-user", 600);
    let port = relay.addr.port();
    let urls: Vec<&str> = server["urls"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let expected = [
        format!("stun:127.0.0.1:{port}"),
        format!("turn:127.0.0.1:{port}?transport=udp"),
        format!("turn:127.0.0.1:{port}?transport=tcp"),
    ];
    assert_eq!(urls, expected, "{dp}");
    let username = server["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "web-user");
    let left = expiry.parse::<u64>().unwrap() - ip2p_relay::unix_now();
    assert!((590..=600).contains(&left), "{dp}: {left}");
    let mut c = client_of(&relay, &server);
    c.allocate(None).unwrap();
    let sessions: Value = serde_json::from_str(&get(admin, "/api/v1/sessions?user=web-user", None).1).unwrap();
    assert_eq!(sessions["sessions"][0]["username"], username, "{dp}");

    // Bad bodies: clear 400s, nothing minted.
    let long = format!(r#"{{"user": "{}"}}"#, "u".repeat(600));
    for body in [
        "",
        "{",
        r#"{"user": "a", "extra": 1}"#,
        r#"{"ttl": 60}"#,
        r#"{"user": ""}"#,
        &long,
        r#"{"user": "a", "ttl": 0}"#,
        r#"[1]"#,
    ] {
        let (code, answer) = post(admin, "/api/v1/credentials", body, None);
        assert_eq!(code, 400, "{dp}: {body}: {answer}");
        assert!(serde_json::from_str::<Value>(&answer).unwrap()["error"].is_string(), "{answer}");
    }
    // Longer than the node accepts: cut to it (two days by default).
    let long = mint(admin, "web-user", 99_999_999);
    let expiry: u64 = long["username"].as_str().unwrap().split_once(':').unwrap().0.parse().unwrap();
    assert!(expiry <= ip2p_relay::unix_now() + 172_800, "{dp}: {long}");
    let huge = format!(r#"{{"user": "{}"}}"#, "u".repeat(5000));
    assert_eq!(post(admin, "/api/v1/credentials", &huge, None).0, 413, "{dp}");
    assert_eq!(get(admin, "/api/v1/credentials", None).0, 405, "{dp}");
    // TLS listeners give turns: URLs; a relay address behind 1:1 NAT is
    // named by its external address.
    let pki = ip2p_tests::support::Pki::new(&format!("grants-{dp}"));
    let nat =
        format!("{}\n[relay]\nips = [\"127.0.0.1\"]\nexternal_ips = [\"203.0.113.9\"]\n", pki.tls_table("127.0.0.1:0"));
    let natted = Relay::start(&RelayOptions::new(dp, &config("").replace("[peers]", &format!("{nat}[peers]"))));
    let urls = mint(natted.admin.unwrap(), "web-user", 60)["urls"].clone();
    let (port, tls) = (natted.addr.port(), natted.tls_addrs[0].port());
    let expected = serde_json::json!([
        format!("stun:203.0.113.9:{port}"),
        format!("turn:203.0.113.9:{port}?transport=udp"),
        format!("turn:203.0.113.9:{port}?transport=tcp"),
        format!("turns:203.0.113.9:{tls}?transport=tcp"),
    ]);
    assert_eq!(urls, expected, "{dp}");
    // Without a REST secret, nothing to sign with.
    let plain = Relay::start(&RelayOptions::new(dp, &config("").replace(&format!("secrets = [\"{SECRET}\"]\n"), "")));
    let (code, body) = post(plain.admin.unwrap(), "/api/v1/credentials", r#"{"user": "a"}"#, None);
    assert!(code == 409 && body.contains("auth.secrets"), "{dp}: {code} {body}");
}

fn a_revocation_ends_sessions_and_refuses_until_lifted(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("")));
    let admin = relay.admin.unwrap();
    let server = mint(admin, "web-user", 600);
    let mut revoked = client_of(&relay, &server);
    revoked.allocate(None).unwrap();
    let mut other = Client::new(relay.addr, "alice", "wonderland").unwrap();
    other.allocate(None).unwrap();

    let (code, body) = post(admin, "/api/v1/revocations", r#"{"user": "web-user"}"#, None);
    assert_eq!(code, 200, "{dp}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["sessions_ended"], 1, "{dp}: {answer}");
    // Its credentials are refused (before the allocation is looked for).
    match revoked.refresh(Some(600)) {
        Err(ClientError::Rejected(401, _)) => {}
        other => panic!("{dp}: {other:?}"),
    }
    let left: Value = serde_json::from_str(&get(admin, "/api/v1/sessions?user=web-user", None).1).unwrap();
    assert_eq!(left["sessions"], serde_json::json!([]), "{dp}");
    assert_eq!(other.refresh(Some(600)).unwrap(), 600, "{dp}: another user's session goes on");
    // A fresh credential of that user is refused, across a reload too.
    let fresh = mint(admin, "web-user", 600);
    let refused = |relay: &Relay| match client_of(relay, &fresh).allocate(None) {
        Err(ClientError::Rejected(401, _)) => {}
        other => panic!("{dp}: {other:?}"),
    };
    refused(&relay);
    relay.signal(Signal::SIGHUP);
    relay.wait_for("configuration reloaded");
    refused(&relay);
    let list: Value = serde_json::from_str(&get(admin, "/api/v1/revocations", None).1).unwrap();
    assert_eq!(list["revocations"][0]["user"], "web-user", "{dp}: {list}");
    assert!(relay.metrics().get("ip2p_auth_failures_total{reason=\"revoked\"}").copied() >= Some(2.0));
    // Lifted: served again.
    assert_eq!(delete(admin, "/api/v1/revocations/web-user", None).0, 200, "{dp}");
    assert_eq!(delete(admin, "/api/v1/revocations/web-user", None).0, 404, "{dp}");
    client_of(&relay, &fresh).allocate(None).unwrap();
    // Until a time: past it, served again.
    let until = ip2p_relay::unix_now() + 2;
    let (code, _) = post(admin, "/api/v1/revocations", &format!(r#"{{"user": "alice", "until": {until}}}"#), None);
    assert_eq!(code, 200);
    assert!(matches!(
        Client::new(relay.addr, "alice", "wonderland").unwrap().allocate(None),
        Err(ClientError::Rejected(401, _))
    ));
    // Whole unix seconds: `until` has passed once the clock reads it,
    // at most 3 s from now.
    std::thread::sleep(Duration::from_millis(3050));
    Client::new(relay.addr, "alice", "wonderland").unwrap().allocate(None).unwrap();
    for body in [r#"{"user": "x", "until": 1}"#, r#"{"until": 99999999999}"#, "not json"] {
        assert_eq!(post(admin, "/api/v1/revocations", body, None).0, 400, "{dp}: {body}");
    }
}

fn revocations_survive_a_handover(dp: &'static str) {
    let dir = TempDir::new("grants-handover");
    let socket = dir.path().join("handover.sock");
    let config = config("") + &format!("[handover]\nsocket = \"{}\"\n", socket.display());
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    let admin = old.admin.unwrap();
    assert_eq!(post(admin, "/api/v1/revocations", r#"{"user": "web-user"}"#, None).0, 200);
    let new = Relay::start(&RelayOptions::new(dp, &config).arg("--take-over"));
    new.wait_for("took over the previous process's node");
    assert!(old.exits(), "{dp}");
    let fresh = mint(admin, "web-user", 600);
    assert!(matches!(client_of(&new, &fresh).allocate(None), Err(ClientError::Rejected(401, _))), "{dp}");
}

fn strict_expiry_ends_a_session_with_its_credential(dp: &'static str) {
    let dir = TempDir::new("strict");
    let usage = dir.path().join("usage.jsonl");
    let extra = format!("strict_expiry = true\n[usage]\nfile = \"{}\"\n", usage.display());
    let relay = Relay::start(&RelayOptions::new(dp, &config(&extra)));
    let server = mint(relay.admin.unwrap(), "web-user", 2);
    let mut c = client_of(&relay, &server);
    c.allocate(None).unwrap();
    let granted = c.refresh(Some(600)).unwrap();
    assert!(granted <= 2, "{dp}: {granted}");
    let stop = wait_record(&[&usage], "stop", None);
    assert_eq!(stop["reason"], "credential_expired", "{dp}: {stop}");
}

on_both_datapaths! {
    names:
    credentials_an_application_can_use: credentials_an_application_can_use();
    a_revocation_ends_sessions_and_refuses_until_lifted: a_revocation_ends_sessions_and_refuses_until_lifted();
    revocations_survive_a_handover: revocations_survive_a_handover();
    strict_expiry_ends_a_session_with_its_credential: strict_expiry_ends_a_session_with_its_credential();
}
