//! Deterministic tests of the TURN core: fake sockets, a virtual clock, and
//! a minimal client that does the long-term credential dance.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_wire::attr::*;
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{
    AddressFamily, Attribute, ChannelData, Class, ErrorCode, IntegrityKind, Message, MessageType, MessageWriter,
    Method, TransactionId, Transport, write_channel_data,
};

use super::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::testing::{FakeSockets, REALM, UNIX0, config, t0};

struct Harness {
    server: Server,
    /// The listener clients use: UDP unless a test says otherwise.
    listener: ListenerId,
    sockets: FakeSockets,
    now: Instant,
    reply: Vec<u8>,
    next_tid: u32,
    /// The nonce each client address holds.
    nonces: HashMap<String, String>,
}

/// The client's side of an exchange: an owned copy of the response.
struct Response(Vec<u8>);

impl Response {
    fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).unwrap()
    }
    fn class(&self) -> Class {
        self.msg().class()
    }
    fn code(&self) -> Option<u16> {
        self.msg().get::<ErrorCodeAttr>().unwrap().map(|e| e.code.code())
    }
    fn nonce(&self) -> String {
        self.msg().get::<Nonce>().unwrap().unwrap().0.to_owned()
    }
    fn relayed(&self) -> Vec<SocketAddr> {
        self.msg().get_all::<XorRelayedAddress>().map(|a| a.unwrap().0).collect()
    }
    fn lifetime(&self) -> Option<u32> {
        self.msg().get::<Lifetime>().unwrap().map(|l| l.0)
    }
}

/// Credentials a test client presents.
#[derive(Clone)]
struct Creds {
    user: String,
    password: String,
    sha256: bool,
}

fn creds(user: &str, password: &str) -> Creds {
    Creds { user: user.into(), password: password.into(), sha256: false }
}

const CLIENT: &str = "127.0.0.1:40000";
const PEER: &str = "127.0.0.2:7000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl Harness {
    fn new() -> Self {
        Self::with(config(), Quotas::default())
    }

    fn with(config: Config, quotas: Quotas) -> Self {
        let now = t0();
        Self {
            server: Server::new(Arc::new(config), Arc::new(NodeState::new(quotas)), now, UNIX0, 42),
            listener: ListenerId::udp(0),
            sockets: FakeSockets::default(),
            now,
            reply: vec![0; REPLY_BUFFER],
            next_tid: 0,
            nonces: HashMap::new(),
        }
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now, &mut self.sockets);
    }

    fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut tid = [u8::try_from(self.next_tid % 256).unwrap(); 12];
        tid[..4].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId(tid)
    }

    fn send(&mut self, from: &str, packet: &[u8]) -> Verdict {
        let mut buf = packet.to_vec();
        let len = buf.len();
        self.server.handle_client(
            self.now,
            self.listener,
            addr(from),
            &mut buf,
            0..len,
            &mut self.reply,
            &mut self.sockets,
        )
    }

    /// Sends a request and returns the response.
    fn exchange(&mut self, from: &str, packet: &[u8]) -> Response {
        match self.send(from, packet) {
            Verdict::Reply(t) => {
                assert_eq!((t.via, t.to), (Via::Listener(self.listener), addr(from)));
                Response(self.reply[t.range].to_vec())
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// A request with `attrs` and, given `auth`, USERNAME, REALM, NONCE and
    /// integrity.
    fn build(
        &mut self,
        method: Method,
        tid: TransactionId,
        attrs: &[Attribute<'_>],
        auth: Option<(&Creds, &str)>,
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
        for a in attrs {
            w.add_attribute(a).unwrap();
        }
        if let Some((c, nonce)) = auth {
            w.add(&Username(&c.user)).unwrap();
            w.add(&Realm(REALM)).unwrap();
            w.add(&Nonce(nonce)).unwrap();
            if c.sha256 {
                w.add(&PasswordAlgorithms::new(&super::auth::OFFERED_ALGORITHMS)).unwrap();
                w.add(&PasswordAlgorithm::new(AlgorithmId::SHA256)).unwrap();
                let key = LongTermKey::derive(AlgorithmId::SHA256, &c.user, REALM, &c.password).unwrap();
                w.integrity_sha256(key.as_bytes()).unwrap();
            } else {
                w.integrity(LongTermKey::md5(&c.user, REALM, &c.password).as_bytes()).unwrap();
            }
        }
        let len = w.finish();
        buf.truncate(len);
        buf
    }

    /// The nonce a client at `from` uses: the one it was given last, or
    /// one from the 401 to an unauthenticated Allocate (the smallest
    /// request that is answered with a challenge, not a bare 401).
    fn nonce_for(&mut self, from: &str) -> String {
        if let Some(nonce) = self.nonces.get(from) {
            return nonce.clone();
        }
        let tid = self.tid();
        let first = self.build(Method::ALLOCATE, tid, &[Attribute::RequestedTransport(RequestedTransport::UDP)], None);
        let challenge = self.exchange(from, &first);
        assert_eq!(challenge.code(), Some(401));
        let nonce = challenge.nonce();
        self.nonces.insert(from.to_owned(), nonce.clone());
        nonce
    }

    /// A request as clients make it: authenticated with the nonce the
    /// client holds (after a challenge when it holds none), once more with
    /// a fresh one after a 438.
    fn authed(&mut self, from: &str, method: Method, attrs: &[Attribute<'_>], c: &Creds) -> Response {
        let nonce = self.nonce_for(from);
        let tid = self.tid();
        let request = self.build(method, tid, attrs, Some((c, &nonce)));
        let r = self.exchange(from, &request);
        if r.code() != Some(438) {
            return r;
        }
        self.nonces.insert(from.to_owned(), r.nonce());
        self.authed(from, method, attrs, c)
    }

    fn allocate(&mut self, from: &str, c: &Creds) -> SocketAddr {
        let r = self.authed(from, Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::UDP)], c);
        assert_eq!(r.class(), Class::Success, "allocate failed: {:?}", r.code());
        r.relayed()[0]
    }

    fn alice() -> Creds {
        creds("alice", "wonderland")
    }

    /// A datagram from `peer` to relay `token`, as a datapath presents it.
    fn peer_sends(&mut self, token: RelayToken, peer: &str, payload: &[u8]) -> (Result<Transmit, DropReason>, Vec<u8>) {
        let mut buf = vec![0xAA; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let v = self.server.handle_peer(
            self.now,
            token,
            addr(peer),
            &mut buf,
            PEER_HEADROOM..PEER_HEADROOM + payload.len(),
        );
        (v, buf)
    }

    /// The full dance for a request whose answer is deferred: returns the
    /// verdict of the authenticated request.
    fn send_authed_deferred(&mut self, from: &str, method: Method, attrs: &[Attribute<'_>], c: &Creds) -> Verdict {
        let nonce = self.nonce_for(from);
        let tid = self.tid();
        let second = self.build(method, tid, attrs, Some((c, &nonce)));
        self.send(from, &second)
    }

    fn only_token(&self) -> RelayToken {
        assert_eq!(self.sockets.open.len(), 1);
        *self.sockets.open.keys().next().unwrap()
    }
}

fn peer_attr(s: &str) -> Attribute<'static> {
    Attribute::XorPeerAddress(XorPeerAddress(addr(s)))
}

#[test]
fn binding_answers_with_the_reflexive_address_and_mirrors_fingerprint() {
    let mut h = Harness::new();
    let tid = h.tid();
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Request), tid).unwrap();
    let len = w.fingerprint().unwrap();
    let r = h.exchange(CLIENT, &buf[..len]);
    let m = r.msg();
    assert_eq!(m.message_type(), MessageType::new(Method::BINDING, Class::Success));
    assert_eq!(m.transaction_id(), &tid);
    assert_eq!(m.get::<XorMappedAddress>().unwrap(), Some(XorMappedAddress(addr(CLIENT))));
    assert!(m.verify_fingerprint().is_ok());

    let plain = h.build(Method::BINDING, tid, &[], None);
    assert!(!h.exchange(CLIENT, &plain).msg().has_fingerprint());

    let unknown = h.build(
        Method::BINDING,
        tid,
        &[Attribute::Unknown(RawAttribute { typ: AttrType(0x0024), value: &[0; 4] })],
        None,
    );
    let r = h.exchange(CLIENT, &unknown);
    assert_eq!(r.code(), Some(420));
    let listed: Vec<_> = r.msg().get::<UnknownAttributes>().unwrap().unwrap().iter().collect();
    assert_eq!(listed, [AttrType(0x0024)]);
}

#[test]
fn allocate_challenges_then_allocates() {
    let mut h = Harness::new();
    let tid = h.tid();
    let req = h.build(Method::ALLOCATE, tid, &[Attribute::RequestedTransport(RequestedTransport::UDP)], None);
    let challenge = h.exchange(CLIENT, &req);
    assert_eq!(challenge.code(), Some(401));
    let m = challenge.msg();
    assert_eq!(m.get::<Realm>().unwrap(), Some(Realm(REALM)));
    assert!(challenge.nonce().starts_with("obMatJos2AAAB"));
    assert!(m.get::<PasswordAlgorithms>().unwrap().is_some());
    assert_eq!(m.integrity_kind(), None);
    assert!(h.sockets.open.is_empty());

    let c = Harness::alice();
    let tid = h.tid();
    let req = h.build(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(RequestedTransport::UDP)],
        Some((&c, &challenge.nonce())),
    );
    let r = h.exchange(CLIENT, &req);
    let m = r.msg();
    assert_eq!(m.class(), Class::Success);
    assert_eq!(m.verify_integrity(LongTermKey::md5("alice", REALM, "wonderland").as_bytes()), Ok(IntegrityKind::Sha1));
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 1);
    assert!((50000..=50099).contains(&relayed[0].port()));
    assert_eq!(r.lifetime(), Some(600));
    assert_eq!(m.get::<XorMappedAddress>().unwrap(), Some(XorMappedAddress(addr(CLIENT))));
    assert_eq!(m.get::<Software>().unwrap(), Some(Software("ip2p test")));
    assert_eq!(h.sockets.open.values().next(), Some(&(relayed[0], false)));
    assert_eq!(h.server.allocations(), 1);

    // A retransmission of the same request gets the same answer, not 437.
    let again = h.exchange(CLIENT, &req);
    assert_eq!(again.class(), Class::Success);
    assert_eq!(again.relayed(), relayed);
    assert_eq!(h.sockets.open.len(), 1);
    // A new Allocate on the same 5-tuple is a mismatch.
    let tid = h.tid();
    let other = h.build(
        Method::ALLOCATE,
        tid,
        &[Attribute::RequestedTransport(RequestedTransport::UDP)],
        Some((&c, &challenge.nonce())),
    );
    let r = h.exchange(CLIENT, &other);
    assert_eq!(r.code(), Some(437));
    assert!(r.msg().verify_integrity(LongTermKey::md5("alice", REALM, "wonderland").as_bytes()).is_ok());
}

