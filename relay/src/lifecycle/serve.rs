//! Serving: the main thread waits for signals and handover requests while
//! the workers relay. SIGHUP reloads, SIGUSR2 starts a new process to take
//! over, SIGTERM and SIGINT stop; with a systemd watchdog it is pinged at
//! half its interval, but only while every worker answers.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use sd_notify::NotifyState;

use super::notify::{notify, status};
use super::reload::Reload;
use crate::admin::Admin;
use crate::config::Settings;
use crate::handover;
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
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        fds.extend(handover.map(|h| PollFd::new(h.as_fd(), PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Ok(0) => {
                beat_once(node, watchdog.is_some());
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
        let (signalled, asked) = (ready(0), ready(1));
        if let Some(h) = handover.filter(|_| asked)
            && hand_over(node, h.as_fd(), admin.map(Admin::listener))
        {
            return Stop::HandedOver;
        }
        if !signalled {
            continue;
        }
        let info = match signals.read_signal() {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading a signal failed; shutting down");
                return Stop::Failed;
            }
        };
        match i32::try_from(info.ssi_signo).ok().and_then(|n| Signal::try_from(n).ok()) {
            Some(Signal::SIGUSR2) => upgrade(node.settings(), program.as_ref()),
            Some(Signal::SIGHUP) => {
                // systemd 253 and later want the time with RELOADING=1.
                let mut reloading = vec![NotifyState::Reloading];
                reloading.extend(NotifyState::monotonic_usec_now().ok());
                notify(&reloading);
                reload.run(node);
                notify(&[NotifyState::Ready, NotifyState::Status(&status(node))]);
            }
            signal => {
                tracing::info!(?signal, "shutting down");
                return Stop::Signal(signal, signals);
            }
        }
    }
}

/// The beat: the watchdog pinged when every worker answered (a stuck
/// worker stops the pings and systemd restarts the service), and STATUS=
/// refreshed.
fn beat_once(node: &Node, watchdog: bool) {
    let alive = node.stats().len() == node.workers();
    if watchdog && alive {
        notify(&[NotifyState::Watchdog]);
    } else if !alive {
        tracing::error!("a worker did not answer: withholding the watchdog ping");
    }
    notify(&[NotifyState::Status(&status(node))]);
}

/// Serves a handover request waiting at `listener`; `true` when the new
/// process serves now (under systemd it is the service from here on).
fn hand_over(node: &Node, listener: BorrowedFd<'_>, admin: Option<BorrowedFd<'_>>) -> bool {
    let secret = node.settings().turn.credentials.nonce_secret;
    match handover::serve_one(listener, &node.handle(), &secret, admin) {
        Ok(Some(pid)) => {
            notify(&[NotifyState::MainPid(pid)]);
            true
        }
        Ok(None) => {
            notify(&[NotifyState::Status(&status(node))]);
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "handover: cannot accept a request");
            false
        }
    }
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
