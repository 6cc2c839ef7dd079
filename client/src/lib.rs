//! ip2p-client: a small blocking TURN client over UDP, TCP or TLS: enough
//! to drive a relay in tests, tools and the bench (allocate, permissions,
//! channels, data both ways, refresh, RFC 6062). It speaks standard TURN,
//! so it works against any TURN server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connect;
mod error;
mod link;
mod transaction;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip2p_wire::attr::{
    AdditionalAddressFamily, ChannelNumber, ConnectionId, Data, EvenPort, Lifetime, RequestedAddressFamily,
    RequestedTransport, ReservationToken, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{
    AddressFamily, Attribute, ChannelData, Class, Message, MessageType, MessageWriter, Method, PacketKind, classify,
    write_channel_data,
};

pub use self::error::ClientError;
use self::link::Link;

/// The ALPN protocol of TURN over TLS (RFC 7443).
pub const ALPN: &[u8] = b"stun.turn";

/// What arrived from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A Data indication.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// Its payload.
        data: Vec<u8>,
    },
    /// ChannelData.
    Channel {
        /// The channel.
        channel: u16,
        /// Its payload.
        data: Vec<u8>,
    },
}

/// One client with (after [`Client::allocate`]) one allocation.
#[derive(Debug)]
pub struct Client {
    link: Link,
    /// Stream bytes received but not yet a whole frame.
    pending: Vec<u8>,
    server: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
    key: Option<LongTermKey>,
    /// The relayed address, once allocated.
    pub relayed: Option<SocketAddr>,
    /// The server-reflexive address the server reported.
    pub mapped: Option<SocketAddr>,
    /// The lifetime the server granted last.
    pub lifetime: Option<u32>,
    /// The ALTERNATE-SERVER of the last 300 Try Alternate (RFC 8489 §10):
    /// where to ask again.
    pub alternate: Option<SocketAddr>,
    next_tid: u64,
    buf: Vec<u8>,
}

/// Retransmission timeout of the first attempt (RFC 8489 §6.2.1 uses 500 ms
/// on the internet; on loopback a shorter first wait is enough).
const RTO: Duration = Duration::from_millis(250);
const ATTEMPTS: u32 = 5;

