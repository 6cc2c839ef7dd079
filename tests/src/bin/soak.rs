//! `make soak`: the relay under a bounded churn for a while, watched for
//! anything that grows.
//!
//! Clients allocate, bind, relay through an echo peer, refresh, and delete
//! or vanish (their allocations then expire), over UDP, TCP and with
//! EVEN-PORT reservations, at a moderate rate; meanwhile a stranger sends
//! malformed datagrams, unauthenticated requests, wrong FINGERPRINTs and
//! garbage connections. Every few seconds the relay's RSS, open file
//! descriptors, threads, timer table entries and allocations are sampled
//! (every 5 s; a short run more often, for a dozen samples).
//! At the end the samples are written (CSV and an SVG plot) and the run
//! fails if any of the first four trends upward: the last quarter's peak
//! above the second quarter's by more than a margin.
//!
//! Usage: `ip2p-soak SECONDS [OUT_DIR]` (the relay binary from
//! IP2P_RELAY_BIN, else this build's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::cast_precision_loss)] // samples plotted as floats

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ip2p_client::Client;
use ip2p_tests::{Relay, RelayOptions, TempDir, request};
use ip2p_wire::attr::RequestedTransport;
use ip2p_wire::{Attribute, Method};

const SECRET: &str = "soak-rest-secret-0123456789";
/// Churning client threads.
const CLIENTS: usize = 6;
/// How often the relay is sampled: every 5 s, or often enough for a dozen
/// samples in a short run.
fn sample_every(seconds: u64) -> Duration {
    Duration::from_millis((seconds * 1000 / 12).clamp(1000, 5000))
}

/// One sample of the relay process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: f64,
    rss_kb: f64,
    fds: f64,
    threads: f64,
    timers: f64,
    allocations: f64,
}

/// One series of the samples.
type Field = fn(&Sample) -> f64;

/// What the churn did, counted.
#[derive(Debug, Default)]
struct Counts {
    allocations: AtomicU64,
    deleted: AtomicU64,
    abandoned: AtomicU64,
    relayed: AtomicU64,
    noise: AtomicU64,
    errors: AtomicU64,
    /// 437: a vanished client's allocation still holds the port a new
    /// client got from the kernel (as it happens in the field).
    mismatches: AtomicU64,
}

/// A small deterministic generator (xorshift), one per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn rest_user(rng: &mut Rng) -> (String, String) {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let name = format!("{expiry}:soak-{}", rng.below(1000));
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(name.as_bytes());
    (name, base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// A peer that sends back what it gets.
fn echo(stop: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.2:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    });
    addr
}

/// One client's life: allocate, relay, refresh, then delete or vanish.
fn session(relay: SocketAddr, peer: SocketAddr, rng: &mut Rng, counts: &Counts) -> Result<(), String> {
    let (user, password) = rest_user(rng);
    let kind = rng.below(10);
    let mut c = if kind == 0 { Client::tcp(relay, &user, &password) } else { Client::new(relay, &user, &password) }
        .map_err(|e| e.to_string())?;
    match kind {
        1 => c.allocate_even_pair().map(|_| ()),
        _ => c.allocate(Some(u32::try_from(rng.below(60)).unwrap())).map(|_| ()),
    }
    .map_err(|e| e.to_string())?;
    counts.allocations.fetch_add(1, Ordering::Relaxed);
    let channel = 0x4000 + u16::try_from(rng.below(0x0FFF)).unwrap();
    c.channel_bind(channel, peer).map_err(|e| e.to_string())?;
    for _ in 0..1 + rng.below(20) {
        let payload = vec![0xA5; 1 + usize::try_from(rng.below(1200)).unwrap()];
        if rng.below(4) == 0 {
            c.send_indication(peer, &payload).map_err(|e| e.to_string())?;
        } else {
            c.send_channel(channel, &payload).map_err(|e| e.to_string())?;
        }
        if c.recv(Duration::from_millis(500)).map_err(|e| e.to_string())?.is_some() {
            counts.relayed.fetch_add(1, Ordering::Relaxed);
        }
    }
    if rng.below(3) == 0 {
        c.refresh(Some(30)).map_err(|e| e.to_string())?;
    }
    if rng.below(10) < 7 {
        c.refresh(Some(0)).map_err(|e| e.to_string())?;
        counts.deleted.fetch_add(1, Ordering::Relaxed);
    } else {
        counts.abandoned.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// What a stranger sends: garbage, requests that do not authenticate,
/// wrong FINGERPRINTs, connections that say nothing useful.
fn noise(relay: SocketAddr, rng: &mut Rng, counts: &Counts) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let garbage: Vec<u8> = (0..1 + rng.below(300)).map(|_| u8::try_from(rng.below(256)).unwrap()).collect();
    let _ = socket.send_to(&garbage, relay);
    let _ = socket
        .send_to(&request(Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::UDP)], false), relay);
    let mut bad = request(Method::BINDING, &[], true);
    if let Some(last) = bad.last_mut() {
        *last ^= 0xFF;
    }
    let _ = socket.send_to(&bad, relay);
    if rng.below(4) == 0
        && let Ok(mut s) = TcpStream::connect(relay)
    {
        let _ = s.write_all(if rng.below(2) == 0 { b"\x16\x03\x01 not TLS, not STUN" } else { b"\x00\x01\x00" });
    }
    counts.noise.fetch_add(1, Ordering::Relaxed);
}

