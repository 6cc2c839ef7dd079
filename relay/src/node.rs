//! The node: worker threads (one per core by default), their sockets, and a
//! control handle for stats and shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::config::{DatapathKind, Settings};
use crate::datapath::stream::ConnLimits;
use crate::datapath::tcp_relay::{Notifier, TcpRelays};
use crate::datapath::{self, Command, StreamListener, Worker, WorkerStats, now};
use crate::proto::{QuotaLimits, Quotas, Server, Shared};

/// A running node.
#[derive(Debug)]
pub struct Node {
    threads: Vec<Option<JoinHandle<io::Result<()>>>>,
    handle: NodeHandle,
    /// What the node runs with: a reload is compared against it.
    settings: Settings,
}

/// What other threads (the admin listener) may ask of a running node:
/// counters, state, drain. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    workers: Arc<[WorkerLink]>,
    shared: Arc<Shared>,
    limits: Arc<ConnLimits>,
    /// The addresses served: UDP and TCP, and TLS (ports resolved).
    listen: Arc<[SocketAddr]>,
    tls_listen: Arc<[SocketAddr]>,
    datapath: DatapathKind,
    started: std::time::Instant,
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// The XDP fast path, when it runs; whether on the generic hook; and
    /// the interfaces it was detached from for a handover in progress.
    xdp: Option<crate::fastpath::Shared>,
    xdp_generic: bool,
    xdp_detached: Arc<std::sync::Mutex<Vec<String>>>,
    /// The counters of the processes before this one, by sample as
    /// `/metrics` names them: this node's count on from there.
    counted_before: Arc<Counters>,
    /// The realm and REST secrets as the configuration last said, for the
    /// admin listener's self-test to mint a credential with.
    credentials: Arc<std::sync::Mutex<Arc<ip2p_turn::Credentials>>>,
    /// Relay ports the node can hand out: its port range on each relay
    /// address.
    relay_ports: usize,
}

/// Counter samples by name and labels (`ip2p_x_total{a="b"}`).
pub(crate) type Counters = std::collections::BTreeMap<String, u64>;

/// A worker's command queue and the eventfd that wakes it.
#[derive(Debug)]
struct WorkerLink {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
}

