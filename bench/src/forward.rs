//! A bare UDP forwarder: the baseline a relay is measured against.
//!
//! No protocol at all. Each client (source address) gets a socket of its
//! own towards one fixed peer, as a TURN allocation does, and what the peer
//! sends to that socket goes back to the client from the listening socket.
//! One thread, epoll (mio), datagrams moved with recvmmsg and sendmmsg:
//! what is left is the kernel's per-packet cost. `ip2p-bench latency
//! --mode forwarded-echo` drives it.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Datagrams per recvmmsg or sendmmsg.
const BATCH: usize = 64;
/// The largest datagram forwarded whole.
const SLOT: usize = 2048;
const LISTEN: Token = Token(usize::MAX);

/// What a forwarder did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded {
    /// Datagrams from clients sent on to the peer.
    pub to_peer: u64,
    /// Datagrams from the peer sent back to their client.
    pub to_clients: u64,
    /// Clients seen (sockets opened).
    pub clients: usize,
    /// Sends the kernel refused.
    pub send_errors: u64,
}

/// One client: its socket towards the peer, and its address.
struct Client {
    socket: UdpSocket,
    addr: SockaddrStorage,
}

/// Forwards between clients reaching `listen` and `peer` until `stop` is
/// set or `limit` passes, with at most `max_clients` clients.
///
/// # Errors
/// A socket or epoll error (not a refused send: those are counted).
pub fn forward(
    listen: &UdpSocket,
    peer: SocketAddr,
    max_clients: usize,
    limit: Duration,
    stop: &AtomicBool,
) -> io::Result<Forwarded> {
    let started = Instant::now();
    listen.set_nonblocking(true)?;
    let local_ip = listen.local_addr()?.ip();
    let peer = SockaddrStorage::from(peer);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut mio::unix::SourceFd(&listen.as_raw_fd()), LISTEN, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut clients: Vec<Client> = Vec::new();
    let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
    let mut io = Batch {
        bufs: vec![[0u8; SLOT]; BATCH],
        got: Vec::with_capacity(BATCH),
        rx: MultiHeaders::preallocate(BATCH, None),
        tx: MultiHeaders::preallocate(BATCH, None),
        addrs: Vec::with_capacity(BATCH),
    };
    // The clients' datagrams of a batch: (client, buffer, length).
    let mut meta: Vec<(usize, usize, usize)> = Vec::with_capacity(BATCH);
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(BATCH);
    let mut done = Forwarded::default();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in &events {
            if event.token() == LISTEN {
                // Clients to the peer: each datagram leaves by its client's
                // socket, a client's datagrams of a batch in one sendmmsg.
                loop {
                    let n = io.receive(listen)?;
                    meta.clear();
                    for (k, &(from, len)) in io.got.iter().enumerate() {
                        let Some(from) = from else { continue };
                        let client = match by_addr.get(&from) {
                            Some(&i) => i,
                            None if clients.len() < max_clients => {
                                let socket = UdpSocket::bind((local_ip, 0))?;
                                socket.set_nonblocking(true)?;
                                let i = clients.len();
                                let fd = socket.as_raw_fd();
                                poll.registry().register(
                                    &mut mio::unix::SourceFd(&fd),
                                    Token(i),
                                    Interest::READABLE,
                                )?;
                                clients.push(Client { socket, addr: SockaddrStorage::from(from) });
                                by_addr.insert(from, i);
                                i
                            }
                            None => continue,
                        };
                        meta.push((client, k, len));
                    }
                    meta.sort_by_key(|&(client, k, _)| (client, k));
                    for run in meta.chunk_by(|a, b| a.0 == b.0) {
                        let Some(c) = run.first().and_then(|&(client, _, _)| clients.get(client)) else { continue };
                        out.clear();
                        out.extend(run.iter().map(|&(_, k, len)| (k, len)));
                        let (sent, failed) = io.send(&c.socket, &out, &peer);
                        done.to_peer += sent;
                        done.send_errors += failed;
                    }
                    // Fewer than a batch: the socket was empty, and the next
                    // datagram brings a new edge.
                    if n < BATCH {
                        break;
                    }
                }
                continue;
            }
            // The peer to a client: drain the client's socket, and send what
            // came back in batches from the listening socket.
            let Some(c) = clients.get(event.token().0) else { continue };
            loop {
                let n = io.receive(&c.socket)?;
                out.clear();
                out.extend(io.got.iter().enumerate().map(|(k, &(_, len))| (k, len)));
                let (sent, failed) = io.send(listen, &out, &c.addr);
                done.to_clients += sent;
                done.send_errors += failed;
                if n < BATCH {
                    break;
                }
            }
        }
    }
    done.clients = clients.len();
    Ok(done)
}

