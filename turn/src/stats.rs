//! The core's counters: plain integers that only the owning worker writes
//! and the node copies out at scrape time (no atomics, no lock on the
//! packet path). Each group can list itself as `(label, value)` pairs, the
//! shape the metrics exporter needs.

use ip2p_wire::{Class, Message, Method};

use super::DropReason;

/// Per-worker counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams relayed client → peer.
    pub to_peer_packets: u64,
    /// Payload bytes relayed client → peer.
    pub to_peer_bytes: u64,
    /// Datagrams relayed peer → client.
    pub to_client_packets: u64,
    /// Datagrams from a client that went straight to another allocation of
    /// this node (the local short-circuit), counted by the worker that
    /// delivered them: each is also counted as relayed once each way.
    pub short_circuited: u64,
    /// Of the datagrams a client sent to another allocation of this node,
    /// those for another worker's allocation, counted by the sender: the
    /// short-circuit's crossings between workers (the sender delivers most
    /// itself; the rest go through the owner's inbox: `to_owner`).
    pub crossed: u64,
    /// Of those crossings, the datagrams handed to the owner's inbox (a
    /// stream client, a bandwidth limit, a frame with no room around it),
    /// counted by the sender.
    pub to_owner: u64,
    /// Payload bytes relayed peer → client.
    pub to_client_bytes: u64,
    /// STUN requests received (answered or not).
    pub requests: u64,
    /// Responses sent, by method and result.
    pub responses: Responses,
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations that expired (not deleted by the client).
    pub allocations_expired: u64,
    /// Live permissions and channels ended because the peer policy or the
    /// host's addresses changed (a reload, a handover, an address added).
    pub revoked: u64,
    /// Allocate requests refused, by reason (authentication failures are
    /// in `auth_failures`).
    pub allocations_refused: AllocationRefusals,
    /// Requests that failed authentication, by reason.
    pub auth_failures: AuthFailures,
    /// Packets dropped, by reason.
    pub dropped: Drops,
}

impl Stats {
    /// Adds another worker's.
    pub fn add(&mut self, o: &Self) {
        self.to_peer_packets += o.to_peer_packets;
        self.to_peer_bytes += o.to_peer_bytes;
        self.to_client_packets += o.to_client_packets;
        self.short_circuited += o.short_circuited;
        self.crossed += o.crossed;
        self.to_owner += o.to_owner;
        self.to_client_bytes += o.to_client_bytes;
        self.requests += o.requests;
        self.responses.add(&o.responses);
        self.allocations_created += o.allocations_created;
        self.allocations_expired += o.allocations_expired;
        self.revoked += o.revoked;
        self.allocations_refused.add(&o.allocations_refused);
        self.auth_failures.add(&o.auth_failures);
        self.dropped.add(&o.dropped);
    }
}

