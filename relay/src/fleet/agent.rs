//! The fleet's agent: a thread of its own that writes this node's record
//! every [`BEAT`] and reads the live nodes' back in the same call. When
//! the store fails it says so once (a log line, `ip2p_fleet_store_up`)
//! and tries again on the next beat; the node serves on meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::record::{self, NodeRecord};
use super::steering;
use super::store::Store;
use super::{BEAT, FleetState, RECORD_TTL, View};
use crate::node::NodeHandle;

/// The running agent; [`Agent::stop`] ends it.
#[derive(Debug)]
pub struct Agent {
    stop: Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Agent {
    /// Starts the agent of `node` in `state`'s fleet.
    ///
    /// # Errors
    /// The store's URL cannot be used, or the thread cannot be spawned.
    pub fn start(state: Arc<FleetState>, node: NodeHandle) -> std::io::Result<Self> {
        let store = Store::new(&state.settings.redis, &state.settings.name)
            .map_err(|e| std::io::Error::other(format!("fleet.redis: {e}")))?;
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("ip2p-fleet".into())
            .spawn(move || Beat::new(state, node, store).run(&stopped))?;
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops the agent; with `leave`, it takes the node out of the
    /// registry first (not when a new process goes on as this node).
    pub fn stop(mut self, leave: bool) {
        let _ = self.stop.send(leave);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
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
        let last = (Instant::now(), record::relayed(&node));
        Self { state, node, store, started, last, down_logged: false }
    }

    fn run(mut self, stopped: &Receiver<bool>) {
        let id = self.state.settings.node.clone();
        loop {
            let next = Instant::now() + BEAT;
            self.beat();
            match stopped.recv_deadline(next) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(leave) => {
                    if leave && let Err(e) = self.store.leave(&id) {
                        tracing::warn!(error = %e, "fleet: could not leave the registry; the record expires by itself");
                    }
                    return;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Writes this node's record and reads the live nodes'.
    fn beat(&mut self) {
        let now = Instant::now();
        let relayed = record::relayed(&self.node);
        let ms = u64::try_from(now.saturating_duration_since(self.last.0).as_millis()).unwrap_or(u64::MAX).max(1);
        let rate = |now: u64, then: u64| now.saturating_sub(then).saturating_mul(1000) / ms;
        let traffic = (rate(relayed.0, self.last.1.0), rate(relayed.1, self.last.1.1));
        self.last = (now, relayed);
        let own = record::own(&self.node, &self.state.settings, self.started, traffic);
        let Ok(json) = serde_json::to_string(&own) else { return };
        match self.store.publish(&own.id, &json, RECORD_TTL) {
            Ok(stored) => {
                let nodes = self.read(stored);
                let tls_from = u16::try_from(self.node.listen().len()).unwrap_or(u16::MAX);
                self.node.steer(steering::steer(&nodes, &self.state.settings, &own, tls_from));
                self.state.set_view(View { nodes, at: Some(now) });
                self.up();
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
