//! A handover, in the core: [`Server::export`] gives up every allocation
//! that can move as [`Moved`] data, [`Server::adopt`] takes one back in
//! the next process, on the relay sockets the caller carried over.

use std::net::SocketAddr;
use std::time::Instant;

use ip2p_wire::TransactionId;

use super::Server;
use crate::allocation::{self, Allocation, Relay};
use crate::moved::{Adoptable, Moved, MovedRelay};
use crate::packet::RelayToken;
use crate::session::{End, Session, SessionEvent, SessionId, Usage};
use crate::shared::Account;
use crate::sockets::Sockets;

/// The longest USERNAME a request carries (RFC 8489 §14.3).
const MAX_USERNAME: usize = 508;

/// What a worker gives up in a handover.
#[derive(Debug, Default)]
pub struct Export {
    /// The allocations that move, each relay socket named by its token
    /// (the caller passes the socket along). Those of clients over a
    /// stream move only with their connection: the caller counts those it
    /// cannot move (TLS) with `staying`.
    pub moved: Vec<Moved<RelayToken>>,
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
    /// A value no core makes (a count past its limit, a channel number
    /// outside the range, a relayed address of the wrong family...).
    Invalid(String),
}

impl std::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RelayAddress(a) => write!(f, "relayed address {a} is not a relay address here"),
            Self::Duplicate => f.write_str("the client already has an allocation here"),
            Self::Socket(e) => write!(f, "relay socket: {e}"),
            Self::Invalid(e) => write!(f, "not an allocation this relay makes: {e}"),
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
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            let relay = |family: usize| {
                let r = alloc.relays.get(family).copied().flatten()?;
                Some(MovedRelay { socket: RelayToken::new(slot, family), bound: r.bound, advertised: r.advertised })
            };
            out.moved.push(Moved {
                listener: alloc.listener,
                client: alloc.client,
                relays: [relay(0), relay(1)],
                username: alloc.username.to_string(),
                quota_user: alloc.account.user.to_string(),
                key: alloc.key.clone(),
                integrity: alloc.integrity,
                txid: alloc.txid.0,
                dont_fragment: alloc.dont_fragment,
                lifetime: alloc.expires.saturating_duration_since(now),
                permissions,
                channels,
                session: Some(alloc.moving_session()),
            });
        }
        out
    }

    /// Takes over `moved` at `now`, on the relay sockets it holds. It
    /// counts against the quotas as before, even past a limit lowered
    /// since: it exists.
    ///
    /// # Errors
    /// A relayed address that is not a relay address here, a client that
    /// already has an allocation, or a socket that cannot be set up.
    /// Nothing of it stays then; its sockets are closed.
    /// A session that cannot be taken over ends here, as
    /// [`End::HandedOver`] (when session events are on).
    pub fn adopt(&mut self, now: Instant, moved: Adoptable, sockets: &mut impl Sockets) -> Result<(), AdoptError> {
        let session = self.config.session_events.then(|| self.unadopted(now, &moved)).flatten();
        let adopted = self.take_over(now, moved, sockets);
        if adopted.is_err()
            && let Some(s) = session
        {
            self.session_events.push_back(SessionEvent::Ended(s, End::HandedOver));
        }
        adopted
    }

    /// The session `moved` carries, as it ends at `now` when it cannot be
    /// taken over (none from a snapshot without sessions: it began none).
    fn unadopted(&self, now: Instant, moved: &Adoptable) -> Option<Session> {
        let s = moved.session?;
        Some(Session {
            id: SessionId(s.id),
            user: moved.quota_user.clone(),
            username: moved.username.clone(),
            listener: moved.listener,
            client: moved.client,
            relayed: moved.relays.iter().flatten().map(|r| r.advertised).collect(),
            relays: Vec::new(),
            tcp: false,
            started: s.started,
            expires: self.unix(now + moved.lifetime),
            permissions: moved.permissions.len(),
            channels: moved.channels.len(),
            usage: Usage::from(s),
        })
    }

    fn take_over(&mut self, now: Instant, moved: Adoptable, sockets: &mut impl Sockets) -> Result<(), AdoptError> {
        self.check(&moved)?;
        let listener = moved.listener;
        if self.by_client.contains_key(&(listener, moved.client)) {
            return Err(AdoptError::Duplicate);
        }
        for r in moved.relays.iter().flatten() {
            if self.config.relay_bound_to(r.bound.ip()).is_none() || self.ports.contains(&r.bound) {
                return Err(AdoptError::RelayAddress(r.bound));
            }
        }
        let slot = self.reserve_slot();
        let mut relays: [Option<Relay>; 2] = [None, None];
        let mut opened: Vec<(RelayToken, SocketAddr)> = Vec::new();
        for (family, (relay, out)) in moved.relays.into_iter().zip(relays.iter_mut()).enumerate() {
            let Some(MovedRelay { socket, bound, advertised }) = relay else { continue };
            let token = RelayToken::new(slot, family);
            let adopted = if socket.addr == bound {
                sockets.adopt_relay(token, socket, moved.dont_fragment).map_err(|e| AdoptError::Socket(e.to_string()))
            } else {
                Err(AdoptError::Socket(format!("the socket for {bound} is bound to {}", socket.addr)))
            };
            if let Err(e) = adopted {
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
            moved.key,
            moved.integrity,
            TransactionId(moved.txid),
            moved.dont_fragment,
            // Lifetimes as this node's limits allow (the permissions' and
            // channels' are clamped by `restore`).
            now + moved.lifetime.min(self.config.max_lifetime),
            match moved.session {
                Some(s) => (SessionId(s.id), s.started),
                None => self.new_session(now),
            },
        );
        alloc.usage = moved.session.map(Usage::from).unwrap_or_default();
        alloc.credential_expiry = moved.session.and_then(|s| s.credential_expiry);
        alloc.restore(now, &moved.permissions, &moved.channels);
        // Held to its credential here too, with this node's strictness.
        let left = alloc.expires.saturating_duration_since(now);
        let (lifetime, by_credential) = self.within_credential(left, alloc.credential_expiry, now);
        alloc.expires = now + lifetime;
        alloc.ends_with_credential = by_credential;
        self.place(slot, alloc);
        // Judged here, by this node's policy, not as the snapshot says.
        self.rejudge_slot(slot, now);
        self.publish_paths(slot, now, allocation::Paths::All);
        Ok(())
    }
}

