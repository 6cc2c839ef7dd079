//! The capacity search: the highest rate at which a server stays within
//! the user's bounds (loss, p99 latency), made to hold on a shared, noisy
//! machine. A stall of the machine only ever makes a run look worse, so a
//! failed step is run again (up to [`Plan::attempts`] runs) and holds if
//! any run holds. The search first finds a rate that holds (going down
//! from the start if need be), then grows the rate until a step fails,
//! then narrows the bracket to [`Plan::resolution`] by geometric
//! bisection: the answer is not a point of a coarse grid. (A step that
//! loses twenty times what the bound allows fails at once: no stall does
//! that.) A step the
//! generator could not keep up with says so: the limit is the bench's.

use std::fmt;

use crate::run::MAX_VALID_LAG_US;
use crate::stats::Summary;

/// Loss this many times the bound fails a step at once.
const GROSS_LOSS: f64 = 20.0;

/// What a step must stay within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Loss, percent of packets sent.
    pub max_loss: f64,
    /// p99 latency, microseconds.
    pub max_p99_us: f64,
}

/// How the search goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// The first rate tried, packets per second.
    pub start: f64,
    /// The highest rate tried.
    pub max_rate: f64,
    /// Each growing step multiplies the rate by this.
    pub growth: f64,
    /// Runs of a step before it counts as failed.
    pub attempts: u32,
    /// The bracket is narrowed until its top is within this fraction of
    /// its bottom (0.02: 2%).
    pub resolution: f64,
    /// Halvings below the start before the search gives up.
    pub halvings: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Self { start: 10_000.0, max_rate: 1_000_000.0, growth: 1.5, attempts: 3, resolution: 0.02, halvings: 6 }
    }
}

/// What one run at a rate showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Within the bounds.
    Holds,
    /// Lost more than allowed (percent).
    Loss(f64),
    /// p99 latency above the bound (microseconds).
    Latency(f64),
    /// The generator could not keep up with the rate: half its packets
    /// or more left late (its median send lag, microseconds, past
    /// [`MAX_VALID_LAG_US`]). The run measured the bench, not the server.
    /// (A stall that delays only some packets is not this: latency counts
    /// from each packet's due time, so it shows in the p99 instead.)
    Behind(f64),
}

impl Verdict {
    /// The verdict on a run's summary.
    #[must_use]
    pub fn of(s: &Summary, bounds: &Bounds) -> Self {
        if s.sent == 0 || s.send_lag_p50_us > MAX_VALID_LAG_US {
            Self::Behind(s.send_lag_p50_us)
        } else if s.loss_percent > bounds.max_loss {
            Self::Loss(s.loss_percent)
        } else if s.latency_us.p99 > bounds.max_p99_us {
            Self::Latency(s.latency_us.p99)
        } else {
            Self::Holds
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Holds => f.write_str("holds"),
            Self::Loss(p) => write!(f, "loss {p:.3}%"),
            Self::Latency(us) => write!(f, "p99 {us:.0} us"),
            Self::Behind(lag) => write!(f, "generator behind (send lag p50 {lag:.0} us)"),
        }
    }
}

/// One run of the search.
#[derive(Debug, Clone)]
pub struct Step {
    /// The rate asked for.
    pub rate: f64,
    /// Which run at this rate (1 first).
    pub attempt: u32,
    /// What it showed.
    pub verdict: Verdict,
    /// Its figures.
    pub summary: Summary,
}

/// How the search ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The highest rate that held, and why the next one up failed (with
    /// its rate; `None`: the search reached the highest rate allowed, or
    /// was stopped).
    Found { rate: f64, received: f64, above: Option<(f64, Verdict)> },
    /// No rate held, down to the lowest tried; what the lowest showed.
    None { lowest: f64, verdict: Verdict },
    /// Stopped before any rate held.
    Stopped,
}

/// Steps and outcome.
#[derive(Debug, Clone)]
pub struct Search {
    pub steps: Vec<Step>,
    pub outcome: Outcome,
}

