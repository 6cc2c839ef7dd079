//! A worker: one thread, its core, its inbox of commands and of packets
//! from other workers, and what both datapaths do around the core (timing
//! requests, busy polling, mirroring the forwarding state into the XDP
//! tables, freezing for a handover). A [`WorkerSetup`] is what the node
//! builds and a datapath's loop consumes at start; the [`Worker`] is what
//! runs.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::EventFd;

use super::conn_limits::ConnLimits;
use super::inbox::Inboxes;
use super::moving::{Adoption, Frozen, MovedConn};
use super::now;
use super::polling::Polling;
use super::stats::{DatapathCounters, RequestLatency, WorkerStats, thread_cpu_time};
use super::tcp_relay::{TcpEvent, TcpRelays};
use ip2p_turn::{Adoptable, ListenerId, RelayToken, Server, Session, SessionId, Sockets, ToOwner, Transmit, Verdict};

/// A command from the node to a worker.
#[derive(Debug)]
pub(crate) enum Command {
    /// Finish the current batch and return.
    Shutdown,
    /// Send a snapshot of the counters.
    Stats(Sender<WorkerStats>),
    /// Use this configuration from now on (a reload).
    Reconfigure(Arc<ip2p_turn::Config>),
    /// Judge every live permission and channel again (the host's
    /// addresses changed).
    Rejudge,
    /// Refuse new allocations; keep the others (shutting down).
    Drain,
    /// Stop taking packets from the sockets and give up the allocations
    /// and the sockets' descriptors for a new process (a handover); then
    /// wait for [`Command::Resume`] or [`Command::Shutdown`].
    Freeze(Sender<Frozen>),
    /// Go on serving after a handover that did not happen.
    Resume,
    /// Send its live sessions that the query asks for.
    Sessions(ip2p_turn::SessionQuery, Sender<Vec<Session>>),
    /// End a session, saying whether it was this worker's.
    EndSession(SessionId, Sender<bool>),
    /// End every session of a user (revoked), saying how many.
    Revoke(Box<str>, Sender<usize>),
    /// The fleet's word on a parked Allocate.
    Admitted(u64, ip2p_turn::Admission),
}

/// A TCP listener, serving TLS when it has a TLS configuration.
#[derive(Debug)]
pub(crate) struct StreamListener {
    pub(crate) socket: TcpListener,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// What a worker starts with, built by the node and consumed by its
/// datapath's loop: the worker, the sockets it serves, what a previous
/// process handed over, and whom to tell once it runs.
#[derive(Debug)]
pub(crate) struct WorkerSetup {
    pub(crate) worker: Worker,
    /// Its SO_REUSEPORT UDP socket for each listen address, indexed by
    /// [`ListenerId::udp`].
    pub(crate) listeners: Vec<UdpSocket>,
    /// Its TCP and TLS listeners, indexed by [`ListenerId::stream`].
    pub(crate) streams: Vec<StreamListener>,
    /// Provided receive buffers of the io_uring datapath.
    pub(crate) io_uring_buffers: u16,
    pub(crate) adoption: Adoption,
    /// Told once the worker is set up (or, by its thread, why it could not be).
    pub(crate) ready: Sender<io::Result<()>>,
}

/// A running worker.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) server: Server,
    /// The node's connection limits.
    pub(crate) limits: Arc<ConnLimits>,
    /// The node's RFC 6062 TCP relays, and their news for this worker
    /// (which comes with a write to `wake`).
    pub(crate) tcp: Arc<TcpRelays>,
    pub(crate) tcp_events: Receiver<TcpEvent>,
    pub(crate) commands: Receiver<Command>,
    /// Written by the node after queueing a command.
    pub(crate) wake: Arc<EventFd>,
    /// Whether it polls for work before sleeping (`busy_poll_us`).
    pub(crate) polling: Polling,
    /// Whether runs of datagrams to one destination go as one send (`gso`).
    pub(crate) gso: bool,
    pub(crate) latency: RequestLatency,
    /// The node's inboxes for packets between workers.
    pub(crate) inboxes: Arc<Inboxes>,
    /// Its writer of the XDP fast path's tables, when the fast path runs.
    pub(crate) mirror: Option<crate::fastpath::Mirror>,
    /// A handover asked for ([`Command::Freeze`]), done by the datapath
    /// once it has stopped taking packets.
    pub(crate) freeze_request: Option<Sender<Frozen>>,
    /// Its usage records, when the node writes them.
    pub(crate) records: Option<crate::usage::Records>,
    /// Where its Allocates' admission requests go, in a fleet.
    pub(crate) fleet: Option<Sender<crate::fleet::Asked>>,
    /// The fleet's words on its parked Allocates, as they came.
    pub(crate) words: Vec<(u64, ip2p_turn::Admission)>,
}

