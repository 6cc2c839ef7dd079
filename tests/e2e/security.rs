//! The relay as an attacker meets it: the release-shaped binary on each
//! datapath, raw STUN/TURN packets and real clients, one test per rule of
//! docs/security.md. Each fails on the relay before these rules (commit
//! 1e96ee9): its owner's addresses were peers, its defaults unbounded, its
//! 401 an amplifier, its accept loop a spin.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ip2p_client::{Client, Received};
use ip2p_relay::unix_now;
use ip2p_tests::{Netns, Relay, RelayOptions, TempDir, code, exchange, get, metrics, relay_bin, request, udp};
use ip2p_wire::attr::{ChannelNumber, RequestedTransport, XorPeerAddress};
use ip2p_wire::{AddressFamily, AttrType, Attribute, Message, Method};

const USERS: &str = r#"users = [{ name = "alice", password = "wonderland" }, { name = "bob", password = "builder" }]"#;
const SECRET: &str = "an-e2e-rest-secret-of-some-length";

/// A config: loopback listener and admin API, the two static users, a
/// REST secret; `auth` adds keys to [auth], `extra` tables of its own.
fn config(auth: &str, extra: &str) -> String {
    config_with_admin("listen = \"127.0.0.1:0\"", auth, extra)
}

/// [`config`] with `admin` as the [admin] table's keys.
fn config_with_admin(admin: &str, auth: &str, extra: &str) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n[admin]\n{admin}\n\
         [auth]\n{USERS}\nsecrets = [\"{SECRET}\"]\n{auth}\n{extra}\n"
    )
}

/// A TURN REST API credential for `username` under [`SECRET`].
fn rest_password(username: &str) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Every non-loopback address of this host's interfaces.
fn interface_addresses() -> Vec<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|a| a.address.and_then(|a| a.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip()))))
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// Whether `socket` receives anything within half a second.
fn receives(socket: &UdpSocket) -> bool {
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    socket.recv_from(&mut [0u8; 2048]).is_ok()
}

