//! Stopping: a `systemctl restart` hands the node over through systemd's
//! file descriptor store; any other stop (or a store that refused) drains:
//! new allocations are refused while the others go on, for
//! `drain.timeout` after SIGTERM, a tenth of it after SIGINT.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use sd_notify::NotifyState;

use super::notify::{notify, status};
use super::serve::Stop;
use crate::admin::Admin;
use crate::fleet::Agent;
use crate::handover::fdstore;
use crate::node::Node;

/// Stops as `stop` says, then the admin listener, the fleet's agent (the
/// node leaves the registry unless another process goes on as it) and
/// the workers; what the process exits with.
pub(super) fn stop(node: Node, stop: Stop, admin: Option<Admin>, fleet: Option<Agent>) -> ExitCode {
    notify(&[NotifyState::Stopping]);
    let mut leave = !matches!(stop, Stop::HandedOver);
    if let Stop::Signal(signal, signals) = stop {
        let stored = signal == Some(Signal::SIGTERM) && node.settings().fd_store && store(&node, admin.as_ref());
        if !stored {
            let timeout = node.settings().drain_timeout;
            drain(&node, if signal == Some(Signal::SIGINT) { timeout / 10 } else { timeout }, &signals);
        }
        leave = !stored;
    }
    drop(admin);
    if let Some(fleet) = fleet {
        fleet.stop(leave);
    }
    match node.shutdown() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "a worker failed");
            ExitCode::FAILURE
        }
    }
}

/// Whether the node went to systemd's store: only while systemd restarts
/// this service and has a store for it.
fn store(node: &Node, admin: Option<&Admin>) -> bool {
    let Some(max) = fdstore::restarting() else { return false };
    let secret = node.settings().turn.credentials.nonce_secret;
    fdstore::store(&node.handle(), max, &secret, admin.map(Admin::listener)).is_ok()
}

/// Drains: new allocations are refused while the existing ones keep
/// relaying, until none is left or `timeout` passes. Another SIGINT or
/// SIGTERM ends the wait at once.
fn drain(node: &Node, timeout: Duration, signals: &SignalFd) {
    node.drain();
    let deadline = Instant::now() + timeout;
    tracing::info!(allocations = node.allocations(), timeout_s = timeout.as_secs_f32(), "draining");
    let mut shown = None;
    while node.allocations() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::info!(allocations = node.allocations(), "drain timeout: closing the remaining allocations");
            return;
        }
        if shown != Some(node.allocations()) {
            // Only on change: the notification socket is not a log.
            shown = Some(node.allocations());
            notify(&[NotifyState::Status(&format!("draining: {}", status(node)))]);
        }
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(left.min(Duration::from_millis(100))).unwrap_or(PollTimeout::ZERO);
        let hup = Signal::SIGHUP as u32;
        let stop = |s: Option<nix::sys::signalfd::siginfo>| s.is_some_and(|i| i.ssi_signo != hup);
        if poll(&mut fds, wait).is_ok_and(|n| n > 0) && signals.read_signal().is_ok_and(stop) {
            tracing::info!("second stop signal: closing the remaining allocations");
            return;
        }
    }
    tracing::info!("drained: no allocation left");
}
