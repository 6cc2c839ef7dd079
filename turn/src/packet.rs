//! The values a datapath and the core exchange about one packet: which
//! listener or relay socket, what to send, and why not.

use std::net::SocketAddr;
use std::ops::Range;

use ip2p_wire::Transport;

/// Bytes a datapath must leave free in front of a peer's datagram: the
/// largest header the relay writes there (a Data indication for an IPv6
/// peer is 48 bytes; ChannelData needs 4).
pub const PEER_HEADROOM: usize = 48;
/// Bytes a datapath must leave free after a peer's datagram (padding of a
/// Data indication's DATA attribute).
pub const PEER_TAILROOM: usize = 3;
/// Size of the reply scratch buffer a datapath passes in: every response
/// this server writes fits.
pub const REPLY_BUFFER: usize = 1024;

/// Which of the worker's listeners a packet came in on. With the client's
/// address it names the 5-tuple (one listener per local address and
/// transport; on a stream listener the client's address names its
/// connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId {
    /// The datapath's index of the listener.
    pub index: u16,
    /// UDP, or TCP and TLS (which change how ChannelData is padded).
    pub transport: Transport,
}

impl ListenerId {
    /// UDP listener `index`.
    #[must_use]
    pub const fn udp(index: u16) -> Self {
        Self { index, transport: Transport::Datagram }
    }

    /// TCP or TLS listener `index`.
    #[must_use]
    pub const fn stream(index: u16) -> Self {
        Self { index, transport: Transport::Stream }
    }
}

/// Names one relay socket: the allocation's slot and the address family.
/// The core chooses it when it opens the socket; the datapath hands it back
/// with every datagram that socket receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayToken(pub u32);

impl RelayToken {
    pub(crate) fn new(slot: u32, family: usize) -> Self {
        Self(slot << 1 | u32::from(family == 1))
    }

    /// The token as an index into a datapath's table of relay sockets:
    /// dense, since slots are reused (two entries per allocation, one per
    /// family).
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 >> 1) as usize
    }

    pub(crate) fn family(self) -> usize {
        (self.0 & 1) as usize
    }

    /// Whether the relay socket is of the IPv6 family.
    #[must_use]
    pub const fn family_is_v6(self) -> bool {
        self.0 & 1 == 1
    }
}

/// Which socket a transmit leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A listening socket, towards a client.
    Listener(ListenerId),
    /// A relay socket, towards a peer.
    Relay(RelayToken),
}

/// One datagram to send: `range` of a buffer, from `via`, to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub via: Via,
    /// The destination.
    pub to: SocketAddr,
    /// The bytes to send, as a range of the buffer the verdict names.
    pub range: Range<usize>,
}

/// What to do with a packet a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send a range of the packet's buffer: relayed data, framed in place
    /// (towards a peer, or to another client of this worker through the
    /// local short-circuit).
    Forward(Transmit),
    /// Send a range of the reply buffer (a STUN response).
    Reply(Transmit),
    /// Pass the payload to the inbox of the worker that owns its
    /// destination (another's, or this worker's own when the payload has
    /// no room around it to be framed where it lies).
    ToOwner(ToOwner),
    /// Send nothing now: the request is answered later (RFC 6062 Connect,
    /// once the connection to the peer is made or has failed).
    Deferred,
    /// Send nothing (counted).
    Drop(DropReason),
}

/// A payload on its way from one relayed address of this node to another,
/// through the owning worker's inbox and [`Server::handle_inbox`](crate::Server::handle_inbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToOwner {
    /// The worker that owns the destination.
    pub worker: usize,
    /// The sender's relayed address, which the payload comes from.
    pub from: SocketAddr,
    /// The packet as it would leave through the kernel: the payload's
    /// range, from the sender's relay socket to the destination relayed
    /// address. Sent that way when the inbox has no room.
    pub transmit: Transmit,
}

/// Why a packet was dropped: each is a counter in [`Stats`](crate::Stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Neither STUN nor ChannelData, or a STUN message that fails the basic
    /// checks (RFC 8489 §6.3: discarded silently).
    NotTurn,
    /// A STUN message with a FINGERPRINT that does not match (RFC 8489
    /// §14.7: discarded).
    BadFingerprint,
    /// A STUN response, an indication we do not act on, or a malformed
    /// indication.
    Ignored,
    /// No allocation on this 5-tuple (or relay socket).
    NoAllocation,
    /// ChannelData on a channel that is not bound.
    NoChannel,
    /// No permission for the peer's IP address.
    NoPermission,
    /// A Send indication to a peer address the policy denies.
    DeniedAddress,
    /// Over the allocation's bandwidth limit.
    RateLimit,
    /// An unauthenticated request whose source prefix had its share of
    /// responses (response rate limiting).
    ResponseRateLimit,
}
