//! How a bench thread moves its datagrams: one syscall per datagram with
//! epoll (mio), or io_uring, where every send due and every receive of a
//! wake-up go to the kernel in one submission and waits have nanosecond
//! timeouts. Each session needs a socket of its own (TURN allocations are
//! per 5-tuple), so sendmmsg cannot batch across sessions; io_uring can.
//!
//! Both engines answer the thread's echo socket themselves. The trade-off:
//! epoll polls without sleeping near each due time, so it keeps a
//! moderate schedule to a few microseconds but pays a syscall per datagram;
//! io_uring sleeps on timers (waking tens of microseconds late) but moves
//! many datagrams per syscall, so it keeps up at rates epoll cannot.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, opcode, squeue};
use mio::{Events, Interest, Poll, Token};
use socket2::SockAddr;

/// Which socket a received datagram came in on.
pub type OnDatagram<'a> = &'a mut dyn FnMut(usize, &[u8]);

/// A bench thread's I/O.
pub trait Engine {
    /// Sends `packet` from session `session` to `to` (possibly when the
    /// engine next waits). `false` if it could not be queued.
    fn send(&mut self, session: usize, packet: &[u8], to: SocketAddr) -> bool;
    /// Waits up to `wait` for datagrams, handing each session's to `on`.
    ///
    /// # Errors
    /// From the poll or the ring.
    fn wait(&mut self, wait: Duration, on: OnDatagram<'_>) -> io::Result<()>;
}

const ECHO: usize = usize::MAX;

/// epoll through mio: a syscall per datagram.
pub struct Epoll {
    poll: Poll,
    events: Events,
    echo: Option<UdpSocket>,
    sockets: Vec<UdpSocket>,
    buf: Vec<u8>,
}

impl Epoll {
    /// An engine for these session sockets (non-blocking) and echo socket.
    ///
    /// # Errors
    /// From epoll.
    pub fn new(sockets: &[&UdpSocket], echo: Option<UdpSocket>) -> io::Result<Self> {
        let poll = Poll::new()?;
        for (i, s) in sockets.iter().enumerate() {
            poll.registry().register(&mut mio::unix::SourceFd(&s.as_raw_fd()), Token(i), Interest::READABLE)?;
        }
        if let Some(e) = &echo {
            poll.registry().register(&mut mio::unix::SourceFd(&e.as_raw_fd()), Token(ECHO), Interest::READABLE)?;
        }
        let sockets = sockets.iter().map(|s| s.try_clone()).collect::<io::Result<Vec<_>>>()?;
        Ok(Self { poll, events: Events::with_capacity(1024), echo, sockets, buf: vec![0; 65_536] })
    }
}

impl Engine for Epoll {
    fn send(&mut self, session: usize, packet: &[u8], to: SocketAddr) -> bool {
        self.sockets.get(session).is_some_and(|s| s.send_to(packet, to).is_ok())
    }

