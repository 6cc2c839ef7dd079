//! What a node takes from the machine: descriptors (the open file limit,
//! and the allocation limit it implies), CPUs to pin workers to, and each
//! worker's share of the relay ports.

use crate::config::Settings;
use ip2p_turn::QuotaLimits;

/// Worker `i`'s share of the relay port range: contiguous slices, so each
/// worker can hand out even ports on its own.
pub(super) fn port_share(lo: u16, hi: u16, workers: usize, i: usize) -> (u16, u16) {
    let span = usize::from(hi - lo) + 1;
    let start = usize::from(lo) + span * i / workers;
    let end = usize::from(lo) + span * (i + 1) / workers - 1;
    (u16::try_from(start).unwrap_or(hi), u16::try_from(end).unwrap_or(hi))
}

/// The core's configuration for worker `id` of `workers`: its share of
/// the relay ports.
pub(super) fn worker_config(settings: &Settings, id: usize, workers: usize) -> ip2p_turn::Config {
    let mut config = settings.turn.clone();
    let (lo, hi) = port_share(*settings.turn.ports.start(), *settings.turn.ports.end(), workers, id);
    config.ports = lo..=hi;
    config
}

/// File descriptors kept aside from allocations: listeners, the admin
/// listener, io_uring, connections being accepted, files the process opens.
/// A quarter of the limit, between 32 and 256.
fn fd_reserve(nofile: u64) -> u64 {
    (nofile / 4).clamp(32, 256)
}

/// The node's allocation limits: the configured ones, with the node's
/// total, when not configured, as many as the relay ports and the open
/// file limit allow.
pub(super) fn quota_limits(settings: &Settings) -> QuotaLimits {
    let total = settings.max_allocations.unwrap_or_else(|| {
        let ports = relay_ports(settings) as u64;
        // A relay socket each (a dual allocation or a reservation takes
        // one more; connections take theirs too: EMFILE is answered 508).
        let nofile =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
        let workers = settings.engine.workers as u64;
        let listeners = (settings.listen.len() * 2 + settings.tls_listen.len()) as u64 * workers;
        let fds = nofile.saturating_sub(fd_reserve(nofile) + listeners).max(1);
        usize::try_from(ports.min(fds)).unwrap_or(usize::MAX)
    });
    QuotaLimits { total, per_user: settings.user_quota, per_prefix: settings.ip_quota }
}

/// Relay ports the node can hand out: its port range on each relay
/// address (at least one).
pub(super) fn relay_ports(settings: &Settings) -> usize {
    let span = usize::from(settings.turn.ports.end() - settings.turn.ports.start()) + 1;
    span * settings.turn.relay_ips.iter().map(Vec::len).sum::<usize>().max(1)
}

/// Every allocation holds a relay socket: raise the soft fd limit to the
/// hard one, as servers with many sockets do.
pub(super) fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open file limit"),
            Err(e) => tracing::warn!(error = %e, limit = soft, "cannot raise the open file limit"),
        }
    }
}

/// The CPUs this process may run on (taskset, cgroups, systemd's
/// CPUAffinity): workers are pinned within them, never outside.
pub(super) fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else { return Vec::new() };
    (0..nix::sched::CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect()
}

/// Pins the calling thread to `cpu`, if the system lets it.
pub(super) fn pin_to_cpu(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        // Best effort: a container may not allow it.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_shares_cover_the_range_without_overlap() {
        for (lo, hi, n) in [(49152, 65535, 2), (50000, 50000, 1), (1000, 1006, 3), (1, 65535, 7)] {
            let mut next = lo;
            for i in 0..n {
                let (a, b) = port_share(lo, hi, n, i);
                assert_eq!(a, next);
                assert!(a <= b);
                next = b.wrapping_add(1);
            }
            assert_eq!(next, hi.wrapping_add(1));
        }
    }
}