#[test]
fn wrong_credentials_and_stale_nonces() {
    let mut h = Harness::new();
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &creds("alice", "wrong"));
    assert_eq!(r.code(), Some(401));
    assert!(r.msg().get::<Nonce>().unwrap().is_some(), "401 carries a fresh nonce");
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &creds("mallory", "x"));
    assert_eq!(r.code(), Some(401));

    // A nonce older than its lifetime gets 438 and a new nonce that works.
    let tid = h.tid();
    let first = h.build(Method::ALLOCATE, tid, &udp, None);
    let nonce = h.exchange(CLIENT, &first).nonce();
    h.advance(601);
    let c = Harness::alice();
    let tid = h.tid();
    let stale = h.build(Method::ALLOCATE, tid, &udp, Some((&c, &nonce)));
    let r = h.exchange(CLIENT, &stale);
    assert_eq!(r.code(), Some(438));
    let fresh = r.nonce();
    assert_ne!(fresh, nonce);
    let tid = h.tid();
    let retry = h.build(Method::ALLOCATE, tid, &udp, Some((&c, &fresh)));
    assert_eq!(h.exchange(CLIENT, &retry).class(), Class::Success);

    // A nonce issued to another client address is not accepted.
    let tid = h.tid();
    let stolen = h.build(Method::ALLOCATE, tid, &udp, Some((&c, &fresh)));
    assert_eq!(h.exchange("127.0.0.1:40001", &stolen).code(), Some(438));

    // Integrity without USERNAME, REALM or NONCE is a bad request.
    let tid = h.tid();
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), tid).unwrap();
    w.add(&RequestedTransport::UDP).unwrap();
    w.integrity(b"k").unwrap();
    let len = w.finish();
    assert_eq!(h.exchange(CLIENT, &buf[..len]).code(), Some(400));
    let failures = h.server.stats().auth_failures;
    let expected =
        AuthFailures { bad_integrity: 1, unknown_user: 1, stale_nonce: 2, bad_request: 1, ..Default::default() };
    assert_eq!(failures, expected);
    let responses = &h.server.stats().responses;
    assert_eq!(responses.get("allocate", "401"), 4, "two failures and two challenges (the client keeps its nonce)");
    assert_eq!(responses.get("allocate", "438"), 2);
    assert_eq!(responses.get("allocate", "400"), 1);
    assert_eq!(responses.get("allocate", "success"), 1);
}

#[test]
fn allocate_validates_transport_and_lifetime() {
    let mut h = Harness::new();
    let c = Harness::alice();
    assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &[], &c).code(), Some(400));
    // RFC 6062 §5.1: TCP needs a TCP or TLS control connection (400);
    // another protocol is unsupported (442).
    let tcp = [Attribute::RequestedTransport(RequestedTransport::TCP)];
    assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &tcp, &c).code(), Some(400));
    let sctp = [Attribute::RequestedTransport(RequestedTransport(132))];
    assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &sctp, &c).code(), Some(442));
    for (i, (asked, granted)) in [(10, 600), (1200, 1200), (100_000, 3600)].into_iter().enumerate() {
        let from = format!("127.0.0.1:{}", 41000 + i);
        let attrs = [Attribute::RequestedTransport(RequestedTransport::UDP), Attribute::Lifetime(Lifetime(asked))];
        assert_eq!(h.authed(&from, Method::ALLOCATE, &attrs, &c).lifetime(), Some(granted), "asked {asked}");
    }
    assert!(h.sockets.open.is_empty() || h.sockets.open.len() == 3);
}

#[test]
fn address_families_and_dual_allocations() {
    let mut cfg = config();
    cfg.relay_ips[1] = vec![RelayIp { bind: "::1".parse().unwrap(), external: None }];
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let udp = Attribute::RequestedTransport(RequestedTransport::UDP);
    let v6 = [udp, Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV6))];
    let r = h.authed("127.0.0.1:41001", Method::ALLOCATE, &v6, &c);
    assert!(r.relayed()[0].is_ipv6());
    let dual = [udp, Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6))];
    let r = h.authed("127.0.0.1:41002", Method::ALLOCATE, &dual, &c);
    let relayed = r.relayed();
    assert_eq!(relayed.len(), 2);
    assert!(relayed[0].is_ipv4() && relayed[1].is_ipv6());
    let both = [
        udp,
        Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV4)),
        Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)),
    ];
    assert_eq!(h.authed("127.0.0.1:41003", Method::ALLOCATE, &both, &c).code(), Some(400));
    let aaf_v4 = [udp, Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV4))];
    assert_eq!(h.authed("127.0.0.1:41004", Method::ALLOCATE, &aaf_v4, &c).code(), Some(400));
    let unknown = [udp, Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily(9)))];
    assert_eq!(h.authed("127.0.0.1:41005", Method::ALLOCATE, &unknown, &c).code(), Some(440));

    // Refresh of the dual allocation deleting only IPv6.
    let del_v6 = [
        Attribute::Lifetime(Lifetime(0)),
        Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV6)),
    ];
    let r = h.authed("127.0.0.1:41002", Method::REFRESH, &del_v6, &c);
    assert_eq!((r.class(), r.lifetime()), (Class::Success, Some(0)));
    assert_eq!(h.sockets.open.len(), 2, "v6-only allocation and the dual's v4 remain");
    let v6_again = [Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV6))];
    assert_eq!(h.authed("127.0.0.1:41002", Method::REFRESH, &v6_again, &c).code(), Some(443));

    // Without IPv6 relaying: 440 for IPv6, partial success for dual.
    let mut h = Harness::new();
    assert_eq!(h.authed("127.0.0.1:41006", Method::ALLOCATE, &v6, &c).code(), Some(440));
    let r = h.authed("127.0.0.1:41007", Method::ALLOCATE, &dual, &c);
    assert_eq!(r.relayed().len(), 1);
    let e = r.msg().get::<AddressErrorCode>().unwrap().unwrap();
    assert_eq!((e.family, e.code), (AddressFamily::IPV6, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED));
}