/// Whether the server closed `stream` (or refused it) within `wait`.
fn closed(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    matches!(stream.read(&mut [0u8; 64]), Ok(0) | Err(_)) && {
        // A timeout is not a close.
        stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        !matches!(stream.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// 1. No way into the host: its listener, admin port, services and other
///    addresses are refused as peers for every request and every packet,
///    whatever `allow` says; another client's relayed address is a peer.
fn no_way_into_the_host(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("", "[peers]\nallow = [\"0.0.0.0/0\", \"::/0\"]")));
    let admin = relay.admin.unwrap();
    let service = udp("127.0.0.1");
    let tcp_service = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut targets = vec![relay.addr, admin, service.local_addr().unwrap(), tcp_service.local_addr().unwrap()];
    targets.extend(interface_addresses().into_iter().map(|ip| SocketAddr::new(ip, admin.port())));
    targets.push(SocketAddr::new("0.0.0.0".parse().unwrap(), relay.addr.port()));

    let mut alice = Client::new(relay.addr, "alice", "wonderland").unwrap();
    let a = alice.allocate(None).unwrap();
    for t in &targets {
        assert_eq!(alice.create_permission(&[*t]).unwrap_err().code(), Some(403), "{dp}: permission for {t}");
        assert_eq!(alice.channel_bind(0x4000, *t).unwrap_err().code(), Some(403), "{dp}: channel to {t}");
    }
    // Another client of this node is a peer (the short-circuit)...
    let mut bob = Client::new(relay.addr, "bob", "builder").unwrap();
    let b = bob.allocate(None).unwrap();
    alice.create_permission(&[b]).unwrap();
    bob.create_permission(&[a]).unwrap();
    alice.send_indication(b, b"hello bob").unwrap();
    assert_eq!(
        bob.recv(Duration::from_secs(2)).unwrap(),
        Some(Received::Data { peer: a, data: b"hello bob".to_vec() })
    );
    // ...but the permission for 127.0.0.1 it took reaches no other port:
    // not the UDP service, not the listener (an Allocate sent there would
    // make a nested allocation whose client is the relay itself).
    let nested = request(Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::UDP)], false);
    alice.send_indication(service.local_addr().unwrap(), b"knock knock").unwrap();
    alice.send_indication(relay.addr, &nested).unwrap();
    assert!(!receives(&service), "{dp}: a host service received a relayed packet");
    let m = relay.metrics();
    assert_eq!(m["ip2p_allocations_counted"], 2.0, "{dp}: a nested allocation");
    assert!(m[r#"ip2p_dropped_packets_total{reason="denied_address"}"#] >= 2.0, "{dp}");
    // RFC 6062 Connect: the admin API and a TCP service are not peers.
    let mut control = Client::tcp(relay.addr, "alice", "wonderland").unwrap();
    control.allocate_tcp().unwrap();
    for t in [admin, tcp_service.local_addr().unwrap(), relay.addr] {
        assert_eq!(control.connect(t).unwrap_err().code(), Some(403), "{dp}: Connect to {t}");
    }
    tcp_service.set_nonblocking(true).unwrap();
    assert!(tcp_service.accept().is_err(), "{dp}: the TCP service was reached");
}

/// 2. Every rule applies to the IPv4 address inside an IPv6 one; mapped
///    peers (which no socket sends to) and Teredo are refused.
fn embedded_ipv4_forms(dp: &'static str) {
    let extra = "[relay]\nips = [\"127.0.0.1\", \"::1\"]\n[peers]\nallow = [\"127.0.0.2/32\"]\ndeny = [\"8.8.8.0/24\"]";
    let relay = Relay::start(&RelayOptions::new(dp, &config("", extra)));
    let mut v4 = Client::new(relay.addr, "alice", "wonderland").unwrap();
    v4.allocate(None).unwrap();
    let mut v6 = Client::new(relay.addr, "bob", "builder").unwrap();
    v6.allocate_families(Some(AddressFamily::IPV6), false).unwrap();
    let denied = [
        (false, "8.8.8.8:53"),
        (false, "[::ffff:8.8.8.8]:53"),
        (false, "[::ffff:127.0.0.2]:53"), // allowed as IPv4, but no socket sends to a mapped address
        (true, "[64:ff9b::808:808]:53"),
        (true, "[2002:808:808::]:53"),
        (true, "[::8.8.8.8]:53"),
        (true, "[2001:0:808:808::fefe:fefe]:53"), // Teredo, server 8.8.8.8
        (true, "[2001:0:4136:e378:8000:63bf:3fff:fdd2]:53"), // Teredo is denied by default
        (true, "[64:ff9b::7f00:1]:53"),           // NAT64 of this host's 127.0.0.1
    ];
    for (ipv6, peer) in denied {
        let peer: SocketAddr = peer.parse().unwrap();
        let c = if ipv6 { &mut v6 } else { &mut v4 };
        assert_eq!(c.create_permission(&[peer]).unwrap_err().code(), Some(403), "{dp}: {peer}");
    }
    v4.create_permission(&["127.0.0.2:53".parse().unwrap()]).unwrap();
    v6.create_permission(&["[2606:4700::1111]:53".parse().unwrap()]).unwrap();
}

/// 3. Out of file descriptors: refused connections and 508, never a spin
///    or a flood of log lines.
fn fd_exhaustion(dp: &'static str) {
    let opts = RelayOptions { fd_limit: Some(96), ..RelayOptions::new(dp, &config("", "")) }.arg("--workers").arg("1");
    let relay = Relay::start(&opts);
    let mut clients = Vec::new();
    let refused = loop {
        let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
        match c.allocate(None) {
            Ok(_) => clients.push(c),
            Err(e) => break e.code(),
        }
        assert!(clients.len() < 200, "{dp}: no limit");
    };
    assert!(matches!(refused, Some(508 | 486)), "{dp}: {refused:?}");
    // Connections take the remaining descriptors; those that find none
    // left are refused (closed), not left waiting.
    let conns: Vec<TcpStream> = (0..100).filter_map(|_| TcpStream::connect(relay.addr).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (cpu, lines) = (relay.cpu(), relay.seen().len());
    std::thread::sleep(Duration::from_secs(3));
    let mut late = TcpStream::connect(relay.addr).unwrap();
    let busy = relay.cpu().saturating_sub(cpu);
    let logged = relay.seen().len() - lines;
    assert!(busy < Duration::from_millis(300), "{dp}: {busy:?} of CPU in 3 s idle");
    assert!(logged < 20, "{dp}: {logged} log lines in 3 s");
    assert!(closed(&mut late, Duration::from_secs(3)), "{dp}: a connection waits forever for a descriptor");
    drop(conns);
    // Still serving, and room comes back.
    let mut probe = Client::new(relay.addr, "bob", "builder").unwrap();
    assert_eq!(probe.binding().unwrap(), probe.local_addr().unwrap());
    clients.pop().unwrap().refresh(Some(0)).unwrap();
    probe.allocate(None).unwrap();
}

/// 3 (and 4). RFC 6062 peer and data connections count against the
/// client's connection limit.
fn tcp_relay_connections_count(dp: &'static str) {
    let extra = "[peers]\nallow = [\"127.0.0.2/32\"]\n[connections]\nmax_per_ip = 4";
    let relay = Relay::start(&RelayOptions::new(dp, &config("", extra)));
    let peer = TcpListener::bind("127.0.0.2:0").unwrap();
    let mut control = Client::tcp(relay.addr, "alice", "wonderland").unwrap(); // 1
    control.allocate_tcp().unwrap();
    let conn = control.connect(peer.local_addr().unwrap()).unwrap(); // 2: the peer connection
    let (_peer_side, _) = peer.accept().unwrap();
    let mut data = Client::tcp(relay.addr, "alice", "wonderland").unwrap(); // 3
    data.connection_bind(conn).unwrap();
    let mut fourth = TcpStream::connect(relay.addr).unwrap();
    assert!(!closed(&mut fourth, Duration::from_millis(500)), "{dp}: the fourth connection is within the limit");
    let mut fifth = TcpStream::connect(relay.addr).unwrap();
    assert!(closed(&mut fifth, Duration::from_secs(2)), "{dp}: the data and peer connections were not counted");
}

/// 4. Bounded by default: per user, per REST user part, reservations.
fn bounded_by_default(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("", "[peers]\nallow = [\"127.0.0.2/32\"]")));
    let mut held = Vec::new();
    let refused = loop {
        let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
        match c.allocate(None) {
            Ok(_) => held.push(c),
            Err(e) => break e.code(),
        }
        assert!(held.len() <= 100, "{dp}: one user took more than the default 100");
    };
    assert_eq!((held.len(), refused), (100, Some(486)), "{dp}");
    // Others are still served.
    let bob = Client::new(relay.addr, "bob", "builder").unwrap().allocate(None);
    assert!(bob.is_ok(), "{dp}: {bob:?}\n{}", relay.seen().join("\n"));
    // EVEN-PORT reservations go with their allocation.
    let fds = relay.fds();
    // Each cycle on a socket of its own, kept to the end: a retransmitted
    // Refresh(0) of a closed one must not reach the next one's allocation
    // on a reused port (a loaded machine retransmits).
    let mut done = Vec::new();
    for _ in 0..150 {
        let mut c = Client::new(relay.addr, "bob", "builder").unwrap();
        c.allocate_even_pair().unwrap();
        c.refresh(Some(0)).unwrap();
        done.push(c);
    }
    let m = relay.metrics();
    assert_eq!(m["ip2p_reservations"], 0.0, "{dp}");
    assert_eq!(m["ip2p_allocations_counted"], 101.0, "{dp}: alice's 100 (they live on) and bob's first");
    assert!(relay.fds() <= fds + 4, "{dp}: {} descriptors after 150 cycles, {fds} before", relay.fds());

    // A REST user is its user part, whatever the expiry.
    let relay = Relay::start(&RelayOptions::new(dp, &config("", "[allocation]\nuser_quota = 1")));
    let names: Vec<String> = (1..=3).map(|i| format!("{}:mallory", unix_now() + 600 * i)).collect();
    let mut first = Client::new(relay.addr, &names[0], &rest_password(&names[0])).unwrap();
    first.allocate(None).unwrap();
    for name in &names[1..] {
        let mut c = Client::new(relay.addr, name, &rest_password(name)).unwrap();
        assert_eq!(c.allocate(None).unwrap_err().code(), Some(486), "{dp}: {name}");
    }
    drop(held);
}