/// Buffers and headers for one batch of datagrams, reused.
struct Batch {
    bufs: Vec<[u8; SLOT]>,
    /// Each received datagram's source and length.
    got: Vec<(Option<SocketAddr>, usize)>,
    rx: MultiHeaders<SockaddrStorage>,
    tx: MultiHeaders<SockaddrStorage>,
    /// The destinations of a sendmmsg.
    addrs: Vec<Option<SockaddrStorage>>,
}

impl Batch {
    /// One recvmmsg into `bufs`, each datagram's source and length in
    /// `got`: how many (0 when there was none).
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        let mut slots = self.bufs.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().map_or(&mut [][..], |b| &mut b[..]))]);
        match recvmmsg(socket.as_raw_fd(), &mut self.rx, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
            Ok(results) => self.got.extend(results.map(|r| (r.address.as_ref().and_then(to_addr), r.bytes))),
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(self.got.len())
    }

    /// sendmmsg of the datagrams `out` names (buffer, length) to `to`,
    /// carrying on past one the kernel refuses. Returns (sent, failed).
    fn send(&mut self, socket: &UdpSocket, out: &[(usize, usize)], to: &SockaddrStorage) -> (u64, u64) {
        let bufs = &self.bufs;
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            [IoSlice::new(out.get(i).and_then(|&(k, len)| bufs.get(k)?.get(..len)).unwrap_or_default())]
        });
        let n = out.len().min(BATCH);
        self.addrs.clear();
        self.addrs.resize(n, Some(*to));
        let (mut sent, mut failed, mut at) = (0u64, 0u64, 0usize);
        while at < n {
            let (s, a) = (slices.get(at..n).unwrap_or_default(), self.addrs.get(at..n).unwrap_or_default());
            let done =
                sendmmsg(socket.as_raw_fd(), &mut self.tx, s, a, [], MsgFlags::MSG_DONTWAIT).map_or(0, Iterator::count);
            sent += done as u64;
            at += done;
            if at < n {
                failed += 1;
                at += 1;
            }
        }
        (sent, failed)
    }
}

fn to_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn forwards_each_client_by_its_own_socket_and_back() {
        let listen = UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = listen.local_addr().unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let peer_addr = peer.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        // Queued before the forwarder starts, so one batch mixes the two
        // clients with a third over the limit (dropped, not forwarded).
        for k in 0..3u8 {
            for (i, c) in clients.iter().take(2).enumerate() {
                c.send_to(&[i as u8, k], at).unwrap();
            }
            if k == 1 {
                clients[2].send_to(&[9, 9], at).unwrap();
            }
        }
        let forwarder = std::thread::spawn(move || forward(&listen, peer_addr, 2, Duration::from_secs(30), &flag));
        let mut sources = HashMap::new();
        let mut next = [0u8; 2];
        let mut buf = [0u8; 64];
        for _ in 0..6 {
            let (n, from) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(n, 2);
            // Each client's datagrams whole and in order, and one source
            // per client, a different one for each.
            let i = usize::from(buf[0]);
            assert!(i < 2, "{:?}", &buf[..n]);
            assert_eq!(buf[1], next[i]);
            next[i] += 1;
            assert_eq!(*sources.entry(buf[0]).or_insert(from), from);
            peer.send_to(&buf[..n], from).unwrap();
        }
        assert_eq!(sources.len(), 2);
        assert_ne!(sources[&0], sources[&1]);
        for (i, c) in clients.iter().take(2).enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            for k in 0..3u8 {
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (&[i as u8, k][..], at));
            }
        }
        // A third client is over the limit: dropped, not forwarded.
        clients[2].send_to(&[9, 9], at).unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        assert!(peer.recv_from(&mut buf).is_err());
        stop.store(true, Ordering::Relaxed);
        let done = forwarder.join().unwrap().unwrap();
        assert_eq!(done, Forwarded { to_peer: 6, to_clients: 6, clients: 2, send_errors: 0 });
    }
}
