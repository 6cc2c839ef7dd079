//! Handing a running node over to a new process of the relay (an upgrade
//! without dropping calls). The new process asks at the old one's handover
//! socket (`handover.socket`, a Unix socket of type SOCK_SEQPACKET); the
//! old one stops its workers taking packets, sends its sockets as
//! descriptors (SCM_RIGHTS) with a versioned snapshot of its allocations,
//! and exits once the new one says it serves, or goes on if it does not.
//! Packets that arrive meanwhile wait in the sockets' receive queues.

pub mod fdstore;
pub(crate) mod snapshot;
pub(crate) mod transfer;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
use serde::{Deserialize, Serialize};

use self::snapshot::{AllocationSnapshot, ConnectionSnapshot, Snapshot, SocketRef, WorkerSnapshot};
use crate::datapath::socket::WorkerSockets;
use crate::datapath::stream::MovedConn;
use crate::node::{Inherited, InheritedWorker, NodeHandle};
use crate::proto::Held;

/// How long either side waits for the other at each step.
const STEP: Duration = Duration::from_secs(10);
/// How long the old process waits for the new one to start its workers.
const START: Duration = Duration::from_secs(30);
/// Most bytes and descriptors a new process accepts in a handover.
const MAX_BYTES: usize = 1 << 30;
const MAX_FDS: usize = 1 << 22;

/// What the new process says first, and last.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    /// "Hand over to me": the latest snapshot version it reads.
    TakeOver { reads: u32 },
    /// It serves now: the old process may go.
    Ready,
    /// It could not take over: the old process goes on.
    Failed { why: String },
}

fn send_message(conn: BorrowedFd<'_>, m: &Message) -> io::Result<()> {
    transfer::send(conn, &serde_json::to_vec(m).unwrap_or_default(), &[])
}

fn recv_message(conn: BorrowedFd<'_>) -> io::Result<Message> {
    let (bytes, _) = transfer::recv(conn, 64 * 1024, 0)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn timeouts(conn: BorrowedFd<'_>, wait: Duration) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(
        i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        i64::from(wait.subsec_micros()),
    );
    sock::setsockopt(&conn, sock::sockopt::ReceiveTimeout, &tv)?;
    sock::setsockopt(&conn, sock::sockopt::SendTimeout, &tv)?;
    Ok(())
}

/// The Unix socket a running process takes handover requests on, at
/// `path` (a stale file there is replaced), for its owner only.
///
/// # Errors
/// The socket cannot be made or bound there.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let fd = sock::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    sock::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    // For the owner alone before it listens: no one else ever connects.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    sock::listen(&fd, sock::Backlog::new(4)?)?;
    Ok(fd)
}

/// The boot this process runs in: a snapshot's clock means nothing in
/// another. (`IP2P_TEST_BOOT_ID` stands in for it in the tests of a
/// refused snapshot.)
fn boot_id() -> String {
    if let Ok(id) = std::env::var("IP2P_TEST_BOOT_ID") {
        return id;
    }
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0).saturating_mul(1_000_000_000)
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    socket2::SockRef::from(fd)
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("a socket without an IP address"))
}

/// Serves one handover request waiting on `listener`: stops the node's
/// workers, sends the new process the sockets and the allocations, and
/// waits for it to say it serves. `Ok(Some(pid))`: it does (process
/// `pid`), and this process is to exit at once (no drain: the sockets are
/// the new process's now). `Ok(None)`: it did not; the workers go on as
/// before.
///
/// # Errors
/// No request could be accepted.
pub fn serve_one(
    listener: BorrowedFd<'_>,
    node: &NodeHandle,
    nonce_secret: &[u8; 32],
    admin: Option<BorrowedFd<'_>>,
) -> io::Result<Option<u32>> {
    let conn = sock::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) };
    let peer = sock::getsockopt(&conn, sock::sockopt::PeerCredentials)?;
    let pid = u32::try_from(peer.pid()).unwrap_or(0);
    timeouts(conn.as_fd(), STEP)?;
    let reads = match recv_message(conn.as_fd()) {
        Ok(Message::TakeOver { reads }) => reads,
        Ok(other) => {
            tracing::warn!(?other, "handover: not a request to take over; ignored");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(error = %e, "handover: no request came; ignored");
            return Ok(None);
        }
    };
    if reads < snapshot::VERSION {
        let why = format!("it reads snapshot version {reads}, this process writes {}", snapshot::VERSION);
        tracing::warn!(%why, "handover refused");
        let _ = send_message(conn.as_fd(), &Message::Failed { why });
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let (snapshot, fds, moved) = match give_up(node, nonce_secret, admin) {
        Ok(given) => given,
        Err(e) => {
            let _ = send_message(conn.as_fd(), &Message::Failed { why: e.to_string() });
            return Ok(None);
        }
    };
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let answer = transfer::send(conn.as_fd(), &bytes_to_send(snapshot), &borrowed)
        .and_then(|()| timeouts(conn.as_fd(), START))
        .and_then(|()| recv_message(conn.as_fd()));
    match answer {
        Ok(Message::Ready) => {
            let paused_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(allocations = moved, paused_ms, pid, "handover: the new process serves; exiting");
            Ok(Some(pid))
        }
        other => {
            let why = match other {
                Ok(Message::Failed { why }) => why,
                Ok(m) => format!("unexpected answer {m:?}"),
                Err(e) => e.to_string(),
            };
            tracing::warn!(%why, "handover: the new process did not take over; going on");
            node.resume();
            Ok(None)
        }
    }
}