#[test]
fn even_port_reservation_and_dont_fragment() {
    let mut h = Harness::new();
    let c = Harness::alice();
    let udp = Attribute::RequestedTransport(RequestedTransport::UDP);
    for i in 0..10 {
        let r = h.authed(
            &format!("127.0.0.1:{}", 42000 + i),
            Method::ALLOCATE,
            &[udp, Attribute::EvenPort(EvenPort { reserve_next: false })],
            &c,
        );
        assert_eq!(r.relayed()[0].port() % 2, 0);
    }
    let token_even = [
        udp,
        Attribute::ReservationToken(ReservationToken(&[1; 8])),
        Attribute::EvenPort(EvenPort { reserve_next: false }),
    ];
    assert_eq!(h.authed("127.0.0.1:42102", Method::ALLOCATE, &token_even, &c).code(), Some(400));
    let unknown = [udp, Attribute::ReservationToken(ReservationToken(&[1; 8]))];
    assert_eq!(h.authed("127.0.0.1:42101", Method::ALLOCATE, &unknown, &c).code(), Some(508));

    let df = [udp, Attribute::DontFragment(DontFragment)];
    let relayed = h.authed("127.0.0.1:42103", Method::ALLOCATE, &df, &c).relayed()[0];
    assert!(h.sockets.open.values().any(|&(a, df)| a == relayed && df));
}

#[test]
fn even_port_reservations_pair_rtp_and_rtcp() {
    // RFC 8656 §7.2: R=1 allocates an even port N and reserves N+1 for the
    // Allocate that presents the token (coturn's uclient does this for
    // RTP/RTCP pairs).
    let mut cfg = config();
    cfg.ports = 50000..=50005;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let udp = Attribute::RequestedTransport(RequestedTransport::UDP);
    let r =
        h.authed("127.0.0.1:46000", Method::ALLOCATE, &[udp, Attribute::EvenPort(EvenPort { reserve_next: true })], &c);
    let rtp = r.relayed()[0];
    assert_eq!(rtp.port() % 2, 0);
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    // N+1 is bound now, so no other process can take it either.
    assert_eq!(h.sockets.held, [SocketAddr::new(rtp.ip(), rtp.port() + 1)]);

    // Other allocations never get the reserved port.
    let mut ports = vec![rtp.port()];
    for i in 0..4 {
        ports.push(h.allocate(&format!("127.0.0.1:{}", 46001 + i), &c).port());
    }
    assert!(!ports.contains(&(rtp.port() + 1)), "{ports:?}");
    let with_token = [udp, Attribute::ReservationToken(ReservationToken(&token))];
    let r = h.authed("127.0.0.1:46010", Method::ALLOCATE, &with_token, &c);
    assert_eq!(r.relayed(), [SocketAddr::new(rtp.ip(), rtp.port() + 1)]);
    assert!(h.sockets.open.values().any(|&(a, _)| a == r.relayed()[0]), "the held socket became the relay");
    assert_eq!(h.authed("127.0.0.1:46011", Method::ALLOCATE, &with_token, &c).code(), Some(508), "used up");
    assert_eq!(h.server.shared.reservations(), 0);

    // N+1 taken by another process: that pair is given up, N closed again.
    let mut given_up = 0;
    for seed in 0..8 {
        let mut cfg = config();
        cfg.ports = 50000..=50003;
        let mut h = Harness::with(cfg, Quotas::default());
        h.server.rng = SmallRng::seed_from_u64(seed);
        h.sockets.taken.insert("127.0.0.1:50001".parse().unwrap());
        let r = h.authed(
            "127.0.0.1:46030",
            Method::ALLOCATE,
            &[udp, Attribute::EvenPort(EvenPort { reserve_next: true })],
            &c,
        );
        assert_eq!(r.relayed()[0].port(), 50002, "seed {seed}");
        assert_eq!(h.sockets.held.last().map(SocketAddr::port), Some(50003));
        assert_eq!(h.sockets.open.len(), 1, "50000 was closed if tried");
        given_up += h.sockets.closed.len();
    }
    assert!(given_up > 0, "some seed tried 50000 first");

    // A reservation lapses after 30 s.
    let mut h = Harness::new();
    let r =
        h.authed("127.0.0.1:46020", Method::ALLOCATE, &[udp, Attribute::EvenPort(EvenPort { reserve_next: true })], &c);
    let token = *r.msg().get::<ReservationToken>().unwrap().unwrap().0;
    assert_eq!(h.server.shared.reservations(), 1);
    h.advance(31);
    assert_eq!(h.server.shared.reservations(), 0, "released (its socket closed) when it lapses");
    let with_token = [udp, Attribute::ReservationToken(ReservationToken(&token))];
    assert_eq!(h.authed("127.0.0.1:46021", Method::ALLOCATE, &with_token, &c).code(), Some(508));
    let dual_reserve = [
        udp,
        Attribute::EvenPort(EvenPort { reserve_next: true }),
        Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)),
    ];
    assert_eq!(h.authed("127.0.0.1:46022", Method::ALLOCATE, &dual_reserve, &c).code(), Some(400));
}

#[test]
fn external_addresses_are_advertised_and_bound_locally() {
    // Behind 1:1 NAT the relay binds its local address and advertises the
    // public one with the same port.
    let mut cfg = config();
    cfg.relay_ips[0] =
        vec![RelayIp { bind: "127.0.0.1".parse().unwrap(), external: Some("203.0.113.10".parse().unwrap()) }];
    let mut h = Harness::with(cfg, Quotas::default());
    let relayed = h.allocate(CLIENT, &Harness::alice());
    assert_eq!(relayed.ip(), "203.0.113.10".parse::<std::net::IpAddr>().unwrap());
    let bound = h.sockets.open.values().next().unwrap().0;
    assert_eq!(bound, SocketAddr::new("127.0.0.1".parse().unwrap(), relayed.port()));
}

#[test]
fn refresh_extends_and_deletes() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    h.advance(500);
    let r = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(900))], &c);
    assert_eq!(r.lifetime(), Some(900));
    h.advance(800);
    assert_eq!(h.server.allocations(), 1, "refreshed at 500 s for 900 s");
    let r = h.authed(CLIENT, Method::REFRESH, &[], &c);
    assert_eq!(r.lifetime(), Some(600), "no LIFETIME: the default");
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &creds("bob", "builder")).code(), Some(441));
    let r = h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c);
    assert_eq!((r.class(), r.lifetime()), (Class::Success, Some(0)));
    assert_eq!(h.server.allocations(), 0);
    assert!(h.sockets.open.is_empty());
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &c).code(), Some(437));
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).code(), Some(437));
}

#[test]
fn allocations_expire_and_release_their_ports_and_quota() {
    let mut h = Harness::with(config(), Quotas::new(QuotaLimits { per_user: 1, ..QuotaLimits::default() }));
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:40001", Method::ALLOCATE, &udp, &c).code(), Some(486));
    assert_eq!(h.server.stats().allocations_refused.user_quota, 1);
    assert_eq!(h.server.poll_timeout(), Some(h.now + Duration::from_secs(600)));
    h.advance(599);
    assert_eq!(h.server.allocations(), 1);
    h.advance(1);
    assert_eq!(h.server.allocations(), 0);
    assert!(h.sockets.open.is_empty());
    assert_eq!(h.server.stats().allocations_expired, 1);
    h.allocate("127.0.0.1:40001", &c);
}

