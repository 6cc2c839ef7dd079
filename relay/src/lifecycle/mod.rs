//! The relay process's life, top to bottom: load the settings, start the
//! node (afresh, or taking over a previous process's), serve signals until
//! told to stop, then stop: hand over through systemd's store on a
//! restart, or drain.
//!
//! The parts, in the order they run: `logging`, `start` (the node, the
//! admin listener, the handover socket, the previous process told),
//! `banner`, `serve` (signals, the watchdog, SIGHUP through `reload`,
//! SIGUSR2 and handover requests, each served off the main thread by
//! `handing`), `stop`; `notify` speaks to systemd throughout.

#![warn(clippy::too_many_lines)]

mod banner;
mod handing;
mod logging;
mod notify;
mod reload;
mod serve;
mod start;
mod stop;

use std::process::ExitCode;

use crate::config::{RunArgs, Settings};

/// Runs the relay as `args` say until it is told to stop; what the
/// process exits with.
#[must_use]
pub fn run(args: &RunArgs) -> ExitCode {
    // The program file, read before an upgrade can replace it (SIGUSR2
    // starts it again).
    let program = std::env::current_exe().ok();
    let mut settings = match Settings::load(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ip2p-relay: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let log_filter = logging::init(&settings);
    // Signals go to this thread only: blocked before the workers inherit
    // the mask, then read here.
    let signals = match serve::block_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ip2p-relay: cannot block signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = match start::start(&mut settings) {
        Ok(started) => started,
        Err(code) => return code,
    };
    banner::show(args, &settings, &started);
    // Every socket is bound and every worker runs: tell systemd.
    notify::ready(&started.node);
    let mut node = started.node;
    let reload = reload::Reload::new(args, &settings, log_filter);
    let stop = serve::serve(&mut node, reload, signals, started.handover.as_ref(), started.admin.as_ref(), program);
    stop::stop(node, stop, started.admin, started.fleet)
}
