//! The systemd notification protocol: READY, STATUS, RELOADING, STOPPING,
//! WATCHDOG and MAINPID, when systemd started the process
//! (`NOTIFY_SOCKET`); a no-op otherwise.

use sd_notify::NotifyState;

use crate::config::DatapathKind;
use crate::node::Node;

/// Tells systemd `states`.
pub(super) fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// READY=1, with the status line.
pub(super) fn ready(node: &Node) {
    notify(&[NotifyState::Ready, NotifyState::Status(&status(node))]);
}

/// The STATUS= line: what an operator sees in `systemctl status`.
pub(super) fn status(node: &Node) -> String {
    let datapath = match node.datapath() {
        DatapathKind::IoUring => "io_uring",
        _ => "epoll",
    };
    format!("{} allocations, {} workers, {datapath} datapath", node.allocations(), node.workers())
}
