//! Allocate (RFC 8656 §7.2, RFC 6062 §5.1 for TCP): checked in the order
//! the RFC lists, with the quotas, the relay sockets it opens and its
//! success response.

use std::net::SocketAddr;
use std::time::Instant;

use ip2p_wire::attr::{
    AdditionalAddressFamily, AddressErrorCode, ErrorCodeAttr, EvenPort, Lifetime, RequestedAddressFamily,
    RequestedTransport, ReservationToken, XorMappedAddress, XorRelayedAddress,
};
use ip2p_wire::{AddressFamily, AttrType, Class, ErrorCode, Message};

use super::Server;
use super::admit::Word;
use super::relay_ports::PortChoice;
use super::respond::integrity;
use crate::admission::Admission;
use crate::allocation::Allocation;
use crate::auth::Authed;
use crate::config::Fallback;
use crate::packet::ListenerId;
use crate::shared::{Account, OverQuota};
use crate::sockets::Sockets;
use crate::timer::Timer;

/// ADDITIONAL-ADDRESS-FAMILY as draft-ietf-tram-turnbis numbered it, before
/// RFC 8656 assigned 0x8000; coturn's tools (4.6) send this one for `-Z`.
/// Comprehension-optional either way, so accepting it breaks nothing.
const LEGACY_ADDITIONAL_ADDRESS_FAMILY: AttrType = AttrType(0x8032);

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

impl Server {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn allocate(
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
        let steer = self.shared.steering.get();
        if self.draining {
            self.stats.allocations_refused.draining += 1;
            return self.refuse_while_draining(steer.alternate(listener, from), from, msg, &authed, reply);
        }
        let req = match self.check_allocate(listener, msg) {
            Ok(req) => req,
            Err(code) => {
                self.stats.allocations_refused.invalid += 1;
                return self.error(reply, msg, code, integrity(&authed));
            }
        };
        // A node at its fleet's threshold sends the client to a less loaded
        // one (RFC 8656 §10 and RFC 8489 §10: 300 Try Alternate).
        if steer.above > 0
            && self.shared.quotas.total() >= steer.above
            && let Some(alternate) = steer.alternate(listener, from)
        {
            self.stats.allocations_refused.redirected += 1;
            return self.try_alternate(alternate, msg, &authed, reply);
        }
        // One for the allocation, and one for the port it reserves.
        let account = Account::new(&authed.quota_user, from.ip());
        let count = if req.reserve_next { 2 } else { 1 };
        let word = match self.fleet_word(now, listener, from, msg, &account, count) {
            Word::Wait => {
                self.admissions.waiting = true;
                return None;
            }
            Word::Go(word) => word,
        };
        if word == Some(Admission::Unknown) && self.config.admission == Some(Fallback::Refuse) {
            self.stats.allocations_refused.store_down += 1;
            return self.error(reply, msg, ErrorCode::INSUFFICIENT_CAPACITY, integrity(&authed));
        }
        let fleet_refused = match word {
            Some(Admission::OverUser) => Some(OverQuota::User),
            Some(Admission::OverPrefix) => Some(OverQuota::Prefix),
            _ => None,
        };
        // Counted by the fleet already: what is not made here goes back.
        let counted = word == Some(Admission::Admitted);
        let quota = match fleet_refused {
            Some(over) => Err(over),
            None => self.shared.quotas.acquire(&account, counted).and_then(|()| {
                if req.reserve_next {
                    let second = self.shared.quotas.acquire(&account, counted);
                    second.inspect_err(|_| self.shared.quotas.unacquire(&account, counted))
                } else {
                    Ok(())
                }
            }),
        };
        if let Err(over) = quota {
            if counted {
                self.shared.quotas.unadmit(&account, count);
            }
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
        let credential = authed.expiry.filter(|_| self.config.strict_expiry);
        let (lifetime, by_credential) = self.within_credential(self.lifetime(req.lifetime), credential, now);
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
            self.new_session(now),
        );
        alloc.partial = partial;
        alloc.credential_expiry = credential;
        alloc.ends_with_credential = by_credential;
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
        self.publish_session(slot, now, None);
        self.stats.allocations_created += 1;
        self.allocate_success(now, reply, msg, slot)
    }

    /// A draining node's answer to a new Allocate: 300 Try Alternate to
    /// the fleet's choice, else to a configured alternate of the client's
    /// family (RFC 8489 §10), else 508.
    fn refuse_while_draining(
        &mut self,
        chosen: Option<SocketAddr>,
        from: SocketAddr,
        msg: &Message<'_>,
        authed: &Authed,
        reply: &mut [u8],
    ) -> Option<usize> {
        let same_family = |a: &&SocketAddr| a.is_ipv4() == from.is_ipv4();
        let candidates: Vec<SocketAddr> = self.config.alternates.iter().filter(same_family).copied().collect();
        let configured = candidates.get(rand::Rng::random_range(&mut self.rng, 0..candidates.len().max(1)));
        match chosen.or(configured.copied()) {
            Some(alternate) => self.try_alternate(alternate, msg, authed, reply),
            None => self.error(reply, msg, ErrorCode::INSUFFICIENT_CAPACITY, integrity(authed)),
        }
    }

    /// 300 Try Alternate with ALTERNATE-SERVER `alternate`.
    fn try_alternate(
        &mut self,
        alternate: SocketAddr,
        msg: &Message<'_>,
        authed: &Authed,
        reply: &mut [u8],
    ) -> Option<usize> {
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
}
