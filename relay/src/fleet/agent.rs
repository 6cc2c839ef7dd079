//! The fleet's agent: a thread of its own that writes this node's record
//! every [`BEAT`] and reads the live nodes' back in the same call. When
//! the store fails it says so once (a log line, `ip2p_fleet_store_up`)
//! and tries again on the next beat; the node serves on meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use ip2p_turn::Admission;

use super::own;
use super::record::NodeRecord;
use super::state::{Asked, BEAT, FleetState, RECORD_TTL, View};
use super::steering;
use super::store::Store;

/// Admission requests answered in one round trip at most.
const MAX_BATCH: usize = 255;
use crate::node::NodeHandle;

/// The running agent; [`Agent::stop`] ends it.
#[derive(Debug)]
pub struct Agent {
    stop: Sender<bool>,
    thread: Option<JoinHandle<()>>,
    /// The control channel's listener.
    listener: super::control::Listener,
}

impl Agent {
    /// Starts the agent of `node` in `state`'s fleet.
    ///
    /// # Errors
    /// The store's URL cannot be used, or the thread cannot be spawned.
    pub fn start(state: Arc<FleetState>, node: NodeHandle) -> std::io::Result<Self> {
        let store = Store::new(&state.settings).map_err(|e| std::io::Error::other(format!("fleet.redis: {e}")))?;
        let listener = super::control::Listener::start(Arc::clone(&state), node.clone())?;
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("ip2p-fleet".into())
            .spawn(move || Beat::new(state, node, store).run(&stopped))?;
        Ok(Self { stop, thread: Some(thread), listener })
    }

    /// Stops the agent; with `leave`, it takes the node out of the
    /// registry first (not when a new process goes on as this node).
    pub fn stop(mut self, leave: bool) {
        self.listener.stop();
        let _ = self.stop.send(leave);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.listener.stop();
        let _ = self.stop.try_send(false);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The agent's loop and what it keeps between beats.
struct Beat {
    state: Arc<FleetState>,
    node: NodeHandle,
    store: Store,
    /// When the node's line of processes began (unix seconds).
    started: u64,
    /// The node's relayed packets and bytes at the last beat.
    last: (Instant, (u64, u64)),
    /// The store's failure was logged (once until it answers again).
    down_logged: bool,
}

impl Beat {
    fn new(state: Arc<FleetState>, node: NodeHandle, store: Store) -> Self {
        let started = crate::unix_now().saturating_sub(node.uptime().as_secs());
        let last = (Instant::now(), own::relayed(&node));
        Self { state, node, store, started, last, down_logged: false }
    }

    fn run(mut self, stopped: &Receiver<bool>) {
        let asked = self.state.asked.1.clone();
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                self.beat();
                next = Instant::now() + BEAT;
            }
            self.sync();
            crossbeam_channel::select! {
                recv(asked) -> first => {
                    if let Ok(first) = first {
                        self.admit(first, &asked);
                    }
                }
                recv(stopped) -> leave => {
                    if leave.unwrap_or(false) && let Err(e) = self.store.leave(&self.state.settings.node) {
                        tracing::warn!(error = %e, "fleet: could not leave the registry; the record expires by itself");
                    }
                    return;
                }
                default(next.saturating_duration_since(Instant::now())) => {}
            }
        }
    }

    /// The fleet's word on `first` and on what else waits, in one round
    /// trip; [`Admission::Unknown`] for all while the store is down.
    fn admit(&mut self, first: Asked, asked: &Receiver<Asked>) {
        let mut batch = vec![first];
        batch.extend(asked.try_iter().take(MAX_BATCH));
        let requests: Vec<&ip2p_turn::AdmissionRequest> = batch.iter().map(|a| &a.request).collect();
        let mut words = vec![Admission::Unknown; batch.len()];
        if self.state.store_up() {
            match self.store.admit(&self.state.settings.node, &requests, self.node.quota_limits()) {
                Ok(answered) if answered.len() == words.len() => words = answered,
                Ok(_) => {}
                Err(e) => self.down(&e),
            }
        }
        for (a, word) in batch.iter().zip(words) {
            self.state.counts.count_word(word);
            self.node.admitted(a.worker, a.request.ticket, word);
        }
    }

    /// Brings the store's counts of this node up to date: the whole counts
    /// on a new connection (or when the journal lost changes), else the
    /// journal's changes. While the store is down the journal is dropped:
    /// the next connection writes the whole counts.
    fn sync(&mut self) {
        let quotas = self.node.quotas();
        if !self.state.store_up() {
            let _ = quotas.take_journal();
            return;
        }
        let node = self.state.settings.node.clone();
        let journal = if self.store.fresh { None } else { Some(quotas.take_journal()) };
        let result = match journal {
            Some(j) if j.lost => self.store.rewrite(&node, quotas.counts_now()),
            Some(j) if j.changes.is_empty() => return,
            Some(j) => self.store.apply(&node, j),
            None => {
                self.store.fresh = false;
                self.store.rewrite(&node, quotas.counts_now())
            }
        };
        if let Err(e) = result {
            self.down(&e);
        }
    }

    /// Writes this node's record and reads the live nodes'.
    fn beat(&mut self) {
        let now = Instant::now();
        let relayed = own::relayed(&self.node);
        let ms = u64::try_from(now.saturating_duration_since(self.last.0).as_millis()).unwrap_or(u64::MAX).max(1);
        let rate = |now: u64, then: u64| now.saturating_sub(then).saturating_mul(1000) / ms;
        let traffic = (rate(relayed.0, self.last.1.0), rate(relayed.1, self.last.1.1));
        self.last = (now, relayed);
        let own = own::own(&self.node, &self.state.settings, self.started, traffic);
        let Ok(json) = serde_json::to_string(&own) else { return };
        match self.store.publish(&own.id, &json, RECORD_TTL) {
            Ok(stored) => {
                let nodes = self.read(stored);
                let tls_from = u16::try_from(self.node.listen().len()).unwrap_or(u16::MAX);
                self.node.steer(steering::steer(&nodes, &self.state.settings, &own, tls_from));
                self.state.set_view(View { nodes, at: Some(now) });
                self.up();
                // Should a message on the control channel have been missed.
                if let Err(e) = super::auth::refresh(&mut self.store, &self.state, &self.node) {
                    self.down(&e);
                }
            }
            Err(e) => {
                // What was read may be stale: no node is sent anywhere.
                self.node.steer(ip2p_turn::Steer::default());
                self.down(&e);
            }
        }
    }

    /// The sane records among those read, by id.
    fn read(&self, stored: Vec<Option<String>>) -> Vec<NodeRecord> {
        let mut nodes: Vec<NodeRecord> = stored
            .into_iter()
            .flatten()
            .filter_map(|json| {
                let record = serde_json::from_str::<NodeRecord>(&json).ok().filter(NodeRecord::is_sane);
                if record.is_none() {
                    self.state.counts.records_ignored.fetch_add(1, Ordering::Relaxed);
                }
                record
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    fn up(&mut self) {
        if !self.state.store_up.swap(true, Ordering::Relaxed) {
            let (fleet, node) = (&self.state.settings.name, &self.state.settings.node);
            tracing::info!(%fleet, %node, "fleet: the store answers; this node is in the registry");
        }
        self.down_logged = false;
    }

    fn down(&mut self, e: &redis::RedisError) {
        self.state.counts.store_errors.fetch_add(1, Ordering::Relaxed);
        self.state.store_up.store(false, Ordering::Relaxed);
        if !self.down_logged {
            self.down_logged = true;
            tracing::warn!(error = %e, "fleet: the store does not answer; serving on under the node's own limits");
        }
    }
}
