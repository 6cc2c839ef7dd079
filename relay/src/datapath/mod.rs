//! Moving bytes between sockets and the TURN core.
//!
//! Two backends run the same worker loop contract: epoll (mio, with
//! recvmmsg/sendmmsg batches) and io_uring (multishot receives into a
//! provided-buffer ring, sends from the receive buffer). Both hand every
//! datagram to the core's [`ip2p_turn::Server`] and send what its
//! [`ip2p_turn::Verdict`] names, straight from the receive buffer.
//!
//! The parts: `worker` (a worker and its setup, what both datapaths do
//! around the core), `epoll` and `uring` (the two loops), `clients`,
//! `stream` and `conn_limits` (TCP and TLS connections, written once),
//! `relay_sockets` (the core's sockets, written once), `tcp_relay` (RFC
//! 6062 on threads of their own), `inbox` (packets between workers),
//! `moving` (what a handover moves), `proxy` (the PROXY protocol's
//! header a load balancer puts in front of a connection), `stats`,
//! `polling`, `gso`, `batch` and `socket` (socket options and binding). This file only declares
//! them, with the clock and the back-off they all use.

pub(crate) mod batch;
pub(crate) mod clients;
pub(crate) mod conn_limits;
pub(crate) mod epoll;
pub mod gso;
pub(crate) mod inbox;
pub(crate) mod moving;
pub(crate) mod opening;
pub(crate) mod polling;
pub(crate) mod proxy;
pub(crate) mod records;
pub(crate) mod relay_sockets;
pub(crate) mod socket;
pub mod stats;
pub(crate) mod stream;
pub(crate) mod tcp_relay;
pub(crate) mod uring;
pub(crate) mod worker;

/// How long to wait before re-arming an operation (an accept, a multishot
/// receive) that failed `failures` times in a row: 10 ms, doubling, at most
/// a second. A failure that repeats at once never turns into a busy loop.
pub(crate) fn backoff(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(10u64.saturating_mul(1 << failures.min(7))).min(std::time::Duration::from_secs(1))
}

/// Reads the clock: the one place the datapaths take `now` from.
pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}