impl Client {
    /// Sends, without waiting for the answers, what keeps an allocation
    /// alive: a Refresh, and a ChannelBind or CreatePermission for `peer`
    /// (which refreshes the permission). Call [`Client::absorb`] with the
    /// STUN answers the data path receives.
    ///
    /// # Errors
    /// From the socket.
    pub fn send_keepalives(&mut self, channel: Option<u16>, peer: SocketAddr) -> io::Result<()> {
        let refresh = self.signed(Method::REFRESH, &[])?;
        self.send_bytes(&refresh)?;
        let keep = match channel {
            Some(n) => self.signed(
                Method::CHANNEL_BIND,
                &[Attribute::ChannelNumber(ChannelNumber(n)), Attribute::XorPeerAddress(XorPeerAddress(peer))],
            )?,
            None => self.signed(Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(XorPeerAddress(peer))])?,
        };
        self.send_bytes(&keep)
    }

    /// Allocates a UDP relayed address (with a LIFETIME hint if given).
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn allocate(&mut self, lifetime: Option<u32>) -> Result<SocketAddr, ClientError> {
        let mut attrs = vec![Attribute::RequestedTransport(RequestedTransport::UDP)];
        if let Some(l) = lifetime {
            attrs.push(Attribute::Lifetime(Lifetime(l)));
        }
        self.allocate_with(&attrs)?.first().copied().ok_or(ClientError::Protocol("no XOR-RELAYED-ADDRESS"))
    }

    /// Allocates a TCP relayed address (RFC 6062; over TCP or TLS only).
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn allocate_tcp(&mut self) -> Result<SocketAddr, ClientError> {
        let attrs = [Attribute::RequestedTransport(RequestedTransport::TCP)];
        self.allocate_with(&attrs)?.first().copied().ok_or(ClientError::Protocol("no XOR-RELAYED-ADDRESS"))
    }

    /// RFC 6062 Connect: asks the relay to connect to `peer`; returns the
    /// CONNECTION-ID to bind a data connection to.
    ///
    /// # Errors
    /// The server's rejection (446, 447, 403...), or no answer.
    pub fn connect(&mut self, peer: SocketAddr) -> Result<u32, ClientError> {
        let len = self.request(Method::CONNECT, &[Attribute::XorPeerAddress(XorPeerAddress(peer))])?;
        let msg = self.response(len)?;
        msg.get::<ConnectionId>().ok().flatten().map(|c| c.0).ok_or(ClientError::Protocol("no CONNECTION-ID"))
    }

    /// RFC 6062 ConnectionBind, on a new connection: from its success on,
    /// this client's stream carries the peer connection's bytes
    /// ([`Self::send_raw`], [`Self::recv_raw`]).
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn connection_bind(&mut self, conn: u32) -> Result<(), ClientError> {
        self.request(Method::CONNECTION_BIND, &[Attribute::ConnectionId(ConnectionId(conn))]).map(|_| ())
    }

    /// Waits up to `timeout` for a ConnectionAttempt indication (RFC 6062
    /// §4.4): the peer that connected and the CONNECTION-ID.
    ///
    /// # Errors
    /// From the socket.
    pub fn wait_connection_attempt(&mut self, timeout: Duration) -> io::Result<Option<(SocketAddr, u32)>> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            let Some(len) = self.recv_bytes(left)? else { return Ok(None) };
            let Ok(msg) = Message::parse(self.buf.get(..len).unwrap_or_default()) else { continue };
            if msg.message_type() != MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication) {
                continue;
            }
            if let (Ok(Some(XorPeerAddress(peer))), Ok(Some(ConnectionId(id)))) = (msg.get(), msg.get()) {
                return Ok(Some((peer, id)));
            }
        }
        Ok(None)
    }

    /// Reads what arrives on a data connection within `timeout` (empty at
    /// the end of the stream or on timeout).
    ///
    /// # Errors
    /// From the socket.
    pub fn recv_raw(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        if !self.pending.is_empty() {
            return Ok(std::mem::take(&mut self.pending));
        }
        let mut chunk = vec![0u8; 64 * 1024];
        let read = match &mut self.link {
            Link::Udp(_) => return Err(io::ErrorKind::Unsupported.into()),
            Link::Tcp(s) => s.set_read_timeout(Some(timeout)).and_then(|()| s.read(&mut chunk)),
            Link::Tls(s) => s.sock.set_read_timeout(Some(timeout)).and_then(|()| s.read(&mut chunk)),
        };
        match read {
            Ok(n) => {
                chunk.truncate(n);
                Ok(chunk)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Allocates a relayed address of family `requested` (RFC 8656
    /// REQUESTED-ADDRESS-FAMILY), or with `dual` an IPv4 and an IPv6 one
    /// (ADDITIONAL-ADDRESS-FAMILY); returns every relayed address granted.
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn allocate_families(
        &mut self,
        requested: Option<AddressFamily>,
        dual: bool,
    ) -> Result<Vec<SocketAddr>, ClientError> {
        let mut attrs = vec![Attribute::RequestedTransport(RequestedTransport::UDP)];
        if let Some(f) = requested {
            attrs.push(Attribute::RequestedAddressFamily(RequestedAddressFamily(f)));
        }
        if dual {
            attrs.push(Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)));
        }
        self.allocate_with(&attrs)
    }

    /// Allocates an even port N and has N+1 reserved (EVEN-PORT with the R
    /// bit, RFC 8656 §7.2): the relayed address and the RESERVATION-TOKEN
    /// another client presents with [`Self::allocate_reserved`].
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn allocate_even_pair(&mut self) -> Result<(SocketAddr, [u8; 8]), ClientError> {
        let attrs = [
            Attribute::RequestedTransport(RequestedTransport::UDP),
            Attribute::EvenPort(EvenPort { reserve_next: true }),
        ];
        let (relayed, token) = self.allocate_full(&attrs)?;
        let relayed = *relayed.first().ok_or(ClientError::Protocol("no XOR-RELAYED-ADDRESS"))?;
        Ok((relayed, token.ok_or(ClientError::Protocol("no RESERVATION-TOKEN"))?))
    }

    /// Allocates the address reserved under `token`.
    ///
    /// # Errors
    /// The server's rejection (508 for a token not valid), or no answer.
    pub fn allocate_reserved(&mut self, token: [u8; 8]) -> Result<SocketAddr, ClientError> {
        let attrs = [
            Attribute::RequestedTransport(RequestedTransport::UDP),
            Attribute::ReservationToken(ReservationToken(&token)),
        ];
        self.allocate_with(&attrs)?.first().copied().ok_or(ClientError::Protocol("no XOR-RELAYED-ADDRESS"))
    }

    fn allocate_with(&mut self, attrs: &[Attribute<'_>]) -> Result<Vec<SocketAddr>, ClientError> {
        self.allocate_full(attrs).map(|(relayed, _)| relayed)
    }

    /// An Allocate: every relayed address, and the RESERVATION-TOKEN if any.
    fn allocate_full(&mut self, attrs: &[Attribute<'_>]) -> Result<(Vec<SocketAddr>, Option<[u8; 8]>), ClientError> {
        let len = self.request(Method::ALLOCATE, attrs)?;
        let msg = self.response(len)?;
        let token = msg.get::<ReservationToken>().ok().flatten().map(|t| *t.0);
        let all: Vec<SocketAddr> = msg.get_all::<XorRelayedAddress>().filter_map(|a| a.ok().map(|a| a.0)).collect();
        let relayed = *all.first().ok_or(ClientError::Protocol("no XOR-RELAYED-ADDRESS"))?;
        let mapped = msg.get::<XorMappedAddress>().ok().flatten().map(|a| a.0);
        let lifetime = msg.get::<Lifetime>().ok().flatten().map(|l| l.0);
        self.relayed = Some(relayed);
        self.mapped = mapped;
        self.lifetime = lifetime;
        Ok((all, token))
    }

    /// Refreshes the allocation; a lifetime of 0 deletes it.
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn refresh(&mut self, lifetime: Option<u32>) -> Result<u32, ClientError> {
        let attrs: Vec<Attribute<'_>> = lifetime.map(|l| Attribute::Lifetime(Lifetime(l))).into_iter().collect();
        let len = self.request(Method::REFRESH, &attrs)?;
        let granted = self.response(len)?.get::<Lifetime>().ok().flatten().map_or(0, |l| l.0);
        self.lifetime = Some(granted);
        Ok(granted)
    }

    /// Installs permissions for these peers' IP addresses.
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<(), ClientError> {
        let attrs: Vec<Attribute<'_>> = peers.iter().map(|p| Attribute::XorPeerAddress(XorPeerAddress(*p))).collect();
        self.request(Method::CREATE_PERMISSION, &attrs).map(|_| ())
    }

    /// Binds `channel` to `peer`.
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn channel_bind(&mut self, channel: u16, peer: SocketAddr) -> Result<(), ClientError> {
        let attrs = [Attribute::ChannelNumber(ChannelNumber(channel)), Attribute::XorPeerAddress(XorPeerAddress(peer))];
        self.request(Method::CHANNEL_BIND, &attrs).map(|_| ())
    }

    /// Sends `data` to `peer` in a Send indication.
    ///
    /// # Errors
    /// From the socket.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> io::Result<()> {
        let tid = self.tid();
        let mut out = vec![0u8; data.len() + 64];
        let mut w = MessageWriter::new(&mut out, MessageType::new(Method::SEND, Class::Indication), tid)
            .map_err(io::Error::other)?;
        w.add(&XorPeerAddress(peer)).map_err(io::Error::other)?;
        w.add(&Data(data)).map_err(io::Error::other)?;
        let len = w.finish();
        self.send_bytes(out.get(..len).unwrap_or_default())
    }

    /// Sends `data` on a bound channel.
    ///
    /// # Errors
    /// From the socket.
    pub fn send_channel(&mut self, channel: u16, data: &[u8]) -> io::Result<()> {
        let mut out = vec![0u8; data.len() + 8];
        let len = write_channel_data(&mut out, channel, data, self.link.transport()).map_err(io::Error::other)?;
        self.send_bytes(out.get(..len).unwrap_or_default())
    }

    /// Sends raw bytes to the server (for tests of what it does with them).
    ///
    /// # Errors
    /// From the socket.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.send_bytes(bytes)
    }

    /// Whether the server closed the stream: waits up to `timeout` for the
    /// end of the stream (`false` over UDP, or if it stays open).
    ///
    /// # Errors
    /// From the socket.
    pub fn closed_by_server(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            let mut byte = [0u8; 1024];
            let read = match &mut self.link {
                Link::Udp(_) => return Ok(false),
                Link::Tcp(s) => s.set_read_timeout(Some(left)).and_then(|()| s.read(&mut byte)),
                Link::Tls(s) => s.sock.set_read_timeout(Some(left)).and_then(|()| s.read(&mut byte)),
            };
            match read {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof) => {
                    return Ok(true);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Waits up to `timeout` for data relayed from a peer; `None` if none came.
    ///
    /// # Errors
    /// From the socket.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Received>> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            let Some(len) = self.recv_bytes(left)? else {
                return Ok(None);
            };
            let Some(bytes) = self.buf.get(..len) else {
                continue;
            };
            match classify(bytes) {
                PacketKind::ChannelData => {
                    if let Ok(cd) = ChannelData::parse(bytes) {
                        return Ok(Some(Received::Channel { channel: cd.channel(), data: cd.data().to_vec() }));
                    }
                }
                PacketKind::Stun => {
                    let Ok(msg) = Message::parse(bytes) else {
                        continue;
                    };
                    if msg.message_type() != MessageType::new(Method::DATA, Class::Indication) {
                        continue;
                    }
                    if let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(data)))) = (msg.get(), msg.get()) {
                        return Ok(Some(Received::Data { peer, data: data.to_vec() }));
                    }
                }
                PacketKind::Other => {}
            }
        }
        Ok(None)
    }

    /// A STUN Binding request; returns the reflexive address.
    ///
    /// # Errors
    /// The server's rejection, or no answer.
    pub fn binding(&mut self) -> Result<SocketAddr, ClientError> {
        let tid = self.tid();
        let mut out = [0u8; 20];
        let w = MessageWriter::new(&mut out, MessageType::new(Method::BINDING, Class::Request), tid)
            .map_err(|_| ClientError::Protocol("request"))?;
        let len = w.finish();
        let rlen = self.transact(out.get(..len).unwrap_or_default(), tid)?;
        let msg = self.response(rlen)?;
        msg.get::<XorMappedAddress>().ok().flatten().map(|a| a.0).ok_or(ClientError::Protocol("no XOR-MAPPED-ADDRESS"))
    }
}
