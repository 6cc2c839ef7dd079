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
//! The module's parts: `bufring` (the provided-buffer ring and the layout
//! of a receive buffer, where most of the `unsafe` is), `ops` (what a
//! completion is about), `sockets` (the ring and the relay sockets lent to
//! the core), this file (the loop and UDP), `conns` (TCP and TLS
//! connections). Every `unsafe` block of the relay's datapaths is in this
//! folder but one, the setsockopt for DONT-FRAGMENT in `socket.rs`
//! (neither nix nor socket2 wraps it); the relay's three others take
//! ownership of the descriptors a handover accepts, receives or is passed
//! (`handover/`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::types::{Fixed, RecvMsgOut};
use io_uring::{IoUring, Probe, cqueue, opcode};
use socket2::SockAddr;

use self::bufring::{BGID, BufRing, NAME_LEN};
use self::ops::{Op, decode, user_data};
use self::sockets::{ConnIo, GsoSend, SendBuffer, SendSlot, UringSockets, send_bytes};
use super::clients::Clients;
use super::moving::Frozen;
use super::stats::DatapathCounters;
use super::worker::{Worker, WorkerSetup};
use super::{gso, now};
use ip2p_turn::{ListenerId, REPLY_BUFFER, RelayToken, Verdict, Via};
use ip2p_wire::PacketKind;

mod bufring;
mod conns;
mod ops;
mod sockets;

/// Submission queue entries.
const ENTRIES: u32 = 4096;
/// Reply buffers for STUN responses in flight.
const REPLIES: usize = 256;
/// Most registered file slots (listeners first, then relay sockets by
/// token); the kernel also caps them at the fd limit.
const MAX_FIXED_FILES: u32 = 1 << 17;

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

/// The loop's state. Field order matters: `sockets` (the ring) drops
/// before `bufs` (the memory it may still reference).
struct Loop {
    sockets: UringSockets,
    bufs: BufRing,
    worker: Worker,
    listeners: Vec<UdpSocket>,
    streams: Vec<(TcpListener, Option<std::sync::Arc<rustls::ServerConfig>>)>,
    clients: Clients<ConnIo>,
    next_conn_generation: u32,
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
    /// Datagrams to one destination held back to go as one GSO send
    /// (with `gso`): the run's head (registered file, destination) and its
    /// datagrams. Sent at the end of each round of completions.
    run: Option<gso::Run<(u32, SocketAddr)>>,
    run_parts: Vec<(SendBuffer, std::ops::Range<usize>)>,
    /// GSO sends' state for reuse: the steady state allocates nothing.
    /// Boxed: in flight, the kernel reads the header inside it.
    #[allow(clippy::vec_box)]
    gso_pool: Vec<Box<GsoSend>>,
    gso_counters: gso::GsoCounters,
}

