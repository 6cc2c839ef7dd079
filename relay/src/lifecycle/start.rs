//! Start-up: the node, afresh or taken over from a previous process
//! (systemd's file descriptor store first, then `--take-over` at the
//! handover socket); then the admin listener (the previous process's when
//! it had one at the same address) and the handover socket. What can fail
//! comes before the previous process is told that this one serves (it
//! exits then); a failure tells it to go on.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::admin::Admin;
use crate::config::Settings;
use crate::fleet::Agent;
use crate::handover::{self, TakenOver};
use crate::node::{self, Node};

/// What runs once start-up succeeded.
pub(super) struct Started {
    pub(super) node: Node,
    pub(super) admin: Option<Admin>,
    /// The socket handover requests come to, if configured.
    pub(super) handover: Option<OwnedFd>,
    /// The fleet's agent, when the node is in one.
    pub(super) fleet: Option<Agent>,
}

/// Starts everything, or says why not (logged, and printed for whoever
/// ran the command) with the exit code.
pub(super) fn start(settings: &mut Settings) -> Result<Started, ExitCode> {
    let (started, mut taken) = start_node(settings);
    let node = started.map_err(|e| failed(taken.take(), &e, None))?;
    let inherited = taken.as_mut().and_then(|t| t.admin.take());
    let admin = admin(settings, &node, inherited)
        .map_err(|e| failed(taken.take(), &e, Some("admin.listen, --admin ADDR:PORT or off")))?;
    let handover = settings
        .handover_socket
        .as_deref()
        .map(handover::listen)
        .transpose()
        .map_err(|e| failed(taken.take(), &e, Some("handover.socket, --handover-socket PATH")))?;
    let fleet = node.handle().fleet().map(|state| Agent::start(Arc::clone(state), node.handle()));
    let fleet = fleet.transpose().map_err(|e| failed(taken.take(), &e, Some("fleet.redis, --fleet-redis URL")))?;
    if let Some(t) = taken {
        let (allocations, writer) = (t.allocations, t.writer.clone());
        match t.report(Ok(())) {
            Ok(()) => {
                tracing::info!(allocations, from = %writer, version = %crate::VERSION, "took over the previous process's node");
            }
            Err(e) => tracing::warn!(error = %e, "the previous process did not hear that this one serves"),
        }
    }
    Ok(Started { node, admin, handover, fleet })
}

/// The node: what systemd's file descriptor store holds from a restart
/// (unusable, it is let go of and the node starts afresh), else with
/// `--take-over` the node of the process at the handover socket, else a
/// fresh one. With what was taken over, to report to.
fn start_node(settings: &mut Settings) -> (io::Result<Node>, Option<TakenOver>) {
    let stored = TakenOver::from_store().and_then(|t| {
        t.inspect_err(|e| {
            tracing::error!(error = %e, "cannot take over the node in systemd's file descriptor store; starting afresh");
        })
        .ok()
    });
    if let Some(mut t) = stored {
        return (t.start(settings), Some(t));
    }
    let Some(path) = settings.handover_socket.clone().filter(|_| settings.take_over) else {
        // A fleet's revocations are in force from the first packet.
        let revoked = settings.fleet.as_ref().map(crate::fleet::revocations_in_force).unwrap_or_default();
        return (node::start_revoking(settings, revoked), None);
    };
    match TakenOver::from_process(&path) {
        Ok(mut t) => (t.start(settings), Some(t)),
        Err(e) => (Err(cannot_take_over(&path, &e)), None),
    }
}

/// Why `--take-over` found nothing to take over at `path`, with a hint.
fn cannot_take_over(path: &Path, e: &io::Error) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => " (does a relay with this handover.socket run?)",
        _ => " (the running relay goes on serving)",
    };
    io::Error::new(e.kind(), format!("cannot take over at {}: {e}{hint}", path.display()))
}

/// The admin listener, if configured: the one `inherited` from the
/// previous process when it is at the configured address, else bound.
fn admin(settings: &Settings, node: &Node, inherited: Option<TcpListener>) -> io::Result<Option<Admin>> {
    let Some(addr) = settings.admin else { return Ok(None) };
    let same = |l: &TcpListener| {
        l.local_addr().is_ok_and(|a| a.ip() == addr.ip() && (a.port() == addr.port() || addr.port() == 0))
    };
    let token = settings.admin_token.clone();
    let admin = match inherited.filter(same) {
        Some(listener) => Admin::serve(listener, node.handle(), token)?,
        None => Admin::start(addr, node.handle(), token)?,
    };
    let has_token = settings.admin_token.is_some();
    tracing::info!(admin = %admin.local_addr(), token = has_token, "admin listener: /metrics /healthz /readyz /status /selftest");
    if !addr.ip().is_loopback() && !has_token {
        tracing::warn!(
            admin = %addr,
            "the admin listener is not on loopback and has no token: it serves /healthz, /readyz and /metrics \
             only (anyone who reaches it reads the metrics), no /status and no /selftest (it would mint TURN \
             credentials); set admin.token_file (docs/security.md)"
        );
    }
    Ok(Some(admin))
}

/// A start that failed: logged and printed (with the keys to look at),
/// and the previous process, if any, told to go on.
fn failed(taken: Option<TakenOver>, e: &io::Error, keys: Option<&str>) -> ExitCode {
    tracing::error!(error = %e, "cannot start");
    match keys {
        Some(keys) => eprintln!("ip2p-relay: {e} ({keys})"),
        None => eprintln!("ip2p-relay: {e}"),
    }
    if let Some(t) = taken {
        let _ = t.report(Err(&e.to_string()));
    }
    ExitCode::FAILURE
}
