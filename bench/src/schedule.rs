//! The open-loop schedule: packet `k` is due at `start + k / rate`, whatever
//! the replies do; in bursts of `b` (a video frame's packets), packet `k`
//! is due with its burst, at `start + (k / b) * b / rate`. A sender that falls behind sends late packets at once
//! (their latency counts from when they were due) and records its lag, so
//! a run where the bench itself was the bottleneck is reported as such.

use std::time::Duration;

/// A fixed-rate schedule for one sender thread.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Between bursts.
    interval_ns: f64,
    burst: u64,
    next: u64,
    end: u64,
}

impl Schedule {
    /// `rate` packets per second for `duration`.
    #[must_use]
    pub fn new(rate: f64, duration: Duration) -> Self {
        Self::bursts(rate, 1, duration)
    }

    /// `rate` packets per second for `duration`, in bursts of `burst`.
    #[must_use]
    pub fn bursts(rate: f64, burst: u64, duration: Duration) -> Self {
        let burst = burst.max(1);
        let interval_ns = burst as f64 * 1e9 / rate.max(1e-9);
        let end = (duration.as_nanos() as f64 / interval_ns).floor() as u64 * burst;
        Self { interval_ns, burst, next: 0, end }
    }

    /// When packet `k` is due, in nanoseconds from the start.
    #[must_use]
    pub fn due_ns(&self, k: u64) -> u64 {
        ((k / self.burst) as f64 * self.interval_ns) as u64
    }

    /// Which burst packet `k` belongs to.
    #[must_use]
    pub fn burst_of(&self, k: u64) -> u64 {
        k / self.burst
    }

    /// Packets in the whole run.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.end
    }

    /// Whether every packet has been handed out.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.next >= self.end
    }

    /// Hands out the packets due by `elapsed_ns` (at most `max`), as the
    /// range of their indices.
    pub fn take_due(&mut self, elapsed_ns: u64, max: u64) -> std::ops::Range<u64> {
        let due = (((elapsed_ns as f64 / self.interval_ns).floor() as u64 + 1) * self.burst).min(self.end);
        let start = self.next;
        let stop = due.max(start).min(start + max);
        self.next = stop;
        start..stop
    }

    /// Nanoseconds from the start until the next packet is due; `None` when
    /// finished.
    #[must_use]
    pub fn next_due_ns(&self) -> Option<u64> {
        (!self.finished()).then(|| self.due_ns(self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_due_at_fixed_intervals() {
        let mut s = Schedule::new(1000.0, Duration::from_secs(1));
        assert_eq!(s.total(), 1000);
        assert_eq!(s.due_ns(0), 0);
        assert_eq!(s.due_ns(10), 10_000_000);
        assert_eq!(s.take_due(0, 100), 0..1, "packet 0 is due at once");
        assert_eq!(s.take_due(2_500_000, 100), 1..3, "packets 1 and 2 by 2.5 ms");
        assert_eq!(s.take_due(2_600_000, 100), 3..3);
        assert_eq!(s.next_due_ns(), Some(3_000_000));
    }

    #[test]
    fn a_late_sender_catches_up_in_bounded_batches_and_stops_at_the_end() {
        let mut s = Schedule::new(1000.0, Duration::from_millis(100));
        assert_eq!(s.take_due(50_000_000, 32), 0..32);
        assert_eq!(s.take_due(50_000_000, 32), 32..51);
        assert_eq!(s.take_due(10_000_000_000, 1000), 51..100);
        assert!(s.finished());
        assert_eq!(s.next_due_ns(), None);
        assert_eq!(s.take_due(u64::MAX / 2, 10), 100..100);
    }

    #[test]
    fn bursts_are_due_together_at_the_burst_rate() {
        let mut s = Schedule::bursts(1000.0, 10, Duration::from_secs(1));
        assert_eq!(s.total(), 1000);
        assert_eq!((s.due_ns(0), s.due_ns(9), s.due_ns(10)), (0, 0, 10_000_000));
        assert_eq!((s.burst_of(9), s.burst_of(10)), (0, 1));
        assert_eq!(s.take_due(0, 100), 0..10, "the first burst at once");
        assert_eq!(s.take_due(9_999_999, 100), 10..10);
        assert_eq!(s.take_due(10_000_000, 4), 10..14, "a burst may be handed out in parts");
        assert_eq!(s.take_due(10_000_000, 100), 14..20);
    }
}