#[test]
fn permissions_gate_peer_traffic_both_ways() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();

    // Without a permission, nothing passes either way.
    let (v, _) = h.peer_sends(token, PEER, b"hi");
    assert_eq!(v, Err(DropReason::NoPermission));
    let tid = h.tid();
    let send = h.build_send(tid, PEER, b"hello");
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::NoPermission));

    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER), peer_attr("[::1]:9")], &c);
    assert_eq!(r.code(), Some(443), "an IPv6 peer needs an IPv6 relayed address");
    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER), peer_attr("127.0.0.3:1")], &c);
    assert_eq!(r.code(), Some(403), "127.0.0.3 is not allowed");
    let (v, _) = h.peer_sends(token, PEER, b"hi");
    assert_eq!(v, Err(DropReason::NoPermission), "a refused request installs nothing");
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[], &c).code(), Some(400));
    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c);
    assert_eq!(r.class(), Class::Success);

    // Send indication: forwarded where the DATA value lies.
    let v = h.send(CLIENT, &send);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!((t.via, t.to), (Via::Relay(token), addr(PEER)));
    assert_eq!(&send[t.range], b"hello");

    // A peer datagram (any port of the permitted IP) becomes a Data indication.
    let (v, buf) = h.peer_sends(token, "127.0.0.2:7777", b"world!");
    let Ok(t) = v else { panic!("{v:?}") };
    assert_eq!((t.via, t.to), (Via::Listener(ListenerId::udp(0)), addr(CLIENT)));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.message_type(), MessageType::new(Method::DATA, Class::Indication));
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(addr("127.0.0.2:7777"))));
    assert_eq!(m.get::<Data>().unwrap(), Some(Data(b"world!")));

    // Permissions last 300 s.
    h.advance(299);
    assert!(h.peer_sends(token, PEER, b"x").0.is_ok());
    h.advance(1);
    assert_eq!(h.peer_sends(token, PEER, b"x").0, Err(DropReason::NoPermission));
    let stats = h.server.stats();
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (1, 2));
    assert_eq!(stats.dropped.no_permission, 4);
}

#[test]
fn bandwidth_is_limited_per_allocation_and_direction() {
    let mut cfg = config();
    cfg.bandwidth = 1000; // bytes a second, each way
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    let mut cd = [0u8; 512];
    let len = write_channel_data(&mut cd, 0x4000, &[7; 400], Transport::Datagram).unwrap();

    // A second's worth comes at once: two 400-byte packets, not three.
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::RateLimit));
    // The other direction has its own budget.
    assert!(h.peer_sends(token, PEER, &[1; 900]).0.is_ok());
    assert_eq!(h.peer_sends(token, PEER, &[1; 200]).0, Err(DropReason::RateLimit));
    // Half a second later, half a second's worth more (but the Send
    // indication path counts as well).
    h.now += Duration::from_millis(500);
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::RateLimit));
    let tid = h.tid();
    let send = h.build_send(tid, PEER, &[3; 400]);
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::RateLimit));
    assert!(h.peer_sends(token, PEER, &[1; 600]).0.is_ok());
    // Idle time banks at most one second's worth.
    h.now += Duration::from_secs(60);
    assert!(matches!(h.send(CLIENT, &send), Verdict::Forward(_)));
    assert!(matches!(h.send(CLIENT, &send), Verdict::Forward(_)));
    assert_eq!(h.send(CLIENT, &send), Verdict::Drop(DropReason::RateLimit));
    let stats = h.server.stats();
    assert_eq!(stats.dropped.rate_limit, 5);
    assert_eq!((stats.to_peer_packets, stats.to_peer_bytes), (5, 2000));
    assert_eq!((stats.to_client_packets, stats.to_client_bytes), (2, 1500));
}

#[test]
fn channels_bind_and_carry_data_both_ways() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();
    let bind = |n: u16, p: &'static str| [Attribute::ChannelNumber(ChannelNumber(n)), peer_attr(p)];

    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x3FFF, PEER), &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x5000, PEER), &c).code(), Some(400), "RFC 8656 range");
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &[peer_attr(PEER)], &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, "10.0.0.1:5"), &c).code(), Some(403));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(), Class::Success);
    assert_eq!(
        h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, PEER), &c).class(),
        Class::Success,
        "rebind refreshes"
    );
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, "127.0.0.2:7001"), &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4001, PEER), &c).code(), Some(400));

    // Client → peer: the ChannelData payload, in place.
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"ping", Transport::Datagram).unwrap();
    let Verdict::Forward(t) = h.send(CLIENT, &cd[..len]) else { panic!() };
    assert_eq!((t.via, t.to, &cd[t.range.clone()]), (Via::Relay(token), addr(PEER), &b"ping"[..]));
    let len = write_channel_data(&mut cd, 0x4001, b"ping", Transport::Datagram).unwrap();
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoChannel));
    assert_eq!(h.send("127.0.0.1:1", &cd[..len]), Verdict::Drop(DropReason::NoAllocation));

    // Peer → client: ChannelData framed in the headroom (the bind installed
    // the permission); another port of the same IP gets a Data indication.
    let (v, buf) = h.peer_sends(token, PEER, b"pong");
    let Ok(t) = v else { panic!() };
    assert_eq!(t.range.len(), 8);
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4000, &b"pong"[..]));
    let (v, buf) = h.peer_sends(token, "127.0.0.2:7001", b"pong");
    let Ok(t) = v else { panic!() };
    assert!(Message::parse(&buf[t.range]).is_ok());

    // The permission (300 s) lapses before the channel (600 s) does:
    // traffic stops until the client refreshes it.
    h.advance(300);
    let len = write_channel_data(&mut cd, 0x4000, b"ping", Transport::Datagram).unwrap();
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoPermission));
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    assert!(matches!(h.send(CLIENT, &cd[..len]), Verdict::Forward(_)));
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &c).lifetime(), Some(600), "keep the allocation alive");
    h.advance(300);
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoChannel), "channel expired at 600 s");
    // Once expired, the number can go to another peer.
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, "127.0.0.2:7001"), &c).class(), Class::Success);
}

#[test]
fn stream_clients_get_padded_channel_data_and_lose_the_allocation_with_the_connection() {
    let mut h = Harness::new();
    h.listener = ListenerId::stream(3);
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let token = h.only_token();
    let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).class(), Class::Success);
    // Client → peer: padded ChannelData from a stream; the padding stays behind.
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"pin", Transport::Stream).unwrap();
    assert_eq!(len, 8);
    let Verdict::Forward(t) = h.send(CLIENT, &cd[..len]) else { panic!() };
    assert_eq!(&cd[t.range], b"pin");
    // Peer → client: padded to 4 bytes (RFC 8656 §12.5), on the stream listener.
    let (v, buf) = h.peer_sends(token, PEER, b"pon");
    let Ok(t) = v else { panic!() };
    assert_eq!((t.via, t.to, t.range.len()), (Via::Listener(ListenerId::stream(3)), addr(CLIENT), 8));
    assert_eq!(ChannelData::parse(&buf[t.range]).unwrap().data(), b"pon");
    // The connection closes: the allocation and its relay socket go.
    assert!(h.server.has_allocation(ListenerId::stream(3), addr(CLIENT)));
    h.server.client_closed(h.now, ListenerId::udp(3), addr(CLIENT), &mut h.sockets);
    assert_eq!(h.server.allocations(), 1, "another listener's 5-tuple is another client");
    h.server.client_closed(h.now, ListenerId::stream(3), addr(CLIENT), &mut h.sockets);
    assert_eq!(h.server.allocations(), 0);
    assert!(h.sockets.open.is_empty());
}

