//! Moving bytes between sockets and the TURN core.
//!
//! Two backends run the same worker loop contract: epoll (mio, with
//! recvmmsg/sendmmsg batches) and io_uring (multishot receives into a
//! provided-buffer ring, sends from the receive buffer). Both
//! hand every datagram to [`crate::proto::Server`] and send what its
//! [`crate::proto::Verdict`] names, straight from the receive buffer.

pub(crate) mod batch;
pub(crate) mod epoll;
pub mod gso;
pub(crate) mod handoff;
pub(crate) mod socket;
pub(crate) mod stream;
pub(crate) mod tcp_relay;
pub(crate) mod uring;

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::EventFd;

use self::tcp_relay::TcpRelays;
use crate::proto::{Handoff, Held, ListenerId, RelayToken, Server, Stats, Transmit, Verdict};

/// A command from the node to a worker.
#[derive(Debug)]
pub enum Command {
    /// Finish the current batch and return.
    Shutdown,
    /// Send a snapshot of the counters.
    Stats(Sender<WorkerStats>),
    /// Use this configuration from now on (a reload).
    Reconfigure(Arc<crate::proto::Config>),
    /// Refuse new allocations; keep the others (shutting down).
    Drain,
    /// Stop taking packets from the sockets and give up the allocations
    /// and the sockets' descriptors for a new process (a handover); then
    /// wait for [`Command::Resume`] or [`Command::Shutdown`].
    HandOver(Sender<Frozen>),
    /// Go on serving after a handover that did not happen.
    Resume,
}

/// What a worker gives up in a handover: its allocations (as the core
/// exports them) and duplicates of its sockets' descriptors. The worker
/// itself takes no more packets until told to resume or stop.
#[derive(Debug)]
pub struct Frozen {
    pub(crate) worker: usize,
    pub(crate) export: crate::proto::Export,
    /// Its UDP listeners, by listener index.
    pub(crate) udp: Vec<std::os::fd::OwnedFd>,
    /// Its TCP and TLS listeners, by stream listener index.
    pub(crate) streams: Vec<std::os::fd::OwnedFd>,
    /// The relay sockets of the allocations in `export`.
    pub(crate) relays: HashMap<RelayToken, std::os::fd::OwnedFd>,
    /// Its plain TCP client connections: those with an allocation in
    /// `export`, and those with none yet.
    pub(crate) conns: Vec<stream::MovedConn>,
}

/// An allocation a new worker takes over at start, with its relay sockets
/// by family.
pub(crate) type Adopted = (crate::proto::Moved, [Option<crate::proto::Held>; 2]);

/// One worker's counters, as the node collects them.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Which worker.
    pub worker: usize,
    /// The core's counters.
    pub proto: Stats,
    /// Live allocations.
    pub allocations: usize,
    /// Sends that failed (full socket buffer, unreachable peer...): counted,
    /// never fatal.
    pub send_errors: u64,
    /// Datagrams too large for a receive buffer.
    pub truncated: u64,
    /// Times io_uring ran out of provided receive buffers (receives are
    /// re-armed when buffers come back; datagrams may be lost meanwhile).
    pub out_of_buffers: u64,
    /// TCP and TLS connections.
    pub streams: StreamCounters,
    /// Runs of datagrams sent as one (UDP GSO).
    pub gso: gso::GsoCounters,
    /// Allocations, permissions and channels held now.
    pub gauges: crate::proto::Gauges,
    /// How long STUN requests took to handle.
    pub latency: RequestLatency,
    /// CPU time the worker thread has used.
    pub cpu: std::time::Duration,
}

/// Upper bounds of the request latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1];

/// A histogram of request handling times (from the request's bytes to its
/// response, including authentication and opening relay sockets): counts
/// per bucket of [`LATENCY_BUCKETS`], the last one open-ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLatency {
    /// Requests per bucket (not cumulative); the last counts the slower.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// All handling times, summed.
    pub sum: std::time::Duration,
}

impl RequestLatency {
    fn record(&mut self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        if let Some(n) = self.buckets.get_mut(i) {
            *n += 1;
        }
        self.sum += took;
    }

    /// Requests recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another worker's.
    pub fn add(&mut self, other: &Self) {
        for (n, o) in self.buckets.iter_mut().zip(other.buckets) {
            *n += o;
        }
        self.sum += other.sum;
    }
}

