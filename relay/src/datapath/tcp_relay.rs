//! RFC 6062 TCP allocations: relayed TCP listeners, connections to and
//! from peers, and the data connections that carry their bytes.
//!
//! TCP allocations are rare (browsers never ask for them; they serve peers
//! that only speak TCP), so they run on threads of their own with blocking
//! I/O, off the workers' packet path: an accept thread per TCP relay, a
//! thread per outgoing connect, and a thread per bound data connection
//! moving bytes both ways with poll(2). A slow side stops the other from
//! being read (back-pressure): TCP bytes are never dropped. The workers'
//! cores decide everything (permissions, policy, who binds what); this
//! module keeps the connections and tells a core what happened with a
//! [`TcpEvent`] on its channel.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EventFd;
use socket2::{Domain, Protocol, Socket, Type};

use super::conn_limits::{ConnLimits, ConnTicket};
use super::now;
use ip2p_turn::{RelayToken, Usage};
use std::sync::atomic::{AtomicU64, Ordering};

/// RFC 6062 §5.2, §5.3: a peer connection waits 30 seconds for its
/// ConnectionBind.
const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection to a peer may take before the Connect gets 447.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered per direction of a data connection before its source is
/// no longer read.
const SPLICE_BUFFER: usize = 256 * 1024;
/// Peer connections (being made, waiting or bound) one allocation may
/// have: past it an incoming peer is refused and a Connect gets 447.
const MAX_CONNECTIONS: usize = 64;

/// What a core hears about its TCP relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpEvent {
    /// A Connect's connection is up (`id`) or failed (`None`).
    Connected {
        /// The relay.
        token: RelayToken,
        /// The peer.
        peer: SocketAddr,
        /// The new connection's ID.
        id: Option<u32>,
    },
    /// A peer connected to the relay: accept or refuse it.
    Incoming {
        /// The relay.
        token: RelayToken,
        /// The peer.
        peer: SocketAddr,
        /// The connection's ID.
        id: u32,
    },
}

/// A worker and one of its relays: an allocation's TCP relay.
type Owner = (usize, RelayToken);

/// A peer connection waiting for its ConnectionBind.
#[derive(Debug)]
struct Waiting {
    owner: Owner,
    peer: SocketAddr,
    stream: TcpStream,
    /// Counted against the client's connection limits until it closes.
    ticket: ConnTicket,
    since: Instant,
    /// The core let it in (always, for a Connect's connection).
    accepted: bool,
    /// A ConnectionBind claimed it; its data connection is on the way.
    bound: bool,
}

/// A bound pair: handles to shut both sockets down from outside.
#[derive(Debug)]
struct Active {
    owner: Owner,
    peer: SocketAddr,
    handles: [TcpStream; 2],
    /// What its splice moved: the allocation's session counts it.
    moved: Arc<Moved>,
    /// The peer connection's and the data connection's places in the
    /// connection limits, given back when the pair ends.
    _tickets: (ConnTicket, Option<ConnTicket>),
}

#[derive(Debug)]
struct Listening {
    /// Tells this listener from a later one of the same owner (a slot and
    /// token are reused once an allocation is gone).
    id: u64,
    username: Box<str>,
    /// The allocation's client: its peer connections count against it.
    client: std::net::IpAddr,
    handle: TcpListener,
}

#[derive(Debug, Default)]
struct Table {
    next_listener: u64,
    listening: HashMap<Owner, Listening>,
    connecting: HashSet<(Owner, SocketAddr)>,
    waiting: HashMap<u32, Waiting>,
    active: HashMap<u32, Active>,
    /// Bytes moved by an owner's data connections that ended, while it
    /// lives; then its last total, until the next listener of that owner.
    moved: HashMap<Owner, Usage>,
}

/// Payload bytes a data connection moved each way (the application's
/// bytes, TLS taken off): a stream has no datagrams to count.
#[derive(Debug, Default)]
struct Moved {
    to_peer: AtomicU64,
    from_peer: AtomicU64,
}

impl Moved {
    fn usage(&self) -> Usage {
        Usage {
            bytes_to_peers: self.to_peer.load(Ordering::Relaxed),
            bytes_from_peers: self.from_peer.load(Ordering::Relaxed),
            ..Usage::default()
        }
    }
}

