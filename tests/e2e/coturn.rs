//! Interoperability with clients we did not write: coturn's
//! `turnutils_uclient`, `turnutils_peer` and `turnutils_stunclient`
//! (Debian package coturn; `.ci/run` installs it). Every test runs on each
//! datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use ip2p_tests::support::Pki;

const USER: &str = "coturn-user";
const PASSWORD: &str = "coturn-password";
const REALM: &str = "ip2p.test";
const SECRET: &str = "coturn-rest-secret";

/// 10,000 relay ports outside the kernel's ephemeral port range (the
/// default 32768-60999, or deploy/sysctl.d's 10000-49151 once installed).
fn ports_outside_the_ephemeral_range() -> String {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let bounds: Vec<u32> = range.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let (lo, hi) = (bounds.first().copied().unwrap_or(32768), bounds.get(1).copied().unwrap_or(60999));
    if lo >= 1024 + 10_000 {
        format!("{}-{}", lo - 10_000, lo - 1)
    } else {
        assert!(hi + 10_000 <= 65535, "no 10,000 ports outside the ephemeral range {lo}-{hi}");
        format!("{}-{}", hi + 1, hi + 10_000)
    }
}

/// A node serving UDP and TCP on one port and TLS on another (its
/// certificate files are read at start and may go after).
fn start(datapath: DatapathKind) -> Node {
    let pki = Pki::new(&format!("coturn-{datapath:?}-{:?}", std::thread::current().id()));
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        realm = "{REALM}"
        workers = 2
        [relay]
        ips = ["127.0.0.1", "::1"]
        # Outside this machine's ephemeral range, as deploy/sysctl.d
        # arranges on a host: uclient's many clients and EVEN-PORT pairs
        # then never lose a chosen port to an ephemeral socket.
        ports = "{ports}"
        {tls}
        [auth]
        users = [{{ name = "{USER}", password = "{PASSWORD}" }}]
        secrets = ["{SECRET}"]
        [peers]
        allow = ["127.0.0.2/32", "::1/128"]
        "#,
        tls = pki.tls_table("127.0.0.1:0"),
        ports = ports_outside_the_ephemeral_range(),
    );
    ip2p_tests::start_node(datapath, &text)
}

fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} is not installed: `apt-get install coturn` (.ci/run does)");
    Command::new(name)
}

