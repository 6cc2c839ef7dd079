//! One measured run: set up sessions (allocations, channels), send on the
//! open-loop schedule from several threads, receive, and summarize.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ip2p_client::Client;
use ip2p_wire::attr::{Data, XorPeerAddress};
use ip2p_wire::{
    ChannelData, Class, Message, MessageType, MessageWriter, Method, PacketKind, TransactionId, Transport, classify,
    write_channel_data,
};

use crate::engine::{Engine, Epoll, Uring};
use crate::schedule::Schedule;
use crate::stamp::{STAMP_LEN, Stamp};
use crate::stats::{Percentiles, Sequence, Summary, histogram};

/// Who talks to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Two allocations per pair, each the other's peer: both ends relayed.
    Pairs,
    /// Each allocation's peer is a UDP echo responder the bench runs.
    Echo,
    /// The same pairs traffic, client to client, with no relay: the floor.
    Direct,
    /// The same echo traffic with no relay.
    DirectEcho,
    /// The same echo traffic through a bare UDP forwarder (`ip2p-bench
    /// forward`) at `--server`, whose peer is the echo at `--echo-at`.
    ForwardedEcho,
}

/// How sessions authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A static user.
    User {
        /// Name.
        name: String,
        /// Password.
        password: String,
    },
    /// A TURN REST API secret: usernames `<expiry>:bench`.
    Secret(String),
}

impl Credentials {
    /// The username and password one session uses.
    #[must_use]
    pub fn for_session(&self) -> (String, String) {
        match self {
            Self::User { name, password } => (name.clone(), password.clone()),
            Self::Secret(secret) => {
                use hmac::{KeyInit, Mac};
                let expiry =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
                        + 24 * 3600;
                let user = format!("{expiry}:ip2p-bench");
                let password = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).map_or_else(
                    |_| String::new(),
                    |mut mac| {
                        mac.update(user.as_bytes());
                        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mac.finalize().into_bytes())
                    },
                );
                (user, password)
            }
        }
    }
}

/// How bench threads move datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineKind {
    /// epoll up to 40,000 packets/s per thread (more precise timing),
    /// io_uring above (batched), falling back to epoll without io_uring.
    #[default]
    Auto,
    /// io_uring: batched submissions, nanosecond waits.
    IoUring,
    /// epoll: a syscall per datagram.
    Epoll,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// A label for reports.
    pub label: String,
    /// The TURN server (the forwarder in `ForwardedEcho`; unused in the
    /// direct modes).
    pub server: SocketAddr,
    /// Credentials for the server.
    pub credentials: Credentials,
    /// Topology.
    pub mode: Mode,
    /// Sending sessions (in pairs modes, rounded up to an even number).
    pub sessions: usize,
    /// Packets per second, over all sessions.
    pub rate: f64,
    /// Payload bytes (at least the 24-byte stamp).
    pub size: usize,
    /// Packets per burst: each burst goes from one session to its peer at
    /// once (a video frame), bursts at `rate / burst` a second.
    pub burst: usize,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    /// Time sent but not measured, first.
    pub warmup: Duration,
    /// Sender/receiver threads.
    pub threads: usize,
    /// Send and Data indications instead of ChannelData.
    pub indications: bool,
    /// The I/O engine of the bench threads.
    pub engine: EngineKind,
    /// Where the echo responders listen (thread `i` at the port plus `i`);
    /// chosen by the OS when `None`.
    pub echo_at: Option<SocketAddr>,
    /// The network namespace (`ip netns` name) to bind the echo responders
    /// in; this process's when `None`.
    pub echo_netns: Option<String>,
}

const CHANNEL: u16 = 0x4000;
/// How long to wait for stragglers after the last packet is sent.
const GRACE: Duration = Duration::from_millis(500);
/// Keepalives for runs longer than a permission's 300 s.
const KEEPALIVE: Duration = Duration::from_secs(120);
/// Per-thread rate above which `auto` picks the io_uring engine.
const AUTO_URING_ABOVE: f64 = 40_000.0;
/// The send lag (p99, microseconds) past which a run measures the bench.
pub const MAX_VALID_LAG_US: f64 = 100.0;
/// Receive buffer asked for each echo socket.
const ECHO_BUFFER: usize = 8 << 20;
/// Most packets sent in one go before receiving again.
const SEND_BURST: u64 = 64;