/// How a worker is told of events.
#[derive(Debug)]
pub(crate) struct Notifier {
    pub(crate) events: Sender<TcpEvent>,
    pub(crate) wake: Arc<EventFd>,
}

/// The node's TCP relays, shared by its workers.
#[derive(Debug)]
pub(crate) struct TcpRelays {
    table: Mutex<Table>,
    workers: Vec<Notifier>,
    limits: Arc<ConnLimits>,
}

impl TcpRelays {
    pub(crate) fn new(workers: Vec<Notifier>, limits: Arc<ConnLimits>) -> Arc<Self> {
        Arc::new(Self { table: Mutex::new(Table::default()), workers, limits })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self, worker: usize, event: TcpEvent) {
        if let Some(n) = self.workers.get(worker)
            && n.events.send(event).is_ok()
        {
            let _ = n.wake.write(1);
        }
    }

    /// A connection ID no live connection has.
    fn new_id(table: &Table) -> u32 {
        loop {
            let id: u32 = rand::random();
            if id != 0 && !table.waiting.contains_key(&id) && !table.active.contains_key(&id) {
                return id;
            }
        }
    }

    /// Listens on `addr` for the peers of `owner`'s TCP relay, an
    /// allocation of `username` at `client`.
    pub(crate) fn listen(
        self: &Arc<Self>,
        owner: Owner,
        addr: SocketAddr,
        username: &str,
        client: std::net::IpAddr,
    ) -> io::Result<()> {
        let listener = relay_socket(addr)?;
        listener.listen(128)?;
        let listener: TcpListener = listener.into();
        let handle = listener.try_clone()?;
        let id = {
            let mut table = self.lock();
            table.next_listener += 1;
            let id = table.next_listener;
            table.moved.remove(&owner);
            table.listening.insert(owner, Listening { id, username: username.into(), client, handle });
            id
        };
        let relays = self.clone();
        let spawned = std::thread::Builder::new().name("ip2p-tcp-accept".into()).spawn(move || {
            relays.accept_loop(owner, id, &listener);
        });
        if let Err(e) = spawned {
            self.close(owner);
            return Err(e);
        }
        Ok(())
    }

