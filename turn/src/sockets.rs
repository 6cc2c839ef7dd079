//! What the core asks of the datapath: relay sockets opened, held and
//! closed, and RFC 6062's TCP relays.

use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::packet::{ListenerId, RelayToken};
use crate::shared::Held;

/// Opens and closes relay sockets for the core. RFC 6062's peer
/// connections are named by their CONNECTION-ID, `id`.
pub trait Sockets {
    /// Binds a UDP socket to `addr` for relay `token`; with `dont_fragment`,
    /// its datagrams carry DF and are never fragmented.
    ///
    /// # Errors
    /// The bind's error: the core tries another port on `AddrInUse` and
    /// answers 508 when it runs out.
    fn open_relay(&mut self, token: RelayToken, addr: SocketAddr, dont_fragment: bool) -> io::Result<()>;
    /// Binds a UDP socket to `addr` now, for an allocation to come (port
    /// N+1 of an EVEN-PORT reservation): held, nothing else can take it.
    ///
    /// # Errors
    /// As [`Sockets::open_relay`].
    fn hold(&mut self, addr: SocketAddr) -> io::Result<Held>;
    /// As [`Sockets::open_relay`], on a socket bound earlier by
    /// [`Sockets::hold`] (possibly on another worker).
    ///
    /// # Errors
    /// The socket cannot be set up or watched.
    fn adopt_relay(&mut self, token: RelayToken, held: Held, dont_fragment: bool) -> io::Result<()>;
    /// Closes relay `token`'s socket (UDP or TCP) and, for a TCP relay,
    /// every connection of it.
    fn close_relay(&mut self, token: RelayToken);

    /// RFC 6062: listens on `addr` (TCP) for relay `token`'s peers, for an
    /// allocation of `username` whose client is at `client` (its peer
    /// connections count against that client's connection limits). Its
    /// connections are announced with [`Server::tcp_incoming`](crate::Server::tcp_incoming).
    ///
    /// # Errors
    /// As [`Sockets::open_relay`].
    fn open_tcp_relay(&mut self, token: RelayToken, addr: SocketAddr, username: &str, client: IpAddr)
    -> io::Result<()>;
    /// RFC 6062 §5.2: connects from relay `token`'s address `from` to
    /// `peer`; the outcome comes back through [`Server::tcp_connected`](crate::Server::tcp_connected).
    fn tcp_connect(&mut self, token: RelayToken, from: SocketAddr, peer: SocketAddr);
    /// Whether relay `token` has a connection with `peer` (waiting for its
    /// ConnectionBind, or bound).
    fn tcp_busy(&mut self, token: RelayToken, peer: SocketAddr) -> bool;
    /// The core's answer to an incoming peer connection: keep it for a
    /// ConnectionBind, or close it.
    fn tcp_accept(&mut self, id: u32, accept: bool);
    /// RFC 6062 §5.4: a ConnectionBind for `id` by `username` arrived on
    /// the client connection `client` of `listener`. `true` if `id` waits
    /// for it and belongs to that user: the client connection then carries
    /// that peer connection's bytes, after the response.
    fn tcp_bind(&mut self, id: u32, username: &str, listener: ListenerId, client: SocketAddr) -> bool;
}
