//! Sessions of several clients against the TURN core, over virtual time.
//!
//! One input is a sequence of operations: authenticated requests the
//! harness builds and signs (Allocate with its options, Refresh,
//! CreatePermission, ChannelBind, Connect), relayed data both ways, raw
//! packets, RFC 6062 news, connections closing, draining, time passing.
//! Random bytes alone never get past authentication; built requests reach
//! the state the core keeps (allocations, reservations, permissions,
//! channels, quotas, timers), so state bugs are reachable.
//!
//! What must hold after every step: no panic, every verdict names bytes that
//! exist, every reply parses, an unauthenticated reply is at most 4x its
//! request, nothing is sent to this host but at a relayed address, and the
//! timer table holds an entry per allocation and at most one more. At
//! the end, once every lifetime has passed: no allocation, no reservation,
//! no quota held, no relay socket open, no timer left.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_turn::testing::FakeSockets;
use ip2p_turn::{
    Config, Credentials, ListenerId, NodeState, PEER_HEADROOM, PEER_TAILROOM, PeerPolicy, QuotaLimits, Quotas,
    REPLY_BUFFER, RelayIp, RelayToken, Server, Transmit, UserSecret, Verdict, Via,
};
use ip2p_wire::attr::{
    ChannelNumber, EvenPort, Lifetime, Nonce, Realm, RequestedAddressFamily, RequestedTransport, ReservationToken,
    Username, XorPeerAddress, XorRelayedAddress,
};
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{
    AddressFamily, AttrType, Class, Message, MessageType, MessageWriter, Method, TransactionId, Transport,
    write_channel_data,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const REALM: &str = "fuzz";
const UNIX0: u64 = 1_800_000_000;
const PORTS: std::ops::RangeInclusive<u16> = 50000..=50015;
const RELAY_V4: [u8; 4] = [127, 0, 0, 1];
const RELAY_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::LOCALHOST;
const LISTEN_PORT: u16 = 3478;

/// Whom an operation is about.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Peer {
    /// A peer elsewhere (allowed by the test policy).
    Outside(u8),
    /// Another client's relayed address.
    Relayed(u8),
    /// The relay's own listener, or another port of the host.
    Host(u16),
    /// A denied range, spelled in some way.
    Denied(u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate {
        client: u8,
        lifetime: Option<u16>,
        v6: bool,
        dual: bool,
        even: Option<bool>,
        token_of: Option<u8>,
        tcp: bool,
    },
    Refresh {
        client: u8,
        lifetime: Option<u16>,
    },
    Permission {
        client: u8,
        peers: Vec<Peer>,
    },
    Bind {
        client: u8,
        number: u16,
        peer: Peer,
    },
    ChannelData {
        client: u8,
        number: u16,
        len: u8,
    },
    Send {
        client: u8,
        peer: Peer,
        len: u8,
    },
    Connect {
        client: u8,
        peer: Peer,
    },
    PeerSends {
        client: u8,
        peer: Peer,
        len: u8,
    },
    Raw {
        client: u8,
        bytes: Vec<u8>,
    },
    Unauthenticated {
        client: u8,
        method: u16,
        attrs: u8,
    },
    TcpConnected {
        client: u8,
        peer: Peer,
        ok: bool,
    },
    TcpIncoming {
        peer: Peer,
        conn: u32,
    },
    Close {
        client: u8,
    },
    Advance {
        secs: u16,
    },
    FailNextBind,
    Drain,
    /// The host gains (or loses, with `None`) an address: the core judges
    /// its live permissions again.
    HostAddress {
        peer: Option<Peer>,
    },
    /// A reload, denying the outside peers' range or not.
    Reload {
        deny_outside: bool,
    },
    /// The operator ends a client's session.
    Kill {
        client: u8,
    },
    /// The operator revokes a user (the static one or the REST one) for a
    /// while, or lifts it.
    Revoke {
        web: bool,
        secs: Option<u16>,
    },
    /// The fleet's word on a parked Allocate (with fleet-wide quotas).
    Word {
        which: u8,
        word: u8,
    },
}

/// What the harness knows of a client.
#[derive(Default, Clone)]
struct ClientState {
    nonce: Option<String>,
    relayed: Vec<SocketAddr>,
    token: Option<[u8; 8]>,
}

struct Harness {
    server: Server,
    shared: Arc<NodeState>,
    config: Config,
    /// An address the host gained: never a destination but at a relayed port.
    local: Option<IpAddr>,
    sockets: FakeSockets,
    now: Instant,
    /// `now` at the start: unix time UNIX0.
    start: Instant,
    reply: Vec<u8>,
    clients: HashMap<u8, ClientState>,
    tid: u32,
    /// Sessions begun and not ended, as the session events say.
    live_sessions: std::collections::HashSet<ip2p_turn::SessionId>,
    /// Every id a session has had (ids are unique on the node).
    seen_sessions: std::collections::HashSet<ip2p_turn::SessionId>,
    /// Allocates waiting for the fleet's word, with their client.
    asked: Vec<(ip2p_turn::AdmissionRequest, u8)>,
    /// What the fleet's store counts for each user: the admissions it
    /// granted and the journal's changes (it must match the node's count).
    fleet: HashMap<Box<str>, i64>,
}

/// The users: a static one and REST usernames with a few expiries (all of
/// one user part, so they share a quota).
fn user(client: u8) -> (String, String) {
    if client % 3 == 0 {
        return ("alice".into(), "wonderland".into());
    }
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let name = format!("{}:web", UNIX0 + 600 * u64::from(client % 4));
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"fuzz rest secret").unwrap();
    mac.update(name.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (name, password)
}

/// Client `c`'s transport address: even ones over UDP, odd ones on a
/// stream listener; v4 and v6.
fn client_addr(c: u8) -> (ListenerId, SocketAddr) {
    let listener = if c % 2 == 0 { ListenerId::udp(0) } else { ListenerId::stream(0) };
    let port = 40000 + u16::from(c % 8);
    let addr = if c % 5 == 4 {
        SocketAddr::new("2001:db8::7".parse().unwrap(), port)
    } else {
        SocketAddr::from(([198, 51, 100, 1 + c % 3], port))
    };
    (listener, addr)
}

impl Harness {
    /// A node; with `fleet`, its Allocates wait for the fleet's word.
    fn new(fleet: bool) -> Self {
        let mut users = HashMap::new();
        users.insert("alice".to_owned(), UserSecret::Password("wonderland".into()));
        let config = Config {
            software: Some("fuzz".into()),
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            relay_ips: [
                vec![RelayIp { bind: IpAddr::from(RELAY_V4), external: None }],
                vec![RelayIp { bind: IpAddr::V6(RELAY_V6), external: None }],
            ],
            ports: PORTS,
            channel_numbers: Default::default(),
            policy: PeerPolicy {
                allow: vec!["198.18.0.0/15".parse().unwrap()],
                deny: vec!["8.8.8.0/24".parse().unwrap()],
                host: vec![IpAddr::from(RELAY_V4), "192.0.2.9".parse().unwrap()],
                loopback_peers: vec![],
            },
            alternates: vec!["192.0.2.2:3478".parse().unwrap()],
            bandwidth: 4000, // low enough that sessions run into it
            short_circuit: true,
            unauthenticated_rate: 50,
            events: true,
            session_events: true,
            strict_expiry: true,
            admission: fleet.then_some(ip2p_turn::Fallback::Local),
            credentials: Credentials {
                realm: REALM.into(),
                users,
                rest_secrets: vec![b"fuzz rest secret".to_vec()],
                nonce_secret: [1; 32],
                nonce_lifetime: 600,
                max_rest_lifetime: 1200,
            },
        };
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let shared = Arc::new(NodeState::new(Quotas::new(QuotaLimits { total: 12, per_user: 6, per_prefix: 8 })));
        // What a fleet's store would be told (kept in a fleet or not).
        shared.quotas.keep_journal();
        let server = Server::new(Arc::new(config.clone()), shared.clone(), now, UNIX0, 7);
        Self {
            server,
            shared,
            config,
            local: None,
            sockets: FakeSockets::default(),
            now,
            start: now,
            reply: vec![0; REPLY_BUFFER],
            clients: HashMap::new(),
            tid: 0,
            live_sessions: Default::default(),
            seen_sessions: Default::default(),
            asked: Vec::new(),
            fleet: HashMap::new(),
        }
    }

    fn peer_addr(&self, p: Peer) -> SocketAddr {
        match p {
            Peer::Outside(i) => SocketAddr::from(([198, 18, 0, i], 7000 + u16::from(i))),
            Peer::Relayed(c) => {
                let relayed = self.clients.get(&c).map(|s| s.relayed.as_slice()).unwrap_or_default();
                relayed
                    .get(usize::from(c) % relayed.len().max(1))
                    .copied()
                    .unwrap_or(SocketAddr::from((RELAY_V4, 50001)))
            }
            Peer::Host(port) => SocketAddr::from((RELAY_V4, if port % 2 == 0 { LISTEN_PORT } else { port })),
            Peer::Denied(i) => match i % 6 {
                0 => "[::ffff:198.18.0.1]:9".parse().unwrap(),
                1 => "[64:ff9b::808:808]:9".parse().unwrap(),
                2 => "127.0.0.2:9".parse().unwrap(),
                3 => "[::7f00:1]:9".parse().unwrap(),
                4 => "0.0.0.0:9".parse().unwrap(),
                _ => "192.0.2.9:9".parse().unwrap(),
            },
        }
    }

    fn tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId(t)
    }

    /// A request from client `c`, signed when it holds a nonce.
    fn request(&mut self, c: u8, method: Method, attrs: &dyn Fn(&mut MessageWriter<'_>)) -> Vec<u8> {
        let tid = self.tid();
        let mut buf = vec![0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
        attrs(&mut w);
        if let Some(nonce) = self.clients.get(&c).and_then(|s| s.nonce.clone()) {
            let (name, password) = user(c);
            w.add(&Username(&name)).unwrap();
            w.add(&Realm(REALM)).unwrap();
            w.add(&Nonce(&nonce)).unwrap();
            w.integrity(LongTermKey::md5(&name, REALM, &password).as_bytes()).unwrap();
        }
        let len = w.finish();
        buf.truncate(len);
        buf
    }

    /// Sends `packet` from client `c` and checks what comes back; learns
    /// nonces and relayed addresses from replies. Even clients' packets
    /// come with room around them (UDP), odd ones' without (a stream).
    fn from_client(&mut self, c: u8, packet: &[u8]) {
        let (listener, from) = client_addr(c);
        let room = if c % 2 == 0 { PEER_HEADROOM } else { 0 };
        let mut buf = vec![0u8; room + packet.len() + if room > 0 { PEER_TAILROOM } else { 0 }];
        buf[room..room + packet.len()].copy_from_slice(packet);
        let range = room..room + packet.len();
        let verdict =
            self.server.handle_client(self.now, listener, from, &mut buf, range, &mut self.reply, &mut self.sockets);
        match verdict {
            Verdict::Forward(t) => {
                assert!(t.range.end <= buf.len());
                self.check_destination(&t);
            }
            Verdict::ToOwner(h) => {
                assert!(h.transmit.range.end <= buf.len());
                self.check_destination(&h.transmit);
                // Through the inbox, as a datapath passes it on.
                let n = h.transmit.range.len();
                let mut inbox = vec![0u8; PEER_HEADROOM + n + PEER_TAILROOM];
                inbox[PEER_HEADROOM..PEER_HEADROOM + n].copy_from_slice(&buf[h.transmit.range.clone()]);
                let data = PEER_HEADROOM..PEER_HEADROOM + n;
                if let Ok(out) = self.server.handle_inbox(self.now, h.transmit.to, h.from, &mut inbox, data) {
                    assert!(out.range.end <= inbox.len());
                }
            }
            Verdict::Reply(t) => {
                assert!(t.range.end <= self.reply.len());
                let reply = self.reply[t.range].to_vec();
                self.took_reply(c, packet.len(), &reply);
            }
            Verdict::Deferred | Verdict::Drop(_) => {}
        }
        while let Some(asked) = self.server.poll_admission() {
            self.asked.push((asked, c));
        }
        self.check_invariants();
    }

    /// What client `c` learns from `reply` to its `asked` bytes.
    fn took_reply(&mut self, c: u8, asked: usize, reply: &[u8]) {
        let msg = Message::parse(reply).expect("every reply parses");
        if msg.integrity_kind().is_none() {
            assert!(reply.len() <= 4 * asked, "{} bytes answer {asked} unauthenticated", reply.len());
        }
        let state = self.clients.entry(c).or_default();
        if let Ok(Some(Nonce(n))) = msg.get::<Nonce>() {
            state.nonce = Some(n.to_owned());
        }
        if msg.method() == Method::ALLOCATE && msg.class() == Class::Success {
            state.relayed = msg.get_all::<XorRelayedAddress>().flatten().map(|a| a.0).collect();
            state.token = msg.get::<ReservationToken>().ok().flatten().map(|t| *t.0);
        }
    }

    /// Gives the `i`th parked Allocate the fleet's `word`, as a datapath
    /// brings it, and counts what the store would.
    fn word(&mut self, i: usize, word: ip2p_turn::Admission) {
        if self.asked.is_empty() {
            return;
        }
        let (asked, c) = self.asked.remove(i % self.asked.len());
        if word == ip2p_turn::Admission::Admitted {
            *self.fleet.entry(asked.user.clone()).or_default() += i64::from(asked.count);
        }
        let answer = self.server.admitted(self.now, asked.ticket, word, &mut self.reply, &mut self.sockets);
        if let Some(t) = answer {
            assert_eq!((t.via, t.to), (Via::Listener(client_addr(c).0), client_addr(c).1));
            let reply = self.reply[t.range].to_vec();
            self.took_reply(c, 1024, &reply);
        }
    }

    /// The parked Allocates past their wait get the fallback.
    fn overdue(&mut self) {
        while let Some(ticket) = self.server.overdue_admission(self.now) {
            let i = self.asked.iter().position(|(a, _)| a.ticket == ticket).expect("an overdue ticket was asked");
            self.word(i, ip2p_turn::Admission::Unknown);
        }
    }

    /// Nothing leaves for this host but towards a relayed address: never
    /// a listener, never a port outside the relay range.
    fn check_destination(&self, t: &Transmit) {
        if let Via::Relay(_) = t.via {
            let host = t.to.ip() == IpAddr::from(RELAY_V4) || t.to.ip().is_loopback() || t.to.ip().is_unspecified();
            assert!(!host || PORTS.contains(&t.to.port()), "relayed to {} on this host", t.to);
            assert!(t.to.ip() != "192.0.2.9".parse::<IpAddr>().unwrap(), "relayed to a host address");
            assert!(self.local != Some(t.to.ip()), "relayed to {} after the host gained it", t.to);
            assert!(!matches!(t.to.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()), "relayed to {}", t.to);
        }
    }

    fn check_invariants(&mut self) {
        // A published path is live, and names an open UDP relay socket
        // unless a later event withdraws it.
        let events: Vec<_> = std::iter::from_fn(|| self.server.poll_event()).collect();
        for (i, event) in events.iter().enumerate() {
            if let ip2p_turn::Event::Path(p) = event {
                assert!(p.until > self.now, "a path published dead: {p:?}");
                let withdrawn = events.get(i..).unwrap_or_default().contains(&ip2p_turn::Event::RelayGone(p.relay));
                assert!(withdrawn || self.sockets.open.contains_key(&p.relay), "a path on a closed relay: {p:?}");
            }
        }
        let g = self.server.gauges(self.now);
        // One expiry per allocation, and at most one more while it holds
        // (or held, for up to 30 s) a reservation.
        let live = self.server.allocations();
        assert!(
            live <= g.timers as usize && g.timers as usize <= 2 * live,
            "{} timers for {live} allocations",
            g.timers
        );
        assert!(self.shared.quotas.total() >= self.server.allocations());
        // Each session begins once with a new id and ends once.
        while let Some(event) = self.server.poll_session_event() {
            match event {
                ip2p_turn::SessionEvent::Started(s) => {
                    assert!(self.seen_sessions.insert(s.id), "a session id used twice: {}", s.id);
                    self.live_sessions.insert(s.id);
                }
                ip2p_turn::SessionEvent::Ended(s, _) => {
                    assert!(self.live_sessions.remove(&s.id), "a session ended that was not live: {}", s.id);
                }
            }
        }
        let listed = self.server.sessions(self.now);
        assert!(listed.iter().all(|s| self.live_sessions.contains(&s.id)), "a listed session never began");
        assert_eq!(listed.len(), self.server.allocations(), "sessions against allocations");
        // The fleet's count of each user is the node's.
        let journal = self.shared.quotas.take_journal();
        assert!(!journal.lost);
        for (account, change) in journal.changes {
            *self.fleet.entry(account.user).or_default() += i64::from(change);
        }
        self.fleet.retain(|_, n| *n != 0);
        let (users, _) = self.shared.quotas.counts_now();
        let local: HashMap<Box<str>, i64> = users.into_iter().map(|(u, n)| (u, i64::try_from(n).unwrap())).collect();
        assert_eq!(self.fleet, local, "the fleet's count against the node's");
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Allocate { client, lifetime, v6, dual, even, token_of, tcp } => {
                let token = token_of.and_then(|o| self.clients.get(&o).and_then(|s| s.token));
                let packet = self.request(client, Method::ALLOCATE, &|w| {
                    w.add(&if tcp { RequestedTransport::TCP } else { RequestedTransport::UDP }).unwrap();
                    if let Some(l) = lifetime {
                        w.add(&Lifetime(u32::from(l) * 4)).unwrap();
                    }
                    if let Some(t) = &token {
                        w.add(&ReservationToken(t)).unwrap();
                    } else {
                        if v6 {
                            w.add(&RequestedAddressFamily(AddressFamily::IPV6)).unwrap();
                        }
                        if dual && !v6 {
                            w.add_raw(AttrType(0x8000), &[2, 0, 0, 0]).unwrap();
                        }
                        if let Some(r) = even {
                            w.add(&EvenPort { reserve_next: r }).unwrap();
                        }
                    }
                });
                self.from_client(client, &packet);
            }
            Op::Refresh { client, lifetime } => {
                let packet = self.request(client, Method::REFRESH, &|w| {
                    if let Some(l) = lifetime {
                        w.add(&Lifetime(u32::from(l) % 4000)).unwrap();
                    }
                });
                self.from_client(client, &packet);
            }
            Op::Permission { client, peers } => {
                let addrs: Vec<SocketAddr> = peers.iter().take(4).map(|p| self.peer_addr(*p)).collect();
                let packet = self.request(client, Method::CREATE_PERMISSION, &|w| {
                    for a in &addrs {
                        w.add(&XorPeerAddress(*a)).unwrap();
                    }
                });
                self.from_client(client, &packet);
            }
            Op::Bind { client, number, peer } => {
                let peer = self.peer_addr(peer);
                let number = 0x4000 | (number & 0x0FFF);
                let packet = self.request(client, Method::CHANNEL_BIND, &|w| {
                    w.add(&ChannelNumber(number)).unwrap();
                    w.add(&XorPeerAddress(peer)).unwrap();
                });
                self.from_client(client, &packet);
            }
            Op::ChannelData { client, number, len } => {
                let transport = if client % 2 == 0 { Transport::Datagram } else { Transport::Stream };
                let mut buf = vec![0u8; usize::from(len) + 8];
                let n = write_channel_data(&mut buf, 0x4000 | (number & 0x0FFF), &vec![7; usize::from(len)], transport)
                    .unwrap();
                buf.truncate(n);
                self.from_client(client, &buf);
            }
            Op::Send { client, peer, len } => {
                let peer = self.peer_addr(peer);
                let tid = self.tid();
                let mut buf = vec![0u8; 512];
                let mut w =
                    MessageWriter::new(&mut buf, MessageType::new(Method::SEND, Class::Indication), tid).unwrap();
                w.add(&XorPeerAddress(peer)).unwrap();
                w.add(&ip2p_wire::attr::Data(&vec![9; usize::from(len)])).unwrap();
                let n = w.finish();
                buf.truncate(n);
                self.from_client(client, &buf);
            }
            Op::Connect { client, peer } => {
                let peer = self.peer_addr(peer);
                let packet = self.request(client, Method::CONNECT, &|w| {
                    w.add(&XorPeerAddress(peer)).unwrap();
                });
                self.from_client(client, &packet);
            }
            Op::PeerSends { client, peer, len } => {
                let from = self.peer_addr(peer);
                let mut tokens: Vec<RelayToken> = self.sockets.open.keys().copied().collect();
                tokens.sort();
                let Some(&token) = tokens.get(usize::from(client) % tokens.len().max(1)) else { return };
                let mut buf = vec![0u8; PEER_HEADROOM + usize::from(len) + PEER_TAILROOM];
                let data = PEER_HEADROOM..PEER_HEADROOM + usize::from(len);
                if let Ok(t) = self.server.handle_peer(self.now, token, from, &mut buf, data) {
                    assert!(t.range.end <= buf.len());
                }
            }
            Op::Raw { client, bytes } => self.from_client(client, &bytes),
            Op::Unauthenticated { client, method, attrs } => {
                let tid = self.tid();
                let mut buf = vec![0u8; 256];
                let Some(method) = Method::new(method & 0x0FFF) else { return };
                let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
                if attrs & 1 != 0 {
                    w.add(&RequestedTransport::UDP).unwrap();
                }
                let n = if attrs & 2 != 0 { w.fingerprint().unwrap() } else { w.finish() };
                buf.truncate(n);
                self.from_client(client, &buf);
            }
            Op::TcpConnected { client, peer, ok } => {
                let peer = self.peer_addr(peer);
                for token in self.sockets.tcp.keys().copied().collect::<Vec<_>>() {
                    let conn = ok.then_some(u32::from(client));
                    if let Some(t) = self.server.tcp_connected(token, peer, conn, &mut self.reply) {
                        assert!(t.range.end <= self.reply.len());
                    }
                }
            }
            Op::TcpIncoming { peer, conn } => {
                let peer = self.peer_addr(peer);
                for token in self.sockets.tcp.keys().copied().collect::<Vec<_>>() {
                    let t = self.server.tcp_incoming(self.now, token, peer, conn, &mut self.reply, &mut self.sockets);
                    if let Some(t) = t {
                        assert!(t.range.end <= self.reply.len());
                    }
                }
            }
            Op::Close { client } => {
                let (listener, from) = client_addr(client);
                self.server.client_closed(self.now, listener, from, &mut self.sockets);
            }
            Op::Advance { secs } => {
                self.now += Duration::from_secs(u64::from(secs % 900));
                self.server.handle_timeout(self.now, &mut self.sockets);
                self.overdue();
            }
            Op::FailNextBind => self.sockets.fail_next_bind = true,
            Op::Drain => self.server.drain(),
            Op::HostAddress { peer } => {
                // Not one of the relay addresses: a peer there is relayed
                // to at its relayed ports only, which the check allows.
                let relay_ip = |ip: &IpAddr| *ip == IpAddr::from(RELAY_V4) || *ip == IpAddr::from(RELAY_V6);
                self.local = peer.map(|p| self.peer_addr(p).ip()).filter(|ip| !relay_ip(ip));
                let nets = self.local.map(ipnet::IpNet::from);
                self.shared.local.set(ip2p_turn::LocalRanges::new(nets));
                self.server.rejudge(self.now);
            }
            Op::Kill { client } => {
                let (_, from) = client_addr(client);
                let id = self.server.sessions(self.now).iter().find(|s| s.client == from).map(|s| s.id);
                if let Some(id) = id {
                    assert!(self.server.end_session(self.now, id));
                    assert!(!self.server.end_session(self.now, id), "ended twice");
                }
                // Its timer is due now: the worker's next turn reaps it.
                self.server.handle_timeout(self.now, &mut self.sockets);
            }
            Op::Revoke { web, secs } => {
                let user = if web { "web" } else { "alice" };
                match secs {
                    Some(s) => {
                        let unix = UNIX0 + self.now.saturating_duration_since(self.start).as_secs();
                        let _ = self.shared.revocations.add(user, unix + u64::from(s % 1000) + 1, unix);
                        self.server.end_sessions_of(self.now, user, ip2p_turn::End::Revoked);
                        let q = ip2p_turn::SessionQuery { user: Some(user.into()), ..Default::default() };
                        assert!(self.server.sessions_where(self.now, &q).is_empty(), "a revoked user's session lives");
                        self.server.handle_timeout(self.now, &mut self.sockets);
                    }
                    None => {
                        self.shared.revocations.remove(user);
                    }
                }
            }
            Op::Word { which, word } => {
                use ip2p_turn::Admission::*;
                let word = [Admitted, OverUser, OverPrefix, Unknown][usize::from(word % 4)];
                self.word(usize::from(which), word);
            }
            Op::Reload { deny_outside } => {
                let mut config = self.config.clone();
                if deny_outside {
                    config.policy.deny.push("198.18.0.0/16".parse().unwrap());
                }
                self.server.reconfigure(Arc::new(config), self.now);
            }
        }
        self.check_invariants();
    }

    /// Every lifetime passes: nothing may be left.
    fn finish(mut self) {
        while !self.asked.is_empty() {
            self.word(0, ip2p_turn::Admission::Unknown);
        }
        for _ in 0..3 {
            self.now += Duration::from_secs(7200);
            self.server.handle_timeout(self.now, &mut self.sockets);
        }
        assert_eq!(self.server.allocations(), 0);
        assert_eq!(self.shared.reservations(), 0, "a reservation outlived its lifetime");
        assert_eq!(self.shared.quotas.total(), 0, "quota leaked");
        assert!(self.sockets.open.is_empty() && self.sockets.tcp.is_empty(), "relay sockets left open");
        assert_eq!(self.server.gauges(self.now).timers, 0, "timers left");
        while let Some(event) = self.server.poll_session_event() {
            if let ip2p_turn::SessionEvent::Ended(s, _) = event {
                self.live_sessions.remove(&s.id);
            }
        }
        assert!(self.live_sessions.is_empty(), "sessions that never ended: {:?}", self.live_sessions);
    }
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (fleet, ops) = input;
    let mut h = Harness::new(fleet);
    for op in ops.into_iter().take(200) {
        h.apply(op);
    }
    h.finish();
});
