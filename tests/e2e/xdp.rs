//! The XDP fast path end to end: client, relay and peer each in a network
//! namespace of the test's, joined by two veth pairs (native XDP works on
//! veth), the relay attaching its program to both of its interfaces. Real
//! traffic from ip2p's client must cross it in both directions with
//! nothing lost, counted as the fast path's; a refresh keeps it, an
//! expiry or a deletion ends it, and a peer without a permission reaches
//! no one by either path.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ip2p_client::{Client, Received};
use ip2p_tests::{Netns, Relay, RelayOptions, metrics};
use ip2p_xdp::{Capacity, FastPath, Mode};

/// The three hosts and the programs on the far ends of the veth pairs.
pub(super) struct Lab {
    pub(super) relay: Netns,
    pub(super) client: Netns,
    pub(super) peer: Netns,
    /// Pass-through programs on the client's and the peer's ends: a veth
    /// delivers what XDP sends into it only to a peer with a program.
    _pass: Vec<FastPath>,
}

/// client 10.71.1.2 — 10.71.1.1 relay 10.71.2.1 — 10.71.2.2 (and .3) peer,
/// and the same in IPv6: fd71:1::2 — fd71:1::1 relay fd71:2::1 — fd71:2::2 (::3).
pub(super) fn lab(tag: &str) -> Lab {
    let (relay, client, peer) =
        (Netns::new(&format!("xr-{tag}")), Netns::new(&format!("xc-{tag}")), Netns::new(&format!("xp-{tag}")));
    relay.run(&["link", "add", "rc", "type", "veth", "peer", "name", "cr", "netns", &client.0]);
    relay.run(&["link", "add", "rp", "type", "veth", "peer", "name", "pr", "netns", &peer.0]);
    relay.run(&["addr", "add", "10.71.1.1/24", "dev", "rc"]);
    relay.run(&["addr", "add", "10.71.2.1/24", "dev", "rp"]);
    client.run(&["addr", "add", "10.71.1.2/24", "dev", "cr"]);
    peer.run(&["addr", "add", "10.71.2.2/24", "dev", "pr"]);
    peer.run(&["addr", "add", "10.71.2.3/24", "dev", "pr"]);
    for (ns, dev, a) in [
        (&relay, "rc", "fd71:1::1/64"),
        (&relay, "rp", "fd71:2::1/64"),
        (&client, "cr", "fd71:1::2/64"),
        (&peer, "pr", "fd71:2::2/64"),
        (&peer, "pr", "fd71:2::3/64"),
    ] {
        ns.run(&["addr", "add", a, "dev", dev, "nodad"]);
    }
    for (ns, dev) in [(&relay, "rc"), (&relay, "rp"), (&client, "cr"), (&peer, "pr")] {
        ns.run(&["link", "set", dev, "up"]);
    }
    client.run(&["route", "add", "default", "via", "10.71.1.1"]);
    peer.run(&["route", "add", "default", "via", "10.71.2.1"]);
    client.run(&["-6", "route", "add", "default", "via", "fd71:1::1"]);
    peer.run(&["-6", "route", "add", "default", "via", "fd71:2::1"]);
    // No forwarding (a namespace may inherit it on): the relay turns it on
    // for lo, which its FIB lookups name, and for nothing else.
    sh(&relay, "sysctl -qw net.ipv4.conf.all.forwarding=0 net.ipv6.conf.all.forwarding=0");
    // Senders' checksums complete (no offload), as a real NIC receives them.
    sh(&client, "ethtool -K cr tx off >/dev/null");
    sh(&peer, "ethtool -K pr tx off >/dev/null");
    let pass = [(&client, "cr"), (&peer, "pr")]
        .into_iter()
        .map(|(ns, dev)| {
            ns.enter(move || {
                let mut f =
                    FastPath::load(Capacity { channels: 1, slots: 1 }).expect("the XDP program (xdp/toolchain.sh)");
                f.attach_pass(dev, Mode::Native).unwrap();
                f
            })
        })
        .collect();
    Lab { relay, client, peer, _pass: pass }
}

