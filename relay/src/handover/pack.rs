//! What moves, packed and unpacked: the frozen workers' allocations,
//! connections and sockets as a snapshot and its descriptors, and back.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use super::snapshot::{self, ConnectionSnapshot, Snapshot, SocketRef, WorkerSnapshot};
use crate::datapath::moving::{Frozen, MovedConn};
use crate::datapath::socket::WorkerSockets;
use crate::node::{Counters, Inherited, InheritedWorker, NodeHandle};
use ip2p_turn::Held;

/// Most bytes and descriptors a new process accepts in a handover.
pub(super) const MAX_BYTES: usize = 1 << 30;
pub(super) const MAX_FDS: usize = 1 << 22;
/// How long the workers may take to stop for a handover.
const FREEZE_WITHIN: Duration = Duration::from_secs(10);

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

/// Stops the node's workers and collects what moves: the snapshot, the
/// descriptors it names, and how many allocations move (logged, with
/// those that cannot). The workers wait, frozen, until told to resume.
///
/// # Errors
/// A worker did not stop in time (the workers go on).
pub(super) fn give_up(
    node: &NodeHandle,
    nonce_secret: &[u8; 32],
    admin: Option<OwnedFd>,
) -> io::Result<(Snapshot, Vec<OwnedFd>, usize)> {
    let frozen = node
        .freeze(FREEZE_WITHIN)
        .inspect_err(|e| tracing::warn!(error = %e, "handover: workers did not stop; going on"))?;
    let (mut snapshot, fds, moved, staying) = pack(frozen, nonce_secret, admin);
    // The frozen workers still answer for their counters.
    snapshot.counters = crate::metrics::counters(node);
    snapshot.revocations = node
        .revocations()
        .live(crate::unix_now())
        .into_iter()
        .map(|(user, until)| super::snapshot::Revocation { user, until })
        .collect();
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
pub(super) fn bytes_to_send(mut snapshot: Snapshot) -> Vec<u8> {
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
    frozen: Vec<Frozen>,
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
        for m in w.export.moved {
            // Each relay socket goes as a descriptor of the transfer; an
            // allocation whose socket did not come stays.
            let relays = &mut w.relays;
            match m.try_map(|token, _| relays.remove(&token).and_then(|fd| refer(fd, &mut fds)).map(|r| r.fd).ok_or(()))
            {
                Ok(m) => allocations.push(m),
                Err(()) => staying += 1,
            }
        }
        moved += allocations.len();
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
        counters: Counters::new(),
        revocations: Vec::new(),
    };
    (snapshot, fds, moved, staying)
}

/// What a transfer holds.
pub(super) type Unpacked = (Inherited, [u8; 32], usize, String, Option<std::net::TcpListener>);

/// The sockets and allocations of a transfer, the nonce secret, how many
/// allocations, the writer's version, and the admin listener.
pub(super) fn unpack(bytes: &[u8], fds: Vec<Option<OwnedFd>>) -> io::Result<Unpacked> {
    let s = Snapshot::parse(bytes, &boot_id()).map_err(|e| invalid(e.to_string()))?;
    let elapsed = Duration::from_nanos(monotonic_ns().saturating_sub(s.taken_at_ns));
    let nonce_secret: [u8; 32] = hex::decode(&s.nonce_secret)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("malformed snapshot: nonce secret".into()))?;
    let mut transfer = Transfer(fds);
    let mut workers = Vec::new();
    let mut allocations = 0;
    for w in s.workers {
        let worker = transfer.worker(w, elapsed)?;
        allocations += worker.allocations.len();
        workers.push(worker);
    }
    if workers.is_empty() {
        return Err(invalid("a snapshot without workers".into()));
    }
    let admin =
        s.admin.as_ref().map(|r| transfer.take(r, Kind::Listener).map(std::net::TcpListener::from)).transpose()?;
    let revocations = s.revocations.into_iter().map(|r| (r.user, r.until)).collect();
    Ok((Inherited { workers, counters: s.counters, revocations }, nonce_secret, allocations, s.writer, admin))
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The descriptors of a transfer, each taken once.
struct Transfer(Vec<Option<OwnedFd>>);

/// What a descriptor of a transfer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A UDP socket (a listener or a relay socket).
    Udp,
    /// A listening TCP socket.
    Listener,
    /// A connected TCP socket.
    Connection,
}

