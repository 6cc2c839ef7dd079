//! The systemd side of a deployment, on a machine without a running
//! systemd: the unit passes `systemd-analyze verify`, and the binary speaks
//! the sd_notify protocol (READY, STATUS, WATCHDOG, RELOADING, STOPPING) to a
//! notification socket the test listens on, as systemd would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions, TempDir, relay_bin};
use nix::sys::signal::Signal;

const UNIT: &str = include_str!("../../deploy/systemd/ip2p-relay.service");

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("systemd-verify");
    // The unit as installed, pointing at this build and a real config.
    let config =
        dir.file("relay.toml", "listen = [\"127.0.0.1:3478\"]\n[auth]\nsecrets = [\"a-rest-secret-for-tests\"]\n");
    let bin = relay_bin();
    let unit = UNIT
        .replace("/usr/local/bin/ip2p-relay", bin.to_str().unwrap())
        .replace("/etc/ip2p/relay.toml", config.to_str().unwrap());
    let path = dir.file("ip2p-relay.service", &unit);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", path.to_str().unwrap()])
        .output()
        .expect("systemd-analyze is needed (Debian package systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Without a running systemd it may note that; nothing about the unit.
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("ip2p-relay.service")).collect();
    assert!(out.status.success() && about_unit.is_empty(), "{text}");
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
    let dir = TempDir::new("systemd-notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: the shell's `$$`,
    // which `exec` hands to the relay.
    let args = ["--listen", "127.0.0.1:0", "--workers", "2", "--user", "u:p", "--allow-peer", "127.0.0.2"];
    let opts = RelayOptions { shell: Some("export WATCHDOG_PID=$$".into()), ..RelayOptions::flags(&args) }
        .arg("--admin")
        .arg("127.0.0.1:0")
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000");
    let mut relay = Relay::start(&opts);
    let mut seen = Vec::new();
    let ready = expect(&socket, "READY=1", &mut seen);
    assert!(ready.contains("STATUS=0 allocations, 2 workers, "), "{ready}");
    // READY means serving: allocate at once.
    let mut c = Client::new(relay.addr, "u", "p").unwrap();
    c.allocate(None).unwrap();
    // The watchdog is pinged (at half of WATCHDOG_USEC) and STATUS follows.
    expect(&socket, "WATCHDOG=1", &mut seen);
    expect(&socket, "STATUS=1 allocations, 2 workers", &mut seen);
    // A reload is framed by RELOADING=1 and READY=1.
    relay.signal(Signal::SIGHUP);
    expect(&socket, "RELOADING=1", &mut seen);
    expect(&socket, "READY=1", &mut seen);
    // SIGTERM drains (tests/drain.rs): the allocation goes first.
    c.refresh(Some(0)).unwrap();
    relay.signal(Signal::SIGTERM);
    expect(&socket, "STOPPING=1", &mut seen);
    assert!(relay.exit_within(Duration::from_secs(10)).success());
}

/// An upgrade under systemd: SIGUSR2 makes the relay start its program
/// again with `--take-over`; the new process takes the node over at the
/// handover socket, the old one tells systemd the new one is the service
/// now (MAINPID, which NotifyAccess=main allows the main process) and
/// exits 0, and the client's allocation goes on in the new process.
#[test]
fn sigusr2_upgrades_in_place_and_hands_the_service_to_the_new_process() {
    let dir = TempDir::new("systemd-upgrade");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let handover = dir.path().join("handover.sock");
    let args = ["--listen", "127.0.0.1:0", "--workers", "2", "--user", "u:p", "--allow-peer", "127.0.0.2"];
    let opts = RelayOptions::flags(&args)
        .arg("--admin")
        .arg("off")
        .arg("--handover-socket")
        .arg(handover.to_str().unwrap())
        .env("NOTIFY_SOCKET", socket_path.to_str().unwrap());
    let mut relay = Relay::start(&opts);
    let mut seen = Vec::new();
    expect(&socket, "READY=1", &mut seen);
    let addr = relay.addr;
    let peer = ip2p_tests::peer();
    let mut c = Client::new(addr, "u", "p").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();

    relay.signal(Signal::SIGUSR2);
    let main = expect(&socket, "MAINPID=", &mut seen);
    let new_pid: i32 = main.lines().find_map(|l| l.strip_prefix("MAINPID=")).unwrap().parse().unwrap();
    assert_ne!(new_pid, relay.pid());
    let new = nix::unistd::Pid::from_raw(new_pid);
    // Ended by its PID whatever happens below (this test started it).
    struct Kill(nix::unistd::Pid);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _new_process = Kill(new);
    assert!(relay.exit_within(Duration::from_secs(10)).success(), "the old process exits 0");
    // The new process serves the allocation the old one made.
    c.send_channel(0x4000, b"after").unwrap();
    assert_eq!(ip2p_tests::recv(&peer), (b"after".to_vec(), relayed));
    assert_eq!(c.refresh(Some(600)).unwrap(), 600);
    // And it speaks to systemd as the service (STATUS on its beat).
    nix::sys::signal::kill(new, Signal::SIGHUP).unwrap();
    expect(&socket, "RELOADING=1", &mut seen);
}

