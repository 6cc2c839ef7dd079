//! What the node's other threads know of the fleet ([`FleetState`]): its
//! settings, the live nodes as last read, whether the store answers, the
//! agent's counters, and the workers' admission requests on their way to
//! the agent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::record::NodeRecord;
use super::store::Store;
use crate::config::Fleet;

/// How often a node writes its record and reads the others'.
pub const BEAT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a record lives unless written again: a node that stops
/// writing (it died) leaves the registry this long after its last beat.
pub const RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(3);

/// What the node's threads know of the fleet: its settings, the live
/// nodes as last read, whether the store answers, and counters.
#[derive(Debug)]
pub struct FleetState {
    pub(super) settings: Fleet,
    view: Mutex<Arc<View>>,
    pub(super) store_up: AtomicBool,
    pub(super) counts: FleetCounts,
    /// The workers' admission requests, to the agent.
    pub(super) asked: (Sender<Asked>, Receiver<Asked>),
    /// The admin API's connection to the store.
    pub(super) api: Mutex<Option<Store>>,
    /// The version of the store's users and secrets the node runs with.
    pub(super) auth_version: AtomicU64,
    /// The store lost its users and secrets (said once).
    pub(super) auth_lost: AtomicBool,
}

/// A worker's parked Allocate, for the fleet's word.
#[derive(Debug)]
pub struct Asked {
    /// The worker to answer.
    pub worker: usize,
    /// What to count.
    pub request: ip2p_turn::AdmissionRequest,
}

/// Admission requests queued for the agent at most (past them a worker
/// answers with the fallback at once).
const MAX_ASKED: usize = 4096;

/// The live nodes as read from the registry at `at` (this node's among
/// them once it published).
#[derive(Debug, Default)]
pub struct View {
    /// The live nodes, by id.
    pub nodes: Vec<NodeRecord>,
    /// When they were read; `None` before the first read.
    pub at: Option<Instant>,
}

/// What the fleet's agent did (for `/metrics`).
#[derive(Debug, Default)]
pub struct FleetCounts {
    /// Calls to the store that failed (refused, timed out, garbage).
    pub store_errors: AtomicU64,
    /// Node records, control messages and stored users read from the
    /// store and ignored as not sane.
    pub records_ignored: AtomicU64,
    /// The fleet's words on Allocates: admitted, over the user's quota,
    /// over the prefix's, unknown (the store could not say).
    pub words: [AtomicU64; 4],
}

impl FleetCounts {
    pub(super) fn count_word(&self, word: ip2p_turn::Admission) {
        let i = match word {
            ip2p_turn::Admission::Admitted => 0,
            ip2p_turn::Admission::OverUser => 1,
            ip2p_turn::Admission::OverPrefix => 2,
            ip2p_turn::Admission::Unknown => 3,
        };
        if let Some(n) = self.words.get(i) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl FleetState {
    /// The state of a node joining `settings`' fleet (the store not
    /// reached yet).
    #[must_use]
    pub fn new(settings: Fleet) -> Self {
        Self {
            settings,
            view: Mutex::new(Arc::new(View::default())),
            store_up: AtomicBool::new(false),
            counts: FleetCounts::default(),
            asked: crossbeam_channel::bounded(MAX_ASKED),
            api: Mutex::new(None),
            auth_version: AtomicU64::new(0),
            auth_lost: AtomicBool::new(false),
        }
    }

    /// Where a worker sends its admission requests.
    pub(crate) fn asking(&self) -> Sender<Asked> {
        self.asked.0.clone()
    }

    /// The fleet's settings.
    #[must_use]
    pub fn settings(&self) -> &Fleet {
        &self.settings
    }

    /// The live nodes as last read.
    #[must_use]
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn set_view(&self, view: View) {
        *self.view.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
    }

    /// Whether the store answered the last call.
    #[must_use]
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// What the agent did.
    #[must_use]
    pub fn counts(&self) -> &FleetCounts {
        &self.counts
    }
}
