//! State every worker of a node shares: allocation quotas and relay port
//! reservations. Touched only when allocations are created and deleted,
//! never per packet.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use ip2p_wire::ErrorCode;

use crate::{DropReason, ListenerId};

/// What the workers of one node share.
#[derive(Debug, Default)]
pub struct NodeState {
    /// Allocation limits.
    pub quotas: Quotas,
    pub(crate) reservations: Reservations,
    pub(crate) owners: Owners,
    /// The relayed addresses (bound and advertised) of live RFC 6062 TCP
    /// allocations: peers a Connect may reach on this host. Touched at
    /// allocation and Connect time only.
    pub(crate) tcp_relays: Mutex<std::collections::HashSet<SocketAddr>>,
    /// What the kernel delivers locally: never a peer.
    pub local: crate::LocalAddrs,
    /// Users whose credentials are refused for now.
    pub revocations: crate::Revocations,
    /// Where new allocations go instead (a fleet's choice).
    pub steering: crate::Steering,
}

impl NodeState {
    /// A node's shared state with these quotas.
    #[must_use]
    pub fn new(quotas: Quotas) -> Self {
        Self { quotas, ..Self::default() }
    }
}

/// Which worker owns each UDP relay port of each relay address, and what
/// any worker needs to deliver a short-circuited packet there itself: how
/// the local short-circuit finds the allocation behind another one's
/// relayed address. Written by the owner when it opens and closes a relay
/// and when the allocation's lifetime, permissions or channels change;
/// read without a lock (and without touching a shared count) for each
/// packet addressed to a relay address. Each address's ports are pages of
/// [`PAGE`], a page made when one of its ports is first used: a node with
/// a narrow port range holds (and at its end drops, each entry checking
/// for readers) a few hundred entries, not 64k an address.
pub(crate) struct Owners([OnceLock<Box<[OnceLock<Page>]>>; 2 * super::MAX_RELAY_IPS]);

/// The owners of [`PAGE`] consecutive ports.
type Page = Box<[ArcSwapOption<Owner>]>;

/// Ports per page of the owners table.
const PAGE: usize = 64;
/// Pages per relay address.
const PAGES: usize = (u16::MAX as usize + 1) / PAGE;

/// The owner of one relay port.
#[derive(Debug)]
pub(crate) struct Owner {
    /// The worker whose allocation it is.
    pub(crate) worker: u16,
    /// What the sender checks to deliver a packet to it itself; `None` when
    /// only the owner can (a stream client: its connection is the owner's).
    pub(crate) view: Option<View>,
}

/// A copy of one UDP allocation's state as the short-circuit reads it:
/// who gets a packet from one of the host's relayed addresses and how it is
/// framed. The same decisions as [`crate::Server::handle_inbox`] makes on the
/// owner's side.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) listener: ListenerId,
    pub(crate) client: SocketAddr,
    pub(crate) expires: Instant,
    /// Permissions for the host's own addresses (canonical IP, expiry).
    pub(crate) permissions: Box<[(IpAddr, Instant)]>,
    /// Channels to the host's own addresses (peer, number, expiry).
    pub(crate) channels: Box<[(SocketAddr, u16, Instant)]>,
    /// Where a sender counts what it delivers.
    pub(crate) crossed: Arc<crate::session::Crossed>,
}

impl View {
    /// How a packet from relayed address `from` reaches this client at
    /// `now`: on a channel (`Some(number)`) or in a Data indication
    /// (`None`), or why it is dropped.
    pub(crate) fn framing(&self, from: SocketAddr, now: Instant) -> Result<Option<u16>, DropReason> {
        if self.expires <= now {
            return Err(DropReason::NoAllocation);
        }
        // RFC 8656 §9: only the IP address is compared, not the port.
        let ip = crate::policy::canonical(from.ip());
        if !self.permissions.iter().any(|&(p, until)| p == ip && until > now) {
            return Err(DropReason::NoPermission);
        }
        Ok(self.channels.iter().find(|&&(peer, _, until)| peer == from && until > now).map(|&(_, number, _)| number))
    }
}

