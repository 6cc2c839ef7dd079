//! STUN requests: Binding (RFC 8489), Allocate, Refresh, CreatePermission
//! and ChannelBind (RFC 8656), each checked in the order its RFC section
//! lists, each error mapped to the code that section names.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ip2p_wire::attr::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, ErrorCodeAttr, EvenPort, Lifetime, Nonce,
    PasswordAlgorithms, Realm, RequestedAddressFamily, RequestedTransport, ReservationToken, Software,
    UnknownAttributes, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{
    AddressFamily, AttrType, Class, Error as WireError, ErrorCode, IntegrityKind, Message, MessageType, MessageWriter,
    Method,
};

use crate::allocation::{Allocation, BindError, Relay};
use crate::auth::{Authed, OFFERED_ALGORITHMS, Refusal};
use crate::shared::OverQuota;
use crate::stats::AuthFailure;
use crate::timer::Timer;
use crate::{Account, DropReason, Held, Judgement, ListenerId, RelayToken, Server, Sockets};

/// How many unknown attributes a 420 lists at most.
const MAX_UNKNOWN: usize = 16;
/// How many relay ports are tried when binds fail with "address in use"
/// before the request gets 508.
const MAX_BIND_ATTEMPTS: usize = 64;

/// The integrity to put on a response: the request's key and algorithm.
pub(super) type Integrity<'a> = Option<(&'a LongTermKey, IntegrityKind)>;

pub(super) fn integrity(authed: &Authed) -> Integrity<'_> {
    Some((&authed.key, authed.integrity))
}

/// ADDITIONAL-ADDRESS-FAMILY as draft-ietf-tram-turnbis numbered it, before
/// RFC 8656 assigned 0x8000; coturn's tools (4.6) send this one for `-Z`.
/// Comprehension-optional either way, so accepting it breaks nothing.
const LEGACY_ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8032);

/// RFC 8656 §7.2: a reservation is held "for at least 30 seconds".
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// The most a response to a request that did not authenticate may weigh,
/// as a multiple of the request's size (a forged source must not get an
/// amplifier).
pub(crate) const MAX_AMPLIFICATION: usize = 4;

/// The longest REALM: the 401 to the smallest well-formed Allocate (28
/// bytes: a header and REQUESTED-TRANSPORT) is 80 bytes plus the realm's
/// padded length, and must stay within four times it.
pub const MAX_REALM: usize = 32;

/// An Allocate request's wishes, checked (RFC 8656 §7.2 steps 3-9).
struct AllocateRequest {
    /// REQUESTED-TRANSPORT TCP (RFC 6062).
    tcp: bool,
    family: usize,
    additional_v6: bool,
    even_port: bool,
    /// EVEN-PORT's R bit: reserve port N+1 too.
    reserve_next: bool,
    /// RESERVATION-TOKEN: use the address reserved under it.
    token: Option<[u8; 8]>,
    dont_fragment: bool,
    lifetime: Option<u32>,
}

/// A port reserved next to a new relay: its token and when it lapses.
type Reserved = ([u8; 8], Instant);

/// How to choose a relay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortChoice<'a> {
    Any,
    Even,
    /// An even port N whose N+1 is free too, to be reserved.
    EvenPair,
    /// Any port, for a TCP relay (RFC 6062) of this user's.
    Tcp(&'a str),
}

