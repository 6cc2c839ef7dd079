//! TURN over TCP and TLS, apart from how the bytes move (RFC 8656 §3.1,
//! §12.5; RFC 8489 §6.2.2).
//!
//! A [`Stream`] cuts what a connection receives into STUN messages and
//! ChannelData frames with the framer of ip2p-wire: a frame is handed on
//! where it lies in the received bytes, and only a frame split across reads
//! is copied (TLS decrypts into a buffer of its own first). What it sends
//! waits in a bounded queue: past [`Stream::new`]'s bound a frame is
//! dropped and counted, so a slow reader costs its own packets, never
//! memory without limit or other connections' time.
//!
//! [`Conns`] is a worker's table of connections, and [`ConnLimits`] the
//! node's count of them, checked at accept.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ip2p_wire::framer::{Framed, frame};

use super::tcp_relay::TcpEvent;
use super::{RelaySockets, Spare, StreamCounters, Worker, now};
use crate::proto::{ListenerId, REPLY_BUFFER, Sockets, Verdict, Via, client_prefix};

/// How often connections are checked against their deadlines.
const SWEEP: Duration = Duration::from_secs(1);

/// Largest frame: a STUN message of 65,535 + 20 bytes, rounded up.
const MAX_FRAME: usize = 65_556;
/// Largest frame a connection may send before it has an allocation: its
/// requests (an Allocate with credentials is a few hundred bytes). A
/// stranger's half-sent frame then holds 2 KiB, not 64 KiB, until the
/// idle timeout closes it.
pub(crate) const FIRST_FRAME: usize = 2048;
/// Plaintext read from TLS at a time: the size of the scratch buffer a
/// datapath passes to [`Stream::receive`].
pub(crate) const TLS_CHUNK: usize = 16 * 1024;

/// Handles one frame of a stream (which it may change in place); may write
/// a reply into the scratch buffer and return its length.
pub(crate) type OnFrame<'a> = &'a mut dyn FnMut(&mut [u8], &mut [u8]) -> Option<usize>;

/// Why a connection must close.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// Bytes that are neither STUN nor ChannelData: the stream is out of
    /// sync (RFC 8656 §12.5 gives no way to recover).
    Framing,
    /// The TLS layer failed (handshake, bad record, alert).
    Tls(rustls::Error),
    /// The client ended its TLS session (close_notify).
    Closed,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Framing => f.write_str("bytes that are neither STUN nor ChannelData"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Closed => f.write_str("TLS session closed by the client"),
        }
    }
}

