//! Handing a running node over to a new process of the relay (an upgrade
//! without dropping calls). The new process asks at the old one's handover
//! socket (`handover.socket`, a Unix socket of type SOCK_SEQPACKET); the
//! old one stops its workers taking packets, sends its sockets as
//! descriptors (SCM_RIGHTS) with a versioned snapshot of its allocations,
//! and exits once the new one says it serves, or goes on if it does not.
//! Packets that arrive meanwhile wait in the sockets' receive queues. On
//! `systemctl restart` the same goes through systemd's file descriptor
//! store instead.
//!
//! The parts: `exchange` (the conversation over the socket), `fdstore`
//! (the same through systemd's store), `taken` (the new process's side,
//! [`TakenOver`]), `pack` (frozen workers to a snapshot and descriptors,
//! and back), `snapshot` (its versioned JSON), `transfer` (bytes and
//! descriptors in chunks). This file only declares them.

#![warn(clippy::too_many_lines)]

pub(crate) mod exchange;
pub mod fdstore;
mod pack;
pub(crate) mod snapshot;
mod taken;
pub(crate) mod transfer;

pub use self::exchange::{accept, listen, serve};
pub use self::taken::TakenOver;