impl Search {
    /// The one line that ends the search: `capacity: N pkt/s (...)` or
    /// `capacity: none (...)`, the reason in the parentheses.
    #[must_use]
    pub fn line(&self, bounds: &Bounds, plan: &Plan) -> String {
        let within = format!("loss <= {}%, p99 <= {} us", bounds.max_loss, bounds.max_p99_us);
        match &self.outcome {
            Outcome::Found { rate, received, above: Some((hi, Verdict::Behind(lag))) } => format!(
                "capacity: {rate:.0} pkt/s ({within}; {received:.0} pkt/s received; bench-bound: at {hi:.0} pkt/s \
                 the generator fell behind its schedule (send lag p50 {lag:.0} us), so this is the bench's \
                 ceiling, and the server's capacity is at least this)"
            ),
            Outcome::Found { rate, received, above: Some((hi, why)) } => format!(
                "capacity: {rate:.0} pkt/s ({within}; {received:.0} pkt/s received; {hi:.0} pkt/s failed {} runs: {why})",
                plan.attempts
            ),
            Outcome::Found { rate, received, above: None } => {
                format!("capacity: {rate:.0} pkt/s ({within}; {received:.0} pkt/s received; the highest rate tried)")
            }
            Outcome::None { lowest, verdict } => format!(
                "capacity: none ({within} held at no rate from {:.0} down to {lowest:.0} pkt/s, {} runs each; \
                 at {lowest:.0}: {verdict})",
                plan.start.min(plan.max_rate),
                plan.attempts
            ),
            Outcome::Stopped => "capacity: none (stopped before a rate held)".to_owned(),
        }
    }
}

impl Search {
    /// As `--json` writes it: the line, the figure (`capacity`: null
    /// when none), whether the bench bound it, and every step.
    #[must_use]
    pub fn json(&self, bounds: &Bounds, plan: &Plan) -> serde_json::Value {
        let (capacity, received, bench_bound) = match &self.outcome {
            Outcome::Found { rate, received, above } => {
                (Some(*rate), Some(*received), matches!(above, Some((_, Verdict::Behind(_)))))
            }
            _ => (None, None, false),
        };
        let steps: Vec<serde_json::Value> = self
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "rate": s.rate, "attempt": s.attempt, "verdict": s.verdict.to_string(), "summary": s.summary,
                })
            })
            .collect();
        serde_json::json!({
            "line": self.line(bounds, plan),
            "capacity": capacity,
            "received": received,
            "bench_bound": bench_bound,
            "steps": steps,
        })
    }
}

