//! Starting a node, as a sequence: choose the datapath, bind the
//! listening sockets (or take a previous process's), build what the
//! workers share, spawn one thread per worker with its [`WorkerSetup`],
//! and wait until every worker runs. A node that cannot start whole does
//! not start at all.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Receiver;
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::handle::{Counters, NodeHandle, WorkerLink};
use super::local;
use super::resources::{allowed_cpus, pin_to_cpu, quota_limits, raise_fd_limit, relay_ports, worker_config};
use super::running::Node;
use crate::config::{DatapathKind, Settings};
use crate::datapath::conn_limits::ConnLimits;
use crate::datapath::inbox::Inboxes;
use crate::datapath::moving::{Adoption, MovedConn};
use crate::datapath::polling::Polling;
use crate::datapath::socket::{WorkerSockets, bind_listeners};
use crate::datapath::stats::RequestLatency;
use crate::datapath::tcp_relay::{Notifier, TcpEvent, TcpRelays};
use crate::datapath::worker::{Command, StreamListener, Worker, WorkerSetup};
use crate::datapath::{self, now};
use crate::unix_now;
use ip2p_turn::{NodeState, Quotas, Server};

/// What a previous process handed over, per worker.
#[derive(Debug)]
pub(crate) struct Inherited {
    pub(crate) workers: Vec<InheritedWorker>,
    /// The previous process's counters.
    pub(crate) counters: Counters,
    /// Its revocations: users and until when.
    pub(crate) revocations: Vec<(String, u64)>,
}

/// One worker's listening sockets, its allocations with their relay
/// sockets, and its TCP client connections.
#[derive(Debug)]
pub(crate) struct InheritedWorker {
    pub(crate) sockets: WorkerSockets,
    pub(crate) allocations: Vec<ip2p_turn::Adoptable>,
    pub(crate) conns: Vec<MovedConn>,
}

/// How long a worker may take to set up before the start fails.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Starts the node: binds every listening socket (so a bad address fails
/// here, not later) and spawns the workers.
///
/// # Errors
/// A socket that cannot be bound, or a thread that cannot be spawned.
pub fn start(settings: &Settings) -> io::Result<Node> {
    start_with(settings, None, Vec::new())
}

/// [`start`] with `revocations` (user, until) in force from the first
/// packet: a fleet's, read before the node serves.
///
/// # Errors
/// As [`start`].
pub fn start_revoking(settings: &Settings, revocations: Vec<(String, u64)>) -> io::Result<Node> {
    start_with(settings, None, revocations)
}

/// [`start`], or with the sockets and allocations of a previous process
/// (`settings.engine.workers` and the listen addresses must be theirs).
pub(crate) fn start_with(
    settings: &Settings,
    inherited: Option<Inherited>,
    mut revocations: Vec<(String, u64)>,
) -> io::Result<Node> {
    let datapath = resolve_datapath(settings.engine.datapath)?;
    let (sockets, adoptions, counted_before) = match inherited {
        Some(mut i) => {
            revocations.append(&mut i.revocations);
            inherit(i)
        }
        None => fresh(settings)?,
    };
    let (listen, tls_listen) = served(sockets.first(), settings.listen.len());
    raise_fd_limit();
    let quotas = quota_limits(settings);
    tracing::info!(
        allocations = quotas.total,
        derived = settings.max_allocations.is_none(),
        per_user = quotas.per_user,
        per_address = quotas.per_prefix,
        "allocation limits (0: none)"
    );
    let xdp = crate::fastpath::start(settings)?;
    let state = NodeState::new(Quotas::new(quotas));
    for (user, until) in revocations {
        let _ = state.revocations.add(&user, until, unix_now());
    }
    let local_watch = watch_local_addresses(&state);
    let (mut common, wirings) = Common::new(settings, sockets.len(), state)?;
    let cpus = allowed_cpus();
    let (mut threads, mut links, mut readiness) = (Vec::new(), Vec::new(), Vec::new());
    for (id, ((listeners, adoption), wiring)) in sockets.into_iter().zip(adoptions).zip(wirings).enumerate() {
        let mirror = match &xdp {
            Some(fast) => {
                let listen = listeners.udp.iter().filter_map(|s| s.local_addr().ok()).collect();
                Some(crate::fastpath::Mirror::new(fast, id, settings.engine.workers, listen)?)
            }
            None => None,
        };
        let (commands, receiver) = crossbeam_channel::unbounded();
        let wake = wiring.wake.clone();
        let worker = worker(settings, &common, id, wiring, receiver, mirror);
        let (ready, ready_rx) = crossbeam_channel::bounded(2);
        let streams = stream_listeners(settings, listeners.streams);
        let io_uring_buffers = settings.engine.io_uring_buffers;
        let setup = WorkerSetup { worker, listeners: listeners.udp, streams, io_uring_buffers, adoption, ready };
        threads.push(Some(spawn(setup, datapath, cpus.get(id % cpus.len().max(1)).copied())?));
        links.push(WorkerLink { commands, wake });
        readiness.push(ready_rx);
    }
    let handle = NodeHandle {
        workers: links.into(),
        shared: common.shared,
        limits: common.limits,
        listen: listen.into(),
        tls_listen: tls_listen.into(),
        datapath,
        started: now(),
        draining: Arc::default(),
        xdp,
        xdp_generic: settings.xdp.generic,
        xdp_channels: settings.xdp.channels,
        xdp_detached: Arc::default(),
        counted_before: Arc::new(counted_before),
        credentials: Arc::new(Mutex::new(Arc::new(settings.turn.credentials.clone()))),
        relay_ports: relay_ports(settings),
        usage: common.usage.as_ref().map(crate::usage::UsageLog::counts),
        relay_ips: Arc::new(settings.turn.relay_ips.clone()),
        fleet: common.fleet.clone(),
        live: Arc::new(Mutex::new(super::handle::Live::new(settings.clone()))),
    };
    let local_watch = match local_watch {
        Some(watch) => {
            let stop = watch.stopper();
            let workers = handle.workers.clone();
            watch.spawn(Arc::downgrade(&handle.shared), move || {
                workers.iter().for_each(|w| w.send(Command::Rejudge));
            })?;
            Some(stop)
        }
        None => None,
    };
    let node = Node { threads, handle, settings: settings.clone(), local_watch, usage: common.usage.take() };
    started(node, &readiness)
}

