//! How allocations end: at their expiry (or an end set early, as the
//! operator's), at their client's word, with their stream connection;
//! what goes with them.

use std::net::SocketAddr;
use std::time::Instant;

use super::Server;
use crate::session::End;
use crate::timer::Timer;
use crate::{ListenerId, RelayToken, Sockets};

impl Server {
    /// The stream connection `from` on `listener` closed: its allocation,
    /// if any, goes with it (RFC 8656 §3.1: the allocation is tied to the
    /// 5-tuple, and a TCP 5-tuple ends with its connection).
    pub fn client_closed(&mut self, now: Instant, listener: ListenerId, from: SocketAddr, sockets: &mut impl Sockets) {
        self.forget_parked(listener, from);
        if let Some(&slot) = self.by_client.get(&(listener, from)) {
            self.remove(now, slot, sockets, End::Closed);
        }
    }

    /// When [`Self::handle_timeout`] next has work, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A parked Allocate is judged by the fallback when overdue.
        [self.timers.next(), self.admissions.deadline()].into_iter().flatten().min()
    }

    /// Expires allocations whose lifetime ended by `now`, closing their
    /// relay sockets, and releases reservations that lapsed.
    pub fn handle_timeout(&mut self, now: Instant, sockets: &mut impl Sockets) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Allocation(slot) => {
                    let alloc = self.slots.get(slot as usize).and_then(Option::as_ref);
                    let ended = alloc.and_then(|a| a.ended);
                    let by_credential = alloc.is_some_and(|a| a.ends_with_credential);
                    self.stats.allocations_expired += u64::from(ended.is_none());
                    let end = ended.unwrap_or(if by_credential { End::CredentialExpired } else { End::Expired });
                    self.remove(now, slot, sockets, end);
                }
                // Lapsed: its port goes back (if no one claimed it). The
                // allocation keeps the token for a retransmitted Allocate's
                // answer; cancelling it again when it goes does nothing.
                Timer::Reservation(token) => self.shared.cancel_reservation(&token),
            }
        }
    }

    /// Deletes an allocation: its relay sockets, ports, its reservation if
    /// no one claimed it, its timer and its quota.
    pub(super) fn remove(&mut self, now: Instant, slot: u32, sockets: &mut impl Sockets, end: End) {
        self.publish_session(slot, now, Some(end));
        self.index_relays(slot, false);
        self.publish_relays_gone(slot);
        let Some(alloc) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        // An allocation ended early left the 5-tuple then: it may be
        // another one's by now.
        if self.by_client.get(&(alloc.listener, alloc.client)) == Some(&slot) {
            self.by_client.remove(&(alloc.listener, alloc.client));
        }
        self.timers.cancel(alloc.expires, Timer::Allocation(slot));
        if let Some((token, until)) = alloc.reservation {
            self.timers.cancel(until, Timer::Reservation(token));
            self.shared.cancel_reservation(&token);
        }
        for (family, relay) in alloc.relays.iter().enumerate() {
            if let Some(relay) = relay {
                sockets.close_relay(RelayToken::new(slot, family));
                self.ports.remove(&relay.bound);
            }
        }
        self.shared.quotas.release(&alloc.account);
        self.free.push(slot);
        if let Some(unlogged) = self.logs.deleted.admit(now) {
            let why = end.as_str();
            tracing::info!(client = %alloc.client, user = %alloc.username, why, unlogged, "allocation deleted");
        }
    }
}
