//! The new process's side: what it took over, from systemd's store or
//! from the process at the handover socket, and starting the node on it.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::pack::Unpacked;
use super::{exchange, fdstore};
use crate::config::Settings;
use crate::node::{Inherited, Node};

/// What a new process got from the old one.
#[derive(Debug)]
pub struct TakenOver {
    /// The connection to the old process, for [`TakenOver::report`].
    conn: Option<OwnedFd>,
    /// Or the names of what systemd's file descriptor store held, removed
    /// from it by [`TakenOver::report`].
    stored: Vec<String>,
    pub(crate) inherited: Inherited,
    /// The old process's nonce secret.
    pub nonce_secret: [u8; 32],
    /// The listen addresses (UDP and TCP) as the old process had them.
    pub listen: Vec<SocketAddr>,
    /// Its TLS addresses.
    pub tls_listen: Vec<SocketAddr>,
    /// Allocations taken over.
    pub allocations: usize,
    /// The old process's admin HTTP listener, if it had one.
    pub admin: Option<std::net::TcpListener>,
    /// The old process's ip2p version.
    pub writer: String,
}

impl TakenOver {
    /// The node a previous process left in systemd's file descriptor
    /// store, if this process was given one at start. `Some(Err)`: it was
    /// unusable (a snapshot damaged or from a later version, descriptors
    /// missing because the store was too small); its descriptors are
    /// closed and removed from the store, and the node starts afresh.
    #[must_use]
    pub fn from_store() -> Option<io::Result<Self>> {
        let (names, unpacked) = fdstore::take()?;
        match unpacked {
            Ok(unpacked) => Some(Ok(Self::new(None, names, unpacked))),
            Err(e) => {
                fdstore::remove(&names);
                Some(Err(e))
            }
        }
    }

    /// Asks the process listening at `path` to hand its node over, and
    /// takes its sockets and allocations. On failure the old process is
    /// told (it goes on serving).
    ///
    /// # Errors
    /// Nothing listens there, or what came is not a usable handover
    /// (another boot, a later snapshot version, malformed, sockets
    /// missing).
    pub fn from_process(path: &Path) -> io::Result<Self> {
        let (conn, unpacked) = exchange::ask(path)?;
        Ok(Self::new(Some(conn), Vec::new(), unpacked))
    }

    fn new(conn: Option<OwnedFd>, stored: Vec<String>, unpacked: Unpacked) -> Self {
        let (inherited, nonce_secret, allocations, writer, admin) = unpacked;
        let first = inherited.workers.first().map(|w| &w.sockets);
        let listen: Vec<SocketAddr> =
            first.map(|w| w.udp.iter().filter_map(|s| s.local_addr().ok()).collect()).unwrap_or_default();
        let tls_listen = first
            .map(|w| w.streams.iter().skip(listen.len()).filter_map(|s| s.local_addr().ok()).collect())
            .unwrap_or_default();
        Self { conn, stored, inherited, nonce_secret, listen, tls_listen, allocations, admin, writer }
    }

    /// Starts the node on what was taken over. The old process's workers,
    /// listen addresses and (unless one is configured) nonce secret win
    /// over the configuration's: its clients are on them.
    ///
    /// # Errors
    /// As [`crate::node::start`].
    pub fn start(&mut self, settings: &mut Settings) -> io::Result<Node> {
        let workers = std::mem::take(&mut self.inherited.workers);
        if settings.engine.workers != workers.len()
            || settings.listen != self.listen
            || settings.tls_listen != self.tls_listen
        {
            tracing::info!(
                workers = workers.len(),
                listen = ?self.listen,
                tls = ?self.tls_listen,
                "taking over the previous process's workers and listeners (the configuration's differ)"
            );
        }
        settings.engine.workers = workers.len();
        settings.listen.clone_from(&self.listen);
        settings.tls_listen.clone_from(&self.tls_listen);
        if settings.nonce_secret_generated {
            settings.turn.credentials.nonce_secret = self.nonce_secret;
        } else if settings.turn.credentials.nonce_secret != self.nonce_secret {
            tracing::warn!("auth.nonce_secret changed: clients get a new nonce (438) at their next request");
        }
        let counters = std::mem::take(&mut self.inherited.counters);
        let revocations = std::mem::take(&mut self.inherited.revocations);
        crate::node::start_with(settings, Some(Inherited { workers, counters, revocations }), Vec::new())
    }

    /// Tells the old process whether this one serves now (it exits) or
    /// not (it goes on).
    ///
    /// # Errors
    /// The old process is gone.
    pub fn report(self, started: Result<(), &str>) -> io::Result<()> {
        // systemd's store lets go of its copies either way: they would
        // keep the sockets open, and a later start must not find them.
        fdstore::remove(&self.stored);
        let Some(conn) = &self.conn else { return Ok(()) };
        exchange::tell(conn.as_fd(), started)
    }
}
