//! One allocation (RFC 8656 §6): its relayed addresses, permissions and
//! channels, each with its own expiry.
//!
//! Permissions and channels live in small vectors: an allocation has a
//! handful, so a scan beats a hash. Expired entries are ignored by every
//! lookup and pruned when the list is next changed, so no timer is needed
//! per permission or channel.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_wire::TransactionId;
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{ErrorCode, IntegrityKind};

use super::policy::{Judgement, canonical};
use super::shared::View;
use crate::moved::{MovedChannel, MovedPermission};
use crate::packet::ListenerId;
use crate::session::{Crossed, SessionId, Usage};
use crate::shared::Account;

/// RFC 8656 §9: "The Permission Lifetime MUST be 300 seconds".
pub(crate) const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: a channel binding lasts 10 minutes unless refreshed.
pub(crate) const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Most permissions one allocation may hold (past it: 508).
pub(crate) const MAX_PERMISSIONS: usize = 256;
/// Most channels one allocation may hold (past it: 508).
pub(crate) const MAX_CHANNELS: usize = 256;

/// One relayed transport address of an allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relay {
    /// The address the relay socket is bound to.
    pub(crate) bound: SocketAddr,
    /// The address advertised to the client (the external IP behind 1:1 NAT).
    pub(crate) advertised: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    ip: IpAddr,
    expires: Instant,
    /// The IP is one of the host's own: packets go only to a live relayed
    /// address there (see [`super::policy::Judgement::Host`]).
    host: bool,
}

/// A Connect request answered once its connection is up (or failed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingConnect {
    pub(crate) peer: SocketAddr,
    pub(crate) tid: TransactionId,
    pub(crate) fingerprint: bool,
}

/// A token bucket over bytes: `rate` bytes a second, and a burst of one
/// second's worth (full at the first packet). Refilled from the time of
/// each packet: no timer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    tokens: u64,
    at: Option<Instant>,
}

impl Bucket {
    /// Takes `bytes` if the bucket holds them at `rate` bytes a second.
    pub(crate) fn take(&mut self, bytes: usize, rate: u64, now: Instant) -> bool {
        let refill = match self.at {
            None => u64::MAX,
            Some(at) => {
                let elapsed = now.saturating_duration_since(at).as_nanos();
                u64::try_from(elapsed.saturating_mul(u128::from(rate)) / 1_000_000_000).unwrap_or(u64::MAX)
            }
        };
        if refill > 0 || self.tokens > rate {
            // At least a byte's worth of time passed (or the rate was
            // lowered by a reload): bank it, up to a second's worth.
            self.tokens = self.tokens.saturating_add(refill).min(rate);
            self.at = Some(now);
        }
        let bytes = bytes as u64;
        let ok = self.tokens >= bytes;
        if ok {
            self.tokens -= bytes;
        }
        ok
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    pub(crate) number: u16,
    pub(crate) peer: SocketAddr,
    expires: Instant,
    /// The deadline its path was last published with (events), if it was.
    published: Option<Instant>,
}

/// Why a channel cannot be bound (RFC 8656 §12.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindError {
    /// The number or the peer is bound to something else: 400.
    Conflict,
    /// Too many channels: 508.
    Full,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) listener: ListenerId,
    pub(crate) client: SocketAddr,
    /// Relayed addresses by family: `[IPv4, IPv6]`.
    pub(crate) relays: [Option<Relay>; 2],
    pub(crate) username: Box<str>,
    /// Whom it counts against.
    pub(crate) account: Account,
    pub(crate) key: LongTermKey,
    pub(crate) integrity: IntegrityKind,
    /// The Allocate transaction that created it: a retransmission of that
    /// request gets the success response again, not a 437.
    pub(crate) txid: TransactionId,
    pub(crate) dont_fragment: bool,
    pub(crate) expires: Instant,
    /// Why the IPv6 half of a requested dual allocation is missing.
    pub(crate) partial: Option<ErrorCode>,
    /// The token of the port reserved next to this one (EVEN-PORT R bit),
    /// and when the reservation lapses.
    pub(crate) reservation: Option<([u8; 8], Instant)>,
    /// A TCP allocation (RFC 6062): its relays are TCP listeners.
    pub(crate) tcp: bool,
    /// Connect requests waiting for their connection (RFC 6062 §5.2).
    pub(crate) connects: Vec<PendingConnect>,
    /// Bandwidth left towards peers and towards the client, when the node
    /// limits it (`allocation.bandwidth`).
    pub(crate) to_peer: Bucket,
    pub(crate) to_client: Bucket,
    /// Its session: id, start (unix seconds), and what it relayed.
    pub(crate) session: SessionId,
    pub(crate) started: u64,
    pub(crate) usage: Usage,
    /// What other workers delivered to its client themselves.
    pub(crate) crossed: Arc<Crossed>,
    /// Why it ends at its expiry, set when something ends it early.
    pub(crate) ended: Option<crate::session::End>,
    /// Its TURN REST credential's expiry (unix seconds), with
    /// `strict_expiry`; and whether that is what its expiry is.
    pub(crate) credential_expiry: Option<u64>,
    pub(crate) ends_with_credential: bool,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
}

