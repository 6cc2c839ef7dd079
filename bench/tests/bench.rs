//! Short bench runs against ip2p-relay (started here) and coturn (started
//! here): the results must be complete and consistent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ip2p_bench::run::{Credentials, EngineKind, Mode, RunConfig, run};
use ip2p_bench::stats::Summary;
use ip2p_client::Client;
use ip2p_relay::config::{RunArgs, Settings};
use ip2p_relay::node;

fn config(server: SocketAddr, mode: Mode) -> RunConfig {
    RunConfig {
        label: format!("{mode:?}"),
        server,
        credentials: Credentials::User { name: "demo".into(), password: "demo-password".into() },
        mode,
        sessions: 4,
        rate: 2000.0,
        size: 100,
        burst: 1,
        duration: Duration::from_millis(800),
        warmup: Duration::from_millis(200),
        threads: 2,
        indications: false,
        engine: Default::default(),
        echo_at: None,
        echo_netns: None,
    }
}

/// Every packet sent after the warm-up is received or lost, and at this
/// gentle rate on loopback none is lost.
fn check(s: &Summary) {
    assert!(s.sent >= 1400, "{s:?}");
    assert_eq!(s.received + s.lost, s.sent, "{s:?}");
    assert_eq!(s.lost, 0, "{s:?}");
    assert_eq!(s.duplicates, 0, "{s:?}");
    let l = &s.latency_us;
    assert!(l.p50 > 0.0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, "{s:?}");
}

fn ip2p() -> node::Node {
    ip2p_with("")
}

fn ip2p_with(top: &str) -> node::Node {
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        workers = 1
        {top}
        [auth]
        users = [{{ name = "demo", password = "demo-password" }}]
        [peers]
        allow = ["127.0.0.2/32"]
    "#
    );
    node::start(&Settings::from_toml(&text, &RunArgs::default()).unwrap()).unwrap()
}

/// Bursts (a video frame's packets to one peer) arrive whole and in
/// order, and the relay sends runs of them as GSO sends, on both of its
/// datapaths.
#[test]
fn bursts_arrive_whole_and_go_as_gso_sends() {
    let stop = Arc::new(AtomicBool::new(false));
    for datapath in ["epoll", "io_uring"] {
        let node = ip2p_with(&format!("datapath = \"{datapath}\""));
        for mode in [Mode::Pairs, Mode::Echo] {
            let cfg = RunConfig { burst: 16, size: 1000, rate: 4000.0, ..config(node.local_addrs()[0], mode) };
            let (s, _) = run(&cfg, &stop).unwrap();
            check(&s);
            assert_eq!(s.reordered, 0, "{datapath} {mode:?}: {s:?}");
        }
        let gso = node.stats().iter().fold(0, |n, w| n + w.gso.datagrams);
        assert!(gso > 0, "{datapath}: no run went as one GSO send");
    }
}

#[test]
fn pairs_and_echo_through_ip2p_on_both_engines() {
    let node = ip2p();
    let stop = Arc::new(AtomicBool::new(false));
    for engine in [EngineKind::Epoll, EngineKind::IoUring] {
        for mode in [Mode::Pairs, Mode::Echo] {
            let cfg = RunConfig { engine, ..config(node.local_addrs()[0], mode) };
            let (s, hist) = run(&cfg, &stop).unwrap();
            check(&s);
            assert_eq!(hist.len(), s.received, "one latency sample per packet received ({engine:?})");
        }
    }
    let mut indications = config(node.local_addrs()[0], Mode::Pairs);
    indications.indications = true;
    check(&run(&indications, &stop).unwrap().0);
    assert_eq!(node.allocations(), 0, "the bench deletes its allocations");
}

/// The capacity search driving real runs through ip2p ends in its one
/// line, which says what its JSON holds. (At these gentle rates every step
/// holds on a quiet machine, up to the highest rate allowed; a busy one
/// may hold the generator back, which the line then says.)
#[test]
fn a_capacity_search_through_ip2p_ends_in_one_line() {
    use ip2p_bench::search::{Bounds, Outcome, Plan, search};
    let node = ip2p();
    let stop = Arc::new(AtomicBool::new(false));
    let plan = Plan { start: 1000.0, max_rate: 4000.0, growth: 2.0, attempts: 2, ..Plan::default() };
    let bounds = Bounds { max_loss: 1.0, max_p99_us: 50_000.0 };
    let probe = |rate: f64, _| -> Result<_, std::io::Error> {
        let cfg = RunConfig { rate, duration: Duration::from_millis(500), ..config(node.local_addrs()[0], Mode::Echo) };
        Ok(Some(run(&cfg, &stop)?.0))
    };
    let found = search(&plan, &bounds, probe, |_| {}).unwrap();
    let Outcome::Found { rate, ref above, .. } = found.outcome else { panic!("{found:?}") };
    assert!(rate <= 4000.0 && found.steps.first().is_some_and(|s| s.rate == 1000.0), "{found:?}");
    let line = found.line(&bounds, &plan);
    assert!(line.starts_with(&format!("capacity: {rate:.0} pkt/s (")), "{line}");
    assert_eq!(above.is_none(), line.contains("the highest rate tried"), "{line}");
    let json = found.json(&bounds, &plan);
    assert_eq!(json["capacity"], rate);
    assert_eq!(json["steps"].as_array().unwrap().len(), found.steps.len());
    assert_eq!(node.allocations(), 0, "each step deletes its allocations");
}

