//! The ring and the relay sockets, lent to the core to open and close
//! relay sockets, and what in-flight operations hold.

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::types::{Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, opcode, squeue};
use socket2::SockAddr;

use super::bufring::{BGID, BufRing};
use super::ops::{Op, user_data};
use crate::datapath::gso;
use crate::datapath::relay_sockets::{DataConnection, RelaySockets};
use crate::datapath::tcp_relay::TcpRelays;
use ip2p_turn::RelayToken;

/// The buffer an in-flight send's bytes are in, kept until it completes.
#[derive(Debug)]
pub(super) enum SendBuffer {
    /// A provided receive buffer.
    Buffer(u16),
    /// A reply buffer.
    Reply(usize),
    /// A packet from another worker (its buffer goes back to the pool).
    Inbox(Box<[u8]>),
    /// Several datagrams sent as one (UDP GSO).
    Many(Box<GsoSend>),
}

/// A GSO send in flight: its datagrams' buffers, and the message header
/// the kernel reads (which points into it: boxed, it does not move).
pub(super) struct GsoSend {
    pub(super) fixed: u32,
    pub(super) to: SocketAddr,
    pub(super) parts: Vec<(SendBuffer, std::ops::Range<usize>)>,
    pub(super) iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    /// Room for one `UDP_SEGMENT` control message (aligned).
    control: [u64; 4],
}

impl std::fmt::Debug for GsoSend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GsoSend").field("to", &self.to).field("datagrams", &self.parts.len()).finish_non_exhaustive()
    }
}

impl Default for GsoSend {
    fn default() -> Self {
        // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
        let msg = unsafe { std::mem::zeroed() };
        let (parts, iov) = (Vec::with_capacity(gso::MAX_SEGMENTS), Vec::with_capacity(gso::MAX_SEGMENTS));
        Self { fixed: 0, to: SocketAddr::from(([0; 4], 0)), parts, iov, msg, control: [0; 4] }
    }
}

impl GsoSend {
    /// The message header for a sendmsg of `iov` to `name` in segments of
    /// `size` bytes. `name` and `self` must stay put until the send
    /// completes.
    pub(super) fn header(&mut self, name: &SockAddr, size: u16) -> *const libc::msghdr {
        self.msg.msg_name = name.as_ptr().cast_mut().cast();
        self.msg.msg_namelen = name.len();
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len();
        self.msg.msg_control = self.control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE and CMSG_LEN compute sizes only.
        let (space, len) = unsafe { (libc::CMSG_SPACE(2), libc::CMSG_LEN(2)) };
        self.msg.msg_controllen = space as usize;
        debug_assert!(space as usize <= std::mem::size_of_val(&self.control));
        // SAFETY: msg_control points at `control`, which has room for one
        // control message with 2 bytes of data (CMSG_SPACE(2) is 24 bytes
        // on Linux, `control` 32; asserted in debug builds), so
        // CMSG_FIRSTHDR is that buffer and CMSG_DATA lies within it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&raw const self.msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = len as usize;
            libc::CMSG_DATA(cmsg).cast::<u16>().write_unaligned(size);
        }
        &raw const self.msg
    }
}

/// `range` of the bytes in `buffer`.
pub(super) fn send_bytes<'a>(
    bufs: &'a mut BufRing,
    replies: &'a [Box<[u8]>],
    buffer: &'a SendBuffer,
    range: std::ops::Range<usize>,
) -> Option<&'a [u8]> {
    match buffer {
        SendBuffer::Buffer(bid) => bufs.buffer(*bid).get(range),
        SendBuffer::Reply(r) => replies.get(*r).and_then(|b| b.get(range)),
        SendBuffer::Inbox(b) => b.get(range),
        SendBuffer::Many(_) => None,
    }
}

/// An in-flight send: its destination must live until completion.
pub(super) struct SendSlot {
    pub(super) to: SockAddr,
    pub(super) buffer: SendBuffer,
}

pub(super) struct RelaySocket {
    pub(super) socket: UdpSocket,
    pub(super) generation: u32,
}

/// A connection's socket and operations in flight.
#[derive(Debug)]
pub(super) struct ConnIo {
    pub(super) socket: TcpStream,
    pub(super) generation: u32,
    /// A multishot receive is armed.
    pub(super) receiving: bool,
    /// A send of the stream's `next_write` bytes is in flight.
    pub(super) sending: bool,
    /// A ConnectionBind made it a data connection: once its operations in
    /// flight are done it goes to the TCP relays instead of closing.
    pub(super) data_connection: Option<u32>,
}