impl WorkerLink {
    fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
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

/// Worker `i`'s share of the relay port range: contiguous slices, so each
/// worker can hand out even ports on its own.
fn port_share(lo: u16, hi: u16, workers: usize, i: usize) -> (u16, u16) {
    let span = usize::from(hi - lo) + 1;
    let start = usize::from(lo) + span * i / workers;
    let end = usize::from(lo) + span * (i + 1) / workers - 1;
    (u16::try_from(start).unwrap_or(hi), u16::try_from(end).unwrap_or(hi))
}

/// Starts the node: binds every listening socket (so a bad address fails
/// here, not later) and spawns the workers.
///
/// # Errors
/// A socket that cannot be bound, or a thread that cannot be spawned.
pub fn start(settings: &Settings) -> io::Result<Node> {
    start_with(settings, None)
}

/// What a previous process handed over, per worker.
#[derive(Debug)]
pub(crate) struct Inherited {
    pub(crate) workers: Vec<InheritedWorker>,
    /// The previous process's counters.
    pub(crate) counters: Counters,
}

/// One worker's listening sockets, its allocations with their relay
/// sockets, and its TCP client connections.
#[derive(Debug)]
pub(crate) struct InheritedWorker {
    pub(crate) sockets: datapath::socket::WorkerSockets,
    pub(crate) allocations: Vec<datapath::Adopted>,
    pub(crate) conns: Vec<datapath::stream::MovedConn>,
}

/// [`start`], or with the sockets and allocations of a previous process
/// (`settings.workers` and the listen addresses must be theirs).
pub(crate) fn start_with(settings: &Settings, inherited: Option<Inherited>) -> io::Result<Node> {
    let datapath = resolve_datapath(settings.datapath)?;
    let adopting = inherited.is_some().then(Arc::default);
    let counted_before = Arc::new(inherited.as_ref().map(|i| i.counters.clone()).unwrap_or_default());
    let (sockets, mut adopted): (Vec<_>, Vec<_>) = match inherited {
        Some(i) => i.workers.into_iter().map(|w| (w.sockets, (w.allocations, w.conns))).unzip(),
        None => {
            let bound = datapath::socket::bind_listeners(&settings.listen, &settings.tls_listen, settings.workers)?;
            let none = bound.iter().map(|_| (Vec::new(), Vec::new())).collect();
            (bound, none)
        }
    };
    let local: Vec<SocketAddr> =
        sockets.first().map(|s| s.udp.iter().filter_map(|s| s.local_addr().ok()).collect()).unwrap_or_default();
    let tls_local: Vec<SocketAddr> = sockets
        .first()
        .map(|s| s.streams.iter().skip(settings.listen.len()).filter_map(|s| s.local_addr().ok()).collect())
        .unwrap_or_default();
    let c = &settings.connections;
    let limits = Arc::new(ConnLimits::new(c.max, c.max_per_ip, c.idle_timeout, c.tls_handshake_timeout, c.send_buffer));
    let tls_config = settings.tls.as_ref().map(crate::tls::Tls::config);
    let (lo, hi) = (*settings.proto.ports.start(), *settings.proto.ports.end());
    let cpus = allowed_cpus();
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
    let shared = Arc::new(Shared::new(Quotas::new(quotas)));
    let mut threads = Vec::new();
    let mut links = Vec::new();
    let mut readiness = Vec::new();
    // Each worker's command channel and wake-up, made first: the TCP
    // relays need every worker's to tell them of their connections.
    let mut channels = Vec::new();
    let mut notifiers = Vec::new();
    for _ in 0..sockets.len() {
        let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?);
        let (events, events_rx) = crossbeam_channel::unbounded();
        notifiers.push(Notifier { events, wake: wake.clone() });
        channels.push((wake, events_rx));
    }
    let tcp = TcpRelays::new(notifiers, limits.clone());
    let wakes: Vec<Arc<EventFd>> = channels.iter().map(|(wake, _)| wake.clone()).collect();
    let handoffs = Arc::new(datapath::handoff::Handoffs::new(&wakes));
    for ((id, listeners), (wake, tcp_events)) in sockets.into_iter().enumerate().zip(channels) {
        let plain = settings.listen.len();
        let streams = listeners
            .streams
            .into_iter()
            .enumerate()
            .map(|(i, socket)| StreamListener { socket, tls: if i < plain { None } else { tls_config.clone() } })
            .collect();
        let (wlo, whi) = port_share(lo, hi, settings.workers, id);
        let mut config = settings.proto.clone();
        config.ports = wlo..=whi;
        // Events only for a mirror.
        config.events = xdp.is_some();
        let mirror = match &xdp {
            Some(fast) => {
                let listen = listeners.udp.iter().filter_map(|s| s.local_addr().ok()).collect();
                Some(crate::fastpath::Mirror::new(fast, id, settings.workers, listen)?)
            }
            None => None,
        };
        let (commands, receiver) = crossbeam_channel::unbounded();
        let server = Server::new(Arc::new(config), shared.clone(), now(), unix_now(), rand::random())
            .on_worker(u16::try_from(id).unwrap_or(u16::MAX));
        let (ready, ready_rx) = crossbeam_channel::bounded(2);
        let worker = Worker {
            id,
            server,
            listeners: listeners.udp,
            streams,
            limits: limits.clone(),
            tcp: tcp.clone(),
            tcp_events,
            commands: receiver,
            wake: wake.clone(),
            ready: Some(ready.clone()),
            io_uring_buffers: settings.io_uring_buffers,
            polling: datapath::Polling::new(settings.busy_poll, settings.busy_poll_adaptive),
            gso: settings.gso,
            latency: datapath::RequestLatency::default(),
            handoffs: handoffs.clone(),
            mirror,
            adopted: adopted.get_mut(id).map(|(a, _)| std::mem::take(a)).unwrap_or_default(),
            adopted_conns: adopted.get_mut(id).map(|(_, c)| std::mem::take(c)).unwrap_or_default(),
            adopting: adopting.clone(),
            hand_over: None,
        };
        let cpu = cpus.get(id % cpus.len().max(1)).copied();
        let thread = std::thread::Builder::new().name(format!("ip2p-worker-{id}")).spawn(move || {
            if let Some(cpu) = cpu {
                pin_to_cpu(cpu);
            }
            let result = match datapath {
                DatapathKind::IoUring => datapath::uring::run(worker),
                _ => datapath::epoll::run(worker),
            };
            if let Err(e) = &result {
                tracing::error!(worker = id, error = %e, "worker stopped");
                let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            result
        })?;
        threads.push(Some(thread));
        links.push(WorkerLink { commands, wake });
        readiness.push(ready_rx);
    }
    let handle = NodeHandle {
        workers: links.into(),
        shared,
        limits,
        listen: local.into(),
        tls_listen: tls_local.into(),
        datapath,
        started: now(),
        draining: Arc::default(),
        xdp,
        xdp_generic: settings.xdp.generic,
        xdp_detached: Arc::default(),
        counted_before,
        credentials: Arc::new(std::sync::Mutex::new(Arc::new(settings.proto.credentials.clone()))),
        relay_ports: (usize::from(hi) + 1 - usize::from(lo))
            * settings.proto.relay_ips.iter().map(Vec::len).sum::<usize>(),
    };
    let mut node = Node { threads, handle, settings: settings.clone() };
    // A worker that cannot run fails the start: no half-working node.
    for (id, ready) in readiness.iter().enumerate() {
        match ready.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = node.stop();
                return Err(io::Error::new(e.kind(), format!("worker {id} cannot start: {e}")));
            }
            Err(_) => {
                let _ = node.stop();
                return Err(io::Error::other(format!("worker {id} did not start")));
            }
        }
    }
    tracing::info!(listen = ?node.local_addrs(), tls = ?node.tls_addrs(), workers = settings.workers, datapath = ?datapath, version = %crate::VERSION, "ip2p-relay started");
    Ok(node)
}