/// One connection's framing, TLS and send queue.
pub(crate) struct Stream {
    tls: Option<Box<rustls::ServerConnection>>,
    /// The start of a frame split across reads (plaintext).
    partial: Vec<u8>,
    /// The largest frame accepted: [`FIRST_FRAME`] until [`Self::trust`].
    max_frame: usize,
    /// Bytes to write after `flushing` (ciphertext on TLS).
    queued: Vec<u8>,
    /// Bytes being written, from `flushed` on: left alone while a write
    /// of them may be in flight.
    flushing: Vec<u8>,
    flushed: usize,
    /// Most unsent bytes held.
    limit: usize,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("tls", &self.tls.is_some())
            .field("partial", &self.partial.len())
            .field("backlog", &self.backlog())
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// A plain TCP stream holding at most `limit` unsent bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            tls: None,
            partial: Vec::new(),
            max_frame: FIRST_FRAME,
            queued: Vec::new(),
            flushing: Vec::new(),
            flushed: 0,
            limit,
        }
    }

    /// A TLS stream (server side).
    pub(crate) fn tls(config: Arc<rustls::ServerConfig>, limit: usize) -> Result<Self, rustls::Error> {
        let conn = rustls::ServerConnection::new(config)?;
        Ok(Self { tls: Some(Box::new(conn)), ..Self::new(limit) })
    }

    /// The connection has an allocation: frames up to the largest may come.
    pub(crate) fn trust(&mut self) {
        self.max_frame = MAX_FRAME;
    }

    /// Whether [`Self::trust`] was called.
    pub(crate) fn trusted(&self) -> bool {
        self.max_frame == MAX_FRAME
    }

    /// Whether the TLS handshake is still running.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Takes bytes read from the socket. `on_frame` gets each whole frame
    /// and a scratch buffer; the bytes of the scratch buffer it names (a
    /// reply) are sent back on this stream. `plain` is scratch for TLS's
    /// plaintext ([`TLS_CHUNK`] bytes serve). Returns the frames the send
    /// queue had no room for.
    pub(crate) fn receive(
        &mut self,
        bytes: &mut [u8],
        reply: &mut [u8],
        plain: &mut [u8],
        on_frame: OnFrame<'_>,
    ) -> Result<u64, StreamError> {
        let mut dropped = 0;
        let Self { tls, partial, max_frame, queued, flushing, flushed, limit } = self;
        let max_frame = *max_frame;
        let backlog = |q: &Vec<u8>, f: &Vec<u8>, done: usize| q.len() + f.len().saturating_sub(done);
        let Some(tls) = tls else {
            deframe(partial, bytes, max_frame, &mut |frame| {
                if let Some(n) = on_frame(frame, reply)
                    && let Some(r) = reply.get(..n)
                {
                    if backlog(queued, flushing, *flushed) + r.len() <= *limit {
                        queued.extend_from_slice(r);
                    } else {
                        dropped += 1;
                    }
                }
            })?;
            return Ok(dropped);
        };
        let mut input = &*bytes;
        let mut result = Ok(());
        while !input.is_empty() && result.is_ok() {
            if let Err(e) = tls.read_tls(&mut input) {
                tracing::debug!(error = %e, "TLS read");
                result = Err(StreamError::Framing);
                break;
            }
            if let Err(e) = tls.process_new_packets() {
                result = Err(StreamError::Tls(e));
                break;
            }
            loop {
                let n = match tls.reader().read(plain) {
                    Ok(0) => {
                        result = Err(StreamError::Closed);
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        result = Err(StreamError::Closed);
                        break;
                    }
                };
                let data = plain.get_mut(..n).unwrap_or_default();
                let mut replies = Vec::new();
                let framed = deframe(partial, data, max_frame, &mut |frame| {
                    if let Some(n) = on_frame(frame, reply)
                        && let Some(r) = reply.get(..n)
                    {
                        replies.extend_from_slice(r);
                    }
                });
                if !replies.is_empty() {
                    if backlog(queued, flushing, *flushed) + replies.len() <= *limit {
                        let _ = tls.writer().write_all(&replies);
                    } else {
                        dropped += 1;
                    }
                }
                if let Err(e) = framed {
                    result = Err(e);
                    break;
                }
            }
        }
        // Handshake messages, replies, and on failure the alert.
        while tls.wants_write() {
            if tls.write_tls(queued).is_err() {
                break;
            }
        }
        result.map(|()| dropped)
    }

    /// Queues a frame for the client; `false` (dropped) when the backlog
    /// is full or TLS is not ready for data yet.
    pub(crate) fn send(&mut self, frame: &[u8]) -> bool {
        if self.backlog() + frame.len() > self.limit {
            return false;
        }
        match &mut self.tls {
            None => self.queued.extend_from_slice(frame),
            Some(tls) => {
                if tls.is_handshaking() || tls.writer().write_all(frame).is_err() {
                    return false;
                }
                while tls.wants_write() {
                    if tls.write_tls(&mut self.queued).is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Unsent bytes.
    pub(crate) fn backlog(&self) -> usize {
        self.queued.len() + self.flushing.len().saturating_sub(self.flushed)
    }

    /// The bytes to write next, if any. They stay where they are until
    /// [`Self::wrote`] says how many went: a write of them may be in flight.
    pub(crate) fn next_write(&mut self) -> Option<&[u8]> {
        if self.flushed >= self.flushing.len() {
            self.flushing.clear();
            self.flushed = 0;
            std::mem::swap(&mut self.flushing, &mut self.queued);
        }
        self.flushing.get(self.flushed..).filter(|b| !b.is_empty())
    }

    /// `n` bytes of [`Self::next_write`] were written.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.flushed = (self.flushed + n).min(self.flushing.len());
    }

    /// The TLS session and the bytes not yet written, for whoever carries
    /// on with the connection.
    pub(crate) fn into_parts(mut self) -> (Option<Box<rustls::ServerConnection>>, Vec<u8>) {
        let mut unsent = self.flushing.split_off(self.flushed.min(self.flushing.len()));
        unsent.append(&mut self.queued);
        (self.tls, unsent)
    }

    /// A plain stream's state as it moves to the next process (a
    /// handover): the start of a frame split across reads, and the bytes
    /// not yet written. `None` for TLS, whose session cannot move.
    pub(crate) fn moving(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.tls.is_some() {
            return None;
        }
        let mut unsent = self.flushing.get(self.flushed..).unwrap_or_default().to_vec();
        unsent.extend_from_slice(&self.queued);
        Some((self.partial.clone(), unsent))
    }

    /// A plain stream moved from the previous process, as [`Self::moving`]
    /// gave it (the unsent bytes may exceed this process's bound for a
    /// while): `None` when `partial` is not the start of a frame.
    pub(crate) fn moved(limit: usize, partial: Vec<u8>, unsent: Vec<u8>) -> Option<Self> {
        if !partial.is_empty()
            && !matches!(frame(&partial), Ok(Framed::Incomplete { needed }) if partial.len() + needed <= MAX_FRAME)
        {
            return None;
        }
        let mut s = Self::new(limit);
        s.partial = partial;
        s.queued = unsent;
        Some(s)
    }

    /// Writes what is queued to `w` until it would block.
    pub(crate) fn flush_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        while let Some(bytes) = self.next_write() {
            match w.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Hands each whole frame of `partial` followed by `data` to `each`; the
/// start of a frame left incomplete is kept in `partial`. A frame that
/// lies whole in `data` is handed on where it is. A frame longer than
/// `max` is a framing error.
fn deframe(
    partial: &mut Vec<u8>,
    mut data: &mut [u8],
    max: usize,
    each: &mut dyn FnMut(&mut [u8]),
) -> Result<(), StreamError> {
    // First finish the frame a previous read began.
    while !partial.is_empty() {
        match frame(partial).map_err(|_| StreamError::Framing)? {
            Framed::Complete { bytes, .. } => {
                let len = bytes.len();
                each(partial.get_mut(..len).unwrap_or_default());
                partial.clear();
            }
            Framed::Incomplete { needed } => {
                if partial.len() + needed > max {
                    return Err(StreamError::Framing);
                }
                if data.is_empty() {
                    return Ok(());
                }
                let (head, rest) = data.split_at_mut(needed.min(data.len()));
                partial.extend_from_slice(head);
                data = rest;
            }
        }
    }
    while !data.is_empty() {
        match frame(data).map_err(|_| StreamError::Framing)? {
            Framed::Complete { bytes, .. } => {
                let (whole, rest) = data.split_at_mut(bytes.len());
                each(whole);
                data = rest;
            }
            Framed::Incomplete { needed } => {
                if data.len() + needed > max {
                    return Err(StreamError::Framing);
                }
                partial.extend_from_slice(data);
                break;
            }
        }
    }
    Ok(())
}

/// Log lines about connections that a client can cause at will (garbage
/// on a port, a failed TLS handshake, a full descriptor table): a few an
/// interval, then a count.
#[derive(Debug)]
pub(crate) struct StreamLogs {
    pub(crate) closed: crate::proto::loglimit::LogLimit,
    pub(crate) accept: crate::proto::loglimit::LogLimit,
}

impl Default for StreamLogs {
    fn default() -> Self {
        Self { closed: crate::proto::loglimit::LogLimit::new(5), accept: crate::proto::loglimit::LogLimit::new(5) }
    }
}

impl StreamLogs {
    /// Counts a connection closed for `e`, and logs it if the limit allows.
    pub(crate) fn protocol_error(&mut self, counters: &mut super::StreamCounters, peer: SocketAddr, e: &StreamError) {
        match e {
            StreamError::Framing => counters.closed_framing += 1,
            StreamError::Tls(_) => counters.closed_tls += 1,
            StreamError::Closed => return,
        }
        if let Some(unlogged) = self.closed.admit(super::now()) {
            tracing::info!(client = %peer, error = %e, unlogged, "closing a connection");
        }
    }
}

/// A worker's connection: where it came in, its stream, the datapath's
/// handle `T` for its socket, and when it must have allocated by.
#[derive(Debug)]
pub(crate) struct Conn<T> {
    pub(crate) listener: ListenerId,
    pub(crate) peer: SocketAddr,
    pub(crate) stream: Stream,
    pub(crate) io: T,
    /// Its place in the node's connection limits, given back when dropped
    /// (or handed on with a data connection).
    pub(crate) ticket: Option<ConnTicket>,
    /// Closes the connection if it has no allocation at this time (the
    /// idle limit, or the TLS handshake limit while that runs).
    pub(crate) deadline: Instant,
    /// Detached: closing, waiting for its operations in flight.
    pub(crate) closing: bool,
}

/// A worker's connections, by slot and by 5-tuple.
#[derive(Debug)]
pub(crate) struct Conns<T> {
    slots: Vec<Option<Conn<T>>>,
    free: Vec<usize>,
    by_peer: HashMap<(ListenerId, SocketAddr), usize, foldhash::fast::RandomState>,
}

impl<T> Default for Conns<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), by_peer: HashMap::default() }
    }
}

