//! Sessions: every allocation as an operator sees it, with an id that
//! stays for its life (handovers included) and what it relayed each way.
//!
//! The owner counts its allocations' traffic in plain integers on the
//! packet path (the slot is already at hand there); another worker that
//! delivers a short-circuited datagram to one of them itself counts into
//! the allocation's [`Crossed`] atomics, shared through its published
//! view. What the XDP fast path carried is counted in its maps and added
//! by the datapath.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ListenerId;

/// A session's id: unique on the node (random, 64 bits), shown as 16 hex
/// digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl SessionId {
    /// An id as [`fmt::Display`] writes it: 1 to 16 hex digits.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let hex = !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| u64::from_str_radix(s, 16).ok().map(Self)).flatten()
    }
}

/// What a session relayed: to peers on its client's behalf, and from peers
/// to its client. Bytes are the UDP payloads exchanged with peers, without
/// TURN's framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Datagrams sent to peers.
    pub packets_to_peers: u64,
    /// Their payload bytes.
    pub bytes_to_peers: u64,
    /// Datagrams from peers relayed to the client.
    pub packets_from_peers: u64,
    /// Their payload bytes.
    pub bytes_from_peers: u64,
}

impl Usage {
    pub(crate) fn count_to_peers(&mut self, bytes: usize) {
        self.packets_to_peers += 1;
        self.bytes_to_peers += bytes as u64;
    }

    pub(crate) fn count_from_peers(&mut self, bytes: usize) {
        self.packets_from_peers += 1;
        self.bytes_from_peers += bytes as u64;
    }

    /// The sum of both.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            packets_to_peers: self.packets_to_peers + other.packets_to_peers,
            bytes_to_peers: self.bytes_to_peers + other.bytes_to_peers,
            packets_from_peers: self.packets_from_peers + other.packets_from_peers,
            bytes_from_peers: self.bytes_from_peers + other.bytes_from_peers,
        }
    }
}

/// Datagrams from peers that other workers delivered to an allocation's
/// client themselves (the short-circuit between two clients of the node).
#[derive(Debug, Default)]
pub(crate) struct Crossed {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl Crossed {
    pub(crate) fn count(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// As usage from peers.
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            packets_from_peers: self.packets.load(Ordering::Relaxed),
            bytes_from_peers: self.bytes.load(Ordering::Relaxed),
            ..Usage::default()
        }
    }
}

/// Which sessions a walk returns: those of `user`, of client IP
/// `client`, with id `id` (each when given). Judged before a session is
/// built: a narrow query costs a worker a walk over its slots, no more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionQuery {
    /// Whom it counts against.
    pub user: Option<String>,
    /// The client's IP.
    pub client: Option<std::net::IpAddr>,
    /// Its id.
    pub id: Option<SessionId>,
}

/// Why a session ended (a usage record's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Its lifetime ran out.
    Expired,
    /// Its client deleted it (a Refresh with lifetime 0).
    Deleted,
    /// Its client's TCP or TLS connection closed.
    Closed,
    /// The operator ended it (the admin API).
    Killed,
    /// Its user's credentials were revoked.
    Revoked,
    /// Its TURN REST credential expired (`auth.strict_expiry`).
    CredentialExpired,
    /// The node drained, then stopped with it still live.
    Drained,
    /// The node stopped with it still live.
    ShutDown,
    /// A handover ended it: a TLS client's connection and an RFC 6062
    /// allocation's peer connections cannot move to the next process.
    HandedOver,
}

impl End {
    /// The reason as a usage record names it.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Deleted => "deleted",
            Self::Closed => "closed",
            Self::Killed => "killed",
            Self::Revoked => "revoked",
            Self::CredentialExpired => "credential_expired",
            Self::Drained => "drained",
            Self::ShutDown => "shutdown",
            Self::HandedOver => "handover",
        }
    }
}

/// A session began or ended (with [`crate::Config::session_events`]; see
/// [`crate::Server::poll_session_event`]). A handover neither ends nor
/// begins one that moves: the next process goes on with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A new allocation.
    Started(Session),
    /// An allocation ended, with what it relayed through the core.
    Ended(Session, End),
}

/// One session as the core knows it at a moment (the datapath adds what
/// only it knows: the XDP fast path's counts, TLS or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Whom it counts against: the long-term username, or a TURN REST
    /// username's user part.
    pub user: String,
    /// The USERNAME it was made with.
    pub username: String,
    /// The listener its client uses (UDP, or TCP and TLS).
    pub listener: ListenerId,
    /// The client's address.
    pub client: SocketAddr,
    /// The relayed addresses, as the client was told them.
    pub relayed: Vec<SocketAddr>,
    /// Its relay sockets, with `relayed` (what the fast path counts by).
    pub relays: Vec<crate::RelayToken>,
    /// A TCP allocation (RFC 6062).
    pub tcp: bool,
    /// When it began, unix seconds.
    pub started: u64,
    /// When it expires unless refreshed, unix seconds.
    pub expires: u64,
    /// Live permissions.
    pub permissions: usize,
    /// Live channels.
    pub channels: usize,
    /// What it relayed through the core.
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_written_and_nothing_else_reads() {
        for id in [0, 1, 0xdead_beef, u64::MAX] {
            let shown = SessionId(id).to_string();
            assert_eq!(shown.len(), 16);
            assert_eq!(SessionId::parse(&shown), Some(SessionId(id)));
        }
        for bad in ["", "+1", "-1", "g", "00000000000000000", "1 ", "ffffffffffffffff0"] {
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }
}
