//! Serving: the main thread waits for signals and handover requests while
//! the workers relay. SIGHUP reloads, SIGUSR2 starts a new process to take
//! over, SIGTERM and SIGINT stop; with a systemd watchdog it is pinged at
//! half its interval, but only while every worker answers.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use sd_notify::NotifyState;

use super::handing::Handing;
use super::notify::{notify, status};
use super::reload::Reload;
use crate::admin::Admin;
use crate::config::Settings;
use crate::node::Node;

/// How often STATUS= is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Why [`serve`] returned.
pub(super) enum Stop {
    /// A signal to stop (drain first, or hand over to systemd's store).
    Signal(Option<Signal>, SignalFd),
    /// A new process took the node over: exit at once.
    HandedOver,
    /// Waiting for signals failed: stop at once.
    Failed,
}

/// Blocks the signals this process handles (the threads it starts later
/// inherit the mask) and opens the descriptor they are read from.
pub(super) fn block_signals() -> nix::Result<SignalFd> {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR2] {
        signals.add(s);
    }
    signals.thread_block()?;
    SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC)
}

/// Waits for signals and handover requests until one says stop.
pub(super) fn serve(
    node: &mut Node,
    mut reload: Reload<'_>,
    signals: SignalFd,
    handover: Option<&OwnedFd>,
    admin: Option<&Admin>,
    program: Option<PathBuf>,
) -> Stop {
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
    let beat = watchdog.map_or(STATUS_EVERY, |w| (w / 2).max(Duration::from_millis(10)));
    let timeout = PollTimeout::try_from(beat).unwrap_or(PollTimeout::MAX);
    // A handover being served, and a signal to stop that waits for it.
    let mut handing: Option<Handing> = None;
    let mut stop_after: Option<Signal> = None;
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        match &handing {
            Some(h) => fds.push(PollFd::new(h.fd(), PollFlags::POLLIN)),
            None => fds.extend(handover.map(|h| PollFd::new(h.as_fd(), PollFlags::POLLIN))),
        }
        match poll(&mut fds, timeout) {
            Ok(0) => {
                beat_once(node, watchdog.is_some(), handing.is_some());
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "waiting for signals failed; shutting down");
                return Stop::Failed;
            }
        }
        let ready = |i: usize| fds.get(i).and_then(PollFd::revents).is_some_and(|r| r.contains(PollFlags::POLLIN));
        let (signalled, other) = (ready(0), ready(1));
        drop(fds);
        if other {
            match handing.take() {
                Some(mut h) => match h.outcome() {
                    Some(Some(pid)) => {
                        notify(&[NotifyState::MainPid(pid)]);
                        return Stop::HandedOver;
                    }
                    Some(None) => {
                        notify(&[NotifyState::Status(&status(node))]);
                        if let Some(signal) = stop_after.take() {
                            return Stop::Signal(Some(signal), signals);
                        }
                    }
                    None => handing = Some(h),
                },
                None => handing = handover.and_then(|h| start_handing(h, node, admin)),
            }
        }
        if !signalled {
            continue;
        }
        let signal = match signals.read_signal() {
            Ok(Some(info)) => i32::try_from(info.ssi_signo).ok().and_then(|n| Signal::try_from(n).ok()),
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading a signal failed; shutting down");
                return Stop::Failed;
            }
        };
        match signal {
            Some(Signal::SIGUSR2) if handing.is_some() => tracing::warn!("SIGUSR2: a handover is in progress"),
            Some(Signal::SIGUSR2) => upgrade(node.settings(), program.as_ref()),
            Some(Signal::SIGHUP) => reloaded(node, &mut reload),
            signal if handing.is_some() => {
                tracing::info!(?signal, "stopping once the handover in progress ends");
                stop_after = signal;
            }
            signal => {
                tracing::info!(?signal, "shutting down");
                return Stop::Signal(signal, signals);
            }
        }
    }
}

/// SIGHUP: the configuration read again, with systemd told.
fn reloaded(node: &mut Node, reload: &mut Reload<'_>) {
    // systemd 253 and later want the time with RELOADING=1.
    let mut reloading = vec![NotifyState::Reloading];
    reloading.extend(NotifyState::monotonic_usec_now().ok());
    notify(&reloading);
    reload.run(node);
    notify(&[NotifyState::Ready, NotifyState::Status(&status(node))]);
}

/// Serves the handover request waiting at `listener` on a thread of its
/// own, if it can be taken.
fn start_handing(listener: &OwnedFd, node: &Node, admin: Option<&Admin>) -> Option<Handing> {
    Handing::start(listener.as_fd(), node, admin)
        .inspect_err(|e| tracing::warn!(error = %e, "handover: cannot accept a request"))
        .ok()
}

/// The beat: the watchdog pinged when every worker answered (a stuck
/// worker stops the pings and systemd restarts the service), or while a
/// handover runs (its workers are frozen, for a bounded time), and
/// STATUS= refreshed.
fn beat_once(node: &Node, watchdog: bool, handing: bool) {
    let alive = handing || node.stats().len() == node.workers();
    if watchdog && alive {
        notify(&[NotifyState::Watchdog]);
    } else if !alive {
        tracing::error!("a worker did not answer: withholding the watchdog ping");
    }
    notify(&[NotifyState::Status(&status(node))]);
}

/// SIGUSR2: starts `program` (the file this process was started from,
/// which an upgrade may have replaced) again with the same arguments and
/// `--take-over`; the new process asks at the handover socket, and this
/// one hands over to it there (or goes on if it fails).
fn upgrade(settings: &Settings, program: Option<&PathBuf>) {
    let Some(path) = settings.handover_socket.as_ref() else {
        tracing::warn!("SIGUSR2: no handover.socket configured, nothing to hand over to");
        return;
    };
    let Some(program) = program else { return };
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.iter().any(|a| a == "--take-over") {
        args.push("--take-over".into());
    }
    match std::process::Command::new(program).args(&args).spawn() {
        Ok(mut child) => {
            tracing::info!(program = %program.display(), pid = child.id(), socket = %path.display(), "SIGUSR2: started a new process to take over");
            // Reaped whatever becomes of it; it outlives this process if
            // it takes over.
            std::thread::spawn(move || {
                if let Ok(status) = child.wait()
                    && !status.success()
                {
                    tracing::warn!(%status, "the new process did not take over");
                }
            });
        }
        Err(e) => tracing::warn!(program = %program.display(), error = %e, "SIGUSR2: cannot start a new process"),
    }
}
