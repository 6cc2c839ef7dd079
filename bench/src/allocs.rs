//! Allocation setup rate: how fast a server completes the Allocate
//! exchange (401 challenge, authenticated Allocate), with bounded
//! concurrency, and how many allocations it holds at once.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ip2p_client::{Client, ClientError};
use ip2p_wire::AddressFamily;
use serde::Serialize;

use crate::run::Credentials;

/// What an allocation run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AllocSummary {
    /// Allocations attempted.
    pub attempted: usize,
    /// Allocations that succeeded (all held at once at the end).
    pub succeeded: usize,
    /// Failures by STUN error code ("timeout" and "io" for the others).
    pub failures: BTreeMap<String, usize>,
    /// Of those, allocations whose relayed address is IPv6.
    pub relayed_ipv6: usize,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Successful allocations per second.
    pub per_second: f64,
    /// The Allocate exchange of a successful allocation (the 401 challenge
    /// and the authenticated request), microseconds: median.
    pub latency_p50_us: u64,
    /// 99th percentile.
    pub latency_p99_us: u64,
    /// Slowest.
    pub latency_max_us: u64,
}

/// What an allocation run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Allocations to make.
    pub count: usize,
    /// Allocations in progress at once.
    pub concurrency: usize,
    /// Ask for IPv6 relayed addresses instead of IPv4 ones.
    pub ipv6: bool,
    /// How long to hold them all before deleting them.
    pub hold: Duration,
}

/// Makes `count` allocations on `server`, `concurrency` at a time, keeps
/// them all (for `hold`, or until `stop`), then deletes them.
///
/// # Errors
/// A socket cannot be created.
pub fn allocs(
    server: SocketAddr,
    credentials: &Credentials,
    options: &Options,
    stop: &AtomicBool,
) -> io::Result<AllocSummary> {
    let Options { count, concurrency, ipv6, hold } = *options;
    let family = ipv6.then_some(AddressFamily::IPV6);
    let next = AtomicUsize::new(0);
    let ipv6_granted = AtomicUsize::new(0);
    let failures = Mutex::new(BTreeMap::<String, usize>::new());
    let held = Mutex::new(Vec::<Client>::with_capacity(count));
    let took = Mutex::new(Vec::<u64>::with_capacity(count));
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..concurrency.clamp(1, 1024) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) && next.fetch_add(1, Ordering::Relaxed) < count {
                    let (user, password) = credentials.for_session();
                    let asked = Instant::now();
                    let outcome = Client::new(server, &user, &password).map_err(ClientError::Io).and_then(|mut c| {
                        let relayed = c.allocate_families(family, false)?;
                        let us = u64::try_from(asked.elapsed().as_micros()).unwrap_or(u64::MAX);
                        took.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(us);
                        if relayed.first().is_some_and(SocketAddr::is_ipv6) {
                            ipv6_granted.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(c)
                    });
                    match outcome {
                        Ok(c) => held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c),
                        Err(e) => {
                            let key = match &e {
                                ClientError::Rejected(code, _) => code.to_string(),
                                ClientError::Io(e) if e.kind() == io::ErrorKind::TimedOut => "timeout".into(),
                                _ => "io".into(),
                            };
                            *failures
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .entry(key)
                                .or_default() += 1;
                        }
                    }
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    let mut held = held.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let succeeded = held.len();
    let until = Instant::now() + hold;
    if !hold.is_zero() {
        eprintln!("holding {succeeded} allocations for {hold:?}");
    }
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Clean up: delete every allocation, a few threads at a time.
    std::thread::scope(|scope| {
        let per = held.len().div_ceil(8).max(1);
        for chunk in held.chunks_mut(per) {
            scope.spawn(move || {
                for c in chunk {
                    let _ = c.refresh(Some(0));
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(10));
    let mut took = took.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(AllocSummary {
        attempted: count.min(next.load(Ordering::Relaxed)),
        succeeded,
        relayed_ipv6: ipv6_granted.load(Ordering::Relaxed),
        failures: failures.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
        seconds,
        per_second: succeeded as f64 / seconds,
        latency_p50_us: percentile(&mut took, 0.5),
        latency_p99_us: percentile(&mut took, 0.99),
        latency_max_us: percentile(&mut took, 1.0),
    })
}

/// The `q` quantile of `values` (0 when there are none).
fn percentile(values: &mut [u64], q: f64) -> u64 {
    values.sort_unstable();
    let last = values.len().saturating_sub(1);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let at = ((last as f64) * q).round() as usize;
    values.get(at.min(last)).copied().unwrap_or(0)
}
