//! What other threads (the admin listener, a handover, the lifecycle)
//! may ask of a running node: counters and state, drain, freeze and
//! resume. Commands reach a worker through its queue and eventfd; nothing
//! here waits on the packet path.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::sys::eventfd::EventFd;

use crate::config::DatapathKind;
use crate::datapath::conn_limits::ConnLimits;
use crate::datapath::moving::Frozen;
use crate::datapath::now;
use crate::datapath::stats::WorkerStats;
use crate::datapath::worker::Command;
use ip2p_turn::{Credentials, ListenerId, NodeState, QuotaLimits, Session, SessionId};

/// What other threads (the admin listener) may ask of a running node:
/// counters, state, drain. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub(super) workers: Arc<[WorkerLink]>,
    pub(super) shared: Arc<NodeState>,
    pub(super) limits: Arc<ConnLimits>,
    /// The addresses served: UDP and TCP, and TLS (ports resolved).
    pub(super) listen: Arc<[SocketAddr]>,
    pub(super) tls_listen: Arc<[SocketAddr]>,
    pub(super) datapath: DatapathKind,
    pub(super) started: Instant,
    pub(super) draining: Arc<AtomicBool>,
    /// The XDP fast path, when it runs; whether on the generic hook; and
    /// the interfaces it was detached from for a handover in progress.
    pub(super) xdp: Option<crate::fastpath::Loaded>,
    pub(super) xdp_generic: bool,
    /// The XDP tables' size (channels), when the fast path runs.
    pub(super) xdp_channels: u32,
    pub(super) xdp_detached: Arc<Mutex<Vec<String>>>,
    /// The counters of the processes before this one, by sample as
    /// `/metrics` names them: this node's count on from there.
    pub(super) counted_before: Arc<Counters>,
    /// The realm and REST secrets as the configuration last said, for the
    /// admin listener's self-test to mint a credential with.
    pub(super) credentials: Arc<Mutex<Arc<Credentials>>>,
    /// Relay ports the node can hand out: its port range on each relay
    /// address.
    pub(super) relay_ports: usize,
    /// What the usage log did, when records are written.
    pub(super) usage: Option<Arc<crate::usage::UsageCounts>>,
    /// The relay addresses by family, as configured (restart only).
    pub(super) relay_ips: Arc<[Vec<ip2p_turn::RelayIp>; 2]>,
    /// The fleet it is in, if any.
    pub(super) fleet: Option<Arc<crate::fleet::FleetState>>,
    /// What the workers' configuration is made of.
    pub(super) live: Arc<Mutex<Live>>,
}

/// The parts of the workers' configuration.
#[derive(Debug)]
pub(crate) struct Live {
    pub(super) settings: crate::config::Settings,
    pub(super) fleet_auth: Option<crate::fleet::FleetAuth>,
}

impl Live {
    pub(super) fn new(settings: crate::config::Settings) -> Self {
        Self { settings, fleet_auth: None }
    }
}

/// Counter samples by name and labels (`ip2p_x_total{a="b"}`).
pub(crate) type Counters = std::collections::BTreeMap<String, u64>;

/// A worker's command queue and the eventfd that wakes it.
#[derive(Debug)]
pub(super) struct WorkerLink {
    pub(super) commands: Sender<Command>,
    pub(super) wake: Arc<EventFd>,
}

