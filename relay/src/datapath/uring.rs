//! The io_uring datapath: one ring per worker (single issuer, deferred task
//! running), a provided-buffer ring, a multishot recvmsg on every UDP
//! socket (listeners and relay sockets, all registered files), and sends
//! that point into the receive buffer, submitted together with the next
//! wait. A buffer goes back to the ring when its send completes.
//!
//! TCP and TLS: a multishot accept on each stream listener, a multishot
//! receive into the same provided buffers on each connection (a buffer goes
//! back as soon as its frames are handled: what they send to peers leaves
//! at once with `sendto`), and at most one send in flight per connection,
//! of the bytes its bounded queue holds.
//!
//! Where io_uring cannot run (Docker's default seccomp profile,
//! `kernel.io_uring_disabled`, gVisor, old kernels) [`probe`] says why and
//! the node uses epoll.
//!
//! Every `unsafe` block of the relay is in this file but one: the
//! setsockopt for DONT-FRAGMENT in `socket.rs` (neither nix nor socket2
//! wraps it). The bench keeps its own, in `bench/src/engine.rs`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, Fixed, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};
use socket2::SockAddr;

use super::stream::{self, Conn, Conns, StreamLogs, TLS_CHUNK};
use super::tcp_relay::{TcpEvent, TcpRelays};
use super::{DataConnection, DatapathCounters, RelaySockets, Spare, StreamCounters, Worker, now};
use crate::proto::{ListenerId, PEER_HEADROOM, PEER_TAILROOM, REPLY_BUFFER, RelayToken, Verdict, Via};

/// Submission queue entries.
const ENTRIES: u32 = 4096;
/// Provided receive buffers by default (a power of two).
pub(crate) const DEFAULT_BUFFERS: u16 = 512;
/// Bytes the kernel reserves for the source address in each received
/// buffer. With the 16-byte `io_uring_recvmsg_out` header the payload
/// starts at byte 80: headroom for the largest header the relay writes.
const NAME_LEN: u32 = 64;
const PAYLOAD_OFFSET: usize = 16 + NAME_LEN as usize;
/// One receive buffer: header, name, the largest UDP payload, tailroom.
const BUF_SIZE: usize = PAYLOAD_OFFSET + 65_535 + PEER_TAILROOM;
/// The buffer group of the provided-buffer ring.
const BGID: u16 = 0;
/// Reply buffers for STUN responses in flight.
const REPLIES: usize = 256;
/// Most registered file slots (listeners first, then relay sockets by
/// token); the kernel also caps them at the fd limit.
const MAX_FIXED_FILES: u32 = 1 << 17;

const _: () = assert!(PAYLOAD_OFFSET >= PEER_HEADROOM);

/// What a completion is about: the top byte of `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    RecvListener = 1,
    RecvRelay = 2,
    Send = 3,
    Wake = 4,
    Cancel = 5,
    Accept = 6,
    RecvConn = 7,
    SendConn = 8,
}

fn user_data(op: Op, generation: u32, index: u32) -> u64 {
    (op as u64) << 56 | u64::from(generation & 0x00FF_FFFF) << 32 | u64::from(index)
}

fn decode(user_data: u64) -> (Option<Op>, u32, u32) {
    let op = match user_data >> 56 {
        1 => Some(Op::RecvListener),
        2 => Some(Op::RecvRelay),
        3 => Some(Op::Send),
        4 => Some(Op::Wake),
        5 => Some(Op::Cancel),
        6 => Some(Op::Accept),
        7 => Some(Op::RecvConn),
        8 => Some(Op::SendConn),
        _ => None,
    };
    let generation = ((user_data >> 32) & 0x00FF_FFFF) as u32;
    (op, generation, (user_data & 0xFFFF_FFFF) as u32)
}

/// Checks that this kernel and process can run the io_uring datapath.
///
/// # Errors
/// Why not: the ring cannot be created (seccomp, `io_uring_disabled`), an
/// opcode is missing, or buffer rings are not supported.
pub(crate) fn probe() -> io::Result<()> {
    // On a thread of its own: a ring's teardown may notify the thread that
    // made it, interrupting that thread's blocking calls.
    std::thread::spawn(probe_here).join().unwrap_or_else(|_| Err(io::Error::other("io_uring probe panicked")))
}

fn probe_here() -> io::Result<()> {
    let ring = build_ring(8)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::RecvMsgMulti::CODE, "recvmsg"),
        (opcode::Send::CODE, "send"),
        (opcode::AsyncCancel::CODE, "async cancel"),
        (opcode::PollAdd::CODE, "poll"),
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("io_uring lacks {name}")));
        }
    }
    let mut bufs = BufRing::new(2)?;
    bufs.register(&ring)?;
    ring.submitter().unregister_buf_ring(BGID)?;
    Ok(())
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_submit_all()
        .build(entries)
}

/// The provided-buffer ring and the buffers it hands out.
struct BufRing {
    entries: *mut BufRingEntry,
    memory: *mut u8,
    /// Number of buffers, a power of two.
    count: u16,
    /// Our copy of the tail; published to the kernel by [`Self::publish`].
    tail: u16,
    /// Buffers the kernel can use now.
    available: usize,
}

