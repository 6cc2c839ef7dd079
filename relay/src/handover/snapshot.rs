//! The handover snapshot: what moves from one process of the relay to the
//! next besides the sockets themselves, as versioned JSON (documented in
//! docs/upgrades.md, "The snapshot"). Sockets are
//! named by their index in the transfer's descriptors.
//!
//! Version 1: the workers' listeners and UDP allocations of UDP clients.
//! Version 2: also plain TCP client connections (`connections`, with the
//! bytes of a split frame and those unsent) and the UDP allocations made
//! over them (`transport`). A version 1 snapshot reads as one with
//! neither. Version 3: each allocation's `session` (id, start, counts),
//! which the reader goes on with; an earlier version's allocations begin
//! new sessions; and the node's `revocations`. A reader takes its own version and every earlier one; a later
//! version or anything malformed is refused as a whole.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::datapath::moving::ConnState;
use ip2p_turn::Moved;

/// The version this build writes (and the latest it reads).
pub(crate) const VERSION: u32 = 3;

/// Everything but the descriptors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Snapshot {
    /// The format's version.
    pub(crate) version: u32,
    /// The writer's ip2p version, for the log.
    pub(crate) writer: String,
    /// The boot it was written in (`/proc/sys/kernel/random/boot_id`): its
    /// clock is only meaningful within that boot.
    pub(crate) boot_id: String,
    /// CLOCK_MONOTONIC in nanoseconds when the lifetimes were read.
    pub(crate) taken_at_ns: u64,
    /// The nonce secret in use (hex), so that nonces handed out stay valid.
    pub(crate) nonce_secret: String,
    /// Per worker, in order: the reuseport groups keep each client on the
    /// worker its allocation lives on.
    pub(crate) workers: Vec<WorkerSnapshot>,
    /// The admin HTTP listener, if it has one.
    #[serde(default)]
    pub(crate) admin: Option<SocketRef>,
    /// The writer's counters by sample as `/metrics` shows them
    /// (`ip2p_x_total{a="b"}`): the reader counts on from there (version 2).
    #[serde(default)]
    pub(crate) counters: crate::node::Counters,
    /// The node's revocations (version 3), kept by the reader.
    #[serde(default)]
    pub(crate) revocations: Vec<Revocation>,
}

/// A user whose credentials are refused until `until` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revocation {
    pub(crate) user: String,
    pub(crate) until: u64,
}

/// One worker's sockets and allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkerSnapshot {
    /// Its UDP listener per listen address.
    pub(crate) udp: Vec<SocketRef>,
    /// Its TCP listener per listen address, then its TLS listeners.
    pub(crate) streams: Vec<SocketRef>,
    /// Its allocations, each relay socket named by its descriptor's index
    /// (`fd`), lifetimes as left at `taken_at_ns`.
    pub(crate) allocations: Vec<Moved<usize>>,
    /// Its plain TCP client connections (version 2).
    #[serde(default)]
    pub(crate) connections: Vec<ConnectionSnapshot>,
}

/// A TCP client connection: its socket, and its stream's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectionSnapshot {
    /// Its descriptor, and its local address (checked on arrival).
    pub(crate) fd: usize,
    pub(crate) local: SocketAddr,
    /// The index of its stream listener.
    pub(crate) listener: u16,
    /// The client's address (checked on arrival).
    pub(crate) peer: SocketAddr,
    /// The start of a frame split across reads, hex.
    pub(crate) partial: String,
    /// Bytes not yet written to the client, hex.
    pub(crate) unsent: String,
}

impl ConnectionSnapshot {
    /// `state`, on descriptor `fd` of the transfer bound to `local`.
    pub(crate) fn new(state: &ConnState, fd: usize, local: SocketAddr) -> Self {
        Self {
            fd,
            local,
            listener: state.listener,
            peer: state.peer,
            partial: hex::encode(&state.partial),
            unsent: hex::encode(&state.unsent),
        }
    }

    /// The stream's state.
    ///
    /// # Errors
    /// Bytes that are not hex.
    pub(crate) fn state(&self) -> Result<ConnState, SnapshotError> {
        let bad = |what: &str| SnapshotError::Malformed(format!("{what} of the connection of {}", self.peer));
        Ok(ConnState {
            listener: self.listener,
            peer: self.peer,
            partial: hex::decode(&self.partial).map_err(|_| bad("split frame"))?,
            unsent: hex::decode(&self.unsent).map_err(|_| bad("unsent bytes"))?,
        })
    }
}

