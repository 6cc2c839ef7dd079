//! One test fake for the core's tests, its benches and its fuzz targets
//! (the `testing` feature): sockets that are table entries, a
//! configuration to start from, and a clock to start at.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ip2p_wire::credentials::LongTermKey;

use crate::{
    ChannelNumbers, Config, Credentials, Held, ListenerId, PeerPolicy, RelayIp, RelayToken, Sockets, UserSecret,
};

/// The test realm.
pub const REALM: &str = "ip2p.test";
/// The unix time a test server's clock starts at.
pub const UNIX0: u64 = 1_800_000_000;

/// Some `Instant` to start a virtual clock from (the only clock read).
#[allow(clippy::disallowed_methods)]
#[must_use]
pub fn t0() -> Instant {
    Instant::now()
}

/// Relay sockets that are table entries: what the core opened, held,
/// closed and asked of the TCP relays, checked as it goes (a token is
/// never reused while open, nothing is closed twice).
#[derive(Debug, Default)]
pub struct FakeSockets {
    /// UDP relay sockets open: their address and DONT-FRAGMENT.
    pub open: HashMap<RelayToken, (SocketAddr, bool)>,
    /// Addresses some other process holds: binding them fails.
    pub taken: HashSet<SocketAddr>,
    /// Addresses bound ahead for a reservation, in order.
    pub held: Vec<SocketAddr>,
    /// Relays closed, in order.
    pub closed: Vec<RelayToken>,
    /// TCP relays: their address and user.
    pub tcp: HashMap<RelayToken, (SocketAddr, String)>,
    /// Connects asked for: relay, from, peer.
    pub connects: Vec<(RelayToken, SocketAddr, SocketAddr)>,
    /// Peer connections with a relay and owner, and whether accepted.
    pub conns: HashMap<u32, (RelayToken, SocketAddr, Option<bool>)>,
    /// ConnectionBinds that claimed a connection.
    pub binds: Vec<(u32, ListenerId, SocketAddr)>,
    /// The next bind fails with "address in use" (once).
    pub fail_next_bind: bool,
}

impl Sockets for FakeSockets {
    fn open_relay(&mut self, token: RelayToken, addr: SocketAddr, df: bool) -> io::Result<()> {
        if std::mem::take(&mut self.fail_next_bind) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        if self.taken.contains(&addr) || self.open.values().any(|(a, _)| *a == addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        assert!(self.open.insert(token, (addr, df)).is_none(), "token reused while open");
        Ok(())
    }
    fn hold(&mut self, addr: SocketAddr) -> io::Result<Held> {
        if self.taken.contains(&addr) || self.open.values().any(|(a, _)| *a == addr) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        self.held.push(addr);
        Ok(Held { addr, socket: None })
    }
    fn adopt_relay(&mut self, token: RelayToken, held: Held, df: bool) -> io::Result<()> {
        assert!(self.held.contains(&held.addr), "adopting an address never held");
        assert!(self.open.insert(token, (held.addr, df)).is_none(), "token reused while open");
        Ok(())
    }
    fn close_relay(&mut self, token: RelayToken) {
        assert!(
            self.open.remove(&token).is_some() || self.tcp.remove(&token).is_some(),
            "closing a socket that is not open"
        );
        self.conns.retain(|_, (t, _, _)| *t != token);
        self.closed.push(token);
    }
    fn open_tcp_relay(&mut self, token: RelayToken, addr: SocketAddr, user: &str, _: IpAddr) -> io::Result<()> {
        assert!(self.tcp.insert(token, (addr, user.to_owned())).is_none(), "token reused while open");
        Ok(())
    }
    fn tcp_connect(&mut self, token: RelayToken, from: SocketAddr, peer: SocketAddr) {
        self.connects.push((token, from, peer));
    }
    fn tcp_busy(&mut self, token: RelayToken, peer: SocketAddr) -> bool {
        self.conns.values().any(|(t, p, _)| *t == token && *p == peer)
    }
    fn tcp_accept(&mut self, id: u32, accept: bool) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.2 = Some(accept);
        }
    }
    fn tcp_bind(&mut self, id: u32, user: &str, listener: ListenerId, client: SocketAddr) -> bool {
        let Some((token, _, accepted)) = self.conns.get(&id) else { return false };
        let owner = self.tcp.get(token).map(|(_, u)| u.as_str());
        if *accepted != Some(true) || owner != Some(user) || self.binds.iter().any(|b| b.0 == id) {
            return false;
        }
        self.binds.push((id, listener, client));
        true
    }
}

/// A configuration to start from: a relay address 127.0.0.1 with ports
/// 50000-50099, users alice/wonderland, bob/builder and carol (an MD5
/// key), two REST secrets, peers at 127.0.0.2 (127.0.0.1 is the host's).
#[must_use]
pub fn config() -> Config {
    let mut users = std::collections::HashMap::new();
    users.insert("alice".to_owned(), UserSecret::Password("wonderland".into()));
    users.insert("bob".to_owned(), UserSecret::Password("builder".into()));
    users.insert(
        "carol".to_owned(),
        UserSecret::Md5Key(*LongTermKey::md5("carol", REALM, "c").as_bytes().first_chunk().unwrap()),
    );
    Config {
        software: Some("ip2p test".into()),
        default_lifetime: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(3600),
        relay_ips: [vec![RelayIp { bind: "127.0.0.1".parse().unwrap(), external: None }], vec![]],
        ports: 50000..=50099,
        channel_numbers: ChannelNumbers::Rfc8656,
        // Peers at 127.0.0.2 (127.0.0.1 is the relay's: the host's own).
        policy: PeerPolicy {
            allow: vec!["127.0.0.2/32".parse().unwrap(), "::1/128".parse().unwrap()],
            deny: vec![],
            host: vec![],
            loopback_peers: vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()],
        },
        alternates: vec![],
        bandwidth: 0,
        unauthenticated_rate: 0,
        events: false,
        session_events: false,
        strict_expiry: false,
        admission: None,
        short_circuit: true,
        credentials: Credentials {
            realm: REALM.into(),
            users,
            rest_secrets: vec![b"old secret".to_vec(), b"new secret".to_vec()],
            nonce_secret: [3; 32],
            nonce_lifetime: 600,
            max_rest_lifetime: 86_400,
        },
    }
}