/// Which of an allocation's paths a change concerns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Paths<'a> {
    /// Every one (a new allocation, or its paths withdrawn and published anew).
    All,
    /// Those to these peer IPs (CreatePermission, ChannelBind: their
    /// permission's deadline moved).
    To(&'a [IpAddr]),
}

/// Index into `relays` for an address family.
pub(crate) const fn family_index(ip: &IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(_) => 1,
    }
}

impl Allocation {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        listener: ListenerId,
        client: SocketAddr,
        relays: [Option<Relay>; 2],
        username: Box<str>,
        account: Account,
        key: LongTermKey,
        integrity: IntegrityKind,
        txid: TransactionId,
        dont_fragment: bool,
        expires: Instant,
        session: (SessionId, u64),
    ) -> Self {
        Self {
            listener,
            client,
            relays,
            username,
            account,
            key,
            integrity,
            txid,
            dont_fragment,
            expires,
            partial: None,
            reservation: None,
            tcp: false,
            connects: Vec::new(),
            to_peer: Bucket::default(),
            to_client: Bucket::default(),
            session: session.0,
            started: session.1,
            usage: Usage::default(),
            crossed: Arc::default(),
            ended: None,
            credential_expiry: None,
            ends_with_credential: false,
            permissions: Vec::new(),
            channels: Vec::new(),
        }
    }

    /// Its session as it moves to the next process.
    pub(crate) fn moving_session(&self) -> crate::MovedSession {
        let u = self.usage();
        crate::MovedSession {
            id: self.session.0,
            started: self.started,
            packets_to_peers: u.packets_to_peers,
            bytes_to_peers: u.bytes_to_peers,
            packets_from_peers: u.packets_from_peers,
            bytes_from_peers: u.bytes_from_peers,
            credential_expiry: self.credential_expiry,
        }
    }

    /// What it relayed, its own count and the other workers'.
    pub(crate) fn usage(&self) -> Usage {
        self.usage.plus(self.crossed.usage())
    }

    /// The relay that can reach `peer`: the one of the same family. An
    /// IPv4-mapped peer is reached over IPv4.
    pub(crate) fn relay_for(&self, peer: IpAddr) -> Option<usize> {
        let i = family_index(&canonical(peer));
        self.relays.get(i)?.map(|_| i)
    }

    /// Whether a live permission covers `ip` (ports do not count).
    pub(crate) fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permitted(ip, now).is_some()
    }

    /// The live permission for `ip`, if any: `Some(true)` when `ip` is one
    /// of the host's own addresses.
    pub(crate) fn permitted(&self, ip: IpAddr, now: Instant) -> Option<bool> {
        let ip = canonical(ip);
        self.permissions.iter().find(|p| p.ip == ip && p.expires > now).map(|p| p.host)
    }

    /// Installs or refreshes a permission (`host`: `ip` is one of the
    /// host's addresses); `false` when the allocation already holds
    /// [`MAX_PERMISSIONS`] live ones.
    pub(crate) fn permit(&mut self, ip: IpAddr, host: bool, now: Instant) -> bool {
        let ip = canonical(ip);
        let expires = now + PERMISSION_LIFETIME;
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            return true;
        }
        self.permissions.retain(|p| p.expires > now);
        if self.permissions.len() >= MAX_PERMISSIONS {
            return false;
        }
        self.permissions.push(Permission { ip, expires, host });
        true
    }

    /// Whether `count` more permissions would fit.
    pub(crate) fn has_room_for_permissions(&self, ips: impl Iterator<Item = IpAddr>, now: Instant) -> bool {
        let live = self.permissions.iter().filter(|p| p.expires > now).count();
        let new = ips.filter(|ip| !self.permits(*ip, now)).count();
        live + new <= MAX_PERMISSIONS
    }

    /// The live channel with this number.
    pub(crate) fn channel(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels.iter().find(|c| c.number == number && c.expires > now)
    }

    /// The live channel bound to this peer.
    pub(crate) fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels.iter().find(|c| c.peer == peer && c.expires > now)
    }

    /// Live permissions and channels.
    pub(crate) fn live(&self, now: Instant) -> (usize, usize) {
        let permissions = self.permissions.iter().filter(|p| p.expires > now).count();
        (permissions, self.channels.iter().filter(|c| c.expires > now).count())
    }

    /// The paths of its live channels whose peer has a live permission
    /// that `which` names and whose deadline (the earlier of the channel's
    /// and the permission's expiry) is new, or later by more than `slack`
    /// than the one last published: the channel, that deadline and whether
    /// the peer is one of the host's own addresses. Each is marked
    /// published with it. A replayed refresh thus publishes nothing, and
    /// one request costs a scan of the channels it names.
    pub(crate) fn paths_to_publish(
        &mut self,
        now: Instant,
        which: Paths<'_>,
        slack: Duration,
    ) -> Vec<(Channel, Instant, bool)> {
        let permissions = &self.permissions;
        let mut out = Vec::new();
        for c in self.channels.iter_mut().filter(|c| c.expires > now) {
            let ip = canonical(c.peer.ip());
            let named = match which {
                Paths::All => true,
                Paths::To(ips) => ips.iter().any(|i| canonical(*i) == ip),
            };
            if !named {
                continue;
            }
            let Some(p) = permissions.iter().find(|p| p.ip == ip && p.expires > now) else { continue };
            let until = c.expires.min(p.expires);
            if c.published.is_some_and(|last| until <= last + slack) {
                continue;
            }
            c.published = Some(until);
            out.push((*c, until, p.host));
        }
        out
    }

    /// Forgets what was published of its paths (they were all withdrawn).
    pub(crate) fn unpublished(&mut self) {
        for c in &mut self.channels {
            c.published = None;
        }
    }

    /// What another worker needs to deliver a short-circuited packet from
    /// one of the host's relayed addresses (see [`crate::shared::View`]).
    pub(crate) fn view(&self) -> View {
        let hosts: Vec<IpAddr> = self.permissions.iter().filter(|p| p.host).map(|p| p.ip).collect();
        let host = |ip: IpAddr| !hosts.is_empty() && hosts.contains(&canonical(ip));
        View {
            listener: self.listener,
            client: self.client,
            expires: self.expires,
            crossed: Arc::clone(&self.crossed),
            permissions: self.permissions.iter().filter(|p| p.host).map(|p| (p.ip, p.expires)).collect(),
            channels: self
                .channels
                .iter()
                .filter(|c| host(c.peer.ip()))
                .map(|c| (c.peer, c.number, c.expires))
                .collect(),
        }
    }

    /// Checks the rebinding rules of RFC 8656 §12.2 without changing anything.
    pub(crate) fn can_bind(&self, number: u16, peer: SocketAddr, now: Instant) -> Result<(), BindError> {
        let by_number = self.channel(number, now).map(|c| c.peer);
        let by_peer = self.channel_to(peer, now).map(|c| c.number);
        match (by_number, by_peer) {
            (Some(p), _) if p != peer => Err(BindError::Conflict),
            (_, Some(n)) if n != number => Err(BindError::Conflict),
            (Some(_), _) => Ok(()),
            (None, _) => {
                let live = self.channels.iter().filter(|c| c.expires > now).count();
                if live >= MAX_CHANNELS { Err(BindError::Full) } else { Ok(()) }
            }
        }
    }

    /// Creates or refreshes a channel binding checked by [`Self::can_bind`].
    /// Its live permissions and channels with the lifetimes they have
    /// left at `now`, as a handover carries them.
    pub(crate) fn moving(&self, now: Instant) -> (Vec<MovedPermission>, Vec<MovedChannel>) {
        let left = |until: Instant| until.saturating_duration_since(now);
        let permissions = self.permissions.iter().filter(|p| p.expires > now);
        let channels = self.channels.iter().filter(|c| c.expires > now);
        (
            permissions.map(|p| MovedPermission { ip: p.ip, lifetime: left(p.expires), host: p.host }).collect(),
            channels.map(|c| MovedChannel { number: c.number, peer: c.peer, lifetime: left(c.expires) }).collect(),
        )
    }

    /// Puts back at `now` what [`Self::moving`] gave (on a fresh
    /// allocation), within the limits a request meets (lifetimes no longer
    /// than a request gives).
    pub(crate) fn restore(&mut self, now: Instant, permissions: &[MovedPermission], channels: &[MovedChannel]) {
        let permission = |p: &MovedPermission| Permission {
            ip: canonical(p.ip),
            expires: now + p.lifetime.min(PERMISSION_LIFETIME),
            host: p.host,
        };
        self.permissions = permissions.iter().take(MAX_PERMISSIONS).map(permission).collect();
        let channel = |c: &MovedChannel| Channel {
            number: c.number,
            peer: c.peer,
            expires: now + c.lifetime.min(CHANNEL_LIFETIME),
            published: None,
        };
        self.channels = channels.iter().take(MAX_CHANNELS).map(channel).collect();
    }

    /// Judges its live permissions and channels again with `judge` (the
    /// policy or the host's addresses changed): each stays only if its
    /// peer is judged as when it was made, a peer elsewhere or one of the
    /// host's (a relayed address there); a peer now denied, or one that
    /// became the host's, loses its permission and channels. Returns how
    /// many it dropped.
    pub(crate) fn rejudge(&mut self, now: Instant, judge: impl Fn(IpAddr) -> Judgement) -> u64 {
        self.permissions.retain(|p| p.expires > now);
        self.channels.retain(|c| c.expires > now);
        let before = self.permissions.len() + self.channels.len();
        let keep = |ip: IpAddr, host: bool| match judge(ip) {
            Judgement::Allowed => !host,
            Judgement::Host => host,
            Judgement::Denied => false,
        };
        let permissions = std::mem::take(&mut self.permissions);
        let host = |ip: IpAddr| permissions.iter().any(|p| p.host && p.ip == canonical(ip));
        self.channels.retain(|c| keep(c.peer.ip(), host(c.peer.ip())));
        self.permissions = permissions.into_iter().filter(|p| keep(p.ip, p.host)).collect();
        (before - self.permissions.len() - self.channels.len()) as u64
    }

    pub(crate) fn bind(&mut self, number: u16, peer: SocketAddr, now: Instant) {
        let expires = now + CHANNEL_LIFETIME;
        if let Some(c) = self.channels.iter_mut().find(|c| c.number == number && c.peer == peer) {
            c.expires = expires;
            return;
        }
        // An expired binding of this number or peer is gone for good.
        self.channels.retain(|c| c.expires > now && c.number != number && c.peer != peer);
        self.channels.push(Channel { number, peer, expires, published: None });
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::testing::t0;

    fn alloc(now: Instant) -> Allocation {
        let relay = Relay { bound: "127.0.0.1:50000".parse().unwrap(), advertised: "127.0.0.1:50000".parse().unwrap() };
        Allocation::new(
            ListenerId::udp(0),
            "127.0.0.1:4000".parse().unwrap(),
            [Some(relay), None],
            "u".into(),
            Account::new("u", "127.0.0.1".parse().unwrap()),
            LongTermKey::Md5([0; 16]),
            IntegrityKind::Sha1,
            TransactionId([0; 12]),
            false,
            now + Duration::from_secs(600),
            (SessionId(1), 0),
        )
    }

    #[test]
    fn permissions_expire_after_300_seconds_and_ignore_ports() {
        let t0 = t0();
        let mut a = alloc(t0);
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(!a.permits(peer, t0));
        assert!(a.permit(peer, false, t0));
        assert!(a.permits(peer, t0 + Duration::from_secs(299)));
        assert!(!a.permits(peer, t0 + Duration::from_secs(300)));
        assert!(a.permits("::ffff:198.51.100.1".parse().unwrap(), t0), "mapped form is the same IP");
        // Refreshing resets the 300 s.
        assert!(a.permit(peer, false, t0 + Duration::from_secs(200)));
        assert!(a.permits(peer, t0 + Duration::from_secs(499)));
    }

    #[test]
    fn channel_rebinding_rules() {
        let t0 = t0();
        let mut a = alloc(t0);
        let p1: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        let p2: SocketAddr = "198.51.100.1:2000".parse().unwrap();
        assert_eq!(a.can_bind(0x4000, p1, t0), Ok(()));
        a.bind(0x4000, p1, t0);
        assert_eq!(a.can_bind(0x4000, p1, t0), Ok(()), "same pair refreshes");
        assert_eq!(a.can_bind(0x4000, p2, t0), Err(BindError::Conflict), "number taken");
        assert_eq!(a.can_bind(0x4001, p1, t0), Err(BindError::Conflict), "peer taken");
        assert_eq!(a.can_bind(0x4001, p2, t0), Ok(()));
        let later = t0 + CHANNEL_LIFETIME;
        assert!(a.channel(0x4000, later).is_none(), "expired after 600 s");
        assert_eq!(a.can_bind(0x4000, p2, later), Ok(()), "free again once expired");
        a.bind(0x4000, p2, later);
        assert_eq!(a.channel(0x4000, later).unwrap().peer, p2);
        assert!(a.channel_to(p1, later).is_none());
    }

    #[test]
    fn permission_and_channel_counts_are_bounded() {
        let t0 = t0();
        let mut a = alloc(t0);
        for i in 0..MAX_PERMISSIONS {
            let ip = IpAddr::from([198, 51, (i / 256) as u8, (i % 256) as u8]);
            assert!(a.permit(ip, false, t0));
        }
        assert!(!a.permit("203.0.113.1".parse().unwrap(), false, t0));
        assert!(a.permit("203.0.113.1".parse().unwrap(), false, t0 + PERMISSION_LIFETIME), "expired ones make room");
        for i in 0..MAX_CHANNELS as u16 {
            let peer = SocketAddr::from(([198, 51, 100, 1], 1000 + i));
            assert_eq!(a.can_bind(0x4000 + i, peer, t0), Ok(()));
            a.bind(0x4000 + i, peer, t0);
        }
        assert_eq!(a.can_bind(0x4FFF, "198.51.100.2:1".parse().unwrap(), t0), Err(BindError::Full));
    }
}
