//! recvmmsg/sendmmsg batches for the epoll datapath: one syscall moves up
//! to [`BATCH`] datagrams.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendmsg};

use super::gso::{self, GsoCounters};
use ip2p_turn::{PEER_HEADROOM, PEER_TAILROOM, REPLY_BUFFER};

/// Datagrams per syscall.
pub(crate) const BATCH: usize = 32;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// One receive buffer: headroom for the header the relay writes in front of
/// a peer's datagram, the datagram, and tailroom for padding.
pub(crate) const SLOT: usize = PEER_HEADROOM + MAX_DATAGRAM + PEER_TAILROOM;

/// One received datagram's metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub(crate) from: SocketAddr,
    pub(crate) len: usize,
    pub(crate) truncated: bool,
}

/// Receive buffers, their metadata, and a reply buffer per datagram.
pub(crate) struct RecvBatch {
    pub(crate) bufs: Vec<Box<[u8]>>,
    pub(crate) replies: Vec<Box<[u8]>>,
    pub(crate) meta: Vec<Received>,
    /// Headers for IPv4 sockets, and for IPv6 ones. recvmmsg leaves each
    /// header's address length at what it last received and nix does not
    /// reset it, so one set shared by both families would cut an IPv6
    /// source address short after an IPv4 one. Sockets are of one family
    /// (IPV6_V6ONLY), so per family the length is always right.
    headers: [MultiHeaders<SockaddrStorage>; 2],
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").field("meta", &self.meta).finish_non_exhaustive()
    }
}

pub(crate) fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| vec![0u8; SLOT].into_boxed_slice()).collect(),
            replies: (0..BATCH).map(|_| vec![0u8; REPLY_BUFFER].into_boxed_slice()).collect(),
            meta: Vec::with_capacity(BATCH),
            headers: [MultiHeaders::preallocate(BATCH, None), MultiHeaders::preallocate(BATCH, None)],
        }
    }

    /// Receives up to [`BATCH`] datagrams from a socket of the IPv6 family
    /// or not, each at `offset` in its buffer. Returns how many;
    /// `WouldBlock` when there is none.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>, v6: bool, offset: usize) -> io::Result<usize> {
        self.meta.clear();
        let end = SLOT - PEER_TAILROOM;
        let mut bufs = self.bufs.iter_mut();
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(bufs.next().and_then(|b| b.get_mut(offset..end)).unwrap_or(&mut []))]
        });
        let [v4_headers, v6_headers] = &mut self.headers;
        let headers = if v6 { v6_headers } else { v4_headers };
        let results = recvmmsg(fd.as_raw_fd(), headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        for r in results {
            let Some(from) = r.address.as_ref().and_then(to_socket_addr) else {
                continue;
            };
            self.meta.push(Received { from, len: r.bytes, truncated: r.flags.contains(MsgFlags::MSG_TRUNC) });
        }
        Ok(self.meta.len())
    }
}

/// Headers for sendmmsg, and whether runs to one destination go as GSO
/// sends.
pub(crate) struct SendBatch {
    headers: MultiHeaders<SockaddrStorage>,
    gso: bool,
    pub(crate) gso_counters: GsoCounters,
}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendBatch")
    }
}

impl SendBatch {
    pub(crate) fn new(gso: bool) -> Self {
        Self { headers: MultiHeaders::preallocate(BATCH, None), gso, gso_counters: GsoCounters::default() }
    }

    /// Sends each `(destination, bytes)` on `fd`, in order; a run to one
    /// destination as one GSO send (see [`gso`]). A datagram the kernel
    /// refuses (full buffer, unreachable destination) is skipped and
    /// counted; the others still go. Returns the number that failed.
    pub(crate) fn send(&mut self, fd: BorrowedFd<'_>, msgs: &[(SocketAddr, &[u8])]) -> u64 {
        if !self.gso {
            return self.send_each(fd, msgs);
        }
        let (mut failed, mut singles, mut i) = (0, 0, 0);
        while let Some(rest) = msgs.get(i..).filter(|r| !r.is_empty()) {
            let n = gso::run(rest.iter().map(|(to, b)| (*to, b.len())));
            if n < 2 {
                i += 1;
                continue;
            }
            failed += self.send_each(fd, msgs.get(singles..i).unwrap_or_default());
            failed += self.send_run(fd, rest.get(..n).unwrap_or_default());
            i += n;
            singles = i;
        }
        failed + self.send_each(fd, msgs.get(singles..).unwrap_or_default())
    }