    fn accept_loop(&self, owner: Owner, id: u64, listener: &TcpListener) {
        loop {
            let accepted = listener.accept();
            let mut table = self.lock();
            let Some(client) = table.listening.get(&owner).filter(|l| l.id == id).map(|l| l.client) else {
                return; // closed: `close` shut the listener down
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    drop(table);
                    // Out of descriptors, say: the peer waits in the
                    // backlog; try again in a while, quietly.
                    tracing::debug!(error = %e, "TCP relay accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            // Past the allocation's or the client's connection limits, the
            // peer is refused (`stream` closes).
            if table.connections(owner) >= MAX_CONNECTIONS {
                continue;
            }
            let Some(ticket) = self.limits.admit(client) else { continue };
            let id = Self::new_id(&table);
            let waiting = Waiting { owner, peer, stream, ticket, since: now(), accepted: false, bound: false };
            table.waiting.insert(id, waiting);
            drop(table);
            self.notify(owner.0, TcpEvent::Incoming { token: owner.1, peer, id });
        }
    }

    /// Connects `from` (the relay's address) to `peer` on a thread; the
    /// outcome goes to the owner's core.
    pub(crate) fn connect(self: &Arc<Self>, owner: Owner, from: SocketAddr, peer: SocketAddr) {
        let (listener, ticket) = {
            let mut table = self.lock();
            let listening = table.listening.get(&owner).map(|l| (l.id, l.client));
            let ticket = listening
                .filter(|_| table.connections(owner) < MAX_CONNECTIONS)
                .and_then(|(_, client)| self.limits.admit(client));
            let Some(ticket) = ticket else {
                drop(table);
                return self.notify(owner.0, TcpEvent::Connected { token: owner.1, peer, id: None });
            };
            table.connecting.insert((owner, peer));
            (listening.map(|(id, _)| id), ticket)
        };
        let relays = self.clone();
        let spawned = std::thread::Builder::new().name("ip2p-tcp-connect".into()).spawn(move || {
            let stream = relay_socket(from)
                .and_then(|s| s.connect_timeout(&peer.into(), CONNECT_TIMEOUT).map(|()| TcpStream::from(s)));
            let mut table = relays.lock();
            table.connecting.remove(&(owner, peer));
            let alive = table.listening.get(&owner).map(|l| l.id) == listener;
            let id = match stream {
                Ok(stream) if alive => {
                    let id = Self::new_id(&table);
                    let waiting = Waiting { owner, peer, stream, ticket, since: now(), accepted: true, bound: false };
                    table.waiting.insert(id, waiting);
                    Some(id)
                }
                Ok(_) => return, // the allocation is gone
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TCP connect to a peer failed");
                    None
                }
            };
            drop(table);
            relays.notify(owner.0, TcpEvent::Connected { token: owner.1, peer, id });
        });
        if spawned.is_err() {
            self.lock().connecting.remove(&(owner, peer));
            self.notify(owner.0, TcpEvent::Connected { token: owner.1, peer, id: None });
        }
    }

    /// Whether `owner` has a connection with `peer`, made or in the making.
    pub(crate) fn busy(&self, owner: Owner, peer: SocketAddr) -> bool {
        let table = self.lock();
        table.connecting.contains(&(owner, peer))
            || table.waiting.values().any(|w| w.owner == owner && w.peer == peer)
            || table.active.values().any(|a| a.owner == owner && a.peer == peer)
    }

    /// The core's verdict on an incoming connection.
    pub(crate) fn accept(&self, id: u32, accept: bool) {
        let mut table = self.lock();
        if accept {
            if let Some(w) = table.waiting.get_mut(&id) {
                w.accepted = true;
            }
        } else {
            table.waiting.remove(&id);
        }
    }

    /// Claims connection `id` for a ConnectionBind by `username`.
    pub(crate) fn bind(&self, id: u32, username: &str) -> bool {
        let mut table = self.lock();
        let Some(w) = table.waiting.get(&id) else { return false };
        let owner_user = table.listening.get(&w.owner).map(|l| &*l.username);
        if !w.accepted || w.bound || owner_user != Some(username) {
            return false;
        }
        if let Some(w) = table.waiting.get_mut(&id) {
            w.bound = true;
        }
        true
    }

    /// Joins the client's data connection (with its TLS session, and the
    /// bytes still to send it: the ConnectionBind response, and its place in
    /// the connection limits) to peer connection `id`, on a thread of its
    /// own.
    pub(crate) fn splice(
        self: &Arc<Self>,
        id: u32,
        client: TcpStream,
        tls: Option<Box<rustls::ServerConnection>>,
        unsent: Vec<u8>,
        ticket: Option<ConnTicket>,
    ) {
        let mut table = self.lock();
        let Some(w) = table.waiting.remove(&id).filter(|w| w.bound) else {
            return; // timed out or its allocation went: `client` closes
        };
        let (Ok(h1), Ok(h2)) = (client.try_clone(), w.stream.try_clone()) else { return };
        let moved = Arc::new(Moved::default());
        let active = Active {
            owner: w.owner,
            peer: w.peer,
            handles: [h1, h2],
            moved: moved.clone(),
            _tickets: (w.ticket, ticket),
        };
        table.active.insert(id, active);
        drop(table);
        let relays = self.clone();
        let peer = w.stream;
        let spawned = std::thread::Builder::new().name("ip2p-tcp-data".into()).spawn(move || {
            if let Err(e) = Splice::new(client, tls, unsent, peer, moved).run() {
                tracing::debug!(id, error = %e, "TCP data connection ended");
            }
            relays.retire(id);
        });
        if spawned.is_err() {
            self.end(id);
        }
    }

    /// Data connection `id` ended: what it moved stays its owner's.
    fn retire(&self, id: u32) {
        let mut table = self.lock();
        if let Some(a) = table.active.remove(&id) {
            let total = table.moved.entry(a.owner).or_default();
            *total = total.plus(a.moved.usage());
        }
    }

    /// What `owner`'s data connections moved so far (those that ended
    /// included; after the allocation ended, its last total).
    pub(crate) fn usage(&self, owner: Owner) -> Usage {
        let table = self.lock();
        let live = table.active.values().filter(|a| a.owner == owner).map(|a| a.moved.usage());
        live.fold(table.moved.get(&owner).copied().unwrap_or_default(), Usage::plus)
    }

    fn end(&self, id: u32) {
        if let Some(a) = self.lock().active.remove(&id) {
            for h in &a.handles {
                let _ = h.shutdown(Shutdown::Both);
            }
        }
    }

    /// The allocation of `owner` is gone: its listener, its waiting
    /// connections and its data connections close.
    pub(crate) fn close(&self, owner: Owner) {
        let mut table = self.lock();
        if let Some(l) = table.listening.remove(&owner) {
            // Wakes the accept thread, which then sees it is closed.
            let _ = Socket::from(l.handle).shutdown(Shutdown::Both);
        }
        table.waiting.retain(|_, w| w.owner != owner);
        for a in table.active.values().filter(|a| a.owner == owner) {
            for h in &a.handles {
                let _ = h.shutdown(Shutdown::Both);
            }
        }
    }

    /// Closes peer connections whose ConnectionBind did not come in time.
    pub(crate) fn sweep(&self, now: Instant) {
        self.lock().waiting.retain(|_, w| now.saturating_duration_since(w.since) < BIND_TIMEOUT);
    }
}

impl Table {
    /// Peer connections of `owner`: being made, waiting or bound.
    fn connections(&self, owner: Owner) -> usize {
        self.connecting.iter().filter(|(o, _)| *o == owner).count()
            + self.waiting.values().filter(|w| w.owner == owner).count()
            + self.active.values().filter(|a| a.owner == owner).count()
    }
}

/// A TCP socket bound to a relay address that a listener and outgoing
/// connections share (SO_REUSEADDR and SO_REUSEPORT).
fn relay_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A data connection joined to its peer connection.
struct Splice {
    client: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    peer: TcpStream,
    moved: Arc<Moved>,
    /// Bytes for the client (ciphertext on TLS).
    to_client: Vec<u8>,
    to_peer: Vec<u8>,
    client_open: bool,
    peer_open: bool,
}

impl Splice {
    fn new(
        client: TcpStream,
        tls: Option<Box<rustls::ServerConnection>>,
        unsent: Vec<u8>,
        peer: TcpStream,
        moved: Arc<Moved>,
    ) -> Self {
        Self { client, tls, peer, moved, to_client: unsent, to_peer: Vec::new(), client_open: true, peer_open: true }
    }