/// Reads the host's addresses into `state`, and returns the watch that
/// keeps them current; without rtnetlink (a sandbox), the interface
/// addresses at start, with a warning.
fn watch_local_addresses(state: &NodeState) -> Option<local::LocalWatch> {
    match local::LocalWatch::open().and_then(|w| Ok((w.read()?, w))) {
        Ok((ranges, watch)) => {
            state.local.set(ranges);
            Some(watch)
        }
        Err(e) => {
            state.local.set(local::interface_addresses());
            tracing::warn!(
                error = %e,
                "rtnetlink unavailable: the host's addresses are its interfaces' at start; one added later is not \
                 refused as a peer until a restart"
            );
            None
        }
    }
}

/// Which datapath to run: `auto` picks io_uring when it works here, and
/// says why when it does not.
fn resolve_datapath(kind: DatapathKind) -> io::Result<DatapathKind> {
    match kind {
        DatapathKind::Epoll => Ok(DatapathKind::Epoll),
        DatapathKind::IoUring => match datapath::uring::probe() {
            Ok(()) => Ok(DatapathKind::IoUring),
            Err(e) => Err(io::Error::new(e.kind(), format!("io_uring datapath unavailable: {e}"))),
        },
        DatapathKind::Auto => match datapath::uring::probe() {
            Ok(()) => Ok(DatapathKind::IoUring),
            Err(e) => {
                tracing::warn!(reason = %e, "io_uring unavailable, using epoll");
                Ok(DatapathKind::Epoll)
            }
        },
    }
}

/// Each worker's listening sockets, freshly bound, with nothing to adopt.
fn fresh(settings: &Settings) -> io::Result<(Vec<WorkerSockets>, Vec<Adoption>, Counters)> {
    let bound = bind_listeners(&settings.listen, &settings.tls_listen, settings.engine.workers)?;
    let adoptions = bound.iter().map(|_| Adoption::default()).collect();
    Ok((bound, adoptions, Counters::new()))
}

/// A previous process's sockets, what each worker adopts, and its counters.
fn inherit(inherited: Inherited) -> (Vec<WorkerSockets>, Vec<Adoption>, Counters) {
    let arrived = Some(Arc::default());
    let (sockets, adoptions) = inherited
        .workers
        .into_iter()
        .map(|w| {
            let adoption = Adoption { allocations: w.allocations, conns: w.conns, arrived: arrived.clone() };
            (w.sockets, adoption)
        })
        .unzip();
    (sockets, adoptions, inherited.counters)
}

/// The addresses served (ports resolved): UDP and TCP, then TLS (the
/// stream listeners after the first `plain`).
fn served(first: Option<&WorkerSockets>, plain: usize) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let Some(first) = first else { return (Vec::new(), Vec::new()) };
    let listen = first.udp.iter().filter_map(|s| s.local_addr().ok()).collect();
    let tls = first.streams.iter().skip(plain).filter_map(|s| s.local_addr().ok()).collect();
    (listen, tls)
}

/// A worker's TCP listeners (one per listen address), then its TLS ones.
fn stream_listeners(settings: &Settings, streams: Vec<std::net::TcpListener>) -> Vec<StreamListener> {
    let tls_config = settings.tls.as_ref().map(crate::tls::Tls::config);
    let plain = settings.listen.len();
    let tls = |i: usize| if i < plain { None } else { tls_config.clone() };
    streams.into_iter().enumerate().map(|(i, socket)| StreamListener { socket, tls: tls(i) }).collect()
}

/// What the workers share: the connection limits, the core's node state,
/// the TCP relays and the inboxes, and each worker's wake-up and channel
/// of TCP relay news (made first: the TCP relays need every worker's).
struct Common {
    limits: Arc<ConnLimits>,
    shared: Arc<NodeState>,
    tcp: Arc<TcpRelays>,
    inboxes: Arc<Inboxes>,
    /// The usage log, when records are written.
    usage: Option<crate::usage::UsageLog>,
    /// The fleet the node joins, if any.
    fleet: Option<Arc<crate::fleet::FleetState>>,
}

