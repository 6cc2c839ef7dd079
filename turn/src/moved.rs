//! Allocations as they move to the next process of the relay (a
//! handover): what a worker's core gives up, as plain data with the
//! lifetimes left at that moment, in one shape whatever stands for its
//! relay sockets: the tokens the core exported them with
//! ([`crate::Server::export`]), the descriptors of a transfer in the
//! relay's snapshot (with the `serde` feature, in its JSON format), and the
//! [`Held`] sockets the next core adopts ([`crate::Server::adopt`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ip2p_wire::IntegrityKind;
use ip2p_wire::credentials::LongTermKey;

use crate::packet::ListenerId;
use crate::shared::Held;

/// One UDP allocation as it moves, of a client over UDP or TCP (whose
/// connection the caller moves); `S` stands for each relay socket.
/// Lifetimes are what was left when it was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Moved<S> {
    /// The listener its client uses (`listener`, `transport`).
    #[cfg_attr(feature = "serde", serde(flatten, with = "format::listener"))]
    pub listener: ListenerId,
    /// The client's address.
    pub client: SocketAddr,
    /// Relayed addresses by family, `[IPv4, IPv6]`.
    pub relays: [Option<MovedRelay<S>>; 2],
    /// The USERNAME it was made with.
    pub username: String,
    /// Whom it counts against (a REST username's user part).
    pub quota_user: String,
    /// The long-term key its requests are checked with (hex: 16 bytes for
    /// MD5, 32 for SHA-256).
    #[cfg_attr(feature = "serde", serde(with = "format::key"))]
    pub key: LongTermKey,
    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256.
    #[cfg_attr(feature = "serde", serde(with = "format::integrity"))]
    pub integrity: IntegrityKind,
    /// The Allocate transaction that made it (a retransmission of it gets
    /// its success response again); hex.
    #[cfg_attr(feature = "serde", serde(with = "format::txid"))]
    pub txid: [u8; 12],
    /// DONT-FRAGMENT was asked for.
    pub dont_fragment: bool,
    /// Lifetime left.
    #[cfg_attr(feature = "serde", serde(rename = "lifetime_ms", with = "format::millis"))]
    pub lifetime: Duration,
    /// Live permissions.
    pub permissions: Vec<MovedPermission>,
    /// Live channels.
    pub channels: Vec<MovedChannel>,
    /// Its session's id, start and counts (snapshot version 3; an earlier
    /// one's allocations begin a new session).
    #[cfg_attr(feature = "serde", serde(default))]
    pub session: Option<MovedSession>,
}

/// A session as it moves: the next process goes on with the same id and
/// counts on from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(deny_unknown_fields))]
pub struct MovedSession {
    /// Its id.
    pub id: u64,
    /// When it began, unix seconds.
    pub started: u64,
    /// Datagrams and payload bytes to peers and from them, so far.
    pub packets_to_peers: u64,
    /// See `packets_to_peers`.
    pub bytes_to_peers: u64,
    /// See `packets_to_peers`.
    pub packets_from_peers: u64,
    /// See `packets_to_peers`.
    pub bytes_from_peers: u64,
    /// Its TURN REST credential's expiry, when it ends with it
    /// (`auth.strict_expiry`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub credential_expiry: Option<u64>,
}

/// A relayed address: its socket, the address it is bound to, and the
/// one the client was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(deny_unknown_fields))]
pub struct MovedRelay<S> {
    /// What stands for its socket (a snapshot's descriptor index: `fd`).
    #[cfg_attr(feature = "serde", serde(rename = "fd"))]
    pub socket: S,
    /// As bound.
    pub bound: SocketAddr,
    /// As advertised.
    pub advertised: SocketAddr,
}

/// A permission as it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(deny_unknown_fields))]
pub struct MovedPermission {
    /// The peer IP it covers.
    pub ip: IpAddr,
    /// Lifetime left.
    #[cfg_attr(feature = "serde", serde(rename = "lifetime_ms", with = "format::millis"))]
    pub lifetime: Duration,
    /// The IP is one of the host's own (the short-circuit's).
    pub host: bool,
}

/// A channel as it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(deny_unknown_fields))]
pub struct MovedChannel {
    /// The channel number.
    pub number: u16,
    /// The peer bound to it.
    pub peer: SocketAddr,
    /// Lifetime left.
    #[cfg_attr(feature = "serde", serde(rename = "lifetime_ms", with = "format::millis"))]
    pub lifetime: Duration,
}

impl From<MovedSession> for crate::session::Usage {
    fn from(m: crate::MovedSession) -> Self {
        Self {
            packets_to_peers: m.packets_to_peers,
            bytes_to_peers: m.bytes_to_peers,
            packets_from_peers: m.packets_from_peers,
            bytes_from_peers: m.bytes_from_peers,
        }
    }
}

/// An allocation the next core adopts, on its relay sockets.
pub type Adoptable = Moved<Held>;