/// `turnutils_peer`, an echo server, on a free loopback port.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start() -> Self {
        // The tool takes a port, not 0: find a free one, then let it bind.
        let port = UdpSocket::bind("127.0.0.2:0").unwrap().local_addr().unwrap().port();
        let child = tool("turnutils_peer")
            .args(["-L", "127.0.0.2", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        Self { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// At most four uclients at a time: a run mostly waits (each client starts
/// sending after a random 1-6 s; 0.1 s of CPU a run), but a dozen at once
/// on a small machine starve each other's retransmission timers.
static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
const AT_ONCE: usize = 4;

/// A place among the [`AT_ONCE`] uclients that may run, until dropped.
struct Turn;

impl Turn {
    fn take() -> Self {
        let (count, freed) = &RUNNING;
        let mut n = count.lock().unwrap_or_else(PoisonError::into_inner);
        while *n >= AT_ONCE {
            n = freed.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
        *n += 1;
        Self
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let (count, freed) = &RUNNING;
        *count.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        freed.notify_one();
    }
}

/// Runs `turnutils_uclient` against the node, bounded in time.
fn uclient(server: SocketAddr, args: &[&str]) -> String {
    let _turn = Turn::take();
    let mut cmd = tool("turnutils_uclient");
    cmd.args(["-p", &server.port().to_string(), "-n", "30", "-l", "170"]).args(args).arg(server.ip().to_string());
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let Output { stdout, stderr, .. } = wait_bounded(child, Duration::from_secs(60));
    format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr))
}

fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("timed out; output so far:\n{}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks uclient's summary: at least `at_least` messages were sent (it may
/// run more sessions than `-m` asks, e.g. one more with a peer), all came
/// back, and it reports no loss.
fn assert_no_loss(output: &str, at_least: u64) {
    let totals = output
        .lines()
        .rev()
        .find_map(|l| {
            let rest = l.split("tot_send_msgs=").nth(1)?;
            let (sent, rest) = rest.split_once(", tot_recv_msgs=")?;
            Some((sent.trim().parse::<u64>().ok()?, rest.trim().parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no totals in uclient output:\n{output}"));
    assert!(totals.0 >= at_least && totals.0 == totals.1, "sent/received {totals:?}:\n{output}");
    assert!(output.contains("Total lost packets 0 (0.000000%)"), "loss reported:\n{output}");
}

fn channels_to_a_peer(dp: DatapathKind) {
    let node = start(dp);
    let peer = Peer::start();
    let out = uclient(
        node.local_addrs()[0],
        &["-u", USER, "-w", PASSWORD, "-e", "127.0.0.2", "-r", &peer.port.to_string(), "-m", "5"],
    );
    assert_no_loss(&out, 5 * 30);
}

fn send_indications_to_a_peer(dp: DatapathKind) {
    let node = start(dp);
    let peer = Peer::start();
    let out = uclient(
        node.local_addrs()[0],
        &["-s", "-u", USER, "-w", PASSWORD, "-e", "127.0.0.2", "-r", &peer.port.to_string(), "-m", "5"],
    );
    assert_no_loss(&out, 5 * 30);
}

fn client_to_client(dp: DatapathKind) {
    let node = start(dp);
    let out = uclient(node.local_addrs()[0], &["-y", "-u", USER, "-w", PASSWORD, "-m", "4"]);
    // -y pairs the clients: each sends its messages to another's relay.
    assert_no_loss(&out, 4 * 30);
    let out = uclient(node.local_addrs()[0], &["-y", "-s", "-u", USER, "-w", PASSWORD, "-m", "4"]);
    assert_no_loss(&out, 4 * 30);
}

fn rest_api_secret(dp: DatapathKind) {
    let node = start(dp);
    let peer = Peer::start();
    let port = peer.port.to_string();
    let out = uclient(node.local_addrs()[0], &["-W", SECRET, "-u", "web", "-e", "127.0.0.2", "-r", &port, "-m", "3"]);
    assert_no_loss(&out, 3 * 30);
    let out = uclient(node.local_addrs()[0], &["-W", "not-the-secret", "-u", "web", "-y", "-m", "1"]);
    assert!(out.contains("Cannot complete Allocation"), "a wrong secret must be refused:\n{out}");
}

fn fifty_clients(dp: DatapathKind) {
    let node = start(dp);
    let peer = Peer::start();
    let out = uclient(
        node.local_addrs()[0],
        &["-u", USER, "-w", PASSWORD, "-e", "127.0.0.2", "-r", &peer.port.to_string(), "-m", "50"],
    );
    assert_no_loss(&out, 50 * 30);
}

/// `-t`: TURN over TCP; with `-S` over TLS (`-S` alone would be DTLS,
/// which ip2p does not serve).
fn over_tcp_and_tls(dp: DatapathKind) {
    let node = start(dp);
    let peer = Peer::start();
    let port = peer.port.to_string();
    let tcp = node.local_addrs()[0];
    let tls = node.tls_addrs()[0];
    for (server, extra) in [(tcp, &["-t"][..]), (tcp, &["-t", "-s"]), (tls, &["-t", "-S"]), (tls, &["-t", "-S", "-s"])]
    {
        let mut args = extra.to_vec();
        args.extend(["-u", USER, "-w", PASSWORD, "-e", "127.0.0.2", "-r", &port, "-m", "4"]);
        assert_no_loss(&uclient(server, &args), 4 * 30);
    }
    // Client to client, both relayed, each over its own connection.
    assert_no_loss(&uclient(tcp, &["-t", "-y", "-u", USER, "-w", PASSWORD, "-m", "4"]), 4 * 30);
    assert_no_loss(&uclient(tls, &["-t", "-S", "-y", "-u", USER, "-w", PASSWORD, "-m", "4"]), 4 * 30);
}

/// `-T`: RFC 6062 TCP allocations, client to client through the relay's
/// own TCP relayed addresses (Connect, ConnectionAttempt, ConnectionBind),
/// over TCP and over TLS. One pair (`-m 2`): with more, uclient waits for
/// every client to be bound to every other, which its pairs never are, and
/// gives up only after 30 s plus a second per client, on any server.
fn tcp_allocations(dp: DatapathKind) {
    let node = start(dp);
    assert_no_loss(&uclient(node.local_addrs()[0], &["-T", "-u", USER, "-w", PASSWORD, "-m", "2"]), 2 * 30);
    assert_no_loss(&uclient(node.tls_addrs()[0], &["-T", "-S", "-u", USER, "-w", PASSWORD, "-m", "2"]), 2 * 30);
}

/// `-x`: IPv6 relayed addresses; `-Z`: dual allocations (coturn sends the
/// draft's ADDITIONAL-ADDRESS-FAMILY code, which ip2p accepts).
fn ipv6_and_dual(dp: DatapathKind) {
    let node = start(dp);
    let server = node.local_addrs()[0];
    assert_no_loss(&uclient(server, &["-y", "-x", "-u", USER, "-w", PASSWORD, "-m", "4"]), 4 * 30);
    assert_no_loss(&uclient(server, &["-t", "-y", "-x", "-u", USER, "-w", PASSWORD, "-m", "4"]), 4 * 30);
    assert_no_loss(&uclient(server, &["-y", "-Z", "-u", USER, "-w", PASSWORD, "-m", "4"]), 4 * 30);
}

fn stun_binding(dp: DatapathKind) {
    let node = start(dp);
    let server = node.local_addrs()[0];
    let child = tool("turnutils_stunclient")
        .args(["-p", &server.port().to_string(), &server.ip().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, Duration::from_secs(20));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

on_both_datapaths! {
    uclient_channels: channels_to_a_peer();
    uclient_send_indications: send_indications_to_a_peer();
    uclient_client_to_client: client_to_client();
    uclient_rest_secret: rest_api_secret();
    uclient_fifty_clients: fifty_clients();
    uclient_tcp_and_tls: over_tcp_and_tls();
    uclient_tcp_allocations: tcp_allocations();
    uclient_ipv6_and_dual: ipv6_and_dual();
    stunclient: stun_binding();
}
