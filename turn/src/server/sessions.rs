//! The operator's view of the allocations: each as a [`Session`], and
//! ending one at once.

use std::time::Instant;

use super::Server;
use crate::RelayToken;
use crate::allocation::Allocation;
use crate::session::{End, Session, SessionEvent, SessionId, SessionQuery, Usage};
use crate::timer::Timer;

impl Server {
    /// Every live allocation of this worker as a session at `now` (a walk
    /// over them, for the admin API, never on the packet path).
    #[must_use]
    pub fn sessions(&self, now: Instant) -> Vec<Session> {
        self.sessions_where(now, &SessionQuery::default())
    }

    /// The live sessions `query` asks for at `now`.
    #[must_use]
    pub fn sessions_where(&self, now: Instant, query: &SessionQuery) -> Vec<Session> {
        let wanted = |a: &crate::allocation::Allocation| {
            a.expires > now
                && query.id.is_none_or(|id| a.session == id)
                && query.user.as_deref().is_none_or(|u| *a.account.user == *u)
                && query.client.is_none_or(|ip| a.client.ip() == ip)
        };
        let live = self.slots.iter().enumerate().filter(|(_, a)| a.as_ref().is_some_and(wanted));
        live.filter_map(|(slot, _)| self.session_at(u32::try_from(slot).ok()?, now)).collect()
    }

    /// Slots a walk over the sessions covers (`0..n`, for
    /// [`Self::live_session`]).
    #[must_use]
    pub fn session_slots(&self) -> u32 {
        u32::try_from(self.slots.len()).unwrap_or(u32::MAX)
    }

    /// The live session in slot `slot` at `now`, if any: a walk over them
    /// a slice at a time.
    #[must_use]
    pub fn live_session(&self, slot: u32, now: Instant) -> Option<Session> {
        self.slots.get(slot as usize)?.as_ref().filter(|a| a.expires > now)?;
        self.session_at(slot, now)
    }

    /// Allocation `slot` as a session at `now`.
    pub(super) fn session_at(&self, slot: u32, now: Instant) -> Option<Session> {
        let alloc = self.slots.get(slot as usize)?.as_ref()?;
        let (permissions, channels) = alloc.live(now);
        let relays = alloc.relays.iter().enumerate().filter_map(|(family, r)| Some((family, (*r)?)));
        let (tokens, relayed) = relays.map(|(family, r)| (RelayToken::new(slot, family), r.advertised)).unzip();
        Some(Session {
            id: alloc.session,
            user: alloc.account.user.to_string(),
            username: alloc.username.to_string(),
            listener: alloc.listener,
            client: alloc.client,
            relayed,
            relays: tokens,
            tcp: alloc.tcp,
            started: alloc.started,
            expires: self.unix(alloc.expires),
            permissions,
            channels,
            usage: alloc.usage(),
        })
    }

    /// Queues that allocation `slot` began or (with `end`) is ending, when
    /// session events are on.
    pub(super) fn publish_session(&mut self, slot: u32, now: Instant, end: Option<End>) {
        if !self.config.session_events {
            return;
        }
        let Some(session) = self.session_at(slot, now) else { return };
        self.session_events.push_back(match end {
            None => SessionEvent::Started(session),
            Some(end) => SessionEvent::Ended(session, end),
        });
    }

    /// The next session that began or ended, oldest first (with
    /// [`crate::Config::session_events`]; the caller must take them).
    pub fn poll_session_event(&mut self) -> Option<SessionEvent> {
        self.session_events.pop_front()
    }

    /// Ends every live session at `now` but those `going_on` (elsewhere:
    /// a handover moved them), queueing its end as `end` (the node stops):
    /// what a usage log then records. Their sockets are the datapath's to
    /// close.
    pub fn end_all(&mut self, now: Instant, end: End, going_on: impl Fn(SessionId) -> bool) {
        for slot in 0..u32::try_from(self.slots.len()).unwrap_or(u32::MAX) {
            let ends = |a: &Allocation| a.expires > now && !going_on(a.session);
            if self.slots.get(slot as usize).is_some_and(|a| a.as_ref().is_some_and(ends)) {
                self.publish_session(slot, now, Some(end));
            }
        }
    }

    /// Adds `usage`, what a mirror of relay socket `token` carried for
    /// session `id` (the XDP fast path), to the session's own count, when
    /// the mirror lets go of it. `false` when the session has ended.
    pub fn credit(&mut self, token: RelayToken, id: SessionId, usage: Usage) -> bool {
        let Some(Some(alloc)) = self.slots.get_mut(token.slot()) else { return false };
        if alloc.session != id {
            return false;
        }
        alloc.usage = alloc.usage.plus(usage);
        true
    }

    /// Ends session `id` at `now` as its expiry would (relay sockets
    /// closed, ports freed, quota released) the next time this worker
    /// looks at its timers, at once: its client's requests find no
    /// allocation from here on (a Refresh gets 437). `false` when no live
    /// session of this worker has that id.
    pub fn end_session(&mut self, now: Instant, id: SessionId) -> bool {
        let found = self.slots.iter().position(|a| a.as_ref().is_some_and(|a| a.session == id && a.expires > now));
        found.is_some_and(|slot| self.end_early(u32::try_from(slot).unwrap_or(u32::MAX), now, End::Killed))
    }

    /// Ends every live session of `user` (the user part of a REST
    /// username) as [`Self::end_session`] does, for `end`: how many.
    pub fn end_sessions_of(&mut self, now: Instant, user: &str, end: End) -> usize {
        let of_user = |a: &Option<crate::allocation::Allocation>| {
            a.as_ref().is_some_and(|a| &*a.account.user == user && a.expires > now)
        };
        let slots: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, a)| of_user(a))
            .filter_map(|(s, _)| u32::try_from(s).ok())
            .collect();
        slots.into_iter().filter(|&slot| self.end_early(slot, now, end)).count()
    }

    /// Ends allocation `slot` at `now` for `end`: out of its client's
    /// reach at once, its sockets closed at the next look at the timers.
    fn end_early(&mut self, slot: u32, now: Instant, end: End) -> bool {
        let Some(Some(alloc)) = self.slots.get_mut(slot as usize) else { return false };
        self.by_client.remove(&(alloc.listener, alloc.client));
        self.timers.reset(alloc.expires, now, Timer::Allocation(slot));
        alloc.expires = now;
        alloc.ended = Some(end);
        self.publish_view(slot);
        true
    }
}
