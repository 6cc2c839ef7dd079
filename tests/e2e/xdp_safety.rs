//! The XDP fast path as an attacker meets it, in the veth lab of
//! `xdp.rs`: a spoofed source is the kernel's to judge (strict
//! rp_filter), a wildcard listener does not attach the program to every
//! interface of the host, and a client replaying a signed Refresh with 256
//! channels bound costs the relay no more with the fast path than without;
//! and the fast path needs no forwarding where packets arrive, so the
//! relay's host routes nothing for its clients. Each fails on the relay of
//! commit 86b1f26. (Lapsed entries leaving the
//! tables is `relay/src/fastpath.rs`'s test; DSCP, ECN and checksums are
//! the program's, `xdp/tests/program.rs`.)

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions};
use ip2p_wire::attr::Lifetime;
use ip2p_wire::{Attribute, Method};

use super::xdp::{CONFIG, lab, sh, xdp_metric};

const SERVER: &str = "10.71.1.1:3478";

/// The lab's config with allocations that outlive the test and `mode`.
fn config(mode: &str) -> String {
    CONFIG
        .replace("default_lifetime = 3", "default_lifetime = 600")
        .replace("mode = \"on\"", &format!("mode = \"{mode}\""))
}

/// A host on the peer's side sends ChannelData from the client's address
/// and port (a spoofed source) on the client's channel: the program leaves
/// it to the kernel, whose strict rp_filter drops it, so the peer never
/// gets it; the real client's packets still go the fast path.
fn a_spoofed_source_is_left_to_the_kernel(dp: &'static str) {
    let lab = lab(&format!("spoof-{dp}"));
    sh(
        &lab.relay,
        "sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.rc.rp_filter=1 net.ipv4.conf.rp.rp_filter=1",
    );
    let relay =
        Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, &config("on")) });
    let server: SocketAddr = SERVER.parse().unwrap();
    let peer = lab.peer.enter(|| UdpSocket::bind("10.71.2.2:0").unwrap());
    let peer_addr = peer.local_addr().unwrap();
    let mut client = lab.client.enter(move || {
        let mut c = Client::new(server, "alice", "wonderland").unwrap();
        c.allocate(None).unwrap();
        c.channel_bind(0x4000, peer_addr).unwrap();
        c
    });
    peer.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    for _ in 0..20 {
        client.send_channel(0x4000, b"real").unwrap();
    }
    let mut buf = [0u8; 64];
    let mut real = 0;
    while let Ok((n, _)) = peer.recv_from(&mut buf) {
        assert_eq!(&buf[..n], b"real");
        real += 1;
    }
    assert_eq!(real, 20, "{dp}: the client's own packets");

    let port = client.local_addr().unwrap().port();
    lab.peer.run(&["addr", "add", "10.71.1.2/32", "dev", "pr"]);
    let spoofer = lab.peer.enter(move || UdpSocket::bind(("10.71.1.2", port)).unwrap());
    let frame = [&[0x40, 0x00, 0, 7][..], b"spoofed"].concat();
    for _ in 0..20 {
        spoofer.send_to(&frame, server).unwrap();
    }
    if let Ok((n, _)) = peer.recv_from(&mut buf) {
        panic!("{dp}: the peer got {:?} from a spoofed source", String::from_utf8_lossy(&buf[..n]));
    }
    let spoofed = xdp_metric(&lab, &relay, r#"ip2p_xdp_passed_packets_total{reason="spoofed"}"#);
    assert_eq!(spoofed, 20.0, "{dp}: counted as spoofed");
}

/// With a wildcard listener the program goes where the relay addresses are
/// (and on NICs), not on a bridge or veth that happens to be up.
fn a_wildcard_listener_attaches_only_where_it_relays(dp: &'static str) {
    let lab = lab(&format!("wild-{dp}"));
    lab.relay.run(&["link", "add", "cb0", "type", "veth", "peer", "name", "cb1"]);
    lab.relay.run(&["addr", "add", "10.99.0.1/24", "dev", "cb0"]);
    for dev in ["cb0", "cb1"] {
        lab.relay.run(&["link", "set", dev, "up"]);
    }
    let config =
        config("on").replace(r#"listen = ["10.71.1.1:3478", "[fd71:1::1]:3478"]"#, r#"listen = ["0.0.0.0:3478"]"#);
    let relay = Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, &config) });
    let attached: Vec<String> = relay.seen().into_iter().filter(|l| l.contains("XDP fast path attached")).collect();
    assert_eq!(attached.len(), 1, "{dp}: {attached:?}");
    assert!(attached[0].contains("interface=rp"), "{dp}: {attached:?}");
}

