//! The PROXY protocol behind a real HAProxy (Debian's package, in `mode
//! tcp` with `send-proxy-v2`, running deploy/haproxy/turn-beside-https.cfg
//! with only its addresses changed): the client's address stands for its
//! connection everywhere (XOR-MAPPED-ADDRESS, quotas, sessions), over TCP
//! and TLS, while HTTPS on the same port goes to the web server. And what
//! must fail: a header from a source not trusted, a header that never
//! completes, a balancer's connection without one. On each datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_client::{Client, Received};
use ip2p_relay::config::DatapathKind;
use ip2p_relay::datapath::stats::StreamCounters;
use ip2p_relay::node::Node;
use ip2p_tests::balancer::{Balancer, Kind};
use ip2p_tests::support::Pki;
use ip2p_tests::{peer, recv};

const WAIT: Duration = Duration::from_secs(2);
/// Where the balancer connects from (the address the relay trusts).
const BALANCER: &str = "127.0.0.4";
/// A client of the balancer's.
const CLIENT: &str = "127.0.0.3";

/// A node with a TCP and a TLS listener that trusts PROXY headers from
/// [`BALANCER`], `max_per_ip` connections per client address.
fn start(dp: DatapathKind, pki: &Pki, max_per_ip: u32) -> Node {
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        realm = "ip2p.test"
        workers = 2
        {tls}
        [auth]
        users = [{{ name = "alice", password = "wonderland" }}]
        [peers]
        allow = ["127.0.0.2/32"]
        [connections]
        max_per_ip = {max_per_ip}
        proxy_protocol_from = ["{BALANCER}/32"]
        "#,
        tls = pki.tls_table("127.0.0.1:0"),
    );
    ip2p_tests::start_node(dp, &text)
}

/// HAProxy with the recipe's frontend on its first port (TURN over TLS to
/// the node, HTTPS to a web server of HAProxy's own), a plain TCP frontend
/// with PROXY on its second, and one without PROXY (from 127.0.0.5) on its
/// third.
fn haproxy(node: &Node, pki: &Pki) -> Balancer {
    let recipe = include_str!("../../deploy/haproxy/turn-beside-https.cfg");
    let (tcp, tls) = (node.local_addrs()[0], node.tls_addrs()[0]);
    Balancer::start(Kind::Haproxy, 4, |ports, dir| {
        let pem = std::fs::read_to_string(pki.cert()).unwrap() + &std::fs::read_to_string(pki.key()).unwrap();
        let pem_path = dir.join("web.pem");
        std::fs::write(&pem_path, pem).unwrap();
        let [front, proxied, plain, web] = ports else { unreachable!() };
        let recipe = recipe
            // The test's fd limit is lower than a production host's.
            .replace("maxconn 20000", "maxconn 1000")
            .replace("bind :443", &format!("bind 127.0.0.1:{front}"))
            .replace("log stdout format raw local0 notice", "log stderr format raw local0 warning")
            .replace("127.0.0.1:5349 send-proxy-v2", &format!("{tls} send-proxy-v2 source {BALANCER}"))
            .replace("127.0.0.1:8443 send-proxy-v2", &format!("127.0.0.1:{web} send-proxy-v2"));
        format!(
            "{recipe}\n\
             frontend turn_tcp\n    bind 127.0.0.1:{proxied}\n    default_backend ip2p_tcp\n\
             backend ip2p_tcp\n    server ip2p {tcp} send-proxy-v2 source {BALANCER}\n\
             frontend turn_tcp_plain\n    bind 127.0.0.1:{plain}\n    default_backend ip2p_tcp_plain\n\
             backend ip2p_tcp_plain\n    server ip2p {tcp} source 127.0.0.5\n\
             frontend web_https\n    mode http\n    bind 127.0.0.1:{web} ssl crt {pem} accept-proxy\n\
             \x20   http-request return status 200 content-type text/plain string \"the web site\"\n",
            pem = pem_path.display()
        )
    })
}

/// A TCP connection to `to` from `from` (any port).
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from.parse().unwrap(), 0).into()).unwrap();
    socket.connect_timeout(&to.into(), Duration::from_secs(5)).unwrap();
    socket.into()
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn streams(node: &Node) -> StreamCounters {
    node.stats().iter().fold(StreamCounters::default(), |mut t, w| {
        t.add(&w.streams);
        t
    })
}

/// Waits up to five seconds for `f` to hold.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// XOR-MAPPED-ADDRESS is the client's own address; an allocation relays
/// both ways; the node's session names the client.
fn relays_as_itself(node: &Node, c: &mut Client) {
    let me = c.local_addr().unwrap();
    assert_eq!(c.binding().unwrap(), me, "the Binding's XOR-MAPPED-ADDRESS is the client's, not the balancer's");
    let relayed = c.allocate(None).unwrap();
    assert_eq!(c.mapped, Some(me));
    let p = peer();
    let paddr = p.local_addr().unwrap();
    c.create_permission(&[paddr]).unwrap();
    c.send_indication(paddr, b"to the peer").unwrap();
    assert_eq!(recv(&p), (b"to the peer".to_vec(), relayed));
    p.send_to(b"to the client", relayed).unwrap();
    assert_eq!(c.recv(WAIT).unwrap(), Some(Received::Data { peer: paddr, data: b"to the client".to_vec() }));
    let query = ip2p_turn::SessionQuery { client: Some(me.ip()), ..Default::default() };
    let sessions = node.handle().sessions(&query);
    assert!(sessions.iter().any(|s| s.client == me), "no session of {me}: {sessions:?}");
}

