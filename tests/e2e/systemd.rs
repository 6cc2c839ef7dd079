//! The systemd side of a deployment, on a machine without a running
//! systemd: the unit passes `systemd-analyze verify`, and the binary speaks
//! the sd_notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) to a
//! notification socket the test listens on, as systemd would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::bin;
use ip2p_tests::support::Log;

const UNIT: &str = include_str!("../../deploy/systemd/ip2p-relay.service");

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ip2p-systemd-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = temp_dir("verify");
    // The unit as installed, pointing at this build and a real config.
    let config = dir.join("relay.toml");
    std::fs::write(&config, "listen = [\"127.0.0.1:3478\"]\n[auth]\nsecrets = [\"a-rest-secret-for-tests\"]\n")
        .unwrap();
    let unit =
        UNIT.replace("/usr/local/bin/ip2p-relay", bin()).replace("/etc/ip2p/relay.toml", config.to_str().unwrap());
    let path = dir.join("ip2p-relay.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze is needed (Debian package systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Without a running systemd it may note that; nothing about the unit.
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("ip2p-relay.service")).collect();
    assert!(out.status.success() && about_unit.is_empty(), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Receives notifications until one contains `what` (or fails after 10 s).
fn expect(socket: &UnixDatagram, what: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {what:?} notification; got {seen:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no {what:?} notification ({e}); got {seen:?}"));
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(message.clone());
        if message.lines().any(|l| l == what || l.starts_with(what)) {
            return message;
        }
    }
}

#[test]
fn the_relay_speaks_sd_notify() {
    let dir = temp_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: the shell's `$$`,
    // which `exec` hands to the relay.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", bin()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--user",
            "u:p",
            "--allow-peer",
            "127.0.0.2",
            "--admin",
            "127.0.0.1:0",
        ])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let ready = expect(&socket, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=0 allocations, 2 workers, "), "{ready}");
    // READY means serving: read the port from the log and allocate at once.
    let addr = Log::of(&mut child).listen_addr();
    let mut c = Client::new(addr, "u", "p").unwrap();
    c.allocate(None).unwrap();
    // The watchdog is pinged (at half of WATCHDOG_USEC) and STATUS follows.
    expect(&socket, "WATCHDOG=1", &mut seen);
    expect(&socket, "STATUS=1 allocations, 2 workers", &mut seen);
    // A reload is framed by RELOADING=1 and READY=1.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    expect(&socket, "RELOADING=1", &mut seen);
    expect(&socket, "READY=1", &mut seen);
    // SIGTERM drains (tests/drain.rs): the allocation goes first.
    c.refresh(Some(0)).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    expect(&socket, "STOPPING=1", &mut seen);
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(dir).unwrap();
}

/// An upgrade under systemd: SIGUSR2 makes the relay start its program
/// again with `--take-over`; the new process takes the node over at the
/// handover socket, the old one tells systemd the new one is the service
/// now (MAINPID, which NotifyAccess=main allows the main process) and
/// exits 0, and the client's allocation goes on in the new process.
#[test]
fn sigusr2_upgrades_in_place_and_hands_the_service_to_the_new_process() {
    let dir = temp_dir("upgrade");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let handover = dir.join("handover.sock");
    let mut child = Command::new(bin())
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--user", "u:p", "--allow-peer", "127.0.0.2"])
        .args(["--admin", "off", "--handover-socket", handover.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    expect(&socket, "READY=1", &mut seen);
    let log = Log::of(&mut child);
    let addr = log.listen_addr();
    let peer = ip2p_tests::peer();
    let mut c = Client::new(addr, "u", "p").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2).unwrap();
    let main = expect(&socket, "MAINPID=", &mut seen);
    let new_pid: i32 = main.lines().find_map(|l| l.strip_prefix("MAINPID=")).unwrap().parse().unwrap();
    assert_ne!(new_pid, pid.as_raw());
    let new = nix::unistd::Pid::from_raw(new_pid);
    // Ended by its PID whatever happens below (this test started it).
    struct Kill(nix::unistd::Pid);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _new_process = Kill(new);
    assert!(child.wait().unwrap().success(), "the old process exits 0");
    // The new process serves the allocation the old one made.
    c.send_channel(0x4000, b"after").unwrap();
    assert_eq!(ip2p_tests::recv(&peer), (b"after".to_vec(), relayed));
    assert_eq!(c.refresh(Some(600)).unwrap(), 600);
    // And it speaks to systemd as the service (STATUS on its beat).
    nix::sys::signal::kill(new, nix::sys::signal::Signal::SIGHUP).unwrap();
    expect(&socket, "RELOADING=1", &mut seen);
    drop(log);
    std::fs::remove_dir_all(dir).unwrap();
}
