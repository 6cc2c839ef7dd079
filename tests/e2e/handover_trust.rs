//! The handover trusts no one: a process of another user that reaches the
//! handover socket (a file made reachable by mistake) is refused and gets
//! nothing, and a counterpart that connects and says nothing stalls
//! neither signals nor the workers. Each fails on the relay of commit
//! 86b1f26, which checked no credentials and served the handover on the
//! main thread. (A crafted snapshot, its descriptors and values, is
//! refused in `relay/src/handover/pack.rs` and `turn/src/tests/rejudge.rs`.)

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions, TempDir};
use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};

/// A relay with its handover socket in `dir` (which others may enter).
fn relay(dp: &'static str, dir: &TempDir) -> (Relay, std::path::PathBuf) {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("handover.sock");
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n\
         [auth]\nusers = [{{ name = \"alice\", password = \"wonderland\" }}]\n\
         [admin]\nlisten = \"off\"\n[handover]\nsocket = \"{}\"\n",
        path.display()
    );
    let relay = Relay::start(&RelayOptions::new(dp, &config));
    // Bound after the start line, then made the owner's alone.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = |m: std::fs::Metadata| {
        std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) && m.permissions().mode() & 0o777 == 0o600
    };
    while !std::fs::metadata(&path).is_ok_and(ready) {
        assert!(Instant::now() < deadline, "{dp}: no handover socket at {}", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
    (relay, path)
}

/// Another user (nobody) asks for the handover at a socket left open to
/// all: refused, it receives nothing, and the relay serves on.
fn a_counterpart_of_another_user_gets_nothing(dp: &'static str) {
    let dir = TempDir::new(&format!("trust-uid-{dp}"));
    let (relay, path) = relay(dp, &dir);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A transfer's header and a TakeOver message, then what comes back.
    let ask = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
m = b'{"take_over":{"reads":2}}'
s.settimeout(5)
try:
    s.send(b"ip2p-ho1" + struct.pack(">QQ", len(m), 0))
    s.send(m)
    print(len(s.recv(65536)))
except (BrokenPipeError, ConnectionResetError):
    # Closed on us before or after the request: nothing came.
    print(0)
"#;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", ask])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "0", "{dp}: it got bytes: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let refused = relay.wait_for("handover refused");
    assert!(refused.contains("uid 65534"), "{dp}: {refused}");
    Client::new(relay.addr, "alice", "wonderland").unwrap().allocate(None).unwrap();
}

/// A counterpart that connects and says nothing: signals are still read
/// at once (a reload goes through) and clients are still served.
fn a_silent_counterpart_stalls_nothing(dp: &'static str) {
    let dir = TempDir::new(&format!("trust-silent-{dp}"));
    let (relay, path) = relay(dp, &dir);
    let silent = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None).unwrap();
    connect(silent.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    relay.signal(Signal::SIGHUP);
    relay.wait_for("configuration reloaded");
    assert!(asked.elapsed() < Duration::from_secs(2), "{dp}: the reload waited {:?}", asked.elapsed());
    Client::new(relay.addr, "alice", "wonderland").unwrap().allocate(None).unwrap();
    drop(silent);
}

on_both_datapaths! {
    names:
    a_counterpart_of_another_user_gets_nothing: a_counterpart_of_another_user_gets_nothing();
    a_silent_counterpart_stalls_nothing: a_silent_counterpart_stalls_nothing();
}