pub(super) fn sh(ns: &Netns, cmd: &str) {
    let status = std::process::Command::new("ip").args(["netns", "exec", &ns.0, "sh", "-c", cmd]).status().unwrap();
    assert!(status.success(), "{cmd} in {}", ns.0);
}

pub(super) const CONFIG: &str = r#"
listen = ["10.71.1.1:3478", "[fd71:1::1]:3478"]
realm = "ip2p.test"
workers = 2
[relay]
ips = ["10.71.2.1", "fd71:2::1"]
[allocation]
default_lifetime = 3
[auth]
users = [{ name = "alice", password = "wonderland" }]
[peers]
allow = ["10.71.2.0/24", "fd71:2::/64"]
[admin]
listen = "127.0.0.1:0"
[xdp]
mode = "on"
"#;

pub(super) fn xdp_metric(lab: &Lab, relay: &Relay, key: &str) -> f64 {
    let admin = relay.admin.unwrap();
    let m = lab.relay.enter(move || metrics(admin, None));
    m.get(key).copied().unwrap_or(0.0)
}

/// Room for a burst: the fast path delivers back to back, faster than a
/// default receive buffer (about 200 small datagrams) takes while the test
/// still sends.
fn roomy(socket: &UdpSocket) {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RcvBufForce, &(4 << 20)).unwrap();
}

/// Sends `n` numbered datagrams each way and returns how many arrived each way.
fn stream(client: &mut Client, channel: u16, peer: &UdpSocket, relayed: SocketAddr, n: u32) -> (u32, u32) {
    roomy(peer);
    roomy(client.socket().unwrap());
    for i in 0..n {
        client.send_channel(channel, &i.to_be_bytes()).unwrap();
    }
    let mut to_peer = 0;
    let mut buf = [0u8; 64];
    peer.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    while let Ok((len, from)) = peer.recv_from(&mut buf) {
        assert_eq!((len, from), (4, relayed), "the payload alone, from the relayed address");
        to_peer += 1;
    }
    for i in 0..n {
        peer.send_to(&i.to_be_bytes(), relayed).unwrap();
    }
    let mut to_client = 0;
    while let Some(r) = client.recv(Duration::from_millis(300)).unwrap() {
        assert!(matches!(r, Received::Channel { channel: c, ref data } if c == channel && data.len() == 4), "{r:?}");
        to_client += 1;
    }
    (to_peer, to_client)
}