    /// One GSO send of a run (from [`gso::run`]).
    fn send_run(&mut self, fd: BorrowedFd<'_>, run: &[(SocketAddr, &[u8])]) -> u64 {
        let Some(&(to, first)) = run.first() else { return 0 };
        let Ok(size) = u16::try_from(first.len()) else { return self.send_each(fd, run) };
        let iov: [IoSlice<'_>; gso::MAX_SEGMENTS] =
            std::array::from_fn(|i| IoSlice::new(run.get(i).map_or(&[], |(_, b)| b)));
        let iov = iov.get(..run.len()).unwrap_or_default();
        let cmsg = [ControlMessage::UdpGsoSegments(&size)];
        let addr = SockaddrStorage::from(to);
        match sendmsg(fd.as_raw_fd(), iov, &cmsg, MsgFlags::MSG_DONTWAIT, Some(&addr)) {
            Ok(_) => {
                self.gso_counters.count(run.len());
                0
            }
            Err(e) if gso::fall_back(e as i32, &mut self.gso) => self.send_each(fd, run),
            Err(_) => run.len() as u64,
        }
    }

    /// Sends each datagram on its own, `BATCH` per sendmmsg.
    fn send_each(&mut self, fd: BorrowedFd<'_>, msgs: &[(SocketAddr, &[u8])]) -> u64 {
        let mut failed = 0;
        let mut rest = msgs;
        while !rest.is_empty() {
            let chunk = rest.get(..rest.len().min(BATCH)).unwrap_or_default();
            let n = chunk.len();
            let slices: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|i| [IoSlice::new(chunk.get(i).map_or(&[], |(_, b)| b))]);
            let addrs: [Option<SockaddrStorage>; BATCH] =
                std::array::from_fn(|i| chunk.get(i).map(|(to, _)| SockaddrStorage::from(*to)));
            let (slices, addrs) = (slices.get(..n).unwrap_or_default(), addrs.get(..n).unwrap_or_default());
            let sent = match sendmmsg(fd.as_raw_fd(), &mut self.headers, slices, addrs, [], MsgFlags::MSG_DONTWAIT) {
                Ok(results) => results.count(),
                Err(_) => 0,
            };
            // sendmmsg stops at the first datagram that fails: count it and
            // carry on after it.
            let done = if sent < chunk.len() {
                failed += 1;
                sent + 1
            } else {
                sent
            };
            rest = rest.get(done..).unwrap_or_default();
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn addresses_convert_both_ways() {
        for a in ["127.0.0.1:5", "[::1]:7"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(to_socket_addr(&SockaddrStorage::from(a)), Some(a));
        }
    }

    #[test]
    fn ipv6_sources_stay_whole_after_ipv4_ones() {
        let mut rx = RecvBatch::new();
        for round in 0..2 {
            for ip in ["127.0.0.1", "::1"] {
                let (a, b) = (UdpSocket::bind((ip, 0)).unwrap(), UdpSocket::bind((ip, 0)).unwrap());
                a.send_to(&[round; 8], b.local_addr().unwrap()).unwrap();
                b.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
                let mut peek = [0u8; 8];
                b.peek_from(&mut peek).unwrap();
                assert_eq!(rx.recv(b.as_fd(), ip == "::1", 0).unwrap(), 1);
                assert_eq!(rx.meta[0].from, a.local_addr().unwrap(), "round {round}, {ip}");
            }
        }
    }

    #[test]
    fn a_batch_goes_out_and_comes_back() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let msgs: Vec<_> = payloads.iter().map(|p| (to, p.as_slice())).collect();
        assert_eq!(SendBatch::new(false).send(a.as_fd(), &msgs), 0);
        let mut rx = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < 40 {
            match rx.recv(b.as_fd(), false, PEER_HEADROOM) {
                Ok(n) => {
                    for k in 0..n {
                        let m = rx.meta[k];
                        assert_eq!(m.from, a.local_addr().unwrap());
                        got.push(rx.bufs[k][PEER_HEADROOM..PEER_HEADROOM + m.len].to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads);
    }

    #[test]
    fn runs_to_one_destination_go_as_one_gso_send_and_arrive_as_datagrams() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (b, c) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        let (tb, tc) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        // A frame of 10 to b (the last shorter), 1 to c, a frame of 3 to b.
        let mut sent: Vec<(SocketAddr, Vec<u8>)> =
            (0..10u8).map(|i| (tb, vec![i; if i < 9 { 1000 } else { 300 }])).collect();
        sent.push((tc, vec![42; 1000]));
        sent.extend((0..3u8).map(|i| (tb, vec![100 + i; 500])));
        let msgs: Vec<_> = sent.iter().map(|(to, p)| (*to, p.as_slice())).collect();
        let mut tx = SendBatch::new(true);
        assert_eq!(tx.send(a.as_fd(), &msgs), 0);
        assert_eq!(tx.gso_counters, GsoCounters { sends: 2, datagrams: 13 });
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        for (sock, n) in [(&b, 13), (&c, 1)] {
            sock.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            for _ in 0..n {
                let (len, from) = sock.recv_from(&mut buf).unwrap();
                assert_eq!(from, a.local_addr().unwrap());
                got.push((sock.local_addr().unwrap(), buf[..len].to_vec()));
            }
        }
        let mut want = sent.clone();
        want.sort_by_key(|(to, _)| *to == tc); // b's in order, then c's
        assert_eq!(got, want);
    }
}
