//! SIGTERM drains: new Allocates get 300 Try Alternate (or 508 without
//! alternates) while existing allocations keep relaying; the process exits
//! 0 once they are gone or the drain timeout passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions, get};
use nix::sys::signal::Signal;

/// The relay with `drain` as its [drain] table.
fn start(drain: &str) -> Relay {
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = 2\n[auth]\nusers = [{{ name = \"u\", password = \"p\" }}]\n\
         [peers]\nallow = [\"127.0.0.2/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[drain]\n{drain}\n"
    );
    Relay::start(&RelayOptions { config: Some(config), ..RelayOptions::default() })
}

#[test]
fn sigterm_refuses_new_allocations_and_waits_for_the_others() {
    let mut relay = start("timeout = 30\nalternates = [\"127.0.0.1:3479\", \"[::1]:3479\"]");
    let (server, admin) = (relay.addr, relay.admin.unwrap());
    assert_eq!(get(admin, "/readyz", None).0, 200);
    let mut c = Client::new(server, "u", "p").unwrap();
    let relayed = c.allocate(None).unwrap();
    let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();

    relay.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    // A new allocation is sent to the alternate of its family.
    let mut late = Client::new(server, "u", "p").unwrap();
    let refused = late.allocate(None).unwrap_err();
    assert_eq!(refused.code(), Some(300), "{refused}");
    // A load balancer sees it is not ready; it is still alive.
    assert_eq!(get(admin, "/readyz", None), (503, "draining\n".into()));
    assert_eq!(get(admin, "/healthz", None).0, 200);
    // The existing one keeps relaying, both ways.
    for i in 0..20u8 {
        c.send_channel(0x4000, &[i; 10]).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&[i; 10][..], relayed));
    }
    assert!(relay.alive(), "exited with an allocation live");
    // Its end lets the process go.
    c.refresh(Some(0)).unwrap();
    assert!(relay.exit_within(Duration::from_secs(5)).success());
}

#[test]
fn without_alternates_new_allocations_get_508_and_the_timeout_ends_the_drain() {
    let mut relay = start("timeout = 1");
    let server = relay.addr;
    let mut c = Client::new(server, "u", "p").unwrap();
    c.allocate(None).unwrap();
    let started = Instant::now();
    relay.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(Client::new(server, "u", "p").unwrap().allocate(None).unwrap_err().code(), Some(508));
    assert!(relay.exit_within(Duration::from_secs(5)).success());
    assert!(started.elapsed() >= Duration::from_millis(900), "exited before the drain timeout");
}