/// 5. Before authentication: no answer over four times its request, no
///    optional attribute, and answers rate limited per source prefix.
fn no_amplifier(dp: &'static str) {
    let text = config("unauthenticated_rate = 20", "")
        .replace(r#"listen = ["127.0.0.1:0"]"#, r#"listen = ["127.0.0.1:0", "[::1]:0"]"#);
    let relay = Relay::start(&RelayOptions::new(dp, &text).arg("--workers").arg("1"));
    let v6 = relay.addrs[1];
    let udp_attr = Attribute::RequestedTransport(RequestedTransport::UDP);
    let peer = Attribute::XorPeerAddress(XorPeerAddress("192.0.2.1:9".parse().unwrap()));
    let kinds: Vec<(&str, Vec<u8>)> = vec![
        ("Binding", request(Method::BINDING, &[], false)),
        ("Binding + FINGERPRINT", request(Method::BINDING, &[], true)),
        ("Allocate", request(Method::ALLOCATE, &[udp_attr], false)),
        ("Allocate, bare", request(Method::ALLOCATE, &[], false)),
        ("Refresh", request(Method::REFRESH, &[], false)),
        ("CreatePermission", request(Method::CREATE_PERMISSION, &[peer], false)),
        ("ChannelBind", request(Method::CHANNEL_BIND, &[Attribute::ChannelNumber(ChannelNumber(0x4000)), peer], false)),
        ("unknown method", request(Method::new(0x0FF).unwrap(), &[], false)),
    ];
    for (server, socket) in [(relay.addr, udp("127.0.0.1")), (v6, udp("::1"))] {
        for (name, packet) in &kinds {
            let answer = exchange(&socket, server, packet).unwrap_or_else(|| panic!("{dp}: no answer to {name}"));
            assert!(answer.len() <= 4 * packet.len(), "{dp}: {name}: {} bytes for {}", answer.len(), packet.len());
            let m = Message::parse(&answer).unwrap();
            assert!(m.get_raw(AttrType::SOFTWARE).is_none(), "{dp}: {name}: SOFTWARE to an unverified source");
        }
    }
    // Rate limited per prefix: 500 Bindings at once from one /24.
    let flood = udp("127.0.0.1");
    let binding = request(Method::BINDING, &[], false);
    for _ in 0..500 {
        flood.send_to(&binding, relay.addr).unwrap();
    }
    flood.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let answered = std::iter::from_fn(|| flood.recv_from(&mut [0u8; 128]).ok()).count();
    assert!(answered <= 40, "{dp}: {answered} of 500 answered at 20 a second");
    assert!(relay.metrics()["ip2p_response_rate_limited_total"] >= 400.0, "{dp}");
}

/// 6. The admin listener: bounded threads, request limits, timeouts, a
///    bearer token.
fn admin_under_abuse(dp: &'static str) {
    let token = "e2e-admin-token-0123456789";
    let dir = TempDir::new("admin");
    let token_file = dir.file("token", token);
    let text =
        config_with_admin(&format!("listen = \"127.0.0.1:0\"\ntoken_file = \"{}\"", token_file.display()), "", "");
    let relay = Relay::start(&RelayOptions::new(dp, &text));
    let admin = relay.admin.unwrap();
    assert_eq!(get(admin, "/metrics", None).0, 401, "{dp}");
    assert_eq!(get(admin, "/status", Some("wrong-token-0123456789")).0, 401, "{dp}");
    assert_eq!(get(admin, "/healthz", None).0, 200, "{dp}: probes need no token");
    assert!(metrics(admin, Some(token)).contains_key("ip2p_workers"), "{dp}");
    // 100 half-sent requests: no thread each.
    let threads = relay.threads();
    let mut slow: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(admin).unwrap()).collect();
    for s in &mut slow {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(relay.threads() <= threads + 1, "{dp}: {} threads, {threads} before", relay.threads());
    // They are closed after the read timeout; the API answers again.
    let deadline = Instant::now() + Duration::from_secs(8);
    for s in &mut slow {
        assert!(closed(s, deadline.saturating_duration_since(Instant::now())), "{dp}: a half-sent request kept");
    }
    assert_eq!(get(admin, "/healthz", None).0, 200, "{dp}");
    // 16 MB of headers: refused after a few kilobytes.
    let mut big = TcpStream::connect(admin).unwrap();
    let mut sent = 0;
    let chunk = format!("X-Filler: {}\r\n", "a".repeat(1000));
    let _ = big.write_all(b"GET /healthz HTTP/1.1\r\n");
    while sent < 16 << 20 && big.write_all(chunk.as_bytes()).is_ok() {
        sent += chunk.len();
        if sent > 256 << 10 {
            big.set_write_timeout(Some(Duration::from_millis(100))).unwrap();
        }
    }
    let mut answer = String::new();
    big.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = big.read_to_string(&mut answer);
    assert!(sent < 16 << 20, "{dp}: 16 MB of headers accepted");
    assert!(answer.is_empty() || answer.contains(" 431 "), "{dp}: {answer}");
    // Not on loopback and no token: a warning at start.
    let open = config_with_admin("listen = \"0.0.0.0:0\"", "", "");
    let exposed = Relay::start(&RelayOptions::new(dp, &open));
    exposed.wait_for("has no token");
}

/// 7. Events a stranger causes at will are logged as summaries.
fn logs_are_summaries(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("", "[allocation]\nuser_quota = 1")));
    for _ in 0..200 {
        let mut s = TcpStream::connect(relay.addr).unwrap();
        let _ = s.write_all(b"\xff\xff GET / HTTP/1.0\r\n\r\n");
        let _ = closed(&mut s, Duration::from_secs(2));
    }
    let mut alice = Client::new(relay.addr, "alice", "wonderland").unwrap();
    alice.allocate(None).unwrap();
    for _ in 0..100 {
        let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
        assert_eq!(c.allocate(None).unwrap_err().code(), Some(486));
    }
    let m = relay.metrics();
    assert_eq!(m[r#"ip2p_connections_closed_total{reason="framing"}"#], 200.0, "{dp}");
    let lines = relay.count("closing a connection") + relay.count("allocation refused");
    assert!(lines <= 20, "{dp}: {lines} lines for 300 events");
}

/// 8. Memory does not grow with requests: one timer per allocation
///    however many Refreshes, a stranger's half-sent frame is not held.
fn memory_is_bounded(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("", "")));
    let mut c = Client::new(relay.addr, "alice", "wonderland").unwrap();
    c.allocate(None).unwrap();
    for _ in 0..3000 {
        c.refresh(Some(600)).unwrap();
    }
    assert_eq!(relay.metrics()["ip2p_timers"], 1.0, "{dp}: the timer table grows with Refreshes");
    // A header announcing 60 KB from a connection with no allocation.
    let mut s = TcpStream::connect(relay.addr).unwrap();
    let mut header = request(Method::BINDING, &[], false);
    header[2..4].copy_from_slice(&60_000u16.to_be_bytes());
    s.write_all(&header).unwrap();
    assert!(closed(&mut s, Duration::from_secs(2)), "{dp}: 64 KiB held for a stranger");
}

