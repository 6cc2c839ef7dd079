//! ip2p-relay: a STUN/TURN relay node.
//!
//! - [`proto`]: the TURN server as a sans-I/O state machine.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod proto;
