//! ip2p-relay: a STUN/TURN relay node around the TURN core of `ip2p-turn`.
//!
//! The data plane, per packet and shaped for speed:
//! - [`datapath`]: the workers and their two datapaths (io_uring, epoll),
//!   TCP and TLS connections, RFC 6062 relays, packets between workers.
//! - [`fastpath`]: the XDP fast path, fed from the core's events.
//!
//! The control plane, beside it:
//! - [`config`]: the TOML config and the flags, resolved into [`config::Settings`].
//! - [`lifecycle`]: the process: start or take over, serve signals, stop.
//! - [`node`]: starting the workers, and the handle to a running node.
//! - [`handover`]: handing the node to a new process (upgrades).
//! - [`admin`] and [`metrics`]: the admin HTTP listener and its Prometheus metrics.
//! - [`tls`]: TURN over TLS: certificates and the rustls configuration.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod ctl;
pub mod datapath;
pub mod fastpath;
pub mod fleet;
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
pub mod lifecycle;
pub mod metrics;
pub mod node;
pub mod tls;
pub mod usage;

/// This build's version: the package's, or `IP2P_VERSION` at build time
/// (a distribution's own, or the tests' second build for a handover
/// between versions).
pub const VERSION: &str = match option_env!("IP2P_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// Seconds since the Unix epoch: the one reading of the wall clock (REST
/// credentials' expiry). Each worker's core reads it once at start and
/// derives it from its monotonic clock after.
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