impl BufRing {
    fn layouts(count: u16) -> io::Result<(Layout, Layout)> {
        let bad = |_| io::Error::new(io::ErrorKind::InvalidInput, "bad buffer ring size");
        let ring = Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), 4096).map_err(bad)?;
        let memory = Layout::from_size_align(usize::from(count) * BUF_SIZE, 4096).map_err(bad)?;
        Ok((ring, memory))
    }

    /// Allocates the ring and `count` buffers (a power of two). Allocate
    /// it before the `IoUring` it is registered with, so that the ring is
    /// dropped first.
    fn new(count: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32_768 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "io_uring buffers must be a power of two"));
        }
        let (ring, memory) = Self::layouts(count)?;
        // SAFETY: both layouts have non-zero size. Zeroed memory is a valid
        // (empty) buffer ring; the buffers' pages are only touched as
        // datagrams land in them.
        let (entries, memory) = unsafe { (alloc_zeroed(ring), alloc_zeroed(memory)) };
        if entries.is_null() || memory.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate receive buffers"));
        }
        Ok(Self { entries: entries.cast(), memory, count, tail: 0, available: 0 })
    }

    /// Registers the ring with `ring` and provides every buffer.
    fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the ring memory is page-aligned, `count` entries long, and
        // outlives the registration: it is freed only in `Drop`, after the
        // `IoUring` (declared later, or an earlier field of `Loop`) is gone
        // or has unregistered it.
        unsafe { ring.submitter().register_buf_ring_with_flags(self.entries as u64, self.count, BGID, 0)? };
        for bid in 0..self.count {
            self.provide(bid);
        }
        self.publish();
        Ok(())
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    fn provide(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let bid = bid.min(self.count - 1);
        // SAFETY: `index` < count, inside the ring allocation; the kernel
        // only reads entries up to the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: `bid` < count, so the buffer lies inside `memory`.
        entry.set_addr(unsafe { self.memory.add(usize::from(bid) * BUF_SIZE) } as u64);
        entry.set_len(u32::try_from(BUF_SIZE - PEER_TAILROOM).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.available += 1;
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's `resv`, inside
        // the ring allocation, and is shared with the kernel: write it
        // atomically, with release ordering so the entries are seen first.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Buffer `bid`, whole.
    fn buffer(&mut self, bid: u16) -> &mut [u8] {
        let bid = usize::from(bid.min(self.count - 1));
        // SAFETY: inside `memory`; the kernel is done with this buffer (its
        // completion was reaped) and does not get it back before `provide`.
        unsafe { std::slice::from_raw_parts_mut(self.memory.add(bid * BUF_SIZE), BUF_SIZE) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if let Ok((ring, memory)) = Self::layouts(self.count) {
            // SAFETY: allocated in `new` with these layouts; the ring that
            // used them is gone (dropped earlier) or unregistered them.
            unsafe {
                dealloc(self.entries.cast(), ring);
                dealloc(self.memory, memory);
            }
        }
    }
}

/// The buffer an in-flight send's bytes are in, kept until it completes.
#[derive(Debug)]
enum SendBuffer {
    /// A provided receive buffer.
    Buffer(u16),
    /// A reply buffer.
    Reply(usize),
    /// A packet from another worker (its buffer goes back to the pool).
    Handoff(Box<[u8]>),
}

/// `range` of the bytes in `buffer`.
fn send_bytes<'a>(
    bufs: &'a mut BufRing,
    replies: &'a [Box<[u8]>],
    buffer: &'a SendBuffer,
    range: std::ops::Range<usize>,
) -> Option<&'a [u8]> {
    match buffer {
        SendBuffer::Buffer(bid) => bufs.buffer(*bid).get(range),
        SendBuffer::Reply(r) => replies.get(*r).and_then(|b| b.get(range)),
        SendBuffer::Handoff(b) => b.get(range),
    }
}

/// An in-flight send: its destination must live until completion.
struct SendSlot {
    to: SockAddr,
    buffer: SendBuffer,
}

struct RelaySocket {
    socket: UdpSocket,
    generation: u32,
}

/// A connection's socket and operations in flight.
#[derive(Debug)]
struct ConnIo {
    socket: TcpStream,
    generation: u32,
    /// A multishot receive is armed.
    receiving: bool,
    /// A send of the stream's `next_write` bytes is in flight.
    sending: bool,
    /// A ConnectionBind made it a data connection: once its operations in
    /// flight are done it goes to the TCP relays instead of closing.
    data_connection: Option<u32>,
}

/// The worker's sockets and the ring, lent to the core to open and close
/// relay sockets.
struct UringSockets {
    ring: IoUring,
    listeners: usize,
    relays: Vec<Option<RelaySocket>>,
    next_generation: u32,
    msghdr: Box<libc::msghdr>,
    /// Size of the registered file table.
    fixed_files: u32,
    worker: usize,
    tcp: std::sync::Arc<TcpRelays>,
    /// Client connections a ConnectionBind turned into data connections.
    data_connections: Vec<DataConnection>,
}