    fn wait(&mut self, wait: Duration, on: OnDatagram<'_>) -> io::Result<()> {
        // epoll's timeouts are milliseconds: sleep only while the next packet
        // is more than 2 ms away, poll without sleeping after that.
        self.poll.poll(&mut self.events, Some(wait.saturating_sub(Duration::from_millis(2))))?;
        for event in &self.events {
            let i = event.token().0;
            if i == ECHO {
                if let Some(e) = &self.echo {
                    while let Ok((len, from)) = e.recv_from(&mut self.buf) {
                        let _ = e.send_to(self.buf.get(..len).unwrap_or_default(), from);
                    }
                }
                continue;
            }
            let Some(s) = self.sockets.get(i) else { continue };
            while let Ok(len) = s.recv(&mut self.buf) {
                on(i, self.buf.get(..len).unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// A socket's receive: its message header, address and buffer, at a
/// stable address while the receive is in the ring.
struct Receive {
    msg: libc::msghdr,
    iov: libc::iovec,
    name: libc::sockaddr_storage,
    buf: Vec<u8>,
}

/// A send in flight: its bytes (the first `len` of `buf`) and destination,
/// alive until completion.
struct Sending {
    buf: Vec<u8>,
    len: usize,
    to: SockAddr,
}

const RECV: u64 = 1 << 62;
const SEND: u64 = 2 << 62;
const KIND: u64 = 3 << 62;

/// io_uring: sends and re-armed receives go to the kernel together.
pub struct Uring {
    ring: IoUring,
    fds: Vec<RawFd>,
    /// One per session, then the echo socket's. A boxed slice cannot grow,
    /// so the addresses the kernel holds never move.
    receives: Box<[Receive]>,
    echo: Option<UdpSocket>,
    sends: Box<[Sending]>,
    free: Vec<usize>,
}

/// Sends in flight at most per thread.
const SEND_SLOTS: usize = 8192;

impl Uring {
    /// An engine for these session sockets and echo socket, with buffers
    /// for datagrams of up to `max_len` bytes.
    ///
    /// # Errors
    /// io_uring is unavailable.
    pub fn new(sockets: &[&UdpSocket], echo: Option<UdpSocket>, max_len: usize) -> io::Result<Self> {
        let ring = IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_coop_taskrun().build(4096)?;
        let mut fds: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
        if let Some(e) = &echo {
            fds.push(e.as_raw_fd());
        }
        let receives = fds
            .iter()
            .map(|_| {
                Receive {
                    // SAFETY: all-zero msghdr, iovec and sockaddr_storage are
                    // valid values of these C structs.
                    msg: unsafe { std::mem::zeroed() },
                    iov: unsafe { std::mem::zeroed() },
                    name: unsafe { std::mem::zeroed() },
                    buf: vec![0; max_len.max(2048)],
                }
            })
            .collect();
        let sends = (0..SEND_SLOTS).map(|_| Sending {
            buf: Vec::new(),
            len: 0,
            to: SockAddr::from(SocketAddr::from(([0u8; 4], 0))),
        });
        let mut engine =
            Self { ring, fds, receives, echo, sends: sends.collect(), free: (0..SEND_SLOTS).rev().collect() };
        // Timers as precise as the kernel allows: packets are due every
        // few microseconds.
        let _ = nix::sys::prctl::set_timerslack(1);
        for i in 0..engine.fds.len() {
            engine.arm(i);
        }
        Ok(engine)
    }

    fn push(&mut self, entry: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: the buffers, headers and addresses the entries point
            // to are boxed (stable) and live in `self` until the operation
            // completes: receives until re-armed, sends until their slot is
            // freed on completion.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return true;
            }
            let _ = self.ring.submit();
        }
        false
    }

    fn arm(&mut self, i: usize) {
        let (Some(fd), Some(r)) = (self.fds.get(i).copied(), self.receives.get_mut(i)) else { return };
        let r: &mut Receive = r;
        r.iov = libc::iovec { iov_base: r.buf.as_mut_ptr().cast(), iov_len: r.buf.len() };
        r.msg.msg_name = (&raw mut r.name).cast();
        r.msg.msg_namelen = u32::try_from(size_of::<libc::sockaddr_storage>()).unwrap_or(128);
        r.msg.msg_iov = &raw mut r.iov;
        r.msg.msg_iovlen = 1;
        let entry = opcode::RecvMsg::new(Fd(fd), &raw mut r.msg).build().user_data(RECV | i as u64);
        self.push(&entry);
    }

    fn queue_send(&mut self, fd: RawFd, packet: &[u8], to: SocketAddr) -> bool {
        let Some(slot) = self.free.pop() else { return false };
        let Some(s) = self.sends.get_mut(slot) else { return false };
        if s.buf.len() < packet.len() {
            s.buf.resize(packet.len(), 0);
        }
        if let Some(dst) = s.buf.get_mut(..packet.len()) {
            dst.copy_from_slice(packet);
        }
        s.len = packet.len();
        self.submit_send(fd, slot, to)
    }

    /// Sends slot `slot`'s bytes, freeing the slot if the ring is full.
    fn submit_send(&mut self, fd: RawFd, slot: usize, to: SocketAddr) -> bool {
        let Some(s) = self.sends.get_mut(slot) else { return false };
        s.to = SockAddr::from(to);
        let len = u32::try_from(s.len.min(s.buf.len())).unwrap_or(0);
        let entry = opcode::Send::new(Fd(fd), s.buf.as_ptr(), len)
            .dest_addr(s.to.as_ptr().cast())
            .dest_addr_len(s.to.len())
            .build()
            .user_data(SEND | slot as u64);
        if self.push(&entry) {
            true
        } else {
            self.free.push(slot);
            false
        }
    }

    /// The echo responder: receive `index`'s datagram goes back to where it
    /// came from without a copy, by trading the receive's buffer for a free
    /// send slot's (which must be as large: it becomes the next receive's).
    fn echo(&mut self, index: usize, len: usize) {
        let Some(r) = self.receives.get_mut(index) else { return };
        let (Some(from), Some(fd)) = (socket2_from_storage(&r.name, r.msg.msg_namelen), self.fds.get(index).copied())
        else {
            return;
        };
        let Some(slot) = self.free.pop() else { return };
        let Some(s) = self.sends.get_mut(slot) else { return };
        if s.buf.len() < r.buf.len() {
            s.buf.resize(r.buf.len(), 0);
        }
        std::mem::swap(&mut s.buf, &mut r.buf);
        s.len = len;
        self.submit_send(fd, slot, from);
    }
}

impl Engine for Uring {
    fn send(&mut self, session: usize, packet: &[u8], to: SocketAddr) -> bool {
        let Some(fd) = self.fds.get(session).copied() else { return false };
        self.queue_send(fd, packet, to)
    }

    fn wait(&mut self, wait: Duration, on: OnDatagram<'_>) -> io::Result<()> {
        let ts = Timespec::new().sec(wait.as_secs()).nsec(wait.subsec_nanos());
        match self.ring.submitter().submit_with_args(1, &SubmitArgs::new().timespec(&ts)) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        let echo_index = self.echo.as_ref().map(|_| self.fds.len() - 1);
        for (data, result) in done {
            let index = (data & !KIND) as usize;
            match data & KIND {
                SEND => self.free.push(index),
                RECV => {
                    let len = usize::try_from(result).unwrap_or(0);
                    if result > 0 && Some(index) == echo_index {
                        self.echo(index, len);
                    } else if result > 0
                        && let Some(r) = self.receives.get(index)
                    {
                        on(index, r.buf.get(..len).unwrap_or_default());
                    }
                    self.arm(index);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The address a receive wrote into its `sockaddr_storage`.
fn socket2_from_storage(storage: &libc::sockaddr_storage, len: u32) -> Option<SocketAddr> {
    // SAFETY: `storage` is a sockaddr_storage the kernel filled with an
    // address of `len` bytes (at most its size).
    let bytes = unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(storage).cast::<u8>(), (len as usize).min(size_of_val(storage)))
    };
    let family = i32::from(u16::from_ne_bytes(*bytes.first_chunk::<2>()?));
    let port = u16::from_be_bytes(*bytes.get(2..4)?.first_chunk::<2>()?);
    match family {
        libc::AF_INET => Some(SocketAddr::from((*bytes.get(4..8)?.first_chunk::<4>()?, port))),
        libc::AF_INET6 => Some(SocketAddr::from((*bytes.get(8..24)?.first_chunk::<16>()?, port))),
        _ => None,
    }
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll").field("sockets", &self.sockets.len()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Uring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uring")
            .field("sockets", &self.fds.len())
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}
