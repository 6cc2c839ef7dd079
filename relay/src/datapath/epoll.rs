//! The epoll datapath, through mio: edge-triggered readiness, each socket
//! drained with recvmmsg batches, the verdicts of a batch sent with
//! sendmmsg per socket. It runs where io_uring cannot: Docker's default
//! seccomp profile, `kernel.io_uring_disabled`, gVisor, old kernels.
//!
//! TCP and TLS connections are read until they would block; what their
//! frames send to peers goes out at once, what goes to a connection waits
//! in its bounded queue and is written when the socket takes it.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::Instant;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::batch::{BATCH, RecvBatch, SendBatch};
use super::clients::Clients;
use super::moving::{Frozen, MovedConn};
use super::relay_sockets::{DataConnection, RelaySockets};
use super::stats::DatapathCounters;
use super::tcp_relay::TcpRelays;
use super::worker::{Worker, WorkerSetup};
use super::{backoff, now};
use ip2p_turn::{ListenerId, PEER_HEADROOM, RelayToken, Transmit, Verdict, Via};

const WAKE: Token = Token(usize::MAX);
/// Tokens: UDP listeners from 0, stream listeners from `STREAM_BASE`,
/// relay sockets from `RELAY_BASE`, connections from `CONN_BASE`.
const STREAM_BASE: usize = 1 << 15;
const RELAY_BASE: usize = 1 << 16;
const CONN_BASE: usize = 1 << 40;
/// Most batches of packets from other workers relayed per round.
const INBOX_BATCHES: usize = 32;

/// What the core opens and closes through [`Sockets`]: UDP relay sockets,
/// indexed by [`RelayToken`] and registered with the poll, and TCP relays.
struct EpollSockets {
    registry: Registry,
    relays: Vec<Option<RelaySocket>>,
    next_generation: u32,
    worker: usize,
    tcp: Arc<TcpRelays>,
    /// Client connections a ConnectionBind turned into data connections.
    data_connections: Vec<DataConnection>,
}

/// A relay socket and the generation it was opened in: a send queued for
/// a token whose socket was since closed (and maybe reopened for another
/// allocation) in the same batch is told apart and dropped.
struct RelaySocket {
    socket: UdpSocket,
    generation: u32,
}

super::relay_sockets::impl_sockets!(EpollSockets);

impl RelaySockets for EpollSockets {
    fn send_now(&self, token: RelayToken, bytes: &[u8], to: SocketAddr) -> io::Result<usize> {
        let relay = self.relays.get(token.index()).and_then(Option::as_ref);
        relay.ok_or(io::ErrorKind::NotFound)?.socket.send_to(bytes, to)
    }

    fn install(&mut self, token: RelayToken, socket: std::net::UdpSocket) -> io::Result<()> {
        let mut socket = UdpSocket::from_std(socket);
        let index = token.index();
        self.registry.register(&mut socket, Token(RELAY_BASE + index), Interest::READABLE)?;
        if self.relays.len() <= index {
            self.relays.resize_with(index + 1, || None);
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        if let Some(slot) = self.relays.get_mut(index) {
            *slot = Some(RelaySocket { socket, generation: self.next_generation });
        }
        Ok(())
    }

    fn uninstall(&mut self, token: RelayToken) -> bool {
        let Some(mut relay) = self.relays.get_mut(token.index()).and_then(Option::take) else { return false };
        let _ = self.registry.deregister(&mut relay.socket);
        true
    }

    fn tcp(&self) -> (&Arc<TcpRelays>, usize) {
        (&self.tcp, self.worker)
    }

    fn data_connections(&mut self) -> &mut Vec<DataConnection> {
        &mut self.data_connections
    }
}

/// Where a pending datagram's bytes are.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Receive buffer `k` of the batch.
    Received(usize),
    /// Reply buffer `k` of the batch.
    Reply(usize),
    /// Packet `k` from another worker.
    Inbox(usize),
}

#[derive(Debug, Clone)]
struct Pending {
    via: Via,
    /// For a relay socket, its generation when the send was queued.
    generation: u32,
    to: SocketAddr,
    source: Source,
    range: Range<usize>,
}

fn via_key(via: Via) -> (u8, u32) {
    match via {
        Via::Listener(l) => (u8::from(l.transport == ip2p_wire::Transport::Stream), u32::from(l.index)),
        Via::Relay(t) => (2, t.0),
    }
}