impl Default for Owners {
    fn default() -> Self {
        Self(std::array::from_fn(|_| OnceLock::new()))
    }
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Owners")
    }
}

impl Owners {
    fn entry(&self, relay: usize, port: u16) -> Option<&ArcSwapOption<Owner>> {
        let page = self.0.get(relay)?.get()?.get(usize::from(port) / PAGE)?;
        page.get()?.get(usize::from(port) % PAGE)
    }

    /// `owner` now owns `port` of relay address `relay` (its index in the
    /// configuration), or publishes its new view of it.
    pub(crate) fn set(&self, relay: usize, port: u16, owner: Owner) {
        let Some(pages) = self.0.get(relay) else { return };
        let pages = pages.get_or_init(|| (0..PAGES).map(|_| OnceLock::new()).collect());
        let Some(page) = pages.get(usize::from(port) / PAGE) else { return };
        let page = page.get_or_init(|| (0..PAGE).map(|_| ArcSwapOption::empty()).collect());
        if let Some(e) = page.get(usize::from(port) % PAGE) {
            e.store(Some(Arc::new(owner)));
        }
    }

    /// `worker` no longer owns it (if another took it since, it stays
    /// that one's).
    pub(crate) fn clear(&self, relay: usize, port: u16, worker: u16) {
        if let Some(e) = self.entry(relay, port) {
            e.rcu(|cur| cur.clone().filter(|o| o.worker != worker));
        }
    }

    /// `f` of the owner of `port` of relay address `relay`, if any.
    pub(crate) fn with<R>(&self, relay: usize, port: u16, f: impl FnOnce(&Owner) -> R) -> Option<R> {
        self.entry(relay, port)?.load().as_deref().map(f)
    }

    /// The worker that owns `port` of relay address `relay`, if any.
    pub(crate) fn get(&self, relay: usize, port: u16) -> Option<u16> {
        self.with(relay, port, |o| o.worker)
    }
}

/// Relay addresses reserved by an Allocate with EVEN-PORT's R bit, for a
/// later Allocate with the RESERVATION-TOKEN (RFC 8656 §7.2). That request
/// comes on another 5-tuple, so possibly to another worker: the table is
/// node-wide. Each reserved address is bound (held) until it is taken or
/// its reservation lapses, so nothing else on the host can take it, and
/// counts as an allocation of the reserving account until then.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    inner: Mutex<ReservationTable>,
}

#[derive(Debug, Default)]
struct ReservationTable {
    by_token: HashMap<[u8; 8], SocketAddr>,
    by_addr: HashMap<SocketAddr, Reservation>,
}

#[derive(Debug)]
struct Reservation {
    until: Instant,
    held: Held,
    /// Whose quota it counts against.
    account: Account,
}

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, ReservationTable> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `addr` is held by a live reservation.
    pub(crate) fn holds(&self, addr: SocketAddr, now: Instant) -> bool {
        self.lock().by_addr.get(&addr).is_some_and(|r| r.until > now)
    }
}

impl ReservationTable {
    fn remove(&mut self, token: &[u8; 8]) -> Option<Reservation> {
        let addr = self.by_token.remove(token)?;
        self.by_addr.remove(&addr)
    }
}

impl NodeState {
    /// Adds (or removes) a TCP allocation's relayed addresses.
    pub(crate) fn index_tcp(&self, addrs: [SocketAddr; 2], add: bool) {
        let mut live = self.tcp_relays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for a in addrs {
            if add {
                live.insert(a);
            } else {
                live.remove(&a);
            }
        }
    }

