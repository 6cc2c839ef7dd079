//! The core's one timer structure: when each allocation expires and when
//! each EVEN-PORT reservation lapses, ordered by deadline. A refresh moves
//! its allocation's entry instead of adding one, so the table holds exactly
//! one entry per live allocation and reservation, however many requests
//! come (quinn's `TimerTable` keeps the same bound).

use std::collections::BTreeSet;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The allocation in this slot expires.
    Allocation(u32),
    /// The reservation with this token lapses.
    Reservation([u8; 8]),
}

/// Deadlines, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Timers(BTreeSet<(Instant, Timer)>);

impl Timers {
    /// Sets `timer` to fire at `at`.
    pub(crate) fn set(&mut self, at: Instant, timer: Timer) {
        self.0.insert((at, timer));
    }

    /// Removes `timer`, set for `at`.
    pub(crate) fn cancel(&mut self, at: Instant, timer: Timer) {
        self.0.remove(&(at, timer));
    }

    /// Moves `timer` from `from` to `to`.
    pub(crate) fn reset(&mut self, from: Instant, to: Instant, timer: Timer) {
        self.cancel(from, timer);
        self.set(to, timer);
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.first().map(|(at, _)| *at)
    }

    /// Takes the earliest timer if it is due by `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next()? > now {
            return None;
        }
        self.0.pop_first().map(|(_, t)| t)
    }

    /// Timers set.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn resetting_keeps_one_entry_and_due_timers_come_in_order() {
        let t0 = crate::testing::t0();
        let s = Duration::from_secs(1);
        let mut t = Timers::default();
        t.set(t0 + 10 * s, Timer::Allocation(1));
        t.set(t0 + 5 * s, Timer::Reservation([7; 8]));
        let mut at = t0 + 10 * s;
        for i in 1..=1000 {
            let next = t0 + (10 + i) * s;
            t.reset(at, next, Timer::Allocation(1));
            at = next;
        }
        assert_eq!(t.len(), 2, "a thousand refreshes, still one entry");
        assert_eq!(t.next(), Some(t0 + 5 * s));
        assert_eq!(t.pop_due(t0 + 4 * s), None);
        assert_eq!(t.pop_due(t0 + 2000 * s), Some(Timer::Reservation([7; 8])));
        assert_eq!(t.pop_due(t0 + 2000 * s), Some(Timer::Allocation(1)));
        assert_eq!(t.pop_due(t0 + 2000 * s), None);
        t.set(at, Timer::Allocation(2));
        t.cancel(at, Timer::Allocation(2));
        assert_eq!(t.len(), 0);
    }
}