impl<T> Conns<T> {
    /// Adds a connection; returns its slot.
    pub(crate) fn insert(&mut self, conn: Conn<T>) -> usize {
        let key = (conn.listener, conn.peer);
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.slots.get_mut(slot) {
                    *s = Some(conn);
                }
                slot
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        };
        self.by_peer.insert(key, slot);
        slot
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Conn<T>> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The connection of a 5-tuple.
    pub(crate) fn find(&mut self, listener: ListenerId, peer: SocketAddr) -> Option<(usize, &mut Conn<T>)> {
        let slot = *self.by_peer.get(&(listener, peer))?;
        Some((slot, self.get_mut(slot)?))
    }

    /// Takes a connection out of the 5-tuple index while it closes: no
    /// more packets are queued to it, but its slot stays until [`Self::remove`].
    pub(crate) fn detach(&mut self, slot: usize) {
        if let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            let key = (conn.listener, conn.peer);
            if self.by_peer.get(&key) == Some(&slot) {
                self.by_peer.remove(&key);
            }
            conn.closing = true;
        }
    }

    pub(crate) fn remove(&mut self, slot: usize) -> Option<Conn<T>> {
        self.detach(slot);
        let conn = self.slots.get_mut(slot).and_then(Option::take)?;
        self.free.push(slot);
        Some(conn)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// The connections not closing, with their slots.
    pub(crate) fn live(&self) -> impl Iterator<Item = (usize, &Conn<T>)> {
        self.slots.iter().enumerate().filter_map(|(i, c)| c.as_ref().filter(|c| !c.closing).map(|c| (i, c)))
    }

    /// Slots of the connections past their deadline.
    pub(crate) fn overdue(&self, now: Instant) -> Vec<usize> {
        let live = self.slots.iter().enumerate().filter_map(|(i, c)| Some((i, c.as_ref()?)));
        live.filter(|(_, c)| !c.closing && c.deadline <= now).map(|(i, _)| i).collect()
    }
}