/// Implements `add` (another worker's counters added to these) for a group
/// of counters, field by field: `add_fields!(Counters { a, b, c })`.
#[macro_export]
macro_rules! add_fields {
    ($t:ty { $($f:ident),* }) => {
        impl $t {
            /// Adds another worker's.
            pub fn add(&mut self, o: &Self) {
                $(self.$f += o.$f;)*
            }
        }
    };
}
/// A group of counters by reason: [`crate::add_fields`], and `by_reason`, each
/// field's name (the metrics label) with its count.
macro_rules! reasons {
    ($t:ty { $($f:ident),* }) => {
        $crate::add_fields!($t { $($f),* });
        impl $t {
            /// `(reason, count)` for each reason.
            #[must_use]
            pub fn by_reason(&self) -> [(&'static str, u64); [$(stringify!($f)),*].len()] {
                [$((stringify!($f), self.$f)),*]
            }
        }
    };
}

reasons!(AuthFailures {
    bad_request,
    wrong_realm,
    unknown_user,
    expired,
    too_long_lived,
    bad_integrity,
    stale_nonce,
    wrong_user,
    revoked
});
reasons!(AllocationRefusals {
    invalid,
    mismatch,
    node_full,
    user_quota,
    ip_quota,
    no_relay_port,
    draining,
    redirected,
    store_down
});
reasons!(Drops {
    not_turn,
    bad_fingerprint,
    ignored,
    no_allocation,
    no_channel,
    no_permission,
    denied_address,
    rate_limit,
    response_rate_limit
});
crate::add_fields!(Gauges { udp_allocations, tcp_allocations, permissions, channels, timers });

/// Methods a response is counted under.
pub const METHODS: [&str; 8] =
    ["binding", "allocate", "refresh", "create_permission", "channel_bind", "connect", "connection_bind", "other"];

/// Results a response is counted under: success or its error code.
pub const RESULTS: [&str; 17] = [
    "success", "300", "400", "401", "403", "420", "437", "438", "440", "441", "442", "443", "446", "447", "486", "508",
    "other",
];

/// The error codes of [`RESULTS`], in its order.
const CODES: [u16; 15] = [300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 508];

/// Responses by method and result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responses([[u64; RESULTS.len()]; METHODS.len()]);

impl Default for Responses {
    fn default() -> Self {
        Self([[0; RESULTS.len()]; METHODS.len()])
    }
}

impl Responses {
    /// Counts the response we wrote (it parses: we wrote it).
    pub(crate) fn count(&mut self, response: &[u8]) {
        let Ok(msg) = Message::parse(response) else { return };
        let method = match msg.method() {
            Method::BINDING => 0,
            Method::ALLOCATE => 1,
            Method::REFRESH => 2,
            Method::CREATE_PERMISSION => 3,
            Method::CHANNEL_BIND => 4,
            Method::CONNECT => 5,
            Method::CONNECTION_BIND => 6,
            _ => 7,
        };
        // Success in column 0, each listed code in its own, the rest last.
        let result = match msg.class() {
            Class::Success => 0,
            _ => match msg.get::<ip2p_wire::attr::ErrorCodeAttr<'_>>() {
                Ok(Some(e)) => CODES.iter().position(|c| *c == e.code.code()).map_or(RESULTS.len() - 1, |i| i + 1),
                _ => RESULTS.len() - 1,
            },
        };
        if let Some(n) = self.0.get_mut(method).and_then(|row| row.get_mut(result)) {
            *n += 1;
        }
    }

    /// Responses of `method` with `result` (names from [`METHODS`] and
    /// [`RESULTS`]); 0 for names not there.
    #[must_use]
    pub fn get(&self, method: &str, result: &str) -> u64 {
        let m = METHODS.iter().position(|m| *m == method);
        let r = RESULTS.iter().position(|r| *r == result);
        m.zip(r).and_then(|(m, r)| self.0.get(m)?.get(r).copied()).unwrap_or(0)
    }

    /// Every `(method, result, count)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        METHODS.iter().zip(&self.0).flat_map(|(m, row)| RESULTS.iter().zip(row).map(move |(r, n)| (*m, *r, *n)))
    }

    /// Adds another worker's.
    pub fn add(&mut self, other: &Self) {
        for (row, other) in self.0.iter_mut().zip(&other.0) {
            for (n, o) in row.iter_mut().zip(other) {
                *n += o;
            }
        }
    }
}

/// Why a request failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Integrity without USERNAME, REALM or NONCE, or a tampered password
    /// algorithm negotiation: 400.
    BadRequest,
    /// Another realm: 401.
    WrongRealm,
    /// Neither a configured user nor a REST username: 401.
    UnknownUser,
    /// A REST username whose expiry passed: 401.
    Expired,
    /// A REST username whose expiry lies further ahead than
    /// `auth.max_credential_lifetime`: 401.
    TooLongLived,
    /// The MESSAGE-INTEGRITY does not verify (wrong password or secret): 401.
    BadIntegrity,
    /// The nonce expired or is not ours: 438.
    StaleNonce,
    /// A request on an allocation by another user: 441.
    WrongUser,
    /// The user's credentials are revoked (the admin API): 401.
    Revoked,
}

/// Authentication failures by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthFailures {
    /// See [`AuthFailure`].
    pub bad_request: u64,
    /// See [`AuthFailure`].
    pub wrong_realm: u64,
    /// See [`AuthFailure`].
    pub unknown_user: u64,
    /// See [`AuthFailure`].
    pub expired: u64,
    /// See [`AuthFailure`].
    pub too_long_lived: u64,
    /// See [`AuthFailure`].
    pub bad_integrity: u64,
    /// See [`AuthFailure`].
    pub stale_nonce: u64,
    /// See [`AuthFailure`].
    pub wrong_user: u64,
    /// See [`AuthFailure`].
    pub revoked: u64,
}

impl AuthFailures {
    pub(crate) fn count(&mut self, why: AuthFailure) {
        *match why {
            AuthFailure::BadRequest => &mut self.bad_request,
            AuthFailure::WrongRealm => &mut self.wrong_realm,
            AuthFailure::UnknownUser => &mut self.unknown_user,
            AuthFailure::Expired => &mut self.expired,
            AuthFailure::TooLongLived => &mut self.too_long_lived,
            AuthFailure::BadIntegrity => &mut self.bad_integrity,
            AuthFailure::StaleNonce => &mut self.stale_nonce,
            AuthFailure::WrongUser => &mut self.wrong_user,
            AuthFailure::Revoked => &mut self.revoked,
        } += 1;
    }

