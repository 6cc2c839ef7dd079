//! Sequences of packets from clients and peers into the TURN core, with
//! time moving: no input may make it panic, and every verdict must name
//! bytes that exist.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_relay::proto::{
    Config, Credentials, Held, ListenerId, PEER_HEADROOM, PEER_TAILROOM, PeerPolicy, Quotas, REPLY_BUFFER, RelayIp,
    RelayToken, Server, Shared, Sockets, UserSecret, Verdict,
};
use libfuzzer_sys::fuzz_target;

struct NoSockets(u32);

impl Sockets for NoSockets {
    fn open_relay(&mut self, _: RelayToken, _: SocketAddr, _: bool) -> std::io::Result<()> {
        self.0 += 1;
        Ok(())
    }
    fn hold(&mut self, addr: SocketAddr) -> std::io::Result<Held> {
        Ok(Held { addr, socket: None })
    }
    fn adopt_relay(&mut self, _: RelayToken, _: Held, _: bool) -> std::io::Result<()> {
        Ok(())
    }
    fn close_relay(&mut self, _: RelayToken) {}
    fn open_tcp_relay(&mut self, _: RelayToken, _: SocketAddr, _: &str, _: std::net::IpAddr) -> std::io::Result<()> {
        self.0 += 1;
        Ok(())
    }
    fn tcp_connect(&mut self, _: RelayToken, _: SocketAddr, _: SocketAddr) {}
    fn tcp_busy(&mut self, _: RelayToken, _: SocketAddr) -> bool {
        self.0 % 2 == 0
    }
    fn tcp_accept(&mut self, _: u32, _: bool) {}
    fn tcp_bind(&mut self, conn: u32, _: &str, _: ListenerId, _: SocketAddr) -> bool {
        conn % 2 == 0
    }
}

fn server() -> Server {
    let mut users = std::collections::HashMap::new();
    users.insert("u".to_owned(), UserSecret::Password("p".into()));
    let config = Config {
        software: Some("fuzz".into()),
        default_lifetime: Duration::from_secs(600),
        max_lifetime: Duration::from_secs(3600),
        relay_ips: [
            vec![RelayIp { bind: "127.0.0.1".parse().unwrap(), external: None }],
            vec![RelayIp { bind: "::1".parse().unwrap(), external: None }],
        ],
        ports: 50000..=50015,
        channel_numbers: Default::default(),
        policy: PeerPolicy { allow: vec!["127.0.0.0/8".parse().unwrap()], deny: vec![], own: vec![] },
        alternates: vec!["127.0.0.2:3478".parse().unwrap()],
        bandwidth: 4000, // low enough that sessions run into it
        short_circuit: true,
        credentials: Credentials {
            realm: "r".into(),
            users,
            rest_secrets: vec![b"s".to_vec()],
            nonce_secret: [1; 32],
            nonce_lifetime: 600,
        },
    };
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    Server::new(Arc::new(config), Arc::new(Shared::new(Quotas::new(4, 2))), now, 1_800_000_000, 7)
}

fuzz_target!(|data: &[u8]| {
    let mut s = server();
    let mut sockets = NoSockets(0);
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut reply = vec![0u8; REPLY_BUFFER];
    // Each record: kind byte, source selector byte, 2-byte length, packet.
    let mut rest = data;
    while let [kind, who, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        let from = SocketAddr::from(([127, 0, 0, 1], 40000 + u16::from(*who % 4)));
        // Clients over UDP and over a stream (TCP or TLS).
        let listener = if who & 0x80 == 0 { ListenerId::udp(0) } else { ListenerId::stream(0) };
        let token = RelayToken(u32::from(*who % 8));
        match kind % 7 {
            0 => match s.handle_client(now, listener, from, packet, &mut reply, &mut sockets) {
                Verdict::Forward(t) => assert!(t.range.end <= packet.len()),
                Verdict::Reply(t) => assert!(t.range.end <= reply.len()),
                Verdict::Drop(_) => {}
            },
            1 => {
                let mut buf = vec![0u8; PEER_HEADROOM + packet.len() + PEER_TAILROOM];
                buf[PEER_HEADROOM..PEER_HEADROOM + packet.len()].copy_from_slice(packet);
                let data = PEER_HEADROOM..PEER_HEADROOM + packet.len();
                if let Verdict::Forward(t) = s.handle_peer(now, token, from, &mut buf, data) {
                    assert!(t.range.end <= buf.len());
                }
            }
            2 => {
                now += Duration::from_secs(u64::from(*who) * 5);
                s.handle_timeout(now, &mut sockets);
            }
            // RFC 6062 news from the TCP relays, and closed connections.
            3 => {
                let conn = (packet.len() % 3 != 0).then_some(u32::from(*who));
                if let Some(t) = s.tcp_connected(token, from, conn, &mut reply) {
                    assert!(t.range.end <= reply.len());
                }
            }
            4 => {
                if let Some(t) = s.tcp_incoming(now, token, from, u32::from(*who), &mut reply, &mut sockets) {
                    assert!(t.range.end <= reply.len());
                }
            }
            5 => s.client_closed(now, listener, from, &mut sockets),
            _ => s.drain(),
        }
    }
});
