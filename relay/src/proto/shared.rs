//! State every worker of a node shares: allocation quotas and relay port
//! reservations. Touched only when allocations are created and deleted,
//! never per packet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Instant;

use ip2p_wire::ErrorCode;

/// What the workers of one node share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Allocation limits.
    pub quotas: Quotas,
    pub(crate) reservations: Reservations,
    pub(crate) owners: Owners,
}

impl Shared {
    /// Shared state with these quotas.
    #[must_use]
    pub fn new(quotas: Quotas) -> Self {
        Self { quotas, reservations: Reservations::default(), owners: Owners::default() }
    }
}

/// Which worker owns each UDP relay port of each relay address: how the
/// local short-circuit finds the worker behind another allocation's relayed
/// address. Written by the owner when it opens and closes a relay; read
/// without a lock for each packet addressed to a relay address. A table
/// (64k entries) is made when its address is first used.
pub(crate) struct Owners([std::sync::OnceLock<Box<[AtomicU16]>>; 2 * super::MAX_RELAY_IPS]);

impl Default for Owners {
    fn default() -> Self {
        Self(std::array::from_fn(|_| std::sync::OnceLock::new()))
    }
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Owners")
    }
}

impl Owners {
    /// `worker` now owns `port` of relay address `relay` (its index in the
    /// configuration).
    pub(crate) fn set(&self, relay: usize, port: u16, worker: u16) {
        let Some(table) = self.0.get(relay) else { return };
        let table = table.get_or_init(|| (0..=u16::MAX).map(|_| AtomicU16::new(0)).collect());
        if let Some(e) = table.get(usize::from(port)) {
            e.store(worker.saturating_add(1), Ordering::Release);
        }
    }

    /// `worker` no longer owns it (if another took it since, it stays
    /// that one's).
    pub(crate) fn clear(&self, relay: usize, port: u16, worker: u16) {
        if let Some(e) = self.0.get(relay).and_then(|t| t.get()).and_then(|t| t.get(usize::from(port))) {
            let _ = e.compare_exchange(worker.saturating_add(1), 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// The worker that owns `port` of relay address `relay`, if any.
    pub(crate) fn get(&self, relay: usize, port: u16) -> Option<u16> {
        self.0.get(relay)?.get()?.get(usize::from(port))?.load(Ordering::Acquire).checked_sub(1)
    }
}

/// Relay addresses reserved by an Allocate with EVEN-PORT's R bit, for a
/// later Allocate with the RESERVATION-TOKEN (RFC 8656 §7.2). That request
/// comes on another 5-tuple, so possibly to another worker: the table is
/// node-wide. Each reserved address is bound (held) until it is taken or
/// its reservation lapses, so nothing else on the host can take it.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    inner: Mutex<ReservationTable>,
}

#[derive(Debug, Default)]
struct ReservationTable {
    by_token: HashMap<[u8; 8], SocketAddr>,
    by_addr: HashMap<SocketAddr, ([u8; 8], Instant, Held)>,
}

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReservationTable> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn reserve(&self, token: [u8; 8], held: Held, until: Instant, now: Instant) {
        let mut t = self.lock();
        t.prune(now);
        t.by_token.insert(token, held.addr);
        t.by_addr.insert(held.addr, (token, until, held));
    }

    /// The address reserved under `token` and its socket, if the
    /// reservation is live; it is used up either way.
    pub(crate) fn take(&self, token: &[u8; 8], now: Instant) -> Option<Held> {
        let mut t = self.lock();
        let addr = t.by_token.remove(token)?;
        let (_, until, held) = t.by_addr.remove(&addr)?;
        (until > now).then_some(held)
    }

    /// Whether `addr` is held by a live reservation.
    pub(crate) fn holds(&self, addr: SocketAddr, now: Instant) -> bool {
        self.lock().by_addr.get(&addr).is_some_and(|(_, until, _)| *until > now)
    }

    /// Releases the reservations that lapsed by `now`, closing their sockets.
    pub(crate) fn prune(&self, now: Instant) {
        self.lock().prune(now);
    }

    /// Reservations held, lapsed or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().by_addr.len()
    }
}

impl ReservationTable {
    fn prune(&mut self, now: Instant) {
        let Self { by_token, by_addr } = self;
        by_addr.retain(|_, (token, until, _)| {
            let live = *until > now;
            if !live {
                by_token.remove(token);
            }
            live
        });
    }
}

/// A relay address bound ahead of its allocation: port N+1 of an EVEN-PORT
/// reservation, from [`super::Sockets::hold`]. Dropping it closes the
/// socket.
#[derive(Debug)]
pub struct Held {
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// The bound socket (`None` from sockets that are not real: tests).
    pub socket: Option<std::net::UdpSocket>,
}

/// Counts allocations against the node's limits, which a reload may change
/// (allocations over a lowered limit stay; new ones wait for room).
#[derive(Debug, Default)]
pub struct Quotas {
    total: AtomicUsize,
    max_total: AtomicUsize,
    per_user: Mutex<HashMap<Box<str>, usize>>,
    max_per_user: AtomicUsize,
}

impl Quotas {
    /// Limits of `max_total` allocations on the node and `max_per_user` per
    /// username; 0 means no limit.
    #[must_use]
    pub fn new(max_total: usize, max_per_user: usize) -> Self {
        let q = Self::default();
        q.set_limits(max_total, max_per_user);
        q
    }

    /// Changes the limits (0 means no limit).
    pub fn set_limits(&self, max_total: usize, max_per_user: usize) {
        self.max_total.store(max_total, Ordering::Relaxed);
        self.max_per_user.store(max_per_user, Ordering::Relaxed);
    }

    /// Live allocations on the node.
    #[must_use]
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, usize>> {
        self.per_user.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one allocation for `user`: 508 when the node is full, 486 when
    /// the user is (RFC 8656 §7.2).
    pub(crate) fn acquire(&self, user: &str) -> Result<(), ErrorCode> {
        let limit = |max: usize| if max == 0 { usize::MAX } else { max };
        let max_total = limit(self.max_total.load(Ordering::Relaxed));
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_total).then_some(n + 1))
            .map_err(|_| ErrorCode::INSUFFICIENT_CAPACITY)?;
        // Counted per user even without a limit, so one can be set live.
        let mut users = self.users();
        let n = users.entry(user.into()).or_default();
        if *n >= limit(self.max_per_user.load(Ordering::Relaxed)) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(ErrorCode::ALLOCATION_QUOTA_REACHED);
        }
        *n += 1;
        Ok(())
    }

    /// Gives back one allocation of `user`.
    pub(crate) fn release(&self, user: &str) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut users = self.users();
        if let Some(n) = users.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                users.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_user() {
        let q = Quotas::new(3, 2);
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Ok(()));
        assert_eq!(q.acquire("a"), Err(ErrorCode::ALLOCATION_QUOTA_REACHED));
        assert_eq!(q.acquire("b"), Ok(()));
        assert_eq!(q.acquire("c"), Err(ErrorCode::INSUFFICIENT_CAPACITY));
        assert_eq!(q.total(), 3);
        q.release("a");
        assert_eq!(q.acquire("c"), Ok(()));
        let unlimited = Quotas::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(unlimited.acquire("x"), Ok(()));
        }
        // A per-user limit set live counts what the user already holds.
        unlimited.set_limits(0, 1000);
        assert_eq!(unlimited.acquire("x"), Err(ErrorCode::ALLOCATION_QUOTA_REACHED));
        unlimited.release("x");
        assert_eq!(unlimited.acquire("x"), Ok(()));
    }
}
