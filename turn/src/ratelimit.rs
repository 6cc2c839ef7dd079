//! Response rate limiting for requests that are not authenticated (yet):
//! Binding, the 401 challenge, 438 and the errors before authentication.
//! Their sources are unverified, so a relay that answered every one would
//! reflect floods at whoever an attacker names. As DNS servers' RRL does
//! (BIND, Knot), each source prefix (/24 for IPv4, /56 for IPv6) gets a
//! token bucket in a fixed-size table: nothing is allocated per source, and
//! a prefix that shares a slot with another simply takes it over.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::time::Instant;

/// Slots in the table (a power of two): a few hundred kilobytes per worker
/// would be too much for nothing; 4096 prefixes active within a second or
/// two is a busy node.
const SLOTS: usize = 4096;
/// Tokens are kept in thousandths.
const MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Hash of the prefix that holds the slot; 0 when free.
    key: u64,
    /// Thousandths of a response left.
    tokens: u64,
    at: Option<Instant>,
}

/// Per-prefix token buckets of `rate` responses a second, a second's worth
/// at once.
#[derive(Debug)]
pub(crate) struct ResponseLimiter {
    /// Made at the first unauthenticated answer (a worker that never gives
    /// one, and every short-lived core of the tests, holds none).
    slots: Vec<Slot>,
    hasher: foldhash::fast::FixedState,
}

impl ResponseLimiter {
    /// A table whose prefix hash is keyed by `seed` (a node's own random
    /// value, so that no one can aim at another prefix's slot).
    pub(crate) fn new(seed: u64) -> Self {
        Self { slots: Vec::new(), hasher: foldhash::fast::FixedState::with_seed(seed) }
    }

    /// Whether a response to `ip` may go at `now`, at `rate` a second per
    /// prefix (0: no limit).
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Instant, rate: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let key = self.key(ip);
        let capacity = u64::from(rate) * MILLI;
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); SLOTS];
        }
        let Some(slot) = self.slots.get_mut(usize::try_from(key).unwrap_or(0) & (SLOTS - 1)) else { return true };
        if slot.key != key {
            *slot = Slot { key, tokens: capacity, at: Some(now) };
        }
        let elapsed = slot.at.map_or(0, |at| now.saturating_duration_since(at).as_micros());
        // rate a second = rate * MILLI thousandths per 1e6 microseconds.
        let refill = u64::try_from(elapsed.saturating_mul(u128::from(rate)) / 1000).unwrap_or(u64::MAX);
        if refill > 0 {
            slot.tokens = slot.tokens.saturating_add(refill).min(capacity);
            slot.at = Some(now);
        }
        if slot.tokens >= MILLI {
            slot.tokens -= MILLI;
            true
        } else {
            false
        }
    }

    /// The prefix's hash, never 0.
    fn key(&self, ip: IpAddr) -> u64 {
        let mut h = self.hasher.build_hasher();
        match super::policy::canonical(ip) {
            IpAddr::V4(a) => {
                let [x, y, z, _] = a.octets();
                (4u8, [x, y, z]).hash(&mut h);
            }
            IpAddr::V6(a) => {
                let o = a.octets();
                (6u8, o.first_chunk::<7>()).hash(&mut h);
            }
        }
        h.finish().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn each_prefix_gets_its_rate_and_refills_over_time() {
        let t0 = crate::testing::t0();
        let mut l = ResponseLimiter::new(1);
        let admitted =
            |l: &mut ResponseLimiter, who: &str, at: Instant| (0..100).filter(|_| l.admit(ip(who), at, 10)).count();
        assert_eq!(admitted(&mut l, "192.0.2.1", t0), 10, "a second's worth at once");
        assert_eq!(admitted(&mut l, "192.0.2.200", t0), 0, "the same /24");
        assert_eq!(admitted(&mut l, "198.51.100.1", t0), 10, "another /24 has its own");
        assert_eq!(admitted(&mut l, "192.0.2.1", t0 + Duration::from_millis(500)), 5, "half a second refills half");
        assert_eq!(admitted(&mut l, "192.0.2.1", t0 + Duration::from_secs(60)), 10, "never more than a second's worth");
        assert_eq!(admitted(&mut l, "2001:db8:0:ff00::1", t0), 10);
        assert_eq!(admitted(&mut l, "2001:db8:0:ffab::1", t0), 0, "the same /56");
        assert_eq!(admitted(&mut l, "2001:db8:0:100::1", t0), 10, "another /56");
        assert_eq!(admitted(&mut l, "::ffff:192.0.2.7", t0 + Duration::from_secs(120)), 10, "mapped is the IPv4 /24");
        assert!((0..1000).all(|_| l.admit(ip("192.0.2.1"), t0, 0)), "0 is no limit");
    }

    #[test]
    fn many_prefixes_cost_no_memory() {
        let t0 = crate::testing::t0();
        let mut l = ResponseLimiter::new(2);
        for i in 0..100_000u32 {
            l.admit(IpAddr::from((i << 8).to_be_bytes()), t0, 5);
        }
        assert_eq!(l.slots.len(), SLOTS);
    }
}