/// A socket of the transfer: the index of its descriptor, and the address
/// it is bound to (checked on arrival).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SocketRef {
    pub(crate) fd: usize,
    pub(crate) addr: SocketAddr,
}

/// Why a snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SnapshotError {
    /// Written by a later version of the format.
    Version(u32),
    /// From another boot of the machine.
    Boot,
    /// Not a snapshot, or a malformed one.
    Malformed(String),
}

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "snapshot format version {v} is newer than this build's ({VERSION})"),
            Self::Boot => f.write_str("the snapshot is from another boot of this machine"),
            Self::Malformed(e) => write!(f, "malformed snapshot: {e}"),
        }
    }
}

impl Snapshot {
    /// Reads a snapshot written by this version of the format or an
    /// earlier one, in this boot.
    ///
    /// # Errors
    /// A later version, another boot, or anything malformed.
    pub(crate) fn parse(bytes: &[u8], boot_id: &str) -> Result<Self, SnapshotError> {
        /// The version alone, readable whatever else a later format holds.
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if probe.version > VERSION || probe.version == 0 {
            return Err(SnapshotError::Version(probe.version));
        }
        let snapshot: Self = serde_json::from_slice(bytes).map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        if snapshot.boot_id != boot_id {
            return Err(SnapshotError::Boot);
        }
        Ok(snapshot)
    }

    /// The JSON form.
    #[must_use]
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::time::Duration;

    use ip2p_turn::{ListenerId, MovedChannel, MovedPermission, MovedRelay};
    use ip2p_wire::IntegrityKind;
    use ip2p_wire::credentials::LongTermKey;

    use super::*;

    fn relay(fd: usize, bound: &str, advertised: &str) -> Option<MovedRelay<usize>> {
        Some(MovedRelay { socket: fd, bound: bound.parse().unwrap(), advertised: advertised.parse().unwrap() })
    }

    fn moved() -> Moved<usize> {
        Moved {
            listener: ListenerId::stream(1),
            client: "192.0.2.7:40000".parse().unwrap(),
            relays: [relay(2, "10.0.0.1:50000", "203.0.113.1:50000"), relay(3, "[fd00::1]:50002", "[fd00::1]:50002")],
            username: "1700000000:alice".into(),
            quota_user: "alice".into(),
            key: LongTermKey::md5("alice", "ip2p", "secret"),
            integrity: IntegrityKind::Sha256,
            txid: [9; 12],
            dont_fragment: true,
            lifetime: Duration::from_secs(500),
            permissions: vec![
                MovedPermission {
                    ip: "198.51.100.9".parse().unwrap(),
                    lifetime: Duration::from_secs(200),
                    host: false,
                },
                MovedPermission { ip: "10.0.0.1".parse().unwrap(), lifetime: Duration::from_secs(3), host: true },
            ],
            channels: vec![MovedChannel {
                number: 0x4001,
                peer: "198.51.100.9:5000".parse().unwrap(),
                lifetime: Duration::from_secs(500),
            }],
            session: Some(ip2p_turn::MovedSession {
                id: u64::MAX - 7,
                started: 1_700_000_000,
                packets_to_peers: 3,
                bytes_to_peers: 1_000,
                packets_from_peers: 4,
                bytes_from_peers: 10_000_000_000,
                credential_expiry: Some(1_700_000_000),
            }),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            version: VERSION,
            writer: "0.1.0".into(),
            boot_id: "boot".into(),
            taken_at_ns: 123,
            nonce_secret: hex::encode([3u8; 32]),
            workers: vec![WorkerSnapshot {
                udp: vec![SocketRef { fd: 0, addr: "10.0.0.1:3478".parse().unwrap() }],
                streams: vec![SocketRef { fd: 1, addr: "10.0.0.1:3478".parse().unwrap() }],
                allocations: vec![moved()],
                connections: vec![ConnectionSnapshot::new(
                    &ConnState {
                        listener: 1,
                        peer: "192.0.2.7:40000".parse().unwrap(),
                        partial: vec![0x40, 0x00],
                        unsent: b"unsent".to_vec(),
                    },
                    5,
                    "10.0.0.1:3478".parse().unwrap(),
                )],
            }],
            admin: Some(SocketRef { fd: 4, addr: "127.0.0.1:9478".parse().unwrap() }),
            counters: [("ip2p_relayed_packets_total{direction=\"to_peer\",path=\"socket\"}".to_owned(), 7)].into(),
            revocations: vec![Revocation { user: "mallory".into(), until: 1_800_000_000 }],
        }
    }