/// File descriptors kept aside from allocations: listeners, the admin
/// listener, io_uring, connections being accepted, files the process opens.
/// A quarter of the limit, between 32 and 256.
fn fd_reserve(nofile: u64) -> u64 {
    (nofile / 4).clamp(32, 256)
}

/// The node's allocation limits: the configured ones, with the node's
/// total, when not configured, as many as the relay ports and the open
/// file limit allow.
fn quota_limits(settings: &Settings) -> QuotaLimits {
    let total = settings.max_allocations.unwrap_or_else(|| {
        let span = u64::from(settings.proto.ports.end() - settings.proto.ports.start()) + 1;
        let addresses = settings.proto.relay_ips.iter().map(Vec::len).sum::<usize>().max(1) as u64;
        let ports = span * addresses;
        // A relay socket each (a dual allocation or a reservation takes
        // one more; connections take theirs too: EMFILE is answered 508).
        let nofile =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        let listeners = (settings.listen.len() * 2 + settings.tls_listen.len()) as u64 * settings.workers as u64;
        let fds = nofile.saturating_sub(fd_reserve(nofile) + listeners).max(1);
        usize::try_from(ports.min(fds)).unwrap_or(usize::MAX)
    });
    QuotaLimits { total, per_user: settings.user_quota, per_prefix: settings.ip_quota }
}

/// Every allocation holds a relay socket: raise the soft fd limit to the
/// hard one, as servers with many sockets do.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open file limit"),
            Err(e) => tracing::warn!(error = %e, limit = soft, "cannot raise the open file limit"),
        }
    }
}

/// The CPUs this process may run on (taskset, cgroups, systemd's
/// CPUAffinity): workers are pinned within them, never outside.
fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else { return Vec::new() };
    (0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect()
}

fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Best effort: a container may not allow it.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

