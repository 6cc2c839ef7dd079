//! Running out of file descriptors: Allocates are answered with 508 and
//! the relay keeps serving; freeing an allocation makes room again. On
//! each datapath, under a low `ulimit -n`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::time::Duration;

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions};
use nix::sys::signal::Signal;

fn out_of_descriptors(datapath: &'static str) {
    let args = ["--listen", "127.0.0.1:0", "--workers", "1", "--user", "u:p", "--admin", "off"];
    let opts = RelayOptions { datapath: Some(datapath), fd_limit: Some(96), ..RelayOptions::flags(&args) };
    let mut relay = Relay::start(&opts);
    let server = relay.addr;
    let mut clients = Vec::new();
    let mut refused = None;
    for _ in 0..200 {
        let mut c = Client::new(server, "u", "p").unwrap();
        match c.allocate(None) {
            Ok(_) => clients.push(c),
            Err(e) => {
                refused = Some(e.code());
                break;
            }
        }
    }
    assert_eq!(refused, Some(Some(508)), "{datapath}: {} allocations, then {refused:?}", clients.len());
    assert!(clients.len() > 20, "{datapath}: only {} allocations", clients.len());
    // Still serving, and a freed allocation makes room.
    let mut probe = Client::new(server, "u", "p").unwrap();
    assert_eq!(probe.binding().unwrap(), probe.local_addr().unwrap());
    clients.pop().unwrap().refresh(Some(0)).unwrap();
    probe.allocate(None).unwrap();
    clients.push(probe);
    for mut c in clients {
        c.refresh(Some(0)).unwrap();
    }
    relay.signal(Signal::SIGTERM);
    assert!(relay.exit_within(Duration::from_secs(10)).success(), "{datapath}: the relay did not exit cleanly");
}

#[test]
fn epoll_answers_508_when_out_of_descriptors() {
    out_of_descriptors("epoll");
}

#[test]
fn io_uring_answers_508_when_out_of_descriptors() {
    out_of_descriptors("io_uring");
}