impl Transfer {
    /// The descriptor `r` names: a socket of `kind`, bound where `r` says
    /// (and so of its address family).
    fn take(&mut self, r: &SocketRef, kind: Kind) -> io::Result<OwnedFd> {
        let fd = self
            .0
            .get_mut(r.fd)
            .and_then(Option::take)
            .ok_or_else(|| invalid(format!("descriptor {} missing", r.fd)))?;
        let socket = socket2::SockRef::from(&fd);
        let is = (socket.r#type(), socket.is_listener());
        let fits = match kind {
            Kind::Udp => matches!(is, (Ok(socket2::Type::DGRAM), _)),
            Kind::Listener => matches!(is, (Ok(socket2::Type::STREAM), Ok(true))),
            Kind::Connection => matches!(is, (Ok(socket2::Type::STREAM), Ok(false))),
        };
        if !fits {
            return Err(invalid(format!("descriptor {} is not a {kind:?} socket", r.fd)));
        }
        let addr = local_addr(&fd)?;
        if addr != r.addr {
            return Err(invalid(format!("descriptor {} is bound to {addr}, not {}", r.fd, r.addr)));
        }
        Ok(fd)
    }

    /// A worker's sockets, connections and allocations, `elapsed` after
    /// the snapshot was taken.
    fn worker(&mut self, w: WorkerSnapshot, elapsed: Duration) -> io::Result<InheritedWorker> {
        let udp = w
            .udp
            .iter()
            .map(|r| self.take(r, Kind::Udp).map(std::net::UdpSocket::from))
            .collect::<io::Result<Vec<_>>>()?;
        let streams = w.streams.iter().map(|r| self.take(r, Kind::Listener).map(std::net::TcpListener::from));
        let streams = streams.collect::<io::Result<Vec<_>>>()?;
        // Connections first: a client's allocation moves only with its
        // connection, and one that closed meanwhile is left behind.
        let conns = self.connections(&w.connections)?;
        let connected: HashSet<_> = conns.iter().map(|c| (c.state.listener, c.state.peer)).collect();
        let mut allocations = Vec::new();
        for a in w.allocations {
            let held = a.try_map(|fd, bound| {
                let socket = self.take(&SocketRef { fd, addr: bound }, Kind::Udp)?;
                Ok::<_, io::Error>(Held { addr: bound, socket: Some(std::net::UdpSocket::from(socket)) })
            })?;
            // Run out meanwhile, or its connection closed: its sockets
            // close here.
            let Some(moved) = held.aged(elapsed) else { continue };
            let stream = moved.listener.transport == ip2p_wire::Transport::Stream;
            if stream && !connected.contains(&(moved.listener.index, moved.client)) {
                continue;
            }
            allocations.push(moved);
        }
        Ok(InheritedWorker { sockets: WorkerSockets { udp, streams }, allocations, conns })
    }

    /// The client connections that are still connected to their client.
    fn connections(&mut self, connections: &[ConnectionSnapshot]) -> io::Result<Vec<MovedConn>> {
        let mut conns = Vec::new();
        for c in connections {
            let fd = match self.take(&SocketRef { fd: c.fd, addr: c.local }, Kind::Connection) {
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
        Ok(conns)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{TcpListener, UdpSocket};

    use super::*;

    /// A snapshot of one worker with `udp` as its UDP listener and
    /// `stream` as its TCP listener, descriptors 0 and 1.
    fn transfer(udp: OwnedFd, stream: OwnedFd, addr: SocketAddr) -> io::Result<Unpacked> {
        let worker = WorkerSnapshot {
            udp: vec![SocketRef { fd: 0, addr }],
            streams: vec![SocketRef { fd: 1, addr }],
            allocations: Vec::new(),
            connections: Vec::new(),
        };
        let (mut s, _, _, _) = pack(Vec::new(), &[7; 32], None);
        s.workers.push(worker);
        unpack(&s.to_bytes(), vec![Some(udp), Some(stream)])
    }

    #[test]
    fn descriptors_of_the_wrong_kind_are_refused() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).unwrap();
        let fd = |s: &dyn std::os::fd::AsFd| s.as_fd().try_clone_to_owned().unwrap();
        assert!(transfer(fd(&udp), fd(&tcp), addr).is_ok(), "the right kinds");
        let swapped = transfer(fd(&tcp), fd(&udp), addr).unwrap_err();
        assert!(swapped.to_string().contains("descriptor 0 is not a Udp socket"), "{swapped}");
        let (pipe, _writer) = nix::unistd::pipe().unwrap();
        let not_a_socket = transfer(fd(&udp), pipe, addr).unwrap_err();
        assert!(not_a_socket.to_string().contains("descriptor 1 is not a Listener socket"), "{not_a_socket}");
        let connected = std::net::TcpStream::connect(addr).unwrap();
        let connection = transfer(fd(&udp), fd(&connected), addr).unwrap_err();
        assert!(connection.to_string().contains("descriptor 1 is not a Listener socket"), "{connection}");
    }
}