fn relays_through_the_fast_path(dp: &'static str, v6: bool) {
    let lab = lab(&format!("fast{}-{dp}", if v6 { "6" } else { "" }));
    let dir = ip2p_tests::TempDir::new("xdp-usage");
    let usage = dir.path().join("usage.jsonl");
    let config = format!("{CONFIG}[usage]\nfile = \"{}\"\n", usage.display());
    let relay = Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, &config) });
    assert_eq!(relay.count("XDP fast path attached"), 2, "{dp}: both interfaces: {:?}", relay.seen());
    let (server, peer_at, stranger_at) = if v6 {
        ("[fd71:1::1]:3478", "[fd71:2::2]:0", "[fd71:2::3]:0")
    } else {
        ("10.71.1.1:3478", "10.71.2.2:0", "10.71.2.3:0")
    };
    let mut client = lab.client.enter(move || Client::new(server.parse().unwrap(), "alice", "wonderland").unwrap());
    let peer = lab.peer.enter(move || UdpSocket::bind(peer_at).unwrap());
    let stranger = lab.peer.enter(move || UdpSocket::bind(stranger_at).unwrap());
    let relayed = if v6 {
        client.allocate_families(Some(ip2p_wire::AddressFamily::IPV6), false).unwrap()[0]
    } else {
        client.allocate(None).unwrap()
    };
    assert_eq!(relayed.is_ipv6(), v6);
    client.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    // A first exchange: the relay's kernel learns the peer's link-layer
    // address (until then the FIB lookup finds no neighbour and the
    // packets take the sockets), and the worker has written its tables.
    assert_eq!(stream(&mut client, 0x4000, &peer, relayed, 10), (10, 10), "{dp}: warm-up");
    let fast =
        |d: &str| xdp_metric(&lab, &relay, &format!("ip2p_relayed_packets_total{{direction=\"{d}\",path=\"xdp\"}}"));
    let socket =
        |d: &str| xdp_metric(&lab, &relay, &format!("ip2p_relayed_packets_total{{direction=\"{d}\",path=\"socket\"}}"));
    let both = || [fast("to_peer"), fast("to_client"), socket("to_peer"), socket("to_client")];
    let warm = both();
    assert_eq!(warm[0] + warm[2], 10.0, "{dp}: each packet counted once, by one path: {warm:?}");

    let (to_peer, to_client) = stream(&mut client, 0x4000, &peer, relayed, 200);
    let passed: Vec<f64> = ["expired", "no_route", "too_big"]
        .iter()
        .map(|r| xdp_metric(&lab, &relay, &format!("ip2p_xdp_passed_packets_total{{reason=\"{r}\"}}")))
        .collect();
    assert_eq!((to_peer, to_client), (200, 200), "{dp}: nothing lost; {:?} {passed:?}", both());
    let after = both();
    let delta: Vec<f64> = after.iter().zip(warm).map(|(a, w)| a - w).collect();
    assert_eq!(delta, [200.0, 200.0, 0.0, 0.0], "{dp}: all through the fast path, none through the sockets");

    // A peer with no permission (another address) reaches no one.
    stranger.send_to(b"let me in", relayed).unwrap();
    assert!(client.recv(Duration::from_millis(300)).unwrap().is_none(), "{dp}: a stranger reached the client");
    let admin = relay.admin.unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&lab.relay.enter(move || ip2p_tests::get(admin, "/status", None)).1).unwrap();
    assert_eq!(status["xdp"]["interfaces"].as_array().map(Vec::len), Some(2), "{dp}: {status}");
    assert_eq!(status["xdp"]["relayed_packets"]["to_client"], after[1], "{dp}: /status agrees with /metrics");
    // The session counts what the fast path carried with what the sockets
    // did, exactly: 210 datagrams of 4 bytes each way.
    let sessions = lab.relay.enter(move || ip2p_tests::get(admin, "/api/v1/sessions", None)).1;
    let sessions: serde_json::Value = serde_json::from_str(&sessions).unwrap();
    let s = &sessions["sessions"][0];
    let counts = ["packets_to_peers", "bytes_to_peers", "packets_from_peers", "bytes_from_peers"].map(|k| &s[k]);
    assert_eq!(counts, [210, 840, 210, 840], "{dp}: {s}");

    // Refreshed past the first lifetime (3 s): still the fast path's.
    client.refresh(Some(30)).unwrap();
    std::thread::sleep(Duration::from_millis(3200));
    let before = fast("to_peer");
    assert_eq!(stream(&mut client, 0x4000, &peer, relayed, 50), (50, 50), "{dp}: after a refresh");
    assert_eq!(fast("to_peer") - before, 50.0, "{dp}: a refresh keeps the fast path");

    // Deleted: the entries go, and nothing reaches the client any more.
    client.refresh(Some(0)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    peer.send_to(b"late", relayed).unwrap();
    assert!(client.recv(Duration::from_millis(300)).unwrap().is_none(), "{dp}: delivered after deletion");
    // Its stop record counts all of it, the fast path's too.
    let stop = super::usage::wait_record(&[&usage], "stop", None);
    let counts = ["packets_to_peers", "bytes_to_peers", "packets_from_peers", "bytes_from_peers"].map(|k| &stop[k]);
    assert_eq!(counts, [260, 1040, 260, 1040], "{dp}: {stop}");
}

/// Sends `n` numbered ChannelData messages from `from` on `channel` and
/// returns how many `to` received, in order, on `back` (its channel to the
/// sender's relayed address).
fn pair_stream(from: &mut Client, channel: u16, to: &mut Client, back: u16, n: u32) -> u32 {
    roomy(to.socket().unwrap());
    for i in 0..n {
        from.send_channel(channel, &i.to_be_bytes()).unwrap();
    }
    let mut got = 0u32;
    while let Some(r) = to.recv(Duration::from_millis(300)).unwrap() {
        assert_eq!(r, Received::Channel { channel: back, data: got.to_be_bytes().to_vec() }, "in order");
        got += 1;
    }
    got
}

