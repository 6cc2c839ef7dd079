//! A worker's part of the usage records (`crate::usage`): the core's
//! session starts and ends, each with what the XDP fast path and RFC 6062
//! data connections carried for it, and every `usage.interval` an interim
//! record of each live session, [`crate::usage::INTERIM_BATCH`] sessions a
//! loop round. The records are formatted and written by the log's thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use ip2p_turn::{End, SessionEvent, SessionId, Usage};

use super::worker::Worker;
use crate::usage::{INTERIM_BATCH, Kind};

impl Worker {
    /// Hands over what the core says of its sessions since the last round
    /// (at `now`), and the next slice of an interim pass when one is due
    /// or under way: when it next has work (`now` while a pass runs).
    /// `uncredited`: what the fast path carried for sessions that ended
    /// before their relay left its tables.
    pub(crate) fn record_sessions(&mut self, now: Instant, uncredited: &[(SessionId, Usage)]) -> Option<Instant> {
        let records = self.records.as_ref()?;
        let time = crate::unix_now();
        let realm: Arc<str> = self.server.config().credentials.realm.as_str().into();
        while let Some(event) = self.server.poll_session_event() {
            match event {
                SessionEvent::Started(s) => records.sink.record(Kind::Start, s, &realm, time),
                SessionEvent::Ended(mut s, end) => {
                    for (_, usage) in uncredited.iter().filter(|(id, _)| *id == s.id) {
                        s.usage = s.usage.plus(*usage);
                    }
                    // Ended live (the node stops): its relays are still in
                    // the tables; a TCP allocation's data connections'
                    // totals are kept until its relay is used again.
                    s.usage = s.usage.plus(self.beside_the_core(&s));
                    records.sink.record(Kind::Stop(end.as_str()), s, &realm, time);
                }
            }
        }
        let cursor = match records.cursor {
            Some(c) => c,
            None if now >= records.next => 0,
            None => return Some(records.next),
        };
        let end = cursor.saturating_add(INTERIM_BATCH).min(self.server.session_slots());
        for slot in cursor..end {
            if let Some(mut s) = self.server.live_session(slot, now) {
                s.usage = s.usage.plus(self.beside_the_core(&s));
                records.sink.record(Kind::Interim, s, &realm, time);
            }
        }
        let records = self.records.as_mut()?;
        if cursor == 0 {
            records.next = now + records.interval;
        }
        records.cursor = (end < self.server.session_slots()).then_some(end);
        Some(if records.cursor.is_some() { now } else { records.next })
    }

    /// The node stops: every live session's stop record, as `drained`
    /// when it drained first.
    pub(crate) fn stop_sessions(&mut self) {
        let end = if self.server.draining() { End::Drained } else { End::ShutDown };
        self.end_sessions(end, |_| false);
    }

    /// Handed over: the stop records of the sessions not `going_on` in the
    /// next process (a TLS client's, an RFC 6062 allocation's).
    pub(crate) fn hand_over_sessions(&mut self, going_on: &HashSet<u64>) {
        self.end_sessions(End::HandedOver, |id| going_on.contains(&id.0));
    }

    fn end_sessions(&mut self, end: End, going_on: impl Fn(SessionId) -> bool) {
        if self.records.is_none() {
            return;
        }
        let now = super::now();
        self.server.end_all(now, end, going_on);
        let _ = self.record_sessions(now, &[]);
    }
}
