//! Log lines for events that a client (or anyone sending packets) can cause
//! at will: a few lines an interval, then a count. A flood of bad
//! connections or refused requests costs a line every few seconds, never a
//! line per event; the metrics count every one of them anyway.

use std::time::{Duration, Instant};

/// How often a summary may be written.
const INTERVAL: Duration = Duration::from_secs(10);

/// Admits up to `burst` lines per interval; past that, events are counted
/// and reported by the next line admitted.
#[derive(Debug, Clone)]
pub struct LogLimit {
    burst: u32,
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limit of `burst` lines every ten seconds.
    #[must_use]
    pub const fn new(burst: u32) -> Self {
        Self { burst, window: None, used: 0, suppressed: 0 }
    }

    /// Whether to log this event at `now`. `Some(n)`: log it, and say that
    /// `n` like it went unlogged before it; `None`: count it silently.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.window.is_none_or(|start| now.saturating_duration_since(start) >= INTERVAL) {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_costs_a_few_lines_per_interval() {
        let t0 = crate::testing::t0();
        let mut l = LogLimit::new(3);
        let logged: Vec<_> = (0..1000).filter_map(|_| l.admit(t0)).collect();
        assert_eq!(logged, [0, 0, 0]);
        assert_eq!(l.admit(t0 + Duration::from_secs(9)), None);
        assert_eq!(l.admit(t0 + INTERVAL), Some(998), "the next window's first line reports the rest");
        assert_eq!(l.admit(t0 + INTERVAL), Some(0));
    }
}