impl Server {
    /// Answers a request: the length of the response written into
    /// `reply`, `None` when it is answered later (RFC 6062 Connect), or
    /// why there is no answer.
    pub(super) fn request(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        msg: &Message<'_>,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Result<Option<usize>, DropReason> {
        let method = msg.method();
        // Whoever sent an unauthenticated request may not be who its source
        // says: answers to them are rate limited per source prefix.
        let unverified = |s: &mut Self| {
            if s.limiter.admit(from.ip(), now, s.config.unauthenticated_rate) {
                Ok(())
            } else {
                Err(DropReason::ResponseRateLimit)
            }
        };
        let written = match method {
            Method::BINDING => {
                unverified(self)?;
                return self.binding(from, msg, reply).map(Some).ok_or(DropReason::Ignored);
            }
            Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT
            | Method::CONNECTION_BIND => {
                // RFC 8656 §5: every TURN request uses the long-term credentials.
                let unix = self.unix(now);
                match self.config.credentials.check(msg, from, unix) {
                    Err(refusal) => {
                        unverified(self)?;
                        self.refuse(reply, msg, from, unix, refusal)
                    }
                    Ok(authed) if method == Method::ALLOCATE => {
                        self.allocate(now, listener, from, msg, authed, reply, sockets)
                    }
                    Ok(authed) if method == Method::CONNECTION_BIND => {
                        self.connection_bind(listener, from, msg, &authed, reply, sockets)
                    }
                    Ok(authed) => return self.on_allocation(now, listener, from, msg, &authed, reply, sockets),
                }
            }
            _ => {
                unverified(self)?;
                self.error(reply, msg, ErrorCode::BAD_REQUEST, None)
            }
        };
        written.map(Some).ok_or(DropReason::Ignored)
    }