/// Two clients of the node with channels to each other's relayed
/// addresses (what two browsers that both fall back to this relay do):
/// their ChannelData goes from one to the other in the program, never
/// reaching the sockets, counted for both; when one allocation ends, the
/// other's packets go to the sockets, which refuse them.
fn pairs_take_the_fast_path(dp: &'static str) {
    let lab = lab(&format!("pair-{dp}"));
    let relay = Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, CONFIG) });
    let server = "10.71.1.1:3478".parse().unwrap();
    let (mut a, mut b) = lab.client.enter(move || {
        (Client::new(server, "alice", "wonderland").unwrap(), Client::new(server, "alice", "wonderland").unwrap())
    });
    let (ra, rb) = (a.allocate(None).unwrap(), b.allocate(None).unwrap());
    a.channel_bind(0x4000, rb).unwrap();
    b.channel_bind(0x4ffe, ra).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(pair_stream(&mut a, 0x4000, &mut b, 0x4ffe, 10), 10, "{dp}: warm-up");
    let counted = |path: &str| {
        ["to_peer", "to_client"].map(|d| {
            xdp_metric(&lab, &relay, &format!("ip2p_relayed_packets_total{{direction=\"{d}\",path=\"{path}\"}}"))
        })
    };
    let (fast, socket) = (counted("xdp"), counted("socket"));
    assert_eq!(pair_stream(&mut a, 0x4000, &mut b, 0x4ffe, 200), 200, "{dp}: A to B, nothing lost");
    assert_eq!(pair_stream(&mut b, 0x4ffe, &mut a, 0x4000, 200), 200, "{dp}: B to A, nothing lost");
    let (fast_after, socket_after) = (counted("xdp"), counted("socket"));
    assert_eq!(
        [fast_after[0] - fast[0], fast_after[1] - fast[1]],
        [400.0, 400.0],
        "{dp}: each packet sent by one allocation and delivered to the other, by the program"
    );
    assert_eq!(socket_after, socket, "{dp}: none by the sockets");

    // B gone: A's packets meet the sockets, which know no such peer now.
    b.refresh(Some(0)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let denied = || xdp_metric(&lab, &relay, r#"ip2p_dropped_packets_total{reason="denied_address"}"#);
    let before = denied();
    for i in 0..5u32 {
        a.send_channel(0x4000, &i.to_be_bytes()).unwrap();
    }
    assert!(b.recv(Duration::from_millis(300)).unwrap().is_none(), "{dp}: delivered after B's deletion");
    assert_eq!(denied() - before, 5.0, "{dp}: the socket path refused them");
    assert_eq!(counted("xdp"), fast_after, "{dp}: the program carried none of them");
}

/// A handover with the fast path on: the old process detaches its program
/// at the switch and the new one attaches its own, with the tables filled
/// from the allocations it took over, so the channel is the program's
/// again at once; a handover that fails attaches the old program again.
fn the_fast_path_survives_a_handover(dp: &'static str) {
    let lab = lab(&format!("ho-{dp}"));
    let dir = ip2p_tests::TempDir::new("xdp-handover");
    let socket = dir.file("handover.sock", "");
    let config = format!("{CONFIG}[handover]\nsocket = \"{}\"\n", socket.display());
    let opts = RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, &config) };
    let mut old = Relay::start(&opts);
    let mut client =
        lab.client.enter(|| Client::new("10.71.1.1:3478".parse().unwrap(), "alice", "wonderland").unwrap());
    let peer = lab.peer.enter(|| UdpSocket::bind("10.71.2.2:0").unwrap());
    let relayed = client.allocate(None).unwrap();
    client.refresh(Some(60)).unwrap();
    client.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    assert_eq!(stream(&mut client, 0x4000, &peer, relayed, 10), (10, 10), "{dp}: warm-up");

    // Refused ("another boot"): the old process attaches its program again.
    let bin = ip2p_tests::relay_bin();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.relay.0, bin.to_str().unwrap(), "--listen", "10.71.1.1:3478"])
        .args(["--user", "alice:wonderland", "--admin", "off", "--datapath", dp, "--take-over"])
        .args(["--handover-socket", socket.to_str().unwrap()])
        .env("IP2P_TEST_BOOT_ID", "another boot")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{dp}");
    old.wait_for("did not take over; going on");
    old.wait_for("XDP fast path attached again");
    old.wait_for("XDP fast path attached again");
    assert!(has_xdp(&lab.relay, "rc") && has_xdp(&lab.relay, "rp"), "{dp}");

    let sample = |d: &str| format!("ip2p_relayed_packets_total{{direction=\"{d}\",path=\"xdp\"}}");
    let before = [xdp_metric(&lab, &old, &sample("to_peer")), xdp_metric(&lab, &old, &sample("to_client"))];
    let new = Relay::start(&RelayOptions {
        netns: Some(lab.relay.0.clone()),
        ..RelayOptions::new(dp, &config).arg("--take-over")
    });
    new.wait_for("took over the previous process's node");
    assert!(old.exits(), "{dp}");
    assert!(has_xdp(&lab.relay, "rc") && has_xdp(&lab.relay, "rp"), "{dp}: the new process's program");
    let fast = |d: &str| xdp_metric(&lab, &new, &sample(d));
    assert_eq!(stream(&mut client, 0x4000, &peer, relayed, 100), (100, 100), "{dp}: after the handover");
    // Counted on from the old process's count.
    assert_eq!(
        [fast("to_peer"), fast("to_client")],
        [before[0] + 100.0, before[1] + 100.0],
        "{dp}: by the new process's program"
    );
}