/// One sending and receiving endpoint.
struct Session {
    id: u32,
    socket: UdpSocket,
    /// Where packets go: the server (relayed) or the peer (direct).
    to: SocketAddr,
    /// The packet as sent, with the stamp at `stamp_at`.
    packet: Vec<u8>,
    stamp_at: usize,
    seq: u64,
    client: Option<Client>,
    /// The peer the keepalives name.
    peer: SocketAddr,
}

fn relayed(mode: Mode) -> bool {
    matches!(mode, Mode::Pairs | Mode::Echo)
}

/// The packet a session sends: ChannelData or a Send indication around the
/// payload (relayed), or the bare payload (direct).
fn template(cfg: &RunConfig, peer: SocketAddr) -> (Vec<u8>, usize) {
    let payload = vec![0u8; cfg.size.max(STAMP_LEN)];
    if !relayed(cfg.mode) {
        return (payload, 0);
    }
    let mut out = vec![0u8; payload.len() + 64];
    if cfg.indications {
        let typ = MessageType::new(Method::SEND, Class::Indication);
        let Ok(mut w) = MessageWriter::new(&mut out, typ, TransactionId([0; 12])) else { return (Vec::new(), 0) };
        if w.add(&XorPeerAddress(peer)).is_err() || w.add(&Data(&payload)).is_err() {
            return (Vec::new(), 0);
        }
        let len = w.finish();
        out.truncate(len);
        // DATA is the last attribute: its value, then up to 3 padding bytes.
        let at = len - ip2p_wire::pad4(payload.len());
        (out, at)
    } else {
        let len = write_channel_data(&mut out, CHANNEL, &payload, Transport::Datagram).unwrap_or(0);
        out.truncate(len);
        (out, 4)
    }
}

/// A client with an allocation. A 437 means the server still holds an
/// allocation for this 5-tuple: the OS gave the new socket the port of an
/// earlier run's client whose deletion the server did not take (coturn has
/// answered so). Another socket, another port, tried a few times.
fn allocate(server: SocketAddr, user: &str, password: &str) -> io::Result<(Client, SocketAddr)> {
    let mut tries = 0;
    loop {
        let mut c = Client::new(server, user, password)?;
        match c.allocate(None) {
            Ok(relayed) => return Ok((c, relayed)),
            Err(e) if e.code() == Some(437) && tries < 3 => tries += 1,
            Err(e) => return Err(io::Error::other(format!("allocate: {e}"))),
        }
    }
}

/// Sets up the sessions: allocations and channels (or permissions) for
/// the relayed modes, plain sockets for the direct ones. In the echo
/// modes, session `i`'s peer is `echoes[i % threads]`, served by the thread
/// that runs session `i`.
fn sessions(cfg: &RunConfig, echoes: &[SocketAddr]) -> io::Result<Vec<Session>> {
    let pairs = matches!(cfg.mode, Mode::Pairs | Mode::Direct);
    let n = if pairs { cfg.sessions.max(2).div_ceil(2) * 2 } else { cfg.sessions.max(1) };
    let mut sockets = Vec::new();
    let mut clients = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..n {
        if relayed(cfg.mode) {
            let (user, password) = cfg.credentials.for_session();
            let (c, relayed) = allocate(cfg.server, &user, &password)?;
            addrs.push(relayed);
            clients.push(Some(c));
        } else {
            // Pairs talk to each other's address on loopback; an echo may
            // be on another host, so the route picks the source there.
            let s = UdpSocket::bind(if pairs { "127.0.0.1:0" } else { "0.0.0.0:0" })?;
            addrs.push(s.local_addr()?);
            sockets.push(Some(s));
            clients.push(None);
        }
    }
    let mut out = Vec::new();
    for i in 0..n {
        let peer = if pairs { addrs.get(i ^ 1).copied() } else { echoes.get(i % echoes.len().max(1)).copied() }
            .ok_or_else(|| io::Error::other("no peer for a session"))?;
        let mut client = clients.get_mut(i).and_then(Option::take);
        if let Some(c) = &mut client {
            let r = if cfg.indications { c.create_permission(&[peer]) } else { c.channel_bind(CHANNEL, peer) };
            r.map_err(|e| io::Error::other(format!("permission/channel: {e}")))?;
        }
        let socket = match &client {
            Some(c) => c.socket().ok_or_else(|| io::Error::other("a UDP client"))?.try_clone()?,
            None => sockets.get_mut(i).and_then(Option::take).ok_or_else(|| io::Error::other("socket"))?,
        };
        socket.set_nonblocking(true)?;
        let to = if matches!(cfg.mode, Mode::Pairs | Mode::Echo | Mode::ForwardedEcho) { cfg.server } else { peer };
        let (packet, stamp_at) = template(cfg, peer);
        out.push(Session {
            id: u32::try_from(i).unwrap_or(u32::MAX),
            socket,
            to,
            packet,
            stamp_at,
            seq: 0,
            client,
            peer,
        });
    }
    Ok(out)
}

