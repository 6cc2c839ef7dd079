//! A worker's TCP and TLS client connections, driven the same way on
//! both datapaths: admission against the [`ConnLimits`], frames through
//! the core, what they send and receive, RFC 6062 news, the idle sweep. A
//! datapath only moves their bytes and closes them.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_turn::loglimit::LogLimit;
use ip2p_turn::{ListenerId, REPLY_BUFFER, Sockets, Verdict, Via};

use super::conn_limits::{ConnLimits, ConnTicket};
use super::moving::{ConnState, MovedConn};
use super::now;
use super::opening::{HEADER_WAIT, Opening, Refusal, Step};
use super::relay_sockets::RelaySockets;
use super::stats::{LastProxied, StreamCounters};
use super::stream::{Stream, StreamError, TLS_CHUNK};
use super::tcp_relay::TcpEvent;
use super::worker::Worker;

/// How often connections are checked against their deadlines.
const SWEEP: Duration = Duration::from_secs(1);

/// A file descriptor held in reserve for accepting when the process has
/// none left (EMFILE, ENFILE). Without it, a connection waiting in the
/// backlog can be neither accepted nor refused: the loop would wake for
/// it again and again. With it, the reserve is closed, the connection
/// accepted and closed at once (refused), and the reserve taken again.
#[derive(Debug)]
pub(crate) struct Spare(Option<std::fs::File>);

impl Spare {
    pub(crate) fn new() -> Self {
        Self(std::fs::File::open("/dev/null").ok())
    }

    /// Whether `e` says the process (or the system) is out of descriptors.
    pub(crate) fn exhausted(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }

    /// Refuses the connections waiting on a listener, each accepted with
    /// the reserve's descriptor through `accept` and closed, up to a
    /// batch. Returns how many.
    pub(crate) fn shed<S>(&mut self, mut accept: impl FnMut() -> io::Result<S>) -> u64 {
        let mut shed = 0;
        while shed < 256 {
            self.0 = None;
            match accept() {
                Ok(socket) => {
                    drop(socket);
                    shed += 1;
                }
                Err(_) => break,
            }
            self.0 = std::fs::File::open("/dev/null").ok();
        }
        if self.0.is_none() {
            self.0 = std::fs::File::open("/dev/null").ok();
        }
        shed
    }
}

/// Log lines about connections that a client can cause at will (garbage
/// on a port, a failed TLS handshake, a full descriptor table): a few an
/// interval, then a count.
#[derive(Debug)]
pub(crate) struct StreamLogs {
    pub(crate) closed: LogLimit,
    pub(crate) accept: LogLimit,
}

impl Default for StreamLogs {
    fn default() -> Self {
        Self { closed: LogLimit::new(5), accept: LogLimit::new(5) }
    }
}

impl StreamLogs {
    /// Counts a connection closed for `e`, and logs it if the limit allows.
    pub(crate) fn protocol_error(&mut self, counters: &mut StreamCounters, peer: SocketAddr, e: &StreamError) {
        match e {
            StreamError::Framing => counters.closed_framing += 1,
            StreamError::Tls(_) => counters.closed_tls += 1,
            StreamError::Closed => return,
        }
        if let Some(unlogged) = self.closed.admit(now()) {
            tracing::info!(client = %peer, error = %e, unlogged, "closing a connection");
        }
    }
}

