//! ip2p-relay: a STUN/TURN relay node.
//!
//! - [`proto`]: the TURN server as a sans-I/O state machine (the crate
//!   `ip2p-turn`, re-exported).
//! - [`config`]: the TOML config, command-line flags and their validation.
//! - [`node`]: worker threads, their sockets and datapaths.
//! - [`tls`]: TURN over TLS: certificates and the rustls configuration.
//! - [`admin`] and [`metrics`]: the admin HTTP listener and its Prometheus metrics.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod datapath;
pub mod fastpath;
pub mod handover;
pub mod metrics;
pub mod node;
pub mod tls;

pub use ip2p_turn as proto;

/// This build's version: the package's, or `IP2P_VERSION` at build time
/// (a distribution's own, or the tests' second build for a handover
/// between versions).
pub const VERSION: &str = match option_env!("IP2P_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};