/// 8. The connection cap counts an IPv6 client by its /64: one subscriber's
///    addresses are one client. The relay and the clients are in network
///    namespaces of the test's, joined by a veth pair.
fn ipv6_clients_are_capped_by_their_64(dp: &'static str) {
    let (relay_ns, client_ns) = (Netns::new(&format!("r-{dp}")), Netns::new(&format!("c-{dp}")));
    let (a, b) = (format!("v{}r", std::process::id() % 100_000), format!("v{}c", std::process::id() % 100_000));
    ip_tests_link(&relay_ns, &client_ns, &a, &b);
    let config = "listen = [\"[fd00:64::1]:3478\"]\nrealm = \"ip2p.test\"\nworkers = 2\n[admin]\nlisten = \"off\"\n\
                  [auth]\nusers = [{ name = \"alice\", password = \"wonderland\" }]\n[connections]\nmax_per_ip = 2\n";
    let opts = RelayOptions { netns: Some(relay_ns.0.clone()), ..RelayOptions::new(dp, config) };
    let relay = Relay::start(&opts);
    let server = relay.addr;
    // Three addresses of one /64, then one of another: connected in turn,
    // each kept open; which of them the relay closed at once.
    let closed_at_once = client_ns.enter(move || {
        let mut held = Vec::new();
        let mut closed_flags = Vec::new();
        for from in ["fd00:64::a", "fd00:64::b", "fd00:64::c", "fd00:65::a"] {
            let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::new(from.parse().unwrap(), 0).into()).unwrap();
            s.connect(&server.into()).unwrap();
            let mut stream: TcpStream = s.into();
            closed_flags.push(closed(&mut stream, Duration::from_millis(500)));
            held.push(stream);
        }
        closed_flags
    });
    assert_eq!(closed_at_once, [false, false, true, false], "{dp}: the third address of one /64 is over its cap");
}

