//! The per-packet paths through the TURN core, with 1,000 allocations
//! present: ChannelData from a client to its peer, a peer's datagram framed
//! for its client, and the local short-circuit between two allocations of
//! one server. A regression guard: the core's share of a relayed packet's
//! cost (the kernel's share is measured with ip2p-bench).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ip2p_turn::testing::{FakeSockets, REALM, UNIX0, config, t0};
use ip2p_turn::{
    ListenerId, NodeState, PEER_HEADROOM, PEER_TAILROOM, Quotas, REPLY_BUFFER, RelayToken, Server, Transmit, Verdict,
    Via,
};
use ip2p_wire::attr::{ChannelNumber, Nonce, Realm, RequestedTransport, Username, XorPeerAddress, XorRelayedAddress};
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{Class, Message, MessageType, MessageWriter, Method, TransactionId, Transport, write_channel_data};

const LISTENER: ListenerId = ListenerId::udp(0);

struct Bench {
    server: Server,
    now: std::time::Instant,
    reply: Vec<u8>,
    key: LongTermKey,
    tid: u8,
    sockets: FakeSockets,
}

impl Bench {
    fn new() -> Self {
        // The test configuration, with room for a thousand allocations
        // (and no response rate limit: they all come from one /24 at once).
        let mut cfg = config();
        cfg.ports = 10000..=60000;
        let now = t0();
        let shared = Arc::new(NodeState::new(Quotas::default()));
        let server = Server::new(Arc::new(cfg), shared, now, UNIX0, 7);
        let key = LongTermKey::md5("alice", REALM, "wonderland");
        Self { server, now, reply: vec![0; REPLY_BUFFER], key, tid: 0, sockets: FakeSockets::default() }
    }

    /// Sends a request from `client` (authenticated when `nonce` is given)
    /// and returns the response's bytes.
    fn request(&mut self, client: SocketAddr, method: Method, nonce: Option<&str>, body: &[Attr]) -> Vec<u8> {
        self.tid = self.tid.wrapping_add(1);
        let mut buf = vec![0u8; 512];
        let typ = MessageType::new(method, Class::Request);
        let mut w = MessageWriter::new(&mut buf, typ, TransactionId([self.tid; 12])).unwrap();
        for a in body {
            match a {
                Attr::Udp => w.add(&RequestedTransport::UDP).unwrap(),
                Attr::Peer(p) => w.add(&XorPeerAddress(*p)).unwrap(),
                Attr::Channel(n) => w.add(&ChannelNumber(*n)).unwrap(),
            };
        }
        if let Some(nonce) = nonce {
            w.add(&Username("alice")).unwrap();
            w.add(&Realm(REALM)).unwrap();
            w.add(&Nonce(nonce)).unwrap();
            w.integrity(self.key.as_bytes()).unwrap();
        }
        let len = w.finish();
        match self.server.handle_client(
            self.now,
            LISTENER,
            client,
            &mut buf,
            0..len,
            &mut self.reply,
            &mut self.sockets,
        ) {
            Verdict::Reply(t) => self.reply[t.range].to_vec(),
            v => panic!("{v:?}"),
        }
    }

    /// An allocation for `client`: its relayed address and a nonce.
    fn allocate(&mut self, client: SocketAddr) -> (SocketAddr, String) {
        let challenge = self.request(client, Method::ALLOCATE, None, &[Attr::Udp]);
        let nonce = Message::parse(&challenge).unwrap().get::<Nonce>().unwrap().unwrap().0.to_owned();
        let ok = self.request(client, Method::ALLOCATE, Some(&nonce), &[Attr::Udp]);
        let relayed = Message::parse(&ok).unwrap().get::<XorRelayedAddress>().unwrap().unwrap().0;
        (relayed, nonce)
    }

    fn bind(&mut self, client: SocketAddr, nonce: &str, channel: u16, peer: SocketAddr) {
        let ok = self.request(client, Method::CHANNEL_BIND, Some(nonce), &[Attr::Channel(channel), Attr::Peer(peer)]);
        assert_eq!(Message::parse(&ok).unwrap().class(), Class::Success);
    }
}

enum Attr {
    Udp,
    Peer(SocketAddr),
    Channel(u16),
}

fn client(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i))
}

fn forwarding(c: &mut Criterion) {
    let mut b = Bench::new();
    let peer: SocketAddr = "127.0.0.2:9".parse().unwrap();
    // 1,000 allocations, each with a channel to the peer; the last two are
    // also each other's peers.
    let mut relayed = Vec::new();
    for i in 0..1000 {
        let (r, nonce) = b.allocate(client(i));
        b.bind(client(i), &nonce, 0x4000, peer);
        relayed.push((r, nonce));
    }
    let (ra, na) = relayed[998].clone();
    let (rb, nb) = relayed[999].clone();
    b.bind(client(998), &na, 0x4001, rb);
    b.bind(client(999), &nb, 0x4001, ra);

    for size in [100, 1200] {
        // Packets lie in buffers as the datapaths receive them: with room
        // around them.
        let h = PEER_HEADROOM;
        let payload = vec![0x5a; size];
        let mut packet = vec![0u8; h + 4 + size + PEER_TAILROOM];
        let len = write_channel_data(&mut packet[h..], 0x4000, &payload, Transport::Datagram).unwrap();
        c.bench_function(&format!("client to peer, ChannelData {size} B"), |bench| {
            bench.iter(|| {
                let (listener, from) = (LISTENER, client(500));
                let v = b.server.handle_client(
                    b.now,
                    listener,
                    from,
                    &mut packet,
                    h..h + len,
                    &mut b.reply,
                    &mut b.sockets,
                );
                assert!(matches!(v, Verdict::Forward(_)));
                black_box(v)
            });
        });

        let token = RelayToken(500 << 1);
        let mut buf = vec![0u8; PEER_HEADROOM + size + PEER_TAILROOM];
        c.bench_function(&format!("peer to client, framed as ChannelData {size} B"), |bench| {
            bench.iter(|| {
                let v = b.server.handle_peer(b.now, token, peer, &mut buf, PEER_HEADROOM..PEER_HEADROOM + size);
                assert!(v.is_ok());
                black_box(v)
            });
        });

        // Both channels are 0x4001: framing for B rewrites A's header as it
        // was, so the packet can be sent again and again.
        let mut buf = vec![0u8; h + 4 + size + PEER_TAILROOM];
        let n = write_channel_data(&mut buf[h..], 0x4001, &payload, Transport::Datagram).unwrap();
        c.bench_function(&format!("short-circuit between two allocations {size} B"), |bench| {
            bench.iter(|| {
                let (listener, from) = (LISTENER, client(998));
                let v = b.server.handle_client(b.now, listener, from, &mut buf, h..h + n, &mut b.reply, &mut b.sockets);
                assert!(matches!(v, Verdict::Forward(Transmit { via: Via::Listener(_), .. })), "{v:?}");
                black_box(v)
            });
        });
    }
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