/// What one thread measured.
struct Measured {
    sent: HashMap<u32, u64>,
    received: HashMap<u32, Sequence>,
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    errors: u64,
}

/// Extracts the payload of a received datagram.
fn payload(relayed: bool, bytes: &[u8]) -> Option<&[u8]> {
    if !relayed {
        return Some(bytes);
    }
    match classify(bytes) {
        PacketKind::ChannelData => ChannelData::parse(bytes).ok().map(|cd| cd.data()),
        PacketKind::Stun => {
            let msg = Message::parse(bytes).ok()?;
            match msg.get::<Data>() {
                Ok(Some(Data(d))) if msg.method() == Method::DATA => Some(d),
                _ => None,
            }
        }
        PacketKind::Other => None,
    }
}

/// How often a run longer than [`PROGRESS_FROM`] prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const PROGRESS_FROM: Duration = Duration::from_secs(10);

/// Counts the threads publish about once a second, for progress lines.
#[derive(Debug, Default)]
struct Progress {
    sent: std::sync::atomic::AtomicU64,
    received: std::sync::atomic::AtomicU64,
}

#[allow(clippy::too_many_lines)]
fn thread_loop(
    cfg: &RunConfig,
    mut sessions: Vec<Session>,
    echo: Option<UdpSocket>,
    start: Instant,
    stop: &AtomicBool,
    progress: (&Progress, bool),
) -> io::Result<Measured> {
    let (shared, reporter) = progress;
    let (mut published_sent, mut published_received) = (0u64, 0u64);
    let (mut total_sent, mut total_received) = (0u64, 0u64);
    let mut next_publish = start + Duration::from_secs(1);
    let mut next_report = start + PROGRESS_EVERY;
    let report = reporter && cfg.warmup + cfg.duration >= PROGRESS_FROM;
    let relayed = relayed(cfg.mode);
    let threads = cfg.threads.max(1) as f64;
    let total = cfg.warmup + cfg.duration;
    let mut schedule = Schedule::bursts(cfg.rate / threads, cfg.burst.max(1) as u64, total);
    let warmup_ns = u64::try_from(cfg.warmup.as_nanos()).unwrap_or(u64::MAX);
    let sockets: Vec<&UdpSocket> = sessions.iter().map(|s| &s.socket).collect();
    let max_len = sessions.iter().map(|s| s.packet.len()).max().unwrap_or(0) + 128;
    let mut engine: Box<dyn Engine> = match cfg.engine {
        EngineKind::IoUring => Box::new(Uring::new(&sockets, echo, max_len)?),
        EngineKind::Epoll => Box::new(Epoll::new(&sockets, echo)?),
        EngineKind::Auto if cfg.rate / threads <= AUTO_URING_ABOVE => Box::new(Epoll::new(&sockets, echo)?),
        EngineKind::Auto => {
            let echo2 = echo.as_ref().map(UdpSocket::try_clone).transpose()?;
            match Uring::new(&sockets, echo, max_len) {
                Ok(u) => Box::new(u),
                Err(_) => Box::new(Epoll::new(&sockets, echo2)?),
            }
        }
    };
    drop(sockets);
    let mut m =
        Measured { sent: HashMap::new(), received: HashMap::new(), latency: histogram(), lag: histogram(), errors: 0 };
    let mut next_keepalive = start + KEEPALIVE;
    let n = sessions.len().max(1) as u64;
    let mut done_at: Option<Instant> = None;
    loop {
        let elapsed = start.elapsed();
        let elapsed_ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        for k in schedule.take_due(elapsed_ns, SEND_BURST) {
            let due = schedule.due_ns(k);
            let session = (schedule.burst_of(k) % n) as usize;
            let Some(s) = sessions.get_mut(session) else { continue };
            let stamp = Stamp { session: s.id, seq: s.seq, intended_ns: due };
            s.seq += 1;
            if let Some(p) = s.packet.get_mut(s.stamp_at..) {
                stamp.write(p);
            }
            let now_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            m.lag.saturating_record(now_ns.saturating_sub(due).max(1));
            if !engine.send(session, &s.packet, s.to) {
                m.errors += 1;
            }
            if due >= warmup_ns {
                *m.sent.entry(s.id).or_default() += 1;
                total_sent += 1;
            }
        }
        if schedule.finished() && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() > GRACE) || stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if now >= next_publish {
            next_publish += Duration::from_secs(1);
            shared.sent.fetch_add(total_sent - published_sent, Ordering::Relaxed);
            shared.received.fetch_add(total_received - published_received, Ordering::Relaxed);
            (published_sent, published_received) = (total_sent, total_received);
        }
        if report && now >= next_report {
            next_report += PROGRESS_EVERY;
            eprintln!(
                "  {:>5.0} s: sent {}, received {} (after warm-up)",
                start.elapsed().as_secs_f64(),
                shared.sent.load(Ordering::Relaxed),
                shared.received.load(Ordering::Relaxed)
            );
        }
        if now >= next_keepalive {
            next_keepalive += KEEPALIVE;
            for s in &mut sessions {
                let channel = (!cfg.indications).then_some(CHANNEL);
                if let Some(c) = &mut s.client {
                    let _ = c.send_keepalives(channel, s.peer);
                }
            }
        }
        let wait = schedule.next_due_ns().map_or(Duration::from_millis(10), |due| {
            Duration::from_nanos(due.saturating_sub(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)))
        });
        engine.wait(wait.min(Duration::from_millis(10)), &mut |i, bytes| {
            let received_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match payload(relayed, bytes).and_then(Stamp::read) {
                Some(stamp) if stamp.intended_ns >= warmup_ns => {
                    total_received += 1;
                    m.latency.saturating_record(received_ns.saturating_sub(stamp.intended_ns).max(1));
                    m.received.entry(stamp.session).or_default().record(stamp.seq);
                }
                Some(_) => {}
                None => {
                    // A STUN answer (keepalives): note a new nonce.
                    if let (Some(Some(c)), Ok(msg)) =
                        (sessions.get_mut(i).map(|s| &mut s.client), Message::parse(bytes))
                        && c.absorb(&msg).is_some_and(|code| code != 438)
                    {
                        m.errors += 1;
                    }
                }
            }
        })?;
    }
    // Leave cleanly: delete the allocations.
    for s in &mut sessions {
        if let Some(c) = &mut s.client {
            if let Some(socket) = c.socket() {
                let _ = socket.set_nonblocking(false);
            }
            let _ = c.refresh(Some(0));
        }
    }
    Ok(m)
}