    /// Whether `addr` is a relayed address of a live TCP allocation.
    pub(crate) fn tcp_relay_live(&self, addr: SocketAddr) -> bool {
        self.tcp_relays.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&addr)
    }

    /// Holds `held` for `token` until `until`, counted against `account`,
    /// whose quota the caller already charged for it.
    pub(crate) fn reserve(&self, token: [u8; 8], held: Held, until: Instant, account: Account) {
        let mut t = self.reservations.lock();
        t.by_token.insert(token, held.addr);
        t.by_addr.insert(held.addr, Reservation { until, held, account });
    }

    /// The address reserved under `token` and its socket, if the
    /// reservation is live. It is used up either way, and its quota given
    /// back: the Allocate that takes it is charged as any other.
    pub(crate) fn take_reservation(&self, token: &[u8; 8], now: Instant) -> Option<Held> {
        let r = self.reservations.lock().remove(token)?;
        self.quotas.release(&r.account);
        (r.until > now).then_some(r.held)
    }

    /// EVEN-PORT reservations held now (each a bound socket).
    #[must_use]
    pub fn reservations(&self) -> usize {
        self.reservations.lock().by_addr.len()
    }

    /// Gives up the reservation under `token` if it is still there (its
    /// allocation went before anyone claimed it): its socket closes.
    pub(crate) fn cancel_reservation(&self, token: &[u8; 8]) {
        let r = self.reservations.lock().remove(token);
        if let Some(r) = r {
            self.quotas.release(&r.account);
        }
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

/// Whom an allocation (or reservation) counts against: the user (for a
/// TURN REST username, its user part, so that one user with many expiries
/// is still one user) and the client's address prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// The user the quota counts.
    pub user: Box<str>,
    /// The client's address, or its /64: see [`client_prefix`].
    pub prefix: IpAddr,
}

impl Account {
    /// The account of `user` connecting from `client`.
    #[must_use]
    pub fn new(user: &str, client: IpAddr) -> Self {
        Self { user: user.into(), prefix: client_prefix(client) }
    }
}

/// The part of a client's address that quotas and connection caps key on:
/// an IPv4 address whole, an IPv6 address's /64 (a subscriber gets a /64
/// or more, so counting single IPv6 addresses would count nothing).
#[must_use]
pub fn client_prefix(ip: IpAddr) -> IpAddr {
    match super::policy::canonical(ip) {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Allocation limits; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Allocations (and reservations) on the node: past it, 508.
    pub total: usize,
    /// Per user: past it, 486.
    pub per_user: usize,
    /// Per client address (IPv4) or /64 (IPv6): past it, 486.
    pub per_prefix: usize,
}

/// Counts allocations against the node's limits, which a reload may change
/// (allocations over a lowered limit stay; new ones wait for room).
#[derive(Debug, Default)]
pub struct Quotas {
    total: AtomicUsize,
    limits: Mutex<QuotaLimits>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    users: HashMap<Box<str>, usize>,
    prefixes: HashMap<IpAddr, usize>,
    /// The changes a fleet has not counted yet, when one counts with us.
    journal: Option<Journal>,
}

/// The changes to the counts a fleet's store must apply to match this
/// node's (see [`Quotas::keep_journal`]).
#[derive(Debug, Default)]
pub struct Journal {
    /// Each change: an account's count up or down.
    pub changes: Vec<(Account, i32)>,
    /// Changes were left out (the journal was full): the store needs the
    /// whole counts again ([`Quotas::counts_now`]).
    pub lost: bool,
}

/// Every user's count and every prefix's count (see
/// [`Quotas::counts_now`]).
pub type CountsNow = (Vec<(Box<str>, usize)>, Vec<(IpAddr, usize)>);

/// The most changes a journal holds before it says it lost some.
const MAX_JOURNAL: usize = 100_000;

impl Counts {
    fn note(&mut self, account: &Account, change: i32) {
        let Some(j) = &mut self.journal else { return };
        if j.changes.len() >= MAX_JOURNAL {
            j.lost = true;
        } else {
            j.changes.push((account.clone(), change));
        }
    }
}

/// Which limit refused an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverQuota {
    /// The node's: 508.
    Node,
    /// The user's: 486.
    User,
    /// The client prefix's: 486.
    Prefix,
}

