//! The admin HTTP listener: `/metrics` for Prometheus, `/healthz` and
//! `/readyz` for service managers and load balancers, `/status` as JSON for
//! people, the API under `/api/v1` for operators and applications.
//!
//! It is a small HTTP/1.1 server on one thread of its own (never a
//! worker's), an event loop over non-blocking sockets with httparse for
//! the requests, because it must stay up under abuse without costing the
//! relay: at most [`MAX_CONNECTIONS`] connections (more are closed at
//! once), requests of at most [`MAX_REQUEST`] bytes with no body but a
//! POST's to the API (at most 4 KiB), a deadline to read a request and one
//! to write the answer, one request per connection. `/metrics`, `/status`
//! and the API name users and addresses, the API ends sessions, revokes
//! users and mints TURN credentials, and `/selftest` (a page that tests
//! the relay from the browser that opens it, with `/selftest/config` and
//! the credentials API behind it) uses it: with `admin.token` set they
//! answer only the token, as `Authorization: Bearer <token>` or, for
//! browsers, HTTP Basic with the token as password; `/healthz` and
//! `/readyz` say only ok or not and stay open for probes, on a connection
//! budget of their own. Without a token the pages answer only requests for
//! an address or localhost, and off loopback only `/metrics` is served of
//! them. It binds to loopback by default.
//!
//! The parts: this file (the listener's handle, [`Admin`]), `http` (the
//! event loop and its limits), `routes` (which request gets what, and who
//! may see it), `pages` (`/status` and the self-test's JSON), `api` (the
//! sessions API under `/api/v1`), `grants` (revocations and credentials),
//! `fleet` (the fleet's nodes), `response` (writing an HTTP answer).

#![warn(clippy::too_many_lines)]

mod api;
mod fleet;
mod grants;
/// What the API reads of a request, each as its route reads it (for the
/// fuzz target): the list's filters, a body as each POST reads it, the
/// last path segment as a user name.
pub(crate) fn api_inputs(query: &str, body: &[u8], path: &str) {
    let _ = api::parse_filter(query);
    grants::read_bodies(body);
    let _ = grants::decode_user(path.rsplit('/').next().unwrap_or_default());
}
mod http;
mod pages;
mod response;
pub(crate) mod routes;

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use mio::Waker;

use self::http::HttpLoop;
pub use self::http::{MAX_CONNECTIONS, MAX_REQUEST, PROBE_CONNECTIONS};
use crate::node::NodeHandle;

/// A running admin listener; stops when dropped.
pub struct Admin {
    addr: SocketAddr,
    waker: std::sync::Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    /// Its listening socket again, for a handover.
    handover: std::os::fd::OwnedFd,
}

impl Admin {
    /// Binds `addr` and serves `node`'s endpoints until dropped; with a
    /// `token`, `/metrics` and `/status` ask for it.
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local...).
    pub fn start(addr: SocketAddr, node: NodeHandle, token: Option<String>) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?;
        Self::serve(listener, node, token)
    }

    /// [`Admin::start`] on a listener already bound (one a previous
    /// process handed over).
    ///
    /// # Errors
    /// The listener cannot be polled, or the thread cannot be spawned.
    pub fn serve(listener: std::net::TcpListener, node: NodeHandle, token: Option<String>) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let handover = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
        let addr = listener.local_addr()?;
        let (http, waker) = HttpLoop::new(listener, node, token)?;
        let thread = std::thread::Builder::new().name("ip2p-admin".into()).spawn(move || http.run())?;
        Ok(Self { addr, waker, thread: Some(thread), handover })
    }

    /// Its listening socket, for a handover.
    #[must_use]
    pub fn listener(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.handover)
    }

    /// The address it serves on (the port resolved when 0 was asked).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