    #[test]
    fn an_allocation_comes_back_as_it_went() {
        let s = snapshot();
        let back = Snapshot::parse(&s.to_bytes(), "boot").unwrap();
        assert_eq!(back, s);
        let a = &back.workers[0].allocations[0];
        assert_eq!(a.relays.map(|r| r.map(|r| r.socket)), [Some(2), Some(3)]);
        assert_eq!(a, &moved());
    }

    /// A snapshot as version 1 of the format wrote it (kept as it was
    /// written): read by every later version, as UDP clients only.
    #[test]
    fn version_1_is_still_read() {
        let s = Snapshot::parse(include_bytes!("testdata/v1.json"), "boot").unwrap();
        assert_eq!((s.version, s.workers.len()), (1, 1));
        let w = &s.workers[0];
        assert!(w.connections.is_empty());
        let m = w.allocations[0].clone().aged(Duration::from_secs(1)).unwrap();
        assert_eq!(m.listener, ListenerId::udp(0));
        assert_eq!(m.client, "192.0.2.7:40000".parse().unwrap());
        assert_eq!(m.relays, [relay(2, "10.0.0.1:50000", "203.0.113.1:50000"), None]);
        assert_eq!(
            m.key,
            LongTermKey::Md5(hex::decode("000102030405060708090a0b0c0d0e0f").unwrap().try_into().unwrap())
        );
        assert_eq!((m.integrity, m.txid, m.lifetime), (IntegrityKind::Sha1, [9; 12], Duration::from_secs(499)));
        assert_eq!(m.permissions.len(), 1);
        assert_eq!(m.channels[0].number, 0x4001);
        assert_eq!(s.admin.map(|a| a.fd), Some(3));
    }

    #[test]
    fn a_connection_comes_back_as_it_went() {
        let s = snapshot();
        let c = &Snapshot::parse(&s.to_bytes(), "boot").unwrap().workers[0].connections[0];
        let state = c.state().unwrap();
        assert_eq!(
            (state.listener, state.partial.as_slice(), state.unsent.as_slice()),
            (1, &[0x40, 0][..], &b"unsent"[..])
        );
        let mut bad = c.clone();
        bad.unsent = "not hex".into();
        assert!(matches!(bad.state(), Err(SnapshotError::Malformed(_))));
    }

    #[test]
    fn later_versions_other_boots_and_garbage_are_refused() {
        let mut s = snapshot();
        s.version = VERSION + 1;
        assert_eq!(Snapshot::parse(&s.to_bytes(), "boot"), Err(SnapshotError::Version(VERSION + 1)));
        // A later version's new fields do not get in the way of saying so.
        let later = format!(r#"{{"version": {}, "something_new": [1, 2, 3]}}"#, VERSION + 1);
        assert_eq!(Snapshot::parse(later.as_bytes(), "boot"), Err(SnapshotError::Version(VERSION + 1)));
        assert_eq!(Snapshot::parse(&snapshot().to_bytes(), "another boot"), Err(SnapshotError::Boot));
        let bytes = snapshot().to_bytes();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(Snapshot::parse(&bytes[..cut], "boot"), Err(SnapshotError::Malformed(_))), "cut at {cut}");
        }
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [
            ("\"listener\":1", "\"listener\":\"one\""),
            ("\"key\":\"", "\"key\":\"abcd"),
            ("\"integrity\":\"sha256\"", "\"integrity\":\"md5\""),
            ("\"txid\":\"", "\"txid\":\"00"),
        ] {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            assert!(matches!(Snapshot::parse(bad.as_bytes(), "boot"), Err(SnapshotError::Malformed(_))), "{to}");
        }
    }
}