/// What happened to TCP and TLS connections on a worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Open now.
    pub open: u64,
    /// Accepted.
    pub accepted: u64,
    /// Refused at accept: a connection limit was reached.
    pub refused: u64,
    /// Closed for bytes that are neither STUN nor ChannelData.
    pub closed_framing: u64,
    /// Closed for a TLS error.
    pub closed_tls: u64,
    /// Closed for staying without an allocation (or handshake) too long.
    pub closed_idle: u64,
    /// Frames to a client dropped because its send backlog was full.
    pub dropped_backlog: u64,
}

ip2p_turn::add_fields!(StreamCounters {
    open,
    accepted,
    refused,
    closed_framing,
    closed_tls,
    closed_idle,
    dropped_backlog
});

/// Everything a worker owns.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) server: Server,
    /// This worker's SO_REUSEPORT UDP socket for each listen address,
    /// indexed by [`crate::proto::ListenerId::udp`].
    pub(crate) listeners: Vec<UdpSocket>,
    /// Its TCP and TLS listeners, indexed by [`crate::proto::ListenerId::stream`].
    pub(crate) streams: Vec<StreamListener>,
    /// The node's connection limits.
    pub(crate) limits: Arc<stream::ConnLimits>,
    /// The node's RFC 6062 TCP relays, and their news for this worker
    /// (which comes with a write to `wake`).
    pub(crate) tcp: Arc<tcp_relay::TcpRelays>,
    pub(crate) tcp_events: Receiver<tcp_relay::TcpEvent>,
    pub(crate) commands: Receiver<Command>,
    /// Written by the node after queueing a command.
    pub(crate) wake: Arc<EventFd>,
    /// Told once the worker is set up (or why it could not be).
    pub(crate) ready: Option<Sender<io::Result<()>>>,
    /// Provided receive buffers of the io_uring datapath.
    pub(crate) io_uring_buffers: u16,
    /// Whether it polls for work before sleeping (`busy_poll_us`).
    pub(crate) polling: Polling,
    /// Whether runs of datagrams to one destination go as one send (`gso`).
    pub(crate) gso: bool,
    pub(crate) latency: RequestLatency,
    /// The node's inboxes for packets between workers.
    pub(crate) handoffs: Arc<handoff::Handoffs>,
    /// Its writer of the XDP fast path's tables, when the fast path runs.
    pub(crate) mirror: Option<crate::fastpath::Mirror>,
    /// Allocations handed over by a previous process, taken over at start,
    /// and how many workers have taken theirs over: none takes a packet
    /// before all have (a packet for another worker's allocation not yet
    /// taken over would find no such relayed address).
    pub(crate) adopted: Vec<Adopted>,
    /// Connections handed over by a previous process.
    pub(crate) adopted_conns: Vec<stream::MovedConn>,
    pub(crate) adopting: Option<Arc<std::sync::atomic::AtomicUsize>>,
    /// A handover asked for, done by the datapath once it has stopped
    /// taking packets.
    pub(crate) hand_over: Option<Sender<Frozen>>,
}

/// Whether a worker polls for work instead of sleeping (`busy_poll_us`,
/// `busy_poll_adaptive`): a packet that comes while it polls costs no
/// wake-up, but polling keeps the core busy.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Polling {
    /// How long it polls (zero: it sleeps at once).
    window: std::time::Duration,
    /// Only while work keeps coming within `window` of the last (else after
    /// any work).
    adaptive: bool,
    /// Until when it polls.
    until: Option<std::time::Instant>,
    /// When it last found work.
    last: Option<std::time::Instant>,
}

impl Polling {
    pub(crate) fn new(window: std::time::Duration, adaptive: bool) -> Self {
        Self { window, adaptive, ..Self::default() }
    }

    /// Work came at `now`: it polls for more before it sleeps again, for
    /// `window`. When adaptive, only if this work came within `window` of
    /// the last: while packets keep coming that close, polling costs less
    /// than a sleep and a wake-up each; once the line goes quiet for a
    /// window, the worker sleeps, and at each packet after that until two
    /// come that close again.
    pub(crate) fn worked(&mut self, now: std::time::Instant) {
        if self.window.is_zero() {
            return;
        }
        let close = self.last.is_some_and(|last| now.saturating_duration_since(last) <= self.window);
        self.last = Some(now);
        self.until = (close || !self.adaptive).then(|| now + self.window);
    }

