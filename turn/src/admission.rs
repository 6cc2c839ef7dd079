//! Fleet-wide quotas, in the core: an Allocate that passed every local
//! check waits for the fleet's word instead of being answered at once
//! ([`crate::Config::admission`]). The core parks the request (a copy of
//! its bytes, bounded in number), hands out an [`AdmissionRequest`] for
//! the caller to take to the shared store, and answers the client when
//! [`crate::Server::admitted`] brings the [`Admission`]: the request runs
//! again, as if just received, with that word at the quota step. The
//! worker's other traffic never waits; a retransmission of a parked
//! request is dropped (its answer follows).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::ListenerId;

/// Parked requests a worker holds at most; past them an Allocate is
/// judged by the fallback at once.
pub const MAX_PARKED: usize = 1024;

/// How long a parked request waits for its word before the fallback
/// judges it (the store's calls time out well before).
pub const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// The fleet's word on one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted in the fleet: go on (the node's own limits still apply).
    Admitted,
    /// The user's fleet-wide quota is reached: 486.
    OverUser,
    /// The client address's fleet-wide quota is reached: 486.
    OverPrefix,
    /// The fleet could not say: the [`crate::Fallback`] decides.
    Unknown,
}

/// An allocation to be counted by the fleet: `count` against `user` and
/// `prefix` (2 when it reserves a second port), if the fleet's limits
/// allow. Answer with [`crate::Server::admitted`] and `ticket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionRequest {
    /// Names the parked request.
    pub ticket: u64,
    /// Whom it counts against (a REST username's user part).
    pub user: Box<str>,
    /// The client's address, or its /64.
    pub prefix: IpAddr,
    /// How many allocations it counts as.
    pub count: u8,
}

/// An Allocate waiting for the fleet's word.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) listener: ListenerId,
    pub(crate) client: SocketAddr,
    /// The request's bytes, to run it again (none once its client is
    /// gone).
    pub(crate) request: Box<[u8]>,
    pub(crate) since: Instant,
    /// What the fleet is asked to count.
    pub(crate) account: crate::Account,
    pub(crate) count: u8,
}

/// A worker's parked requests and the words that came for them.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    pub(crate) parked: HashMap<u64, Parked>,
    /// The ticket parked for a client.
    pub(crate) by_client: HashMap<(ListenerId, SocketAddr), u64>,
    /// Requests for the caller to take to the store.
    pub(crate) requests: std::collections::VecDeque<AdmissionRequest>,
    /// The word for the request running again now.
    pub(crate) word: Option<((ListenerId, SocketAddr), Admission)>,
    pub(crate) next_ticket: u64,
    /// The Allocate just handled was parked (or already was): no answer
    /// now.
    pub(crate) waiting: bool,
}

impl Admissions {
    /// The earliest time a parked request is overdue.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.parked.values().map(|p| p.since + ADMISSION_WAIT).min()
    }
}