impl OverQuota {
    /// The error code the client gets (RFC 8656 §7.2).
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::Node => ErrorCode::INSUFFICIENT_CAPACITY,
            Self::User | Self::Prefix => ErrorCode::ALLOCATION_QUOTA_REACHED,
        }
    }
}

impl Quotas {
    /// Quotas with these limits.
    #[must_use]
    pub fn new(limits: QuotaLimits) -> Self {
        let q = Self::default();
        q.set_limits(limits);
        q
    }

    /// Changes the limits.
    pub fn set_limits(&self, limits: QuotaLimits) {
        *self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = limits;
    }

    /// The limits in force.
    #[must_use]
    pub fn limits(&self) -> QuotaLimits {
        *self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Live allocations (and reservations) on the node.
    #[must_use]
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Allocations and reservations counted against `user` now.
    #[must_use]
    pub fn of_user(&self, user: &str) -> usize {
        self.counts().users.get(user).copied().unwrap_or(0)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one allocation for `account`, or says which limit refuses it.
    /// `counted`: a fleet counted it already (else the journal notes it).
    pub(crate) fn acquire(&self, account: &Account, counted: bool) -> Result<(), OverQuota> {
        let limits = *self.limits.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let limit = |max: usize| if max == 0 { usize::MAX } else { max };
        // Counted even without limits, so that one can be set live.
        let mut counts = self.counts();
        if self.total.load(Ordering::Relaxed) >= limit(limits.total) {
            return Err(OverQuota::Node);
        }
        if counts.users.get(&account.user).copied().unwrap_or(0) >= limit(limits.per_user) {
            return Err(OverQuota::User);
        }
        if counts.prefixes.get(&account.prefix).copied().unwrap_or(0) >= limit(limits.per_prefix) {
            return Err(OverQuota::Prefix);
        }
        self.add(&mut counts, account);
        if !counted {
            counts.note(account, 1);
        }
        Ok(())
    }

    /// Counts one allocation of `account` whatever the limits: one that
    /// exists already (taken over from the previous process; a fleet's
    /// store has it, and is given the whole counts when this node
    /// connects).
    pub(crate) fn count(&self, account: &Account) {
        self.add(&mut self.counts(), account);
    }

    fn add(&self, counts: &mut Counts, account: &Account) {
        *counts.users.entry(account.user.clone()).or_default() += 1;
        *counts.prefixes.entry(account.prefix).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back one allocation of `account`.
    pub(crate) fn release(&self, account: &Account) {
        self.take_back(account, true);
    }

    /// Undoes [`Self::acquire`] with the same `counted`.
    pub(crate) fn unacquire(&self, account: &Account, counted: bool) {
        self.take_back(account, !counted);
    }

    fn take_back(&self, account: &Account, note: bool) {
        let mut counts = self.counts();
        if note {
            counts.note(account, -1);
        }
        let Counts { users, prefixes, .. } = &mut *counts;
        if let Some(n) = users.get_mut(&account.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(&account.user);
            }
        }
        if let Some(n) = prefixes.get_mut(&account.prefix) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                prefixes.remove(&account.prefix);
            }
        }
        let _ = self.total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A fleet counted `n` allocations of `account` that this node did not
    /// make after all: the journal gives them back.
    pub(crate) fn unadmit(&self, account: &Account, n: u8) {
        self.counts().note(account, -i32::from(n));
    }

    /// From now on, note every change a fleet's store has not counted
    /// (a node in a fleet; see [`Self::take_journal`]).
    pub fn keep_journal(&self) {
        self.counts().journal.get_or_insert_with(Journal::default);
    }

    /// The changes noted since the last call (or [`Self::counts_now`]).
    #[must_use]
    pub fn take_journal(&self) -> Journal {
        self.counts().journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Every user's and prefix's count now, the journal emptied at the
    /// same moment: what a fleet's store is to hold for this node.
    #[must_use]
    pub fn counts_now(&self) -> CountsNow {
        let mut counts = self.counts();
        if let Some(j) = &mut counts.journal {
            *j = Journal::default();
        }
        let users = counts.users.iter().map(|(u, n)| (u.clone(), *n)).collect();
        let prefixes = counts.prefixes.iter().map(|(p, n)| (*p, *n)).collect();
        (users, prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(user: &str, ip: &str) -> Account {
        Account::new(user, ip.parse().unwrap())
    }

    #[test]
    fn limits_total_per_user_and_per_prefix() {
        let q = Quotas::new(QuotaLimits { total: 4, per_user: 2, per_prefix: 3 });
        let a = account("a", "192.0.2.1");
        assert_eq!(q.acquire(&a, false), Ok(()));
        assert_eq!(q.acquire(&a, false), Ok(()));
        assert_eq!(q.acquire(&a, false), Err(OverQuota::User));
        assert_eq!(q.acquire(&account("b", "192.0.2.1"), false), Ok(()));
        assert_eq!(q.acquire(&account("c", "192.0.2.1"), false), Err(OverQuota::Prefix), "3 from one address");
        assert_eq!(q.acquire(&account("c", "192.0.2.2"), false), Ok(()));
        assert_eq!(q.acquire(&account("d", "192.0.2.3"), false), Err(OverQuota::Node));
        assert_eq!(q.total(), 4);
        q.release(&a);
        assert_eq!(q.acquire(&account("d", "192.0.2.3"), false), Ok(()));
        // A reload's new limits count what is held already.
        q.set_limits(QuotaLimits { total: 0, per_user: 1, per_prefix: 0 });
        assert_eq!(q.acquire(&a, false), Err(OverQuota::User));
        q.set_limits(QuotaLimits::default());
        for _ in 0..1000 {
            assert_eq!(q.acquire(&a, false), Ok(()));
        }
        assert_eq!(q.of_user("a"), 1001);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let q = Quotas::new(QuotaLimits { total: 0, per_user: 0, per_prefix: 2 });
        assert_eq!(q.acquire(&account("a", "2001:db8:1:2::1"), false), Ok(()));
        assert_eq!(q.acquire(&account("b", "2001:db8:1:2:ffff::9"), false), Ok(()));
        assert_eq!(q.acquire(&account("c", "2001:db8:1:2:aaaa::1"), false), Err(OverQuota::Prefix));
        assert_eq!(q.acquire(&account("c", "2001:db8:1:3::1"), false), Ok(()), "another /64");
        assert_eq!(client_prefix("::ffff:192.0.2.9".parse().unwrap()), "192.0.2.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_journal_notes_what_a_fleet_has_not_counted() {
        let q = Quotas::new(QuotaLimits::default());
        let a = account("a", "192.0.2.1");
        assert_eq!(q.acquire(&a, false), Ok(()));
        assert!(q.take_journal().changes.is_empty(), "none kept outside a fleet");
        q.keep_journal();
        assert_eq!(q.acquire(&a, false), Ok(()));
        assert_eq!(q.acquire(&a, true), Ok(()), "counted by the fleet already");
        q.unacquire(&a, true);
        q.release(&a);
        q.unadmit(&a, 2);
        let changes: Vec<i32> = q.take_journal().changes.iter().map(|(_, n)| *n).collect();
        assert_eq!(changes, [1, -1, -2]);
        assert!(q.take_journal().changes.is_empty());
        assert_eq!(q.acquire(&a, false), Ok(()));
        let (users, prefixes) = q.counts_now();
        assert_eq!((users, prefixes.len()), (vec![("a".into(), 2)], 1));
        assert!(q.take_journal().changes.is_empty(), "emptied with the counts");
    }
}
