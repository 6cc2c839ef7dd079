//! The one harness of the core's tests: a core on fake sockets and a
//! virtual clock, and a minimal client that does the long-term credential
//! dance. Every test module takes it, and what it needs, from here.

pub(super) use std::collections::{HashMap, HashSet};
pub(super) use std::net::SocketAddr;
pub(super) use std::sync::Arc;
pub(super) use std::time::{Duration, Instant};

pub(super) use ip2p_wire::attr::*;
pub(super) use ip2p_wire::credentials::LongTermKey;
pub(super) use ip2p_wire::{
    AddressFamily, Attribute, ChannelData, Class, ErrorCode, IntegrityKind, Message, MessageType, MessageWriter,
    Method, TransactionId, Transport, write_channel_data,
};
pub(super) use rand::SeedableRng;
pub(super) use rand::rngs::SmallRng;

pub(super) use crate::testing::{FakeSockets, REALM, UNIX0, config, t0};
pub(super) use crate::*;

pub(super) struct Harness {
    pub(super) server: Server,
    /// The listener clients use: UDP unless a test says otherwise.
    pub(super) listener: ListenerId,
    pub(super) sockets: FakeSockets,
    pub(super) now: Instant,
    pub(super) reply: Vec<u8>,
    pub(super) next_tid: u32,
    /// The nonce each client address holds.
    pub(super) nonces: HashMap<String, String>,
}

/// The client's side of an exchange: an owned copy of the response.
pub(super) struct Response(pub(super) Vec<u8>);

impl Response {
    pub(super) fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).unwrap()
    }
    pub(super) fn class(&self) -> Class {
        self.msg().class()
    }
    pub(super) fn code(&self) -> Option<u16> {
        self.msg().get::<ErrorCodeAttr>().unwrap().map(|e| e.code.code())
    }
    pub(super) fn nonce(&self) -> String {
        self.msg().get::<Nonce>().unwrap().unwrap().0.to_owned()
    }
    pub(super) fn relayed(&self) -> Vec<SocketAddr> {
        self.msg().get_all::<XorRelayedAddress>().map(|a| a.unwrap().0).collect()
    }
    pub(super) fn lifetime(&self) -> Option<u32> {
        self.msg().get::<Lifetime>().unwrap().map(|l| l.0)
    }
}

/// Credentials a test client presents.
#[derive(Clone)]
pub(super) struct Creds {
    pub(super) user: String,
    pub(super) password: String,
    pub(super) sha256: bool,
}

pub(super) fn creds(user: &str, password: &str) -> Creds {
    Creds { user: user.into(), password: password.into(), sha256: false }
}

pub(super) const CLIENT: &str = "127.0.0.1:40000";

pub(super) const PEER: &str = "127.0.0.2:7000";

pub(super) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with(config(), Quotas::default())
    }

    pub(super) fn with(config: Config, quotas: Quotas) -> Self {
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

    pub(super) fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.server.handle_timeout(self.now, &mut self.sockets);
    }

    pub(super) fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut tid = [u8::try_from(self.next_tid % 256).unwrap(); 12];
        tid[..4].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId(tid)
    }

    pub(super) fn send(&mut self, from: &str, packet: &[u8]) -> Verdict {
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
    pub(super) fn exchange(&mut self, from: &str, packet: &[u8]) -> Response {
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
    pub(super) fn build(
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
                w.add(&PasswordAlgorithms::new(&crate::auth::OFFERED_ALGORITHMS)).unwrap();
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
    pub(super) fn nonce_for(&mut self, from: &str) -> String {
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
    pub(super) fn authed(&mut self, from: &str, method: Method, attrs: &[Attribute<'_>], c: &Creds) -> Response {
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

    pub(super) fn allocate(&mut self, from: &str, c: &Creds) -> SocketAddr {
        let r = self.authed(from, Method::ALLOCATE, &[Attribute::RequestedTransport(RequestedTransport::UDP)], c);
        assert_eq!(r.class(), Class::Success, "allocate failed: {:?}", r.code());
        r.relayed()[0]
    }

    pub(super) fn alice() -> Creds {
        creds("alice", "wonderland")
    }

    /// A datagram from `peer` to relay `token`, as a datapath presents it.
    pub(super) fn peer_sends(
        &mut self,
        token: RelayToken,
        peer: &str,
        payload: &[u8],
    ) -> (Result<Transmit, DropReason>, Vec<u8>) {
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
    pub(super) fn send_authed_deferred(
        &mut self,
        from: &str,
        method: Method,
        attrs: &[Attribute<'_>],
        c: &Creds,
    ) -> Verdict {
        let nonce = self.nonce_for(from);
        let tid = self.tid();
        let second = self.build(method, tid, attrs, Some((c, &nonce)));
        self.send(from, &second)
    }

    pub(super) fn only_token(&self) -> RelayToken {
        assert_eq!(self.sockets.open.len(), 1);
        *self.sockets.open.keys().next().unwrap()
    }

    pub(super) fn build_send(&mut self, tid: TransactionId, peer: &str, data: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 64 + data.len()];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::SEND, Class::Indication), tid).unwrap();
        w.add(&XorPeerAddress(addr(peer))).unwrap();
        w.add(&Data(data)).unwrap();
        let len = w.finish();
        buf.truncate(len);
        buf
    }

    /// A client's datagram as the UDP datapaths present it, with room
    /// around it: the verdict, with ranges into the returned buffer. After
    /// a payload for the owner the buffer holds the payload as the datapath passes it on
    /// (after [`PEER_HEADROOM`]).
    pub(super) fn send_through_node(&mut self, from: &str, packet: &[u8]) -> (Verdict, Vec<u8>) {
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

pub(super) fn peer_attr(s: &str) -> Attribute<'static> {
    Attribute::XorPeerAddress(XorPeerAddress(addr(s)))
}
