//! Handing a running node over to a new process of the relay (an upgrade
//! without dropping calls): the new process takes the old one's sockets and
//! allocations over the handover socket, the old one exits, and every
//! client goes on with its relayed address, permissions, channels and
//! nonce, without a new Allocate, over UDP and TCP.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ip2p_client::{Client, Received};
use ip2p_tests::{Relay, RelayOptions, TempDir, peer, recv};

/// A node of two workers whose nonce secret is its own (random): only the
/// handover can keep the clients' nonces valid.
fn config(socket: &std::path::Path) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 2\n\
         [auth]\nusers = [{{ name = \"alice\", password = \"wonderland\" }}]\n\
         [peers]\nallow = [\"127.0.0.2/32\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [handover]\nsocket = \"{}\"\n",
        socket.display()
    )
}

/// One datagram each way between `client` (on `channel`) and `peer`.
fn both_ways(client: &mut Client, channel: u16, relayed: SocketAddr, peer: &UdpSocket, tag: &str) {
    client.send_channel(channel, tag.as_bytes()).unwrap();
    assert_eq!(recv(peer), (tag.as_bytes().to_vec(), relayed), "{tag}: to the peer from the relayed address");
    peer.send_to(tag.as_bytes(), relayed).unwrap();
    let back = client.recv(Duration::from_secs(2)).unwrap();
    assert_eq!(back, Some(Received::Channel { channel, data: tag.as_bytes().to_vec() }), "{tag}: to the client");
}

fn allocations_move_to_a_new_process(dp: &'static str) {
    let dir = TempDir::new("handover");
    let socket = dir.file("handover.sock", "");
    let config = config(&socket);
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    let p = peer();
    // Enough clients that both workers hold some.
    let mut clients: Vec<(Client, SocketAddr, u16)> = (0..8u16)
        .map(|i| {
            let mut c = Client::new(old.addr, "alice", "wonderland").unwrap();
            let relayed = c.allocate(None).unwrap();
            c.channel_bind(0x4000 + i, p.local_addr().unwrap()).unwrap();
            (c, relayed, 0x4000 + i)
        })
        .collect();
    for (c, relayed, channel) in &mut clients {
        both_ways(c, *channel, *relayed, &p, "before");
    }
    // One with a permission alone: Send and Data indications.
    let mut sender = Client::new(old.addr, "alice", "wonderland").unwrap();
    let sender_relayed = sender.allocate(None).unwrap();
    sender.create_permission(&[p.local_addr().unwrap()]).unwrap();
    let indications = |c: &mut Client, tag: &str| {
        c.send_indication(p.local_addr().unwrap(), tag.as_bytes()).unwrap();
        assert_eq!(recv(&p), (tag.as_bytes().to_vec(), sender_relayed), "{tag}: Send");
        p.send_to(tag.as_bytes(), sender_relayed).unwrap();
        let back = c.recv(Duration::from_secs(2)).unwrap();
        assert_eq!(
            back,
            Some(Received::Data { peer: p.local_addr().unwrap(), data: tag.as_bytes().to_vec() }),
            "{tag}"
        );
    };
    indications(&mut sender, "before");
    // A client over TCP: its connection moves with its allocation, half a
    // frame sent before the switch and the rest after.
    let mut tcp = Client::tcp(old.addr, "alice", "wonderland").unwrap();
    let tcp_relayed = tcp.allocate(None).unwrap();
    tcp.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    both_ways(&mut tcp, 0x4000, tcp_relayed, &p, "before");
    let split = {
        let mut f = vec![0u8; 64];
        let n = ip2p_wire::write_channel_data(&mut f, 0x4000, b"split across the switch", ip2p_wire::Transport::Stream)
            .unwrap();
        f.truncate(n);
        f
    };
    tcp.send_raw(&split[..10]).unwrap();
    // An RFC 6062 TCP allocation cannot move (its peer connections
    // cannot): it ends with the old process.
    let mut tcp_allocation = Client::tcp(old.addr, "alice", "wonderland").unwrap();
    tcp_allocation.allocate_tcp().unwrap();

    let created_before = old.metrics().get("ip2p_allocations_created_total").copied().unwrap_or(0.0);
    assert_eq!(created_before, 11.0, "{dp}");
    let new = Relay::start(&RelayOptions::new(dp, &config).arg("--take-over"));
    assert_eq!(new.addr, old.addr, "{dp}: the same listener");
    assert_eq!(new.admin, old.admin, "{dp}: the same admin listener, handed over too");
    let took = new.wait_for("took over the previous process's node");
    assert!(took.contains("allocations=10"), "{dp}: {took}");
    assert!(old.exits(), "{dp}: the old process exits once the new one serves");
    assert_eq!(old.count("the new process serves; exiting"), 1, "{dp}: {:?}", old.seen());
    let staying = old.seen().into_iter().find(|l| l.contains("do not move and end here"));
    assert!(staying.as_ref().is_some_and(|l| l.contains("allocations=1")), "{dp}: {staying:?}");
    assert!(
        tcp_allocation.closed_by_server(Duration::from_secs(2)).unwrap(),
        "{dp}: the TCP allocation's control connection ended"
    );
    // The TCP client's connection moved, mid-frame.
    tcp.send_raw(&split[10..]).unwrap();
    assert_eq!(recv(&p), (b"split across the switch".to_vec(), tcp_relayed), "{dp}: the split frame");
    both_ways(&mut tcp, 0x4000, tcp_relayed, &p, "after");
    assert_eq!(tcp.refresh(Some(600)).unwrap(), 600, "{dp}: the TCP client's nonce is still good");
    // The TCP listener moved: a new connection is served by the new process.
    let mut again = Client::tcp(new.addr, "alice", "wonderland").unwrap();
    again.allocate(None).unwrap();

    // Every allocation works as before: same relayed address, same
    // channel, no new Allocate or ChannelBind.
    for (c, relayed, channel) in &mut clients {
        both_ways(c, *channel, *relayed, &p, "after");
    }
    indications(&mut sender, "after");
    // Refresh, ChannelBind and CreatePermission with the nonce each client
    // holds: no 438.
    for (c, relayed, channel) in &mut clients {
        assert_eq!(c.refresh(Some(600)).unwrap(), 600);
        c.channel_bind(*channel + 0x100, p.local_addr().unwrap()).unwrap_err();
        let other = UdpSocket::bind("127.0.0.2:0").unwrap();
        c.channel_bind(*channel + 0x100, other.local_addr().unwrap()).unwrap();
        c.send_channel(*channel + 0x100, b"new channel").unwrap();
        other.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(recv(&other), (b"new channel".to_vec(), *relayed), "{dp}: a channel bound after the switch");
    }
    sender.create_permission(&[p.local_addr().unwrap()]).unwrap();
    let m = new.metrics();
    assert_eq!(m.get("ip2p_auth_failures_total{reason=\"stale_nonce\"}").copied(), Some(0.0), "{dp}");
    assert_eq!(m.get("ip2p_allocations{transport=\"udp\"}").copied(), Some(11.0), "{dp}: 10 moved, 1 anew over TCP");
    assert_eq!(m.get("ip2p_allocations{transport=\"tcp\"}").copied(), Some(0.0), "{dp}: the RFC 6062 one ended");
    assert_eq!(
        m.get("ip2p_allocations_created_total").copied(),
        Some(created_before + 1.0),
        "{dp}: only the TCP client's anew, counted on from the old process's"
    );

    // Deleting one frees it in the new process.
    let (mut c, _, _) = clients.pop().unwrap();
    c.refresh(Some(0)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(new.metrics().get("ip2p_allocations{transport=\"udp\"}").copied(), Some(10.0), "{dp}");
    // So does closing a moved connection.
    drop(tcp);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(new.metrics().get("ip2p_allocations{transport=\"udp\"}").copied(), Some(9.0), "{dp}");
}

/// A handover to the relay built with another version string, and back
/// (a downgrade): clients over UDP and TCP go on through both, and each new
/// process says which version it took over from.
fn another_version_takes_over_and_back(dp: &'static str) {
    let dir = TempDir::new("handover-version");
    let socket = dir.file("handover.sock", "");
    let config = config(&socket);
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    let p = peer();
    let mut udp = Client::new(old.addr, "alice", "wonderland").unwrap();
    let udp_relayed = udp.allocate(None).unwrap();
    udp.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    let mut tcp = Client::tcp(old.addr, "alice", "wonderland").unwrap();
    let tcp_relayed = tcp.allocate(None).unwrap();
    tcp.channel_bind(0x4001, p.local_addr().unwrap()).unwrap();
    let mut check = |tag: &str| {
        both_ways(&mut udp, 0x4000, udp_relayed, &p, tag);
        both_ways(&mut tcp, 0x4001, tcp_relayed, &p, tag);
    };
    check("before");
    let version = |r: &Relay| {
        let m = r.metrics();
        let info = m.keys().find(|k| k.starts_with("ip2p_build_info")).cloned().unwrap_or_default();
        info.split("version=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or_default().to_owned()
    };
    assert_eq!(version(&old), ip2p_relay::VERSION, "{dp}");
    assert_ne!(ip2p_relay::VERSION, ip2p_tests::NEXT_VERSION);

    let next_opts = RelayOptions::new(dp, &config).arg("--take-over");
    let mut next = Relay::start(&RelayOptions { bin: Some(ip2p_tests::next_relay_bin()), ..next_opts });
    let took = next.wait_for("took over the previous process's node");
    assert!(took.contains(&format!("from={}", ip2p_relay::VERSION)), "{dp}: {took}");
    assert!(took.contains("allocations=2"), "{dp}: {took}");
    // (Until the old process exits it shares the admin listener too.)
    assert!(old.exits(), "{dp}");
    assert_eq!(version(&next), ip2p_tests::NEXT_VERSION, "{dp}");
    check("on the next version");

    let back = Relay::start(&RelayOptions::new(dp, &config).arg("--take-over"));
    let took = back.wait_for("took over the previous process's node");
    assert!(took.contains(&format!("from={}", ip2p_tests::NEXT_VERSION)), "{dp}: {took}");
    assert!(next.exits(), "{dp}");
    assert_eq!(version(&back), ip2p_relay::VERSION, "{dp}");
    check("back");
    assert_eq!(udp.refresh(Some(600)).unwrap(), 600, "{dp}");
    assert_eq!(tcp.refresh(Some(600)).unwrap(), 600, "{dp}");
    assert_eq!(back.metrics().get("ip2p_allocations_created_total").copied(), Some(2.0), "{dp}: counted on twice");
}

/// Pairs of clients relaying continuously through the switch to the build
/// with another version string (ip2p-bench, 8 sessions at 4,000
/// packets/s, each to another's relayed address, so most cross workers):
/// nothing is lost, none arrives twice or out of order. The packets that
/// come while neither process reads wait in the sockets' queues.
fn traffic_goes_on_through_the_switch(dp: &'static str) {
    use ip2p_bench::run::{Credentials, Mode, RunConfig, run};
    let dir = TempDir::new("handover-load");
    let socket = dir.file("handover.sock", "");
    let config = config(&socket);
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    let cfg = RunConfig {
        label: "handover".into(),
        server: old.addr,
        credentials: Credentials::User { name: "alice".into(), password: "wonderland".into() },
        mode: Mode::Pairs,
        sessions: 8,
        rate: 4000.0,
        size: 100,
        burst: 1,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(300),
        threads: 1,
        indications: false,
        engine: Default::default(),
        echo_at: None,
        echo_netns: None,
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bench = std::thread::spawn(move || run(&cfg, &stop).unwrap().0);
    std::thread::sleep(Duration::from_millis(1500));
    // To the build with another version string: what an upgrade is.
    let next = RelayOptions::new(dp, &config).arg("--take-over");
    let new = Relay::start(&RelayOptions { bin: Some(ip2p_tests::next_relay_bin()), ..next });
    new.wait_for(&format!("version={}", ip2p_tests::NEXT_VERSION));
    let s = bench.join().unwrap();
    assert!(!old.alive(), "{dp}: the old process is gone");
    let paused = old.seen().into_iter().find(|l| l.contains("paused_ms="));
    assert!(s.sent >= 10_000, "{dp}: {s:?}");
    assert_eq!((s.lost, s.duplicates, s.reordered), (0, 0, 0), "{dp}: {s:?}; {paused:?}");
    // The bench deleted its allocations at the end: in the new process.
    // Its counters go on from the old one's: the 8 allocations the old
    // one made, and every packet either relayed.
    let m = new.metrics();
    assert_eq!(m.get("ip2p_allocations{transport=\"udp\"}").copied(), Some(0.0), "{dp}");
    assert_eq!(m.get("ip2p_allocations_created_total").copied(), Some(8.0), "{dp}");
    let relayed: f64 = m.iter().filter(|(k, _)| k.starts_with("ip2p_relayed_packets_total")).map(|(_, v)| v).sum();
    assert!(relayed >= s.received as f64, "{dp}: {relayed} relayed, {} received", s.received);
}

/// A client over TCP relaying both ways at 1,000 messages a second
/// through the switch: its connection moves with what it had half-sent
/// and unsent, and every message arrives once, in order, both ways.
fn a_tcp_client_relays_through_the_switch(dp: &'static str) {
    const N: usize = 1500;
    let dir = TempDir::new("handover-tcp");
    let socket = dir.file("handover.sock", "");
    let config = config(&socket);
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    let p = std::sync::Arc::new(peer());
    let mut c = Client::tcp(old.addr, "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    let client = std::thread::spawn(move || {
        let mut got = Vec::new();
        for i in 0..N {
            c.send_channel(0x4000, format!("c{i}").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(1));
            while i % 10 == 9
                && let Some(r) = c.recv(Duration::from_millis(1)).unwrap()
            {
                got.push(r);
            }
        }
        while got.len() < N
            && let Some(r) = c.recv(Duration::from_secs(2)).unwrap()
        {
            got.push(r);
        }
        (got, c)
    });
    let sender = {
        let p = p.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                p.send_to(format!("p{i}").as_bytes(), relayed).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let new = Relay::start(&RelayOptions::new(dp, &config).arg("--take-over"));
    let took = new.wait_for("took over the previous process's node");
    assert!(took.contains("allocations=1"), "{dp}: {took}");
    let mut to_peer = Vec::new();
    while to_peer.len() < N {
        p.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        let Ok((n, from)) = p.recv_from(&mut buf) else { break };
        assert_eq!(from, relayed, "{dp}");
        to_peer.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    sender.join().unwrap();
    let (to_client, mut c) = client.join().unwrap();
    assert!(!old.alive(), "{dp}: the old process is gone");
    let want = |tag: &str| (0..N).map(|i| format!("{tag}{i}")).collect::<Vec<_>>();
    assert_eq!(to_peer, want("c"), "{dp}: client to peer");
    let to_client: Vec<String> = to_client
        .into_iter()
        .map(|r| match r {
            Received::Channel { channel: 0x4000, data } => String::from_utf8(data).unwrap(),
            other => panic!("{dp}: {other:?}"),
        })
        .collect();
    assert_eq!(to_client, want("p"), "{dp}: peer to client");
    assert_eq!(c.refresh(Some(600)).unwrap(), 600, "{dp}");
    assert_eq!(new.metrics().get("ip2p_allocations_created_total").copied(), Some(1.0), "{dp}");
}

/// coturn's `turnutils_uclient` (4 clients, channels, 150 messages each
/// 20 ms apart to `turnutils_peer`, an echo) through the switch: every
/// message comes back, and its allocations were among those handed over.
fn coturns_client_through_the_switch(dp: &'static str) {
    let dir = TempDir::new("handover-uclient");
    let socket = dir.file("handover.sock", "");
    let config = config(&socket);
    let mut old = Relay::start(&RelayOptions::new(dp, &config));
    let port = UdpSocket::bind("127.0.0.2:0").unwrap().local_addr().unwrap().port().to_string();
    // Output to a file: a pipe nobody reads while it runs could fill.
    let log = dir.file("uclient.log", "");
    let tool = |name: &str| {
        let mut c = std::process::Command::new(name);
        let file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        c.stdout(file.try_clone().unwrap()).stderr(file).stdin(std::process::Stdio::null());
        c
    };
    /// Ended by its PID when the test ends, whatever happens.
    struct Ends(std::process::Child);
    impl Drop for Ends {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut peer = tool("turnutils_peer");
    let _peer = Ends(peer.args(["-L", "127.0.0.2", "-p", &port]).spawn().expect("turnutils_peer (coturn)"));
    std::thread::sleep(Duration::from_millis(200));
    let mut uclient = tool("turnutils_uclient");
    uclient.args(["-p", &old.addr.port().to_string(), "-n", "150", "-l", "170", "-z", "20", "-m", "4"]).args([
        "-u",
        "alice",
        "-w",
        "wonderland",
        "-e",
        "127.0.0.2",
        "-r",
        &port,
        "127.0.0.1",
    ]);
    let mut client = Ends(uclient.spawn().unwrap());
    // Once its clients have allocated and have been sending for a while.
    let udp = "ip2p_allocations{transport=\"udp\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.metrics().get(udp).copied().unwrap_or(0.0) < 4.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sending = "ip2p_relayed_packets_total{direction=\"to_peer\",path=\"socket\"}";
    while old.metrics().get(sending).copied().unwrap_or(0.0) < 40.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let new = Relay::start(&RelayOptions::new(dp, &config).arg("--take-over"));
    let handed = old.wait_for("handover: handing over");
    let moved: u32 = handed.split("allocations=").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!(moved >= 4, "{dp}: {handed}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::fs::read_to_string(&log).unwrap();
    let totals = out.lines().rev().find_map(|l| {
        let rest = l.split("tot_send_msgs=").nth(1)?;
        let (sent, rest) = rest.split_once(", tot_recv_msgs=")?;
        Some((sent.trim().parse::<u64>().ok()?, rest.trim().parse::<u64>().ok()?))
    });
    assert!(totals.is_some_and(|(s, r)| s >= 600 && s == r), "{dp}: {totals:?}\n{out}");
    assert!(out.contains("Total lost packets 0 (0.000000%)"), "{dp}: loss reported:\n{out}");
    assert!(!old.alive(), "{dp}");
    drop(new);
}

/// A new process that cannot take over (here: one that is not a relay,
/// and one that asks and goes away) leaves the old one serving as before.
fn a_failed_handover_leaves_the_old_process_serving(dp: &'static str) {
    let dir = TempDir::new("handover-fail");
    let socket = dir.file("handover.sock", "");
    let mut old = Relay::start(&RelayOptions::new(dp, &config(&socket)));
    let p = peer();
    let mut c = Client::new(old.addr, "alice", "wonderland").unwrap();
    let relayed = c.allocate(None).unwrap();
    c.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
    both_ways(&mut c, 0x4000, relayed, &p, "before");

    // Something that connects and says nothing useful, then goes away.
    {
        let s = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .unwrap();
        // The handover socket listens a moment after the admin listener
        // (what `Relay::start` waits for): refused until then.
        let addr = nix::sys::socket::UnixAddr::new(&socket).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&s), &addr) {
            assert!(e == nix::errno::Errno::ECONNREFUSED && Instant::now() < deadline, "{dp}: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
        nix::sys::socket::send(std::os::fd::AsRawFd::as_raw_fd(&s), b"hello?", nix::sys::socket::MsgFlags::empty())
            .unwrap();
    }
    old.wait_for("handover:");
    both_ways(&mut c, 0x4000, relayed, &p, "after a stray request");

    // A new process that takes over at `socket` with `env` set, to its end.
    let take_over = |env: (&str, &str)| {
        std::process::Command::new(ip2p_tests::relay_bin())
            .args(["--listen", "127.0.0.1:0", "--user", "alice:wonderland", "--admin", "off", "--datapath", dp])
            .args(["--handover-socket", socket.to_str().unwrap(), "--take-over"])
            .env(env.0, env.1)
            .output()
            .unwrap()
    };
    // One told to fail after it received everything: the snapshot from
    // "another boot" is refused, the old one resumes.
    let out = take_over(("IP2P_TEST_BOOT_ID", "another boot"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{dp}: {err}");
    assert!(err.contains("another boot"), "{dp}: {err}");
    old.wait_for("did not take over; going on");
    assert!(old.alive(), "{dp}");
    both_ways(&mut c, 0x4000, relayed, &p, "after a failed takeover");
    assert_eq!(c.refresh(Some(600)).unwrap(), 600);

    // A new process that dies once it holds everything: the old one
    // resumes when the connection ends, without waiting out a timeout.
    let started = Instant::now();
    let out = take_over(("IP2P_TEST_DIE_IN_HANDOVER", "1"));
    assert!(!out.status.success(), "{dp}");
    old.wait_for("did not take over; going on");
    assert!(started.elapsed() < Duration::from_secs(5), "{dp}: {:?}", started.elapsed());
    both_ways(&mut c, 0x4000, relayed, &p, "after a new process died");
    assert_eq!(c.refresh(Some(600)).unwrap(), 600);
}

/// A snapshot damaged on the way (cut in half) and one written by a later
/// version of the format: the new process says why and exits, nothing of
/// it serves, and the old process goes on with its clients.
fn a_bad_snapshot_is_refused_whole(dp: &'static str) {
    for (mangle, why) in [("truncate", "malformed snapshot"), ("future", "is newer than this build's")] {
        let dir = TempDir::new("handover-bad");
        let socket = dir.file("handover.sock", "");
        let config = config(&socket);
        let mut old = Relay::start(&RelayOptions::new(dp, &config).env("IP2P_TEST_MANGLE_SNAPSHOT", mangle));
        let p = peer();
        let mut c = Client::new(old.addr, "alice", "wonderland").unwrap();
        let relayed = c.allocate(None).unwrap();
        c.channel_bind(0x4000, p.local_addr().unwrap()).unwrap();
        let mut tcp = Client::tcp(old.addr, "alice", "wonderland").unwrap();
        let tcp_relayed = tcp.allocate(None).unwrap();
        tcp.channel_bind(0x4001, p.local_addr().unwrap()).unwrap();
        both_ways(&mut c, 0x4000, relayed, &p, "before");

        let started = Instant::now();
        let out = std::process::Command::new(ip2p_tests::relay_bin())
            .args(["--config", dir.file("relay.toml", &config).to_str().unwrap(), "--datapath", dp, "--take-over"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{dp} {mangle}: {err}");
        assert!(err.contains(why) && err.contains("goes on serving"), "{dp} {mangle}: {err}");
        assert!(!err.contains("ip2p-relay started"), "{dp} {mangle}: nothing half-started: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{dp} {mangle}: {:?}", started.elapsed());
        old.wait_for("did not take over; going on");
        assert!(old.alive(), "{dp} {mangle}");
        both_ways(&mut c, 0x4000, relayed, &p, "after");
        both_ways(&mut tcp, 0x4001, tcp_relayed, &p, "after");
        assert_eq!(c.refresh(Some(600)).unwrap(), 600, "{dp} {mangle}");
        assert_eq!(tcp.refresh(Some(600)).unwrap(), 600, "{dp} {mangle}");
    }
}

on_both_datapaths! {
    names:
    allocations_move_to_a_new_process: allocations_move_to_a_new_process();
    a_failed_handover_leaves_the_old_process_serving: a_failed_handover_leaves_the_old_process_serving();
    traffic_goes_on_through_the_switch: traffic_goes_on_through_the_switch();
    coturns_client_through_the_switch: coturns_client_through_the_switch();
    a_tcp_client_relays_through_the_switch: a_tcp_client_relays_through_the_switch();
    another_version_takes_over_and_back: another_version_takes_over_and_back();
    a_bad_snapshot_is_refused_whole: a_bad_snapshot_is_refused_whole();
}
