//! STUN requests: Binding (RFC 8489), and the requests on an existing
//! allocation, Refresh, CreatePermission and ChannelBind (RFC 8656), each
//! checked in the order its RFC section lists, each error mapped to the
//! code that section names. Allocate is `allocate.rs`; answers are
//! written by `respond.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ip2p_wire::attr::{
    ChannelNumber, ErrorCodeAttr, Lifetime, RequestedAddressFamily, UnknownAttributes, XorMappedAddress, XorPeerAddress,
};
use ip2p_wire::{AddressFamily, AttrType, Class, ErrorCode, Message, Method};

use super::Server;
use super::respond::{Integrity, integrity};
use crate::allocation::{BindError, Paths};
use crate::auth::{Authed, Refusal};
use crate::packet::{DropReason, ListenerId};
use crate::policy::Judgement;
use crate::sockets::Sockets;
use crate::stats::AuthFailure;
use crate::timer::Timer;

/// How many unknown attributes a 420 lists at most.
const MAX_UNKNOWN: usize = 16;

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
        self.rejudge_if_stale(now);
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
                let checked = self.config.credentials.check(msg, from, unix).and_then(|authed| {
                    if self.shared.revocations.revoked(&authed.quota_user, unix) {
                        return Err(Refusal::Unauthenticated(AuthFailure::Revoked));
                    }
                    Ok(authed)
                });
                match checked {
                    Err(refusal) => {
                        unverified(self)?;
                        self.refuse(reply, msg, from, unix, refusal)
                    }
                    Ok(authed) if method == Method::ALLOCATE => {
                        let written = self.allocate(now, listener, from, msg, authed, reply, sockets);
                        // Parked for the fleet's word: answered later.
                        if std::mem::take(&mut self.admissions.waiting) {
                            return Ok(None);
                        }
                        written
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
    pub(super) fn binding(&mut self, from: SocketAddr, msg: &Message<'_>, reply: &mut [u8]) -> Option<usize> {
        if let Some(len) = self.unknown_attributes(reply, msg, None) {
            return Some(len);
        }
        self.respond(reply, msg, Class::Success, None, |w| {
            w.add(&XorMappedAddress(from))?;
            Ok(())
        })
    }

    /// Refresh, CreatePermission, ChannelBind and Connect: requests on an
    /// existing allocation (RFC 8656 §5, RFC 6062 §5.2).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_allocation(
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
                _ => self.remove(now, slot, sockets, crate::session::End::Deleted),
            }
            return Ok(Some(0));
        }
        let (lifetime, by_credential) = self.within_credential(self.lifetime(requested), alloc.credential_expiry, now);
        let expires = now + lifetime;
        if let Some(alloc) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            self.timers.reset(alloc.expires, expires, Timer::Allocation(slot));
            alloc.expires = expires;
            alloc.ends_with_credential = by_credential;
        }
        // The paths' deadlines are their channels' and permissions': none
        // moved, only the short-circuit's view of the allocation.
        self.publish_view(slot);
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
        let permitted: Vec<IpAddr> = peers().collect();
        self.changed(slot, now, Paths::To(&permitted));
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
        // Its permission's other channels' deadlines moved too.
        self.changed(slot, now, Paths::To(&[peer.ip()]));
        Ok(None)
    }

    /// RFC 8656 §7.2: min(requested, max), but never below the default.
    pub(super) fn lifetime(&self, requested: Option<u32>) -> Duration {
        let requested = requested.map_or(Duration::ZERO, |s| Duration::from_secs(u64::from(s)));
        requested.min(self.config.max_lifetime).max(self.config.default_lifetime)
    }

    /// `lifetime` cut to end at `credential`'s expiry (unix seconds) at
    /// `now`, with `strict_expiry`; and whether it was.
    pub(super) fn within_credential(
        &self,
        lifetime: Duration,
        credential: Option<u64>,
        now: Instant,
    ) -> (Duration, bool) {
        let Some(expiry) = credential.filter(|_| self.config.strict_expiry) else { return (lifetime, false) };
        let left = Duration::from_secs(expiry.saturating_sub(self.unix(now)).max(1));
        if left < lifetime { (left, true) } else { (lifetime, false) }
    }

    /// RFC 8489 §6.3.1: a request with comprehension-required attributes we
    /// do not know gets 420 listing them.
    pub(super) fn unknown_attributes(
        &mut self,
        reply: &mut [u8],
        msg: &Message<'_>,
        auth: Integrity<'_>,
    ) -> Option<usize> {
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
}