/// The relay's CPU time, all threads (schedstat: nanoseconds on a CPU).
fn cpu_ns(pid: i32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A client with 256 channels replays one signed Refresh 2,000 times a
/// second for 3 s: the relay's CPU with the fast path on stays within 1.5x
/// of its CPU with it off (it was 70x: every channel rewritten each time).
fn a_replayed_refresh_costs_no_more_with_the_fast_path(dp: &'static str) {
    let mut spent = Vec::new();
    for mode in ["off", "on"] {
        let lab = lab(&format!("replay{mode}-{dp}"));
        let opts = RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, &config(mode)) };
        let relay = Relay::start(&opts);
        let pid = relay.pid();
        let server: SocketAddr = SERVER.parse().unwrap();
        spent.push(lab.client.enter(move || {
            let mut c = Client::new(server, "alice", "wonderland").unwrap();
            c.allocate(None).unwrap();
            for i in 0..256u16 {
                c.channel_bind(0x4000 + i, SocketAddr::from(([10, 71, 2, 2], 1000 + i))).unwrap();
            }
            let refresh = c.signed(Method::REFRESH, &[Attribute::Lifetime(Lifetime(600))]).unwrap();
            let socket = c.socket().unwrap().try_clone().unwrap();
            let replay = |n: u32| {
                let start = Instant::now();
                for i in 0..n {
                    let _ = socket.send_to(&refresh, server);
                    let due = start + Duration::from_micros(500) * (i + 1);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
            };
            replay(500);
            std::thread::sleep(Duration::from_millis(200));
            let before = cpu_ns(pid);
            replay(6000);
            std::thread::sleep(Duration::from_millis(200));
            cpu_ns(pid) - before
        }));
    }
    let (off, on) = (spent[0] as f64 / 1e6, spent[1] as f64 / 1e6);
    println!("{dp}: relay CPU for 6,000 replayed Refreshes: {off:.1} ms with XDP off, {on:.1} ms on");
    assert!(on <= off * 1.5, "{dp}: {on:.1} ms of CPU with the fast path against {off:.1} ms without");
}

/// Forwarding off on every interface (the lab's), the relay turns it on
/// for lo alone, which its FIB lookups name: the host routes nothing for
/// the client, and the fast path relays.
fn the_host_routes_nothing_and_the_fast_path_relays(dp: &'static str) {
    let lab = lab(&format!("nofwd-{dp}"));
    let relay =
        Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, &config("on")) });
    let forwarding = |conf: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.relay.0, "sysctl", "-n", conf])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for conf in ["net.ipv4.conf.lo.forwarding", "net.ipv6.conf.lo.forwarding"] {
        assert_eq!(forwarding(conf), "1", "{dp}: {conf}");
    }
    for conf in ["net.ipv4.conf.rc.forwarding", "net.ipv4.conf.rp.forwarding", "net.ipv6.conf.all.forwarding"] {
        assert_eq!(forwarding(conf), "0", "{dp}: {conf}");
    }
    let server: SocketAddr = SERVER.parse().unwrap();
    let peer = lab.peer.enter(|| UdpSocket::bind("10.71.2.2:0").unwrap());
    peer.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    // Straight to the peer, the relay's host as the client's router.
    let direct = lab.client.enter(|| UdpSocket::bind("10.71.1.2:0").unwrap());
    direct.send_to(b"routed", peer_addr).unwrap();
    let mut buf = [0u8; 64];
    assert!(peer.recv_from(&mut buf).is_err(), "{dp}: the host routed for the client");

    let mut client = lab.client.enter(move || {
        let mut c = Client::new(server, "alice", "wonderland").unwrap();
        c.allocate(None).unwrap();
        c.channel_bind(0x4000, peer_addr).unwrap();
        c
    });
    // The first one by the sockets, which resolve the peer's MAC.
    client.send_channel(0x4000, b"first").unwrap();
    assert!(peer.recv_from(&mut buf).is_ok(), "{dp}: the first datagram");
    let by_xdp = || xdp_metric(&lab, &relay, r#"ip2p_relayed_packets_total{direction="to_peer",path="xdp"}"#);
    let before = by_xdp();
    let mut got = 0;
    for _ in 0..50 {
        client.send_channel(0x4000, b"relayed").unwrap();
    }
    while let Ok((n, _)) = peer.recv_from(&mut buf) {
        assert_eq!(&buf[..n], b"relayed");
        got += 1;
    }
    assert_eq!(got, 50, "{dp}: relayed");
    assert_eq!(by_xdp() - before, 50.0, "{dp}: all by the fast path");
}

