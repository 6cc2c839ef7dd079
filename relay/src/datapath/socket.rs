//! Sockets as the relay needs them.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use ip2p_turn::Held;

/// Receive and send buffer size asked of the kernel for listening sockets:
/// every client's traffic arrives on them (the kernel caps it at
/// `net.core.rmem_max`; deploy/sysctl.d raises that).
const LISTENER_BUFFER: usize = 4 << 20;

/// A non-blocking UDP socket bound to `addr`; with `reuse_port`, one of a
/// group the kernel spreads datagrams over by 4-tuple hash.
pub(crate) fn bind_udp(addr: SocketAddr, reuse_port: bool, dont_fragment: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
        // Best effort: a smaller buffer only means drops under bursts.
        let _ = socket.set_recv_buffer_size(LISTENER_BUFFER);
        let _ = socket.set_send_buffer_size(LISTENER_BUFFER);
    }
    if dont_fragment {
        set_dont_fragment(&socket, addr)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Binds `addr` now for an allocation to come (an EVEN-PORT reservation).
pub(crate) fn hold(addr: SocketAddr) -> io::Result<Held> {
    Ok(Held { addr, socket: Some(bind_udp(addr, false, false)?) })
}

/// A held address's socket, set up as [`bind_udp`] would have.
pub(crate) fn adopt(held: Held, dont_fragment: bool) -> io::Result<UdpSocket> {
    let socket = held.socket.ok_or_else(|| io::Error::other("a held relay address without a socket"))?;
    if dont_fragment {
        set_dont_fragment(&socket2::SockRef::from(&socket), held.addr)?;
    }
    Ok(socket)
}

/// RFC 8656 §14: DF on every datagram, never fragment locally
/// (IP_PMTUDISC_DO), which neither nix nor socket2 wraps.
fn set_dont_fragment(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if addr.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO)
    };
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: the fd is open for the call's duration (borrowed from
    // `socket`), and the option value points to a live c_int of `len` bytes.
    let rc = unsafe { libc::setsockopt(socket.as_raw_fd(), level, name, (&raw const value).cast(), len) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// A worker's listening sockets.
#[derive(Debug, Default)]
pub(crate) struct WorkerSockets {
    /// UDP, one per listen address.
    pub(crate) udp: Vec<UdpSocket>,
    /// TCP on each listen address (same port as its UDP socket), then TLS
    /// on each TLS address.
    pub(crate) streams: Vec<TcpListener>,
}

/// Binds one socket per worker on each address, all sharing the port
/// (SO_REUSEPORT: the kernel spreads datagrams and connections over the
/// workers); a port of 0 is chosen by the kernel for the first and reused
/// by the others. Every listen address serves UDP and TCP on the same port,
/// every TLS address TCP. Returns each worker's sockets.
pub(crate) fn bind_listeners(
    listen: &[SocketAddr],
    tls: &[SocketAddr],
    workers: usize,
) -> io::Result<Vec<WorkerSockets>> {
    let mut by_worker: Vec<WorkerSockets> = (0..workers).map(|_| WorkerSockets::default()).collect();
    let mut streams = Vec::new();
    for addr in listen {
        let (udp, tcp) = bind_pair(*addr, workers)?;
        for (worker, socket) in by_worker.iter_mut().zip(udp) {
            worker.udp.push(socket);
        }
        streams.push(tcp);
    }
    for addr in tls {
        streams.push(bind_group(*addr, workers, bind_tcp)?);
    }
    for group in streams {
        for (worker, socket) in by_worker.iter_mut().zip(group) {
            worker.streams.push(socket);
        }
    }
    Ok(by_worker)
}

/// UDP and TCP sockets for every worker on one address and port. When
/// the kernel picks the port (0) for UDP, TCP may find it taken: another
/// port is tried.
fn bind_pair(addr: SocketAddr, workers: usize) -> io::Result<(Vec<UdpSocket>, Vec<TcpListener>)> {
    let mut attempts = 0;
    loop {
        let udp = bind_group(addr, workers, |a| bind_udp(a, true, false))?;
        let port = udp.first().map(UdpSocket::local_addr).transpose()?.map_or(addr.port(), |a| a.port());
        match bind_group(SocketAddr::new(addr.ip(), port), workers, bind_tcp) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 && attempts < 16 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// One socket per worker on `addr`, the first choosing the port if it is 0.
fn bind_group<S: SocketLocal>(
    addr: SocketAddr,
    workers: usize,
    bind: impl Fn(SocketAddr) -> io::Result<S>,
) -> io::Result<Vec<S>> {
    let first = bind(addr).map_err(|e| context(e, addr))?;
    let actual = first.local()?;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(bind(actual).map_err(|e| context(e, actual))?);
    }
    Ok(sockets)
}

/// A bound socket's address.
trait SocketLocal {
    fn local(&self) -> io::Result<SocketAddr>;
}

impl SocketLocal for UdpSocket {
    fn local(&self) -> io::Result<SocketAddr> {
        self.local_addr()
    }
}

impl SocketLocal for TcpListener {
    fn local(&self) -> io::Result<SocketAddr> {
        self.local_addr()
    }
}

/// A non-blocking TCP listener on `addr`, one of a SO_REUSEPORT group.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn context(e: io::Error, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}