/// Receives what the relay stores in "systemd's" file descriptor store
/// until the snapshot comes: each descriptor with its name.
fn stored(socket: &UnixDatagram, seen: &mut Vec<String>) -> Vec<(String, std::os::fd::OwnedFd)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut out = Vec::new();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
            .unwrap_or_else(|e| panic!("no snapshot stored ({e}); got {seen:?}"));
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(received) = c {
                // SAFETY: descriptors just received, owned by nothing else.
                fds.extend(received.into_iter().map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }));
            }
        }
        let n = msg.bytes;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(text.clone());
        if text.lines().any(|l| l == "FDSTORE=1") {
            assert!(
                text.lines().any(|l| l == "FDPOLL=0"),
                "systemd must not drop a socket with an error queued: {text}"
            );
            let name = text.lines().find_map(|l| l.strip_prefix("FDNAME=")).unwrap().to_owned();
            assert_eq!(fds.len(), 1, "{text}");
            out.extend(fds.into_iter().map(|fd| (name.clone(), fd)));
            if name == "ip2p-handover-snapshot" {
                return out;
            }
        }
    }
}

/// A process standing in for systemd's restart: it gets `fds` as
/// LISTEN_FDS (from 3 on, named), and runs the relay as `opts` say.
fn start_with_fds(fds: &[(String, std::os::fd::OwnedFd)], opts: RelayOptions) -> Relay {
    use std::fmt::Write;
    use std::os::fd::AsRawFd;
    // Far above 3 + n first (not closed on exec), then into place, the
    // copies closed.
    let high: Vec<std::os::fd::OwnedFd> = fds
        .iter()
        .map(|(_, fd)| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD(1000)).unwrap())
        .map(|raw| unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
        .collect();
    let mut script = String::from("export LISTEN_PID=$$");
    for (i, fd) in high.iter().enumerate() {
        write!(script, "\nexec {}<&{} {}<&-", 3 + i, fd.as_raw_fd(), fd.as_raw_fd()).unwrap();
    }
    let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
    let opts = RelayOptions { shell: Some(script), ..opts }
        .env("LISTEN_FDS", &fds.len().to_string())
        .env("LISTEN_FDNAMES", &names.join(":"));
    Relay::start(&opts)
}