/// An allocation that lapses mid-stream: its packets stop at its end on
/// both paths (the program sends what is past its deadline to the sockets,
/// which find no allocation).
fn an_expiry_ends_the_fast_path(dp: &'static str) {
    let lab = lab(&format!("exp-{dp}"));
    let relay = Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, CONFIG) });
    let mut client =
        lab.client.enter(|| Client::new("10.71.1.1:3478".parse().unwrap(), "alice", "wonderland").unwrap());
    let peer = lab.peer.enter(|| UdpSocket::bind("10.71.2.2:0").unwrap());
    let relayed = client.allocate(None).unwrap();
    client.channel_bind(0x4001, peer.local_addr().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(stream(&mut client, 0x4001, &peer, relayed, 20), (20, 20), "{dp}: alive");
    std::thread::sleep(Duration::from_millis(3200));
    let refused = || xdp_metric(&lab, &relay, r#"ip2p_dropped_packets_total{reason="no_allocation"}"#);
    let before = refused();
    assert_eq!(stream(&mut client, 0x4001, &peer, relayed, 20), (0, 0), "{dp}: relayed after the allocation's end");
    // The client's ChannelData went to the sockets, where the core found
    // no allocation.
    assert_eq!(refused() - before, 20.0, "{dp}: the socket path refused them");
    drop(relay);
}

/// coturn's `turnutils_uclient` and `turnutils_peer` (a client and an echo
/// we did not write) through the fast path: nothing lost, and the fast
/// path carried their channel traffic.
fn coturns_clients_use_the_fast_path(dp: &'static str) {
    let lab = lab(&format!("uc-{dp}"));
    let relay = Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, CONFIG) });
    let mut peer = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.peer.0, "turnutils_peer", "-L", "10.71.2.2", "-p", "3480"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnutils_peer (apt-get install coturn)");
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new("timeout")
        .args(["60", "ip", "netns", "exec", &lab.client.0, "turnutils_uclient", "-p", "3478", "-n", "50", "-l", "172"])
        .args(["-u", "alice", "-w", "wonderland", "-e", "10.71.2.2", "-r", "3480", "-m", "4", "10.71.1.1"])
        .output()
        .unwrap();
    let _ = peer.kill();
    let _ = peer.wait();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Total lost packets 0 (0.000000%)"), "{dp}: loss reported:\n{text}");
    let totals = text.lines().rev().find_map(|l| {
        let rest = l.split("tot_send_msgs=").nth(1)?;
        let (sent, rest) = rest.split_once(", tot_recv_msgs=")?;
        Some((sent.trim().parse::<u64>().ok()?, rest.trim().parse::<u64>().ok()?))
    });
    assert_eq!(totals, Some((200, 200)), "{dp}: 4 clients x 50 messages each way:\n{text}");
    // Each message crosses the relay twice; the first ones to a new peer
    // take the sockets until the kernel knows the peer's link-layer address.
    let fast =
        |d: &str| xdp_metric(&lab, &relay, &format!("ip2p_relayed_packets_total{{direction=\"{d}\",path=\"xdp\"}}"));
    let (to_peer, to_client) = (fast("to_peer"), fast("to_client"));
    let passed: Vec<f64> = ["expired", "no_route", "too_big"]
        .iter()
        .map(|r| xdp_metric(&lab, &relay, &format!("ip2p_xdp_passed_packets_total{{reason=\"{r}\"}}")))
        .collect();
    assert!(
        to_peer >= 150.0 && to_client >= 150.0,
        "{dp}: the fast path carried {to_peer} / {to_client} of 200 each way; passed (expired, no route, too big) {passed:?}"
    );
}