    /// RFC 8489 §7.3.1: a Binding request is answered with the client's
    /// reflexive address; no authentication.
    fn binding(&mut self, from: SocketAddr, msg: &Message<'_>, reply: &mut [u8]) -> Option<usize> {
        if let Some(len) = self.unknown_attributes(reply, msg, None) {
            return Some(len);
        }
        self.respond(reply, msg, Class::Success, None, |w| {
            w.add(&XorMappedAddress(from))?;
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        msg: &Message<'_>,
        authed: Authed,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Option<usize> {
        // Step 2, and RFC 8656 §5's retransmission note: the request that
        // created the allocation gets its success response again.
        if let Some((slot, alloc)) = self.allocation_of(listener, from) {
            if alloc.txid == *msg.transaction_id() && alloc.username == authed.username {
                return self.allocate_success(now, reply, msg, slot);
            }
            self.stats.allocations_refused.mismatch += 1;
            return self.error(reply, msg, ErrorCode::ALLOCATION_MISMATCH, integrity(&authed));
        }
        if let Some(len) = self.unknown_attributes(reply, msg, integrity(&authed)) {
            self.stats.allocations_refused.invalid += 1;
            return Some(len);
        }
        if self.draining {
            self.stats.allocations_refused.draining += 1;
            return self.refuse_while_draining(from, msg, &authed, reply);
        }
        let req = match self.check_allocate(listener, msg) {
            Ok(req) => req,
            Err(code) => {
                self.stats.allocations_refused.invalid += 1;
                return self.error(reply, msg, code, integrity(&authed));
            }
        };
        // One for the allocation, and one for the port it reserves.
        let account = Account::new(&authed.quota_user, from.ip());
        let quota = self.shared.quotas.acquire(&account).and_then(|()| {
            if req.reserve_next {
                self.shared.quotas.acquire(&account).inspect_err(|_| self.shared.quotas.release(&account))
            } else {
                Ok(())
            }
        });
        if let Err(over) = quota {
            let refused = &mut self.stats.allocations_refused;
            *match over {
                OverQuota::Node => &mut refused.node_full,
                OverQuota::User => &mut refused.user_quota,
                OverQuota::Prefix => &mut refused.ip_quota,
            } += 1;
            if let Some(unlogged) = self.logs.refused.admit(now) {
                tracing::info!(client = %from, user = %authed.username, limit = ?over, unlogged, "allocation refused: over quota");
            }
            return self.error(reply, msg, over.code(), integrity(&authed));
        }
        let slot = self.reserve_slot();
        let choice = match (req.reserve_next, req.even_port) {
            (true, _) => PortChoice::EvenPair,
            (false, true) => PortChoice::Even,
            (false, false) => PortChoice::Any,
        };
        let primary = match req.token {
            // Step 5: a token that is unknown, expired or whose address is
            // taken is "not valid": 508.
            Some(token) => self
                .shared
                .take_reservation(&token, now)
                .and_then(|held| self.open_exact(slot, held, req.dont_fragment, sockets))
                .map(|relay| (relay, None)),
            None if req.tcp => {
                let user = authed.username.clone();
                self.open_relay(now, slot, req.family, PortChoice::Tcp(&user), false, &account, sockets)
            }
            None => self.open_relay(now, slot, req.family, choice, req.dont_fragment, &account, sockets),
        };
        let Some((primary, reservation)) = primary else {
            self.shared.quotas.release(&account);
            if req.reserve_next {
                self.shared.quotas.release(&account);
            }
            self.free.push(slot);
            self.stats.allocations_refused.no_relay_port += 1;
            return self.error(reply, msg, ErrorCode::INSUFFICIENT_CAPACITY, integrity(&authed));
        };
        let mut relays = [None, None];
        if let Some(r) = relays.get_mut(super::allocation::family_index(&primary.bound.ip())) {
            *r = Some(primary);
        }
        let mut partial = None;
        if req.additional_v6 {
            if self.config.relay_ips(1).is_empty() {
                partial = Some(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
            } else {
                let choice = if req.even_port { PortChoice::Even } else { PortChoice::Any };
                relays[1] = self.open_relay(now, slot, 1, choice, req.dont_fragment, &account, sockets).map(|(r, _)| r);
                if relays[1].is_none() {
                    partial = Some(ErrorCode::INSUFFICIENT_CAPACITY);
                }
            }
        }
        let lifetime = self.lifetime(req.lifetime);
        let mut alloc = Allocation::new(
            listener,
            from,
            relays,
            authed.username,
            account,
            authed.key,
            authed.integrity,
            *msg.transaction_id(),
            req.dont_fragment,
            now + lifetime,
        );
        alloc.partial = partial;
        alloc.reservation = reservation;
        alloc.tcp = req.tcp;
        if let Some(unlogged) = self.logs.created.admit(now) {
            tracing::info!(
                client = %from,
                user = %alloc.username,
                relayed = ?alloc.relays.iter().flatten().map(|r| r.advertised).collect::<Vec<_>>(),
                lifetime = lifetime.as_secs(),
                unlogged,
                "allocation created"
            );
        }
        self.place(slot, alloc);
        self.stats.allocations_created += 1;
        self.allocate_success(now, reply, msg, slot)
    }

    /// A draining node's answer to a new Allocate: 300 Try Alternate with
    /// an alternate of the client's family (RFC 8489 §10), else 508.
    fn refuse_while_draining(
        &mut self,
        from: SocketAddr,
        msg: &Message<'_>,
        authed: &Authed,
        reply: &mut [u8],
    ) -> Option<usize> {
        let same_family = |a: &&SocketAddr| a.is_ipv4() == from.is_ipv4();
        let candidates: Vec<SocketAddr> = self.config.alternates.iter().filter(same_family).copied().collect();
        let Some(&alternate) = candidates.get(rand::Rng::random_range(&mut self.rng, 0..candidates.len().max(1)))
        else {
            return self.error(reply, msg, ErrorCode::INSUFFICIENT_CAPACITY, integrity(authed));
        };
        self.respond(reply, msg, Class::Error, integrity(authed), |w| {
            w.add(&ErrorCodeAttr::new(ErrorCode::TRY_ALTERNATE))?;
            w.add(&ip2p_wire::attr::AlternateServer(alternate))?;
            Ok(())
        })
    }

    /// RFC 8656 §7.2 steps 3-9 (and RFC 6062 §5.1 for TCP): what the
    /// Allocate asks for, or the error.
    fn check_allocate(&self, listener: ListenerId, msg: &Message<'_>) -> Result<AllocateRequest, ErrorCode> {
        let tcp = match msg.get::<RequestedTransport>()? {
            None => return Err(ErrorCode::BAD_REQUEST),
            Some(RequestedTransport::UDP) => false,
            Some(RequestedTransport::TCP) => true,
            Some(_) => return Err(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL),
        };
        let dont_fragment = msg.get_raw(AttrType::DONT_FRAGMENT).is_some();
        let raf = msg.get::<RequestedAddressFamily>()?;
        let aaf = match msg.get::<AdditionalAddressFamily>()? {
            // coturn's clients (4.6) still send the draft's code point.
            None => msg.get_raw(LEGACY_ADDITIONAL_ADDRESS_FAMILY).map(|raw| match raw.value {
                [family, 0, 0, 0] => Ok(AdditionalAddressFamily(AddressFamily(*family))),
                _ => Err(ErrorCode::BAD_REQUEST),
            }),
            Some(aaf) => Some(Ok(aaf)),
        }
        .transpose()?;
        let even = msg.get::<EvenPort>()?;
        let lifetime = msg.get::<Lifetime>()?.map(|l| l.0);
        if tcp {
            // RFC 6062 §5.1: over TCP or TLS only, and none of the UDP-only
            // attributes (nor a dual allocation, which it does not define).
            let token = msg.get_raw(AttrType::RESERVATION_TOKEN).is_some();
            if listener.transport != ip2p_wire::Transport::Stream
                || dont_fragment
                || even.is_some()
                || token
                || aaf.is_some()
            {
                return Err(ErrorCode::BAD_REQUEST);
            }
        }
        if let Some(ReservationToken(token)) = msg.get::<ReservationToken>()? {
            // Step 5: the token names the address (and so the family).
            if even.is_some() || raf.is_some() || aaf.is_some() {
                return Err(ErrorCode::BAD_REQUEST);
            }
            return Ok(AllocateRequest {
                tcp: false,
                family: 0,
                additional_v6: false,
                even_port: false,
                reserve_next: false,
                token: Some(*token),
                dont_fragment,
                lifetime,
            });
        }
        if raf.is_some() && aaf.is_some() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let family = match raf.map(|r| r.0) {
            None | Some(AddressFamily::IPV4) => 0,
            Some(AddressFamily::IPV6) => 1,
            Some(_) => return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED),
        };
        if self.config.relay_ips(family).is_empty() {
            return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
        }
        let reserve_next = even.is_some_and(|e| e.reserve_next);
        if reserve_next && aaf.is_some() {
            return Err(ErrorCode::BAD_REQUEST); // step 8
        }
        let additional_v6 = match aaf.map(|a| a.0) {
            None => false,
            Some(AddressFamily::IPV6) => true,
            Some(_) => return Err(ErrorCode::BAD_REQUEST),
        };
        Ok(AllocateRequest {
            tcp,
            family,
            additional_v6,
            even_port: even.is_some(),
            reserve_next,
            token: None,
            dont_fragment,
            lifetime,
        })
    }

    fn allocate_success(&mut self, now: Instant, reply: &mut [u8], msg: &Message<'_>, slot: u32) -> Option<usize> {
        let alloc = self.slots.get(slot as usize)?.as_ref()?;
        let (relays, client, partial, expires) = (alloc.relays, alloc.client, alloc.partial, alloc.expires);
        let reservation = alloc.reservation.map(|(token, _)| token);
        let (key, kind) = (alloc.key.clone(), alloc.integrity);
        let remaining = expires.saturating_duration_since(now).as_secs();
        self.respond(reply, msg, Class::Success, Some((&key, kind)), |w| {
            for relay in relays.iter().flatten() {
                w.add(&XorRelayedAddress(relay.advertised))?;
            }
            w.add(&Lifetime(u32::try_from(remaining).unwrap_or(u32::MAX)))?;
            if let Some(token) = &reservation {
                w.add(&ReservationToken(token))?;
            }
            if let Some(code) = partial {
                let reason = code.reason();
                w.add(&AddressErrorCode { family: AddressFamily::IPV6, code, reason })?;
            }
            w.add(&XorMappedAddress(client))?;
            Ok(())
        })
    }

    /// Refresh, CreatePermission, ChannelBind and Connect: requests on an
    /// existing allocation (RFC 8656 §5, RFC 6062 §5.2).
    #[allow(clippy::too_many_arguments)]
    fn on_allocation(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        msg: &Message<'_>,
        authed: &Authed,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Result<Option<usize>, DropReason> {
        let answer = |written: Option<usize>| written.map(Some).ok_or(DropReason::Ignored);
        let Some((slot, alloc)) = self.allocation_of(listener, from) else {
            return answer(self.error(reply, msg, ErrorCode::ALLOCATION_MISMATCH, integrity(authed)));
        };
        if alloc.username != authed.username {
            self.stats.auth_failures.count(AuthFailure::WrongUser);
            return answer(self.error(reply, msg, ErrorCode::WRONG_CREDENTIALS, integrity(authed)));
        }
        let tcp = alloc.tcp;
        if let Some(len) = self.unknown_attributes(reply, msg, integrity(authed)) {
            return Ok(Some(len));
        }
        let result = match msg.method() {
            Method::REFRESH => self.refresh(now, slot, msg, sockets),
            Method::CREATE_PERMISSION => self.create_permission(now, slot, msg),
            Method::CONNECT => match self.connect(slot, msg, sockets) {
                Ok(()) => return Ok(None),
                Err(code) => Err(code),
            },
            _ if tcp => Err(ErrorCode::BAD_REQUEST),
            _ => self.channel_bind(now, slot, msg),
        };
        answer(match result {
            Ok(lifetime) => self.respond(reply, msg, Class::Success, integrity(authed), |w| {
                if let Some(secs) = lifetime {
                    w.add(&Lifetime(secs))?;
                }
                Ok(())
            }),
            Err(code) => self.error(reply, msg, code, integrity(authed)),
        })
    }

    /// RFC 8656 §8.2. Returns the LIFETIME to answer with.
    fn refresh(
        &mut self,
        now: Instant,
        slot: u32,
        msg: &Message<'_>,
        sockets: &mut impl Sockets,
    ) -> Result<Option<u32>, ErrorCode> {
        let requested = msg.get::<Lifetime>()?.map(|l| l.0);
        let family = msg.get::<RequestedAddressFamily>()?;
        let alloc = self.slots.get(slot as usize).and_then(Option::as_ref).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        let family = match family.map(|f| f.0) {
            None => None,
            Some(AddressFamily::IPV4) => Some(0),
            Some(AddressFamily::IPV6) => Some(1),
            Some(_) => return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH),
        };
        if family.is_some_and(|f| alloc.relays.get(f).copied().flatten().is_none()) {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if requested == Some(0) {
            let dual = alloc.relays.iter().flatten().count() == 2;
            match family {
                // Deleting one family of a dual allocation keeps the other.
                Some(f) if dual => self.close_family(slot, f, sockets),
                _ => self.remove(now, slot, sockets, "deleted by client"),
            }
            return Ok(Some(0));
        }
        let lifetime = self.lifetime(requested);
        let expires = now + lifetime;
        if let Some(alloc) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            self.timers.reset(alloc.expires, expires, Timer::Allocation(slot));
            alloc.expires = expires;
        }
        self.changed(slot, now);
        Ok(Some(u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX)))
    }

    /// RFC 8656 §10.2.
    fn create_permission(&mut self, now: Instant, slot: u32, msg: &Message<'_>) -> Result<Option<u32>, ErrorCode> {
        let alloc = self.slots.get(slot as usize).and_then(Option::as_ref).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        let mut count = 0;
        for peer in msg.get_all::<XorPeerAddress>() {
            let XorPeerAddress(peer) = peer?;
            if alloc.relay_for(peer.ip()).is_none() {
                return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
            }
            // A TCP allocation's peers on this host are TCP relayed addresses.
            let allowed = if alloc.tcp { self.tcp_peer_allowed(peer) } else { self.peer_allowed(peer) };
            if !allowed {
                return Err(ErrorCode::FORBIDDEN);
            }
            count += 1;
        }
        if count == 0 {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let peers = || msg.get_all::<XorPeerAddress>().flatten().map(|p| p.0.ip());
        if !alloc.has_room_for_permissions(peers(), now) {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        let hosts: Vec<bool> = peers().map(|ip| self.judge(ip) == Judgement::Host).collect();
        let alloc = self.slots.get_mut(slot as usize).and_then(Option::as_mut).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        for (ip, host) in peers().zip(hosts) {
            alloc.permit(ip, host, now);
        }
        self.changed(slot, now);
        Ok(None)
    }

    /// RFC 8656 §12.2.
    fn channel_bind(&mut self, now: Instant, slot: u32, msg: &Message<'_>) -> Result<Option<u32>, ErrorCode> {
        let number = msg.get::<ChannelNumber>()?;
        let peer = msg.get::<XorPeerAddress>()?;
        let (Some(ChannelNumber(number)), Some(XorPeerAddress(peer))) = (number, peer) else {
            return Err(ErrorCode::BAD_REQUEST);
        };
        if !self.config.channel_numbers.allows(number) {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let alloc = self.slots.get(slot as usize).and_then(Option::as_ref).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        match alloc.can_bind(number, peer, now) {
            Err(BindError::Conflict) => return Err(ErrorCode::BAD_REQUEST),
            Err(BindError::Full) => return Err(ErrorCode::INSUFFICIENT_CAPACITY),
            Ok(()) => {}
        }
        if alloc.relay_for(peer.ip()).is_none() {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if !self.peer_allowed(peer) {
            return Err(ErrorCode::FORBIDDEN);
        }
        if !alloc.has_room_for_permissions(std::iter::once(peer.ip()), now) {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        let host = self.judge(peer.ip()) == Judgement::Host;
        let alloc = self.slots.get_mut(slot as usize).and_then(Option::as_mut).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        alloc.bind(number, peer, now);
        alloc.permit(peer.ip(), host, now);
        self.changed(slot, now);
        Ok(None)
    }

    /// RFC 8656 §7.2: min(requested, max), but never below the default.
    fn lifetime(&self, requested: Option<u32>) -> Duration {
        let requested = requested.map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
        requested.min(self.config.max_lifetime).max(self.config.default_lifetime)
    }

    /// A free slot for a new allocation; filled by [`Self::place`] or given
    /// back to `free`.
    pub(super) fn reserve_slot(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
        })
    }

    pub(super) fn place(&mut self, slot: u32, alloc: Allocation) {
        self.by_client.insert((alloc.listener, alloc.client), slot);
        self.timers.set(alloc.expires, Timer::Allocation(slot));
        if let Some((token, until)) = alloc.reservation {
            self.timers.set(until, Timer::Reservation(token));
        }
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some(alloc);
        }
        self.index_relays(slot, true);
    }

    /// Binds a relay socket of `family` on a random free port of the range
    /// (as `choice` says), trying others while ports turn out in use. The
    /// family's relay addresses take turns, the next one when one is full. For
    /// [`PortChoice::EvenPair`], port N+1 is reserved for `account` and
    /// its token returned with when the reservation lapses.
    #[allow(clippy::too_many_arguments)]
    fn open_relay(
        &mut self,
        now: Instant,
        slot: u32,
        family: usize,
        choice: PortChoice<'_>,
        df: bool,
        account: &Account,
        sockets: &mut impl Sockets,
    ) -> Option<(Relay, Option<Reserved>)> {
        let ips: Vec<IpAddr> = self.config.relay_ips(family).iter().map(|r| r.bind).collect();
        self.next_relay_ip = self.next_relay_ip.wrapping_add(1);
        let first = self.next_relay_ip % ips.len().max(1);
        let mut attempts = 0;
        for ip in ips.iter().cycle().skip(first).take(ips.len()).copied() {
            let opened = self.open_on(now, (slot, ip), choice, df, account, &mut attempts, sockets);
            if opened.is_some() {
                return opened;
            }
            if attempts >= MAX_BIND_ATTEMPTS {
                return None;
            }
        }
        None
    }

    /// [`Self::open_relay`] on one relay address.
    #[allow(clippy::too_many_arguments)]
    fn open_on(
        &mut self,
        now: Instant,
        (slot, ip): (u32, IpAddr),
        choice: PortChoice<'_>,
        df: bool,
        account: &Account,
        attempts: &mut usize,
        sockets: &mut impl Sockets,
    ) -> Option<(Relay, Option<Reserved>)> {
        let family = super::allocation::family_index(&ip);
        let (lo, hi) = (*self.config.ports.start(), *self.config.ports.end());
        let span = u32::from(hi.checked_sub(lo)?) + 1;
        let start = rand::Rng::random_range(&mut self.rng, 0..span);
        for i in 0..span {
            let port = u16::try_from(u32::from(lo) + (start + i) % span).ok()?;
            let free = |p: u16, s: &Self| {
                let addr = SocketAddr::new(ip, p);
                !s.ports.contains(&addr) && !s.shared.reservations.holds(addr, now)
            };
            let fits = match choice {
                PortChoice::Any | PortChoice::Tcp(_) => true,
                PortChoice::Even => port % 2 == 0,
                PortChoice::EvenPair => port % 2 == 0 && port < hi && free(port + 1, self),
            };
            if !fits || !free(port, self) {
                continue;
            }
            let bound = SocketAddr::new(ip, port);
            let token = RelayToken::new(slot, family);
            let opened = match choice {
                PortChoice::Tcp(user) => sockets.open_tcp_relay(token, bound, user, account.prefix),
                _ => sockets.open_relay(token, bound, df),
            };
            // EvenPair: N+1 is bound now too, and held for the token.
            let opened = match (opened, choice) {
                (Ok(()), PortChoice::EvenPair) => match sockets.hold(SocketAddr::new(ip, port + 1)) {
                    Ok(held) => Ok(Some(held)),
                    Err(e) => {
                        sockets.close_relay(token);
                        Err(e)
                    }
                },
                (opened, _) => opened.map(|()| None),
            };
            match opened {
                Ok(held) => {
                    let relay = self.record(bound);
                    // The reservation lapses by a timer of the allocation's
                    // (set when it is placed), which releases the port.
                    let token = held.map(|held| {
                        let token: [u8; 8] = rand::Rng::random(&mut self.rng);
                        let until = now + RESERVATION_LIFETIME;
                        self.shared.reserve(token, held, until, account.clone());
                        (token, until)
                    });
                    return Some((relay, token));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && *attempts < MAX_BIND_ATTEMPTS => {
                    *attempts += 1;
                }
                Err(e) => {
                    // EMFILE and the like: every Allocate meets it until
                    // something closes, so it is logged a few times a while.
                    if let Some(unlogged) = self.logs.refused.admit(now) {
                        tracing::warn!(%bound, error = %e, unlogged, "cannot open a relay socket");
                    }
                    *attempts = MAX_BIND_ATTEMPTS;
                    return None;
                }
            }
        }
        None
    }

    /// Opens a relay on a reserved address, with the socket held for it.
    fn open_exact(&mut self, slot: u32, held: Held, df: bool, sockets: &mut impl Sockets) -> Option<Relay> {
        let bound = held.addr;
        let family = super::allocation::family_index(&bound.ip());
        // A reload may have removed its relay address since.
        self.config.relay_bound_to(bound.ip())?;
        sockets.adopt_relay(RelayToken::new(slot, family), held, df).ok()?;
        Some(self.record(bound))
    }

    /// Marks `bound`'s port used and returns the relay with its advertised
    /// address.
    fn record(&mut self, bound: SocketAddr) -> Relay {
        self.ports.insert(bound);
        let external = self.config.relay_bound_to(bound.ip()).and_then(|(_, r)| r.external).unwrap_or(bound.ip());
        Relay { bound, advertised: SocketAddr::new(external, bound.port()) }
    }

    fn close_family(&mut self, slot: u32, family: usize, sockets: &mut impl Sockets) {
        let Some(alloc) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(relay) = alloc.relays.get_mut(family).and_then(Option::take) {
            self.unindex(relay);
            sockets.close_relay(RelayToken::new(slot, family));
            self.ports.remove(&relay.bound);
            self.publish_gone(RelayToken::new(slot, family));
        }
    }

    /// RFC 8489 §6.3.1: a request with comprehension-required attributes we
    /// do not know gets 420 listing them.
    fn unknown_attributes(&mut self, reply: &mut [u8], msg: &Message<'_>, auth: Integrity<'_>) -> Option<usize> {
        let mut unknown = [AttrType(0); MAX_UNKNOWN];
        let mut n = 0;
        for (slot, t) in unknown.iter_mut().zip(msg.unknown_comprehension_required()) {
            *slot = t;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let listed = unknown.get(..n).unwrap_or_default();
        let code = ErrorCode::UNKNOWN_ATTRIBUTE;
        let reason = if auth.is_some() { code.reason() } else { "" };
        self.respond(reply, msg, Class::Error, auth, |w| {
            w.add(&ErrorCodeAttr { code, reason })?;
            w.add(&UnknownAttributes::new(listed))?;
            Ok(())
        })
    }

    /// Answers a request that failed authentication (RFC 8489 §9.2.4).
    fn refuse(
        &mut self,
        reply: &mut [u8],
        msg: &Message<'_>,
        from: SocketAddr,
        unix: u64,
        refusal: Refusal,
    ) -> Option<usize> {
        let code = match refusal {
            Refusal::BadRequest => {
                self.stats.auth_failures.count(AuthFailure::BadRequest);
                return self.error(reply, msg, ErrorCode::BAD_REQUEST, None);
            }
            Refusal::Challenge => ErrorCode::UNAUTHENTICATED,
            Refusal::Unauthenticated(why) => {
                self.stats.auth_failures.count(why);
                ErrorCode::UNAUTHENTICATED
            }
            Refusal::StaleNonce => {
                self.stats.auth_failures.count(AuthFailure::StaleNonce);
                ErrorCode::STALE_NONCE
            }
        };
        let nonce = self.config.credentials.nonce(from, unix);
        let config = self.config.clone();
        let len = self.respond(reply, msg, Class::Error, None, |w| {
            w.add(&ErrorCodeAttr { code, reason: "" })?;
            w.add(&Realm(&config.credentials.realm))?;
            w.add(&Nonce(core::str::from_utf8(&nonce).unwrap_or_default()))?;
            w.add(&PasswordAlgorithms::new(&OFFERED_ALGORITHMS))?;
            Ok(())
        })?;
        // The challenge goes to a source nobody verified: never more than
        // four times the request. A request too small to deserve it (no
        // well-formed Allocate is: see `MAX_REALM`) gets the bare code.
        if len > MAX_AMPLIFICATION * msg.as_bytes().len() {
            return self.error(reply, msg, code, None);
        }
        Some(len)
    }

    pub(super) fn error(
        &mut self,
        reply: &mut [u8],
        msg: &Message<'_>,
        code: ErrorCode,
        auth: Integrity<'_>,
    ) -> Option<usize> {
        // Reason phrases are for people: a source nobody verified gets none.
        let reason = if auth.is_some() { code.reason() } else { "" };
        self.respond(reply, msg, Class::Error, auth, |w| {
            w.add(&ErrorCodeAttr { code, reason })?;
            Ok(())
        })
    }

    /// Writes a response: `body`, and when the request authenticated,
    /// SOFTWARE and the integrity of its key; FINGERPRINT if the request
    /// had one. A response to a request that did not authenticate carries
    /// no optional attribute: it may go to a forged source.
    pub(super) fn respond(
        &self,
        reply: &mut [u8],
        msg: &Message<'_>,
        class: Class,
        auth: Integrity<'_>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WireError>,
    ) -> Option<usize> {
        let to = Respond { method: msg.method(), tid: *msg.transaction_id(), fingerprint: msg.has_fingerprint() };
        self.respond_to(reply, &to, class, auth, body)
    }

    /// Writes a response to the request `to` names (which may be answered
    /// after it is gone: RFC 6062 Connect).
    pub(super) fn respond_to(
        &self,
        reply: &mut [u8],
        to: &Respond,
        class: Class,
        auth: Integrity<'_>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WireError>,
    ) -> Option<usize> {
        let typ = MessageType::new(to.method, class);
        let mut w = MessageWriter::new(reply, typ, to.tid).ok()?;
        body(&mut w).ok()?;
        if let (Some(software), Some(_)) = (&self.config.software, auth) {
            w.add(&Software(software)).ok()?;
        }
        match auth {
            Some((key, IntegrityKind::Sha1)) => w.integrity(key.as_bytes()).ok()?,
            Some((key, IntegrityKind::Sha256)) => w.integrity_sha256(key.as_bytes()).ok()?,
            None => &mut w,
        };
        if to.fingerprint { w.fingerprint().ok() } else { Some(w.finish()) }
    }
}

/// What a response needs of its request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Respond {
    pub(super) method: Method,
    pub(super) tid: ip2p_wire::TransactionId,
    pub(super) fingerprint: bool,
}
