//! Packets between workers: the local short-circuit across cores.
//!
//! When a client's packet is addressed to a relayed address another worker
//! owns (or this worker's own, for a stream client's frame, which has no
//! room around it to be framed where it lies), the core answers
//! `Verdict::ToOwner`: its payload is copied once into a pooled buffer and
//! pushed onto that worker's inbox (a bounded crossbeam queue). The receiver frames it
//! in place and sends it to its client from that buffer, then returns the
//! buffer to the pool, so the steady state allocates nothing. The sender
//! writes the receiver's eventfd only when the receiver is parked (about to
//! sleep or sleeping), at most once per sleep.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use crossbeam_queue::ArrayQueue;
use nix::sys::eventfd::EventFd;

use ip2p_turn::{PEER_HEADROOM, PEER_TAILROOM};

/// One pooled buffer: headroom, the payload, tailroom. Larger payloads
/// take the way through the kernel.
const BUFFER: usize = 2048;
/// The largest payload passed between workers.
const MAX_PAYLOAD: usize = BUFFER - PEER_HEADROOM - PEER_TAILROOM;
/// Packets waiting per worker; when full, the sender uses the kernel.
const INBOX: usize = 4096;
/// Idle buffers kept for reuse, node-wide.
const POOL: usize = 2 * INBOX;

/// A payload on its way from one worker to another.
#[derive(Debug)]
pub(crate) struct Packet {
    /// The receiver's relayed address it is for.
    pub(crate) to: SocketAddr,
    /// The sender's relayed address it comes from.
    pub(crate) from: SocketAddr,
    /// The payload at `data`, with [`PEER_HEADROOM`] before it.
    pub(crate) buf: Box<[u8]>,
    pub(crate) data: Range<usize>,
}

struct Inbox {
    queue: ArrayQueue<Packet>,
    /// The worker is about to sleep, or sleeps: a sender must wake it.
    parked: AtomicBool,
    wake: Arc<EventFd>,
}

/// Every worker's inbox and the buffer pool.
pub(crate) struct Inboxes {
    inboxes: Box<[Inbox]>,
    pool: ArrayQueue<Box<[u8]>>,
}

impl std::fmt::Debug for Inboxes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inboxes").field("workers", &self.inboxes.len()).finish_non_exhaustive()
    }
}

impl Inboxes {
    /// Inboxes for workers woken by these eventfds, in worker order.
    pub(crate) fn new(wakes: &[Arc<EventFd>]) -> Self {
        let inboxes = wakes
            .iter()
            .map(|wake| Inbox { queue: ArrayQueue::new(INBOX), parked: AtomicBool::new(false), wake: wake.clone() })
            .collect();
        Self { inboxes, pool: ArrayQueue::new(POOL) }
    }

    /// Copies `payload` into a buffer for `worker`'s relayed address `to`,
    /// from `from`, waking that worker if it is parked. `false` when it
    /// does not fit a buffer or the inbox is full: send it the usual way.
    pub(crate) fn send(&self, worker: usize, to: SocketAddr, from: SocketAddr, payload: &[u8]) -> bool {
        let Some(inbox) = self.inboxes.get(worker) else { return false };
        if payload.len() > MAX_PAYLOAD || inbox.queue.is_full() {
            return false;
        }
        let mut buf = self.pool.pop().unwrap_or_else(|| vec![0; BUFFER].into_boxed_slice());
        let data = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        let Some(dst) = buf.get_mut(data.clone()) else { return false };
        dst.copy_from_slice(payload);
        if let Err(packet) = inbox.queue.push(Packet { to, from, buf, data }) {
            self.recycle(packet.buf);
            return false;
        }
        // Pairs with the fence in `park`: either the receiver sees the
        // packet before it sleeps, or this sees it parked.
        fence(Ordering::SeqCst);
        if inbox.parked.load(Ordering::Relaxed) && inbox.parked.swap(false, Ordering::AcqRel) {
            let _ = inbox.wake.write(1);
        }
        true
    }

    /// The next packet for `worker`.
    /// How many workers the node has.
    pub(crate) fn workers(&self) -> usize {
        self.inboxes.len()
    }

    pub(crate) fn recv(&self, worker: usize) -> Option<Packet> {
        self.inboxes.get(worker)?.queue.pop()
    }

    /// Gives a packet's buffer back for reuse.
    pub(crate) fn recycle(&self, buf: Box<[u8]>) {
        let _ = self.pool.push(buf);
    }

    /// `worker` is about to sleep: `true` if it may (its inbox is empty),
    /// `false` if packets wait (it is not parked then).
    pub(crate) fn park(&self, worker: usize) -> bool {
        let Some(inbox) = self.inboxes.get(worker) else { return true };
        inbox.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if inbox.queue.is_empty() {
            return true;
        }
        inbox.parked.store(false, Ordering::Relaxed);
        false
    }

    /// `worker` is awake.
    pub(crate) fn unpark(&self, worker: usize) {
        if let Some(inbox) = self.inboxes.get(worker) {
            inbox.parked.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::eventfd::{EfdFlags, EventFd};

    use super::*;

    fn inboxes(n: usize) -> (Inboxes, Vec<Arc<EventFd>>) {
        let wakes: Vec<_> =
            (0..n).map(|_| Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).expect("eventfd"))).collect();
        (Inboxes::new(&wakes), wakes)
    }

    #[test]
    fn a_parked_worker_is_woken_once_and_an_awake_one_not_at_all() {
        let (h, wakes) = inboxes(2);
        let (a, b) = ("127.0.0.1:50000".parse().expect("addr"), "127.0.0.1:50002".parse().expect("addr"));
        assert!(h.send(1, a, b, b"awake"));
        assert!(wakes[1].read().is_err(), "no wake-up for a worker that is not parked");
        assert!(!h.park(1), "a worker with packets waiting must not sleep");
        let p = h.recv(1).expect("the packet");
        assert_eq!((p.to, p.from, &p.buf[p.data.clone()]), (a, b, &b"awake"[..]));
        assert_eq!(p.data.start, PEER_HEADROOM);
        h.recycle(p.buf);
        assert!(h.park(1));
        assert!(h.send(1, a, b, b"one") && h.send(1, a, b, b"two"));
        assert_eq!(wakes[1].read().expect("woken"), 1, "one write for two packets");
        assert!(h.recv(0).is_none(), "the other inbox is untouched");
    }

    #[test]
    fn what_does_not_fit_is_refused_for_the_kernel_path() {
        let (h, _wakes) = inboxes(1);
        let a: SocketAddr = "127.0.0.1:50000".parse().expect("addr");
        assert!(!h.send(0, a, a, &[0; MAX_PAYLOAD + 1]));
        assert!(h.send(0, a, a, &[7; MAX_PAYLOAD]));
        assert!(!h.send(1, a, a, b"no such worker"));
        for _ in 1..INBOX {
            assert!(h.send(0, a, a, b"x"));
        }
        assert!(!h.send(0, a, a, b"full"), "a full inbox refuses");
        assert_eq!(h.recv(0).map(|p| p.data.len()), Some(MAX_PAYLOAD));
    }
}
