//! ip2p-turn: the TURN server as a sans-I/O state machine (RFC 8489,
//! RFC 8656, RFC 6062).
//!
//! No I/O, no clock, no threads of its own. The datapath hands in what arrived
//! (`now`, which listener or relay socket, from whom, the buffer and where
//! the packet lies in it) and makes one call per packet. A client's packet
//! gets back one [`Verdict`]: send a range of its buffer (relayed data,
//! framed in place), send the reply written into the scratch buffer, hand
//! the payload to another worker, answer later, or drop (counted). A peer's
//! datagram is forwarded to its client, framed in place, or dropped. Relay
//! sockets are opened and closed through the [`Sockets`] trait (an EVEN-PORT
//! reservation keeps the socket it was lent, [`Held`], until claimed).
//! Expiry runs from [`Server::poll_timeout`] and [`Server::handle_timeout`].
//! The workers of a node share its quotas, reservations and the
//! short-circuit's view ([`NodeState`]) through atomics, locks taken when an
//! allocation changes (never per relayed packet) and `ArcSwap`.
//!
//! The forwarding paths (ChannelData and Send from a client, a datagram
//! from a peer) cost one hash lookup (client) or one slab index (peer),
//! a scan of a few permissions and channels, and a header written in place.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admission;
mod allocation;
pub mod auth;
mod config;
mod events;
mod local;
pub mod loglimit;
mod moved;
mod packet;
pub mod policy;
mod ratelimit;
pub mod revocations;
mod server;
mod session;
mod shared;
mod sockets;
pub(crate) mod stats;
mod steering;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod timer;

pub use self::admission::{ADMISSION_WAIT, Admission, AdmissionRequest, MAX_PARKED};
pub use self::auth::{Credentials, MAX_REALM, UserSecret};
pub use self::config::{ChannelNumbers, Config, Fallback, MAX_RELAY_IPS, RelayIp};
pub use self::events::{ChannelPath, Event};
pub use self::local::{LocalAddrs, LocalRanges};
pub use self::moved::{Adoptable, Moved, MovedChannel, MovedPermission, MovedRelay, MovedSession};
pub use self::packet::{
    DropReason, ListenerId, PEER_HEADROOM, PEER_TAILROOM, REPLY_BUFFER, RelayToken, ToOwner, Transmit, Verdict, Via,
};
pub use self::policy::{Judgement, PeerPolicy};
pub use self::revocations::{MAX_REVOCATIONS, Revocations};
pub use self::server::Server;
pub use self::server::export::{AdoptError, Export};
pub use self::session::{End, Session, SessionEvent, SessionId, SessionQuery, Usage};
pub use self::shared::{Account, CountsNow, Held, Journal, NodeState, QuotaLimits, Quotas, client_prefix};
pub use self::sockets::Sockets;
pub use self::stats::{
    AllocationRefusals, AuthFailure, AuthFailures, Drops, Gauges, METHODS, RESULTS, Responses, Stats,
};
pub use self::steering::{Steer, Steering};
