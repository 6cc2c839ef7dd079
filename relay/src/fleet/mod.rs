//! The fleet: relay nodes sharing one Redis (`[fleet]`). Each node writes
//! what it owns there (its record in the registry, every second, with a
//! time to live) and reads the others' on the same beat; nothing on the
//! packet path ever waits on the store.
//!
//! The parts: `state` ([`FleetState`], what the node's other threads
//! read: the live nodes, whether the store answers), `agent` (the thread
//! that talks to the store), `own` (this node's record), `store` (the
//! connection), `scripts` (what runs in Redis), `target` (where the store
//! is), `record` (a node's record, checked when read), `steering` (which
//! nodes credentials name, where a full node sends an Allocate), `quota`
//! (fleet-wide quotas), `control` (what one node asks of all), `remote`
//! (the admin API's fleet-wide questions), `users` and `auth` (users and
//! REST secrets in the store), `stream` (usage records to Redis). This
//! file only declares them and what the fleet offers.

mod agent;
mod auth;
mod control;
mod own;
mod quota;
mod record;
mod remote;
mod scripts;
mod state;
mod steering;
mod store;
mod stream;
mod target;
mod users;

pub use self::agent::Agent;
pub(crate) use self::control::read_from_store;
pub use self::control::{MAX_LISTED, revocations_in_force};
pub use self::record::NodeRecord;
pub use self::remote::GATHER;
pub use self::state::{Asked, BEAT, FleetCounts, FleetState, RECORD_TTL, View};
pub use self::steering::best_nodes;
pub use self::stream::{MAX_WAITING, StreamCounts, UsageStream};
pub use self::users::FleetAuth;
