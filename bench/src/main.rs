//! `ip2p-bench`: load-test any TURN server with open-loop traffic and
//! honest latency percentiles.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ip2p_bench::run::{Credentials, EngineKind, Mode, RunConfig, run};
use ip2p_bench::search::{Bounds, Plan, search};
use ip2p_bench::stats::{Summary, percentile_file};

#[derive(Debug, Parser)]
#[command(name = "ip2p-bench", version, about = "Open-loop TURN load generator and latency harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run at a fixed rate: loss, reordering, latency percentiles.
    Latency(Load),
    /// Raise the rate step by step; report the highest that holds.
    Capacity {
        #[command(flatten)]
        load: Load,
        /// Highest rate to try, packets per second.
        #[arg(long, default_value_t = 1_000_000.0)]
        max_rate: f64,
        /// Each growing step multiplies the rate by this; then the search
        /// narrows the bracket between the last rate that held and the
        /// first that failed.
        #[arg(long, default_value_t = 1.5)]
        step: f64,
        /// How narrow the bracket ends: its top within this fraction of
        /// its bottom.
        #[arg(long, default_value_t = 0.02)]
        resolution: f64,
        /// At least this many packets in a step's measured window (the
        /// step runs longer than --duration at low rates), so that its p99
        /// means something.
        #[arg(long, default_value_t = 20_000)]
        min_packets: u64,
        /// A step fails above this loss, in percent.
        #[arg(long, default_value_t = 0.1)]
        max_loss: f64,
        /// A step fails above this p99 latency, in microseconds.
        #[arg(long, default_value_t = 1000.0)]
        max_p99_us: f64,
        /// Runs of a step before it counts as failed (it holds if any run
        /// holds): on a shared machine one stall of a few milliseconds can
        /// lose 0.1% of a step or push its p99 past the bound, and a stall
        /// only ever makes a run look worse.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
        attempts: u32,
    },
    /// Overlay the latency percentiles of runs (their --hgrm files) in an SVG.
    Plot {
        /// The SVG to write.
        #[arg(long)]
        out: PathBuf,
        /// The plot's title.
        #[arg(long, default_value = "latency by percentile")]
        title: String,
        /// Percentile files; each is labelled with its file name.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Allocation setup rate and concurrent allocations held.
    Allocs {
        #[command(flatten)]
        target: Target,
        /// Allocations to make (all held until the end).
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Allocations in progress at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Ask for IPv6 relayed addresses (REQUESTED-ADDRESS-FAMILY).
        #[arg(long)]
        ipv6: bool,
        /// Seconds to hold all allocations before deleting them (to look
        /// at the server meanwhile); at most 300, within their lifetime.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=300))]
        hold: u64,
        /// Write the summary as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A bare UDP forwarder (no protocol, recvmmsg/sendmmsg): the baseline
    /// for `--mode forwarded-echo`. Each client gets a socket towards `--to`.
    Forward {
        /// Where clients send.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The one peer (the bench's echo, placed with `--echo-at`).
        #[arg(long)]
        to: SocketAddr,
        /// Clients at most; datagrams of others are dropped.
        #[arg(long, default_value_t = 10_000)]
        max_clients: usize,
        /// Stop after this many seconds (or at Ctrl-C / SIGTERM).
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        seconds: u64,
    },
}

/// The server under test and how to authenticate to it.
#[derive(Debug, Clone, Args)]
struct Target {
    /// The TURN server.
    #[arg(long, default_value = "127.0.0.1:3478")]
    server: SocketAddr,
    /// Username (with --password).
    #[arg(long, default_value = "demo")]
    user: String,
    /// Password.
    #[arg(long, default_value = "demo-password")]
    password: String,
    /// TURN REST API secret, instead of --user/--password.
    #[arg(long)]
    auth_secret: Option<String>,
}

impl Target {
    fn credentials(&self) -> Credentials {
        match &self.auth_secret {
            Some(s) => Credentials::Secret(s.clone()),
            None => Credentials::User { name: self.user.clone(), password: self.password.clone() },
        }
    }
}

#[derive(Debug, Clone, Args)]
struct Load {
    #[command(flatten)]
    target: Target,
    /// Topology.
    #[arg(long, value_enum, default_value_t = Mode::Pairs)]
    mode: Mode,
    /// Sending sessions (allocations).
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Packets per second over all sessions (for capacity, the starting
    /// rate, moved by up to 10% either way at random so that two searches
    /// do not walk the same grid of rates).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Payload bytes (at least 24).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Packets per burst: a session sends this many at once to its peer
    /// (a video frame), bursts at rate / burst a second.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    burst: u16,
    /// Measured seconds (per step for capacity).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent first and not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Sender/receiver threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Send/Data indications instead of ChannelData.
    #[arg(long)]
    indications: bool,
    /// How bench threads move datagrams.
    #[arg(long, value_enum, default_value_t = EngineKind::Auto)]
    engine: EngineKind,
    /// Bind the echo responders here (thread `i` at the port plus `i`),
    /// for a forwarder started with `--to` this address.
    #[arg(long)]
    echo_at: Option<SocketAddr>,
    /// Bind the echo responders in this network namespace (`ip netns`
    /// name): the bench's clients and its peers on different hosts.
    #[arg(long, value_name = "NAME")]
    echo_netns: Option<String>,
    /// Label in reports.
    #[arg(long)]
    label: Option<String>,
    /// Write the summary (all steps for capacity) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency distribution as an HdrHistogram percentile file.
    #[arg(long)]
    hgrm: Option<PathBuf>,
}

impl Load {
    fn config(&self, rate: f64) -> RunConfig {
        let credentials = self.target.credentials();
        let mode = match self.mode {
            Mode::Pairs => "pairs",
            Mode::Echo => "echo",
            Mode::Direct => "direct",
            Mode::DirectEcho => "direct-echo",
            Mode::ForwardedEcho => "forwarded-echo",
        };
        RunConfig {
            label: self.label.clone().unwrap_or_else(|| format!("{mode} {}B", self.size)),
            server: self.target.server,
            credentials,
            mode: self.mode,
            sessions: self.sessions,
            rate,
            size: self.size,
            burst: usize::from(self.burst),
            duration: Duration::from_secs_f64(self.duration.clamp(0.1, 24.0 * 3600.0)),
            warmup: Duration::from_secs_f64(self.warmup.clamp(0.0, 3600.0)),
            threads: self.threads,
            indications: self.indications,
            engine: self.engine,
            echo_at: self.echo_at,
            echo_netns: self.echo_netns.clone(),
        }
    }
}

/// Ctrl-C sets the flag; the run stops and reports what it measured.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    use nix::sys::signal::{SigSet, Signal};
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_ok() {
        let flag = stop.clone();
        let _ = std::thread::Builder::new().name("ip2p-bench-signals".into()).spawn(move || {
            if set.wait().is_ok() {
                eprintln!("stopping: reporting what was measured");
                flag.store(true, Ordering::Relaxed);
            }
        });
    }
    stop
}

const HEADER: &str = "run                        sent   received     lost  loss%    dup  reord       pkt/s   Mbit/s      p50      p90      p99    p99.9   p99.99      max  lag-p99  valid";

fn row(s: &Summary) -> String {
    let l = &s.latency_us;
    format!(
        "{:<22} {:>10} {:>10} {:>8} {:>6.3} {:>6} {:>6} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  {}",
        s.label,
        s.sent,
        s.received,
        s.lost,
        s.loss_percent,
        s.duplicates,
        s.reordered,
        s.packets_per_second,
        s.mbit_per_second,
        l.p50,
        l.p90,
        l.p99,
        l.p99_9,
        l.p99_99,
        l.max,
        s.send_lag_p99_us,
        if s.valid { "yes" } else { "NO" }
    )
}

fn write(path: &PathBuf, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = stop_on_ctrl_c();
    let result = match cli.command {
        Command::Latency(load) => latency(&load, &stop),
        Command::Capacity { load, max_rate, step, resolution, min_packets, max_loss, max_p99_us, attempts } => {
            let plan = Plan { start: load.rate * jitter(), max_rate, growth: step, attempts, resolution, halvings: 6 };
            capacity(&load, &plan, &Bounds { max_loss, max_p99_us }, min_packets, &stop)
        }
        Command::Plot { out, title, files } => plot(&out, &title, &files),
        Command::Allocs { target, count, concurrency, ipv6, hold, json } => {
            let options = ip2p_bench::allocs::Options { count, concurrency, ipv6, hold: Duration::from_secs(hold) };
            allocs(target.server, &target.credentials(), &options, json.as_ref(), &stop)
        }
        Command::Forward { listen, to, max_clients, seconds } => forward(listen, to, max_clients, seconds, &stop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ip2p-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plot(out: &PathBuf, title: &str, files: &[PathBuf]) -> Result<(), String> {
    let mut series = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let points = ip2p_bench::plot::parse_hgrm(&text);
        if points.is_empty() {
            return Err(format!("{}: no percentiles in it (write one with --hgrm)", f.display()));
        }
        let label = f.file_stem().map_or_else(|| f.display().to_string(), |s| s.to_string_lossy().into_owned());
        series.push((label, points));
    }
    write(out, &ip2p_bench::plot::svg(title, &series))
}

fn allocs(
    server: SocketAddr,
    credentials: &Credentials,
    options: &ip2p_bench::allocs::Options,
    json: Option<&PathBuf>,
    stop: &Arc<AtomicBool>,
) -> Result<(), String> {
    let s = ip2p_bench::allocs::allocs(server, credentials, options, stop).map_err(|e| e.to_string())?;
    println!(
        "allocations: {} of {} in {:.2} s: {:.0}/s; held at once: {} ({} IPv6); failures: {:?}",
        s.succeeded, s.attempted, s.seconds, s.per_second, s.succeeded, s.relayed_ipv6, s.failures
    );
    println!("allocate latency: p50 {} us, p99 {} us, max {} us", s.latency_p50_us, s.latency_p99_us, s.latency_max_us);
    if let Some(path) = json {
        write(path, &serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?)?;
    }
    Ok(())
}

fn forward(
    listen: SocketAddr,
    to: SocketAddr,
    max_clients: usize,
    seconds: u64,
    stop: &AtomicBool,
) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind(listen).map_err(|e| format!("cannot bind {listen}: {e}"))?;
    let at = socket.local_addr().map_err(|e| e.to_string())?;
    println!("forwarding {at} -> {to}");
    let done = ip2p_bench::forward::forward(&socket, to, max_clients, Duration::from_secs(seconds), stop)
        .map_err(|e| e.to_string())?;
    println!(
        "forwarded {} to the peer and {} back, {} clients, {} sends refused",
        done.to_peer, done.to_clients, done.clients, done.send_errors
    );
    Ok(())
}

fn latency(load: &Load, stop: &Arc<AtomicBool>) -> Result<(), String> {
    let cfg = load.config(load.rate);
    eprintln!(
        "{}: {} sessions, {:.0} pkt/s, {} B, {:?} + {:?} warm-up, {} thread(s)",
        cfg.label, cfg.sessions, cfg.rate, cfg.size, cfg.duration, cfg.warmup, cfg.threads
    );
    let (summary, hist) = run(&cfg, stop).map_err(|e| e.to_string())?;
    println!("{HEADER}");
    println!("{}", row(&summary));
    println!("(latency and lag in microseconds; latency counts from each packet's scheduled send time)");
    if let Some(path) = &load.json {
        write(path, &serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?)?;
    }
    if let Some(path) = &load.hgrm {
        write(path, &percentile_file(&hist))?;
    }
    Ok(())
}

/// A random factor in [0.9, 1.1): where a capacity search starts, so that
/// two servers' searches do not share a grid of rates (and a figure by
/// accident).
fn jitter() -> f64 {
    rand::random_range(0.9..1.1)
}

/// The capacity search (`search.rs`): each step's row with its verdict,
/// then one line, `capacity: N pkt/s (...)` or `capacity: none (...)`.
fn capacity(load: &Load, plan: &Plan, bounds: &Bounds, min_packets: u64, stop: &Arc<AtomicBool>) -> Result<(), String> {
    println!("{HEADER}  verdict");
    let probe = |rate: f64, attempt: u32| -> Result<Option<Summary>, String> {
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut cfg = load.config(rate);
        cfg.label = if attempt == 1 { format!("{rate:.0} pkt/s") } else { format!("{rate:.0} pkt/s #{attempt}") };
        // Enough packets in the window for its p99 to mean something.
        let least = Duration::from_secs_f64((min_packets as f64 / rate).min(60.0));
        cfg.duration = cfg.duration.max(least);
        let (s, _) = run(&cfg, stop).map_err(|e| e.to_string())?;
        Ok(if stop.load(Ordering::Relaxed) { None } else { Some(s) })
    };
    let found = search(plan, bounds, probe, |step| println!("{}  {}", row(&step.summary), step.verdict))?;
    println!("{}", found.line(bounds, plan));
    if let Some(path) = &load.json {
        write(path, &serde_json::to_string_pretty(&found.json(bounds, plan)).map_err(|e| e.to_string())?)?;
    }
    Ok(())
}