fn sample(relay: &Relay, started: Instant) -> Sample {
    let m = relay.metrics();
    Sample {
        at: started.elapsed().as_secs_f64(),
        rss_kb: relay.rss_kb() as f64,
        fds: relay.fds() as f64,
        threads: relay.threads() as f64,
        timers: m.get("ip2p_timers").copied().unwrap_or(f64::NAN),
        allocations: m.get("ip2p_allocations_counted").copied().unwrap_or(f64::NAN),
    }
}

/// Whether a series trends upward: past the first quarter (warm-up), the
/// last quarter's peak exceeds the second quarter's by more than `slack`
/// and 10%.
fn grows(values: &[f64], slack: f64) -> Option<(f64, f64)> {
    let n = values.len();
    if n < 8 {
        return None;
    }
    let peak = |s: &[f64]| s.iter().copied().fold(f64::MIN, f64::max);
    let (second, last) = (peak(&values[n / 4..n / 2]), peak(&values[n * 3 / 4..]));
    (last > second * 1.1 + slack).then_some((second, last))
}

fn plot(samples: &[Sample]) -> String {
    let series: [(&str, Field); 5] = [
        ("RSS (MB)", |s| s.rss_kb / 1024.0),
        ("open fds", |s| s.fds),
        ("threads", |s| s.threads),
        ("timer entries", |s| s.timers),
        ("allocations", |s| s.allocations),
    ];
    let (w, h, pad) = (900.0, 150.0, 50.0);
    let end = samples.last().map_or(1.0, |s| s.at.max(1.0));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="12">"#,
        h * series.len() as f64 + 30.0
    );
    for (i, (name, f)) in series.iter().enumerate() {
        let top = 20.0 + h * i as f64;
        let values: Vec<f64> = samples.iter().map(f).collect();
        let max = values.iter().copied().fold(1.0, f64::max) * 1.1;
        let points: String = samples
            .iter()
            .zip(&values)
            .map(|(s, v)| {
                format!("{:.1},{:.1} ", pad + s.at / end * (w - 2.0 * pad), top + (h - 30.0) * (1.0 - v / max))
            })
            .collect();
        let _ = write!(
            svg,
            r##"<text x="{pad}" y="{}">{name} (0 to {max:.0})</text><rect x="{pad}" y="{top}" width="{}" height="{}" fill="none" stroke="#ccc"/><polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>"##,
            top - 4.0,
            w - 2.0 * pad,
            h - 30.0
        );
    }
    let _ =
        write!(svg, r#"<text x="{pad}" y="{}">seconds: 0 to {end:.0}</text></svg>"#, h * series.len() as f64 + 25.0);
    svg
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let out = std::path::PathBuf::from(args.get(2).cloned().unwrap_or_else(|| "target/soak".into()));
    std::fs::create_dir_all(&out).unwrap();
    // Lifetimes short enough that abandoned allocations expire within the
    // warm-up (the first quarter), so that what follows is a steady state;
    // quotas as shipped, but for the one address every client uses.
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"soak\"\nworkers = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\nsecrets = [\"{SECRET}\"]\n[allocation]\ndefault_lifetime = 10\nmax_lifetime = 10\nip_quota = 10000\n\
         [peers]\nallow = [\"127.0.0.2/32\"]\n[connections]\nidle_timeout = 5\n"
    );
    let _dir = TempDir::new("soak");
    let relay = Relay::start(&RelayOptions::new("auto", &config));
    let stop = Arc::new(AtomicBool::new(false));
    let peer = echo(stop.clone());
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut threads = Vec::new();
    for i in 0..CLIENTS {
        let (stop, counts, addr) = (stop.clone(), counts.clone(), relay.addr);
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
            while !stop.load(Ordering::Relaxed) {
                match session(addr, peer, &mut rng, &counts) {
                    Err(e) if e.contains("437") => drop(counts.mismatches.fetch_add(1, Ordering::Relaxed)),
                    Err(e) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("session: {e}");
                    }
                    Ok(()) => {}
                }
                std::thread::sleep(Duration::from_millis(100 + rng.below(200)));
            }
        }));
    }
    {
        let (stop, counts, addr) = (stop.clone(), counts.clone(), relay.addr);
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(42);
            while !stop.load(Ordering::Relaxed) {
                noise(addr, &mut rng, &counts);
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    let every = sample_every(seconds);
    let mut samples = Vec::new();
    let mut csv = String::from("seconds,rss_kb,fds,threads,timers,allocations\n");
    while Instant::now() < deadline {
        std::thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())).max(Duration::from_millis(1)));
        let s = sample(&relay, started);
        let _ = writeln!(csv, "{:.0},{},{},{},{},{}", s.at, s.rss_kb, s.fds, s.threads, s.timers, s.allocations);
        println!(
            "{:>6.0}s rss {:>7} kB  fds {:>5}  threads {:>3}  timers {:>5}  allocations {:>5}",
            s.at, s.rss_kb, s.fds, s.threads, s.timers, s.allocations
        );
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    std::fs::write(out.join("samples.csv"), &csv).unwrap();
    std::fs::write(out.join("soak.svg"), plot(&samples)).unwrap();
    let c = &*counts;
    println!(
        "{seconds} s: {} allocations ({} deleted, {} left to expire, {} 437 on a vanished client's port), \
         {} packets echoed, {} noise rounds, {} session errors",
        c.allocations.load(Ordering::Relaxed),
        c.deleted.load(Ordering::Relaxed),
        c.abandoned.load(Ordering::Relaxed),
        c.mismatches.load(Ordering::Relaxed),
        c.relayed.load(Ordering::Relaxed),
        c.noise.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed)
    );
    let mut failed = Vec::new();
    let checks: [(&str, f64, Field); 4] = [
        ("RSS kB", 4096.0, |s| s.rss_kb),
        ("fds", 32.0, |s| s.fds),
        ("threads", 4.0, |s| s.threads),
        ("timers", 64.0, |s| s.timers),
    ];
    for (name, slack, f) in checks {
        let values: Vec<f64> = samples.iter().map(f).collect();
        if let Some((before, after)) = grows(&values, slack) {
            failed.push(format!("{name} grows: peak {before} in the second quarter, {after} in the last"));
        }
    }
    if let Some(s) = samples.iter().find(|s| s.timers > 2.0 * s.allocations + 2.0) {
        failed.push(format!("{} timers for {} allocations at {:.0} s", s.timers, s.allocations, s.at));
    }
    if c.allocations.load(Ordering::Relaxed) == 0 || c.relayed.load(Ordering::Relaxed) == 0 {
        failed.push("the churn did nothing".into());
    }
    println!("samples: {}/samples.csv, plot: {}/soak.svg", out.display(), out.display());
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("soak: {f}");
        }
        std::process::exit(1);
    }
    println!("soak: nothing grows");
}
