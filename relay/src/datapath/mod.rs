//! Moving bytes between sockets and the TURN core.
//!
//! Two backends run the same worker loop contract: epoll (mio, with
//! recvmmsg/sendmmsg batches) and, where the kernel allows, io_uring. Both
//! hand every datagram to [`crate::proto::Server`] and send what its
//! [`crate::proto::Verdict`] names, straight from the receive buffer.

pub(crate) mod batch;
pub(crate) mod epoll;
pub(crate) mod socket;

use std::net::UdpSocket;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::EventFd;

use crate::proto::{Server, Stats};

/// A command from the node to a worker.
#[derive(Debug)]
pub enum Command {
    /// Finish the current batch and return.
    Shutdown,
    /// Send a snapshot of the counters.
    Stats(Sender<WorkerStats>),
}

/// One worker's counters, as the node collects them.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Which worker.
    pub worker: usize,
    /// The core's counters.
    pub proto: Stats,
    /// Live allocations.
    pub allocations: usize,
    /// Sends that failed (full socket buffer, unreachable peer...): counted,
    /// never fatal.
    pub send_errors: u64,
    /// Datagrams too large for a receive buffer.
    pub truncated: u64,
}

/// Everything a worker owns.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) id: usize,
    pub(crate) server: Server,
    /// This worker's SO_REUSEPORT socket for each listen address, indexed
    /// by [`crate::proto::ListenerId`].
    pub(crate) listeners: Vec<UdpSocket>,
    pub(crate) commands: Receiver<Command>,
    /// Written by the node after queueing a command.
    pub(crate) wake: Arc<EventFd>,
}

impl Worker {
    pub(crate) fn stats(&self, send_errors: u64, truncated: u64) -> WorkerStats {
        WorkerStats {
            worker: self.id,
            proto: self.server.stats().clone(),
            allocations: self.server.allocations(),
            send_errors,
            truncated,
        }
    }
}

/// Reads the clock: the one place the datapaths take `now` from.
#[allow(clippy::disallowed_methods)] // the datapath is where time comes from
pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}