/// Stops the node's workers and collects what moves: the snapshot, the
/// descriptors it names, and how many allocations move (logged, with
/// those that cannot). The workers wait, frozen, until told to resume.
///
/// # Errors
/// A worker did not stop in time (the workers go on).
fn give_up(
    node: &NodeHandle,
    nonce_secret: &[u8; 32],
    admin: Option<BorrowedFd<'_>>,
) -> io::Result<(Snapshot, Vec<OwnedFd>, usize)> {
    let frozen =
        node.freeze(STEP).inspect_err(|e| tracing::warn!(error = %e, "handover: workers did not stop; going on"))?;
    let admin = admin.and_then(|fd| fd.try_clone_to_owned().ok());
    let (mut snapshot, fds, moved, staying) = pack(frozen, nonce_secret, admin);
    // The frozen workers still answer for their counters.
    snapshot.counters = crate::metrics::counters(node);
    tracing::info!(allocations = moved, descriptors = fds.len(), "handover: handing over");
    if staying > 0 {
        // A TLS session cannot move, nor RFC 6062's peer connections: they
        // end with this process, and their clients allocate again.
        tracing::warn!(
            allocations = staying,
            "handover: allocations of TLS clients and TCP allocations (RFC 6062) do not move and end here"
        );
    }
    Ok((snapshot, fds, moved))
}

/// The snapshot's bytes. (`IP2P_TEST_MANGLE_SNAPSHOT` stands in for a
/// snapshot damaged on the way, `truncate`, or written by a later
/// version of the format, `future`, in the tests of a refused one.)
fn bytes_to_send(mut snapshot: Snapshot) -> Vec<u8> {
    match std::env::var("IP2P_TEST_MANGLE_SNAPSHOT").as_deref() {
        Ok("future") => {
            snapshot.version += 1;
            snapshot.to_bytes()
        }
        Ok("truncate") => {
            let mut bytes = snapshot.to_bytes();
            bytes.truncate(bytes.len() / 2);
            bytes
        }
        _ => snapshot.to_bytes(),
    }
}

/// The snapshot of what the workers gave up, and the descriptors it
/// names; with how many allocations move and how many stay.
fn pack(
    frozen: Vec<crate::datapath::Frozen>,
    nonce_secret: &[u8; 32],
    admin: Option<OwnedFd>,
) -> (Snapshot, Vec<OwnedFd>, usize, usize) {
    let mut fds = Vec::new();
    let (mut moved, mut staying) = (0, 0);
    let refer = |fd: OwnedFd, fds: &mut Vec<OwnedFd>| {
        let addr = local_addr(&fd).ok()?;
        fds.push(fd);
        Some(SocketRef { fd: fds.len() - 1, addr })
    };
    let mut workers = Vec::new();
    for mut w in frozen {
        let udp = w.udp.into_iter().filter_map(|fd| refer(fd, &mut fds)).collect();
        let streams = w.streams.into_iter().filter_map(|fd| refer(fd, &mut fds)).collect();
        staying += w.export.staying;
        let mut allocations = Vec::new();
        for (m, tokens) in w.export.moved {
            let mut refs = [None, None];
            for (r, token) in refs.iter_mut().zip(tokens) {
                *r = token.and_then(|t| w.relays.remove(&t)).and_then(|fd| refer(fd, &mut fds)).map(|s| s.fd);
            }
            if refs.iter().zip(&m.relays).any(|(r, relay)| r.is_none() && relay.is_some()) {
                staying += 1;
                continue;
            }
            moved += 1;
            allocations.push(AllocationSnapshot::new(&m, refs));
        }
        let mut connections = Vec::new();
        for MovedConn { fd, state } in w.conns {
            if let Ok(local) = local_addr(&fd) {
                fds.push(fd);
                connections.push(ConnectionSnapshot::new(&state, fds.len() - 1, local));
            }
        }
        workers.push(WorkerSnapshot { udp, streams, allocations, connections });
    }
    let admin = admin.and_then(|fd| refer(fd, &mut fds));
    let snapshot = Snapshot {
        admin,
        version: snapshot::VERSION,
        writer: crate::VERSION.to_owned(),
        boot_id: boot_id(),
        taken_at_ns: monotonic_ns(),
        nonce_secret: hex::encode(nonce_secret),
        workers,
        counters: crate::node::Counters::new(),
    };
    (snapshot, fds, moved, staying)
}