fn haproxy_carries_the_clients_address(dp: DatapathKind) {
    let pki = Pki::new("proxy");
    let node = start(dp, &pki, 64);
    let lb = haproxy(&node, &pki);
    let (front, proxied, plain) = (at(lb.ports[0]), at(lb.ports[1]), at(lb.ports[2]));

    let mut tcp = Client::over_tcp(connect_from(CLIENT, proxied), "alice", "wonderland").unwrap();
    relays_as_itself(&node, &mut tcp);
    let config = Client::tls_config(pki.roots.clone()).unwrap();
    let mut tls = Client::tls_over(connect_from(CLIENT, front), "localhost", config, "alice", "wonderland").unwrap();
    relays_as_itself(&node, &mut tls);
    assert_eq!(tls.tls_info().unwrap().1.as_deref(), Some(&b"stun.turn"[..]), "the relay's own TLS, end to end");

    // Without PROXY, the relay can see only the balancer.
    let mut blind = Client::over_tcp(connect_from(CLIENT, plain), "alice", "wonderland").unwrap();
    assert_eq!(blind.binding().unwrap().ip(), "127.0.0.5".parse::<IpAddr>().unwrap());

    // HTTPS on the TURN port reaches the web server.
    assert!(https_get(&pki, front).contains("the web site"));

    let s = streams(&node);
    assert!(s.proxy_accepted >= 2, "{s:?}");
    assert_eq!((s.proxy_untrusted, s.proxy_invalid, s.proxy_timeout), (0, 0, 0), "{s:?}");
    let last = node.stats().iter().filter_map(|w| w.streams.last_proxied).max_by_key(|l| l.at);
    let last = last.map(|l| (l.client.ip(), l.balancer.ip()));
    assert_eq!(last, Some((CLIENT.parse().unwrap(), BALANCER.parse().unwrap())));
}

/// GET / over HTTPS (offering h2 and http/1.1, as browsers do): the body.
fn https_get(pki: &Pki, to: SocketAddr) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let socket = TcpStream::connect(to).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = Vec::new();
    let _ = tls.read_to_end(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

/// The per-address limit counts the client behind the balancer: two
/// connections of 127.0.0.3 through it fill that address's place, a
/// third is closed, while another client's goes on.
fn quotas_count_the_client_not_the_balancer(dp: DatapathKind) {
    let pki = Pki::new("proxy-quota");
    let node = start(dp, &pki, 2);
    let lb = haproxy(&node, &pki);
    let proxied = at(lb.ports[1]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Client::over_tcp(connect_from(CLIENT, proxied), "alice", "wonderland").unwrap();
        c.binding().unwrap();
        held.push(c);
    }
    let mut third = Client::over_tcp(connect_from(CLIENT, proxied), "alice", "wonderland").unwrap();
    assert!(third.binding().is_err(), "a third connection of {CLIENT} through the balancer");
    let mut other = Client::over_tcp(connect_from("127.0.0.6", proxied), "alice", "wonderland").unwrap();
    assert_eq!(other.binding().unwrap(), other.local_addr().unwrap());
    assert!(streams(&node).refused >= 1);
    drop(held);
}

/// A header written by hand on a connection from `from`, then a client
/// on it: what the relay answers a Binding with.
fn binding_after(node: &Node, from: &str, header: &[u8]) -> Result<SocketAddr, String> {
    let mut stream = connect_from(from, node.local_addrs()[0]);
    stream.write_all(header).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut c = Client::over_tcp(stream, "alice", "wonderland").unwrap();
    c.binding().map_err(|e| e.to_string())
}

fn headers_only_from_the_balancer(dp: DatapathKind) {
    let pki = Pki::new("proxy-refused");
    let node = start(dp, &pki, 64);
    let v1 = b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 3478\r\n";
    assert_eq!(binding_after(&node, BALANCER, v1).unwrap(), "192.0.2.9:40000".parse().unwrap());
    // LOCAL (a health check): the balancer's own connection.
    let mut local = vec![0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0, 0];
    assert_eq!(binding_after(&node, BALANCER, &local).unwrap().ip(), BALANCER.parse::<IpAddr>().unwrap());
    // From anyone else a header is garbage: closed, never believed.
    assert!(binding_after(&node, CLIENT, v1).is_err());
    local[12] = 0x21;
    assert!(binding_after(&node, CLIENT, &local[..13]).is_err(), "not even part of one");
    assert!(eventually(|| streams(&node).proxy_untrusted == 2), "{:?}", streams(&node));
    // The balancer must send one.
    assert!(binding_after(&node, BALANCER, b"").is_err());
    assert!(eventually(|| streams(&node).proxy_invalid == 1), "{:?}", streams(&node));
    // A header that never completes is cut off at its deadline.
    let mut slow = connect_from(BALANCER, node.local_addrs()[0]);
    slow.write_all(b"PROXY TCP4 192.0").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    match slow.read(&mut [0; 16]) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("not closed: {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "{took:?}");
    assert_eq!(streams(&node).proxy_timeout, 1);
    assert_eq!(streams(&node).proxy_accepted, 2);
}

on_both_datapaths! {
    haproxy_carries_the_clients_address: haproxy_carries_the_clients_address();
    quotas_count_the_client_not_the_balancer: quotas_count_the_client_not_the_balancer();
    headers_only_from_the_balancer: headers_only_from_the_balancer();
}
