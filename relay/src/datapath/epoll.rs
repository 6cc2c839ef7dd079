//! The epoll datapath, through mio: edge-triggered readiness, each socket
//! drained with recvmmsg batches, the verdicts of a batch sent with
//! sendmmsg per socket. It runs where io_uring cannot: Docker's default
//! seccomp profile, `kernel.io_uring_disabled`, gVisor, old kernels.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};

use mio::net::UdpSocket;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::batch::{BATCH, RecvBatch, SendBatch};
use super::socket::bind_udp;
use super::{DatapathCounters, Worker, now};
use crate::proto::{ListenerId, PEER_HEADROOM, RelayToken, Sockets, Verdict, Via};

const WAKE: Token = Token(usize::MAX);
/// Relay socket tokens start here; below are listeners.
const RELAY_BASE: usize = 1 << 16;

/// Relay sockets, indexed by [`RelayToken`], registered with the poll.
struct Relays<'a> {
    registry: &'a Registry,
    sockets: &'a mut Vec<Option<RelaySocket>>,
    next_generation: &'a mut u32,
}

/// A relay socket and the generation it was opened in: a send queued for
/// a token whose socket was since closed (and maybe reopened for another
/// allocation) in the same batch is told apart and dropped.
struct RelaySocket {
    socket: UdpSocket,
    generation: u32,
}

impl Sockets for Relays<'_> {
    fn open_relay(&mut self, token: RelayToken, addr: SocketAddr, dont_fragment: bool) -> io::Result<()> {
        let mut socket = UdpSocket::from_std(bind_udp(addr, false, dont_fragment)?);
        let index = token.0 as usize;
        self.registry.register(&mut socket, Token(RELAY_BASE + index), Interest::READABLE)?;
        if self.sockets.len() <= index {
            self.sockets.resize_with(index + 1, || None);
        }
        *self.next_generation = self.next_generation.wrapping_add(1);
        if let Some(slot) = self.sockets.get_mut(index) {
            *slot = Some(RelaySocket { socket, generation: *self.next_generation });
        }
        Ok(())
    }

    fn close_relay(&mut self, token: RelayToken) {
        if let Some(mut relay) = self.sockets.get_mut(token.0 as usize).and_then(Option::take) {
            let _ = self.registry.deregister(&mut relay.socket);
        }
    }
}

/// Where a pending datagram's bytes are.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Receive buffer `k` of the batch.
    Received(usize),
    /// Reply buffer `k` of the batch.
    Reply(usize),
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
        Via::Listener(l) => (0, u32::from(l.0)),
        Via::Relay(t) => (1, t.0),
    }
}

struct Loop {
    worker: Worker,
    listeners: Vec<UdpSocket>,
    relays: Vec<Option<RelaySocket>>,
    next_generation: u32,
    registry: Registry,
    rx: RecvBatch,
    tx: SendBatch,
    pending: Vec<Pending>,
    send_errors: u64,
    truncated: u64,
}

/// Runs a worker until it is told to shut down.
pub(crate) fn run(mut worker: Worker) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listeners: Vec<UdpSocket> = worker.listeners.drain(..).map(UdpSocket::from_std).collect();
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let wake_fd = worker.wake.as_fd().as_raw_fd();
    poll.registry().register(&mut SourceFd(&wake_fd), WAKE, Interest::READABLE)?;
    let registry = poll.registry().try_clone()?;
    let mut l = Loop {
        worker,
        listeners,
        relays: Vec::new(),
        next_generation: 0,
        registry,
        rx: RecvBatch::new(),
        tx: SendBatch::new(),
        pending: Vec::with_capacity(BATCH),
        send_errors: 0,
        truncated: 0,
    };
    let mut events = Events::with_capacity(1024);
    l.worker.report_ready();
    loop {
        let timeout = l.worker.server.poll_timeout().map(|at| at.saturating_duration_since(now()));
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        l.expire();
        for event in &events {
            match event.token() {
                WAKE => {
                    let counters =
                        DatapathCounters { send_errors: l.send_errors, truncated: l.truncated, out_of_buffers: 0 };
                    if l.worker.commands(counters) {
                        return Ok(());
                    }
                }
                Token(i) if i < RELAY_BASE => l.drain_listener(i),
                Token(i) => l.drain_relay(i - RELAY_BASE),
            }
        }
    }
}

impl Loop {
    fn expire(&mut self) {
        let mut relays =
            Relays { registry: &self.registry, sockets: &mut self.relays, next_generation: &mut self.next_generation };
        self.worker.server.handle_timeout(now(), &mut relays);
    }

    fn drain_listener(&mut self, index: usize) {
        let Ok(listener_id) = u16::try_from(index) else {
            return;
        };
        loop {
            let Some(socket) = self.listeners.get(index) else {
                return;
            };
            let n = match self.rx.recv(socket.as_fd(), 0) {
                Ok(n) => n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "listener receive failed");
                    }
                    return;
                }
            };
            let now = now();
            let mut relays = Relays {
                registry: &self.registry,
                sockets: &mut self.relays,
                next_generation: &mut self.next_generation,
            };
            for k in 0..n {
                let Some(m) = self.rx.meta.get(k).copied() else {
                    break;
                };
                if m.truncated {
                    self.truncated += 1;
                    continue;
                }
                let (Some(buf), Some(reply)) = (self.rx.bufs.get(k), self.rx.replies.get_mut(k)) else {
                    break;
                };
                let packet = buf.get(..m.len).unwrap_or_default();
                let verdict =
                    self.worker.server.handle_client(now, ListenerId(listener_id), m.from, packet, reply, &mut relays);
                queue(&mut self.pending, relays.sockets, verdict, k);
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
            let Some(Some(relay)) = self.relays.get(index) else {
                return;
            };
            let n = match self.rx.recv(relay.socket.as_fd(), PEER_HEADROOM) {
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
                let verdict = self.worker.server.handle_peer(now, token, m.from, buf, data);
                queue(&mut self.pending, &self.relays, verdict, k);
            }
            self.flush();
            if n < BATCH {
                return;
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
            let socket = match key.0 {
                Via::Listener(l) => self.listeners.get(usize::from(l.0)),
                // Only the socket the send was queued for, not a successor.
                Via::Relay(t) => self
                    .relays
                    .get(t.0 as usize)
                    .and_then(Option::as_ref)
                    .filter(|r| r.generation == key.1)
                    .map(|r| &r.socket),
            };
            if let Some(socket) = socket {
                let mut msgs: [(SocketAddr, &[u8]); BATCH] = [(SocketAddr::from(([0; 4], 0)), &[]); BATCH];
                let mut n = 0;
                for (slot, p) in msgs.iter_mut().zip(group) {
                    let bytes = match p.source {
                        Source::Received(k) => self.rx.bufs.get(k).and_then(|b| b.get(p.range.clone())),
                        Source::Reply(k) => self.rx.replies.get(k).and_then(|b| b.get(p.range.clone())),
                    };
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

fn queue(pending: &mut Vec<Pending>, relays: &[Option<RelaySocket>], verdict: Verdict, k: usize) {
    let (t, source) = match verdict {
        Verdict::Forward(t) => (t, Source::Received(k)),
        Verdict::Reply(t) => (t, Source::Reply(k)),
        Verdict::Drop(_) => return,
    };
    let generation = match t.via {
        Via::Relay(token) => relays.get(token.0 as usize).and_then(Option::as_ref).map_or(0, |r| r.generation),
        Via::Listener(_) => 0,
    };
    pending.push(Pending { via: t.via, generation, to: t.to, source, range: t.range });
}
