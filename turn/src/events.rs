//! What changed in the forwarding state, for whoever mirrors it outside
//! the core (a kernel fast path's tables; a handover's snapshot). With
//! [`crate::Config::events`] on, the core queues an [`Event`] for every
//! change, and the datapath takes them with [`Server::poll_event`](crate::Server::poll_event) after
//! each batch. Off (the default), nothing is queued.
//!
//! A mirror holds [`ChannelPath`]s: the packets the core would relay
//! without a question. Each carries its deadline (its channel's and its
//! permission's), so the core says nothing when a channel or permission
//! lapses: past its deadline an entry is dead and its packets go to the
//! core, which decides as always (a mirror removes dead entries on its own
//! time). The core says when a path is new or its deadline moved on by more
//! than a few seconds (ChannelBind, CreatePermission: a replayed request
//! says nothing new), and when an allocation's paths end, whether at its
//! expiry or before (a Refresh moves no path: the allocation's end is
//! said when it comes).

use std::net::SocketAddr;
use std::time::Instant;

use crate::{ListenerId, RelayToken, SessionId};

/// One channel the core relays both ways without a question: ChannelData
/// from `client` on `channel` goes to `peer` from `relayed` (its payload
/// alone), and a datagram from `peer` to `relayed` goes to `client` as
/// ChannelData on `channel`, until `until`.
///
/// Only paths the core would forward unconditionally are published: a UDP
/// client, a UDP allocation, and no bandwidth limit. A peer that is one of
/// the host's own relayed addresses (`host`) is published only with the
/// short-circuit on, and such a path is half of one: a packet on it goes
/// straight to the other allocation's client only while that allocation
/// holds the path back (its own channel to this relayed address); without
/// it the core decides (a Data indication, or a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelPath {
    /// The relay socket (and so the allocation and address family).
    pub relay: RelayToken,
    /// The listener the client uses.
    pub listener: ListenerId,
    /// The client's address.
    pub client: SocketAddr,
    /// The relayed address as bound (what a peer's datagram is sent to,
    /// before any 1:1 NAT in front of the node).
    pub relayed: SocketAddr,
    /// The channel number.
    pub channel: u16,
    /// The peer.
    pub peer: SocketAddr,
    /// The peer is a relayed address of this node.
    pub host: bool,
    /// The earlier of the channel's and the permission's expiry (the
    /// allocation's end is an [`Event::RelayGone`]).
    pub until: Instant,
    /// The allocation's session: what a mirror counts, it credits to it
    /// ([`crate::Server::credit`]).
    pub session: SessionId,
}

/// A change to the forwarding state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A path is new, or its deadline moved: replaces any entry for its
    /// `(relay, channel)` and its `(relay, peer)`.
    Path(ChannelPath),
    /// Every path of relay socket `relay` ended (the allocation or that
    /// family of it was deleted or expired, or a reload put it under a
    /// bandwidth limit).
    RelayGone(RelayToken),
    /// The node started draining.
    Draining,
}
