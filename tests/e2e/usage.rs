//! Usage records (`usage.file`): each session's start, interim and stop
//! records with exact counts and the reason it ended; nothing lost across
//! a logrotate (rename, SIGHUP), a graceful stop or a handover (which
//! writes no stop for the sessions that go on in the new process, with
//! their ids and counts, and `handover` for those that cannot move). The XDP fast path's share is `xdp.rs`'s.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions, TempDir, get, http, peer, recv};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::sessions::exchange;

fn config(file: &Path, extra: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n\
         [auth]\nusers = [{{ name = \"alice\", password = \"wonderland\" }}]\n\
         [peers]\nallow = [\"127.0.0.2/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [usage]\nfile = \"{}\"\ninterval = 1\n{extra}",
        file.display()
    )
}

/// The records in `files`, in order.
pub(super) fn records(files: &[&Path]) -> Vec<Value> {
    let mut all = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(v.as_object().unwrap().values().all(|f| !f.is_object()), "not flat: {line}");
            all.push(v);
        }
    }
    all
}

/// Waits up to 5 s for a record of `event` (and session `id` if given)
/// in `files`; returns it.
pub(super) fn wait_record(files: &[&Path], event: &str, id: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = records(files).into_iter().find(|r| r["event"] == event && id.is_none_or(|id| r["id"] == id));
        if let Some(r) = found {
            return r;
        }
        assert!(Instant::now() < deadline, "no {event} record for {id:?}: {:?}", records(files));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_interim_and_stop_with_exact_counts(dp: &'static str) {
    let dir = TempDir::new("usage");
    let file = dir.path().join("usage.jsonl");
    let relay = Relay::start(&RelayOptions::new(dp, &config(&file, "")));
    let p = peer();
    let mut alice = Client::new(relay.addr, "alice", "wonderland").unwrap();
    let relayed = alice.allocate(None).unwrap();
    let start = wait_record(&[&file], "start", None);
    let id = start["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (&start["user"], &start["transport"], &start["bytes_to_peers"]),
        (&"alice".into(), &"udp".into(), &0.into())
    );
    assert!(start["time"].as_u64().is_some());
    alice.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    let bytes = exchange(&mut alice, 0x4000, relayed, &p, &[3, 500, 1000]);
    // An interim record within the interval (1 s), with the counts so far.
    std::thread::sleep(Duration::from_millis(1100));
    let interim = wait_record(&[&file], "interim", Some(&id));
    assert!(interim["bytes_to_peers"].as_u64() <= Some(bytes), "{interim}");
    alice.refresh(Some(0)).unwrap();
    let stop = wait_record(&[&file], "stop", Some(&id));
    assert_eq!(stop["reason"], "deleted", "{dp}: {stop}");
    let counts = ["packets_to_peers", "bytes_to_peers", "packets_from_peers", "bytes_from_peers"].map(|k| &stop[k]);
    assert_eq!(counts, [3, bytes, 3, bytes], "{dp}: {stop}");
    let all = records(&[&file]);
    assert_eq!(
        all.iter().filter(|r| r["id"] == id.as_str() && r["event"] != "interim").count(),
        2,
        "{dp}: one start, one stop"
    );
    assert_eq!(relay.metrics().get("ip2p_usage_records_total{event=\"stop\"}").copied(), Some(1.0), "{dp}");
}

fn reasons_and_a_logrotate(dp: &'static str) {
    let dir = TempDir::new("usage-rotate");
    let file = dir.path().join("usage.jsonl");
    let rotated = dir.path().join("usage.jsonl.1");
    let relay = Relay::start(&RelayOptions::new(dp, &config(&file, "[drain]\ntimeout = 1\n")));
    let admin = relay.admin.unwrap();
    let clients: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
            c.allocate(None).unwrap();
            c
        })
        .collect();
    for _ in 0..3 {
        wait_record(&[&file], "start", None);
    }
    // logrotate: rename, then SIGHUP; the relay writes to the new file.
    std::fs::rename(&file, &rotated).unwrap();
    relay.signal(Signal::SIGHUP);
    relay.wait_for("configuration reloaded");
    let sessions: Value = serde_json::from_str(&get(admin, "/api/v1/sessions", None).1).unwrap();
    let id = sessions["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (code, _) = http(admin, &format!("DELETE /api/v1/sessions/{id} HTTP/1.1\r\nHost: {admin}\r\n\r\n"));
    assert_eq!(code, 200);
    let killed = wait_record(&[&file], "stop", Some(&id));
    assert_eq!(killed["reason"], "killed", "{dp}: in the new file: {killed}");
    // The node drains and stops with two live: each gets its stop.
    drop(clients);
    relay.signal(Signal::SIGTERM);
    let mut relay = relay;
    assert!(relay.exit_within(Duration::from_secs(5)).success());
    let all = records(&[&rotated, &file]);
    let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
    for r in &all {
        if r["event"] != "interim" {
            by_id
                .entry(r["id"].as_str().unwrap().to_owned())
                .or_default()
                .push(r["event"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(by_id.len(), 3, "{dp}: {all:?}");
    assert!(by_id.values().all(|events| events == &["start", "stop"]), "{dp}: none missing: {by_id:?}");
    let reasons: Vec<&str> = all.iter().filter(|r| r["event"] == "stop").filter_map(|r| r["reason"].as_str()).collect();
    assert_eq!(reasons, ["killed", "drained", "drained"], "{dp}");
}

/// A session that moves writes no stop at the handover and goes on; one
/// that cannot (a TLS client's) ends with the old process, as `handover`.
fn a_handover_writes_no_stop_and_goes_on(dp: &'static str) {
    let dir = TempDir::new("usage-handover");
    let file = dir.path().join("usage.jsonl");
    let socket = dir.path().join("handover.sock");
    let pki = ip2p_tests::support::Pki::new(&format!("usage-handover-{dp}"));
    let extra = format!("{}\n[handover]\nsocket = \"{}\"\n", pki.tls_table("127.0.0.1:0"), socket.display());
    let config = config(&file, &extra);
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    let p = peer();
    let mut alice = Client::new(old.addr, "alice", "wonderland").unwrap();
    let relayed = alice.allocate(None).unwrap();
    alice.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    let before = exchange(&mut alice, 0x4000, relayed, &p, &[10]);
    let id = wait_record(&[&file], "start", None)["id"].as_str().unwrap().to_owned();
    let mut tls = Client::tls(old.tls_addrs[0], "localhost", pki.roots.clone(), "alice", "wonderland").unwrap();
    tls.allocate(None).unwrap();
    tls.create_permission(&[p.local_addr().unwrap()]).unwrap();
    tls.send_indication(p.local_addr().unwrap(), b"over tls").unwrap();
    assert_eq!(recv(&p).0, b"over tls");
    let starts = || records(&[&file]).into_iter().filter(|r| r["event"] == "start").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    while starts() < 2 {
        assert!(Instant::now() < deadline, "{dp}: {:?}", records(&[&file]));
        std::thread::sleep(Duration::from_millis(50));
    }
    let tls_id = records(&[&file]).into_iter().find(|r| r["transport"] == "tls").unwrap()["id"].clone();

    let new = Relay::start(&RelayOptions::new(dp, &config).arg("--take-over"));
    new.wait_for("took over the previous process's node");
    assert!(old.exits(), "{dp}");
    let ended = wait_record(&[&file], "stop", tls_id.as_str());
    assert_eq!((&ended["reason"], &ended["bytes_to_peers"]), (&"handover".into(), &8.into()), "{dp}: {ended}");
    let after = exchange(&mut alice, 0x4000, relayed, &p, &[20]);
    alice.send_indication(p.local_addr().unwrap(), b"x").unwrap();
    assert_eq!(recv(&p).0, b"x");
    alice.refresh(Some(0)).unwrap();
    let stop = wait_record(&[&file], "stop", Some(&id));
    assert_eq!((&stop["reason"], &stop["bytes_to_peers"]), (&"deleted".into(), &(before + after + 1).into()), "{dp}");
    let all = records(&[&file]);
    let of_alice: Vec<&str> = all
        .iter()
        .filter(|r| r["event"] != "interim" && r["id"] == id.as_str())
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert_eq!(of_alice, ["start", "stop"], "{dp}: the handover wrote none for the session that moved");
}

/// More sessions than a worker writes interim records for in one loop
/// round: the pass goes on over rounds and covers each.
fn an_interim_pass_covers_every_session(dp: &'static str) {
    let dir = TempDir::new("usage-many");
    let file = dir.path().join("usage.jsonl");
    let relay = Relay::start(&RelayOptions::new(dp, &config(&file, "[allocation]\nuser_quota = 0\nip_quota = 0\n")));
    let clients: Vec<Client> = (0..600)
        .map(|_| {
            let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
            c.allocate(None).unwrap();
            c
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = records(&[&file]);
        let interim: std::collections::HashSet<&str> =
            all.iter().filter(|r| r["event"] == "interim").filter_map(|r| r["id"].as_str()).collect();
        if interim.len() == clients.len() {
            break;
        }
        assert!(Instant::now() < deadline, "{dp}: interim records for {} of {} sessions", interim.len(), clients.len());
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn bad_settings_are_refused(dp: &'static str) {
    for (args, says) in [
        (vec!["--usage-file", "/tmp/x", "--usage-interval", "0"], "usage.interval"),
        (vec!["--usage-file", "/nonexistent-dir/usage.jsonl"], "usage.file"),
    ] {
        let out = std::process::Command::new(ip2p_tests::relay_bin())
            .args(["--listen", "127.0.0.1:0", "--user", "alice:wonderland", "--admin", "off", "--datapath", dp])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{dp}: {args:?}: {err}");
    }
}

on_both_datapaths! {
    names:
    start_interim_and_stop_with_exact_counts: start_interim_and_stop_with_exact_counts();
    reasons_and_a_logrotate: reasons_and_a_logrotate();
    a_handover_writes_no_stop_and_goes_on: a_handover_writes_no_stop_and_goes_on();
    bad_settings_are_refused: bad_settings_are_refused();
    an_interim_pass_covers_every_session: an_interim_pass_covers_every_session();
}
