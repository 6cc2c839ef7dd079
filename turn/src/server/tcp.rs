//! RFC 6062, TURN extensions for TCP allocations: Connect, ConnectionBind
//! and ConnectionAttempt. The core decides (authentication, permissions,
//! peer policy, which connection is whose); the datapath's [`Sockets`]
//! makes and carries the TCP connections and reports back through
//! [`Server::tcp_connected`] and [`Server::tcp_incoming`].

use std::net::SocketAddr;
use std::time::Instant;

use ip2p_wire::attr::{ConnectionId, XorPeerAddress};
use ip2p_wire::{Class, ErrorCode, Message, MessageType, MessageWriter, Method, TransactionId};

use super::respond::{Respond, integrity};
use crate::allocation::PendingConnect;
use crate::auth::Authed;
use crate::{Judgement, ListenerId, RelayToken, Server, Sockets, Transmit, Via};

impl Server {
    /// Whether a TCP peer may be connected to or accepted from: allowed by
    /// the policy, or on the host at a live TCP allocation's relayed
    /// address.
    pub(super) fn tcp_peer_allowed(&self, peer: SocketAddr) -> bool {
        match self.judge(peer.ip()) {
            Judgement::Allowed => true,
            Judgement::Denied => false,
            Judgement::Host => self.shared.tcp_relay_live(peer),
        }
    }

    /// RFC 6062 §5.2: checks a Connect and starts the connection; the
    /// response follows in [`Self::tcp_connected`].
    pub(super) fn connect(
        &mut self,
        slot: u32,
        msg: &Message<'_>,
        sockets: &mut impl Sockets,
    ) -> Result<(), ErrorCode> {
        let peer = msg.get::<XorPeerAddress>()?;
        let alloc = self.slots.get(slot as usize).and_then(Option::as_ref).ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        let Some(XorPeerAddress(peer)) = peer else {
            return Err(ErrorCode::BAD_REQUEST);
        };
        if !alloc.tcp {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let family = alloc.relay_for(peer.ip()).ok_or(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH)?;
        // On the host's own addresses, only the relayed address of a live
        // TCP allocation of this node (two of its clients); every other
        // port there is the host's.
        if !self.tcp_peer_allowed(peer) {
            return Err(ErrorCode::FORBIDDEN);
        }
        let token = RelayToken::new(slot, family);
        if alloc.connects.iter().any(|c| c.peer == peer) || sockets.tcp_busy(token, peer) {
            return Err(ErrorCode::CONNECTION_ALREADY_EXISTS);
        }
        let from = alloc.relays.get(family).copied().flatten().ok_or(ErrorCode::ALLOCATION_MISMATCH)?.bound;
        let pending = PendingConnect { peer, tid: *msg.transaction_id(), fingerprint: msg.has_fingerprint() };
        if let Some(alloc) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            alloc.connects.push(pending);
        }
        sockets.tcp_connect(token, from, peer);
        Ok(())
    }

    /// RFC 6062 §5.2: the connection relay `token` opened to `peer` is up
    /// (as connection `id`) or failed (`None`). Returns the Connect
    /// response to send, written into `reply` (at least
    /// [`crate::REPLY_BUFFER`] bytes).
    pub fn tcp_connected(
        &mut self,
        token: RelayToken,
        peer: SocketAddr,
        id: Option<u32>,
        reply: &mut [u8],
    ) -> Option<Transmit> {
        let alloc = self.slots.get_mut(token.slot()).and_then(Option::as_mut)?;
        let index = alloc.connects.iter().position(|c| c.peer == peer)?;
        let pending = alloc.connects.swap_remove(index);
        let (key, kind, listener, client) = (alloc.key.clone(), alloc.integrity, alloc.listener, alloc.client);
        let to = Respond { method: Method::CONNECT, tid: pending.tid, fingerprint: pending.fingerprint };
        let len = match id {
            Some(id) => self.respond_to(reply, &to, Class::Success, Some((&key, kind)), |w| {
                w.add(&ConnectionId(id))?;
                Ok(())
            }),
            None => self.respond_to(reply, &to, Class::Error, Some((&key, kind)), |w| {
                w.add(&ip2p_wire::attr::ErrorCodeAttr::new(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE))?;
                Ok(())
            }),
        }?;
        self.stats.responses.count(reply.get(..len).unwrap_or_default());
        Some(Transmit { via: Via::Listener(listener), to: client, range: 0..len })
    }

    /// RFC 6062 §5.3: `peer` connected to relay `token` (as connection
    /// `id`). With a permission for it, the client hears of it in a
    /// ConnectionAttempt indication (returned, written into `reply`);
    /// without one the connection is refused.
    pub fn tcp_incoming(
        &mut self,
        now: Instant,
        token: RelayToken,
        peer: SocketAddr,
        id: u32,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Option<Transmit> {
        let alloc = self.slots.get(token.slot()).and_then(Option::as_ref).filter(|a| a.tcp);
        let Some(alloc) = alloc.filter(|a| a.permits(peer.ip(), now) && self.tcp_peer_allowed(peer)) else {
            sockets.tcp_accept(id, false);
            return None;
        };
        let (listener, client) = (alloc.listener, alloc.client);
        let tid = TransactionId(rand::Rng::random(&mut self.rng));
        let typ = MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication);
        let len = MessageWriter::new(reply, typ, tid).ok().and_then(|mut w| {
            w.add(&XorPeerAddress(peer)).ok()?;
            w.add(&ConnectionId(id)).ok()?;
            Some(w.finish())
        });
        sockets.tcp_accept(id, len.is_some());
        Some(Transmit { via: Via::Listener(listener), to: client, range: 0..len? })
    }

    /// RFC 6062 §5.4: a ConnectionBind on a new client connection makes it
    /// the data connection of a peer connection of the same user.
    pub(super) fn connection_bind(
        &mut self,
        listener: ListenerId,
        from: SocketAddr,
        msg: &Message<'_>,
        authed: &Authed,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Option<usize> {
        let id = msg.get::<ConnectionId>().ok().flatten();
        let fresh = listener.transport == ip2p_wire::Transport::Stream && !self.has_allocation(listener, from);
        let bound = match id {
            Some(ConnectionId(id)) if fresh => sockets.tcp_bind(id, &authed.username, listener, from),
            _ => false,
        };
        if !bound {
            return self.error(reply, msg, ErrorCode::BAD_REQUEST, integrity(authed));
        }
        self.respond(reply, msg, Class::Success, integrity(authed), |_| Ok(()))
    }
}