#[test]
fn rfc5766_channel_numbers_when_configured() {
    let mut cfg = config();
    cfg.channel_numbers = ChannelNumbers::Rfc5766;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let bind = |n: u16| [Attribute::ChannelNumber(ChannelNumber(n)), peer_attr(PEER)];
    // RFC 5766 §11: 0x4000 through 0x7FFF; coturn's clients pick any of them.
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x7FFF), &c).class(), Class::Success);
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x3FFF), &c).code(), Some(400));
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x8000), &c).code(), Some(400));
    let other = [Attribute::ChannelNumber(ChannelNumber(0x569d)), peer_attr("127.0.0.2:7001")];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &other, &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x569d, b"rtcp", Transport::Datagram).unwrap();
    let Verdict::Forward(t) = h.send(CLIENT, &cd[..len]) else { panic!() };
    assert_eq!(&cd[t.range], b"rtcp");
    // Data on an unbound channel of either range is dropped.
    let len = write_channel_data(&mut cd, 0x5000, b"x", Transport::Datagram).unwrap();
    assert_eq!(h.send(CLIENT, &cd[..len]), Verdict::Drop(DropReason::NoChannel));
}

#[test]
fn live_relayed_addresses_of_this_node_are_peers() {
    let mut cfg = config();
    cfg.policy.allow.clear(); // 127.0.0.0/8 is denied, but for our live relayed addresses
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let a = h.allocate(CLIENT, &c);
    let b = h.allocate("127.0.0.1:40001", &creds("bob", "builder"));
    let r = h.authed(CLIENT, Method::CREATE_PERMISSION, &[Attribute::XorPeerAddress(XorPeerAddress(b))], &c);
    assert_eq!(r.class(), Class::Success);
    assert_ne!(a, b);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr("127.0.0.3:5")], &c).code(), Some(403));
}

#[test]
fn rest_api_credentials_with_rotation_and_expiry() {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let rest = |secret: &[u8], user: &str| {
        let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(user.as_bytes());
        creds(user, &base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    };
    let mut h = Harness::new();
    let live = format!("{}:web-user", UNIX0 + 3600);
    h.allocate("127.0.0.1:43000", &rest(b"old secret", &live));
    h.allocate("127.0.0.1:43001", &rest(b"new secret", &live));
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:43002", Method::ALLOCATE, &udp, &rest(b"other", &live)).code(), Some(401));
    let expired = format!("{}:web-user", UNIX0 - 1);
    assert_eq!(h.authed("127.0.0.1:43003", Method::ALLOCATE, &udp, &rest(b"new secret", &expired)).code(), Some(401));
    let garbage = "not-a-number:web-user";
    assert_eq!(h.authed("127.0.0.1:43004", Method::ALLOCATE, &udp, &rest(b"new secret", garbage)).code(), Some(401));
}

#[test]
fn sha256_password_algorithm_and_precomputed_keys() {
    let mut h = Harness::new();
    let mut c = Harness::alice();
    c.sha256 = true;
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &c);
    assert_eq!(r.class(), Class::Success);
    let key = LongTermKey::derive(AlgorithmId::SHA256, "alice", REALM, "wonderland").unwrap();
    assert_eq!(r.msg().verify_integrity(key.as_bytes()), Ok(IntegrityKind::Sha256));

    // carol has only an MD5 key: MD5 works, SHA-256 cannot.
    h.allocate("127.0.0.1:44000", &creds("carol", "c"));
    let mut carol = creds("carol", "c");
    carol.sha256 = true;
    assert_eq!(h.authed("127.0.0.1:44001", Method::ALLOCATE, &udp, &carol).code(), Some(401));

    // A client that alters PASSWORD-ALGORITHMS (a downgrade) gets 400.
    let tid = h.tid();
    let first = h.build(Method::ALLOCATE, tid, &udp, None);
    let nonce = h.exchange("127.0.0.1:44002", &first).nonce();
    let only_md5 = [PasswordAlgorithm::new(AlgorithmId::MD5)];
    let tampered = [
        udp[0],
        Attribute::PasswordAlgorithms(PasswordAlgorithms::new(&only_md5)),
        Attribute::PasswordAlgorithm(PasswordAlgorithm::new(AlgorithmId::MD5)),
    ];
    let tid = h.tid();
    let req = h.build(Method::ALLOCATE, tid, &tampered, Some((&Harness::alice(), &nonce)));
    assert_eq!(h.exchange("127.0.0.1:44002", &req).code(), Some(400));
}

#[test]
fn capacity_limits_answer_508() {
    let mut cfg = config();
    cfg.ports = 50000..=50002;
    let mut h = Harness::with(cfg, Quotas::default());
    h.sockets.taken.insert(addr("127.0.0.1:50001"));
    let c = Harness::alice();
    let a = h.allocate("127.0.0.1:45000", &c);
    let b = h.allocate("127.0.0.1:45001", &c);
    let mut ports = [a.port(), b.port()];
    ports.sort_unstable();
    assert_eq!(ports, [50000, 50002], "the taken port is skipped");
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:45002", Method::ALLOCATE, &udp, &c).code(), Some(508));
    assert_eq!(h.server.allocations(), 2);
    let refused = h.server.stats().allocations_refused;
    assert_eq!((refused.no_relay_port, refused.node_full), (1, 0));

    let mut h = Harness::with(config(), Quotas::new(QuotaLimits { total: 1, ..QuotaLimits::default() }));
    h.allocate("127.0.0.1:45003", &c);
    assert_eq!(h.authed("127.0.0.1:45004", Method::ALLOCATE, &udp, &c).code(), Some(508));
    let refused = h.server.stats().allocations_refused;
    assert_eq!((refused.no_relay_port, refused.node_full), (0, 1));
    assert_eq!(h.server.stats().responses.get("allocate", "508"), 1);
}

#[test]
fn what_is_not_a_request_is_dropped_quietly() {
    let mut h = Harness::new();
    assert_eq!(h.send(CLIENT, b""), Verdict::Drop(DropReason::NotTurn));
    assert_eq!(h.send(CLIENT, &[0x80; 40]), Verdict::Drop(DropReason::NotTurn));
    assert_eq!(h.send(CLIENT, &[0x00, 0x01, 0x00, 0x00]), Verdict::Drop(DropReason::NotTurn));
    let tid = h.tid();
    let mut buf = [0u8; 64];
    let w = MessageWriter::new(&mut buf, MessageType::new(Method::BINDING, Class::Success), tid).unwrap();
    let len = w.finish();
    assert_eq!(h.send(CLIENT, &buf[..len]), Verdict::Drop(DropReason::Ignored));
    let unknown_method = h.build(Method::new(0x0FF).unwrap(), tid, &[], None);
    assert_eq!(h.exchange(CLIENT, &unknown_method).code(), Some(400));
    let token = RelayToken(77);
    assert_eq!(h.peer_sends(token, PEER, b"x").0, Err(DropReason::NoAllocation));
}

impl Harness {
    fn build_send(&mut self, tid: TransactionId, peer: &str, data: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 64 + data.len()];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::SEND, Class::Indication), tid).unwrap();
        w.add(&XorPeerAddress(addr(peer))).unwrap();
        w.add(&Data(data)).unwrap();
        let len = w.finish();
        buf.truncate(len);
        buf
    }
}

mod events;
mod moved;
mod security;

/// RFC 6062: TCP allocations, Connect, ConnectionAttempt, ConnectionBind.
mod tcp_allocations {
    use super::*;
    use ip2p_wire::attr::ConnectionId;