struct Loop {
    worker: Worker,
    listeners: Vec<UdpSocket>,
    /// Whether each listener is IPv6.
    listener_v6: Vec<bool>,
    streams: Vec<(TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    /// Client connections; the socket is `None` only while one is set up.
    clients: Clients<Option<TcpStream>>,
    read_buf: Box<[u8]>,
    /// When to try accepting again after a failure (edge-triggered polling
    /// says nothing more about a backlog it already reported), and how many
    /// failures in a row.
    accept_retry: Option<(Instant, u32)>,
    sockets: EpollSockets,
    rx: RecvBatch,
    tx: SendBatch,
    pending: Vec<Pending>,
    /// Buffers of packets from other workers in the batch.
    from_inbox: Vec<Box<[u8]>>,
    send_errors: u64,
    truncated: u64,
}

/// Runs a worker until it is told to shut down.
pub(crate) fn run(setup: WorkerSetup) -> io::Result<()> {
    let WorkerSetup { worker, listeners, streams, adoption, ready, .. } = setup;
    let mut poll = Poll::new()?;
    let mut listeners: Vec<UdpSocket> = listeners.into_iter().map(UdpSocket::from_std).collect();
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let streams = streams
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mut socket = TcpListener::from_std(l.socket);
            poll.registry().register(&mut socket, Token(STREAM_BASE + i), Interest::READABLE)?;
            Ok((socket, l.tls))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let wake_fd = worker.wake.as_fd().as_raw_fd();
    poll.registry().register(&mut SourceFd(&wake_fd), WAKE, Interest::READABLE)?;
    let registry = poll.registry().try_clone()?;
    let (worker_id, tcp, gso) = (worker.id, worker.tcp.clone(), worker.gso);
    let mut l = Loop {
        worker,
        listener_v6: listeners.iter().map(|l| l.local_addr().is_ok_and(|a| a.is_ipv6())).collect(),
        listeners,
        streams,
        clients: Clients::new(now()),
        read_buf: vec![0; 65_536].into_boxed_slice(),
        accept_retry: None,
        sockets: EpollSockets {
            registry,
            relays: Vec::new(),
            next_generation: 0,
            worker: worker_id,
            tcp,
            data_connections: Vec::new(),
        },
        rx: RecvBatch::new(),
        tx: SendBatch::new(gso),
        pending: Vec::with_capacity(BATCH),
        from_inbox: Vec::with_capacity(BATCH),
        send_errors: 0,
        truncated: 0,
    };
    let mut events = Events::with_capacity(1024);
    l.worker.adopt(adoption.allocations, adoption.arrived, &mut l.sockets);
    l.adopt_conns(adoption.conns);
    let _ = ready.send(Ok(()));
    loop {
        let retry = l.accept_retry.map(|(at, _)| at);
        let deadline = [l.worker.server.poll_timeout(), l.clients.deadline(), retry].into_iter().flatten().min();
        match l.worker.idle(deadline, |timeout| poll.poll(&mut events, timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if !events.is_empty() {
            l.worker.worked(now());
        }
        l.expire();
        for event in &events {
            match event.token() {
                WAKE => {
                    if l.worker.commands(l.counters()) {
                        return Ok(());
                    }
                    while let Ok(event) = l.worker.tcp_events.try_recv() {
                        l.clients.tcp_event(event, &mut l.worker, &mut l.sockets);
                    }
                }
                Token(i) if i < STREAM_BASE => l.drain_listener(i),
                Token(i) if i < RELAY_BASE => l.accept(i - STREAM_BASE),
                Token(i) if i < CONN_BASE => l.drain_relay(i - RELAY_BASE),
                Token(i) => l.drain_conn(i - CONN_BASE),
            }
        }
        l.relay_inbox();
        l.clients.answer_admissions(&mut l.worker, &l.listeners, &mut l.sockets);
        l.flush_conns();
        if let Some(reply) = l.worker.freeze_request.take()
            && l.freeze(&reply)
        {
            return Ok(());
        }
    }
}

impl Loop {
    fn counters(&self) -> DatapathCounters {
        DatapathCounters {
            send_errors: self.send_errors + self.clients.send_errors,
            truncated: self.truncated,
            out_of_buffers: 0,
            streams: self.clients.counters(),
            gso: self.tx.gso_counters,
        }
    }

    /// A handover: nothing is read from the sockets until the worker
    /// resumes or stops (`true`). Polling is edge-triggered, so on resuming
    /// every socket is read once for what came meanwhile.
    fn freeze(&mut self, reply: &crossbeam_channel::Sender<Frozen>) -> bool {
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().ok();
        let udp = self.listeners.iter().filter_map(|l| dup(l.as_fd())).collect();
        let streams = self.streams.iter().filter_map(|(l, _)| dup(l.as_fd())).collect();
        let counters = self.counters();
        let relays = &self.sockets.relays;
        let relay = |t: RelayToken| relays.get(t.index())?.as_ref().and_then(|r| dup(r.socket.as_fd()));
        let conns = self.clients.moving(|io| io.as_ref().map(AsFd::as_fd));
        if self.worker.freeze(reply, udp, streams, relay, conns, counters) {
            return true;
        }
        let live: Vec<usize> = self.clients.conns.live().map(|(slot, _)| slot).collect();
        for slot in live {
            self.drain_conn(slot);
        }
        for i in 0..self.listeners.len() {
            self.drain_listener(i);
        }
        for i in 0..self.sockets.relays.len() {
            if self.sockets.relays.get(i).is_some_and(Option::is_some) {
                self.drain_relay(i);
            }
        }
        for i in 0..self.streams.len() {
            self.accept(i);
        }
        false
    }

    /// Takes over the connections a previous process handed over, and
    /// reads what came on them meanwhile.
    fn adopt_conns(&mut self, conns: Vec<MovedConn>) {
        for m in conns {
            let socket = std::net::TcpStream::from(m.fd);
            // (An io_uring datapath's connections may be blocking.)
            let _ = socket.set_nonblocking(true);
            let mut socket = TcpStream::from_std(socket);
            let Some(slot) = self.clients.adopt(&self.worker, m.state, None) else { continue };
            let token = Token(CONN_BASE + slot);
            if let Err(e) = self.sockets.registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!(error = %e, "cannot poll a connection handed over");
                self.close(slot, "cannot poll it");
                continue;
            }
            if let Some(c) = self.clients.conns.get_mut(slot) {
                c.io = Some(socket);
            }
            self.drain_conn(slot);
        }
    }

    fn expire(&mut self) {
        let now = now();
        self.worker.server.handle_timeout(now, &mut self.sockets);
        if let Some((at, _)) = self.accept_retry
            && at <= now
        {
            for i in 0..self.streams.len() {
                self.accept(i);
            }
        }
        for slot in self.clients.sweep(now, &self.worker) {
            self.close(slot, "idle");
        }
    }

    fn accept(&mut self, index: usize) {
        let Ok(listener) = u16::try_from(index).map(ListenerId::stream) else { return };
        loop {
            let Some((socket, tls)) = self.streams.get(index) else { return };
            let (mut stream, peer) = match socket.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_retry = None;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Try again after a back-off: polling will not say it
                    // again.
                    self.clients.accept_failed(&e, || socket.accept());
                    let failures = self.accept_retry.map_or(0, |(_, n)| n + 1);
                    self.accept_retry = Some((now() + backoff(failures), failures));
                    return;
                }
            };
            let Some(slot) = self.clients.admit(&self.worker, listener, tls.as_ref(), peer, None) else { continue };
            let _ = stream.set_nodelay(true);
            let token = Token(CONN_BASE + slot);
            if let Err(e) = self.sockets.registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!(error = %e, "cannot poll a connection");
                self.clients.conns.remove(slot);
                continue;
            }
            if let Some(c) = self.clients.conns.get_mut(slot) {
                c.io = Some(stream);
            }
        }
    }

    /// Reads a connection until it would block, handing each frame to the
    /// core; what a frame sends to a peer goes out at once.
    fn drain_conn(&mut self, slot: usize) {
        let mut closed = None;
        while let Some(socket) = self.clients.conns.get_mut(slot).and_then(|c| c.io.as_mut()) {
            let n = match socket.read(&mut self.read_buf[..]) {
                Ok(0) => {
                    closed = Some("closed by the client");
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = Some("reset");
                    break;
                }
            };
            let bytes = self.read_buf.get_mut(..n).unwrap_or_default();
            if self.clients.received(slot, bytes, &mut self.worker, &mut self.sockets).is_err() {
                closed = Some("protocol error");
                break;
            }
            if !self.sockets.data_connections.is_empty() {
                // A ConnectionBind: the rest of this stream is raw data.
                break;
            }
        }
        self.splice_data_connections();
        // Flush replies (and a TLS alert) before a close.
        self.flush_conns();
        if let Some(why) = closed {
            self.close(slot, why);
        }
    }

    /// Gives the connections a ConnectionBind claimed, with their TLS state
    /// and unsent bytes (the response), to the TCP relays.
    fn splice_data_connections(&mut self) {
        for h in std::mem::take(&mut self.sockets.data_connections) {
            let Some((slot, _)) = self.clients.conns.find(h.listener, h.client) else { continue };
            let Some(mut conn) = self.clients.conns.remove(slot) else { continue };
            let Some(mut socket) = conn.io.take() else { continue };
            let _ = self.sockets.registry.deregister(&mut socket);
            let (tls, unsent) = conn.stream.into_parts();
            let socket = std::net::TcpStream::from(std::os::fd::OwnedFd::from(socket));
            let _ = socket.set_nonblocking(false);
            // It still counts against its client's limits, as a data connection.
            self.sockets.tcp.splice(h.id, socket, tls, unsent, conn.ticket.take());
        }
    }

    /// Writes what connections have queued, until their sockets are full
    /// (a writable event brings them back).
    fn flush_conns(&mut self) {
        while let Some(slot) = self.clients.dirty.pop() {
            let Some(conn) = self.clients.conns.get_mut(slot) else { continue };
            let Some(socket) = conn.io.as_mut() else { continue };
            if let Err(e) = conn.stream.flush_to(socket) {
                tracing::debug!(client = %conn.peer, error = %e, "connection write failed");
                self.close(slot, "write failed");
            }
        }
    }

    /// Closes a connection and deletes its allocation.
    fn close(&mut self, slot: usize, why: &str) {
        let Some(mut conn) = self.clients.conns.remove(slot) else { return };
        if let Some(socket) = conn.io.as_mut() {
            let _ = self.sockets.registry.deregister(socket);
        }
        self.worker.server.client_closed(now(), conn.listener, conn.peer, &mut self.sockets);
        tracing::debug!(client = %conn.peer, why, "connection closed");
    }

    fn drain_listener(&mut self, index: usize) {
        let Ok(listener_id) = u16::try_from(index) else {
            return;
        };
        loop {
            let Some(socket) = self.listeners.get(index) else {
                return;
            };
            let v6 = self.listener_v6.get(index).copied().unwrap_or(false);
            // With headroom: the local short-circuit frames a payload for
            // another allocation in place.
            let n = match self.rx.recv(socket.as_fd(), v6, PEER_HEADROOM) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "listener receive failed");
                    }
                    return;
                }
            };
            let now = now();
            for k in 0..n {
                let Some(m) = self.rx.meta.get(k).copied() else {
                    break;
                };
                if m.truncated {
                    self.truncated += 1;
                    continue;
                }
                let (Some(buf), Some(reply)) = (self.rx.bufs.get_mut(k), self.rx.replies.get_mut(k)) else {
                    break;
                };
                let packet = PEER_HEADROOM..PEER_HEADROOM + m.len;
                let listener = ListenerId::udp(listener_id);
                let verdict = self.worker.handle_client(now, listener, m.from, buf, packet, reply, &mut self.sockets);
                let (relays, pending) = (&self.sockets.relays, &mut self.pending);
                match verdict {
                    Verdict::Forward(t) => queue(pending, relays, t, Source::Received(k)),
                    Verdict::Reply(t) => queue(pending, relays, t, Source::Reply(k)),
                    Verdict::ToOwner(h) => {
                        if let Some(t) = self.worker.to_owner(h, buf) {
                            queue(pending, relays, t, Source::Received(k));
                        }
                    }
                    Verdict::Deferred | Verdict::Drop(_) => {}
                }
            }
            self.flush();
            if n < BATCH {
                return;
            }
        }
    }

    fn drain_relay(&mut self, index: usize) {
        let Ok(token) = u32::try_from(index).map(RelayToken) else {
            return;
        };
        loop {
            let Some(Some(relay)) = self.sockets.relays.get(index) else {
                return;
            };
            let v6 = token.family_is_v6();
            let n = match self.rx.recv(relay.socket.as_fd(), v6, PEER_HEADROOM) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "relay receive failed");
                    }
                    return;
                }
            };
            let now = now();
            for k in 0..n {
                let Some(m) = self.rx.meta.get(k).copied() else {
                    break;
                };
                if m.truncated {
                    self.truncated += 1;
                    continue;
                }
                let Some(buf) = self.rx.bufs.get_mut(k) else {
                    break;
                };
                let data = PEER_HEADROOM..PEER_HEADROOM + m.len;
                if let Ok(t) = self.worker.server.handle_peer(now, token, m.from, buf, data) {
                    queue(&mut self.pending, &self.sockets.relays, t, Source::Received(k));
                }
            }
            self.flush();
            if n < BATCH {
                return;
            }
        }
    }

    /// Relays what other workers passed to this one's allocations, a batch
    /// at a time.
    fn relay_inbox(&mut self) {
        let id = self.worker.id;
        for _ in 0..INBOX_BATCHES {
            let now = now();
            while self.from_inbox.len() < BATCH {
                let Some(mut p) = self.worker.inboxes.recv(id) else { break };
                match self.worker.server.handle_inbox(now, p.to, p.from, &mut p.buf, p.data) {
                    Ok(t) => {
                        queue(&mut self.pending, &self.sockets.relays, t, Source::Inbox(self.from_inbox.len()));
                        self.from_inbox.push(p.buf);
                    }
                    Err(_) => self.worker.inboxes.recycle(p.buf),
                }
            }
            if self.from_inbox.is_empty() {
                return;
            }
            self.flush();
            for buf in self.from_inbox.drain(..) {
                self.worker.inboxes.recycle(buf);
            }
        }
    }

    /// Sends the batch's datagrams, one sendmmsg per socket.
    fn flush(&mut self) {
        self.pending.sort_by_key(|p| (via_key(p.via), p.generation));
        let mut start = 0;
        while let Some(first) = self.pending.get(start) {
            let key = (first.via, first.generation);
            let end = self
                .pending
                .iter()
                .skip(start)
                .position(|p| (p.via, p.generation) != key)
                .map_or(self.pending.len(), |n| start + n);
            let group = self.pending.get(start..end).unwrap_or_default();
            if let Via::Listener(l) = key.0
                && l.transport == ip2p_wire::Transport::Stream
            {
                for p in group {
                    self.clients.send(l, p.to, bytes(&self.rx, &self.from_inbox, p).unwrap_or_default());
                }
                start = end;
                continue;
            }
            let socket = match key.0 {
                Via::Listener(l) => self.listeners.get(usize::from(l.index)),
                // Only the socket the send was queued for, not a successor.
                Via::Relay(t) => self
                    .sockets
                    .relays
                    .get(t.index())
                    .and_then(Option::as_ref)
                    .filter(|r| r.generation == key.1)
                    .map(|r| &r.socket),
            };
            if let Some(socket) = socket {
                let mut msgs: [(SocketAddr, &[u8]); BATCH] = [(SocketAddr::from(([0; 4], 0)), &[]); BATCH];
                let mut n = 0;
                for (slot, p) in msgs.iter_mut().zip(group) {
                    let bytes = bytes(&self.rx, &self.from_inbox, p);
                    *slot = (p.to, bytes.unwrap_or_default());
                    n += 1;
                }
                self.send_errors += self.tx.send(socket.as_fd(), msgs.get(..n).unwrap_or_default());
            }
            start = end;
        }
        self.pending.clear();
    }
}

/// A pending datagram's bytes.
fn bytes<'a>(rx: &'a RecvBatch, from_inbox: &'a [Box<[u8]>], p: &Pending) -> Option<&'a [u8]> {
    let buf = match p.source {
        Source::Received(k) => rx.bufs.get(k),
        Source::Reply(k) => rx.replies.get(k),
        Source::Inbox(k) => from_inbox.get(k),
    };
    buf.and_then(|b| b.get(p.range.clone()))
}

fn queue(pending: &mut Vec<Pending>, relays: &[Option<RelaySocket>], t: Transmit, source: Source) {
    let generation = match t.via {
        Via::Relay(token) => relays.get(token.index()).and_then(Option::as_ref).map_or(0, |r| r.generation),
        Via::Listener(_) => 0,
    };
    pending.push(Pending { via: t.via, generation, to: t.to, source, range: t.range });
}
