//! A handover in progress, served on a thread of its own: the counterpart
//! may be slow or silent for as long as the handover's steps allow, and
//! meanwhile the main thread goes on reading signals and beating the
//! watchdog. The main thread polls [`Handing::fd`] and takes the outcome.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::admin::Admin;
use crate::handover;
use crate::node::Node;

/// A handover request being served.
pub(super) struct Handing {
    outcome: Receiver<Option<u32>>,
    done: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
}

impl Handing {
    /// Takes the request waiting at `listener` and serves it on a thread.
    ///
    /// # Errors
    /// No request could be accepted, or no thread started.
    pub(super) fn start(listener: BorrowedFd<'_>, node: &Node, admin: Option<&Admin>) -> io::Result<Self> {
        let conn = handover::accept(listener)?;
        let admin = admin.map(|a| a.listener().try_clone_to_owned()).transpose()?;
        let (handle, secret) = (node.handle(), node.settings().turn.credentials.nonce_secret);
        let done = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?);
        let (send, outcome) = crossbeam_channel::bounded(1);
        let wake = done.clone();
        let thread = std::thread::Builder::new().name("ip2p-handover".into()).spawn(move || {
            let _ = send.send(handover::serve(&conn, &handle, &secret, admin));
            drop(conn);
            let _ = wake.write(1);
        })?;
        Ok(Self { outcome, done, thread: Some(thread) })
    }

    /// Readable once the handover is over.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.done.as_fd()
    }

    /// The outcome once it is over: `Some(Some(pid))`, process `pid`
    /// serves now; `Some(None)`, this one goes on; `None`, not over yet.
    pub(super) fn outcome(&mut self) -> Option<Option<u32>> {
        let outcome = self.outcome.try_recv().ok()?;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        Some(outcome)
    }
}
