//! Interoperability with Python's aioice TURN client over UDP, TCP and TLS
//! (`tests/interop/aioice_turn.py`; `.ci/run` installs aioice). Every test
//! runs on each datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use ip2p_tests::support::Pki;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/aioice_turn.py");

fn start(dp: DatapathKind, pki: &Pki) -> Node {
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        workers = 2
        {tls}
        [auth]
        users = [{{ name = "aioice", password = "py-secret" }}]
        [peers]
        allow = ["127.0.0.2/32"]
        "#,
        tls = pki.tls_table("127.0.0.1:0"),
    );
    ip2p_tests::start_node(dp, &text)
}

/// Runs the script; returns its output once it exits (it bounds itself to
/// 20 s; this waits at most 40).
fn aioice(server: SocketAddr, transport: &str) -> String {
    // The project's virtual environment (tests/deps.sh), else the system's.
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python3");
    let python = if std::path::Path::new(venv).exists() { venv } else { "python3" };
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .args([&server.ip().to_string(), &server.port().to_string(), "aioice", "py-secret", transport, "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed");
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !text.contains("No module named 'aioice'"),
        "aioice is not installed: tests/deps.sh (make test) installs it into .venv"
    );
    text
}

fn every_transport(dp: DatapathKind) {
    let pki = Pki::new(&format!("aioice-{dp:?}"));
    let node = start(dp, &pki);
    for (server, transport) in
        [(node.local_addrs()[0], "udp"), (node.local_addrs()[0], "tcp"), (node.tls_addrs()[0], "tls")]
    {
        let out = aioice(server, transport);
        assert!(out.contains("relayed 20 of 20"), "aioice over {transport}:\n{out}");
    }
}

#[test]
fn epoll() {
    every_transport(DatapathKind::Epoll);
}

#[test]
fn io_uring() {
    every_transport(DatapathKind::IoUring);
}