/// Links `relay` and `client` with a veth pair: fd00:64::1/64 and
/// fd00:65::1/64 on the relay's side; fd00:64::a, ::b, ::c and fd00:65::a
/// on the client's.
fn ip_tests_link(relay: &Netns, client: &Netns, a: &str, b: &str) {
    relay.run(&["link", "add", a, "type", "veth", "peer", "name", b, "netns", &client.0]);
    for addr in ["fd00:64::1/64", "fd00:65::1/64"] {
        relay.run(&["addr", "add", addr, "dev", a, "nodad"]);
    }
    for addr in ["fd00:64::a/64", "fd00:64::b/64", "fd00:64::c/64", "fd00:65::a/64"] {
        client.run(&["addr", "add", addr, "dev", b, "nodad"]);
    }
    relay.run(&["link", "set", a, "up"]);
    client.run(&["link", "set", b, "up"]);
}

/// 9. A REST credential may not claim to live for years.
fn rest_credentials_have_a_maximum_lifetime(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("", "")));
    for expiry in [unix_now() + 3 * 86_400, 1 << 63] {
        let name = format!("{expiry}:web");
        let mut c = Client::new(relay.addr, &name, &rest_password(&name)).unwrap();
        assert_eq!(c.allocate(None).unwrap_err().code(), Some(401), "{dp}: expiry {expiry}");
    }
    let name = format!("{}:web", unix_now() + 86_400);
    Client::new(relay.addr, &name, &rest_password(&name)).unwrap().allocate(None).unwrap();
}

