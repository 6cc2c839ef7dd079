//! SIGHUP re-reads the config file: users, peer policy and the rest change
//! while an allocation keeps relaying without a lost packet; an invalid
//! file is refused and the running configuration stays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions};
use nix::sys::signal::Signal;

fn config(password: &str, peers: &str, workers: usize) -> String {
    format!(
        r#"
        listen = ["127.0.0.1:0"]
        workers = {workers}
        [auth]
        users = [{{ name = "alice", password = "{password}" }}]
        nonce_secret = "8f1d2c3b4a5968778695a4b3c2d1e0f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
        [peers]
        {peers}
        [drain]
        timeout = 1
        "#
    )
}

#[test]
fn sighup_reloads_users_and_policy_without_losing_a_packet() {
    let first = config("first", r#"allow = ["127.0.0.2/32"]"#, 2);
    let mut relay = Relay::start(&RelayOptions { config: Some(first), ..RelayOptions::flags(&["--admin", "off"]) });
    let server = relay.addr;
    let path = relay.config_path().to_owned();

    // An allocation relaying to a peer, a packet every millisecond.
    let mut c = Client::new(server, "alice", "first").unwrap();
    let relayed = c.allocate(None).unwrap();
    let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = stop.clone();
        let socket = c.socket().unwrap().try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sent = 0u32;
            while !stop.load(Ordering::Relaxed) && sent < 5000 {
                let mut frame = vec![0x40, 0x00, 0, 4];
                frame.extend_from_slice(&sent.to_be_bytes());
                socket.send_to(&frame, server).unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        })
    };
    let receiver = std::thread::spawn(move || {
        let mut got = 0u32;
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = peer.recv_from(&mut buf) {
            assert_eq!((n, from), (4, relayed));
            got += 1;
        }
        got
    });
    std::thread::sleep(Duration::from_millis(200));

    // The new file: alice's password changes, the policy opens 127.0.0.4
    // too, and a restart-only key changes.
    std::fs::write(&path, config("second", r#"allow = ["127.0.0.2/32", "127.0.0.4/32"]"#, 1)).unwrap();
    relay.signal(Signal::SIGHUP);
    let reloaded = relay.wait_for("configuration reloaded");
    assert!(reloaded.contains("workers"), "the worker count needs a restart: {reloaded}");
    std::thread::sleep(Duration::from_millis(200));

    // The new users and policy apply to requests from now on.
    assert_eq!(Client::new(server, "alice", "first").unwrap().allocate(None).unwrap_err().code(), Some(401));
    let mut fresh = Client::new(server, "alice", "second").unwrap();
    fresh.allocate(None).unwrap();
    fresh.create_permission(&["127.0.0.2:9".parse().unwrap(), "127.0.0.4:9".parse().unwrap()]).unwrap();
    assert_eq!(fresh.create_permission(&["127.0.0.3:9".parse().unwrap()]).unwrap_err().code(), Some(403));

    // A broken file is refused; the running configuration stays.
    std::fs::write(&path, "listen = [").unwrap();
    relay.signal(Signal::SIGHUP);
    relay.wait_for("reload refused");
    Client::new(server, "alice", "second").unwrap().allocate(None).unwrap();

    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let got = receiver.join().unwrap();
    assert!(sent > 300, "only {sent} packets sent");
    assert_eq!(got, sent, "packets lost across the reloads");

    relay.signal(Signal::SIGTERM);
    assert!(relay.exit_within(Duration::from_secs(10)).success());
}

/// A reload that denies a peer ends the live permission and channel to it
/// at once, both ways, instead of letting them relay until they lapse.
fn a_reload_that_denies_a_live_peer_ends_its_traffic_at_once(dp: &'static str) {
    let first = config("first", r#"allow = ["127.0.0.2/32"]"#, 2);
    let opts = RelayOptions { args: vec!["--admin".into(), "127.0.0.1:0".into()], ..RelayOptions::new(dp, &first) };
    let relay = Relay::start(&opts);
    let mut c = Client::new(relay.addr, "alice", "first").unwrap();
    let relayed = c.allocate(None).unwrap();
    let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    c.send_channel(0x4000, b"before").unwrap();
    assert_eq!(peer.recv_from(&mut [0u8; 64]).unwrap(), (6, relayed), "{dp}");

    let denied = config("first", "allow = [\"127.0.0.2/32\"]\n        deny = [\"127.0.0.2/32\"]", 2);
    std::fs::write(relay.config_path(), denied).unwrap();
    relay.signal(Signal::SIGHUP);
    relay.wait_for("configuration reloaded");
    c.send_channel(0x4000, b"after").unwrap();
    assert!(peer.recv_from(&mut [0u8; 64]).is_err(), "{dp}: the denied peer still gets packets");
    peer.send_to(b"back", relayed).unwrap();
    assert_eq!(c.recv(Duration::from_millis(500)).unwrap(), None, "{dp}: and still reaches the client");
    assert_eq!(relay.metrics()["ip2p_peers_revoked_total"], 2.0, "{dp}: a permission and a channel");
}

on_both_datapaths! {
    names:
    a_reload_that_denies_a_live_peer_ends_its_traffic_at_once: a_reload_that_denies_a_live_peer_ends_its_traffic_at_once();
}