impl UringSockets {
    /// Queues an operation; when the submission queue is full, submits
    /// what is queued and tries once more. `false` if it still does not
    /// fit: the caller gives back what the operation would have held.
    fn push(&mut self, entry: &squeue::Entry) -> bool {
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
    fn enter(&self, timeout: Option<Duration>) -> io::Result<()> {
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
    fn arm_recv(&mut self, fixed: u32, user_data: u64) -> bool {
        let entry = opcode::RecvMsgMulti::new(Fixed(fixed), &raw const *self.msghdr, BGID).build().user_data(user_data);
        self.push(&entry)
    }

    fn relay_fixed(&self, token: RelayToken) -> Option<u32> {
        let index = u32::try_from(self.listeners).ok()?.checked_add(token.0)?;
        (index < self.fixed_files).then_some(index)
    }
}

super::relay_sockets!(UringSockets);

impl RelaySockets for UringSockets {
    fn install(&mut self, token: RelayToken, socket: UdpSocket) -> io::Result<()> {
        let fixed = self.relay_fixed(token).ok_or_else(|| io::Error::other("too many relay sockets on this worker"))?;
        self.ring.submitter().register_files_update(fixed, &[socket.as_raw_fd()])?;
        self.next_generation = self.next_generation.wrapping_add(1) & 0x00FF_FFFF;
        let generation = self.next_generation;
        let index = token.0 as usize;
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
        let Some(socket) = self.relays.get_mut(token.0 as usize).and_then(Option::take) else {
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

/// The loop's state. Field order matters: `io` (the ring) drops before
/// `bufs` (the memory it may still reference).
struct Loop {
    io: UringSockets,
    bufs: BufRing,
    worker: Worker,
    _listeners: Vec<UdpSocket>,
    streams: Vec<(TcpListener, Option<std::sync::Arc<rustls::ServerConfig>>)>,
    conns: Conns<ConnIo>,
    next_conn_generation: u32,
    stream_counters: StreamCounters,
    /// Connections with bytes to write.
    dirty: Vec<usize>,
    stream_reply: Box<[u8]>,
    /// TLS plaintext, before framing.
    plain: Box<[u8]>,
    /// A descriptor kept for refusing connections when there are none left.
    spare: Spare,
    /// Log lines a client can cause.
    logs: StreamLogs,
    next_sweep: std::time::Instant,
    sends: Vec<Option<SendSlot>>,
    free_sends: Vec<usize>,
    replies: Vec<Box<[u8]>>,
    free_replies: Vec<usize>,
    /// Receives whose multishot ended and must be re-armed.
    rearm: Vec<u64>,
    /// Operations that failed, re-armed after a back-off (at the time
    /// given): never in a tight loop.
    delayed: Vec<(std::time::Instant, u64)>,
    /// Consecutive failures of each operation that failed lately.
    failures: std::collections::HashMap<u64, u32>,
    completions: Vec<(u64, i32, u32)>,
    send_errors: u64,
    truncated: u64,
    out_of_buffers: u64,
    /// Requests dropped because every reply buffer was in flight.
    replies_exhausted: u64,
}

/// Runs a worker until it is told to shut down.
pub(crate) fn run(mut worker: Worker) -> io::Result<()> {
    let mut bufs = BufRing::new(worker.io_uring_buffers)?;
    let ring = build_ring(ENTRIES)?;
    bufs.register(&ring)?;
    let fixed_files = fixed_file_slots();
    ring.submitter().register_files_sparse(fixed_files)?;
    let listeners: Vec<UdpSocket> = std::mem::take(&mut worker.listeners);
    let streams = worker.streams.drain(..).map(|l| (l.socket, l.tls)).collect();
    let fds: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    ring.submitter().register_files_update(0, &fds)?;
    // SAFETY: an all-zero msghdr is valid (no iovecs, no name).
    let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msghdr.msg_namelen = NAME_LEN;
    let capacity = usize::from(bufs.count) + REPLIES;
    let mut l = Loop {
        io: UringSockets {
            ring,
            listeners: listeners.len(),
            relays: Vec::new(),
            next_generation: 0,
            msghdr,
            fixed_files,
            worker: worker.id,
            tcp: worker.tcp.clone(),
            data_connections: Vec::new(),
        },
        bufs,
        worker,
        _listeners: listeners,
        streams,
        conns: Conns::default(),
        next_conn_generation: 0,
        stream_counters: StreamCounters::default(),
        dirty: Vec::new(),
        stream_reply: vec![0u8; REPLY_BUFFER].into_boxed_slice(),
        plain: vec![0u8; TLS_CHUNK].into_boxed_slice(),
        spare: Spare::new(),
        logs: StreamLogs::default(),
        next_sweep: now() + SWEEP,
        sends: (0..capacity).map(|_| None).collect(),
        free_sends: (0..capacity).rev().collect(),
        replies: (0..REPLIES).map(|_| vec![0u8; REPLY_BUFFER].into_boxed_slice()).collect(),
        free_replies: (0..REPLIES).rev().collect(),
        rearm: Vec::new(),
        delayed: Vec::new(),
        failures: std::collections::HashMap::new(),
        completions: Vec::with_capacity(1024),
        send_errors: 0,
        truncated: 0,
        out_of_buffers: 0,
        replies_exhausted: 0,
    };
    for i in 0..l.io.listeners {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        if !l.io.arm_recv(i, user_data(Op::RecvListener, 0, i)) {
            return Err(io::Error::other("cannot queue the listeners' receives"));
        }
    }
    for i in 0..l.streams.len() {
        if !l.arm_accept(i) {
            return Err(io::Error::other("cannot queue the stream listeners' accepts"));
        }
    }
    l.arm_wake();
    l.worker.report_ready();
    loop {
        let mut deadline = l.worker.server.poll_timeout();
        if l.conns.len() > 0 {
            deadline = Some(deadline.map_or(l.next_sweep, |d| d.min(l.next_sweep)));
        }
        if let Some(at) = l.delayed.iter().map(|(at, _)| *at).min() {
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        l.worker.idle(deadline, |timeout| l.io.enter(timeout))?;
        let now = now();
        l.worker.server.handle_timeout(now, &mut l.io);
        if now >= l.next_sweep {
            l.next_sweep = now + SWEEP;
            l.sweep(now);
        }
        l.completions.clear();
        l.completions.extend(l.io.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
        if !l.completions.is_empty() {
            l.worker.worked(now);
        }
        let completions = std::mem::take(&mut l.completions);
        for &(data, result, flags) in &completions {
            if l.complete(data, result, flags) {
                return Ok(());
            }
        }
        l.completions = completions;
        l.handoffs_in();
        l.write_conns();
        l.bufs.publish();
        l.rearm_receives();
    }
}

/// How often connections are checked for their deadlines.
const SWEEP: Duration = Duration::from_secs(1);
/// Most packets from other workers relayed per round of the loop.
const HANDOFFS_PER_ROUND: usize = 1024;

impl Loop {
    fn arm_wake(&mut self) {
        let fd = std::os::fd::AsFd::as_fd(&*self.worker.wake).as_raw_fd();
        let entry = opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(Op::Wake, 0, 0));
        if !self.io.push(&entry) {
            // Try again at the end of this round of completions.
            self.rearm.push(user_data(Op::Wake, 0, 0));
        }
    }

    /// A multishot operation ended: re-armed at once if it ended normally
    /// (or for want of buffers, which come back), after a growing back-off
    /// if it failed.
    fn ended(&mut self, data: u64, result: i32) {
        if result >= 0 || result == -libc::ENOBUFS {
            self.rearm.push(data);
            return;
        }
        let failures = self.failures.entry(data).or_insert(0);
        *failures += 1;
        self.delayed.push((now() + super::backoff(*failures - 1), data));
    }

    /// An operation completed well: its failures are forgotten.
    fn succeeded(&mut self, data: u64) {
        if !self.failures.is_empty() {
            self.failures.remove(&data);
        }
    }

    /// Handles one completion; `true` on shutdown.
    fn complete(&mut self, data: u64, result: i32, flags: u32) -> bool {
        let (op, generation, index) = decode(data);
        let buffer = cqueue::buffer_select(flags);
        if buffer.is_some() {
            self.bufs.available = self.bufs.available.saturating_sub(1);
        }
        if result >= 0 {
            self.succeeded(data);
        }
        match op {
            Some(Op::RecvListener) => {
                if !cqueue::more(flags) {
                    self.ended(data, result);
                }
                self.received(buffer, result, |l, bid, from, payload| l.client_datagram(index, bid, from, payload));
            }
            Some(Op::RecvRelay) => {
                let current = self.io.relays.get(index as usize).and_then(Option::as_ref).map(|r| r.generation);
                if current != Some(generation) {
                    // A closed relay socket: give the buffer back, nothing else.
                    if let Some(bid) = buffer {
                        self.bufs.provide(bid);
                    }
                    return false;
                }
                if !cqueue::more(flags) {
                    self.ended(data, result);
                }
                self.received(buffer, result, |l, bid, from, payload| l.peer_datagram(index, bid, from, payload));
            }
            Some(Op::Send) => self.sent(index as usize, result),
            Some(Op::Wake) => {
                if !cqueue::more(flags) {
                    self.arm_wake();
                }
                let stop = self.worker.commands(DatapathCounters {
                    send_errors: self.send_errors + self.replies_exhausted,
                    truncated: self.truncated,
                    out_of_buffers: self.out_of_buffers,
                    streams: StreamCounters { open: self.conns.len() as u64, ..self.stream_counters },
                });
                while let Ok(event) = self.worker.tcp_events.try_recv() {
                    self.tcp_event(event);
                }
                return stop;
            }
            Some(Op::Accept) => {
                if !cqueue::more(flags) {
                    self.ended(data, result);
                }
                self.accepted(index as usize, result);
            }
            Some(Op::RecvConn) => self.conn_received(index as usize, generation, buffer, result, flags),
            Some(Op::SendConn) => self.conn_sent(index as usize, generation, result),
            Some(Op::Cancel) | None => {
                if let Some(bid) = buffer {
                    self.bufs.provide(bid);
                }
            }
        }
        false
    }

    /// Parses a multishot receive's buffer and hands the datagram to `then`,
    /// which owns returning the buffer.
    fn received(
        &mut self,
        buffer: Option<u16>,
        result: i32,
        then: impl FnOnce(&mut Self, u16, SocketAddr, std::ops::Range<usize>),
    ) {
        let Some(bid) = buffer else {
            if result == -libc::ENOBUFS {
                self.out_of_buffers += 1;
            }
            return;
        };
        let len = usize::try_from(result).unwrap_or(0);
        let parsed = {
            let msghdr = &*self.io.msghdr;
            let buf = self.bufs.buffer(bid);
            let base = buf.as_ptr() as usize;
            RecvMsgOut::parse(buf.get(..len).unwrap_or_default(), msghdr).ok().and_then(|out| {
                if out.is_payload_truncated() {
                    return Some(Err(()));
                }
                let from = parse_name(out.name_data())?;
                let payload = out.payload_data();
                let start = payload.as_ptr() as usize - base;
                Some(Ok((from, start..start + payload.len())))
            })
        };
        match parsed {
            Some(Ok((from, payload))) => then(self, bid, from, payload),
            Some(Err(())) => {
                self.truncated += 1;
                self.bufs.provide(bid);
            }
            None => self.bufs.provide(bid),
        }
    }

    fn client_datagram(&mut self, listener: u32, bid: u16, from: SocketAddr, payload: std::ops::Range<usize>) {
        let Ok(listener) = u16::try_from(listener) else { return self.bufs.provide(bid) };
        let reply_index = self.free_replies.pop();
        if reply_index.is_none()
            && self.bufs.buffer(bid).get(payload.clone()).map(ip2p_wire::classify) == Some(ip2p_wire::PacketKind::Stun)
        {
            // No reply buffer: drop the request before it changes anything;
            // the client retransmits it. (Data needs no reply buffer.)
            self.replies_exhausted += 1;
            return self.bufs.provide(bid);
        }
        let mut scratch = [0u8; 0];
        let now = now();
        let verdict = {
            let packet = self.bufs.buffer(bid).get(payload.clone()).unwrap_or_default();
            // Disjoint borrows: the packet lives in `bufs`, the reply in
            // `replies`, the sockets in `io`.
            let reply = match reply_index.and_then(|i| self.replies.get_mut(i)) {
                Some(r) => &mut r[..],
                None => &mut scratch[..],
            };
            self.worker.handle_client(now, ListenerId::udp(listener), from, packet, reply, &mut self.io)
        };
        match verdict {
            Verdict::Forward(mut t) => {
                if let Some(r) = reply_index {
                    self.free_replies.push(r);
                }
                // The payload has the buffer's headroom (PAYLOAD_OFFSET)
                // before it: enough to frame it for another allocation.
                t.range = payload.start + t.range.start..payload.start + t.range.end;
                match self.worker.short_circuit(now, t, self.bufs.buffer(bid)) {
                    Some(Verdict::Forward(t)) => self.send(t.via, t.to, SendBuffer::Buffer(bid), t.range),
                    _ => self.bufs.provide(bid),
                }
            }
            Verdict::Reply(t) => {
                self.bufs.provide(bid);
                match reply_index {
                    Some(r) => self.send(t.via, t.to, SendBuffer::Reply(r), t.range),
                    None => self.send_errors += 1,
                }
            }
            Verdict::Drop(_) => {
                self.bufs.provide(bid);
                if let Some(r) = reply_index {
                    self.free_replies.push(r);
                }
            }
        }
    }

    /// Relays what other workers passed to this one's allocations.
    fn handoffs_in(&mut self) {
        let now = now();
        for _ in 0..HANDOFFS_PER_ROUND {
            // With every send slot in flight, the rest wait in the inbox.
            if self.free_sends.is_empty() {
                return;
            }
            let Some(mut p) = self.worker.handoffs.recv(self.worker.id) else { return };
            match self.worker.server.handoff(now, p.to, p.from, &mut p.buf, p.data) {
                Verdict::Forward(t) => self.send(t.via, t.to, SendBuffer::Handoff(p.buf), t.range),
                Verdict::Reply(_) | Verdict::Drop(_) => self.worker.handoffs.recycle(p.buf),
            }
        }
    }

    fn peer_datagram(&mut self, token: u32, bid: u16, from: SocketAddr, payload: std::ops::Range<usize>) {
        let buf = self.bufs.buffer(bid);
        match self.worker.server.handle_peer(now(), RelayToken(token), from, buf, payload) {
            Verdict::Forward(t) => self.send(t.via, t.to, SendBuffer::Buffer(bid), t.range),
            Verdict::Reply(_) | Verdict::Drop(_) => self.bufs.provide(bid),
        }
    }

    /// Queues a send of `range` of the held buffer to `to` from `via`.
    fn send(&mut self, via: Via, to: SocketAddr, buffer: SendBuffer, range: std::ops::Range<usize>) {
        if let Via::Listener(l) = via
            && l.transport == ip2p_wire::Transport::Stream
        {
            // To a connection: into its queue, and the buffer comes back.
            let bytes = send_bytes(&mut self.bufs, &self.replies, &buffer, range);
            match self.conns.find(l, to) {
                Some((slot, conn)) => {
                    if conn.stream.send(bytes.unwrap_or_default()) {
                        self.dirty.push(slot);
                    } else {
                        self.stream_counters.dropped_backlog += 1;
                    }
                }
                None => self.send_errors += 1,
            }
            return self.release(buffer);
        }
        let fixed = match via {
            Via::Listener(l) => Some(u32::from(l.index)),
            Via::Relay(t) => self.io.relays.get(t.0 as usize).and_then(Option::as_ref).and(self.io.relay_fixed(t)),
        };
        let (Some(fixed), Some(slot)) = (fixed, self.free_sends.pop()) else {
            self.send_errors += 1;
            return self.release(buffer);
        };
        let bytes = send_bytes(&mut self.bufs, &self.replies, &buffer, range.clone());
        // The bytes stay put until the send completes: a provided or reply
        // buffer is not reused before, and a boxed slice does not move
        // when its box does.
        let bytes: *const u8 = bytes.map_or(std::ptr::null(), <[u8]>::as_ptr);
        let Some(entry) = self.sends.get_mut(slot) else { return self.release(buffer) };
        let stored = entry.insert(SendSlot { to: SockAddr::from(to), buffer });
        let len = u32::try_from(range.len()).unwrap_or(0);
        if bytes.is_null() {
            self.send_errors += 1;
            return self.sent(slot, 0);
        }
        let sqe = opcode::Send::new(Fixed(fixed), bytes, len)
            .dest_addr(stored.to.as_ptr().cast())
            .dest_addr_len(stored.to.len())
            .build()
            .user_data(user_data(Op::Send, 0, u32::try_from(slot).unwrap_or(u32::MAX)));
        if !self.io.push(&sqe) {
            self.send_errors += 1;
            self.sent(slot, 0);
        }
    }

    fn sent(&mut self, slot: usize, result: i32) {
        if result < 0 {
            self.send_errors += 1;
        }
        if let Some(done) = self.sends.get_mut(slot).and_then(Option::take) {
            self.release(done.buffer);
            self.free_sends.push(slot);
        }
    }

    fn release(&mut self, buffer: SendBuffer) {
        match buffer {
            SendBuffer::Buffer(bid) => self.bufs.provide(bid),
            SendBuffer::Reply(r) => self.free_replies.push(r),
            SendBuffer::Handoff(b) => self.worker.handoffs.recycle(b),
        }
    }

    fn arm_accept(&mut self, index: usize) -> bool {
        let Some((listener, _)) = self.streams.get(index) else { return false };
        let fd = listener.as_raw_fd();
        let data = user_data(Op::Accept, 0, u32::try_from(index).unwrap_or(u32::MAX));
        self.io.push(&opcode::AcceptMulti::new(Fd(fd)).build().user_data(data))
    }

    /// A connection came in on stream listener `index` (`result` is its fd).
    fn accepted(&mut self, index: usize, result: i32) {
        if result < 0 {
            // Out of descriptors: the connections waiting in the backlog
            // are refused with the reserve; the accept is re-armed after a
            // back-off (see `ended`).
            let e = io::Error::from_raw_os_error(-result);
            let refused = match self.streams.get(index) {
                Some((listener, _)) if Spare::exhausted(&e) => self.spare.shed(|| listener.accept()),
                _ => 0,
            };
            self.stream_counters.refused += refused;
            if let Some(unlogged) = self.logs.accept.admit(now()) {
                tracing::warn!(error = %e, refused, unlogged, "accept failed");
            }
            return;
        }
        // SAFETY: a successful accept's result is a new fd that nothing
        // else owns.
        let socket = unsafe { TcpStream::from_raw_fd(result) };
        let (Ok(listener), Some((_, tls)), Ok(peer)) =
            (u16::try_from(index).map(ListenerId::stream), self.streams.get(index), socket.peer_addr())
        else {
            return;
        };
        let Some((ticket, framing, wait)) = stream::admit(&self.worker.limits, tls.as_ref(), peer.ip()) else {
            self.stream_counters.refused += 1;
            return;
        };
        let _ = socket.set_nodelay(true);
        self.next_conn_generation = self.next_conn_generation.wrapping_add(1) & 0x00FF_FFFF;
        let generation = self.next_conn_generation;
        let io = ConnIo { socket, generation, receiving: false, sending: false, data_connection: None };
        let conn =
            Conn { listener, peer, stream: framing, io, ticket: Some(ticket), deadline: now() + wait, closing: false };
        let slot = self.conns.insert(conn);
        self.stream_counters.accepted += 1;
        if !self.arm_conn(slot) {
            self.close(slot, "cannot queue its receive");
        }
    }

    fn arm_conn(&mut self, slot: usize) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else { return false };
        let data = user_data(Op::RecvConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
        let entry = opcode::RecvMulti::new(Fd(conn.io.socket.as_raw_fd()), BGID).build().user_data(data);
        conn.io.receiving = self.io.push(&entry);
        conn.io.receiving
    }

    /// A connection's receive completed: hand its frames to the core, then
    /// give the buffer back (nothing sent holds it).
    fn conn_received(&mut self, slot: usize, generation: u32, buffer: Option<u16>, result: i32, flags: u32) {
        let live = self.conns.get_mut(slot).filter(|c| c.io.generation == generation);
        let Some(conn) = live else {
            if let Some(bid) = buffer {
                self.bufs.provide(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            conn.io.receiving = false;
        }
        if conn.closing {
            if let Some(bid) = buffer {
                self.bufs.provide(bid);
            }
            return self.finish_close(slot);
        }
        let mut closed = None;
        match (buffer, result) {
            (Some(bid), 1..) => {
                closed = self.conn_bytes(slot, bid, usize::try_from(result).unwrap_or(0));
                self.bufs.provide(bid);
            }
            (_, 0) => closed = Some("closed by the client"),
            (_, e) if e == -libc::ENOBUFS => self.out_of_buffers += 1,
            (_, _) => closed = Some("reset"),
        }
        if let Some(b) = buffer
            && result <= 0
        {
            self.bufs.provide(b);
        }
        self.dirty.push(slot);
        if let Some(why) = closed {
            self.write_conns();
            return self.close(slot, why);
        }
        if !self.io.data_connections.is_empty() {
            return self.splice_data_connections();
        }
        let receiving = self.conns.get_mut(slot).is_some_and(|c| c.io.receiving);
        if !receiving {
            self.rearm.push(user_data(Op::RecvConn, generation, u32::try_from(slot).unwrap_or(u32::MAX)));
        }
    }

    /// Frames what connection `slot` sent in buffer `bid`; `Some` if it
    /// must close.
    fn conn_bytes(&mut self, slot: usize, bid: u16, len: usize) -> Option<&'static str> {
        let Self { io, bufs, worker, conns, stream_reply, plain, .. } = self;
        let conn = conns.get_mut(slot)?;
        let (listener, peer) = (conn.listener, conn.peer);
        let bytes = bufs.buffer(bid).get(..len).unwrap_or_default();
        let now = now();
        let mut send_errors = 0;
        let result = conn.stream.receive(bytes, stream_reply, plain, &mut |frame, reply| match worker
            .handle_client(now, listener, peer, frame, reply, io)
        {
            Verdict::Forward(t) if worker.short_circuit_copy(&t, frame) => None,
            Verdict::Forward(t) => {
                let relay = match t.via {
                    Via::Relay(token) => io.relays.get(token.0 as usize).and_then(Option::as_ref),
                    Via::Listener(_) => None,
                };
                let sent = relay.zip(frame.get(t.range)).map(|(r, b)| r.socket.send_to(b, t.to));
                if !matches!(sent, Some(Ok(_))) {
                    send_errors += 1;
                }
                None
            }
            Verdict::Reply(t) => Some(t.range.end),
            Verdict::Drop(_) => None,
        });
        self.send_errors += send_errors;
        match result {
            Ok(dropped) => {
                self.stream_counters.dropped_backlog += dropped;
                if !conn.stream.trusted() && worker.server.has_allocation(listener, peer) {
                    conn.stream.trust();
                }
                None
            }
            Err(e) => {
                self.logs.protocol_error(&mut self.stream_counters, peer, &e);
                Some("protocol error")
            }
        }
    }

    fn conn_sent(&mut self, slot: usize, generation: u32, result: i32) {
        let Some(conn) = self.conns.get_mut(slot).filter(|c| c.io.generation == generation) else { return };
        conn.io.sending = false;
        let written = usize::try_from(result).ok().filter(|&n| n > 0);
        if let Some(n) = written {
            // Even while closing: a handed-over connection's unsent bytes
            // must not repeat what went.
            conn.stream.wrote(n);
        }
        if conn.closing {
            return self.finish_close(slot);
        }
        match written {
            Some(_) => self.dirty.push(slot),
            None => self.close(slot, "write failed"),
        }
    }

    /// Starts a send on each connection with bytes queued and none in flight.
    fn write_conns(&mut self) {
        while let Some(slot) = self.dirty.pop() {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            if conn.io.sending || conn.closing {
                continue;
            }
            let fd = conn.io.socket.as_raw_fd();
            let data = user_data(Op::SendConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
            let Some(bytes) = conn.stream.next_write() else { continue };
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            // The bytes stay put until the completion: see `Stream::next_write`.
            let entry =
                opcode::Send::new(Fd(fd), bytes.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build().user_data(data);
            if self.io.push(&entry) {
                conn.io.sending = true;
            }
        }
    }

    /// Closes connections past their deadline: a TLS handshake that takes
    /// too long, or no allocation for too long.
    fn sweep(&mut self, now: std::time::Instant) {
        for slot in self.conns.overdue(now) {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            if !conn.stream.handshaking() && self.worker.server.has_allocation(conn.listener, conn.peer) {
                conn.deadline = now + self.worker.limits.idle;
                continue;
            }
            self.stream_counters.closed_idle += 1;
            self.close(slot, "idle");
        }
        self.io.tcp.sweep(now);
    }

    /// Starts handing the connections a ConnectionBind claimed to the TCP
    /// relays: their receive is cancelled (not the socket shut down), and
    /// once nothing of theirs is in flight [`Self::finish_close`] passes
    /// them on with their TLS state and unsent bytes (the response).
    fn splice_data_connections(&mut self) {
        for h in std::mem::take(&mut self.io.data_connections) {
            let Some((slot, conn)) = self.conns.find(h.listener, h.client) else { continue };
            conn.io.data_connection = Some(h.conn);
            let recv = user_data(Op::RecvConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
            let receiving = conn.io.receiving;
            self.conns.detach(slot);
            if receiving {
                let _ = self.io.push(&opcode::AsyncCancel::new(recv).build().user_data(user_data(Op::Cancel, 0, 0)));
            }
            self.finish_close(slot);
        }
    }

    /// A TCP relay's news for the core; what the core answers goes to the
    /// client's control connection.
    fn tcp_event(&mut self, event: TcpEvent) {
        let reply = &mut self.stream_reply[..];
        let t = match event {
            TcpEvent::Connected { token, peer, conn } => self.worker.server.tcp_connected(token, peer, conn, reply),
            TcpEvent::Incoming { token, peer, conn } => {
                self.worker.server.tcp_incoming(now(), token, peer, conn, reply, &mut self.io)
            }
        };
        let Some(t) = t else { return };
        let Via::Listener(listener) = t.via else { return };
        let bytes = self.stream_reply.get(t.range).unwrap_or_default();
        if let Some((slot, conn)) = self.conns.find(listener, t.to)
            && conn.stream.send(bytes)
        {
            self.dirty.push(slot);
        }
    }

    /// Closes a connection: its allocation goes, its socket is shut down,
    /// and its slot is freed once no operation of it is in flight.
    fn close(&mut self, slot: usize, why: &str) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.closing {
            return;
        }
        let (listener, peer) = (conn.listener, conn.peer);
        let _ = conn.io.socket.shutdown(std::net::Shutdown::Both);
        // Its place in the limits goes now, not when its last operation ends.
        conn.ticket = None;
        self.conns.detach(slot);
        self.worker.server.client_closed(now(), listener, peer, &mut self.io);
        tracing::debug!(client = %peer, why, "connection closed");
        self.finish_close(slot);
    }

    fn finish_close(&mut self, slot: usize) {
        if !self.conns.get_mut(slot).is_some_and(|c| c.closing && !c.io.receiving && !c.io.sending) {
            return;
        }
        let Some(conn) = self.conns.remove(slot) else { return };
        if let Some(id) = conn.io.data_connection {
            let (tls, unsent) = conn.stream.into_parts();
            let _ = conn.io.socket.set_nonblocking(false);
            self.io.tcp.splice(id, conn.io.socket, tls, unsent, conn.ticket);
        }
    }

    /// Re-arms receives whose multishot ended, once buffers are available
    /// again (an ENOBUFS end with none would fail at once).
    fn rearm_receives(&mut self) {
        if !self.delayed.is_empty() {
            let now = now();
            let (due, later): (Vec<_>, Vec<_>) = self.delayed.drain(..).partition(|(at, _)| *at <= now);
            self.delayed = later;
            self.rearm.extend(due.into_iter().map(|(_, data)| data));
        }
        if self.bufs.available == 0 {
            return;
        }
        for data in std::mem::take(&mut self.rearm) {
            let (op, generation, index) = decode(data);
            match op {
                Some(Op::Wake) => {
                    self.arm_wake();
                    continue;
                }
                Some(Op::Accept) => {
                    if !self.arm_accept(index as usize) {
                        self.rearm.push(data);
                    }
                    continue;
                }
                Some(Op::RecvConn) => {
                    let slot = index as usize;
                    let live = self.conns.get_mut(slot).filter(|c| c.io.generation == generation && !c.closing);
                    if live.is_some_and(|c| !c.io.receiving) && !self.arm_conn(slot) {
                        self.rearm.push(data);
                    }
                    continue;
                }
                _ => {}
            }
            let fixed = match op {
                Some(Op::RecvListener) => Some(index),
                Some(Op::RecvRelay) => {
                    let live = self.io.relays.get(index as usize).and_then(Option::as_ref);
                    live.filter(|r| r.generation == generation).and(self.io.relay_fixed(RelayToken(index)))
                }
                _ => None,
            };
            if let Some(fixed) = fixed
                && !self.io.arm_recv(fixed, data)
            {
                self.rearm.push(data);
            }
        }
    }
}

/// Registered file slots: as many as the fd limit allows (the kernel
/// refuses more), at most [`MAX_FIXED_FILES`].
fn fixed_file_slots() -> u32 {
    let soft =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    u32::try_from(soft.min(u64::from(MAX_FIXED_FILES))).unwrap_or(1024)
}

/// The source address the kernel wrote into a received buffer.
fn parse_name(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(*name.first_chunk::<2>()?));
    let port = u16::from_be_bytes(*name.get(2..4)?.first_chunk::<2>()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = *name.get(4..8)?.first_chunk()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(*name.get(4..8)?.first_chunk()?);
            let ip: [u8; 16] = *name.get(8..24)?.first_chunk()?;
            let scope = u32::from_ne_bytes(*name.get(24..28)?.first_chunk()?);
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, flow, scope)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (op, g, i) in [(Op::RecvRelay, 0x00AB_CDEF, 77), (Op::Send, 0, u32::MAX), (Op::Wake, 1, 0)] {
            assert_eq!(decode(user_data(op, g, i)), (Some(op), g, i));
        }
    }

    #[test]
    fn socket_names_parse() {
        for a in ["127.0.0.1:5", "[::1]:7", "[2001:db8::1]:65535"] {
            let a: SocketAddr = a.parse().unwrap();
            let s = SockAddr::from(a);
            // SAFETY: `s` holds `len` initialised bytes of sockaddr.
            let bytes = unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() as usize) };
            assert_eq!(parse_name(bytes), Some(a));
        }
        assert_eq!(parse_name(&[0; 3]), None);
    }
}