/// A plain TCP client connection as it moves to the next process (a
/// handover): a duplicate of its descriptor and its stream's state.
#[derive(Debug)]
pub(crate) struct MovedConn {
    pub(crate) fd: std::os::fd::OwnedFd,
    pub(crate) state: ConnState,
}

/// What moves of a connection besides its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnState {
    /// The index of its stream listener.
    pub(crate) listener: u16,
    pub(crate) peer: SocketAddr,
    /// The start of a frame split across reads.
    pub(crate) partial: Vec<u8>,
    /// Bytes not yet written to it.
    pub(crate) unsent: Vec<u8>,
}

/// A worker's client connections, driven the same way on both
/// datapaths: admission, framing through the core, what they send and
/// receive, the idle sweep. A datapath only moves their bytes (its handle
/// for a connection's socket is `T`) and closes them.
#[derive(Debug)]
pub(crate) struct Clients<T> {
    pub(crate) conns: Conns<T>,
    counters: StreamCounters,
    /// Connections with bytes to write.
    pub(crate) dirty: Vec<usize>,
    /// Frames to a connection that is gone, and a stream client's frames a
    /// relay socket could not send.
    pub(crate) send_errors: u64,
    reply: Box<[u8]>,
    /// TLS plaintext, before framing.
    plain: Box<[u8]>,
    /// A descriptor kept for refusing connections when there are none left.
    spare: Spare,
    logs: StreamLogs,
    /// When to look for connections past their deadline next.
    next_sweep: Instant,
}

