//! SIGTERM drains: new Allocates get 300 Try Alternate (or 508 without
//! alternates) while existing allocations keep relaying; the process exits
//! 0 once they are gone or the drain timeout passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::bin;
use ip2p_tests::get;
use ip2p_tests::support::Log;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Starts the relay with `drain` as its [drain] table; returns it, its
/// listen address and its admin listener's.
fn start(name: &str, drain: &str) -> (Child, SocketAddr, SocketAddr) {
    let path = std::env::temp_dir().join(format!("ip2p-drain-{}-{name}.toml", std::process::id()));
    let text = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = 2\n[auth]\nusers = [{{ name = \"u\", password = \"p\" }}]\n\
         [peers]\nallow = [\"127.0.0.2/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n[drain]\n{drain}\n"
    );
    std::fs::write(&path, text).unwrap();
    let mut child = Command::new(bin())
        .args(["--config", path.to_str().unwrap()])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Log::of(&mut child);
    let addr = log.listen_addr();
    let line = log.wait_for("admin=");
    let admin = line.split("admin=").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    std::fs::remove_file(path).unwrap();
    (child, addr, admin)
}

fn exits_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_refuses_new_allocations_and_waits_for_the_others() {
    let (mut child, server, admin) =
        start("alternates", "timeout = 30\nalternates = [\"127.0.0.1:3479\", \"[::1]:3479\"]");
    assert_eq!(get(admin, "/readyz", None).0, 200);
    let mut c = Client::new(server, "u", "p").unwrap();
    let relayed = c.allocate(None).unwrap();
    let peer = UdpSocket::bind("127.0.0.2:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();

    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
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
    assert!(child.try_wait().unwrap().is_none(), "exited with an allocation live");
    // Its end lets the process go.
    c.refresh(Some(0)).unwrap();
    assert!(exits_within(&mut child, Duration::from_secs(5)).success());
}

#[test]
fn without_alternates_new_allocations_get_508_and_the_timeout_ends_the_drain() {
    let (mut child, server, _) = start("timeout", "timeout = 1");
    let mut c = Client::new(server, "u", "p").unwrap();
    c.allocate(None).unwrap();
    let started = Instant::now();
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(Client::new(server, "u", "p").unwrap().allocate(None).unwrap_err().code(), Some(508));
    assert!(exits_within(&mut child, Duration::from_secs(5)).success());
    assert!(started.elapsed() >= Duration::from_millis(900), "exited before the drain timeout");
}