/// `systemctl restart` with the file descriptor store, the test standing
/// in for systemd (its notification socket takes the descriptors; a
/// `systemctl` of the test's, given as `IP2P_TEST_SYSTEMCTL` since the
/// relay calls /usr/bin/systemctl, answers that the job is a restart, and the
/// relay runs in a cgroup named as a service): the relay stores its
/// sockets and snapshot and exits at once, and the next process, given
/// them as systemd gives them, serves the UDP and TCP clients on. A
/// damaged snapshot starts the node afresh; a stop drains and stores
/// nothing. Both datapaths.
#[test]
fn a_restart_hands_over_through_the_file_descriptor_store() {
    for (dp, mangle) in [("epoll", ""), ("io_uring", ""), ("epoll", "truncate")] {
        let dir = TempDir::new(&format!("fdstore-{dp}-{mangle}"));
        let socket_path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).unwrap();
        let unit = format!("ip2p-test-{}-{dp}{mangle}.service", std::process::id());
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let systemctl = dir.path().join("bin/systemctl");
        std::fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n list-jobs) echo \"7 {unit} $(cat {job}) running\" ;;\n show) echo 64 ;;\nesac\n",
                job = dir.path().join("job").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&systemctl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let job = dir.file("job", "restart");
        // The cgroup systemd would have made for the unit.
        let cgroup = PathBuf::from("/sys/fs/cgroup/systemd").join(&unit);
        std::fs::create_dir_all(&cgroup).expect("systemd's cgroup hierarchy (name=systemd) to make a unit's cgroup in");
        struct Cgroup(PathBuf);
        impl Drop for Cgroup {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let _cgroup = Cgroup(cgroup.clone());
        let args = ["--listen", "127.0.0.1:0", "--workers", "2", "--user", "u:p", "--allow-peer", "127.0.0.2"];
        let opts = RelayOptions { datapath: Some(dp), ..RelayOptions::flags(&args) }
            .arg("--admin")
            .arg("off")
            .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
            .env("IP2P_TEST_SYSTEMCTL", systemctl.to_str().unwrap());
        let mut old = Relay::start(&opts.clone().env("IP2P_TEST_MANGLE_SNAPSHOT", mangle));
        let mut seen = Vec::new();
        expect(&socket, "READY=1", &mut seen);
        std::fs::write(cgroup.join("cgroup.procs"), old.pid().to_string()).unwrap();
        let addr = old.addr;
        let peer = ip2p_tests::peer();
        let mut udp = Client::new(addr, "u", "p").unwrap();
        let udp_relayed = udp.allocate(None).unwrap();
        udp.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
        let mut tcp = Client::tcp(addr, "u", "p").unwrap();
        let tcp_relayed = tcp.allocate(None).unwrap();
        tcp.channel_bind(0x4001, peer.local_addr().unwrap()).unwrap();

        let started = Instant::now();
        old.signal(Signal::SIGTERM);
        let fds = stored(&socket, &mut seen);
        assert!(old.exit_within(Duration::from_secs(10)).success(), "{dp}: the old process exits 0");
        assert!(started.elapsed() < Duration::from_secs(10), "{dp}: no drain: {:?}", started.elapsed());
        old.wait_for("stored in systemd's file descriptor store; exiting");
        // 2 workers' UDP and TCP listeners, 2 relay sockets, the TCP
        // client's connection, the snapshot.
        assert_eq!(fds.len(), 8, "{dp}: {:?}", fds.iter().map(|(n, _)| n).collect::<Vec<_>>());

        let mut new = start_with_fds(&fds, opts);
        drop(fds);
        std::fs::write(cgroup.join("cgroup.procs"), new.pid().to_string()).unwrap();
        expect(&socket, "READY=1", &mut seen);
        // The store lets go of every descriptor it held.
        let removed = |seen: &Vec<String>| seen.iter().filter(|m| m.lines().any(|l| l == "FDSTOREREMOVE=1")).count();
        while removed(&seen) < 8 {
            expect(&socket, "FDSTOREREMOVE=1", &mut seen);
        }
        if mangle.is_empty() {
            assert_eq!(new.addr, addr, "{dp}");
            let took = new.wait_for("took over the previous process's node");
            assert!(took.contains("allocations=2"), "{dp}: {took}");
            for (c, channel, relayed) in [(&mut udp, 0x4000, udp_relayed), (&mut tcp, 0x4001, tcp_relayed)] {
                c.send_channel(channel, b"after the restart").unwrap();
                assert_eq!(ip2p_tests::recv(&peer), (b"after the restart".to_vec(), relayed), "{dp}");
                assert_eq!(c.refresh(Some(600)).unwrap(), 600, "{dp}");
            }
        } else {
            assert_eq!(new.count("starting afresh"), 1, "{dp}");
            assert!(udp.refresh(Some(600)).is_err(), "{dp}: the allocation is gone");
            let mut again = Client::new(new.addr, "u", "p").unwrap();
            again.allocate(None).unwrap();
        }

        // A stop: nothing stored, it drains (its allocations hold it).
        std::fs::write(&job, "stop").unwrap();
        new.signal(Signal::SIGTERM);
        new.wait_for("draining");
        std::thread::sleep(Duration::from_millis(300));
        assert!(new.alive(), "{dp}: still draining");
        socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            assert!(!String::from_utf8_lossy(&buf[..n]).contains("FDSTORE=1"), "{dp}: a stop stores nothing");
        }
    }
}