impl<T> Clients<T> {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            conns: Conns::default(),
            counters: StreamCounters::default(),
            dirty: Vec::new(),
            send_errors: 0,
            reply: vec![0; REPLY_BUFFER].into_boxed_slice(),
            plain: vec![0; TLS_CHUNK].into_boxed_slice(),
            spare: Spare::new(),
            logs: StreamLogs::default(),
            next_sweep: now + SWEEP,
        }
    }

    /// The counters, with the connections open now.
    pub(crate) fn counters(&self) -> StreamCounters {
        StreamCounters { open: self.conns.len() as u64, ..self.counters }
    }

    /// When [`Self::sweep`] is due, while there are connections.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        (self.conns.len() > 0).then_some(self.next_sweep)
    }

    /// A connection from `peer` accepted on `listener` (TLS with `tls`),
    /// whose socket the datapath holds as `io`: its slot, or `None` when a
    /// limit refuses it (counted; dropping `io` closes it).
    pub(crate) fn admit(
        &mut self,
        worker: &Worker,
        listener: ListenerId,
        tls: Option<&Arc<rustls::ServerConfig>>,
        peer: SocketAddr,
        io: T,
    ) -> Option<usize> {
        let Some((ticket, stream, wait)) = admit(&worker.limits, tls, peer.ip()) else {
            self.counters.refused += 1;
            return None;
        };
        self.counters.accepted += 1;
        let ticket = Some(ticket);
        Some(self.conns.insert(Conn { listener, peer, stream, io, ticket, deadline: now() + wait, closing: false }))
    }

    /// The connections that can move to the next process: plain TCP ones
    /// (a TLS session cannot move), with a duplicate of the descriptor
    /// `fd` gives for their socket. Nothing changes here.
    pub(crate) fn moving(&self, fd: impl Fn(&T) -> Option<std::os::fd::BorrowedFd<'_>>) -> Vec<MovedConn> {
        let mut out = Vec::new();
        for (_, c) in self.conns.live() {
            let Some((partial, unsent)) = c.stream.moving() else { continue };
            let Some(fd) = fd(&c.io).and_then(|fd| fd.try_clone_to_owned().ok()) else { continue };
            let state = ConnState { listener: c.listener.index, peer: c.peer, partial, unsent };
            out.push(MovedConn { fd, state });
        }
        out
    }

    /// A connection moved from the previous process, whose socket the
    /// datapath holds as `io`: its slot, or `None` when its state is not a
    /// stream's (logged; dropping `io` closes it). It counts against the
    /// limits even past them: it exists.
    pub(crate) fn adopt(&mut self, worker: &Worker, m: ConnState, io: T) -> Option<usize> {
        let Some(mut stream) = Stream::moved(worker.limits.send_buffer, m.partial, m.unsent) else {
            tracing::warn!(client = %m.peer, "a connection handed over has a malformed frame pending; closed");
            return None;
        };
        let listener = ListenerId::stream(m.listener);
        if worker.server.has_allocation(listener, m.peer) {
            stream.trust();
        }
        let ticket = worker.limits.count(m.peer.ip());
        let deadline = now() + worker.limits.idle;
        let slot = self.conns.insert(Conn { listener, peer: m.peer, stream, io, ticket, deadline, closing: false });
        self.dirty.push(slot);
        Some(slot)
    }

    /// An accept failed with `e`. Out of descriptors, the connections
    /// waiting are refused with the reserve, each accepted by `accept` and
    /// closed at once (counted).
    pub(crate) fn accept_failed<S>(&mut self, e: &io::Error, accept: impl FnMut() -> io::Result<S>) {
        let refused = if Spare::exhausted(e) { self.spare.shed(accept) } else { 0 };
        self.counters.refused += refused;
        if let Some(unlogged) = self.logs.accept.admit(now()) {
            tracing::warn!(error = %e, refused, unlogged, "accept failed");
        }
    }

    /// Connection `slot` received `bytes`: each whole frame goes through
    /// the core; replies queue on the connection, data for a peer leaves at
    /// once from its relay socket. `Err` when the connection must close
    /// (a protocol error, counted and logged).
    pub(crate) fn received<S: RelaySockets + Sockets>(
        &mut self,
        slot: usize,
        bytes: &mut [u8],
        worker: &mut Worker,
        sockets: &mut S,
    ) -> Result<(), ()> {
        let Self { conns, counters, dirty, send_errors, reply, plain, logs, .. } = self;
        let Some(conn) = conns.get_mut(slot) else { return Ok(()) };
        let (listener, peer) = (conn.listener, conn.peer);
        let now = now();
        let result = conn.stream.receive(bytes, reply, plain, &mut |frame, reply| {
            let len = frame.len();
            let t = match worker.handle_client(now, listener, peer, frame, 0..len, reply, sockets) {
                Verdict::Reply(t) => return Some(t.range.end),
                Verdict::Forward(t) => t,
                Verdict::Handoff(h) => worker.hand_off(h, frame)?,
                Verdict::Deferred | Verdict::Drop(_) => return None,
            };
            let sent = match t.via {
                Via::Relay(token) => frame.get(t.range).map(|b| sockets.send_now(token, b, t.to)),
                // A stream's frame has no room to be framed for a client.
                Via::Listener(_) => None,
            };
            if !matches!(sent, Some(Ok(_))) {
                *send_errors += 1;
            }
            None
        });
        dirty.push(slot);
        match result {
            Ok(dropped) => {
                counters.dropped_backlog += dropped;
                if !conn.stream.trusted() && worker.server.has_allocation(listener, peer) {
                    conn.stream.trust();
                }
                Ok(())
            }
            Err(e) => {
                logs.protocol_error(counters, peer, &e);
                Err(())
            }
        }
    }

    /// Queues `bytes` for the client connection of a 5-tuple (counted
    /// when its backlog is full, or it is gone).
    pub(crate) fn send(&mut self, listener: ListenerId, to: SocketAddr, bytes: &[u8]) {
        let Some((slot, conn)) = self.conns.find(listener, to) else {
            self.send_errors += 1;
            return;
        };
        if conn.stream.send(bytes) {
            self.dirty.push(slot);
        } else {
            self.counters.dropped_backlog += 1;
        }
    }

    /// A TCP relay's news for the core; what the core answers goes to the
    /// client's control connection.
    pub(crate) fn tcp_event(&mut self, event: TcpEvent, worker: &mut Worker, sockets: &mut impl Sockets) {
        let reply = &mut self.reply[..];
        let t = match event {
            TcpEvent::Connected { token, peer, id } => worker.server.tcp_connected(token, peer, id, reply),
            TcpEvent::Incoming { token, peer, id } => {
                worker.server.tcp_incoming(now(), token, peer, id, reply, sockets)
            }
        };
        let Some(t) = t else { return };
        let Via::Listener(listener) = t.via else { return };
        if let Some((slot, conn)) = self.conns.find(listener, t.to)
            && let Some(bytes) = self.reply.get(t.range)
            && conn.stream.send(bytes)
        {
            self.dirty.push(slot);
        }
    }

    /// Connections past their deadline at `now`, when a sweep is due: a
    /// TLS handshake that takes too long, or no allocation for too long.
    /// They are counted; the datapath closes them.
    pub(crate) fn sweep(&mut self, now: Instant, worker: &Worker) -> Vec<usize> {
        if now < self.next_sweep {
            return Vec::new();
        }
        self.next_sweep = now + SWEEP;
        let mut idle = self.conns.overdue(now);
        idle.retain(|&slot| {
            let Some(conn) = self.conns.get_mut(slot) else { return false };
            if !conn.stream.handshaking() && worker.server.has_allocation(conn.listener, conn.peer) {
                conn.deadline = now + worker.limits.idle;
                return false;
            }
            true
        });
        self.counters.closed_idle += idle.len() as u64;
        worker.tcp.sweep(now);
        idle
    }
}