/// 10. A wrong FINGERPRINT is not answered.
fn wrong_fingerprints_are_discarded(dp: &'static str) {
    let relay = Relay::start(&RelayOptions::new(dp, &config("", "")));
    let socket = udp("127.0.0.1");
    let good = request(Method::BINDING, &[], true);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x01;
    assert_eq!(exchange(&socket, relay.addr, &bad), None, "{dp}: a wrong FINGERPRINT was answered");
    let answer = exchange(&socket, relay.addr, &good).unwrap();
    assert_eq!(code(&answer), None);
    assert_eq!(relay.metrics()[r#"ip2p_dropped_packets_total{reason="bad_fingerprint"}"#], 1.0, "{dp}");
}

on_both_datapaths! {
    names:
    no_way_into_the_host: no_way_into_the_host();
    embedded_ipv4_forms: embedded_ipv4_forms();
    fd_exhaustion: fd_exhaustion();
    tcp_relay_connections_count: tcp_relay_connections_count();
    bounded_by_default: bounded_by_default();
    no_amplifier: no_amplifier();
    admin_under_abuse: admin_under_abuse();
    logs_are_summaries: logs_are_summaries();
    memory_is_bounded: memory_is_bounded();
    ipv6_clients_are_capped_by_their_64: ipv6_clients_are_capped_by_their_64();
    rest_credentials_have_a_maximum_lifetime: rest_credentials_have_a_maximum_lifetime();
    wrong_fingerprints_are_discarded: wrong_fingerprints_are_discarded();
}

/// 9. Configuration that could crash or mislead is refused by
///    check-config, naming the key; secrets need not be on the command line.
#[test]
fn config_cannot_crash_or_mislead() {
    let dir = TempDir::new("config");
    for (text, key) in [
        (format!("[allocation]\ndefault_lifetime = {}", u64::MAX), "allocation.default_lifetime"),
        ("[connections]\nidle_timeout = 18446744073709551615".into(), "connections.idle_timeout"),
        ("[auth]\nsecrets = [\"replace-with-your-rest-secret\"]".into(), "auth.secrets"),
        ("[auth]\nsecrets = [\"short\"]".into(), "auth.secrets"),
        (
            "[auth]\nnonce_secret = \"0000000000000000000000000000000000000000000000000000000000000000\"".into(),
            "auth.nonce_secret",
        ),
        ("realm = \"a-realm-that-is-longer-than-32-bytes\"".into(), "realm"),
    ] {
        let file = dir.file("bad.toml", &format!("listen = [\"127.0.0.1:3478\"]\n{text}\n"));
        let out = std::process::Command::new(relay_bin())
            .args(["--user", "u:p", "check-config", file.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    // Secrets from files: nothing of them in the process's command line.
    let secrets = dir.file("secrets", &format!("{SECRET}\n"));
    let users = dir.file("users", "alice:wonderland\n");
    let opts = RelayOptions::new("epoll", "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\n")
        .arg("--auth-secret-file")
        .arg(secrets.to_str().unwrap())
        .arg("--users-file")
        .arg(users.to_str().unwrap());
    let relay = Relay::start(&opts);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", relay.pid())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(SECRET) && !cmdline.contains("wonderland"), "{cmdline}");
    Client::new(relay.addr, "alice", "wonderland").unwrap().allocate(None).unwrap();
    let name = format!("{}:web", unix_now() + 600);
    Client::new(relay.addr, &name, &rest_password(&name)).unwrap().allocate(None).unwrap();
}