impl Server {
    /// Whether `moved` holds only what a core makes: the limits of
    /// permissions and channels, channel numbers this node accepts, each
    /// relayed address of its family, a user name a request could carry.
    fn check(&self, moved: &Adoptable) -> Result<(), AdoptError> {
        let invalid = |what: String| Err(AdoptError::Invalid(what));
        if moved.permissions.len() > allocation::MAX_PERMISSIONS || moved.channels.len() > allocation::MAX_CHANNELS {
            return invalid(format!("{} permissions, {} channels", moved.permissions.len(), moved.channels.len()));
        }
        if let Some(c) = moved.channels.iter().find(|c| !self.config.channel_numbers.allows(c.number)) {
            return invalid(format!("channel number {:#x}", c.number));
        }
        if moved.relays.iter().all(Option::is_none) {
            return invalid("no relayed address".into());
        }
        for (family, relay) in moved.relays.iter().enumerate() {
            if let Some(r) = relay
                && (allocation::family_index(&r.bound.ip()) != family
                    || allocation::family_index(&r.advertised.ip()) != family)
            {
                return invalid(format!("relayed address {} as family {family}", r.bound));
            }
        }
        if moved.username.len() > MAX_USERNAME || moved.quota_user.len() > moved.username.len() {
            return invalid("user name".into());
        }
        Ok(())
    }
}