/// The worker's sockets and the ring, lent to the core to open and close
/// relay sockets.
pub(super) struct UringSockets {
    pub(super) ring: IoUring,
    pub(super) listeners: usize,
    pub(super) relays: Vec<Option<RelaySocket>>,
    pub(super) next_generation: u32,
    pub(super) msghdr: Box<libc::msghdr>,
    /// Size of the registered file table.
    pub(super) fixed_files: u32,
    pub(super) worker: usize,
    pub(super) tcp: std::sync::Arc<TcpRelays>,
    /// Client connections a ConnectionBind turned into data connections.
    pub(super) data_connections: Vec<DataConnection>,
}

impl UringSockets {
    /// Queues an operation; when the submission queue is full, submits
    /// what is queued and tries once more. `false` if it still does not
    /// fit: the caller gives back what the operation would have held.
    pub(super) fn push(&mut self, entry: &squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: every pointer in the entries pushed here (buffers,
            // addresses, the msghdr) outlives the operation: see `SendSlot`,
            // `BufRing` and `msghdr`.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return true;
            }
            if let Err(e) = self.ring.submit() {
                tracing::debug!(error = %e, "io_uring submit failed");
            }
        }
        false
    }

    /// Submits what is queued and waits for a completion or the timeout.
    pub(super) fn enter(&self, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|d| Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos()));
        let args = match &ts {
            Some(ts) => SubmitArgs::new().timespec(ts),
            None => SubmitArgs::new(),
        };
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Arms a multishot receive; `false` if the queue is full (re-arm later).
    pub(super) fn arm_recv(&mut self, fixed: u32, user_data: u64) -> bool {
        let entry = opcode::RecvMsgMulti::new(Fixed(fixed), &raw const *self.msghdr, BGID).build().user_data(user_data);
        self.push(&entry)
    }

    pub(super) fn relay_fixed(&self, token: RelayToken) -> Option<u32> {
        let index = u32::try_from(self.listeners).ok()?.checked_add(token.0)?;
        (index < self.fixed_files).then_some(index)
    }
}

crate::datapath::relay_sockets::impl_sockets!(UringSockets);

impl RelaySockets for UringSockets {
    fn send_now(&self, token: RelayToken, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        let relay = self.relays.get(token.index()).and_then(Option::as_ref);
        relay.ok_or(io::ErrorKind::NotFound)?.socket.send_to(bytes, to)
    }

    fn install(&mut self, token: RelayToken, socket: UdpSocket) -> io::Result<()> {
        let fixed = self.relay_fixed(token).ok_or_else(|| io::Error::other("too many relay sockets on this worker"))?;
        self.ring.submitter().register_files_update(fixed, &[socket.as_raw_fd()])?;
        self.next_generation = self.next_generation.wrapping_add(1) & 0x00FF_FFFF;
        let generation = self.next_generation;
        let index = token.index();
        if self.relays.len() <= index {
            self.relays.resize_with(index + 1, || None);
        }
        if let Some(slot) = self.relays.get_mut(index) {
            *slot = Some(RelaySocket { socket, generation });
        }
        if !self.arm_recv(fixed, user_data(Op::RecvRelay, generation, token.0)) {
            if let Some(slot) = self.relays.get_mut(index) {
                *slot = None;
            }
            let _ = self.ring.submitter().register_files_update(fixed, &[-1]);
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "io_uring submission queue full"));
        }
        Ok(())
    }

    fn tcp(&self) -> (&std::sync::Arc<TcpRelays>, usize) {
        (&self.tcp, self.worker)
    }

    fn data_connections(&mut self) -> &mut Vec<DataConnection> {
        &mut self.data_connections
    }

    fn uninstall(&mut self, token: RelayToken) -> bool {
        let Some(socket) = self.relays.get_mut(token.index()).and_then(Option::take) else {
            return false;
        };
        let recv = user_data(Op::RecvRelay, socket.generation, token.0);
        // If the cancel cannot be queued, unregistering the file below still
        // ends the receive: its completions carry a stale generation.
        let _ = self.push(&opcode::AsyncCancel::new(recv).build().user_data(user_data(Op::Cancel, 0, 0)));
        if let Some(fixed) = self.relay_fixed(token) {
            let _ = self.ring.submitter().register_files_update(fixed, &[-1]);
        }
        // The fd closes here; the cancelled receive completes on its own.
        true
    }
}
