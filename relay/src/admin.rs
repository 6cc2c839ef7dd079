//! The admin HTTP listener: `/metrics` for Prometheus, `/healthz` and
//! `/readyz` for service managers and load balancers, `/status` as JSON for
//! people.
//!
//! It is a small HTTP/1.1 server on one thread of its own (never a
//! worker's), an event loop over non-blocking sockets with httparse for
//! the requests, because it must stay up under abuse without costing the
//! relay: at most [`MAX_CONNECTIONS`] connections (more are closed at
//! once), requests of at most [`MAX_REQUEST`] bytes with no body, a
//! deadline to read a request and one to write the answer, one request
//! per connection. `/metrics` and `/status` name users and addresses, and
//! `/selftest` (a page that tests the relay from the browser that opens
//! it, with `/selftest/config` and `/selftest/credential` behind it) mints
//! TURN credentials: with `admin.token` set they answer only the token, as
//! `Authorization: Bearer <token>` or, for browsers, HTTP Basic with the
//! token as password; `/healthz` and `/readyz` say only ok or not and stay
//! open for probes. It binds to loopback by default.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::DatapathKind;
use crate::node::NodeHandle;

/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request (request line and headers).
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client may take to read the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The self-test page, embedded: it loads nothing from anywhere else.
const SELFTEST_PAGE: &str = include_str!("selftest.html");
/// What the self-test page may do in a browser: its own inline script and
/// style, and fetches to this listener; nothing else, in no frame.
const SELFTEST_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                            connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// How long a credential minted for the self-test lives, at most.
const SELFTEST_CREDENTIAL_SECONDS: u64 = 300;
/// The user part of a minted credential's username (quotas count it).
const SELFTEST_USER: &str = "ip2p-selftest";

const LISTENER: Token = Token(usize::MAX);
const WAKE: Token = Token(usize::MAX - 1);

/// A running admin listener; stops when dropped.
pub struct Admin {
    addr: SocketAddr,
    waker: std::sync::Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    /// Its listening socket again, for a handover.
    handover: std::os::fd::OwnedFd,
}

impl Admin {
    /// Binds `addr` and serves `node`'s endpoints until dropped; with a
    /// `token`, `/metrics` and `/status` ask for it.
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local...).
    pub fn start(addr: SocketAddr, node: NodeHandle, token: Option<String>) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?;
        Self::serve(listener, node, token)
    }

    /// [`Admin::start`] on a listener already bound (one a previous
    /// process handed over).
    ///
    /// # Errors
    /// The listener cannot be polled, or the thread cannot be spawned.
    pub fn serve(listener: std::net::TcpListener, node: NodeHandle, token: Option<String>) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let handover = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut server =
            Server { poll, listener: TcpListener::from_std(listener), conns: HashMap::new(), next: 0, node, token };
        server.poll.registry().register(&mut server.listener, LISTENER, Interest::READABLE)?;
        let thread = std::thread::Builder::new().name("ip2p-admin".into()).spawn(move || server.run())?;
        Ok(Self { addr, waker, thread: Some(thread), handover })
    }

    /// Its listening socket, for a handover.
    #[must_use]
    pub fn listener(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.handover)
    }

    /// The address it serves on (the port resolved when 0 was asked).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One client connection: reading its request, then writing the answer.
struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    /// The answer, once there is one, and how much of it went.
    response: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    conns: HashMap<usize, Conn>,
    next: usize,
    node: NodeHandle,
    token: Option<String>,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(128);
        loop {
            let timeout = self.conns.values().map(|c| c.deadline).min().map(|d| d.saturating_duration_since(now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "admin listener stopped");
                return;
            }
            for event in &events {
                match event.token() {
                    WAKE => return,
                    LISTENER => self.accept(),
                    Token(id) => self.serve(id),
                }
            }
            // Whoever is past its deadline is dropped (closed).
            let now = now();
            self.conns.retain(|_, c| c.deadline > now);
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, say: the next event tries again.
                    tracing::debug!(error = %e, "admin accept failed");
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                continue; // closed at once
            }
            self.next = self.next.wrapping_add(1) % (usize::MAX - 2);
            let id = self.next;
            if self.poll.registry().register(&mut stream, Token(id), Interest::READABLE | Interest::WRITABLE).is_ok() {
                let conn = Conn { stream, request: Vec::new(), response: None, deadline: now() + READ_TIMEOUT };
                self.conns.insert(id, conn);
            }
        }
    }

    /// Reads what connection `id` sent, answers once its request is whole,
    /// writes what the socket takes; drops the connection when done or
    /// broken.
    fn serve(&mut self, id: usize) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        if self.step(&mut conn).is_ok_and(|open| open) {
            self.conns.insert(id, conn);
        }
    }

    /// `Ok(true)`: keep the connection for more events.
    fn step(&self, conn: &mut Conn) -> io::Result<bool> {
        if conn.response.is_none() {
            let mut buf = [0u8; 2048];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => return Ok(false),
                    Ok(n) => {
                        conn.request.extend_from_slice(buf.get(..n).unwrap_or_default());
                        if conn.request.len() > MAX_REQUEST {
                            conn.response = Some((plain(431, "request too large\n", &[]), 0));
                            break;
                        }
                        if let Some(response) = self.answer(&conn.request) {
                            conn.response = Some((response, 0));
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            conn.deadline = now() + WRITE_TIMEOUT;
        }
        let Some((response, written)) = &mut conn.response else { return Ok(true) };
        while let Some(rest) = response.get(*written..).filter(|r| !r.is_empty()) {
            match conn.stream.write(rest) {
                Ok(0) => return Ok(false),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// The answer to `request` once it is whole, `None` while it is not.
    fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        let (method, path) = match parsed.parse(request) {
            Ok(httparse::Status::Partial) => return None,
            Ok(httparse::Status::Complete(_)) => (parsed.method.unwrap_or(""), parsed.path.unwrap_or("")),
            Err(httparse::Error::TooManyHeaders) => return Some(plain(431, "too many headers\n", &[])),
            Err(_) => return Some(plain(400, "bad request\n", &[])),
        };
        let header = |name: &str| parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        if header("transfer-encoding").is_some() || header("content-length").is_some_and(|v| v != b"0") {
            return Some(plain(413, "requests have no body here\n", &[]));
        }
        if method != "GET" && method != "HEAD" {
            return Some(plain(405, "only GET\n", &[("Allow", "GET, HEAD")]));
        }
        let path = path.split('?').next().unwrap_or_default();
        let selftest = path == "/selftest" || path.starts_with("/selftest/");
        // Without a token, a page at any name that resolves to this
        // listener (DNS rebinding) would be same-origin with the self-test
        // and could mint credentials: the self-test answers only to an
        // address or localhost then.
        if selftest && self.token.is_none() && !header("host").is_none_or(is_local_host) {
            return Some(plain(
                403,
                "open the self-test at this listener's address or localhost (or set admin.token)\n",
                &[],
            ));
        }
        let private = selftest || matches!(path, "/metrics" | "/status");
        if private && !self.authorized(header("authorization")) {
            // Browsers ask a person for Basic credentials; API clients send
            // the bearer token.
            let challenge =
                if selftest { "Basic realm=\"ip2p admin\", charset=\"UTF-8\"" } else { "Bearer realm=\"ip2p\"" };
            return Some(plain(
                401,
                "the admin token is needed: Authorization: Bearer <token>, or Basic with the token as password\n",
                &[("WWW-Authenticate", challenge)],
            ));
        }
        let node = &self.node;
        let no_store = [("Cache-Control", "no-store")];
        let response = match path {
            "/metrics" => match crate::metrics::render(node) {
                Ok(body) => ok(crate::metrics::CONTENT_TYPE, body.into_bytes()),
                Err(_) => plain(500, "cannot encode the metrics\n", &[]),
            },
            // Alive: every worker answers (a stuck worker is worth a restart).
            "/healthz" if node.stats().len() == node.workers() => plain(200, "ok\n", &[]),
            "/healthz" => plain(503, "a worker does not answer\n", &[]),
            // Ready for new clients: not draining.
            "/readyz" if node.draining() => plain(503, "draining\n", &[]),
            "/readyz" => plain(200, "ready\n", &[]),
            "/status" => ok("application/json", status(node).to_string().into_bytes()),
            "/selftest" => response(
                200,
                "OK",
                "text/html; charset=utf-8",
                &[
                    ("Content-Security-Policy", SELFTEST_CSP),
                    ("Cache-Control", "no-store"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "no-referrer"),
                ],
                SELFTEST_PAGE.as_bytes().to_vec(),
            ),
            "/selftest/config" => {
                response(200, "OK", "application/json", &no_store, selftest_config(node).to_string().into_bytes())
            }
            "/selftest/credential" => match mint(&node.credentials(), unix_now()) {
                Some(minted) => response(200, "OK", "application/json", &no_store, minted.to_string().into_bytes()),
                None => {
                    plain(404, "no TURN REST secret is configured (auth.secrets): nothing to mint with\n", &no_store)
                }
            },
            _ => plain(404, "not found; try /metrics, /healthz, /readyz, /status or /selftest\n", &[]),
        };
        Some(if method == "HEAD" { head_only(response) } else { response })
    }

    /// Whether the request may see private pages: no token is configured,
    /// or it presents the token (compared in constant time).
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = authorization.and_then(presented_token).unwrap_or_default();
        ip2p_wire::credentials::constant_time_eq(&presented, token.as_bytes())
    }
}

fn now() -> Instant {
    Instant::now()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The token in an Authorization header: `Bearer <token>`, or `Basic`
/// with any user name and the token as password (what a browser sends).
fn presented_token(authorization: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if let Some(token) = authorization.strip_prefix(b"Bearer ") {
        return Some(token.to_vec());
    }
    let encoded = authorization.strip_prefix(b"Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    decoded.get(colon + 1..).map(<[u8]>::to_vec)
}

/// Whether a Host header names this machine by address or as localhost.
fn is_local_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// `/selftest/config`: the TURN servers the page tests by default (this
/// node's first listener of each transport; `host` null where it listens
/// on every address) and whether it can mint a credential.
fn selftest_config(node: &NodeHandle) -> serde_json::Value {
    let credentials = node.credentials();
    let server = |transport: &str, addr: Option<&SocketAddr>| {
        addr.map(|a| {
            let host = match a.ip() {
                ip if ip.is_unspecified() => None,
                std::net::IpAddr::V6(ip) => Some(format!("[{ip}]")),
                std::net::IpAddr::V4(ip) => Some(ip.to_string()),
            };
            serde_json::json!({ "transport": transport, "host": host, "port": a.port() })
        })
    };
    let servers: Vec<_> = [
        server("udp", node.listen().first()),
        server("tcp", node.listen().first()),
        server("tls", node.tls_listen().first()),
    ]
    .into_iter()
    .flatten()
    .collect();
    serde_json::json!({
        "realm": credentials.realm,
        "mint": !credentials.rest_secrets.is_empty(),
        "servers": servers,
    })
}

/// A TURN REST credential for the self-test, signed with the first
/// configured secret: `<expiry>:ip2p-selftest` and base64(HMAC-SHA1), valid
/// for [`SELFTEST_CREDENTIAL_SECONDS`] (or the shorter most the node
/// accepts). `None` without a secret.
fn mint(credentials: &ip2p_turn::Credentials, unix_now: u64) -> Option<serde_json::Value> {
    let secret = credentials.rest_secrets.first()?;
    let ttl = SELFTEST_CREDENTIAL_SECONDS.min(credentials.max_rest_lifetime);
    let username = format!("{}:{SELFTEST_USER}", unix_now.saturating_add(ttl));
    let credential = ip2p_turn::auth::rest_password(secret, &username);
    Some(serde_json::json!({ "username": username, "credential": credential, "ttl_seconds": ttl }))
}

/// `/status`: what a person asks a node first.
fn status(node: &NodeHandle) -> serde_json::Value {
    let workers = node.stats();
    let mut gauges = crate::proto::Gauges::default();
    let mut connections = 0;
    for w in &workers {
        gauges.add(&w.gauges);
        connections += w.streams.open;
    }
    serde_json::json!({
        "version": crate::VERSION,
        "uptime_seconds": node.uptime().as_secs(),
        "state": if node.draining() { "draining" } else { "ready" },
        "datapath": match node.datapath() {
            DatapathKind::IoUring => "io_uring",
            _ => "epoll",
        },
        "workers": node.workers(),
        "workers_responding": workers.len(),
        "listen": node.listen(),
        "tls_listen": node.tls_listen(),
        "allocations": {
            "total": node.allocations(),
            "udp": gauges.udp_allocations,
            "tcp": gauges.tcp_allocations,
            "limit": node.quota_limits().total,
        },
        "reservations": node.reservations(),
        "permissions": gauges.permissions,
        "channels": gauges.channels,
        "connections": connections,
        "xdp": node.xdp_outcomes().map(|o| serde_json::json!({
            "interfaces": node.xdp_interfaces(),
            "relayed_packets": { "to_peer": o.to_peer.packets, "to_client": o.to_client.packets },
            "relayed_bytes": { "to_peer": o.to_peer.bytes, "to_client": o.to_client.bytes },
            "passed_packets": { "expired": o.expired.packets, "no_route": o.no_route.packets, "too_big": o.too_big.packets },
        })),
        "per_worker": workers.iter().map(|w| serde_json::json!({
            "worker": w.worker,
            "allocations": w.allocations,
            "cpu_seconds": w.cpu.as_secs_f64(),
        })).collect::<Vec<_>>(),
    })
}

/// A 200 with `body`.
fn ok(content_type: &str, body: Vec<u8>) -> Vec<u8> {
    response(200, "OK", content_type, &[], body)
}

/// A plain-text answer.
fn plain(code: u16, body: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    response(code, reason, "text/plain; charset=utf-8", headers, body.as_bytes().to_vec())
}

fn response(code: u16, reason: &str, content_type: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The head of a response (for HEAD), its Content-Length kept.
fn head_only(mut response: Vec<u8>) -> Vec<u8> {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_local_when_it_is_an_address_or_localhost() {
        for host in ["127.0.0.1", "127.0.0.1:9478", "[::1]:9478", "[::1]", "localhost", "LocalHost:80", "10.0.0.7:1"] {
            assert!(is_local_host(host.as_bytes()), "{host}");
        }
        let names =
            ["relay.example.org", "localhost.example.org:80", "127.0.0.1.nip.io", "", "[::1", "[::1]x", "\u{ff}"];
        for host in names {
            assert!(!is_local_host(host.as_bytes()), "{host}");
        }
        assert!(!is_local_host(b"\xff\xfe"));
    }

    #[test]
    fn the_token_comes_as_bearer_or_as_a_basic_password() {
        assert_eq!(presented_token(b"Bearer t0ken").as_deref(), Some(&b"t0ken"[..]));
        // base64("operator:t0ken"), and a password with a colon in it.
        assert_eq!(presented_token(b"Basic b3BlcmF0b3I6dDBrZW4=").as_deref(), Some(&b"t0ken"[..]));
        assert_eq!(presented_token(b"Basic OmE6Yg==").as_deref(), Some(&b"a:b"[..]));
        for bad in [&b"Basic dDBrZW4="[..], b"Basic !!!", b"Basic ", b"basic b3BlcmF0b3I6dDBrZW4=", b"Digest x", b""] {
            assert_eq!(presented_token(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_minted_credential_is_what_the_rest_api_verifies() {
        use base64::Engine as _;
        use hmac::{KeyInit, Mac};
        let mut credentials = ip2p_turn::Credentials {
            realm: "r".into(),
            users: HashMap::new(),
            rest_secrets: vec![b"first-secret".to_vec(), b"second".to_vec()],
            nonce_secret: [0; 32],
            nonce_lifetime: 600,
            max_rest_lifetime: 86_400,
        };
        let minted = mint(&credentials, 1_000).unwrap();
        assert_eq!(minted["username"], "1300:ip2p-selftest");
        let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(b"first-secret").unwrap();
        mac.update(b"1300:ip2p-selftest");
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(minted["credential"], expected.as_str());
        // Never longer than the node accepts; nothing without a secret.
        credentials.max_rest_lifetime = 60;
        assert_eq!(mint(&credentials, 1_000).unwrap()["username"], "1060:ip2p-selftest");
        credentials.rest_secrets.clear();
        assert!(mint(&credentials, 1_000).is_none());
    }
}