    fn tcp_allocate(h: &mut Harness, from: &str, c: &Creds) -> Response {
        h.authed(from, Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::TCP)], c)
    }

    fn stream_harness() -> Harness {
        let mut h = Harness::new();
        h.listener = ListenerId::stream(0);
        h
    }

    #[test]
    fn tcp_allocations_need_a_stream_and_no_udp_only_attributes() {
        let mut h = Harness::new();
        let c = Harness::alice();
        assert_eq!(tcp_allocate(&mut h, CLIENT, &c).code(), Some(400), "over UDP");
        let mut h = stream_harness();
        let tcp = Attribute::RequestedTransport(RequestedTransport::TCP);
        for extra in [
            Attribute::EvenPort(EvenPort { reserve_next: false }),
            Attribute::DontFragment(ip2p_wire::attr::DontFragment),
            Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)),
        ] {
            assert_eq!(h.authed(CLIENT, Method::ALLOCATE, &[tcp, extra], &c).code(), Some(400));
        }
        let r = tcp_allocate(&mut h, CLIENT, &c);
        assert_eq!(r.class(), Class::Success);
        assert_eq!(h.sockets.tcp.len(), 1, "a TCP listener, no UDP socket");
        assert!(h.sockets.open.is_empty());
        assert_eq!(h.sockets.tcp.values().next().unwrap().1, "alice");
        // Send indications and ChannelBind have no place on it.
        let bind = [Attribute::ChannelNumber(ChannelNumber(0x4000)), peer_attr(PEER)];
        assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind, &c).code(), Some(400));
        // Deleting it closes the listener.
        assert_eq!(h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).lifetime(), Some(0));
        assert!(h.sockets.tcp.is_empty());
    }

    #[test]
    fn connect_is_answered_when_the_connection_is_up_or_failed() {
        let mut h = stream_harness();
        let c = Harness::alice();
        assert_eq!(tcp_allocate(&mut h, CLIENT, &c).class(), Class::Success);
        let token = *h.sockets.tcp.keys().next().unwrap();
        let relayed = h.sockets.tcp[&token].0;
        // Policy and missing attributes: answered at once.
        assert_eq!(h.authed(CLIENT, Method::CONNECT, &[], &c).code(), Some(400));
        assert_eq!(h.authed(CLIENT, Method::CONNECT, &[peer_attr("10.0.0.1:80")], &c).code(), Some(403));
        // A valid Connect is answered later.
        let tid = h.tid();
        let nonce = {
            let first = h.build(Method::CONNECT, tid, &[peer_attr(PEER)], None);
            h.exchange(CLIENT, &first).nonce()
        };
        let tid = h.tid();
        let req = h.build(Method::CONNECT, tid, &[peer_attr(PEER)], Some((&c, &nonce)));
        assert_eq!(h.send(CLIENT, &req), Verdict::Deferred);
        assert_eq!(h.sockets.connects, [(token, relayed, addr(PEER))]);
        assert_eq!(h.server.stats().dropped.ignored, 0, "deferred is not dropped");
        // A second Connect to the same peer meanwhile: 446.
        assert_eq!(h.authed(CLIENT, Method::CONNECT, &[peer_attr(PEER)], &c).code(), Some(446));
        // The connection is up: success with CONNECTION-ID, signed.
        let mut reply = vec![0u8; REPLY_BUFFER];
        let t = h.server.tcp_connected(token, addr(PEER), Some(77), &mut reply).unwrap();
        assert_eq!((t.via, t.to), (Via::Listener(ListenerId::stream(0)), addr(CLIENT)));
        let r = Response(reply[t.range].to_vec());
        assert_eq!((r.class(), r.msg().method(), *r.msg().transaction_id()), (Class::Success, Method::CONNECT, tid));
        assert_eq!(r.msg().get::<ConnectionId>().unwrap(), Some(ConnectionId(77)));
        let key = LongTermKey::md5("alice", REALM, "wonderland");
        assert!(r.msg().verify_integrity(key.as_bytes()).is_ok());
        assert!(h.server.tcp_connected(token, addr(PEER), Some(77), &mut reply).is_none(), "answered once");
        // A connection that already exists: 446; one that fails: 447.
        h.sockets.conns.insert(77, (token, addr(PEER), Some(true)));
        assert_eq!(h.authed(CLIENT, Method::CONNECT, &[peer_attr(PEER)], &c).code(), Some(446));
        let other = "127.0.0.2:7001";
        assert_eq!(h.send_authed_deferred(CLIENT, Method::CONNECT, &[peer_attr(other)], &c), Verdict::Deferred);
        let t = h.server.tcp_connected(token, addr(other), None, &mut reply).unwrap();
        assert_eq!(Response(reply[t.range].to_vec()).code(), Some(447));
    }

    #[test]
    fn incoming_connections_need_a_permission_and_bind_once() {
        let mut h = stream_harness();
        let c = Harness::alice();
        assert_eq!(tcp_allocate(&mut h, CLIENT, &c).class(), Class::Success);
        let token = *h.sockets.tcp.keys().next().unwrap();
        let mut reply = vec![0u8; REPLY_BUFFER];
        // Without a permission the peer is refused.
        h.sockets.conns.insert(5, (token, addr(PEER), None));
        assert!(h.server.tcp_incoming(h.now, token, addr(PEER), 5, &mut reply, &mut h.sockets).is_none());
        assert_eq!(h.sockets.conns[&5].2, Some(false));
        // With one, the client hears of it.
        assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
        h.sockets.conns.insert(6, (token, addr(PEER), None));
        let t = h.server.tcp_incoming(h.now, token, addr(PEER), 6, &mut reply, &mut h.sockets).unwrap();
        let msg = Message::parse(&reply[t.range]).unwrap();
        assert_eq!(msg.message_type(), MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication));
        assert_eq!(msg.get::<ConnectionId>().unwrap(), Some(ConnectionId(6)));
        assert_eq!(msg.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(addr(PEER))));
        assert_eq!(h.sockets.conns[&6].2, Some(true));
        // ConnectionBind: on a fresh connection, by the same user, once.
        let data_conn = "127.0.0.1:40001";
        let bind = [Attribute::ConnectionId(ConnectionId(6))];
        assert_eq!(h.authed(data_conn, Method::CONNECTION_BIND, &[], &c).code(), Some(400), "no CONNECTION-ID");
        let bob = creds("bob", "builder");
        assert_eq!(h.authed(data_conn, Method::CONNECTION_BIND, &bind, &bob).code(), Some(400), "another user");
        assert_eq!(h.authed(CLIENT, Method::CONNECTION_BIND, &bind, &c).code(), Some(400), "the control connection");
        assert_eq!(h.authed(data_conn, Method::CONNECTION_BIND, &bind, &c).class(), Class::Success);
        assert_eq!(h.sockets.binds, [(6, ListenerId::stream(0), addr(data_conn))]);
        let again = "127.0.0.1:40002";
        assert_eq!(h.authed(again, Method::CONNECTION_BIND, &bind, &c).code(), Some(400), "bound already");
        h.listener = ListenerId::udp(0);
        assert_eq!(h.authed("127.0.0.1:40003", Method::CONNECTION_BIND, &bind, &c).code(), Some(400), "over UDP");
    }
}

#[test]
fn the_draft_additional_address_family_code_is_accepted() {
    // coturn 4.6's clients ask for a dual allocation with 0x8032.
    let mut h = Harness::new();
    let mut config = config();
    config.relay_ips[1] = vec![RelayIp { bind: "::1".parse().unwrap(), external: None }];
    h.server = Server::new(Arc::new(config), Arc::new(NodeState::new(Quotas::default())), h.now, UNIX0, 42);
    let c = Harness::alice();
    let legacy = Attribute::Unknown(ip2p_wire::RawAttribute { typ: ip2p_wire::AttrType(0x8032), value: &[2, 0, 0, 0] });
    let r = h.authed(CLIENT, Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::UDP), legacy], &c);
    assert_eq!(r.class(), Class::Success);
    assert_eq!(r.relayed().len(), 2, "IPv4 and IPv6");
}

#[test]
fn a_draining_server_sends_new_allocations_elsewhere_and_keeps_the_others() {
    let mut h = Harness::new();
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    h.server.drain();
    // No alternate of the client's family: 508.
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:40001", Method::ALLOCATE, &udp, &c).code(), Some(508));
    // With one: 300 and ALTERNATE-SERVER, signed.
    let mut config = config();
    config.alternates = vec!["[2001:db8::1]:3478".parse().unwrap(), "192.0.2.7:3478".parse().unwrap()];
    h.server.reconfigure(Arc::new(config), h.now);
    let r = h.authed("127.0.0.1:40002", Method::ALLOCATE, &udp, &c);
    assert_eq!(r.code(), Some(300));
    let alternate = r.msg().get::<ip2p_wire::attr::AlternateServer>().unwrap().unwrap().0;
    assert_eq!(alternate, "192.0.2.7:3478".parse::<SocketAddr>().unwrap());
    assert!(r.msg().verify_integrity(LongTermKey::md5("alice", REALM, "wonderland").as_bytes()).is_ok());
    // The existing allocation still refreshes.
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[], &c).lifetime(), Some(600));
}