impl WorkerLink {
    pub(super) fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.wake.write(1);
        }
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
    pub(crate) fn freeze(&self, timeout: Duration) -> io::Result<Vec<Frozen>> {
        let (tx, rx) = crossbeam_channel::bounded(self.workers.len());
        for w in self.workers.iter() {
            w.send(Command::Freeze(tx.clone()));
        }
        drop(tx);
        let deadline = now() + timeout;
        let mut frozen: Vec<Frozen> = (0..self.workers.len()).filter_map(|_| rx.recv_deadline(deadline).ok()).collect();
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
        self.draining.store(true, Ordering::Relaxed);
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

    /// How many channels the XDP tables hold at most (0: no fast path).
    #[must_use]
    pub fn xdp_capacity(&self) -> u32 {
        if self.xdp.is_some() { self.xdp_channels } else { 0 }
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
        self.draining.load(Ordering::Relaxed)
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

    /// Where the workers send new allocations from now on (the fleet's
    /// choice).
    pub(crate) fn steer(&self, steer: ip2p_turn::Steer) {
        self.shared.steering.set(steer);
    }

    /// Tells worker `worker` the fleet's `word` on its parked Allocate
    /// `ticket`.
    pub(crate) fn admitted(&self, worker: usize, ticket: u64, word: ip2p_turn::Admission) {
        if let Some(w) = self.workers.get(worker) {
            w.send(Command::Admitted(ticket, word));
        }
    }

    /// The fleet the node is in, if any.
    #[must_use]
    pub fn fleet(&self) -> Option<&Arc<crate::fleet::FleetState>> {
        self.fleet.as_ref()
    }

    /// Live allocations on the node (EVEN-PORT reservations count as
    /// allocations until claimed).
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.shared.quotas.total()
    }

    /// The credentials requests are checked against now (after reloads).
    #[must_use]
    pub fn credentials(&self) -> Arc<Credentials> {
        Arc::clone(&self.credentials.lock().unwrap_or_else(PoisonError::into_inner))
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

    /// The load balancers trusted to send a PROXY header.
    #[must_use]
    pub fn proxy_protocol_from(&self) -> &[ipnet::IpNet] {
        &self.limits.proxy_from
    }

    /// EVEN-PORT reservations held now.
    #[must_use]
    pub fn reservations(&self) -> usize {
        self.shared.reservations()
    }

    /// The node's allocation counts.
    pub(crate) fn quotas(&self) -> &ip2p_turn::Quotas {
        &self.shared.quotas
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
        let mut all = self.ask_all(Command::Stats);
        all.sort_by_key(|s| s.worker);
        all
    }

    /// Each worker's answer to the command `ask` makes, as they come (a
    /// worker that does not answer within 2 s is missing).
    fn ask_all<T>(&self, ask: impl Fn(crossbeam_channel::Sender<T>) -> Command) -> Vec<T> {
        let (tx, rx) = crossbeam_channel::bounded(self.workers.len());
        for w in self.workers.iter() {
            w.send(ask(tx.clone()));
        }
        drop(tx);
        let deadline = now() + Duration::from_secs(2);
        (0..self.workers.len()).filter_map(|_| rx.recv_deadline(deadline).ok()).collect()
    }

    /// Every worker's live sessions that `query` asks for (a worker that
    /// does not answer within 2 s is missing), with the XDP fast path's
    /// counts.
    #[must_use]
    pub fn sessions(&self, query: &ip2p_turn::SessionQuery) -> Vec<Session> {
        self.ask_all(|reply| Command::Sessions(query.clone(), reply)).into_iter().flatten().collect()
    }

    /// Ends session `id` now, on whichever worker holds it: whether one
    /// did (`None`: a worker did not answer within 2 s, and none did).
    #[must_use]
    pub fn end_session(&self, id: SessionId) -> Option<bool> {
        let answers = self.ask_all(|reply| Command::EndSession(id, reply));
        if answers.contains(&true) { Some(true) } else { (answers.len() == self.workers.len()).then_some(false) }
    }

    /// How a session's client reaches the node: "udp", "tcp" or "tls"
    /// (the stream listeners are the TCP ones, then the TLS ones).
    #[must_use]
    pub fn transport(&self, listener: ListenerId) -> &'static str {
        crate::usage::transport(listener, self.listen.len())
    }

    /// What the usage log did, when records are written.
    #[must_use]
    pub fn usage_counts(&self) -> Option<Arc<crate::usage::UsageCounts>> {
        self.usage.clone()
    }

    /// Revokes `user` until unix time `until`: its credentials are refused
    /// from now on and its live sessions end; how many did (`None`: a
    /// worker did not answer).
    ///
    /// # Errors
    /// The node holds as many revocations as it may.
    pub fn revoke(&self, user: &str, until: u64) -> Result<Option<usize>, ip2p_turn::revocations::Full> {
        self.shared.revocations.add(user, until, crate::unix_now())?;
        let ended = self.ask_all(|reply| Command::Revoke(user.into(), reply));
        Ok((ended.len() == self.workers.len()).then(|| ended.iter().sum()))
    }

    /// The node's revocations: the shared set.
    #[must_use]
    pub fn revocations(&self) -> &ip2p_turn::Revocations {
        &self.shared.revocations
    }

    /// The address clients use for `ip`, a listen address's IP: the
    /// external address of the relay address it is (1:1 NAT), or for a
    /// wildcard the first relay address of its family (as advertised).
    #[must_use]
    pub fn advertised(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        let family = usize::from(ip.is_ipv6());
        let relays = self.relay_ips.get(family).map(Vec::as_slice).unwrap_or_default();
        let shown = |r: &ip2p_turn::RelayIp| r.external.unwrap_or(r.bind);
        match relays.iter().find(|r| r.bind == ip) {
            Some(r) => shown(r),
            None if ip.is_unspecified() => relays.first().map_or(ip, shown),
            None => ip,
        }
    }
}