/// Client and peer on one link to the relay (10.72.1.2 and .3, the relay at
/// .1): what the program relays leaves by the interface it came in by
/// (XDP_TX), not by a redirect.
fn relays_back_out_the_same_interface(dp: &'static str) {
    let (relay_ns, hosts) = (Netns::new(&format!("tr-{dp}")), Netns::new(&format!("th-{dp}")));
    relay_ns.run(&["link", "add", "rx", "type", "veth", "peer", "name", "xr", "netns", &hosts.0]);
    relay_ns.run(&["addr", "add", "10.72.1.1/24", "dev", "rx"]);
    for a in ["10.72.1.2/24", "10.72.1.3/24"] {
        hosts.run(&["addr", "add", a, "dev", "xr"]);
    }
    relay_ns.run(&["link", "set", "rx", "up"]);
    hosts.run(&["link", "set", "xr", "up"]);
    sh(&relay_ns, "sysctl -qw net.ipv4.conf.all.forwarding=0");
    sh(&hosts, "ethtool -K xr tx off >/dev/null");
    let _pass = hosts.enter(|| {
        let mut f = FastPath::load(Capacity { channels: 1, slots: 1 }).expect("the XDP program");
        f.attach_pass("xr", Mode::Native).unwrap();
        f
    });
    let config = CONFIG
        .replace(r#"listen = ["10.71.1.1:3478", "[fd71:1::1]:3478"]"#, r#"listen = ["10.72.1.1:3478"]"#)
        .replace(r#"ips = ["10.71.2.1", "fd71:2::1"]"#, r#"ips = ["10.72.1.1"]"#)
        .replace(r#"allow = ["10.71.2.0/24", "fd71:2::/64"]"#, r#"allow = ["10.72.1.3/32"]"#);
    let relay = Relay::start(&RelayOptions { netns: Some(relay_ns.0.clone()), ..RelayOptions::new(dp, &config) });
    assert_eq!(relay.count("XDP fast path attached"), 1, "{dp}: {:?}", relay.seen());
    let mut client = hosts.enter(|| Client::new("10.72.1.1:3478".parse().unwrap(), "alice", "wonderland").unwrap());
    let peer = hosts.enter(|| UdpSocket::bind("10.72.1.3:0").unwrap());
    let relayed = client.allocate(None).unwrap();
    client.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    assert_eq!(stream(&mut client, 0x4000, &peer, relayed, 10), (10, 10), "{dp}: warm-up");
    let admin = relay.admin.unwrap();
    let fast = |d: &str| {
        let key = format!("ip2p_relayed_packets_total{{direction=\"{d}\",path=\"xdp\"}}");
        relay_ns.enter(move || metrics(admin, None)).get(&key).copied().unwrap_or(0.0)
    };
    let before = (fast("to_peer"), fast("to_client"));
    assert_eq!(stream(&mut client, 0x4000, &peer, relayed, 100), (100, 100), "{dp}: nothing lost");
    assert_eq!((fast("to_peer") - before.0, fast("to_client") - before.1), (100.0, 100.0), "{dp}: by XDP_TX");
}

/// Whether interface `dev` of `ns` has an XDP program attached.
fn has_xdp(ns: &Netns, dev: &str) -> bool {
    let out = std::process::Command::new("ip").args(["-n", &ns.0, "link", "show", dev]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// Draining detaches the program (the sockets finish the job), a crash
/// leaves nothing attached (the attachments are the process's BPF links),
/// and the next start attaches again.
fn leaves_no_program_behind(dp: &'static str) {
    use nix::sys::signal::{Signal, kill};
    let lab = lab(&format!("det-{dp}"));
    let opts = RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, CONFIG) };
    let relay = Relay::start(&opts);
    assert!(has_xdp(&lab.relay, "rc") && has_xdp(&lab.relay, "rp"), "{dp}: attached");
    kill(nix::unistd::Pid::from_raw(relay.pid()), Signal::SIGTERM).unwrap();
    relay.wait_for("XDP fast path detached");
    assert!(!has_xdp(&lab.relay, "rc") && !has_xdp(&lab.relay, "rp"), "{dp}: detached on drain");
    drop(relay);

    let relay = Relay::start(&opts);
    assert!(has_xdp(&lab.relay, "rc"), "{dp}: attached again");
    drop(relay); // SIGKILL
    std::thread::sleep(Duration::from_millis(200));
    assert!(!has_xdp(&lab.relay, "rc") && !has_xdp(&lab.relay, "rp"), "{dp}: left behind by a killed relay");
    let relay = Relay::start(&opts);
    assert_eq!(relay.count("XDP fast path attached"), 2, "{dp}: after a crash: {:?}", relay.seen());
    drop(relay);

    // Another program on the hook: named, with the way to remove it.
    let other = lab.relay.enter(|| {
        let mut f = FastPath::load(Capacity { channels: 1, slots: 1 }).unwrap();
        f.attach_pass("rc", Mode::Native).unwrap();
        f
    });
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.relay.0, ip2p_tests::relay_bin().to_str().unwrap()])
        .args(["--listen", "10.71.1.1:3478", "--relay-ip", "10.71.2.1", "--user", "alice:wonderland"])
        .args(["--admin", "off", "--datapath", dp, "--xdp", "on", "--xdp-interface", "rc"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another XDP program holds the hook"), "{dp}: {err}");
    drop(other);
}

on_both_datapaths! {
    names:
    leaves_no_program_behind: leaves_no_program_behind();
    relays_back_out_the_same_interface: relays_back_out_the_same_interface();
    relays_through_the_fast_path: relays_through_the_fast_path(false);
    relays_ipv6_through_the_fast_path: relays_through_the_fast_path(true);
    the_fast_path_survives_a_handover: the_fast_path_survives_a_handover();
    pairs_take_the_fast_path: pairs_take_the_fast_path();
    an_expiry_ends_the_fast_path: an_expiry_ends_the_fast_path();
    coturns_clients_use_the_fast_path: coturns_clients_use_the_fast_path();
}

/// Where native XDP is refused (loopback has only the generic hook), `auto`
/// says why and relays on the sockets; `on` refuses to start.
#[test]
fn auto_falls_back_and_on_refuses() {
    let config = "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 1\n\
                  [auth]\nusers = [{ name = \"alice\", password = \"wonderland\" }]\n\
                  [peers]\nallow = [\"127.0.0.2/32\"]\n[xdp]\ninterfaces = [\"lo\"]\n";
    let auto = Relay::start(&RelayOptions::new("epoll", config).arg("--xdp").arg("auto"));
    assert_eq!(auto.count("XDP fast path not attached here"), 1, "{:?}", auto.seen());
    assert_eq!(auto.count("XDP fast path off"), 1);
    let mut client = Client::new(auto.addr, "alice", "wonderland").unwrap();
    let peer = ip2p_tests::peer();
    let relayed = client.allocate(None).unwrap();
    client.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    assert_eq!(stream(&mut client, 0x4000, &peer, relayed, 20), (20, 20), "the socket path");

    let out = std::process::Command::new(ip2p_tests::relay_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            "alice:wonderland",
            "--xdp",
            "on",
            "--xdp-interface",
            "lo",
            "--admin",
            "off",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "xdp = on started without XDP: {err}");
    assert!(err.contains("xdp = on, but not on lo"), "{err}");
}
