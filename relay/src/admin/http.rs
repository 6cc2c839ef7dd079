//! The admin listener's HTTP/1.1 loop, on a thread of its own: at most
//! [`MAX_CONNECTIONS`] connections, requests of at most [`MAX_REQUEST`]
//! bytes, a deadline to read a request and one to write the answer, one
//! request per connection. Past the cap, [`PROBE_CONNECTIONS`] more are
//! kept for `/healthz` and `/readyz` alone, each with a short deadline and
//! the oldest still silent giving way to a new one: connections held open
//! to the API cannot fail a liveness probe.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::response::plain;
use super::routes::Routes;
use crate::node::NodeHandle;

/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections past [`MAX_CONNECTIONS`] kept for probes.
pub const PROBE_CONNECTIONS: usize = 8;
/// How long a connection of the probes' budget may take to send its
/// request (a probe sends it at once).
const PROBE_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest request (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

const LISTENER: Token = Token(usize::MAX);
const WAKE: Token = Token(usize::MAX - 1);

/// One client connection: reading its request, then writing the answer.
struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    /// The answer, once there is one, and how much of it went.
    response: Option<(Vec<u8>, usize)>,
    deadline: Instant,
    /// Accepted past the cap: answers probes only.
    probe_only: bool,
}

pub(super) struct HttpLoop {
    poll: Poll,
    listener: TcpListener,
    conns: HashMap<usize, Conn>,
    next: usize,
    routes: Routes,
}

impl HttpLoop {
    /// A loop serving `node`'s pages on `listener`, and what wakes it to
    /// stop.
    pub(super) fn new(
        listener: std::net::TcpListener,
        node: NodeHandle,
        token: Option<String>,
    ) -> io::Result<(Self, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let exposed = !listener.local_addr()?.ip().is_loopback();
        let routes = Routes { node, gate: super::routes::Gate { token, exposed } };
        let mut http = Self { poll, listener: TcpListener::from_std(listener), conns: HashMap::new(), next: 0, routes };
        http.poll.registry().register(&mut http.listener, LISTENER, Interest::READABLE)?;
        Ok((http, waker))
    }

    /// Serves until woken.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(128);
        loop {
            let timeout = self.conns.values().map(|c| c.deadline).min().map(|d| d.saturating_duration_since(now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "admin listener stopped");
                return;
            }
            for event in &events {
                match event.token() {
                    WAKE => return,
                    LISTENER => self.accept(),
                    Token(id) => self.serve(id),
                }
            }
            // Whoever is past its deadline is dropped (closed).
            let now = now();
            self.conns.retain(|_, c| c.deadline > now);
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the next event tries again.
                    tracing::debug!(error = %e, "admin accept failed");
                    return;
                }
            };
            let probe_only = self.conns.values().filter(|c| !c.probe_only).count() >= MAX_CONNECTIONS;
            if probe_only && !self.room_for_a_probe() {
                continue; // closed at once
            }
            self.next = self.next.wrapping_add(1) % (usize::MAX - 2);
            let id = self.next;
            if self.poll.registry().register(&mut stream, Token(id), Interest::READABLE | Interest::WRITABLE).is_ok() {
                let wait = if probe_only { PROBE_READ_TIMEOUT } else { READ_TIMEOUT };
                let conn = Conn { stream, request: Vec::new(), response: None, deadline: now() + wait, probe_only };
                self.conns.insert(id, conn);
            }
        }
    }

    /// Whether the probes' budget has room for one more connection, made
    /// by closing the oldest of its connections that has not sent a whole
    /// request yet when it is full.
    fn room_for_a_probe(&mut self) -> bool {
        let probes = self.conns.values().filter(|c| c.probe_only).count();
        if probes < PROBE_CONNECTIONS {
            return true;
        }
        let silent = self.conns.iter().filter(|(_, c)| c.probe_only && c.response.is_none());
        match silent.min_by_key(|(_, c)| c.deadline).map(|(id, _)| *id) {
            Some(oldest) => self.conns.remove(&oldest).is_some(),
            None => false,
        }
    }

    /// Reads what connection `id` sent, answers once its request is whole,
    /// writes what the socket takes; drops the connection when done or
    /// broken.
    fn serve(&mut self, id: usize) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        if self.step(&mut conn).is_ok_and(|open| open) {
            self.conns.insert(id, conn);
        }
    }

    /// `Ok(true)`: keep the connection for more events.
    fn step(&self, conn: &mut Conn) -> io::Result<bool> {
        if conn.response.is_none() {
            let mut buf = [0u8; 2048];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        conn.request.extend_from_slice(buf.get(..n).unwrap_or_default());
                        if conn.request.len() > MAX_REQUEST {
                            conn.response = Some((plain(431, "request too large\n", &[]), 0));
                            break;
                        }
                        if let Some(response) = self.routes.answer(&conn.request, conn.probe_only) {
                            conn.response = Some((response, 0));
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            conn.deadline = now() + WRITE_TIMEOUT;
        }
        let Some((response, written)) = &mut conn.response else { return Ok(true) };
        while let Some(rest) = response.get(*written..).filter(|r| !r.is_empty()) {
            match conn.stream.write(rest) {
                Ok(0) => return Ok(false),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

fn now() -> Instant {
    Instant::now()
}
