//! The node: worker threads (one per core by default), their sockets, and
//! a control handle for stats, drain, reload and handover.
//!
//! The parts: `start` (the start-up sequence: bind, build, spawn, await),
//! `running` (a running [`Node`] and its reload), `handle` (what other
//! threads may ask of it, [`NodeHandle`]), `resources` (descriptors, CPUs,
//! port shares), `local` (the host's own addresses from the kernel, kept
//! current). This file only declares them.

#![warn(clippy::too_many_lines)]

mod handle;
mod live;
mod local;
mod resources;
mod running;
mod start;

pub(crate) use self::handle::Counters;
pub use self::handle::NodeHandle;
pub use self::running::Node;
pub(crate) use self::start::{Inherited, InheritedWorker, start_with};
pub use self::start::{start, start_revoking};