/// What a new process got from the old one.
#[derive(Debug)]
pub struct TakenOver {
    /// The connection to the old process, for [`TakenOver::report`].
    conn: Option<OwnedFd>,
    /// Or the names of what systemd's file descriptor store held, removed
    /// from it by [`TakenOver::report`].
    stored: Vec<String>,
    pub(crate) inherited: Inherited,
    /// The old process's nonce secret.
    pub nonce_secret: [u8; 32],
    /// The listen addresses (UDP and TCP) as the old process had them.
    pub listen: Vec<SocketAddr>,
    /// Its TLS addresses.
    pub tls_listen: Vec<SocketAddr>,
    /// Allocations taken over.
    pub allocations: usize,
    /// The old process's admin HTTP listener, if it had one.
    pub admin: Option<std::net::TcpListener>,
    /// The old process's ip2p version.
    pub writer: String,
}

/// Asks the process listening at `path` to hand its node over, and takes
/// its sockets and allocations. On failure the old process is told (it
/// goes on serving).
///
/// # Errors
/// Nothing listens there, or what came is not a usable handover (another
/// boot, a later snapshot version, malformed, sockets missing).
pub fn take_over(path: &Path) -> io::Result<TakenOver> {
    let conn = sock::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    sock::connect(conn.as_raw_fd(), &UnixAddr::new(path)?)?;
    timeouts(conn.as_fd(), STEP)?;
    send_message(conn.as_fd(), &Message::TakeOver { reads: snapshot::VERSION })?;
    let (bytes, fds) = transfer::recv(conn.as_fd(), MAX_BYTES, MAX_FDS)?;
    if std::env::var_os("IP2P_TEST_DIE_IN_HANDOVER").is_some() {
        // The tests' stand-in for a new process that crashes here.
        std::process::exit(70);
    }
    match unpack(&bytes, fds.into_iter().map(Some).collect()) {
        Ok(unpacked) => Ok(TakenOver::new(Some(conn), Vec::new(), unpacked)),
        Err(e) => {
            let _ = send_message(conn.as_fd(), &Message::Failed { why: e.to_string() });
            Err(e)
        }
    }
}

impl TakenOver {
    fn new(conn: Option<OwnedFd>, stored: Vec<String>, unpacked: Unpacked) -> Self {
        let (inherited, nonce_secret, allocations, writer, admin) = unpacked;
        let first = inherited.workers.first().map(|w| &w.sockets);
        let listen: Vec<SocketAddr> =
            first.map(|w| w.udp.iter().filter_map(|s| s.local_addr().ok()).collect()).unwrap_or_default();
        let tls_listen = first
            .map(|w| w.streams.iter().skip(listen.len()).filter_map(|s| s.local_addr().ok()).collect())
            .unwrap_or_default();
        Self { conn, stored, inherited, nonce_secret, listen, tls_listen, allocations, admin, writer }
    }

    /// Starts the node on what was taken over. The old process's workers,
    /// listen addresses and (unless one is configured) nonce secret win
    /// over the configuration's: its clients are on them.
    ///
    /// # Errors
    /// As [`crate::node::start`].
    pub fn start(&mut self, settings: &mut crate::config::Settings) -> io::Result<crate::node::Node> {
        let workers = std::mem::take(&mut self.inherited.workers);
        if settings.workers != workers.len() || settings.listen != self.listen || settings.tls_listen != self.tls_listen
        {
            tracing::info!(
                workers = workers.len(),
                listen = ?self.listen,
                tls = ?self.tls_listen,
                "taking over the previous process's workers and listeners (the configuration's differ)"
            );
        }
        settings.workers = workers.len();
        settings.listen.clone_from(&self.listen);
        settings.tls_listen.clone_from(&self.tls_listen);
        if settings.nonce_secret_generated {
            settings.proto.credentials.nonce_secret = self.nonce_secret;
        } else if settings.proto.credentials.nonce_secret != self.nonce_secret {
            tracing::warn!("auth.nonce_secret changed: clients get a new nonce (438) at their next request");
        }
        let counters = std::mem::take(&mut self.inherited.counters);
        crate::node::start_with(settings, Some(Inherited { workers, counters }))
    }