/// Where the relay may not turn forwarding on for lo (a read-only
/// /proc/sys, as under the shipped unit), `auto` stays on the sockets and
/// names the setting; no interface's forwarding is touched.
fn without_forwarding_on_lo_auto_stays_on_the_sockets(dp: &'static str) {
    let lab = lab(&format!("rosys-{dp}"));
    let relay = Relay::start(&RelayOptions {
        netns: Some(lab.relay.0.clone()),
        shell: Some("mount -o bind,ro /proc/sys /proc/sys".into()),
        ..RelayOptions::new(dp, &config("auto"))
    });
    let seen = relay.seen();
    let off = seen.iter().find(|l| l.contains("XDP fast path off")).unwrap_or_else(|| panic!("{dp}: {seen:?}"));
    assert!(off.contains("net.ipv4.conf.lo.forwarding=1"), "{dp}: {off}");
    let mut client = lab.client.enter(|| Client::new(SERVER.parse().unwrap(), "alice", "wonderland").unwrap());
    let peer = lab.peer.enter(|| UdpSocket::bind("10.71.2.2:0").unwrap());
    peer.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    client.allocate(None).unwrap();
    client.channel_bind(0x4000, peer.local_addr().unwrap()).unwrap();
    client.send_channel(0x4000, b"by the sockets").unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = peer.recv_from(&mut buf).expect("relayed by the sockets");
    assert_eq!(&buf[..n], b"by the sockets");
}

/// The configuration the package writes (`init-config`) asks for the fast
/// path where it can run: given the lab's addresses, it relays there.
fn the_packaged_default_takes_the_fast_path(dp: &'static str) {
    let lab = lab(&format!("pkg-{dp}"));
    let dir = ip2p_tests::TempDir::new(&format!("pkg-{dp}"));
    let path = dir.path().join("relay.toml");
    let made = std::process::Command::new(ip2p_tests::relay_bin()).arg("init-config").arg(&path).status().unwrap();
    assert!(made.success(), "{dp}: init-config");
    let written = std::fs::read_to_string(&path).unwrap();
    let xdp = written.split("[xdp]").nth(1).unwrap_or_default();
    assert!(xdp.contains("mode = \"auto\""), "{dp}: {written}");
    let secret = written.split("secrets = [\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let config = written
        .replace(r#"listen = ["127.0.0.1:3478"]"#, "listen = [\"10.71.1.1:3478\"]\nrealm = \"ip2p.test\"")
        .replace(r#"listen = "127.0.0.1:9478""#, r#"listen = "127.0.0.1:0""#)
        + "[relay]\nips = [\"10.71.2.1\"]\n[peers]\nallow = [\"10.71.2.0/24\"]\n";
    let relay = Relay::start(&RelayOptions { netns: Some(lab.relay.0.clone()), ..RelayOptions::new(dp, &config) });
    assert_eq!(relay.count("XDP fast path attached"), 2, "{dp}: {:?}", relay.seen());
    let user = format!("{}:alice", ip2p_relay::unix_now() + 3600);
    let password = {
        use base64::Engine as _;
        use hmac::{KeyInit, Mac};
        let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(user.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    let server: SocketAddr = SERVER.parse().unwrap();
    let peer = lab.peer.enter(|| UdpSocket::bind("10.71.2.2:0").unwrap());
    peer.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut client = lab.client.enter(move || {
        let mut c = Client::new(server, &user, &password).unwrap();
        c.allocate(None).unwrap();
        c.channel_bind(0x4000, peer_addr).unwrap();
        c
    });
    // The first packet takes the sockets: the kernel learns the peer's MAC.
    client.send_channel(0x4000, b"first").unwrap();
    peer.recv_from(&mut [0u8; 16]).unwrap();
    let by_xdp = || xdp_metric(&lab, &relay, r#"ip2p_relayed_packets_total{direction="to_peer",path="xdp"}"#);
    let before = by_xdp();
    for _ in 0..50 {
        client.send_channel(0x4000, b"x").unwrap();
    }
    let mut got = 0;
    while peer.recv_from(&mut [0u8; 16]).is_ok() {
        got += 1;
    }
    assert_eq!(got, 50, "{dp}");
    assert_eq!(by_xdp() - before, 50.0, "{dp}: all by the fast path");
}

on_both_datapaths! {
    names:
    a_spoofed_source_is_left_to_the_kernel: a_spoofed_source_is_left_to_the_kernel();
    a_wildcard_listener_attaches_only_where_it_relays: a_wildcard_listener_attaches_only_where_it_relays();
    a_replayed_refresh_costs_no_more_with_the_fast_path: a_replayed_refresh_costs_no_more_with_the_fast_path();
    the_host_routes_nothing_and_the_fast_path_relays: the_host_routes_nothing_and_the_fast_path_relays();
    the_packaged_default_takes_the_fast_path: the_packaged_default_takes_the_fast_path();
    without_forwarding_on_lo_auto_stays_on_the_sockets: without_forwarding_on_lo_auto_stays_on_the_sockets();
}