/// A worker's end of the node's channels to it.
struct Wiring {
    wake: Arc<EventFd>,
    tcp_events: Receiver<TcpEvent>,
}

impl Common {
    fn new(settings: &Settings, workers: usize, shared: NodeState) -> io::Result<(Self, Vec<Wiring>)> {
        let c = &settings.connections;
        let (idle, handshake, proxy_from) = (c.idle_timeout, c.tls_handshake_timeout, c.proxy_protocol_from.clone());
        let limits = Arc::new(ConnLimits::new(c.max, c.max_per_ip, idle, handshake, c.send_buffer, proxy_from));
        let mut wirings = Vec::new();
        let mut notifiers = Vec::new();
        for _ in 0..workers {
            let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?);
            let (events, tcp_events) = crossbeam_channel::unbounded();
            notifiers.push(Notifier { events, wake: wake.clone() });
            wirings.push(Wiring { wake, tcp_events });
        }
        let wakes: Vec<Arc<EventFd>> = wirings.iter().map(|w| w.wake.clone()).collect();
        let usage = match &settings.usage {
            Some(u) => {
                let fleet = settings.fleet.as_ref().filter(|f| f.usage_stream > 0);
                let stream = fleet.map(crate::fleet::UsageStream::start).transpose()?;
                Some(crate::usage::UsageLog::open(u.file.as_deref(), settings.listen.len(), stream)?)
            }
            None => None,
        };
        let fleet = settings.fleet.clone().map(|f| Arc::new(crate::fleet::FleetState::new(f)));
        if fleet.is_some() {
            // What the fleet's store has not counted yet, for its agent.
            shared.quotas.keep_journal();
        }
        let common = Self {
            usage,
            fleet,
            tcp: TcpRelays::new(notifiers, limits.clone()),
            limits,
            shared: Arc::new(shared),
            inboxes: Arc::new(Inboxes::new(&wakes)),
        };
        Ok((common, wirings))
    }
}

/// Worker `id`, taking commands from `commands` and, with a fast path,
/// mirroring its forwarding state with `mirror`.
fn worker(
    settings: &Settings,
    common: &Common,
    id: usize,
    wiring: Wiring,
    commands: Receiver<Command>,
    mirror: Option<crate::fastpath::Mirror>,
) -> Worker {
    let mut config = worker_config(settings, id, settings.engine.workers);
    // Events only for a mirror.
    config.events = mirror.is_some();
    let server = Server::new(Arc::new(config), common.shared.clone(), now(), unix_now(), rand::random());
    Worker {
        id,
        server: server.on_worker(u16::try_from(id).unwrap_or(u16::MAX)),
        limits: common.limits.clone(),
        tcp: common.tcp.clone(),
        tcp_events: wiring.tcp_events,
        commands,
        wake: wiring.wake,
        polling: Polling::new(settings.engine.busy_poll, settings.engine.busy_poll_adaptive),
        gso: settings.engine.gso,
        latency: RequestLatency::default(),
        inboxes: common.inboxes.clone(),
        mirror,
        freeze_request: None,
        fleet: common.fleet.as_ref().map(|f| f.asking()),
        words: Vec::new(),
        records: common.usage.as_ref().zip(settings.usage.as_ref()).map(|(log, u)| crate::usage::Records {
            sink: log.sink(),
            interval: u.interval,
            next: now() + u.interval,
            cursor: None,
        }),
    }
}

/// Spawns worker `setup.worker.id` on `datapath`, pinned to `cpu`; a
/// worker that fails says so to whoever waits for it to be ready.
fn spawn(
    setup: WorkerSetup,
    datapath: DatapathKind,
    cpu: Option<usize>,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    let id = setup.worker.id;
    let ready = setup.ready.clone();
    std::thread::Builder::new().name(format!("ip2p-worker-{id}")).spawn(move || {
        if let Some(cpu) = cpu {
            pin_to_cpu(cpu);
        }
        let result = match datapath {
            DatapathKind::IoUring => datapath::uring::run(setup),
            _ => datapath::epoll::run(setup),
        };
        if let Err(e) = &result {
            tracing::error!(worker = id, error = %e, "worker stopped");
            let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        result
    })
}

/// The node once every worker said it runs; a worker that cannot run
/// fails the start (no half-working node).
fn started(mut node: Node, readiness: &[Receiver<io::Result<()>>]) -> io::Result<Node> {
    for (id, ready) in readiness.iter().enumerate() {
        let failed = match ready.recv_timeout(READY_WITHIN) {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => io::Error::new(e.kind(), format!("worker {id} cannot start: {e}")),
            Err(_) => io::Error::other(format!("worker {id} did not start")),
        };
        let _ = node.stop();
        return Err(failed);
    }
    tracing::info!(listen = ?node.local_addrs(), tls = ?node.tls_addrs(), workers = node.workers(), datapath = ?node.datapath(), version = %crate::VERSION, "ip2p-relay started");
    Ok(node)
}
