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

    // The new file: alice's password changes, the policy opens 127/8 but
    // closes 127.0.0.3, and a restart-only key changes.
    std::fs::write(
        &path,
        config(
            "second",
            r#"allow = ["127.0.0.0/8"]
        deny = ["127.0.0.3/32"]"#,
            1,
        ),
    )
    .unwrap();
    relay.signal(Signal::SIGHUP);
    let reloaded = relay.wait_for("configuration reloaded");
    assert!(reloaded.contains("workers"), "the worker count needs a restart: {reloaded}");
    std::thread::sleep(Duration::from_millis(200));

    // The new users and policy apply to requests from now on.
    assert_eq!(Client::new(server, "alice", "first").unwrap().allocate(None).unwrap_err().code(), Some(401));
    let mut fresh = Client::new(server, "alice", "second").unwrap();
    fresh.allocate(None).unwrap();
    fresh.create_permission(&["127.0.0.2:9".parse().unwrap()]).unwrap();
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