    /// Moves bytes until one side closes and what it sent has reached the
    /// other (RFC 6062 §5.5: either side closing closes both).
    fn run(mut self) -> io::Result<()> {
        self.client.set_nonblocking(true)?;
        self.peer.set_nonblocking(true)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !self.client_open && self.to_peer.is_empty() || !self.peer_open && self.to_client.is_empty() {
                break;
            }
            let (ce, pe) = {
                let mut ce = PollFlags::empty();
                let mut pe = PollFlags::empty();
                if self.client_open && self.to_peer.len() < SPLICE_BUFFER {
                    ce |= PollFlags::POLLIN;
                }
                if !self.to_client.is_empty() {
                    ce |= PollFlags::POLLOUT;
                }
                if self.peer_open && self.to_client.len() < SPLICE_BUFFER {
                    pe |= PollFlags::POLLIN;
                }
                if !self.to_peer.is_empty() {
                    pe |= PollFlags::POLLOUT;
                }
                let mut fds = [PollFd::new(self.client.as_fd(), ce), PollFd::new(self.peer.as_fd(), pe)];
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let ready = |f: &PollFd<'_>| f.revents().unwrap_or(PollFlags::empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            let gone = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
            if ce.intersects(gone) && self.client_open {
                self.read_client(&mut buf)?;
            }
            if pe.intersects(gone) && self.peer_open {
                self.read_peer(&mut buf)?;
            }
            write_some(&mut self.client, &mut self.to_client)?;
            write_some(&mut self.peer, &mut self.to_peer)?;
        }
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.to_client);
            self.client.set_nonblocking(false)?;
            let _ = self.client.write_all(&self.to_client);
        }
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.peer.shutdown(Shutdown::Both);
        Ok(())
    }

    fn read_client(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let n = match self.client.read(buf) {
            Ok(0) => {
                self.client_open = false;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        let bytes = buf.get(..n).unwrap_or_default();
        let Some(tls) = &mut self.tls else {
            self.moved.to_peer.fetch_add(n as u64, Ordering::Relaxed);
            self.to_peer.extend_from_slice(bytes);
            return Ok(());
        };
        let mut input = bytes;
        while !input.is_empty() {
            tls.read_tls(&mut input)?;
            tls.process_new_packets().map_err(io::Error::other)?;
            let mut plain = [0u8; 16 * 1024];
            loop {
                match tls.reader().read(&mut plain) {
                    Ok(0) => {
                        self.client_open = false;
                        break;
                    }
                    Ok(n) => {
                        self.moved.to_peer.fetch_add(n as u64, Ordering::Relaxed);
                        self.to_peer.extend_from_slice(plain.get(..n).unwrap_or_default());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        while tls.wants_write() {
            tls.write_tls(&mut self.to_client)?;
        }
        Ok(())
    }

    fn read_peer(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let n = match self.peer.read(buf) {
            Ok(0) => {
                self.peer_open = false;
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        };
        let bytes = buf.get(..n).unwrap_or_default();
        self.moved.from_peer.fetch_add(n as u64, Ordering::Relaxed);
        match &mut self.tls {
            None => self.to_client.extend_from_slice(bytes),
            Some(tls) => {
                tls.writer().write_all(bytes)?;
                while tls.wants_write() {
                    tls.write_tls(&mut self.to_client)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes what `pending` holds until the socket would block.
fn write_some(socket: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    while !pending.is_empty() {
        match socket.write(pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::EfdFlags;

    fn relays() -> (Arc<TcpRelays>, crossbeam_channel::Receiver<TcpEvent>) {
        let (events, rx) = crossbeam_channel::unbounded();
        let wake = Arc::new(EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap());
        let limits =
            Arc::new(ConnLimits::new(1000, 1000, Duration::from_secs(1), Duration::from_secs(1), 1 << 16, Vec::new()));
        (TcpRelays::new(vec![Notifier { events, wake }], limits), rx)
    }

    const LOCAL: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn free_port() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    }

    #[test]
    fn closing_a_relay_frees_its_port_even_when_the_owner_is_reused() {
        let (relays, rx) = relays();
        let owner = (0, RelayToken(2));
        let (first, second) = (free_port(), free_port());
        relays.listen(owner, first, "u", LOCAL).unwrap();
        relays.close(owner);
        // The same owner listens again at once, elsewhere: the first accept
        // thread must still stop and let its port go.
        relays.listen(owner, second, "u", LOCAL).unwrap();
        let deadline = now() + Duration::from_secs(5);
        while TcpListener::bind(first).is_err() {
            assert!(now() < deadline, "the closed relay still holds {first}");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The new one works: a peer connecting is announced.
        let _peer = TcpStream::connect(second).unwrap();
        let event = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(event, TcpEvent::Incoming { token: RelayToken(2), .. }), "{event:?}");
    }

    #[test]
    fn waiting_connections_are_capped_and_bound_once_by_their_user() {
        let (relays, rx) = relays();
        let owner = (0, RelayToken(4));
        let addr = free_port();
        relays.listen(owner, addr, "alice", LOCAL).unwrap();
        let peers: Vec<TcpStream> = (0..MAX_CONNECTIONS + 3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut ids = Vec::new();
        while let Ok(TcpEvent::Incoming { id, .. }) = rx.recv_timeout(Duration::from_millis(500)) {
            ids.push(id);
        }
        assert_eq!(ids.len(), MAX_CONNECTIONS, "{} peers connected", peers.len());
        let id = ids[0];
        assert!(!relays.bind(id, "alice"), "not accepted by the core yet");
        relays.accept(id, true);
        assert!(!relays.bind(id, "mallory"));
        assert!(relays.bind(id, "alice"));
        assert!(!relays.bind(id, "alice"), "bound once");
        relays.sweep(now() + BIND_TIMEOUT);
        assert!(!relays.busy(owner, peers[0].local_addr().unwrap()), "swept after 30 s");
    }
}