impl Harness {
    /// A client's datagram as the UDP datapaths present it, with room
    /// around it: the verdict, with ranges into the returned buffer. After
    /// a payload for the owner the buffer holds the payload as the datapath passes it on
    /// (after [`PEER_HEADROOM`]).
    fn send_through_node(&mut self, from: &str, packet: &[u8]) -> (Verdict, Vec<u8>) {
        let h = PEER_HEADROOM;
        let mut buf = vec![0u8; h + packet.len() + PEER_TAILROOM];
        buf[h..h + packet.len()].copy_from_slice(packet);
        let (now, listener) = (self.now, self.listener);
        let range = h..h + packet.len();
        let v =
            self.server.handle_client(now, listener, addr(from), &mut buf, range, &mut self.reply, &mut self.sockets);
        if let Verdict::ToOwner(to_owner) = &v {
            let payload = buf[to_owner.transmit.range.clone()].to_vec();
            buf = vec![0u8; h + payload.len() + PEER_TAILROOM];
            buf[h..h + payload.len()].copy_from_slice(&payload);
        }
        (v, buf)
    }
}

#[test]
fn the_local_short_circuit_enforces_permissions_and_channels_both_ways() {
    const B: &str = "127.0.0.1:40002";
    let mut h = Harness::new();
    let c = Harness::alice();
    let ra = h.allocate(CLIENT, &c);
    let rb = h.allocate(B, &c);
    let peer = |a: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(a));
    let bind = |n: u16, a: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(a)];
    assert_eq!(h.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let a_to_b = write_channel_data(&mut cd, 0x4000, b"hi", Transport::Datagram).unwrap();
    let a_to_b = cd[..a_to_b].to_vec();

    // B has no permission for A's relayed address: dropped on B's side,
    // as a datagram from outside would be.
    assert_eq!(h.send_through_node(CLIENT, &a_to_b).0, Verdict::Drop(DropReason::NoPermission));

    // With one, B gets a Data indication from A's relayed address.
    assert_eq!(h.authed(B, Method::CREATE_PERMISSION, &[peer(ra)], &c).class(), Class::Success);
    let (v, buf) = h.send_through_node(CLIENT, &a_to_b);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!((t.via, t.to), (Via::Listener(ListenerId::udp(0)), addr(B)));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.message_type(), MessageType::new(Method::DATA, Class::Indication));
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(ra)));
    assert_eq!(m.get::<Data>().unwrap(), Some(Data(b"hi")));

    // With a channel to A, ChannelData; and back from B to A the same way.
    assert_eq!(h.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let (v, buf) = h.send_through_node(CLIENT, &a_to_b);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4001, &b"hi"[..]));
    let len = write_channel_data(&mut cd, 0x4001, b"yo", Transport::Datagram).unwrap();
    let (v, buf) = h.send_through_node(B, &cd[..len]);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!(t.to, addr(CLIENT));
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4000, &b"yo"[..]));
    // Without room around the payload (a stream's frame), it goes to this
    // worker's own inbox, and from there to B as before.
    let Verdict::ToOwner(ToOwner { worker, from, transmit }) = h.send(CLIENT, &a_to_b) else { panic!() };
    assert_eq!((worker, from, transmit.to, transmit.range), (0, ra, rb, 4..6));
    let mut buf = vec![0u8; PEER_HEADROOM + 2 + PEER_TAILROOM];
    buf[PEER_HEADROOM..PEER_HEADROOM + 2].copy_from_slice(b"hi");
    let t = h.server.handle_inbox(h.now, rb, from, &mut buf, PEER_HEADROOM..PEER_HEADROOM + 2).unwrap();
    assert_eq!(ChannelData::parse(&buf[t.range]).unwrap().channel(), 0x4001);

    // Expiry: A refreshes its permission, B does not; after 300 s A's
    // packets leave A and stop at B.
    h.advance(240);
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer(rb)], &c).class(), Class::Success);
    h.advance(60);
    assert_eq!(h.send_through_node(CLIENT, &a_to_b).0, Verdict::Drop(DropReason::NoPermission));
    let stats = h.server.stats();
    assert_eq!(stats.short_circuited, 6, "every packet to a local relayed address");
    assert_eq!((stats.to_peer_packets, stats.to_client_packets), (6, 4), "relayed counts on both sides");
    assert_eq!(stats.dropped.no_permission, 2);

    // A peer elsewhere goes out through the relay socket.
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &[peer_attr(PEER)], &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, PEER, b"out");
    let (v, _) = h.send_through_node(CLIENT, &send);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert!(matches!(t.via, Via::Relay(_)) && t.to == addr(PEER));
    // Once B's allocation is gone, its address is just a port of this
    // host (anything may bind it now): never sent to.
    assert_eq!(h.authed(B, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, &rb.to_string(), b"gone");
    let (v, _) = h.send_through_node(CLIENT, &send);
    assert_eq!(v, Verdict::Drop(DropReason::DeniedAddress));
}

/// Two workers of one node, owning half of the test's ports each, with
/// `tweak` applied to both configurations.
fn two_workers_with(tweak: impl Fn(&mut Config)) -> (Harness, Harness) {
    let shared = Arc::new(NodeState::new(Quotas::default()));
    // One clock for the node.
    let now = crate::testing::t0();
    let worker = |id: u16, ports| {
        let mut cfg = config();
        cfg.ports = ports;
        tweak(&mut cfg);
        let mut h = Harness::new();
        h.now = now;
        h.server = Server::new(Arc::new(cfg), shared.clone(), h.now, UNIX0, u64::from(id)).on_worker(id);
        h
    };
    (worker(0, 50000..=50049), worker(1, 50050..=50099))
}

fn two_workers() -> (Harness, Harness) {
    two_workers_with(|_| {})
}

/// A client of worker `a` sends `packet` to a relayed address of worker
/// `b`, which gets it through its inbox: what `b` does with it (ranges
/// into the returned buffer).
fn across(a: &mut Harness, b: &mut Harness, from: &str, packet: &[u8]) -> (Result<Transmit, DropReason>, Vec<u8>) {
    let (v, mut buf) = a.send_through_node(from, packet);
    let Verdict::ToOwner(ToOwner { worker, from, transmit }) = v else { panic!("not handed over: {v:?}") };
    assert_eq!(worker, 1);
    let data = PEER_HEADROOM..buf.len() - PEER_TAILROOM;
    (b.server.handle_inbox(b.now, transmit.to, from, &mut buf, data), buf)
}

/// A client of worker `a` sends `packet` to a relayed address of another
/// worker, which `a` delivers itself: what it sends (ranges into the
/// returned buffer), or why not.
fn direct(a: &mut Harness, from: &str, packet: &[u8]) -> (Result<Transmit, DropReason>, Vec<u8>) {
    match a.send_through_node(from, packet) {
        (Verdict::Forward(t), buf) => (Ok(t), buf),
        (Verdict::Drop(reason), buf) => (Err(reason), buf),
        (v, _) => panic!("not delivered by the sender: {v:?}"),
    }
}