impl Worker {
    /// Handles the node's queued commands; `true` on shutdown.
    pub(crate) fn commands(&mut self, counters: DatapathCounters) -> bool {
        let _ = self.wake.read();
        while let Ok(command) = self.commands.try_recv() {
            if self.command(command, counters) {
                return true;
            }
        }
        false
    }

    /// Carries out one command; `true` when the worker is to stop.
    fn command(&mut self, command: Command, counters: DatapathCounters) -> bool {
        match command {
            Command::Shutdown => {
                self.stop_sessions();
                return true;
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.stats(counters));
            }
            Command::Reconfigure(config) => self.server.reconfigure(config, now()),
            Command::Rejudge => self.server.rejudge(now()),
            Command::Drain => self.server.drain(),
            Command::Freeze(reply) => self.freeze_request = Some(reply),
            Command::Resume => {}
            Command::Sessions(query, reply) => {
                let _ = reply.send(self.sessions(&query));
            }
            Command::EndSession(id, reply) => {
                let _ = reply.send(self.server.end_session(now(), id));
            }
            Command::Revoke(user, reply) => {
                let _ = reply.send(self.server.end_sessions_of(now(), &user, ip2p_turn::End::Revoked));
            }
            Command::Admitted(ticket, word) => self.words.push((ticket, word)),
        }
        false
    }

    /// Takes its parked Allocates' requests to the fleet; those it cannot
    /// (not in a fleet, the queue full) get the fallback's word at once.
    pub(crate) fn ask_fleet(&mut self) {
        while let Some(request) = self.server.poll_admission() {
            let ticket = request.ticket;
            let asked = crate::fleet::Asked { worker: self.id, request };
            if self.fleet.as_ref().is_none_or(|f| f.try_send(asked).is_err()) {
                self.words.push((ticket, ip2p_turn::Admission::Unknown));
            }
        }
    }

    /// Hands a client's packet, `buf[packet]`, to the core, timing it
    /// when it is a STUN request (two clock reads per request; none per
    /// relayed packet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_client(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        buf: &mut [u8],
        packet: std::ops::Range<usize>,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Verdict {
        // A STUN request: the top two bits zero, and both class bits
        // (0x0100 and 0x0010 of the message type) clear.
        let request = matches!(buf.get(packet.clone()), Some([a, b, ..]) if a & 0xC1 == 0 && b & 0x10 == 0);
        let started = request.then(super::now);
        let verdict = self.server.handle_client(now, listener, from, buf, packet, reply, sockets);
        if let Some(started) = started
            && let Verdict::Reply(_) = verdict
        {
            self.latency.record(super::now().saturating_duration_since(started));
        }
        verdict
    }

    /// Passes a payload of `buf` to the inbox of the worker that owns its
    /// destination (this one's too). When that inbox is full, the packet
    /// to send through the kernel instead.
    pub(crate) fn to_owner(&self, h: ToOwner, buf: &[u8]) -> Option<Transmit> {
        let payload = buf.get(h.transmit.range.clone()).unwrap_or_default();
        if self.inboxes.send(h.worker, h.transmit.to, h.from, payload) { None } else { Some(h.transmit) }
    }

    /// Waits for work until `deadline` (`None`: until woken) through
    /// `wait`, which gets how long it may sleep. It does not sleep while
    /// busy polling, nor while packets from other workers wait in its
    /// inbox; otherwise it is parked meanwhile, so that senders wake it.
    pub(crate) fn idle<R>(&mut self, deadline: Option<Instant>, wait: impl FnOnce(Option<Duration>) -> R) -> R {
        let now = now();
        let mut deadline = deadline;
        let mut uncredited = Vec::new();
        if let Some(mirror) = &mut self.mirror {
            while let Some(event) = self.server.poll_event() {
                // What the program carried for a relay it lets go of is
                // the session's (a withdrawal's, republished afresh), or
                // its stop record's.
                if let Some((token, session, usage)) = mirror.apply(event)
                    && !self.server.credit(token, session, usage)
                {
                    uncredited.push((session, usage));
                }
            }
            // Lapsed entries go on time, whether or not packets come.
            mirror.sweep(now);
            deadline = match (deadline, mirror.next_sweep()) {
                (Some(d), Some(s)) => Some(d.min(s)),
                (d, s) => d.or(s),
            };
        }
        if let Some(next) = self.record_sessions(now, &uncredited) {
            deadline = Some(deadline.map_or(next, |d| d.min(next)));
        }
        let timeout = if self.polling.polls(now) || !self.inboxes.park(self.id) {
            Some(Duration::ZERO)
        } else {
            deadline.map(|at| at.saturating_duration_since(now))
        };
        let result = wait(timeout);
        self.inboxes.unpark(self.id);
        result
    }

    /// The worker found work from outside (a datagram) at `now`.
    pub(crate) fn worked(&mut self, now: Instant) {
        self.polling.worked(now);
    }

    /// Takes over the allocations a previous process handed over (before
    /// the worker reports ready); those that do not fit are logged and
    /// their sockets closed. Then waits, a while at most, until every
    /// worker of the node has (`arrived`).
    pub(crate) fn adopt(
        &mut self,
        allocations: Vec<Adoptable>,
        arrived: Option<Arc<AtomicUsize>>,
        sockets: &mut impl Sockets,
    ) {
        let now = now();
        let revoked = self.server.stats().revoked;
        for moved in allocations {
            let client = moved.client;
            if let Err(e) = self.server.adopt(now, moved, sockets) {
                tracing::warn!(%client, error = %e, "an allocation handed over could not be taken over");
            }
        }
        let revoked = self.server.stats().revoked - revoked;
        if revoked > 0 {
            tracing::warn!(revoked, "permissions and channels handed over that this node's peer policy denies: ended");
        }
        let Some(arrived) = arrived else { return };
        let workers = self.inboxes.workers();
        arrived.fetch_add(1, Ordering::AcqRel);
        // Bounded: a worker that failed to start never arrives.
        let deadline = now + Duration::from_secs(5);
        while arrived.load(Ordering::Acquire) < workers && super::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// A handover: gives the node this worker's allocations and
    /// descriptors (the datapath has stopped taking packets), then waits.
    /// `true` when the worker is to stop (the new process took over).
    pub(crate) fn freeze(
        &mut self,
        reply: &Sender<Frozen>,
        udp: Vec<OwnedFd>,
        streams: Vec<OwnedFd>,
        relay: impl Fn(RelayToken) -> Option<OwnedFd>,
        mut conns: Vec<MovedConn>,
        counters: DatapathCounters,
    ) -> bool {
        let mut export = self.server.export(now());
        // The fast path's counts go with their sessions (the next process
        // counts on in maps of its own).
        if let Some(mirror) = &self.mirror {
            for m in &mut export.moved {
                let Some(s) = &mut m.session else { continue };
                let id = ip2p_turn::SessionId(s.id);
                for r in m.relays.iter().flatten() {
                    let u = mirror.usage(r.socket, id);
                    s.packets_to_peers += u.packets_to_peers;
                    s.bytes_to_peers += u.bytes_to_peers;
                    s.packets_from_peers += u.packets_from_peers;
                    s.bytes_from_peers += u.bytes_from_peers;
                }
            }
        }
        // A stream client's allocation moves with its connection, or not at
        // all (TLS); a connection moves with its allocation, or with none
        // yet (not an RFC 6062 one's, which stays).
        let before = export.moved.len();
        let moving: HashSet<_> = conns.iter().map(|c| (c.state.listener, c.state.peer)).collect();
        export.moved.retain(|m| {
            m.listener.transport == ip2p_wire::Transport::Datagram || moving.contains(&(m.listener.index, m.client))
        });
        export.staying += before - export.moved.len();
        let stream_clients: HashSet<_> = export.moved.iter().map(|m| (m.listener, m.client)).collect();
        conns.retain(|c| {
            let key = (ListenerId::stream(c.state.listener), c.state.peer);
            !self.server.has_allocation(key.0, key.1) || stream_clients.contains(&key)
        });
        let tokens = export.moved.iter().flat_map(|m| m.relays.iter().flatten().map(|r| r.socket));
        let relays: HashMap<_, _> = tokens.filter_map(|t| relay(t).map(|fd| (t, fd))).collect();
        // An allocation whose relay socket did not come stays.
        let before = export.moved.len();
        export.moved.retain(|m| m.relays.iter().flatten().all(|r| relays.contains_key(&r.socket)));
        export.staying += before - export.moved.len();
        let going_on: HashSet<u64> = export.moved.iter().filter_map(|m| m.session.map(|s| s.id)).collect();
        let frozen = Frozen { worker: self.id, export, udp, streams, relays, conns };
        if reply.send(frozen).is_err() {
            return false;
        }
        loop {
            match self.commands.recv() {
                Ok(Command::Resume) => return false,
                // Handed over: the sessions that moved go on in the new
                // process, the others end here.
                Ok(Command::Shutdown) => {
                    self.hand_over_sessions(&going_on);
                    return true;
                }
                Ok(command) => {
                    if self.command(command, counters) {
                        return true;
                    }
                }
                Err(_) => return true,
            }
        }
    }

    /// Its live sessions, with what the fast path carried for them.
    pub(crate) fn sessions(&self, query: &ip2p_turn::SessionQuery) -> Vec<Session> {
        let mut sessions = self.server.sessions_where(now(), query);
        for s in &mut sessions {
            s.usage = s.usage.plus(self.beside_the_core(s));
        }
        sessions
    }

    /// What session `s` moved outside the core: its channels on the XDP
    /// fast path, and an RFC 6062 allocation's data connections.
    pub(crate) fn beside_the_core(&self, s: &Session) -> ip2p_turn::Usage {
        let mut usage = ip2p_turn::Usage::default();
        for &token in &s.relays {
            if let Some(mirror) = &self.mirror {
                usage = usage.plus(mirror.usage(token, s.id));
            }
            if s.tcp {
                usage = usage.plus(self.tcp.usage((self.id, token)));
            }
        }
        usage
    }

    fn stats(&self, c: DatapathCounters) -> WorkerStats {
        WorkerStats {
            worker: self.id,
            turn: self.server.stats().clone(),
            allocations: self.server.allocations(),
            send_errors: c.send_errors,
            truncated: c.truncated,
            out_of_buffers: c.out_of_buffers,
            streams: c.streams,
            gso: c.gso,
            gauges: self.server.gauges(now()),
            xdp: self.mirror.as_ref().map(crate::fastpath::Mirror::counts).unwrap_or_default(),
            latency: self.latency,
            cpu: thread_cpu_time(),
        }
    }
}
