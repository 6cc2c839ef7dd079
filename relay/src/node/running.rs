//! A running node: its worker threads, its handle, and the settings it
//! runs with, which a reload changes in place.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::handle::NodeHandle;
use super::resources::quota_limits;
use crate::config::{DatapathKind, Settings};
use crate::datapath::stats::WorkerStats;
use crate::datapath::worker::Command;

/// A running node; its workers stop when it is dropped.
#[derive(Debug)]
pub struct Node {
    pub(super) threads: Vec<Option<JoinHandle<io::Result<()>>>>,
    pub(super) handle: NodeHandle,
    /// What the node runs with: a reload is compared against it.
    pub(super) settings: Settings,
    /// Stops the watch on the host's addresses.
    pub(super) local_watch: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The usage log's writer, when records are written: it ends after
    /// the workers, having written what they queued.
    pub(super) usage: Option<crate::usage::UsageLog>,
}

impl Node {
    /// The addresses the node listens on (ports resolved when 0 was asked).
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.handle.listen
    }

    /// The addresses the node serves TLS on.
    #[must_use]
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.handle.tls_listen
    }

    /// Applies what a reloaded configuration changes, without dropping an
    /// allocation or a packet: credentials, REST secrets, the peer policy,
    /// lifetimes, channel numbers, SOFTWARE and the quotas. Returns the keys
    /// that changed but need a restart (listen addresses, workers, relay
    /// addresses and ports...), which keep their running values.
    pub fn reconfigure(&mut self, new: &Settings) -> Vec<&'static str> {
        let restart = needs_restart(&self.settings, new);
        let old = &self.settings;
        // Live: everything else of the core's configuration, with the
        // running relay addresses and each worker's port share.
        let mut settings = new.clone();
        settings.turn.events = self.handle.xdp.is_some();
        settings.turn.session_events = self.usage.is_some();
        // SIGHUP: logrotate renamed the file.
        if let Some(usage) = &self.usage {
            usage.reopen();
        }
        settings.turn.relay_ips.clone_from(&old.turn.relay_ips);
        settings.turn.policy.host.clone_from(&old.turn.policy.host);
        settings.turn.ports = old.turn.ports.clone();
        if new.nonce_secret_generated {
            // A fresh random one would make every client's nonce stale.
            settings.turn.credentials.nonce_secret = old.turn.credentials.nonce_secret;
        }
        // The workers' configuration, with what a fleet adds.
        self.handle.run_with(settings.clone());
        self.handle.shared.quotas.set_limits(quota_limits(new));
        // What needs a restart keeps its running value.
        settings.xdp.clone_from(&old.xdp);
        settings.listen.clone_from(&old.listen);
        settings.tls_listen.clone_from(&old.tls_listen);
        settings.engine = old.engine.clone();
        settings.connections = old.connections.clone();
        settings.admin = old.admin;
        settings.tls.clone_from(&old.tls);
        settings.usage.clone_from(&old.usage);
        self.settings = settings;
        restart
    }

    /// The settings the node runs with (after reloads).
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A handle other threads can hold.
    #[must_use]
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// See [`NodeHandle::drain`].
    pub fn drain(&self) {
        self.handle.drain();
    }

    /// See [`NodeHandle::workers`].
    #[must_use]
    pub fn workers(&self) -> usize {
        self.handle.workers()
    }

    /// See [`NodeHandle::datapath`].
    #[must_use]
    pub fn datapath(&self) -> DatapathKind {
        self.handle.datapath
    }

    /// See [`NodeHandle::allocations`].
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.handle.allocations()
    }

    /// See [`NodeHandle::stats`].
    #[must_use]
    pub fn stats(&self) -> Vec<WorkerStats> {
        self.handle.stats()
    }

    /// Stops every worker and waits for them.
    ///
    /// # Errors
    /// The first error a worker stopped with.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop()
    }

    pub(super) fn stop(&mut self) -> io::Result<()> {
        if let Some(stop) = &self.local_watch {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for w in self.handle.workers.iter() {
            w.send(Command::Shutdown);
        }
        let mut result = Ok(());
        for thread in &mut self.threads {
            if let Some(thread) = thread.take() {
                let r = thread.join().unwrap_or_else(|_| Err(io::Error::other("worker panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
        }
        // The workers queued their last records: written before it ends.
        drop(self.usage.take());
        result
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The keys `new` changes that take effect only at a restart.
fn needs_restart(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let (e, n) = (&old.engine, &new.engine);
    let binds = |s: &Settings| s.turn.relay_ips.clone().map(|f| f.iter().map(|r| r.bind).collect::<Vec<_>>());
    fn files(s: &Settings) -> Option<(&std::path::Path, &std::path::Path)> {
        s.tls.as_ref().map(crate::tls::Tls::files)
    }
    let keys = [
        ("listen", old.listen != new.listen),
        ("tls.listen", old.tls_listen != new.tls_listen),
        ("workers", e.workers != n.workers),
        ("datapath", e.datapath != n.datapath),
        ("io_uring_buffers", e.io_uring_buffers != n.io_uring_buffers),
        ("busy_poll_us", e.busy_poll != n.busy_poll),
        ("busy_poll_adaptive", e.busy_poll_adaptive != n.busy_poll_adaptive),
        ("gso", e.gso != n.gso),
        ("xdp", old.xdp != new.xdp),
        ("relay.ips", binds(old) != binds(new)),
        ("relay.external_ips", old.turn.relay_ips != new.turn.relay_ips),
        ("relay.ports", old.turn.ports != new.turn.ports),
        ("connections", old.connections != new.connections),
        ("admin.listen", old.admin != new.admin),
        ("tls.cert", files(old) != files(new)),
        ("usage", old.usage != new.usage),
    ];
    keys.into_iter().filter(|(_, changed)| *changed).map(|(key, _)| key).collect()
}