#[test]
fn direct_modes_need_no_server() {
    let stop = Arc::new(AtomicBool::new(false));
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for engine in [EngineKind::Epoll, EngineKind::IoUring] {
        for mode in [Mode::Direct, Mode::DirectEcho] {
            check(&run(&RunConfig { engine, ..config(nowhere, mode) }, &stop).unwrap().0);
        }
    }
}

#[test]
fn forwarded_echo_through_the_bare_forwarder() {
    for engine in [EngineKind::Epoll, EngineKind::IoUring] {
        let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = listen.local_addr().unwrap();
        // A port for the echo: the OS picks it, the bench binds it again.
        let echo_at = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let forwarder = std::thread::spawn(move || {
            ip2p_bench::forward::forward(&listen, echo_at, 100, Duration::from_secs(60), &flag)
        });
        let cfg = RunConfig { engine, threads: 1, echo_at: Some(echo_at), ..config(server, Mode::ForwardedEcho) };
        let s = run(&cfg, &Arc::new(AtomicBool::new(false))).unwrap().0;
        check(&s);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let done = forwarder.join().unwrap().unwrap();
        assert_eq!(done.clients, 4, "one socket per session ({engine:?})");
        assert_eq!(done.to_peer, done.to_clients, "{done:?}");
        assert!(done.to_peer >= s.sent, "warm-up and measured packets all went through: {done:?} {s:?}");
        assert_eq!(done.send_errors, 0);
    }
}

struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pairs_through_coturn() {
    assert!(
        Command::new("turnserver").arg("--version").output().is_ok(),
        "coturn's turnserver is not installed: `apt-get install coturn` (.ci/run does)"
    );
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = std::env::temp_dir().join(format!("ip2p-bench-coturn-{}.log", std::process::id()));
    let child = Command::new("turnserver")
        .args(["-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "-a", "--realm=ip2p"])
        .args(["--user=demo:demo-password", "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls"])
        .arg(format!("--listening-port={port}"))
        .arg(format!("--log-file={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _coturn = Coturn(child);
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::new(server, "", "").unwrap().binding().is_err() {
        assert!(Instant::now() < deadline, "coturn did not start");
    }
    let stop = Arc::new(AtomicBool::new(false));
    check(&run(&config(server, Mode::Pairs), &stop).unwrap().0);
    let _ = std::fs::remove_file(log);
}

/// `allocs` makes and holds allocations of the family asked for, and says
/// so in its summary; the server sees them while they are held.
#[test]
fn allocs_of_both_families_are_held_then_deleted() {
    let text = r#"
        listen = ["127.0.0.1:0"]
        workers = 1
        [relay]
        ips = ["127.0.0.1", "::1"]
        [auth]
        users = [{ name = "demo", password = "demo-password" }]
    "#;
    let node = node::start(&Settings::from_toml(text, &RunArgs::default()).unwrap()).unwrap();
    let server = node.local_addrs()[0];
    let credentials = Credentials::User { name: "demo".into(), password: "demo-password".into() };
    let stop = AtomicBool::new(false);
    for ipv6 in [false, true] {
        let options = ip2p_bench::allocs::Options { count: 40, concurrency: 4, ipv6, hold: Duration::from_secs(1) };
        let handle = node.handle();
        let watcher = std::thread::spawn(move || {
            // While the bench holds them, every one is on the node.
            let deadline = Instant::now() + Duration::from_secs(5);
            while handle.allocations() < 40 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            handle.allocations()
        });
        let s = ip2p_bench::allocs::allocs(server, &credentials, &options, &stop).unwrap();
        assert_eq!((s.attempted, s.succeeded), (40, 40), "{s:?}");
        assert!(s.failures.is_empty() && s.per_second > 0.0, "{s:?}");
        assert_eq!(s.relayed_ipv6, if ipv6 { 40 } else { 0 }, "{s:?}");
        assert_eq!(watcher.join().unwrap(), 40);
    }
    // Deleted at the end.
    assert_eq!(node.handle().allocations(), 0);
}