/// Connection limits of the node, counted across workers at accept time
/// (never per packet): client connections, and RFC 6062's peer and data
/// connections, each against the node's total and its client's address
/// (an IPv6 client's /64).
#[derive(Debug)]
pub(crate) struct ConnLimits {
    pub(crate) max_total: usize,
    pub(crate) max_per_ip: u32,
    /// How long a connection may stay without an allocation.
    pub(crate) idle: Duration,
    /// How long a TLS handshake may take.
    pub(crate) handshake: Duration,
    /// Most unsent bytes per connection.
    pub(crate) send_buffer: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection counted against the [`ConnLimits`]: dropping it gives
/// its place back.
#[derive(Debug)]
pub(crate) struct ConnTicket {
    limits: Arc<ConnLimits>,
    prefix: IpAddr,
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        self.limits.release(self.prefix);
    }
}

impl ConnLimits {
    pub(crate) fn new(
        max_total: usize,
        max_per_ip: u32,
        idle: Duration,
        handshake: Duration,
        send_buffer: usize,
    ) -> Self {
        Self {
            max_total,
            max_per_ip,
            idle,
            handshake,
            send_buffer,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection of the client at `ip`; `None` (and nothing
    /// counted) when a limit is reached.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnTicket> {
        self.add(ip, self.max_total, self.max_per_ip)
    }

    /// Counts a connection that exists already (one handed over), past
    /// the limits if need be: always `Some`.
    pub(crate) fn count(self: &Arc<Self>, ip: IpAddr) -> Option<ConnTicket> {
        self.add(ip, usize::MAX, u32::MAX)
    }

    /// Counts a connection of the client at `ip` if the node has fewer
    /// than `max_total` and its address fewer than `max_per_ip`.
    fn add(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: u32) -> Option<ConnTicket> {
        let prefix = client_prefix(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.total.load(Ordering::Relaxed) >= max_total {
            return None;
        }
        let n = per_ip.entry(prefix).or_insert(0);
        if *n >= max_per_ip {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(ConnTicket { limits: self.clone(), prefix })
    }

    /// Connections counted now.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn release(&self, prefix: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = per_ip.get_mut(&prefix) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&prefix);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What a newly accepted client connection needs: its place in the
/// limits, its framing (TLS on a TLS listener), and how long it may take
/// to allocate (or to finish its handshake). `None`: refuse it.
pub(crate) fn admit(
    limits: &Arc<ConnLimits>,
    tls: Option<&Arc<rustls::ServerConfig>>,
    peer: IpAddr,
) -> Option<(ConnTicket, Stream, Duration)> {
    let ticket = limits.admit(peer)?;
    let (stream, wait) = match tls {
        Some(config) => (Stream::tls(config.clone(), limits.send_buffer).ok()?, limits.handshake),
        None => (Stream::new(limits.send_buffer), limits.idle),
    };
    Some((ticket, stream, wait))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ip2p_wire::{Transport, write_channel_data};

    fn channel(n: u16, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0; data.len() + 8];
        let len = write_channel_data(&mut out, n, data, Transport::Stream).unwrap();
        out.truncate(len);
        out
    }

    fn frames_of(stream: &mut Stream, reads: &[&[u8]]) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut got = Vec::new();
        let mut reply = [0u8; 64];
        stream.trust();
        for r in reads {
            stream.receive(&mut r.to_vec(), &mut reply, &mut [], &mut |f, _| {
                got.push(f.to_vec());
                None
            })?;
        }
        Ok(got)
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let a = channel(0x4000, b"hello");
        let b = channel(0x4001, &[7; 300]);
        let all = [a.clone(), b.clone()].concat();
        for cut in 0..all.len() {
            for cut2 in cut..all.len() {
                let mut s = Stream::new(1 << 16);
                let got = frames_of(&mut s, &[&all[..cut], &all[cut..cut2], &all[cut2..]]).expect("valid stream");
                assert_eq!(got, vec![a.clone(), b.clone()], "cuts at {cut} and {cut2}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut s = Stream::new(1 << 16);
        // A TLS ClientHello on a plain TCP port: no STUN magic cookie.
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        assert!(matches!(frames_of(&mut s, &[&hello]), Err(StreamError::Framing)));
        let mut s = Stream::new(1 << 16);
        assert!(matches!(frames_of(&mut s, &[&[0xFF; 4]]), Err(StreamError::Framing)));
        let mut s = Stream::new(1 << 16);
        let mut bad = channel(0x4000, b"ok");
        bad.extend_from_slice(&[0xFF; 8]);
        assert!(matches!(frames_of(&mut s, &[&bad]), Err(StreamError::Framing)));
    }

    #[test]
    fn replies_are_queued_and_the_backlog_is_bounded() {
        let mut s = Stream::new(10);
        let mut reply = [0u8; 64];
        let frame = channel(0x4000, b"x");
        let dropped = s.receive(&mut [frame.clone(), frame].concat(), &mut reply, &mut [], &mut |_, r| {
            r[..6].copy_from_slice(b"answer");
            Some(6)
        });
        assert_eq!(dropped.unwrap(), 1, "the second 6-byte reply does not fit in 10 bytes");
        assert_eq!(s.backlog(), 6);
        assert!(s.send(b"1234"));
        assert!(!s.send(b"1"), "full");
        let mut out = Vec::new();
        s.flush_to(&mut out).unwrap();
        assert_eq!(out, b"answer1234");
        assert_eq!(s.backlog(), 0);
    }

    #[test]
    fn a_write_in_flight_is_left_alone() {
        let mut s = Stream::new(100);
        assert!(s.send(b"abc"));
        let first = s.next_write().unwrap().as_ptr();
        assert!(s.send(b"def"), "queued behind the write in flight");
        s.wrote(1);
        assert_eq!(s.next_write().unwrap(), b"bc");
        assert_eq!(s.next_write().unwrap().as_ptr(), first.wrapping_add(1));
        s.wrote(2);
        assert_eq!(s.next_write().unwrap(), b"def");
        s.wrote(3);
        assert!(s.next_write().is_none());
    }

    /// A handover: the next process's stream goes on mid-frame, and sends
    /// what this one had not.
    #[test]
    fn a_stream_moves_mid_frame_with_its_unsent_bytes() {
        let a = channel(0x4000, &[5; 100]);
        let mut s = Stream::new(1 << 16);
        s.trust();
        assert_eq!(frames_of(&mut s, &[&a[..30]]).unwrap(), Vec::<Vec<u8>>::new());
        assert!(s.send(b"reply"));
        let (partial, unsent) = s.moving().unwrap();
        assert_eq!((partial.len(), unsent.as_slice()), (30, &b"reply"[..]));
        let mut next = Stream::moved(1 << 16, partial, unsent).unwrap();
        assert_eq!(frames_of(&mut next, &[&a[30..]]).unwrap(), vec![a.clone()]);
        let mut out = Vec::new();
        next.flush_to(&mut out).unwrap();
        assert_eq!(out, b"reply");
        // Not the start of a frame: refused.
        assert!(Stream::moved(1 << 16, vec![0xFF; 8], Vec::new()).is_none());
        assert!(Stream::moved(1 << 16, a.clone(), Vec::new()).is_none(), "a whole frame is never left pending");
    }

    #[test]
    fn limits_count_per_ip_and_in_total() {
        let l = Arc::new(ConnLimits::new(3, 2, Duration::from_secs(1), Duration::from_secs(1), 1));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert!(l.admit(a).is_none(), "per-IP limit");
        let _b1 = l.admit(b).unwrap();
        assert!(l.admit(b).is_none(), "total limit");
        drop(a1);
        let b2 = l.admit(b);
        assert!(b2.is_some(), "a dropped ticket gives its place back");
        assert_eq!(l.total(), 3);
    }

    #[test]
    fn an_ipv6_client_is_capped_by_its_64() {
        let l = Arc::new(ConnLimits::new(100, 2, Duration::from_secs(1), Duration::from_secs(1), 1));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let held: Vec<_> = ["2001:db8:1:1::1", "2001:db8:1:1::2"].iter().map(|a| l.admit(ip(a)).unwrap()).collect();
        assert!(l.admit(ip("2001:db8:1:1:ffff::3")).is_none(), "a third address of the same /64");
        assert!(l.admit(ip("2001:db8:1:2::1")).is_some());
        drop(held);
    }

    #[test]
    fn a_stranger_cannot_park_a_large_frame() {
        // Before an allocation, a frame header announcing 60 KB closes the
        // stream at once instead of holding the bytes.
        let big = {
            let mut f = vec![0u8; 20];
            f[..2].copy_from_slice(&0x0001u16.to_be_bytes());
            f[2..4].copy_from_slice(&60_000u16.to_be_bytes());
            f[4..8].copy_from_slice(&ip2p_wire::MAGIC_COOKIE.to_be_bytes());
            f
        };
        let mut reply = [0u8; 64];
        let mut s = Stream::new(1 << 16);
        let r = s.receive(&mut big.clone(), &mut reply, &mut [], &mut |_, _| None);
        assert!(matches!(r, Err(StreamError::Framing)), "{r:?}");
        // A split small frame is fine, and a trusted stream takes large ones.
        let small = channel(0x4000, &[1; 100]);
        let mut s = Stream::new(1 << 16);
        assert!(s.receive(&mut small[..10].to_vec(), &mut reply, &mut [], &mut |_, _| None).is_ok());
        assert!(s.receive(&mut small[10..].to_vec(), &mut reply, &mut [], &mut |_, _| None).is_ok());
        let mut s = Stream::new(1 << 16);
        s.trust();
        assert!(s.receive(&mut big.clone(), &mut reply, &mut [], &mut |_, _| None).is_ok());
        assert_eq!(s.partial.len(), 20);
    }
}
