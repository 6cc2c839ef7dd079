//! Busy polling (`busy_poll_us`, `busy_poll_adaptive`): whether an idle
//! worker polls for work a while before it sleeps.

use std::time::{Duration, Instant};

/// Whether a worker polls for work instead of sleeping (`busy_poll_us`,
/// `busy_poll_adaptive`): a packet that comes while it polls costs no
/// wake-up, but polling keeps the core busy.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Polling {
    /// How long it polls (zero: it sleeps at once).
    window: Duration,
    /// Only while work keeps coming within `window` of the last (else after
    /// any work).
    adaptive: bool,
    /// Until when it polls.
    until: Option<Instant>,
    /// When it last found work.
    last: Option<Instant>,
}

impl Polling {
    pub(crate) fn new(window: Duration, adaptive: bool) -> Self {
        Self { window, adaptive, ..Self::default() }
    }

    /// Work came at `now`: it polls for more before it sleeps again, for
    /// `window`. When adaptive, only if this work came within `window` of
    /// the last: while packets keep coming that close, polling costs less
    /// than a sleep and a wake-up each; once the line goes quiet for a
    /// window, the worker sleeps, and at each packet after that until two
    /// come that close again.
    pub(crate) fn worked(&mut self, now: Instant) {
        if self.window.is_zero() {
            return;
        }
        let close = self.last.is_some_and(|last| now.saturating_duration_since(last) <= self.window);
        self.last = Some(now);
        self.until = (close || !self.adaptive).then(|| now + self.window);
    }

    /// Whether it polls at `now`.
    pub(crate) fn polls(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_polling_polls_while_work_comes_close_and_sleeps_when_it_does_not() {
        let (t0, us) = (Instant::now(), Duration::from_micros);
        let mut p = Polling::new(us(20), true);
        p.worked(t0);
        assert!(!p.polls(t0), "one packet out of the blue: sleep");
        p.worked(t0 + us(10));
        assert!(p.polls(t0 + us(10)) && p.polls(t0 + us(29)) && !p.polls(t0 + us(30)));
        // Quiet for longer than the window: the next packet sleeps again.
        p.worked(t0 + us(100));
        assert!(!p.polls(t0 + us(100)));
        let mut fixed = Polling::new(us(20), false);
        fixed.worked(t0);
        assert!(fixed.polls(t0 + us(19)) && !fixed.polls(t0 + us(20)));
        let mut off = Polling::new(Duration::ZERO, true);
        off.worked(t0);
        off.worked(t0);
        assert!(!off.polls(t0));
    }
}
