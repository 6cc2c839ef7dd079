//! What a run measured: per-session loss, duplicates and reordering from
//! sequence numbers, and latency in an HdrHistogram.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Sequence bookkeeping of one receiving session.
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    seen: Vec<u64>,
    highest: Option<u64>,
    /// Distinct packets received.
    pub unique: u64,
    /// Packets received more than once (extra copies).
    pub duplicates: u64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
}

impl Sequence {
    /// Records packet `seq`.
    pub fn record(&mut self, seq: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let Some(w) = self.seen.get_mut(word) else { return };
        if *w & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        *w |= 1 << bit;
        self.unique += 1;
        match self.highest {
            Some(h) if seq < h => self.reordered += 1,
            _ => self.highest = Some(seq),
        }
    }

    /// Whether packet `seq` arrived.
    #[must_use]
    pub fn has(&self, seq: u64) -> bool {
        self.seen.get((seq / 64) as usize).is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

/// A latency histogram: 1 ns to 60 s, 3 significant digits. Values past
/// 60 s saturate (`saturating_record`).
#[must_use]
#[allow(clippy::expect_used)] // constant, valid bounds
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// The summary of a run, as printed and as written with `--json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// What ran (server, mode, size...).
    pub label: String,
    /// Packets sent after the warm-up.
    pub sent: u64,
    /// Distinct packets received (of those sent after the warm-up).
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// Lost, in percent of sent.
    pub loss_percent: f64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Packets received after a later one.
    pub reordered: u64,
    /// Packets per second achieved (received over the measured time).
    pub packets_per_second: f64,
    /// Payload megabits per second achieved.
    pub mbit_per_second: f64,
    /// Latency percentiles in microseconds.
    pub latency_us: Percentiles,
    /// How late the sender was against its schedule (median, µs): past
    /// [`crate::run::MAX_VALID_LAG_US`], the generator could not keep up
    /// with the rate at all.
    pub send_lag_p50_us: f64,
    /// How late the sender was against its schedule (p99 and max, µs).
    pub send_lag_p99_us: f64,
    /// See `send_lag_p99_us`.
    pub send_lag_max_us: f64,
    /// `false` when the bench fell behind its own schedule (p99 send lag
    /// over 100 µs): the numbers then describe the bench, not the server.
    pub valid: bool,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p99_9: f64,
    /// 99.99th.
    pub p99_99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds.
    #[must_use]
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }
}

/// Writes a histogram in the classic HdrHistogram percentile format
/// (`Value Percentile TotalCount 1/(1-Percentile)`, values in µs), which
/// plotting tools for HdrHistogram read.
#[must_use]
pub fn percentile_file(h: &Histogram<u64>) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 { format!("{:.2}", 1.0 / (1.0 - q)) } else { "inf".to_owned() };
        let _ = writeln!(
            out,
            "{:12.3} {:14.12} {:10} {:>14}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inverse
        );
    }
    let _ = writeln!(out, "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]", h.mean() / 1000.0, h.stdev() / 1000.0);
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / 1000.0, h.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_count_loss_duplicates_and_reordering() {
        let mut s = Sequence::default();
        for seq in [0, 1, 2, 4, 3, 3, 7, 5, 200] {
            s.record(seq);
        }
        assert_eq!(s.unique, 8);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 2, "3 after 4, 5 after 7");
        assert!(s.has(200) && !s.has(6) && !s.has(10_000));
        // Of 201 sent (0..=200), 8 arrived.
        assert_eq!(201 - s.unique, 193);
    }

    #[test]
    fn percentiles_of_known_data() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(close(p.p50, 500.0), "{p:?}");
        assert!(close(p.p90, 900.0), "{p:?}");
        assert!(close(p.p99, 990.0), "{p:?}");
        assert!(close(p.max, 1000.0), "{p:?}");
        assert_eq!(Percentiles::of(&histogram()), Percentiles::default());
        let file = percentile_file(&h);
        assert!(file.lines().nth(2).unwrap().trim_start().starts_with("1.000"), "{file}");
        assert!(file.contains("Total count    =         1000"), "{file}");
    }
}