#[test]
fn the_short_circuit_across_workers_obeys_the_owners_state_without_the_owner() {
    const B: &str = "127.0.0.1:40002";
    let (mut a, mut b) = two_workers();
    let c = Harness::alice();
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    let bind = |n: u16, x: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(x)];
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"hi", Transport::Datagram).unwrap();
    let a_to_b = cd[..len].to_vec();

    // No permission on B's side: dropped by A, as B would.
    assert_eq!(direct(&mut a, CLIENT, &a_to_b).0, Err(DropReason::NoPermission));
    // A permission: a Data indication from A's relayed address, sent by A
    // from its own socket of B's listener to B's client.
    assert_eq!(b.authed(B, Method::CREATE_PERMISSION, &[peer(ra)], &c).class(), Class::Success);
    let (v, buf) = direct(&mut a, CLIENT, &a_to_b);
    let t = v.unwrap();
    assert_eq!((t.via, t.to), (Via::Listener(b.listener), addr(B)));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(ra)));
    assert_eq!(m.get::<Data>().unwrap(), Some(Data(b"hi")));
    // A channel: ChannelData.
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let (v, buf) = direct(&mut a, CLIENT, &a_to_b);
    let t = v.unwrap();
    let framed = ChannelData::parse(&buf[t.range]).unwrap();
    assert_eq!((framed.channel(), framed.data()), (0x4001, &b"hi"[..]));
    // B's permission expires (A keeps refreshing its own): dropped, though
    // B's channel (10 minutes) is still bound.
    for h in [&mut a, &mut b] {
        h.advance(240);
    }
    assert_eq!(a.authed(CLIENT, Method::CREATE_PERMISSION, &[peer(rb)], &c).class(), Class::Success);
    for h in [&mut a, &mut b] {
        h.advance(60);
    }
    assert_eq!(direct(&mut a, CLIENT, &a_to_b).0, Err(DropReason::NoPermission));
    // A refresh of B's permission is seen at once.
    assert_eq!(b.authed(B, Method::CREATE_PERMISSION, &[peer(ra)], &c).class(), Class::Success);
    assert!(direct(&mut a, CLIENT, &a_to_b).0.is_ok());
    // Counted as relayed on both sides and short-circuited, all by A; B
    // was never asked.
    let (sa, sb) = (a.server.stats().clone(), b.server.stats().clone());
    assert_eq!((sa.to_peer_packets, sa.to_client_packets, sa.short_circuited), (5, 3, 5));
    assert_eq!((sa.crossed, sa.to_owner, sa.dropped.no_permission), (5, 0, 2));
    assert_eq!((sb.to_peer_packets, sb.to_client_packets, sb.short_circuited, sb.dropped.no_permission), (0, 0, 0, 0));

    // Once B's allocation is gone, A finds no live relayed address there
    // and sends nothing (the port is the host's, whatever binds it next).
    assert_eq!(b.authed(B, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    let (v, _) = a.send_through_node(CLIENT, &a_to_b);
    assert_eq!(v, Verdict::Drop(DropReason::DeniedAddress));
}

#[test]
fn the_short_circuit_across_workers_ends_with_the_owners_allocation() {
    const B: &str = "127.0.0.1:40002";
    let (mut a, mut b) = two_workers();
    let c = Harness::alice();
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    let bind = |n: u16, x: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(x)];
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let mut cd = [0u8; 16];
    let len = write_channel_data(&mut cd, 0x4000, b"hi", Transport::Datagram).unwrap();
    // A keeps its allocation, permission and channel fresh; B does not,
    // and B's timer has not run yet when its allocation lapses: A's look
    // at B's view already says so.
    for round in 0..3 {
        assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
        assert_eq!(a.authed(CLIENT, Method::REFRESH, &[], &c).class(), Class::Success);
        if round == 0 {
            assert!(direct(&mut a, CLIENT, &cd[..len]).0.is_ok());
        }
        if round < 2 {
            a.advance(300);
            b.now += Duration::from_secs(300);
        }
    }
    assert_eq!(direct(&mut a, CLIENT, &cd[..len]).0, Err(DropReason::NoAllocation));
    assert_eq!(a.server.stats().short_circuited, 1, "a drop for want of an allocation is not short-circuited");
    // Once B's timer runs, the port is just the host's.
    b.advance(0);
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).code(), Some(403));
    assert_eq!(a.send_through_node(CLIENT, &cd[..len]).0, Verdict::Drop(DropReason::DeniedAddress));
}

#[test]
fn what_needs_the_owner_goes_through_its_inbox() {
    const B: &str = "127.0.0.1:40002";
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    let bind = |n: u16, x: SocketAddr| [Attribute::ChannelNumber(ChannelNumber(n)), peer(x)];
    let mut cd = [0u8; 1100];
    let len = write_channel_data(&mut cd, 0x4000, &[7; 1000], Transport::Datagram).unwrap();
    let a_to_b = cd[..len].to_vec();

    // A bandwidth limit: the owner's buckets decide (1,000 B/s each way).
    let (mut a, mut b) = two_workers_with(|c| c.bandwidth = 1000);
    let c = Harness::alice();
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    assert!(across(&mut a, &mut b, CLIENT, &a_to_b).0.is_ok());
    a.advance(1); // A's bucket refills; B's does not (its clock stands still)
    assert_eq!(across(&mut a, &mut b, CLIENT, &a_to_b).0, Err(DropReason::RateLimit));
    assert_eq!((a.server.stats().crossed, a.server.stats().to_owner), (2, 2));
    assert_eq!(b.server.stats().dropped.rate_limit, 1);

    // A stream client: only its owner holds its connection.
    let (mut a, mut b) = two_workers();
    b.listener = ListenerId::stream(0);
    let ra = a.allocate(CLIENT, &c);
    let rb = b.allocate(B, &c);
    assert_eq!(a.authed(CLIENT, Method::CHANNEL_BIND, &bind(0x4000, rb), &c).class(), Class::Success);
    assert_eq!(b.authed(B, Method::CHANNEL_BIND, &bind(0x4001, ra), &c).class(), Class::Success);
    let (v, _) = across(&mut a, &mut b, CLIENT, &a_to_b);
    assert_eq!(v.unwrap().via, Via::Listener(ListenerId::stream(0)));
}

#[test]
fn several_relay_addresses_take_turns_and_short_circuit_on_each() {
    // Two ports on each of two addresses: four allocations, then 508.
    let mut cfg = config();
    let (ip1, ip2): (std::net::IpAddr, std::net::IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    cfg.relay_ips[0] = vec![RelayIp { bind: ip1, external: None }, RelayIp { bind: ip2, external: None }];
    cfg.ports = 50000..=50001;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    let clients = ["127.0.0.1:40001", "127.0.0.1:40002", "127.0.0.1:40003", "127.0.0.1:40004"];
    let relayed: Vec<SocketAddr> = clients.iter().map(|from| h.allocate(from, &c)).collect();
    assert_eq!(relayed.iter().filter(|a| a.ip() == ip2).count(), 2, "{relayed:?}");
    assert_eq!(relayed.iter().collect::<HashSet<_>>().len(), 4);
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:40005", Method::ALLOCATE, &udp, &c).code(), Some(508));

    // A relayed address on the second IP is found by the short-circuit.
    let (a, b) = (relayed[0], *relayed.iter().find(|r| r.ip() != relayed[0].ip()).unwrap());
    let b_client = clients[relayed.iter().position(|r| *r == b).unwrap()];
    let peer = |x: SocketAddr| Attribute::XorPeerAddress(XorPeerAddress(x));
    assert_eq!(h.authed(clients[0], Method::CREATE_PERMISSION, &[peer(b)], &c).class(), Class::Success);
    assert_eq!(h.authed(b_client, Method::CREATE_PERMISSION, &[peer(a)], &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, &b.to_string(), b"across addresses");
    let (v, buf) = h.send_through_node(clients[0], &send);
    let Verdict::Forward(t) = v else { panic!("{v:?}") };
    assert_eq!(t.to, addr(b_client));
    let m = Message::parse(&buf[t.range]).unwrap();
    assert_eq!(m.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(a)));
    assert_eq!(h.server.stats().short_circuited, 1);
}

#[test]
fn the_local_short_circuit_can_be_turned_off() {
    let mut cfg = config();
    cfg.short_circuit = false;
    let mut h = Harness::with(cfg, Quotas::default());
    let c = Harness::alice();
    h.allocate(CLIENT, &c);
    let rb = h.allocate("127.0.0.1:40002", &c);
    let permit = [Attribute::XorPeerAddress(XorPeerAddress(rb))];
    assert_eq!(h.authed(CLIENT, Method::CREATE_PERMISSION, &permit, &c).class(), Class::Success);
    let tid = h.tid();
    let send = h.build_send(tid, &rb.to_string(), b"x");
    let (v, _) = h.send_through_node(CLIENT, &send);
    assert!(matches!(v, Verdict::Forward(Transmit { via: Via::Relay(_), .. })), "{v:?}");
    assert_eq!(h.server.stats().short_circuited, 0);
}