impl Node {
    /// The addresses the node listens on (ports resolved when 0 was asked).
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.handle.listen
    }

    /// The addresses the node serves TLS on.
    #[must_use]
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.handle.tls_listen
    }

    /// Applies what a reloaded configuration changes, without dropping an
    /// allocation or a packet: credentials, REST secrets, the peer policy,
    /// lifetimes, channel numbers, SOFTWARE and the quotas. Returns the keys
    /// that changed but need a restart (listen addresses, workers, relay
    /// addresses and ports...), which keep their running values.
    pub fn reconfigure(&mut self, new: &Settings) -> Vec<&'static str> {
        let old = &self.settings;
        let mut restart = Vec::new();
        let mut changed = |key, differs: bool| {
            if differs {
                restart.push(key);
            }
        };
        changed("listen", old.listen != new.listen);
        changed("tls.listen", old.tls_listen != new.tls_listen);
        changed("workers", old.workers != new.workers);
        changed("datapath", old.datapath != new.datapath);
        changed("io_uring_buffers", old.io_uring_buffers != new.io_uring_buffers);
        changed("busy_poll_us", old.busy_poll != new.busy_poll);
        changed("busy_poll_adaptive", old.busy_poll_adaptive != new.busy_poll_adaptive);
        changed("gso", old.gso != new.gso);
        changed("xdp", old.xdp != new.xdp);
        let binds = |s: &Settings| s.proto.relay_ips.clone().map(|f| f.iter().map(|r| r.bind).collect::<Vec<_>>());
        changed("relay.ips", binds(old) != binds(new));
        changed("relay.external_ips", old.proto.relay_ips != new.proto.relay_ips);
        changed("relay.ports", old.proto.ports != new.proto.ports);
        changed("connections", old.connections != new.connections);
        changed("admin.listen", old.admin != new.admin);
        changed(
            "tls.cert",
            old.tls.as_ref().map(crate::tls::Tls::files) != new.tls.as_ref().map(crate::tls::Tls::files),
        );
        restart.dedup();
        // Live: everything else of the core's configuration, with the
        // running relay addresses and each worker's port share.
        let mut settings = new.clone();
        settings.xdp.clone_from(&old.xdp);
        settings.proto.events = self.handle.xdp.is_some();
        settings.proto.relay_ips.clone_from(&old.proto.relay_ips);
        settings.proto.policy.host.clone_from(&old.proto.policy.host);
        if new.nonce_secret_generated {
            // A fresh random one would make every client's nonce stale.
            settings.proto.credentials.nonce_secret = old.proto.credentials.nonce_secret;
        }
        let (lo, hi) = (*old.proto.ports.start(), *old.proto.ports.end());
        let workers = &self.handle.workers;
        for (id, w) in workers.iter().enumerate() {
            let mut config = settings.proto.clone();
            let (wlo, whi) = port_share(lo, hi, workers.len(), id);
            config.ports = wlo..=whi;
            w.send(Command::Reconfigure(Arc::new(config)));
        }
        self.handle.shared.quotas.set_limits(quota_limits(new));
        *self.handle.credentials.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(new.proto.credentials.clone());
        settings.proto.ports = old.proto.ports.clone();
        settings.listen.clone_from(&old.listen);
        settings.tls_listen.clone_from(&old.tls_listen);
        settings.workers = old.workers;
        settings.datapath = old.datapath;
        settings.io_uring_buffers = old.io_uring_buffers;
        settings.busy_poll = old.busy_poll;
        settings.busy_poll_adaptive = old.busy_poll_adaptive;
        settings.gso = old.gso;
        settings.connections = old.connections.clone();
        settings.admin = old.admin;
        settings.tls.clone_from(&old.tls);
        self.settings = settings;
        restart
    }

    /// The settings the node runs with (after reloads).
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A handle other threads can hold.
    #[must_use]
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// See [`NodeHandle::drain`].
    pub fn drain(&self) {
        self.handle.drain();
    }

    /// See [`NodeHandle::workers`].
    #[must_use]
    pub fn workers(&self) -> usize {
        self.handle.workers()
    }

    /// See [`NodeHandle::datapath`].
    #[must_use]
    pub fn datapath(&self) -> DatapathKind {
        self.handle.datapath
    }

    /// See [`NodeHandle::allocations`].
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.handle.allocations()
    }

    /// See [`NodeHandle::stats`].
    #[must_use]
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.handle.stats()
    }

    /// Stops every worker and waits for them.
    ///
    /// # Errors
    /// The first error a worker stopped with.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        for w in self.handle.workers.iter() {
            w.send(Command::Shutdown);
        }
        let mut result = Ok(());
        for thread in &mut self.threads {
            if let Some(thread) = thread.take() {
                let r = thread.join().unwrap_or_else(|_| Err(io::Error::other("worker panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
        }
        result
    }
}

impl NodeHandle {
    /// The counters of the processes before this one (a handover).
    pub(crate) fn counted_before(&self) -> &Counters {
        &self.counted_before
    }

    /// Stops every worker taking packets and collects what they give up
    /// for a new process (a handover); the XDP fast path is detached (the
    /// new process attaches its own). Without every worker's answer within
    /// `timeout` the workers go on and this fails.
    ///
    /// # Errors
    /// A worker did not answer in time.
    pub(crate) fn freeze(&self, timeout: Duration) -> io::Result<Vec<datapath::Frozen>> {
        let (tx, rx) = crossbeam_channel::bounded(self.workers.len());
        for w in self.workers.iter() {
            w.send(Command::HandOver(tx.clone()));
        }
        drop(tx);
        let deadline = now() + timeout;
        let mut frozen: Vec<datapath::Frozen> =
            (0..self.workers.len()).filter_map(|_| rx.recv_deadline(deadline).ok()).collect();
        if frozen.len() != self.workers.len() {
            self.resume();
            return Err(io::Error::new(io::ErrorKind::TimedOut, "a worker did not stop for the handover"));
        }
        frozen.sort_by_key(|f| f.worker);
        if let Some(fast) = &self.xdp
            && let Ok(mut detached) = self.xdp_detached.lock()
        {
            *detached = crate::fastpath::detach_for_handover(fast);
        }
        Ok(frozen)
    }

    /// Workers go on after a handover that did not happen (and the XDP
    /// fast path is attached again).
    pub(crate) fn resume(&self) {
        if let Some(fast) = &self.xdp
            && let Ok(mut detached) = self.xdp_detached.lock()
        {
            crate::fastpath::reattach(fast, &std::mem::take(&mut *detached), self.xdp_generic);
        }
        for w in self.workers.iter() {
            w.send(Command::Resume);
        }
    }

    /// Starts draining: every worker refuses new allocations (300 with an
    /// alternate, or 508) and keeps the others.
    pub fn drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers.iter() {
            w.send(Command::Drain);
        }
        if let Some(fast) = &self.xdp {
            crate::fastpath::detach(fast);
        }
    }

    /// What the XDP fast path did, when it runs.
    #[must_use]
    pub fn xdp_outcomes(&self) -> Option<ip2p_xdp::Outcomes> {
        self.xdp.as_ref().and_then(crate::fastpath::outcomes)
    }

    /// The interfaces the XDP fast path is attached to.
    #[must_use]
    pub fn xdp_interfaces(&self) -> Vec<String> {
        let Some(fast) = &self.xdp else { return Vec::new() };
        fast.lock().map(|f| f.interfaces().map(str::to_owned).collect()).unwrap_or_default()
    }

    /// Whether the node drains (and so is not ready for new clients).
    #[must_use]
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Worker threads.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The datapath in use.
    #[must_use]
    pub fn datapath(&self) -> DatapathKind {
        self.datapath
    }

    /// The addresses served over UDP and TCP.
    #[must_use]
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// The addresses served over TLS.
    #[must_use]
    pub fn tls_listen(&self) -> &[SocketAddr] {
        &self.tls_listen
    }

    /// Time since the node started.
    #[must_use]
    pub fn uptime(&self) -> Duration {
        now().saturating_duration_since(self.started)
    }

    /// Live allocations on the node (EVEN-PORT reservations count as
    /// allocations until claimed).
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.shared.quotas.total()
    }

    /// The credentials requests are checked against now (after reloads).
    #[must_use]
    pub fn credentials(&self) -> Arc<ip2p_turn::Credentials> {
        Arc::clone(&self.credentials.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Relay ports the node can hand out (its range on each relay address).
    #[must_use]
    pub fn relay_ports(&self) -> usize {
        self.relay_ports
    }

    /// The most TCP and TLS connections counted at once.
    #[must_use]
    pub fn connections_limit(&self) -> usize {
        self.limits.max_total
    }

    /// EVEN-PORT reservations held now.
    #[must_use]
    pub fn reservations(&self) -> usize {
        self.shared.reservations()
    }

    /// The allocation limits in force.
    #[must_use]
    pub fn quota_limits(&self) -> QuotaLimits {
        self.shared.quotas.limits()
    }

    /// TCP and TLS connections counted against the connection limits: the
    /// clients', and RFC 6062's peer and data connections.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.limits.total()
    }

    /// Every worker's counters, asked of each worker (a worker that does
    /// not answer within 2 s is missing from the list).
    #[must_use]
    pub fn stats(&self) -> Vec<WorkerStats> {
        let (tx, rx) = crossbeam_channel::bounded(self.workers.len());
        for w in self.workers.iter() {
            w.send(Command::Stats(tx.clone()));
        }
        drop(tx);
        let deadline = now() + Duration::from_secs(2);
        let mut all: Vec<WorkerStats> =
            (0..self.workers.len()).filter_map(|_| rx.recv_deadline(deadline).ok()).collect();
        all.sort_by_key(|s| s.worker);
        all
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_shares_cover_the_range_without_overlap() {
        for (lo, hi, n) in [(49152, 65535, 2), (50000, 50000, 1), (1000, 1006, 3), (1, 65535, 7)] {
            let mut next = lo;
            for i in 0..n {
                let (a, b) = port_share(lo, hi, n, i);
                assert_eq!(a, next);
                assert!(a <= b);
                next = b.wrapping_add(1);
            }
            assert_eq!(next, hi.wrapping_add(1));
        }
    }
}