    /// Whether it polls at `now`.
    pub(crate) fn polls(&self, now: std::time::Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

/// What a datapath provides to be the core's [`Sockets`]: its UDP relay
/// sockets, and its TCP relays. The rest is the same for both datapaths.
pub(crate) trait RelaySockets {
    /// Watches `socket` as relay `token`'s.
    ///
    /// # Errors
    /// The socket cannot be watched.
    fn install(&mut self, token: RelayToken, socket: UdpSocket) -> io::Result<()>;
    /// Closes relay `token`'s UDP socket; `false` if it has none (the token
    /// is a TCP relay's).
    fn uninstall(&mut self, token: RelayToken) -> bool;
    /// Sends `bytes` to `to` from relay `token`'s UDP socket at once,
    /// outside the datapath's batches (a stream client's frame).
    ///
    /// # Errors
    /// The send's, or `NotFound` when the relay has no UDP socket.
    fn send_now(&self, token: RelayToken, bytes: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// The node's TCP relays (RFC 6062), and this worker's index in them.
    fn tcp(&self) -> (&Arc<TcpRelays>, usize);
    /// ConnectionBinds that succeeded, for the loop to hand their client
    /// connections over to the TCP relays.
    fn data_connections(&mut self) -> &mut Vec<DataConnection>;
}

/// The core's [`crate::proto::Sockets`] for a datapath's [`RelaySockets`]: written once,
/// implemented for each datapath's type (the trait is the core crate's,
/// so no blanket implementation is allowed here).
macro_rules! relay_sockets {
    ($t:ty) => {
        impl $crate::proto::Sockets for $t {
            fn open_relay(
                &mut self,
                token: $crate::proto::RelayToken,
                addr: std::net::SocketAddr,
                dont_fragment: bool,
            ) -> std::io::Result<()> {
                $crate::datapath::open_relay(self, token, addr, dont_fragment)
            }
            fn hold(&mut self, addr: std::net::SocketAddr) -> std::io::Result<$crate::proto::Held> {
                $crate::datapath::socket::hold(addr)
            }
            fn adopt_relay(
                &mut self,
                token: $crate::proto::RelayToken,
                held: $crate::proto::Held,
                dont_fragment: bool,
            ) -> std::io::Result<()> {
                $crate::datapath::adopt_relay(self, token, held, dont_fragment)
            }
            fn close_relay(&mut self, token: $crate::proto::RelayToken) {
                $crate::datapath::close_relay(self, token);
            }
            fn open_tcp_relay(
                &mut self,
                token: $crate::proto::RelayToken,
                addr: std::net::SocketAddr,
                username: &str,
                client: std::net::IpAddr,
            ) -> std::io::Result<()> {
                let (tcp, worker) = $crate::datapath::RelaySockets::tcp(self);
                tcp.listen((worker, token), addr, username, client)
            }
            fn tcp_connect(
                &mut self,
                token: $crate::proto::RelayToken,
                from: std::net::SocketAddr,
                peer: std::net::SocketAddr,
            ) {
                let (tcp, worker) = $crate::datapath::RelaySockets::tcp(self);
                tcp.connect((worker, token), from, peer);
            }
            fn tcp_busy(&mut self, token: $crate::proto::RelayToken, peer: std::net::SocketAddr) -> bool {
                let (tcp, worker) = $crate::datapath::RelaySockets::tcp(self);
                tcp.busy((worker, token), peer)
            }
            fn tcp_accept(&mut self, id: u32, accept: bool) {
                $crate::datapath::RelaySockets::tcp(self).0.accept(id, accept);
            }
            fn tcp_bind(
                &mut self,
                id: u32,
                username: &str,
                listener: $crate::proto::ListenerId,
                client: std::net::SocketAddr,
            ) -> bool {
                $crate::datapath::tcp_bind(self, id, username, listener, client)
            }
        }
    };
}
pub(crate) use relay_sockets;

/// [`crate::proto::Sockets::open_relay`] for every datapath.
pub(crate) fn open_relay(
    s: &mut impl RelaySockets,
    token: RelayToken,
    addr: SocketAddr,
    dont_fragment: bool,
) -> io::Result<()> {
    s.install(token, socket::bind_udp(addr, false, dont_fragment)?)
}

/// [`crate::proto::Sockets::adopt_relay`] for every datapath.
pub(crate) fn adopt_relay(
    s: &mut impl RelaySockets,
    token: RelayToken,
    held: Held,
    dont_fragment: bool,
) -> io::Result<()> {
    s.install(token, socket::adopt(held, dont_fragment)?)
}

/// [`crate::proto::Sockets::close_relay`] for every datapath: its UDP socket, else its
/// TCP relay.
pub(crate) fn close_relay(s: &mut impl RelaySockets, token: RelayToken) {
    if !s.uninstall(token) {
        let (tcp, worker) = s.tcp();
        tcp.close((worker, token));
    }
}

/// [`crate::proto::Sockets::tcp_bind`] for every datapath.
pub(crate) fn tcp_bind(
    s: &mut impl RelaySockets,
    id: u32,
    username: &str,
    listener: ListenerId,
    client: SocketAddr,
) -> bool {
    let bound = s.tcp().0.bind(id, username);
    if bound {
        s.data_connections().push(DataConnection { listener, client, id });
    }
    bound
}

/// A client connection a ConnectionBind turned into a data connection
/// (RFC 6062 §5.4): the datapath hands it to the TCP relays.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataConnection {
    pub(crate) listener: crate::proto::ListenerId,
    pub(crate) client: std::net::SocketAddr,
    pub(crate) id: u32,
}

/// A TCP listener, serving TLS when it has a TLS configuration.
#[derive(Debug)]
pub(crate) struct StreamListener {
    pub(crate) socket: TcpListener,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
}

/// Counters only a datapath sees.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DatapathCounters {
    pub(crate) send_errors: u64,
    pub(crate) truncated: u64,
    pub(crate) out_of_buffers: u64,
    pub(crate) streams: StreamCounters,
    pub(crate) gso: gso::GsoCounters,
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
            Command::Shutdown => return true,
            Command::Stats(reply) => {
                let _ = reply.send(self.stats(counters));
            }
            Command::Reconfigure(config) => self.server.reconfigure(config, now()),
            Command::Drain => self.server.drain(),
            Command::HandOver(reply) => self.hand_over = Some(reply),
            Command::Resume => {}
        }
        false
    }

    /// Hands a client's packet, `buf[packet]`, to the core, timing it
    /// when it is a STUN request (two clock reads per request; none per
    /// relayed packet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn handle_client(
        &mut self,
        now: std::time::Instant,
        listener: ListenerId,
        from: SocketAddr,
        buf: &mut [u8],
        packet: std::ops::Range<usize>,
        reply: &mut [u8],
        sockets: &mut impl crate::proto::Sockets,
    ) -> Verdict {
        // A STUN request: the top two bits zero, and both class bits
        // (0x0100 and 0x0010 of the message type) clear.
        let request = matches!(buf.get(packet.clone()), Some([a, b, ..]) if a & 0xC1 == 0 && b & 0x10 == 0);
        let started = request.then(self::now);
        let verdict = self.server.handle_client(now, listener, from, buf, packet, reply, sockets);
        if let Some(started) = started
            && let Verdict::Reply(_) = verdict
        {
            self.latency.record(self::now().saturating_duration_since(started));
        }
        verdict
    }

    /// Passes a payload of `buf` to the inbox of the worker that owns its
    /// destination (this one's too). When that inbox is full, the packet
    /// to send through the kernel instead.
    pub(crate) fn hand_off(&self, h: Handoff, buf: &[u8]) -> Option<Transmit> {
        let payload = buf.get(h.transmit.range.clone()).unwrap_or_default();
        if self.handoffs.send(h.worker, h.transmit.to, h.from, payload) { None } else { Some(h.transmit) }
    }

    /// Waits for work until `deadline` (`None`: until woken) through
    /// `wait`, which gets how long it may sleep. It does not sleep while
    /// busy polling, nor while packets from other workers wait in its
    /// inbox; otherwise it is parked meanwhile, so that senders wake it.
    pub(crate) fn idle<R>(
        &mut self,
        deadline: Option<std::time::Instant>,
        wait: impl FnOnce(Option<std::time::Duration>) -> R,
    ) -> R {
        if let Some(mirror) = &mut self.mirror {
            while let Some(event) = self.server.poll_event() {
                mirror.apply(event);
            }
        }
        let now = now();
        let timeout = if self.polling.polls(now) || !self.handoffs.park(self.id) {
            Some(std::time::Duration::ZERO)
        } else {
            deadline.map(|at| at.saturating_duration_since(now))
        };
        let result = wait(timeout);
        self.handoffs.unpark(self.id);
        result
    }

    /// The worker found work from outside (a datagram) at `now`.
    pub(crate) fn worked(&mut self, now: std::time::Instant) {
        self.polling.worked(now);
    }

    /// Takes over the allocations a previous process handed over (before
    /// the worker reports ready); those that do not fit are logged and
    /// their sockets closed.
    pub(crate) fn adopt(&mut self, sockets: &mut impl crate::proto::Sockets) {
        let now = now();
        for (moved, held) in std::mem::take(&mut self.adopted) {
            if let Err(e) = self.server.adopt(now, &moved, held, sockets) {
                tracing::warn!(client = %moved.client, error = %e, "an allocation handed over could not be taken over");
            }
        }
        if let Some(adopting) = self.adopting.take() {
            use std::sync::atomic::Ordering;
            let workers = self.handoffs.workers();
            adopting.fetch_add(1, Ordering::AcqRel);
            // Bounded: a worker that failed to start never arrives.
            let deadline = now + std::time::Duration::from_secs(5);
            while adopting.load(Ordering::Acquire) < workers && self::now() < deadline {
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
        }
    }

    /// A handover: gives the node this worker's allocations and
    /// descriptors (the datapath has stopped taking packets), then waits.
    /// `true` when the worker is to stop (the new process took over).
    pub(crate) fn freeze(
        &mut self,
        reply: &Sender<Frozen>,
        udp: Vec<std::os::fd::OwnedFd>,
        streams: Vec<std::os::fd::OwnedFd>,
        relay: impl Fn(RelayToken) -> Option<std::os::fd::OwnedFd>,
        mut conns: Vec<stream::MovedConn>,
        counters: DatapathCounters,
    ) -> bool {
        let mut export = self.server.export(now());
        // A stream client's allocation moves with its connection, or not at
        // all (TLS); a connection moves with its allocation, or with none
        // yet (not an RFC 6062 one's, which stays).
        let before = export.moved.len();
        let moving: std::collections::HashSet<_> = conns.iter().map(|c| (c.state.listener, c.state.peer)).collect();
        export.moved.retain(|(m, _)| {
            m.listener.transport == ip2p_wire::Transport::Datagram || moving.contains(&(m.listener.index, m.client))
        });
        export.staying += before - export.moved.len();
        let stream_clients: std::collections::HashSet<_> =
            export.moved.iter().map(|(m, _)| (m.listener, m.client)).collect();
        conns.retain(|c| {
            let key = (crate::proto::ListenerId::stream(c.state.listener), c.state.peer);
            !self.server.has_allocation(key.0, key.1) || stream_clients.contains(&key)
        });
        let tokens = export.moved.iter().flat_map(|(_, tokens)| tokens.iter().flatten().copied());
        let relays = tokens.filter_map(|t| relay(t).map(|fd| (t, fd))).collect();
        let frozen = Frozen { worker: self.id, export, udp, streams, relays, conns };
        if reply.send(frozen).is_err() {
            return false;
        }
        loop {
            match self.commands.recv() {
                Ok(Command::Resume) => return false,
                Ok(command) => {
                    if self.command(command, counters) {
                        return true;
                    }
                }
                Err(_) => return true,
            }
        }
    }

    /// Tells the node the worker runs.
    pub(crate) fn report_ready(&mut self) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
    }

    fn stats(&self, c: DatapathCounters) -> WorkerStats {
        WorkerStats {
            worker: self.id,
            proto: self.server.stats().clone(),
            allocations: self.server.allocations(),
            send_errors: c.send_errors,
            truncated: c.truncated,
            out_of_buffers: c.out_of_buffers,
            streams: c.streams,
            gso: c.gso,
            gauges: self.server.gauges(now()),
            latency: self.latency,
            cpu: thread_cpu_time(),
        }
    }
}

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

