//! The host's own addresses as its kernel sees them, kept current: an
//! address added after start (a VIP failover, a secondary IP) is refused
//! as a peer within a second and live permissions to it end; the IPv6
//! subnet-router anycast address forwarding creates is the host's; all of
//! loopback is the host's whatever `allow` says, but a loopback address
//! named alone; `--dev` serves on loopback only. Each fails on the relay
//! of commit 86b1f26, which took the interfaces' addresses once, at start.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::{Netns, Relay, RelayOptions, ip, metrics, relay_bin};
use ip2p_wire::AddressFamily;

const USERS: &str = r#"users = [{ name = "alice", password = "wonderland" }]"#;

/// A relay in namespace `ns` (loopback only) relaying to `allow`.
fn relay_in(dp: &'static str, ns: &Netns, relay_ips: &str, allow: &str) -> Relay {
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\n{USERS}\n[relay]\nips = [{relay_ips}]\n[peers]\nallow = [{allow}]\n"
    );
    Relay::start(&RelayOptions { netns: Some(ns.0.clone()), ..RelayOptions::new(dp, &config) })
}

/// An address added to the host while a client holds a permission and a
/// channel to it: within a second no request names it, no packet on the
/// old permission reaches a service bound to 0.0.0.0 there (UDP or TCP),
/// and the relay counts what it ended.
fn an_address_added_after_start_is_no_peer_within_a_second(dp: &'static str) {
    let ns = Netns::new(&format!("ha-{dp}"));
    let relay = relay_in(dp, &ns, "\"127.0.0.1\"", "\"198.51.100.77/32\"");
    let (server, admin, name) = (relay.addr, relay.admin.unwrap(), ns.0.clone());
    let (refused_after, revoked) = ns.enter(move || {
        let service = UdpSocket::bind("0.0.0.0:0").unwrap();
        let tcp_service = TcpListener::bind("0.0.0.0:0").unwrap();
        let peer = SocketAddr::new("198.51.100.77".parse().unwrap(), service.local_addr().unwrap().port());
        let mut alice = Client::new(server, "alice", "wonderland").unwrap();
        alice.allocate(None).unwrap();
        alice.create_permission(&[peer]).unwrap();
        alice.channel_bind(0x4000, peer).unwrap();

        ip(&["-n", &name, "addr", "add", "198.51.100.77/32", "dev", "lo"]);
        let added = Instant::now();
        while alice.create_permission(&[peer]).is_ok() {
            assert!(added.elapsed() < Duration::from_secs(1), "{dp}: still a peer a second after it was added");
            std::thread::sleep(Duration::from_millis(10));
        }
        let refused_after = added.elapsed();
        assert_eq!(alice.create_permission(&[peer]).unwrap_err().code(), Some(403), "{dp}");
        alice.send_channel(0x4000, b"knock").unwrap();
        alice.send_indication(peer, b"knock").unwrap();
        service.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(service.recv_from(&mut [0u8; 64]).is_err(), "{dp}: a host service got a relayed packet");
        let mut control = Client::tcp(server, "alice", "wonderland").unwrap();
        control.allocate_tcp().unwrap();
        let tcp_peer = SocketAddr::new(peer.ip(), tcp_service.local_addr().unwrap().port());
        assert_eq!(control.connect(tcp_peer).unwrap_err().code(), Some(403), "{dp}: RFC 6062 Connect");
        (refused_after, metrics(admin, None)["ip2p_peers_revoked_total"])
    });
    assert_eq!(revoked, 2.0, "{dp}: the permission and the channel ended ({refused_after:?} after the address)");
    relay.wait_for("the host's addresses changed");
}

/// With forwarding on, the kernel answers an IPv6 prefix's subnet-router
/// anycast address (its address with the host part zero) itself.
fn the_subnet_router_anycast_address_is_the_hosts(dp: &'static str) {
    let ns = Netns::new(&format!("an-{dp}"));
    ip(&["netns", "exec", &ns.0, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    ns.run(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.run(&["addr", "add", "2001:db8:77::1/64", "dev", "v0", "nodad"]);
    ns.run(&["link", "set", "v0", "up"]);
    ns.run(&["link", "set", "v1", "up"]);
    let relay = relay_in(dp, &ns, "\"127.0.0.1\", \"::1\"", "\"2001:db8:77::/64\"");
    let server = relay.addr;
    let codes = ns.enter(move || {
        let mut alice = Client::new(server, "alice", "wonderland").unwrap();
        alice.allocate_families(Some(AddressFamily::IPV6), false).unwrap();
        ["[2001:db8:77::]:53", "[2001:db8:77::1]:53", "[2001:db8:77::2]:53"]
            .map(|p| alice.create_permission(&[p.parse().unwrap()]).err().and_then(|e| e.code()))
    });
    assert_eq!(codes, [Some(403), Some(403), None], "{dp}: anycast, interface address, another host");
}

/// All of 127.0.0.0/8 is the host (any of it reaches a service bound to
/// 0.0.0.0), whatever a range in `allow` says; an address named alone is
/// a peer, with a warning.
fn loopback_is_the_hosts_but_an_address_named_alone(dp: &'static str) {
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n[auth]\n{USERS}\n\
         [peers]\nallow = [\"127.0.0.0/8\", \"127.0.0.2/32\"]\n"
    );
    let relay = Relay::start(&RelayOptions::new(dp, &config));
    let warning = relay.wait_for("a loopback address is allowed as a peer");
    assert!(warning.contains("127.0.0.2"), "{warning}");
    let mut alice = Client::new(relay.addr, "alice", "wonderland").unwrap();
    alice.allocate(None).unwrap();
    alice.create_permission(&["127.0.0.2:9".parse().unwrap()]).unwrap();
    for host in ["127.0.0.3:9", "127.255.0.1:9"] {
        let code = alice.create_permission(&[host.parse().unwrap()]).unwrap_err().code();
        assert_eq!(code, Some(403), "{dp}: {host}");
    }
}

on_both_datapaths! {
    names:
    an_address_added_after_start_is_no_peer_within_a_second: an_address_added_after_start_is_no_peer_within_a_second();
    the_subnet_router_anycast_address_is_the_hosts: the_subnet_router_anycast_address_is_the_hosts();
    loopback_is_the_hosts_but_an_address_named_alone: loopback_is_the_hosts_but_an_address_named_alone();
}

/// `--dev` has a fixed, printed password: it serves on loopback only.
#[test]
fn dev_mode_refuses_a_listener_off_loopback() {
    for flags in [["--listen", "0.0.0.0:0"], ["--admin", "0.0.0.0:0"]] {
        let out = Command::new(relay_bin()).arg("--dev").args(flags).stdout(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: a configuration error: {stderr}");
        assert!(stderr.contains("--dev serves on loopback only") && stderr.contains("0.0.0.0:0"), "{stderr}");
    }
}
