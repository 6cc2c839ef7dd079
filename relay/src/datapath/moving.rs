//! What moves between processes in a handover, as the workers see it:
//! what a worker gives up when it freezes ([`Frozen`]), and what a new
//! worker takes over at start ([`Adoption`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use ip2p_turn::{Adoptable, Export, RelayToken};

/// What a worker gives up in a handover: its allocations (as the core
/// exports them) and duplicates of its sockets' descriptors. The worker
/// itself takes no more packets until told to resume or stop.
#[derive(Debug)]
pub(crate) struct Frozen {
    pub(crate) worker: usize,
    pub(crate) export: Export,
    /// Its UDP listeners, by listener index.
    pub(crate) udp: Vec<OwnedFd>,
    /// Its TCP and TLS listeners, by stream listener index.
    pub(crate) streams: Vec<OwnedFd>,
    /// The relay sockets of the allocations in `export`.
    pub(crate) relays: HashMap<RelayToken, OwnedFd>,
    /// Its plain TCP client connections: those with an allocation in
    /// `export`, and those with none yet.
    pub(crate) conns: Vec<MovedConn>,
}

/// A plain TCP client connection as it moves to the next process (a
/// handover): a duplicate of its descriptor and its stream's state.
#[derive(Debug)]
pub(crate) struct MovedConn {
    pub(crate) fd: OwnedFd,
    pub(crate) state: ConnState,
}

/// What moves of a connection besides its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnState {
    /// The index of its stream listener.
    pub(crate) listener: u16,
    pub(crate) peer: SocketAddr,
    /// The start of a frame split across reads.
    pub(crate) partial: Vec<u8>,
    /// Bytes not yet written to it.
    pub(crate) unsent: Vec<u8>,
}

/// What a worker of a new process takes over at start: the allocations
/// and connections a previous process handed over, and how many workers
/// have taken theirs over (none takes a packet before all have: a packet
/// for another worker's allocation not yet taken over would find no such
/// relayed address). Empty on a fresh start.
#[derive(Debug, Default)]
pub(crate) struct Adoption {
    pub(crate) allocations: Vec<Adoptable>,
    pub(crate) conns: Vec<MovedConn>,
    /// Shared by the node's workers; `None` on a fresh start.
    pub(crate) arrived: Option<Arc<AtomicUsize>>,
}