impl<S> Moved<S> {
    /// The same allocation with what stands for each relay socket mapped
    /// by `f` (given the socket and its bound address); the first error
    /// of `f`, if any.
    ///
    /// # Errors
    /// What `f` returns for a socket.
    pub fn try_map<T, E>(self, mut f: impl FnMut(S, SocketAddr) -> Result<T, E>) -> Result<Moved<T>, E> {
        let [v4, v6] = self.relays;
        let mut relay = |r: Option<MovedRelay<S>>| {
            r.map(|r| Ok(MovedRelay { socket: f(r.socket, r.bound)?, bound: r.bound, advertised: r.advertised }))
                .transpose()
        };
        let relays = [relay(v4)?, relay(v6)?];
        Ok(Moved {
            listener: self.listener,
            client: self.client,
            relays,
            username: self.username,
            quota_user: self.quota_user,
            key: self.key,
            integrity: self.integrity,
            txid: self.txid,
            dont_fragment: self.dont_fragment,
            lifetime: self.lifetime,
            permissions: self.permissions,
            channels: self.channels,
            session: self.session,
        })
    }

    /// The allocation `elapsed` later: `None` once its lifetime ran out;
    /// the permissions and channels that ran out are left out.
    #[must_use]
    pub fn aged(mut self, elapsed: Duration) -> Option<Self> {
        let left = |lifetime: Duration| lifetime.checked_sub(elapsed).filter(|d| !d.is_zero());
        self.lifetime = left(self.lifetime)?;
        self.permissions.retain_mut(|p| left(p.lifetime).map(|l| p.lifetime = l).is_some());
        self.channels.retain_mut(|c| left(c.lifetime).map(|l| c.lifetime = l).is_some());
        Some(self)
    }
}

/// How the fields that are not plain JSON values are written: the
/// format of the relay's handover snapshot (docs/upgrades.md).
#[cfg(feature = "serde")]
mod format {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// The listener as two keys: its index (`listener`) and how its client
    /// reaches the relay (`transport`: `udp`, the default, or `tcp`).
    pub(super) mod listener {
        use ip2p_wire::Transport;

        use super::*;
        use crate::packet::ListenerId;

        #[derive(Serialize, Deserialize)]
        struct Fields {
            listener: u16,
            #[serde(default)]
            transport: ClientTransport,
        }

        #[derive(Default, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum ClientTransport {
            #[default]
            Udp,
            Tcp,
        }

        pub(crate) fn serialize<S: Serializer>(l: &ListenerId, s: S) -> Result<S::Ok, S::Error> {
            let transport = match l.transport {
                Transport::Datagram => ClientTransport::Udp,
                Transport::Stream => ClientTransport::Tcp,
            };
            Fields { listener: l.index, transport }.serialize(s)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ListenerId, D::Error> {
            let f = Fields::deserialize(d)?;
            Ok(match f.transport {
                ClientTransport::Udp => ListenerId::udp(f.listener),
                ClientTransport::Tcp => ListenerId::stream(f.listener),
            })
        }
    }

    /// Milliseconds.
    pub(super) mod millis {
        use std::time::Duration;

        use super::*;

        pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            u64::deserialize(d).map(Duration::from_millis)
        }
    }

    /// The long-term key in hex: 16 bytes (MD5) or 32 (SHA-256).
    pub(super) mod key {
        use ip2p_wire::credentials::LongTermKey;

        use super::*;

        pub(crate) fn serialize<S: Serializer>(k: &LongTermKey, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode(k.as_bytes()))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LongTermKey, D::Error> {
            let bytes = hex::decode(String::deserialize(d)?).map_err(D::Error::custom)?;
            match bytes.len() {
                16 => Ok(LongTermKey::Md5(bytes.try_into().map_err(|_| D::Error::custom("key"))?)),
                32 => Ok(LongTermKey::Sha256(bytes.try_into().map_err(|_| D::Error::custom("key"))?)),
                n => Err(D::Error::custom(format!("a key of {n} bytes: 16 or 32 expected"))),
            }
        }
    }

    /// `sha1` or `sha256`.
    pub(super) mod integrity {
        use ip2p_wire::IntegrityKind;

        use super::*;

        pub(crate) fn serialize<S: Serializer>(k: &IntegrityKind, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(match k {
                IntegrityKind::Sha1 => "sha1",
                IntegrityKind::Sha256 => "sha256",
            })
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IntegrityKind, D::Error> {
            match String::deserialize(d)?.as_str() {
                "sha1" => Ok(IntegrityKind::Sha1),
                "sha256" => Ok(IntegrityKind::Sha256),
                other => Err(D::Error::unknown_variant(other, &["sha1", "sha256"])),
            }
        }
    }

    /// A transaction ID in hex.
    pub(super) mod txid {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(t: &[u8; 12], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&hex::encode(t))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 12], D::Error> {
            let bytes = hex::decode(String::deserialize(d)?).map_err(D::Error::custom)?;
            bytes.try_into().map_err(|_| D::Error::custom("a transaction ID is 12 bytes"))
        }
    }
}