/// How long to wait before re-arming an operation (an accept, a multishot
/// receive) that failed `failures` times in a row: 10 ms, doubling, at most
/// a second. A failure that repeats at once never turns into a busy loop.
pub(crate) fn backoff(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(10u64.saturating_mul(1 << failures.min(7))).min(std::time::Duration::from_secs(1))
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(std::time::Duration::ZERO, |t| {
        std::time::Duration::new(u64::try_from(t.tv_sec()).unwrap_or(0), u32::try_from(t.tv_nsec()).unwrap_or(0))
    })
}

/// Reads the clock: the one place the datapaths take `now` from.
pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Polling;

    #[test]
    fn adaptive_polling_polls_while_work_comes_close_and_sleeps_when_it_does_not() {
        let (t0, us) = (Instant::now(), Duration::from_micros);
        let mut p = Polling::new(us(20), true);
        p.worked(t0);
        assert!(!p.polls(t0), "one packet out of the blue: sleep");
        p.worked(t0 + us(10));
        assert!(p.polls(t0 + us(10)) && p.polls(t0 + us(29)) && !p.polls(t0 + us(30)));
        // Quiet for longer than the window: the next packet sleeps again.
        p.worked(t0 + us(100));
        assert!(!p.polls(t0 + us(100)));
        let mut fixed = Polling::new(us(20), false);
        fixed.worked(t0);
        assert!(fixed.polls(t0 + us(19)) && !fixed.polls(t0 + us(20)));
        let mut off = Polling::new(Duration::ZERO, true);
        off.worked(t0);
        off.worked(t0);
        assert!(!off.polls(t0));
    }
}