/// Runs the search. `probe(rate, attempt)` runs the load at `rate` and
/// gives its summary, or `None` when the user stopped the bench (the
/// search ends with what it found); `seen` hears of each step as it ends.
///
/// # Errors
/// The probe's.
pub fn search<E>(
    plan: &Plan,
    bounds: &Bounds,
    mut probe: impl FnMut(f64, u32) -> Result<Option<Summary>, E>,
    mut seen: impl FnMut(&Step),
) -> Result<Search, E> {
    let mut steps = Vec::new();
    // A rate's verdict: holds if any of its runs holds; else the last
    // run's. `None`: stopped.
    let mut at = |rate: f64, steps: &mut Vec<Step>| -> Result<Option<(Verdict, f64)>, E> {
        let mut last = None;
        for attempt in 1..=plan.attempts.max(1) {
            let Some(summary) = probe(rate, attempt)? else { return Ok(None) };
            let verdict = Verdict::of(&summary, bounds);
            let received = summary.packets_per_second;
            let step = Step { rate, attempt, verdict: verdict.clone(), summary };
            seen(&step);
            steps.push(step);
            if verdict == Verdict::Holds {
                return Ok(Some((verdict, received)));
            }
            // Loss far past the bound is the server's, not a stall's (a
            // 40 ms stall loses 2% of a 2 s step): no use running it again.
            let gross = matches!(verdict, Verdict::Loss(l) if l > GROSS_LOSS * bounds.max_loss.max(0.01));
            last = Some((verdict, received));
            if gross {
                break;
            }
        }
        Ok(last)
    };
    let done = |steps, outcome| Ok(Search { steps, outcome });

    // A rate that holds: the start, or below it.
    let mut rate = plan.start.min(plan.max_rate).max(1.0);
    let mut above: Option<(f64, Verdict)> = None;
    let (mut lo, mut received) = loop {
        let Some((verdict, got)) = at(rate, &mut steps)? else { return done(steps, Outcome::Stopped) };
        if verdict == Verdict::Holds {
            break (rate, got);
        }
        let lowest = plan.start.min(plan.max_rate) / f64::from(1u32 << plan.halvings.min(20));
        if rate / 2.0 < lowest * 0.999 {
            return done(steps, Outcome::None { lowest: rate, verdict });
        }
        above = Some((rate, verdict));
        rate /= 2.0;
    };
    let found = |lo, received, above| Outcome::Found { rate: lo, received, above };

    // Up until a step fails (unless a failure above is known already).
    while above.is_none() && lo < plan.max_rate {
        let next = (lo * plan.growth.max(1.01)).min(plan.max_rate);
        let Some((verdict, got)) = at(next, &mut steps)? else { return done(steps, found(lo, received, None)) };
        if verdict == Verdict::Holds {
            (lo, received) = (next, got);
        } else {
            above = Some((next, verdict));
        }
    }

    // Narrow the bracket.
    while let Some((hi, _)) = &above
        && *hi / lo > 1.0 + plan.resolution
    {
        let mid = (lo * *hi).sqrt();
        let Some((verdict, got)) = at(mid, &mut steps)? else { break };
        if verdict == Verdict::Holds {
            (lo, received) = (mid, got);
        } else {
            above = Some((mid, verdict));
        }
    }
    done(steps, found(lo, received, above))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Percentiles;

    const BOUNDS: Bounds = Bounds { max_loss: 0.1, max_p99_us: 5000.0 };

    /// A simulated server: it holds up to `capacity`; above, it loses
    /// packets. The generator falls behind above `ceiling`. `stall(n)`
    /// says whether run `n` (counting from 0) hits a stall of the machine.
    struct Sim {
        capacity: f64,
        ceiling: f64,
        stall: fn(usize) -> bool,
        runs: usize,
    }

    impl Sim {
        fn new(capacity: f64) -> Self {
            Self { capacity, ceiling: f64::INFINITY, stall: |_| false, runs: 0 }
        }

        fn run(&mut self, rate: f64) -> Summary {
            let stalled = (self.stall)(self.runs);
            self.runs += 1;
            let loss = if rate > self.capacity { 100.0 * (rate - self.capacity) / rate } else { 0.0 };
            let p99 = if stalled { 8000.0 } else { 200.0 };
            let lag = if rate > self.ceiling { 500.0 } else { 10.0 };
            Summary {
                sent: 1000,
                loss_percent: loss,
                packets_per_second: rate.min(self.capacity),
                latency_us: Percentiles { p99, ..Percentiles::default() },
                // A stall delays a few packets (the p99), a generator at
                // its ceiling most of them (the median).
                send_lag_p50_us: lag,
                send_lag_p99_us: if stalled { 3000.0 } else { lag },
                valid: lag <= 100.0 && !stalled,
                ..Summary::default()
            }
        }

        fn search(&mut self, plan: &Plan) -> Search {
            search::<()>(plan, &BOUNDS, |rate, _| Ok(Some(self.run(rate))), |_| {}).unwrap()
        }
    }

    /// Whether `found` is within 2% under `capacity`.
    fn near(found: f64, capacity: f64) -> bool {
        (capacity / 1.02..=capacity).contains(&found)
    }

    fn rate(s: &Search) -> f64 {
        match s.outcome {
            Outcome::Found { rate, .. } => rate,
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn it_finds_the_capacity_within_the_resolution_off_any_grid() {
        let plan = Plan::default();
        for capacity in [37_000.0, 95_000.0, 95_500.0, 250_000.0] {
            let found = rate(&Sim::new(capacity).search(&plan));
            assert!(near(found, capacity), "{capacity}: {found}");
        }
        let (a, b) = (rate(&Sim::new(95_000.0).search(&plan)), rate(&Sim::new(97_500.0).search(&plan)));
        assert!(a < b, "servers 2.6% apart get different figures: {a} {b}");
    }

    #[test]
    fn a_stall_is_run_again_and_does_not_end_the_search() {
        // Every third run stalls (p99 8 ms over the 5 ms bound), the very
        // first among them: the old search said "even the first step failed".
        let mut sim = Sim { stall: |n| n % 3 == 0, ..Sim::new(120_000.0) };
        let s = sim.search(&Plan::default());
        let found = rate(&s);
        assert!(near(found, 120_000.0), "{found}");
        assert!(s.steps.iter().any(|st| st.verdict == Verdict::Latency(8000.0) && st.attempt == 1));
        assert!(s.line(&BOUNDS, &Plan::default()).starts_with("capacity: "));
    }

    #[test]
    fn a_start_above_the_capacity_goes_down_first() {
        let plan = Plan { start: 200_000.0, ..Plan::default() };
        let s = Sim::new(30_000.0).search(&plan);
        let found = rate(&s);
        assert!(near(found, 30_000.0), "{found}");
        assert!(s.steps.first().is_some_and(|st| st.rate == 200_000.0));
    }

    #[test]
    fn a_generator_behind_makes_the_figure_the_benchs() {
        let mut sim = Sim { ceiling: 60_000.0, ..Sim::new(1e9) };
        let s = sim.search(&Plan::default());
        let found = rate(&s);
        assert!(near(found, 60_000.0), "{found}");
        let line = s.line(&BOUNDS, &Plan::default());
        assert!(line.contains("bench-bound") && line.contains("generator fell behind"), "{line}");
    }

    #[test]
    fn when_nothing_holds_it_says_why() {
        let mut sim = Sim { stall: |_| true, ..Sim::new(1e9) };
        let plan = Plan { halvings: 2, ..Plan::default() };
        let s = sim.search(&plan);
        assert_eq!(s.outcome, Outcome::None { lowest: 2500.0, verdict: Verdict::Latency(8000.0) });
        assert_eq!(s.steps.len(), 9, "three rates, three runs each");
        let line = s.line(&BOUNDS, &plan);
        assert!(line.starts_with("capacity: none (") && line.contains("p99 8000 us"), "{line}");
    }

    #[test]
    fn loss_at_a_threshold_is_judged_against_the_users_bound() {
        // Loses 0.05% everywhere (under the 0.1% bound), more above 80k.
        let mut runs = 0;
        let s = search::<()>(
            &Plan::default(),
            &BOUNDS,
            |rate, _| {
                runs += 1;
                let loss = if rate > 80_000.0 { 0.5 } else { 0.05 };
                Ok(Some(Summary { sent: 1000, loss_percent: loss, packets_per_second: rate, ..Summary::default() }))
            },
            |_| {},
        )
        .unwrap();
        let found = rate(&s);
        assert!(near(found, 80_000.0), "{found}");
        assert!(matches!(s.outcome, Outcome::Found { above: Some((_, Verdict::Loss(l))), .. } if l == 0.5));
        assert!(runs < 40, "bounded: {runs} runs");
        // 0.5% is five times the bound: run three times; 100% loss once.
        let failing: Vec<f64> = s.steps.iter().filter(|st| st.rate > 80_000.0).map(|st| st.rate).collect();
        assert!(!failing.is_empty() && failing.iter().all(|r| failing.iter().filter(|x| *x == r).count() == 3));
        let gross = Sim::new(10_000.0).search(&Plan { start: 40_000.0, ..Plan::default() });
        assert_eq!(gross.steps.iter().filter(|st| st.rate == 40_000.0).count(), 1, "75% loss fails at once");
    }

    #[test]
    fn it_stops_at_the_highest_rate_and_when_told() {
        let plan = Plan { max_rate: 50_000.0, ..Plan::default() };
        let s = Sim::new(1e9).search(&plan);
        assert_eq!(s.outcome, Outcome::Found { rate: 50_000.0, received: 50_000.0, above: None });
        let s = search::<()>(&plan, &BOUNDS, |_, _| Ok(None), |_| {}).unwrap();
        assert_eq!(s.outcome, Outcome::Stopped);
    }
}
