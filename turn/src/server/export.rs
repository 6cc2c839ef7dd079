//! Allocations that move to the next process of the relay (a handover):
//! what a worker's core gives up, as plain data with the lifetimes left
//! at that moment, and how the next process's core takes them back. The
//! caller carries each allocation's relay sockets (their descriptors) and
//! gives them back as [`Held`] sockets.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{IntegrityKind, TransactionId};

use super::Server;
use crate::allocation::{Allocation, Relay};
use crate::{Account, Held, ListenerId, RelayToken, Sockets};

/// One UDP allocation as it moves, of a client over UDP or TCP (whose
/// connection the caller moves). Lifetimes are what was left when it was
/// exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The listener its client uses.
    pub listener: ListenerId,
    /// The client's address.
    pub client: SocketAddr,
    /// Relayed addresses by family (`[IPv4, IPv6]`): as bound, and as
    /// advertised to the client.
    pub relays: [Option<(SocketAddr, SocketAddr)>; 2],
    /// The USERNAME it was made with.
    pub username: String,
    /// Whom it counts against (a REST username's user part).
    pub quota_user: String,
    /// The long-term key its requests are checked with.
    pub key: LongTermKey,
    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256.
    pub integrity: IntegrityKind,
    /// The Allocate transaction that made it (a retransmission of it gets
    /// its success response again).
    pub txid: [u8; 12],
    /// DONT-FRAGMENT was asked for.
    pub dont_fragment: bool,
    /// Lifetime left.
    pub lifetime: Duration,
    /// Live permissions.
    pub permissions: Vec<MovedPermission>,
    /// Live channels.
    pub channels: Vec<MovedChannel>,
}

/// A permission as it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedPermission {
    /// The peer IP it covers.
    pub ip: IpAddr,
    /// Lifetime left.
    pub lifetime: Duration,
    /// The IP is one of the host's own (the short-circuit's).
    pub host: bool,
}

/// A channel as it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedChannel {
    /// The channel number.
    pub number: u16,
    /// The peer bound to it.
    pub peer: SocketAddr,
    /// Lifetime left.
    pub lifetime: Duration,
}

/// What a worker gives up in a handover.
#[derive(Debug, Default)]
pub struct Export {
    /// The allocations that move, each with the relay tokens of its
    /// sockets by family (what the caller passes along with it). Those of
    /// clients over a stream move only with their connection: the caller
    /// counts those it cannot move (TLS) with `staying`.
    pub moved: Vec<(Moved, [Option<RelayToken>; 2])>,
    /// Allocations that cannot move (RFC 6062's TCP allocations, whose
    /// peer connections cannot): they end with this process.
    pub staying: usize,
}

/// Why an allocation could not be taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdoptError {
    /// Its relayed address is not one of this process's relay addresses.
    RelayAddress(SocketAddr),
    /// The client already has an allocation here.
    Duplicate,
    /// A relay socket is missing, or could not be set up.
    Socket(String),
}

impl std::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RelayAddress(a) => write!(f, "relayed address {a} is not a relay address here"),
            Self::Duplicate => f.write_str("the client already has an allocation here"),
            Self::Socket(e) => write!(f, "relay socket: {e}"),
        }
    }
}

impl Server {
    /// Every allocation that can move at `now`, as [`Moved`] data with the
    /// tokens of its relay sockets. Nothing changes here: the caller stops
    /// serving afterwards, or goes on if the handover fails.
    #[must_use]
    pub fn export(&self, now: Instant) -> Export {
        let mut out = Export::default();
        for (slot, alloc) in self.slots.iter().enumerate() {
            let Some(alloc) = alloc else { continue };
            if alloc.tcp || alloc.expires <= now {
                out.staying += usize::from(alloc.expires > now);
                continue;
            }
            let (permissions, channels) = alloc.moving(now);
            let relay = |family: usize| alloc.relays.get(family).copied().flatten();
            let moved = Moved {
                listener: alloc.listener,
                client: alloc.client,
                relays: [0, 1].map(|family| relay(family).map(|r| (r.bound, r.advertised))),
                username: alloc.username.to_string(),
                quota_user: alloc.account.user.to_string(),
                key: alloc.key.clone(),
                integrity: alloc.integrity,
                txid: alloc.txid.0,
                dont_fragment: alloc.dont_fragment,
                lifetime: alloc.expires.saturating_duration_since(now),
                permissions,
                channels,
            };
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            let tokens = [0, 1].map(|family| relay(family).map(|_| RelayToken::new(slot, family)));
            out.moved.push((moved, tokens));
        }
        out
    }

    /// Takes over `moved` at `now`, on its relay sockets `held` (by
    /// family, as [`Server::export`] gave the tokens). It counts against
    /// the quotas as before, even past a limit lowered since: it exists.
    ///
    /// # Errors
    /// A relayed address that is not a relay address here, a client that
    /// already has an allocation, or a socket that is missing or cannot be
    /// set up. Nothing of it stays then; the held sockets are closed.
    pub fn adopt(
        &mut self,
        now: Instant,
        moved: &Moved,
        held: [Option<Held>; 2],
        sockets: &mut impl Sockets,
    ) -> Result<(), AdoptError> {
        let listener = moved.listener;
        if self.by_client.contains_key(&(listener, moved.client)) {
            return Err(AdoptError::Duplicate);
        }
        for (bound, _) in moved.relays.iter().flatten() {
            if self.config.relay_bound_to(bound.ip()).is_none() || self.ports.contains(bound) {
                return Err(AdoptError::RelayAddress(*bound));
            }
        }
        let slot = self.reserve_slot();
        let mut relays: [Option<Relay>; 2] = [None, None];
        let mut opened = Vec::new();
        for (family, ((relay, held), out)) in moved.relays.iter().zip(held).zip(relays.iter_mut()).enumerate() {
            let Some((bound, advertised)) = *relay else { continue };
            let token = RelayToken::new(slot, family);
            let result = match held {
                Some(held) if held.addr == bound => {
                    sockets.adopt_relay(token, held, moved.dont_fragment).map_err(|e| AdoptError::Socket(e.to_string()))
                }
                _ => Err(AdoptError::Socket(format!("no socket for {bound}"))),
            };
            if let Err(e) = result {
                for (token, bound) in opened {
                    sockets.close_relay(token);
                    self.ports.remove(&bound);
                }
                self.free.push(slot);
                return Err(e);
            }
            self.ports.insert(bound);
            opened.push((token, bound));
            *out = Some(Relay { bound, advertised });
        }
        let account =
            Account { user: moved.quota_user.as_str().into(), prefix: crate::client_prefix(moved.client.ip()) };
        self.shared.quotas.count(&account);
        let mut alloc = Allocation::new(
            listener,
            moved.client,
            relays,
            moved.username.as_str().into(),
            account,
            moved.key.clone(),
            moved.integrity,
            TransactionId(moved.txid),
            moved.dont_fragment,
            now + moved.lifetime,
        );
        alloc.restore(now, &moved.permissions, &moved.channels);
        self.place(slot, alloc);
        self.publish_paths(slot, now);
        Ok(())
    }
}