    /// Tells the old process whether this one serves now (it exits) or
    /// not (it goes on).
    ///
    /// # Errors
    /// The old process is gone.
    pub fn report(self, started: Result<(), &str>) -> io::Result<()> {
        // systemd's store lets go of its copies either way: they would
        // keep the sockets open, and a later start must not find them.
        fdstore::remove(&self.stored);
        let Some(conn) = &self.conn else { return Ok(()) };
        let m = match started {
            Ok(()) => Message::Ready,
            Err(why) => Message::Failed { why: why.to_owned() },
        };
        send_message(conn.as_fd(), &m)
    }
}

/// What a transfer holds.
type Unpacked = (Inherited, [u8; 32], usize, String, Option<std::net::TcpListener>);

/// The sockets and allocations of a transfer, the nonce secret, how many
/// allocations, the writer's version, and the admin listener.
fn unpack(bytes: &[u8], mut fds: Vec<Option<OwnedFd>>) -> io::Result<Unpacked> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let s = Snapshot::parse(bytes, &boot_id()).map_err(|e| invalid(e.to_string()))?;
    let elapsed = Duration::from_nanos(monotonic_ns().saturating_sub(s.taken_at_ns));
    let nonce_secret: [u8; 32] = hex::decode(&s.nonce_secret)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("malformed snapshot: nonce secret".into()))?;
    // Each descriptor once, bound where the snapshot says.
    let mut take = |r: &SocketRef| -> io::Result<OwnedFd> {
        let fd =
            fds.get_mut(r.fd).and_then(Option::take).ok_or_else(|| invalid(format!("descriptor {} missing", r.fd)))?;
        let addr = local_addr(&fd)?;
        if addr != r.addr {
            return Err(invalid(format!("descriptor {} is bound to {addr}, not {}", r.fd, r.addr)));
        }
        Ok(fd)
    };
    let mut workers = Vec::new();
    let mut allocations = 0;
    for w in &s.workers {
        let udp = w.udp.iter().map(|r| take(r).map(std::net::UdpSocket::from)).collect::<io::Result<Vec<_>>>()?;
        let streams =
            w.streams.iter().map(|r| take(r).map(std::net::TcpListener::from)).collect::<io::Result<Vec<_>>>()?;
        // Connections first: a client's allocation moves only with its
        // connection, and one that closed meanwhile is left behind.
        let mut conns = Vec::new();
        for c in &w.connections {
            let fd = take(&SocketRef { fd: c.fd, addr: c.local });
            let fd = match fd {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(e),
                Err(_) => continue,
            };
            match socket2::SockRef::from(&fd).peer_addr().map(|a| a.as_socket()) {
                Ok(Some(peer)) if peer == c.peer => {}
                Ok(_) => return Err(invalid(format!("descriptor {} is not connected to {}", c.fd, c.peer))),
                // Closed by its client meanwhile.
                Err(_) => continue,
            }
            conns.push(MovedConn { fd, state: c.state().map_err(|e| invalid(e.to_string()))? });
        }
        let connected: std::collections::HashSet<_> = conns.iter().map(|c| (c.state.listener, c.state.peer)).collect();
        let mut adopted = Vec::new();
        for a in &w.allocations {
            let mut held = [None, None];
            for (h, r) in held.iter_mut().zip(&a.relays) {
                if let Some(r) = r {
                    let fd = take(&SocketRef { fd: r.fd, addr: r.bound })?;
                    *h = Some(Held { addr: r.bound, socket: Some(std::net::UdpSocket::from(fd)) });
                }
            }
            // Run out meanwhile, or its connection closed: its sockets
            // close here.
            let Some(moved) = a.moved(elapsed).map_err(|e| invalid(e.to_string()))? else { continue };
            let stream = moved.listener.transport == ip2p_wire::Transport::Stream;
            if stream && !connected.contains(&(moved.listener.index, moved.client)) {
                continue;
            }
            allocations += 1;
            adopted.push((moved, held));
        }
        let sockets = WorkerSockets { udp, streams };
        workers.push(InheritedWorker { sockets, allocations: adopted, conns });
    }
    if workers.is_empty() {
        return Err(invalid("a snapshot without workers".into()));
    }
    let admin = s.admin.as_ref().map(|r| take(r).map(std::net::TcpListener::from)).transpose()?;
    Ok((Inherited { workers, counters: s.counters }, nonce_secret, allocations, s.writer, admin))
}