/// Runs a worker until it is told to shut down.
pub(crate) fn run(setup: WorkerSetup) -> io::Result<()> {
    let WorkerSetup { worker, listeners, streams, io_uring_buffers, adoption, ready } = setup;
    let mut bufs = BufRing::new(io_uring_buffers)?;
    let ring = build_ring(ENTRIES)?;
    bufs.register(&ring)?;
    let fixed_files = fixed_file_slots();
    ring.submitter().register_files_sparse(fixed_files)?;
    let streams = streams.into_iter().map(|l| (l.socket, l.tls)).collect();
    let fds: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    ring.submitter().register_files_update(0, &fds)?;
    // SAFETY: an all-zero msghdr is valid (no iovecs, no name).
    let mut msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
    msghdr.msg_namelen = NAME_LEN;
    let capacity = usize::from(bufs.count) + REPLIES;
    let mut l = Loop {
        sockets: UringSockets {
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
        listeners,
        streams,
        clients: Clients::new(now()),
        next_conn_generation: 0,
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
        run: None,
        run_parts: Vec::with_capacity(gso::MAX_SEGMENTS),
        gso_pool: Vec::new(),
        gso_counters: gso::GsoCounters::default(),
    };
    for i in 0..l.sockets.listeners {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        if !l.sockets.arm_recv(i, user_data(Op::RecvListener, 0, i)) {
            return Err(io::Error::other("cannot queue the listeners' receives"));
        }
    }
    for i in 0..l.streams.len() {
        if !l.arm_accept(i) {
            return Err(io::Error::other("cannot queue the stream listeners' accepts"));
        }
    }
    l.arm_wake();
    l.worker.adopt(adoption.allocations, adoption.arrived, &mut l.sockets);
    l.adopt_conns(adoption.conns);
    let _ = ready.send(Ok(()));
    loop {
        let delayed = l.delayed.iter().map(|(at, _)| *at).min();
        let deadline = [l.worker.server.poll_timeout(), l.clients.deadline(), delayed].into_iter().flatten().min();
        l.worker.idle(deadline, |timeout| l.sockets.enter(timeout))?;
        let now = now();
        l.worker.server.handle_timeout(now, &mut l.sockets);
        for slot in l.clients.sweep(now, &l.worker) {
            l.close(slot, "idle");
        }
        l.completions.clear();
        l.completions.extend(l.sockets.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
        // Work that came from outside: a received datagram (a send's
        // completion is this worker's own doing, right after the fact).
        if l.completions.iter().any(|&(_, _, flags)| cqueue::buffer_select(flags).is_some()) {
            l.worker.worked(now);
        }
        let completions = std::mem::take(&mut l.completions);
        for &(data, result, flags) in &completions {
            if l.complete(data, result, flags) {
                return Ok(());
            }
        }
        l.completions = completions;
        l.relay_inbox();
        l.clients.answer_admissions(&mut l.worker, &l.listeners, &mut l.sockets);
        l.flush_run();
        l.write_conns();
        l.bufs.publish();
        l.rearm_receives();
        if let Some(reply) = l.worker.freeze_request.take()
            && l.freeze(&reply)?
        {
            return Ok(());
        }
    }
}

/// Most packets from other workers relayed per round of the loop.
const INBOX_PER_ROUND: usize = 1024;

impl Loop {
    fn counters(&self) -> DatapathCounters {
        DatapathCounters {
            send_errors: self.send_errors + self.replies_exhausted + self.clients.send_errors,
            truncated: self.truncated,
            out_of_buffers: self.out_of_buffers,
            streams: self.clients.counters(),
            gso: self.gso_counters,
        }
    }

    /// A handover: the kernel must not hand this process another packet
    /// or connection, so every receive on the listeners and relay sockets
    /// and every accept is cancelled, and what they took before goes out
    /// as usual. Then the worker waits; `true` when it is to stop. On
    /// resuming, the receives are armed again at once.
    fn freeze(&mut self, reply: &crossbeam_channel::Sender<Frozen>) -> io::Result<bool> {
        const FREEZE: u32 = 1;
        let mut targets: Vec<io_uring::types::CancelBuilder> = (0..self.sockets.listeners)
            .filter_map(|i| u32::try_from(i).ok())
            .map(|i| io_uring::types::CancelBuilder::fd(Fixed(i)).all())
            .collect();
        for (i, relay) in self.sockets.relays.iter().enumerate() {
            let fixed = relay.as_ref().and(u32::try_from(i).ok()).and_then(|i| self.sockets.relay_fixed(RelayToken(i)));
            targets.extend(fixed.map(|f| io_uring::types::CancelBuilder::fd(Fixed(f)).all()));
        }
        for (listener, _) in &self.streams {
            targets.push(io_uring::types::CancelBuilder::fd(io_uring::types::Fd(listener.as_raw_fd())).all());
        }
        // The connections' receives and sends too: a connection moves with
        // its unsent bytes, so none may be in flight. A round's completions
        // may close a connection, which writes the others': more rounds.
        for _ in 0..8 {
            let busy = self.clients.conns.live().filter(|(_, c)| c.io.receiving || c.io.sending);
            let fds: Vec<_> = busy.map(|(_, c)| c.io.socket.as_raw_fd()).collect();
            targets.extend(fds.into_iter().map(|fd| io_uring::types::CancelBuilder::fd(io_uring::types::Fd(fd)).all()));
            if targets.is_empty() {
                break;
            }
            let mut pending = 0;
            for target in std::mem::take(&mut targets) {
                let cancel = opcode::AsyncCancel2::new(target).build().user_data(user_data(Op::Cancel, FREEZE, 0));
                while !self.sockets.push(&cancel) {
                    self.sockets.ring.submit()?;
                }
                pending += 1;
            }
            while pending > 0 {
                self.sockets.ring.submit_and_wait(1)?;
                let completions: Vec<_> =
                    self.sockets.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())).collect();
                for (data, result, flags) in completions {
                    if matches!(decode(data), (Some(Op::Cancel), FREEZE, _)) {
                        pending -= 1;
                    } else if self.complete(data, result, flags) {
                        return Ok(true);
                    }
                }
            }
        }
        self.relay_inbox();
        self.flush_run();
        self.bufs.publish();
        self.sockets.ring.submit()?;

        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().ok();
        let udp = self.listeners.iter().filter_map(|l| dup(std::os::fd::AsFd::as_fd(l))).collect();
        let streams = self.streams.iter().filter_map(|(l, _)| dup(std::os::fd::AsFd::as_fd(l))).collect();
        let counters = self.counters();
        let relays = &self.sockets.relays;
        let relay =
            |t: RelayToken| relays.get(t.index())?.as_ref().and_then(|r| dup(std::os::fd::AsFd::as_fd(&r.socket)));
        // Any send still in flight (cancelling failed) keeps its connection.
        let conns = self.clients.moving(|io| (!io.sending).then(|| std::os::fd::AsFd::as_fd(&io.socket)));
        if self.worker.freeze(reply, udp, streams, relay, conns, counters) {
            return Ok(true);
        }
        let live: Vec<_> = self.clients.conns.live().map(|(slot, c)| (slot, c.io.generation)).collect();
        for (slot, generation) in live {
            self.rearm.push(user_data(Op::RecvConn, generation, u32::try_from(slot).unwrap_or(u32::MAX)));
            self.clients.dirty.push(slot);
        }
        // The cancelled receives and accepts ended as failures: no back-off.
        for (_, data) in std::mem::take(&mut self.delayed) {
            self.failures.remove(&data);
            self.rearm.push(data);
        }
        self.rearm_receives();
        Ok(false)
    }

    fn arm_wake(&mut self) {
        let fd = std::os::fd::AsFd::as_fd(&*self.worker.wake).as_raw_fd();
        let entry = opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(Op::Wake, 0, 0));
        if !self.sockets.push(&entry) {
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
                let current = self.sockets.relays.get(index as usize).and_then(Option::as_ref).map(|r| r.generation);
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
                let stop = self.worker.commands(self.counters());
                while let Ok(event) = self.worker.tcp_events.try_recv() {
                    self.clients.tcp_event(event, &mut self.worker, &mut self.sockets);
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
            let msghdr = &*self.sockets.msghdr;
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
        // The reply buffer on top of the free list, taken only for a reply.
        let reply_index = self.free_replies.last().copied();
        let buf = self.bufs.buffer(bid);
        if reply_index.is_none() && buf.get(payload.clone()).map(ip2p_wire::classify) == Some(PacketKind::Stun) {
            // No reply buffer: drop the request before it changes anything;
            // the client retransmits it. (Data needs no reply buffer.)
            self.replies_exhausted += 1;
            return self.bufs.provide(bid);
        }
        let mut scratch = [0u8; 0];
        let reply = match reply_index.and_then(|i| self.replies.get_mut(i)) {
            Some(r) => &mut r[..],
            None => &mut scratch[..],
        };
        let listener = ListenerId::udp(listener);
        // The payload has the buffer's headroom before it: enough to frame
        // it for another allocation of this worker.
        match self.worker.handle_client(now(), listener, from, buf, payload, reply, &mut self.sockets) {
            Verdict::Forward(t) => self.send(t.via, t.to, SendBuffer::Buffer(bid), t.range),
            Verdict::Reply(t) => {
                self.bufs.provide(bid);
                match self.free_replies.pop() {
                    Some(r) => self.send(t.via, t.to, SendBuffer::Reply(r), t.range),
                    None => self.send_errors += 1,
                }
            }
            Verdict::ToOwner(h) => match self.worker.to_owner(h, self.bufs.buffer(bid)) {
                Some(t) => self.send(t.via, t.to, SendBuffer::Buffer(bid), t.range),
                None => self.bufs.provide(bid),
            },
            Verdict::Deferred | Verdict::Drop(_) => self.bufs.provide(bid),
        }
    }

    /// Relays what other workers passed to this one's allocations.
    fn relay_inbox(&mut self) {
        let now = now();
        for _ in 0..INBOX_PER_ROUND {
            // With every send slot in flight, the rest wait in the inbox.
            if self.free_sends.is_empty() {
                return;
            }
            let Some(mut p) = self.worker.inboxes.recv(self.worker.id) else { return };
            match self.worker.server.handle_inbox(now, p.to, p.from, &mut p.buf, p.data) {
                Ok(t) => self.send(t.via, t.to, SendBuffer::Inbox(p.buf), t.range),
                Err(_) => self.worker.inboxes.recycle(p.buf),
            }
        }
    }

    fn peer_datagram(&mut self, token: u32, bid: u16, from: SocketAddr, payload: std::ops::Range<usize>) {
        let buf = self.bufs.buffer(bid);
        match self.worker.server.handle_peer(now(), RelayToken(token), from, buf, payload) {
            Ok(t) => self.send(t.via, t.to, SendBuffer::Buffer(bid), t.range),
            Err(_) => self.bufs.provide(bid),
        }
    }

    /// Queues a send of `range` of the held buffer to `to` from `via`.
    fn send(&mut self, via: Via, to: SocketAddr, buffer: SendBuffer, range: std::ops::Range<usize>) {
        if let Via::Listener(l) = via
            && l.transport == ip2p_wire::Transport::Stream
        {
            // To a connection: into its queue, and the buffer comes back.
            let bytes = send_bytes(&mut self.bufs, &self.replies, &buffer, range);
            self.clients.send(l, to, bytes.unwrap_or_default());
            return self.release(buffer);
        }
        let fixed = match via {
            Via::Listener(l) => Some(u32::from(l.index)),
            Via::Relay(t) => {
                self.sockets.relays.get(t.index()).and_then(Option::as_ref).and(self.sockets.relay_fixed(t))
            }
        };
        let Some(fixed) = fixed else {
            self.send_errors += 1;
            return self.release(buffer);
        };
        if !self.worker.gso {
            return self.submit(fixed, to, buffer, range);
        }
        if let Some(run) = &mut self.run
            && run.push(&(fixed, to), range.len())
        {
            self.run_parts.push((buffer, range));
            return;
        }
        self.flush_run();
        self.run = Some(gso::Run::new((fixed, to), range.len()));
        self.run_parts.push((buffer, range));
    }

    /// Sends the datagrams held back for a run: one send, or one GSO send
    /// of them all.
    fn flush_run(&mut self) {
        let Some(run) = self.run.take() else { return };
        let (fixed, to) = run.to;
        if self.run_parts.len() == 1 {
            if let Some((buffer, range)) = self.run_parts.pop() {
                self.submit(fixed, to, buffer, range);
            }
            return;
        }
        let Some(slot) = self.free_sends.pop() else {
            self.send_errors += self.run_parts.len() as u64;
            let parts = std::mem::take(&mut self.run_parts);
            parts.into_iter().for_each(|(buffer, _)| self.release(buffer));
            return;
        };
        let mut many = self.gso_pool.pop().unwrap_or_default();
        (many.fixed, many.to) = (fixed, to);
        many.parts.append(&mut self.run_parts);
        for (buffer, range) in &many.parts {
            let bytes = send_bytes(&mut self.bufs, &self.replies, buffer, range.clone()).unwrap_or_default();
            many.iov.push(libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() });
        }
        let Some(entry) = self.sends.get_mut(slot) else { return self.release(SendBuffer::Many(many)) };
        let stored = entry.insert(SendSlot { to: SockAddr::from(to), buffer: SendBuffer::Many(many) });
        let SendBuffer::Many(many) = &mut stored.buffer else { return };
        let msg = many.header(&stored.to, u16::try_from(run.size()).unwrap_or(0));
        let sqe = opcode::SendMsg::new(Fixed(fixed), msg).build().user_data(user_data(
            Op::Send,
            0,
            u32::try_from(slot).unwrap_or(u32::MAX),
        ));
        if !self.sockets.push(&sqe) {
            self.sent(slot, -libc::EAGAIN);
        }
    }

    /// Queues one send of `range` of `buffer` to `to` on registered file
    /// `fixed`.
    fn submit(&mut self, fixed: u32, to: SocketAddr, buffer: SendBuffer, range: std::ops::Range<usize>) {
        let Some(slot) = self.free_sends.pop() else {
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
        if !self.sockets.push(&sqe) {
            self.send_errors += 1;
            self.sent(slot, 0);
        }
    }

    fn sent(&mut self, slot: usize, result: i32) {
        let Some(done) = self.sends.get_mut(slot).and_then(Option::take) else { return };
        self.free_sends.push(slot);
        let SendBuffer::Many(many) = done.buffer else {
            if result < 0 {
                self.send_errors += 1;
            }
            return self.release(done.buffer);
        };
        let resend = result < 0 && gso::fall_back(-result, &mut self.worker.gso);
        if result >= 0 {
            self.gso_counters.count(many.parts.len());
        } else if !resend {
            self.send_errors += many.parts.len() as u64;
        }
        self.retire(many, resend);
    }

    /// A GSO send is done: its datagrams' buffers go back (or, with
    /// `resend`, each datagram goes on its own), and its state to the pool.
    fn retire(&mut self, mut many: Box<GsoSend>, resend: bool) {
        let (fixed, to) = (many.fixed, many.to);
        for (buffer, range) in many.parts.drain(..) {
            if resend {
                self.submit(fixed, to, buffer, range);
            } else {
                self.release(buffer);
            }
        }
        many.iov.clear();
        self.gso_pool.push(many);
    }

    fn release(&mut self, buffer: SendBuffer) {
        match buffer {
            SendBuffer::Buffer(bid) => self.bufs.provide(bid),
            SendBuffer::Reply(r) => self.free_replies.push(r),
            SendBuffer::Inbox(b) => self.worker.inboxes.recycle(b),
            SendBuffer::Many(many) => self.retire(many, false),
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
                    let live = self.clients.conns.get_mut(slot).filter(|c| c.io.generation == generation && !c.closing);
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
                    let live = self.sockets.relays.get(index as usize).and_then(Option::as_ref);
                    live.filter(|r| r.generation == generation).and(self.sockets.relay_fixed(RelayToken(index)))
                }
                _ => None,
            };
            if let Some(fixed) = fixed
                && !self.sockets.arm_recv(fixed, data)
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
