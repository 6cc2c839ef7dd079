//! The handover's conversation over a Unix socket (SOCK_SEQPACKET): the
//! new process asks the old one to hand over ([`ask`]), the old one
//! takes the request ([`accept`]), checks who asks, freezes its workers
//! and sends its sockets with the snapshot ([`serve`], on a thread of its
//! own), and the new one says whether it serves ([`tell`]). Each end
//! deals only with a process of its own user or root.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, UnixAddr};
use serde::{Deserialize, Serialize};

use super::pack::{MAX_BYTES, MAX_FDS, Unpacked, bytes_to_send, give_up, unpack};
use super::{snapshot, transfer};
use crate::node::NodeHandle;

/// How long either side waits for the other at each step.
const STEP: Duration = Duration::from_secs(10);
/// How long the old process waits for the new one to start its workers.
const START: Duration = Duration::from_secs(30);

/// What the new process says first, and last.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Message {
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
    parse_message(&bytes)
}

/// A message of the counterpart's.
pub(crate) fn parse_message(bytes: &[u8]) -> io::Result<Message> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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

/// The process at the other end of `conn`, if it runs as this process's
/// user or as root: only such a process may give this one its sockets or
/// take them (the socket file is the owner's alone; this is the second
/// wall, against a file made reachable by mistake).
fn trusted_peer(conn: BorrowedFd<'_>) -> io::Result<u32> {
    let peer = sock::getsockopt(&conn, sock::sockopt::PeerCredentials)?;
    let me = nix::unistd::geteuid().as_raw();
    if peer.uid() != me && peer.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the process at the other end (pid {}) runs as uid {}, not {me} or root", peer.pid(), peer.uid()),
        ));
    }
    Ok(u32::try_from(peer.pid()).unwrap_or(0))
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

/// Takes the handover request waiting on `listener`: its connection,
/// for [`serve`].
///
/// # Errors
/// No request could be accepted.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let conn = sock::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(conn) })
}

/// Serves the handover request on `conn` (blocking: each step waits
/// 10 s at most, the new process's start 30 s): stops the node's
/// workers, sends the new process the sockets and the allocations, and
/// waits for it to say it serves. `Some(pid)`: it does (process `pid`),
/// and this process is to exit at once (no drain: the sockets are the new
/// process's now). `None`: it did not, or was refused; the workers go on
/// as before.
pub fn serve(conn: &OwnedFd, node: &NodeHandle, nonce_secret: &[u8; 32], admin: Option<OwnedFd>) -> Option<u32> {
    let pid = match trusted_peer(conn.as_fd()) {
        Ok(pid) => pid,
        Err(e) => {
            tracing::warn!(error = %e, "handover refused");
            return None;
        }
    };
    if let Err(e) = timeouts(conn.as_fd(), STEP) {
        tracing::warn!(error = %e, "handover: cannot set the connection's timeouts; ignored");
        return None;
    }
    let reads = match recv_message(conn.as_fd()) {
        Ok(Message::TakeOver { reads }) => reads,
        Ok(other) => {
            tracing::warn!(?other, "handover: not a request to take over; ignored");
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "handover: no request came; ignored");
            return None;
        }
    };
    if reads < snapshot::VERSION {
        let why = format!("it reads snapshot version {reads}, this process writes {}", snapshot::VERSION);
        tracing::warn!(%why, "handover refused");
        let _ = send_message(conn.as_fd(), &Message::Failed { why });
        return None;
    }
    hand_over(conn.as_fd(), node, nonce_secret, admin, pid)
}

/// The handover itself, once asked for: freeze, send, wait for the word.
fn hand_over(
    conn: BorrowedFd<'_>,
    node: &NodeHandle,
    nonce_secret: &[u8; 32],
    admin: Option<OwnedFd>,
    pid: u32,
) -> Option<u32> {
    let started = std::time::Instant::now();
    let (snapshot, fds, moved) = match give_up(node, nonce_secret, admin) {
        Ok(given) => given,
        Err(e) => {
            let _ = send_message(conn, &Message::Failed { why: e.to_string() });
            return None;
        }
    };
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let answer = transfer::send(conn, &bytes_to_send(snapshot), &borrowed)
        .and_then(|()| timeouts(conn, START))
        .and_then(|()| recv_message(conn));
    match answer {
        Ok(Message::Ready) => {
            let paused_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::info!(allocations = moved, paused_ms, pid, "handover: the new process serves; exiting");
            Some(pid)
        }
        other => {
            let why = match other {
                Ok(Message::Failed { why }) => why,
                Ok(m) => format!("unexpected answer {m:?}"),
                Err(e) => e.to_string(),
            };
            tracing::warn!(%why, "handover: the new process did not take over; going on");
            node.resume();
            None
        }
    }
}

/// Asks the process listening at `path` to hand its node over, and takes
/// its sockets and allocations: the connection to answer on with [`tell`],
/// and what came. On failure the old process is told (it goes on
/// serving).
///
/// # Errors
/// Nothing listens there, or what came is not a usable handover (another
/// boot, a later snapshot version, malformed, sockets missing).
pub(super) fn ask(path: &Path) -> io::Result<(OwnedFd, Unpacked)> {
    let conn = sock::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)?;
    sock::connect(conn.as_raw_fd(), &UnixAddr::new(path)?)?;
    trusted_peer(conn.as_fd())?;
    timeouts(conn.as_fd(), STEP)?;
    send_message(conn.as_fd(), &Message::TakeOver { reads: snapshot::VERSION })?;
    let (bytes, fds) = transfer::recv(conn.as_fd(), MAX_BYTES, MAX_FDS)?;
    if std::env::var_os("IP2P_TEST_DIE_IN_HANDOVER").is_some() {
        // The tests' stand-in for a new process that crashes here.
        std::process::exit(70);
    }
    match unpack(&bytes, fds.into_iter().map(Some).collect()) {
        Ok(unpacked) => Ok((conn, unpacked)),
        Err(e) => {
            let _ = send_message(conn.as_fd(), &Message::Failed { why: e.to_string() });
            Err(e)
        }
    }
}

/// Tells the old process on `conn` whether this one serves now (it exits)
/// or not (it goes on).
///
/// # Errors
/// The old process is gone.
pub(super) fn tell(conn: BorrowedFd<'_>, started: Result<(), &str>) -> io::Result<()> {
    let m = match started {
        Ok(()) => Message::Ready,
        Err(why) => Message::Failed { why: why.to_owned() },
    };
    send_message(conn, &m)
}