    /// All reasons together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }
}

/// Allocate requests refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocationRefusals {
    /// A malformed or unsupported request: 400, 420, 440, 442.
    pub invalid: u64,
    /// The 5-tuple already has an allocation: 437.
    pub mismatch: u64,
    /// The node's allocation limit: 508.
    pub node_full: u64,
    /// The user's allocation limit: 486.
    pub user_quota: u64,
    /// The client address's (or IPv6 /64's) allocation limit: 486.
    pub ip_quota: u64,
    /// No relay port (or file descriptor) to be had: 508.
    pub no_relay_port: u64,
    /// The node is draining: 300 or 508.
    pub draining: u64,
    /// The node is at its fleet's threshold: 300 to a less loaded node.
    pub redirected: u64,
    /// The fleet's store could not say, and `fleet.when_store_down` is
    /// `refuse`: 508.
    pub store_down: u64,
}

/// Packets dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Neither STUN nor ChannelData, or STUN failing the basic checks.
    pub not_turn: u64,
    /// A STUN message whose FINGERPRINT does not match (RFC 8489 §14.7).
    pub bad_fingerprint: u64,
    /// A response, an indication we do not act on, a malformed indication.
    pub ignored: u64,
    /// No allocation on the 5-tuple or relay socket.
    pub no_allocation: u64,
    /// ChannelData on an unbound channel.
    pub no_channel: u64,
    /// To or from a peer without a permission.
    pub no_permission: u64,
    /// To a peer address the policy denies (a Send indication aimed at a
    /// denied range: no permission can exist for it).
    pub denied_address: u64,
    /// Over the allocation's bandwidth limit (`allocation.bandwidth`).
    pub rate_limit: u64,
    /// A request not answered because its source prefix got its share of
    /// unauthenticated responses (`limits.unauthenticated_rate`).
    pub response_rate_limit: u64,
}

impl Drops {
    pub(crate) fn count(&mut self, reason: DropReason) {
        let n = match reason {
            DropReason::NotTurn => &mut self.not_turn,
            DropReason::BadFingerprint => &mut self.bad_fingerprint,
            DropReason::Ignored => &mut self.ignored,
            DropReason::NoAllocation => &mut self.no_allocation,
            DropReason::NoChannel => &mut self.no_channel,
            DropReason::NoPermission => &mut self.no_permission,
            DropReason::DeniedAddress => &mut self.denied_address,
            DropReason::RateLimit => &mut self.rate_limit,
            DropReason::ResponseRateLimit => &mut self.response_rate_limit,
        };
        *n += 1;
    }
}

/// What a worker holds now (computed on request, not kept up to date per
/// packet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Allocations with UDP relays.
    pub udp_allocations: u64,
    /// RFC 6062 TCP allocations.
    pub tcp_allocations: u64,
    /// Live permissions over all allocations.
    pub permissions: u64,
    /// Live channel bindings over all allocations.
    pub channels: u64,
    /// Entries in the core's timer table (one per allocation and
    /// reservation: it must not grow with requests).
    pub timers: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ip2p_wire::attr::ErrorCodeAttr;
    use ip2p_wire::{ErrorCode, MessageType, MessageWriter, TransactionId};

    fn response(method: Method, class: Class, code: Option<ErrorCode>) -> Vec<u8> {
        let mut buf = vec![0; 256];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, class), TransactionId([1; 12])).unwrap();
        if let Some(code) = code {
            w.add(&ErrorCodeAttr::new(code)).unwrap();
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    #[test]
    fn responses_are_counted_by_method_and_result() {
        let mut r = Responses::default();
        r.count(&response(Method::ALLOCATE, Class::Error, Some(ErrorCode::UNAUTHENTICATED)));
        r.count(&response(Method::ALLOCATE, Class::Success, None));
        r.count(&response(Method::ALLOCATE, Class::Success, None));
        r.count(&response(Method::CHANNEL_BIND, Class::Error, Some(ErrorCode::FORBIDDEN)));
        r.count(&response(Method::REFRESH, Class::Error, ErrorCode::new(599)));
        r.count(b"not a response");
        assert_eq!(r.get("allocate", "401"), 1);
        assert_eq!(r.get("allocate", "success"), 2);
        assert_eq!(r.get("channel_bind", "403"), 1);
        assert_eq!(r.get("refresh", "other"), 1);
        assert_eq!(r.iter().map(|(_, _, n)| n).sum::<u64>(), 5);
        let mut sum = r.clone();
        sum.add(&r);
        assert_eq!(sum.get("allocate", "success"), 4);
        assert_eq!(sum.get("nonsense", "success"), 0);
    }
}