/// Where a connection's stream begins once its opening is done: so many
/// bytes into what it received, or in bytes of its own.
type StreamStart = (usize, Option<Vec<u8>>);

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
    /// Its first bytes: a balancer's PROXY header, or none.
    pub(crate) opening: Opening,
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

    /// Gives connection `slot` the client address its balancer named;
    /// `false` when that client has a connection on the listener already.
    pub(crate) fn rekey(&mut self, slot: usize, peer: SocketAddr) -> bool {
        let Some(conn) = self.slots.get_mut(slot).and_then(Option::as_mut) else { return false };
        let key = (conn.listener, peer);
        if self.by_peer.contains_key(&key) {
            return false;
        }
        self.by_peer.remove(&(conn.listener, conn.peer));
        conn.peer = peer;
        self.by_peer.insert(key, slot);
        true
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
        let proxied = worker.limits.proxied(peer.ip());
        let deadline = now() + if proxied { HEADER_WAIT } else { wait };
        let (ticket, opening) = (Some(ticket), Opening::new(proxied));
        Some(self.conns.insert(Conn { listener, peer, stream, io, ticket, deadline, closing: false, opening }))
    }

    /// The connections that can move to the next process: plain TCP ones
    /// (a TLS session cannot move) past their PROXY header, with a duplicate of the descriptor
    /// `fd` gives for their socket. Nothing changes here.
    pub(crate) fn moving(&self, fd: impl Fn(&T) -> Option<std::os::fd::BorrowedFd<'_>>) -> Vec<MovedConn> {
        let mut out = Vec::new();
        for (_, c) in self.conns.live().filter(|(_, c)| !c.opening.awaiting_header()) {
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
        let opening = Opening::Open;
        let slot =
            self.conns.insert(Conn { listener, peer: m.peer, stream, io, ticket, deadline, closing: false, opening });
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

    /// Connection `slot` received `bytes`: first its opening (a
    /// balancer's PROXY header), then each whole frame goes through the
    /// core; replies queue on the connection, data for a peer leaves at
    /// once from its relay socket. `Err` when the connection must close
    /// (a protocol error, counted and logged).
    pub(crate) fn received<S: RelaySockets + Sockets>(
        &mut self,
        slot: usize,
        bytes: &mut [u8],
        worker: &mut Worker,
        sockets: &mut S,
    ) -> Result<(), ()> {
        if self.conns.get_mut(slot).is_none_or(|c| matches!(c.opening, Opening::Open)) {
            return self.frames(slot, bytes, worker, sockets);
        }
        match self.open(slot, bytes, worker)? {
            None => Ok(()),
            Some((skip, None)) => self.frames(slot, bytes.get_mut(skip..).unwrap_or_default(), worker, sockets),
            Some((_, Some(mut rest))) => self.frames(slot, &mut rest, worker, sockets),
        }
    }

    /// A connection's first bytes: where its stream's bytes begin in
    /// `bytes` (or the bytes themselves), `None` while a balancer's header
    /// is incomplete, `Err` when it must close (counted, logged). A
    /// balancer's header makes the client it names the connection's peer.
    fn open(&mut self, slot: usize, bytes: &[u8], worker: &Worker) -> Result<Option<StreamStart>, ()> {
        let Some(conn) = self.conns.get_mut(slot) else { return Ok(None) };
        let (balancer, from_balancer) = (conn.peer, conn.opening.awaiting_header());
        let refusal = match conn.opening.step(bytes) {
            Step::Wait => return Ok(None),
            Step::Open { skip, rest, .. } if !from_balancer => return Ok(Some((skip, rest))),
            Step::Refuse(why) => why,
            Step::Open { proxied, skip, rest } => {
                let client = proxied.as_ref().map_or(balancer, |p| p.client);
                let now = now();
                conn.deadline =
                    now + if conn.stream.handshaking() { worker.limits.handshake } else { worker.limits.idle };
                if let Some(ticket) = conn.ticket.as_mut()
                    && !worker.limits.attribute(ticket, client.ip())
                {
                    self.counters.refused += 1;
                    return Err(());
                }
                if client != balancer && !self.conns.rekey(slot, client) {
                    Refusal::Invalid("a client with a connection on this listener already")
                } else {
                    self.counters.proxy_accepted += 1;
                    self.counters.last_proxied = Some(LastProxied { client, balancer, at: crate::unix_now() });
                    let (alpn, sni) = proxied.map(|p| (p.alpn, p.authority)).unwrap_or_default();
                    let alpn = alpn.map(|a| String::from_utf8_lossy(&a).into_owned());
                    tracing::debug!(%client, %balancer, ?alpn, ?sni, "a connection through a load balancer");
                    return Ok(Some((skip, rest)));
                }
            }
        };
        match refusal {
            Refusal::Untrusted => self.counters.proxy_untrusted += 1,
            Refusal::Invalid(_) => self.counters.proxy_invalid += 1,
        }
        if let Some(unlogged) = self.logs.closed.admit(now()) {
            tracing::info!(client = %balancer, error = %refusal, unlogged, "closing a connection");
        }
        Err(())
    }

    /// A connection's stream received `bytes`: each whole frame goes
    /// through the core.
    fn frames<S: RelaySockets + Sockets>(
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
                Verdict::ToOwner(h) => worker.to_owner(h, frame)?,
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

    /// The fleet's words on parked Allocates, and the fallback's on those
    /// overdue: each runs again and its answer goes to its client, on its
    /// connection or from its UDP listener (`udp`, by index).
    pub(crate) fn answer_admissions<U: AsFd>(&mut self, worker: &mut Worker, udp: &[U], sockets: &mut impl Sockets) {
        // A loop round's cost outside a fleet: these two checks.
        if worker.words.is_empty() && !worker.server.admissions_pending() {
            return;
        }
        worker.ask_fleet();
        let now = now();
        loop {
            let overdue = || worker.server.overdue_admission(now).map(|t| (t, ip2p_turn::Admission::Unknown));
            let Some((ticket, word)) = worker.words.pop().or_else(overdue) else { return };
            let Some(t) = worker.server.admitted(now, ticket, word, &mut self.reply, sockets) else { continue };
            let (Via::Listener(listener), Some(bytes)) = (t.via, self.reply.get(t.range)) else { continue };
            if listener.transport == ip2p_wire::Transport::Stream {
                let bytes = bytes.to_vec();
                self.send(listener, t.to, &bytes);
                continue;
            }
            let to = nix::sys::socket::SockaddrStorage::from(t.to);
            let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT;
            let sent = udp
                .get(usize::from(listener.index))
                .map(|s| nix::sys::socket::sendto(s.as_fd().as_raw_fd(), bytes, &to, flags));
            if !matches!(sent, Some(Ok(_))) {
                self.send_errors += 1;
            }
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
        let mut headerless = 0;
        idle.retain(|&slot| {
            let Some(conn) = self.conns.get_mut(slot) else { return false };
            if conn.opening.awaiting_header() {
                headerless += 1;
                return true;
            }
            if !conn.stream.handshaking() && worker.server.has_allocation(conn.listener, conn.peer) {
                conn.deadline = now + worker.limits.idle;
                return false;
            }
            true
        });
        self.counters.proxy_timeout += headerless;
        self.counters.closed_idle += idle.len() as u64 - headerless;
        worker.tcp.sweep(now);
        idle
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