/// Binds `at`, waiting up to 2 s while it is in use: an io_uring engine's
/// socket outlives its ring's drop for a moment (the kernel tears rings
/// down asynchronously), and `--echo-at` binds the same port every run.
fn bind_again(at: SocketAddr) -> io::Result<UdpSocket> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        match UdpSocket::bind(at) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && at.port() != 0 && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (a
/// socket it opens stays there, and works from any thread).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

/// Runs one measurement. `stop` ends it early (Ctrl-C); what was measured
/// until then is still reported.
///
/// # Errors
/// Setup failed (the server refused an allocation, a socket error...).
pub fn run(cfg: &RunConfig, stop: &Arc<AtomicBool>) -> io::Result<(Summary, Histogram<u64>)> {
    let threads = cfg.threads.max(1).min(cfg.sessions.max(1));
    let mut echoes = Vec::new();
    if matches!(cfg.mode, Mode::Echo | Mode::DirectEcho | Mode::ForwardedEcho) {
        for i in 0..threads {
            // 127.0.0.2 by default: a relay refuses its own host's
            // addresses (127.0.0.1) as peers.
            let at = cfg.echo_at.map_or_else(
                || SocketAddr::from(([127, 0, 0, 2], 0)),
                |a| SocketAddr::new(a.ip(), a.port().saturating_add(u16::try_from(i).unwrap_or(u16::MAX))),
            );
            let e = match &cfg.echo_netns {
                Some(ns) => in_netns(ns, move || bind_again(at))?,
                None => bind_again(at)?,
            };
            e.set_nonblocking(true)?;
            // Every session's traffic arrives on this one socket: with the
            // default buffer (~90 datagrams of 1200 B) a stall of the bench
            // of 2 ms at 50k pkt/s loses packets, which would be charged to
            // the server. Best effort: the kernel caps it at rmem_max.
            let _ = socket2::SockRef::from(&e).set_recv_buffer_size(ECHO_BUFFER);
            echoes.push(e);
        }
    }
    let echo_addrs = echoes.iter().map(UdpSocket::local_addr).collect::<io::Result<Vec<_>>>()?;
    let all = sessions(cfg, &echo_addrs)?;
    let mut echoes = echoes.into_iter();
    let mut groups: Vec<Vec<Session>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in all.into_iter().enumerate() {
        if let Some(g) = groups.get_mut(i % threads) {
            g.push(s);
        }
    }
    let cfg = RunConfig { threads, ..cfg.clone() };
    let start = Instant::now();
    let progress = Progress::default();
    let results: Vec<io::Result<Measured>> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(i, g)| {
                let (cfg, stop, echo, progress) = (&cfg, &**stop, echoes.next(), &progress);
                scope.spawn(move || thread_loop(cfg, g, echo, start, stop, (progress, i == 0)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("bench thread panicked"))))
            .collect()
    });
    let measured_for = start.elapsed().saturating_sub(cfg.warmup).saturating_sub(GRACE);
    let mut latency = histogram();
    let mut lag = histogram();
    let (mut sent, mut unique, mut duplicates, mut reordered) = (0u64, 0u64, 0u64, 0u64);
    for r in results {
        let m = r?;
        latency.add(&m.latency).map_err(io::Error::other)?;
        lag.add(&m.lag).map_err(io::Error::other)?;
        sent += m.sent.values().sum::<u64>();
        for seq in m.received.values() {
            unique += seq.unique;
            duplicates += seq.duplicates;
            reordered += seq.reordered;
        }
    }
    let lost = sent.saturating_sub(unique);
    let secs = measured_for.as_secs_f64().max(1e-9);
    let lag_p99 = lag.value_at_quantile(0.99) as f64 / 1000.0;
    let summary = Summary {
        label: cfg.label.clone(),
        sent,
        received: unique,
        lost,
        loss_percent: if sent == 0 { 0.0 } else { 100.0 * lost as f64 / sent as f64 },
        duplicates,
        reordered,
        packets_per_second: unique as f64 / secs,
        mbit_per_second: unique as f64 * cfg.size.max(STAMP_LEN) as f64 * 8.0 / secs / 1e6,
        latency_us: Percentiles::of(&latency),
        send_lag_p50_us: lag.value_at_quantile(0.5) as f64 / 1000.0,
        send_lag_p99_us: lag_p99,
        send_lag_max_us: lag.max() as f64 / 1000.0,
        // Latency counts from when a packet was due: a bench late by more
        // than a relay's own latency (tens of microseconds) would measure
        // itself, so a p99 lag past 100 us makes the run invalid.
        valid: lag_p99 < MAX_VALID_LAG_US && sent > 0,
    };
    Ok((summary, latency))
}
