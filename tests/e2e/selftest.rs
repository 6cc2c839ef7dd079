//! The admin listener's self-test page (`/selftest`), opened in a real
//! headless Chromium: its WebRTC stack gathers relay candidates from the
//! relay and opens a data channel through it over UDP, TCP and TLS, and a
//! wrong password fails with the TURN error the page shows. Also what
//! guards the page: the admin token (Bearer or Basic), the Host check
//! without a token, the credential it mints. On each datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::SocketAddr;

use base64::Engine as _;
use ip2p_client::Client;
use ip2p_relay::admin::Admin;
use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use ip2p_tests::browser::Browser;
use ip2p_tests::{get, http, post};
use serde_json::{Value, json};

const SECRET: &str = "selftest-rest-secret-0123456789";
const TOKEN: &str = "admin-token-0123456789abcdef";

/// A node on loopback with a static user (alice) and, with `rest`, a REST
/// secret; its admin listener with `token`, if any.
fn start(dp: DatapathKind, rest: bool, token: Option<&str>) -> (Node, Admin) {
    start_with(dp, rest, token, "")
}

/// [`start`], with more of the config (a `[tls]` table).
fn start_with(dp: DatapathKind, rest: bool, token: Option<&str>, more: &str) -> (Node, Admin) {
    let secrets = if rest { format!("secrets = [\"{SECRET}\"]") } else { String::new() };
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        realm = "selftest.test"
        workers = 2
        {more}
        [auth]
        users = [{{ name = "alice", password = "wonderland" }}]
        {secrets}
        "#
    );
    let node = ip2p_tests::start_node(dp, &text);
    let admin = Admin::start("127.0.0.1:0".parse().unwrap(), node.handle(), token.map(str::to_owned)).unwrap();
    (node, admin)
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The page open in a browser (trusting the TLS key `trust` hashes, if
/// any), its listeners loaded.
fn open(admin: &Admin, token: Option<&str>, trust: Option<&str>) -> Browser {
    let mut browser = Browser::start(1000, 720, trust);
    if let Some(token) = token {
        browser.set_headers(json!({ "Authorization": basic("operator", token) }));
    }
    let url = format!("http://{}/selftest", admin.local_addr());
    browser.open(&url, "document.getElementById('status').textContent === 'Ready.'");
    browser
}

/// The results the page reports for each URL it tested.
fn run(browser: &mut Browser) -> Vec<Value> {
    let out = browser.eval("runSelftest()");
    assert!(out.get("error").is_none(), "the self-test failed: {out}");
    out["results"].as_array().unwrap().clone()
}

/// With the node's listeners and a credential the node mints: relay
/// candidates over the transport each URL names, a data channel open
/// through the relay, a round-trip time. The relay counted the
/// allocations (two peer connections per URL). The browser trusts the
/// test certificate's key (for the address, not its name).
fn relays_over_udp_tcp_and_tls(dp: DatapathKind) {
    let pki = ip2p_tests::support::Pki::new("selftest");
    let (node, admin) = start_with(dp, true, Some(TOKEN), &pki.tls_table("127.0.0.1:0"));
    let mut browser = open(&admin, Some(TOKEN), Some(&pki.leaf_spki_sha256));
    let (port, tls) = (node.local_addrs()[0].port(), node.tls_addrs()[0].port());
    let urls = browser.eval("document.getElementById('urls').value");
    let expected = format!(
        "turn:127.0.0.1:{port}?transport=udp\nturn:127.0.0.1:{port}?transport=tcp\nturns:127.0.0.1:{tls}?transport=tcp"
    );
    assert_eq!(urls, json!(expected));
    assert_eq!(browser.eval("document.getElementById('mint').checked"), json!(true));
    let results = run(&mut browser);
    assert_eq!(results.len(), 3, "{results:?}");
    for (result, transport) in results.iter().zip(["udp", "tcp", "tls"]) {
        assert_eq!(result["connected"], json!(true), "over {transport}: {result}");
        assert!(result["error"].is_null(), "over {transport}: {result}");
        let relays: Vec<&Value> =
            result["candidates"].as_array().unwrap().iter().filter(|c| c["type"] == json!("relay")).collect();
        for peer in ["A", "B"] {
            assert!(
                relays.iter().any(|c| c["peer"] == json!(peer)
                    && c["relayProtocol"] == json!(transport)
                    && c["address"] == json!("127.0.0.1")),
                "peer {peer} has no relay candidate over {transport}: {result}"
            );
        }
        // The sessions API names the client as the relay saw it: here.
        let seen = result["seen"].as_array().unwrap();
        assert!(!seen.is_empty() && seen.iter().all(|s| s.as_str().unwrap().starts_with("127.0.0.1:")), "{result}");
        let rtt = result["rttMs"].as_f64().unwrap();
        assert!(rtt > 0.0 && rtt < 1000.0, "round trip over {transport}: {rtt} ms");
    }
    let text = browser.eval("document.body.innerText").as_str().unwrap().to_owned();
    assert!(text.contains("3 of 3 working (as "), "{text}");
    let metrics = ip2p_tests::metrics(admin.local_addr(), Some(TOKEN));
    assert!(metrics["ip2p_allocations_created_total"] >= 6.0, "{metrics:?}");
    // The picture in docs/operations.md comes from here.
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join(format!("selftest-{dp:?}.png")), &png).unwrap();
}

/// A static user with a wrong password: no relay candidate, no channel,
/// and the page names the TURN error (401) for each transport.
fn a_wrong_password_fails_clearly(dp: DatapathKind) {
    let (_node, admin) = start(dp, false, None);
    let mut browser = open(&admin, None, None);
    // No REST secret: nothing to mint with, so the box is off.
    assert_eq!(browser.eval("document.getElementById('mint').disabled"), json!(true));
    browser.eval("document.getElementById('username').value = 'alice'");
    browser.eval("document.getElementById('credential').value = 'not-the-password'");
    let results = run(&mut browser);
    assert_eq!(results.len(), 2, "{results:?}");
    for result in &results {
        assert_eq!(result["connected"], json!(false), "{result}");
        assert!(!result["candidates"].as_array().unwrap().iter().any(|c| c["type"] == json!("relay")), "{result}");
        assert!(result["errors"].as_array().unwrap().iter().any(|e| e["code"] == json!(401)), "{result}");
        assert_eq!(result["error"], json!("no relay candidate gathered"), "{result}");
    }
    let text = browser.eval("document.body.innerText").as_str().unwrap().to_owned();
    assert!(text.contains("0 of 2 working"), "{text}");
    assert!(text.contains("401 "), "the page does not show the error code: {text}");
    // The right password works on the same page.
    browser.eval("document.getElementById('credential').value = 'wonderland'");
    let results = run(&mut browser);
    assert!(results.iter().all(|r| r["connected"] == json!(true)), "{results:?}");
}

on_both_datapaths! {
    relays_over_udp_tcp_and_tls: relays_over_udp_tcp_and_tls();
    a_wrong_password_fails_clearly: a_wrong_password_fails_clearly();
}

fn request(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    ip2p_tests::http_with_head(addr, &format!("GET {path} HTTP/1.1\r\n{headers}\r\n"))
}

/// With a token, the page and what is behind it ask for it: a browser is
/// challenged for Basic credentials (any user, the token as password), an
/// API client may send it as a bearer token.
#[test]
fn the_page_asks_for_the_admin_token() {
    let (_node, admin) = start(DatapathKind::Epoll, true, Some(TOKEN));
    let addr = admin.local_addr();
    let mint = r#"{"user": "ip2p-selftest", "ttl": 300}"#;
    assert_eq!(post(addr, "/api/v1/credentials", mint, None).0, 401);
    assert_eq!(post(addr, "/api/v1/credentials", mint, Some(TOKEN)).0, 200);
    for path in ["/selftest", "/selftest/config"] {
        let (code, head, _) = request(addr, path, "Host: relay.example.org\r\n");
        assert_eq!(code, 401, "{path}");
        assert!(head.contains("WWW-Authenticate: Basic realm=\"ip2p admin\""), "{path}: {head}");
        let wrong = format!("Host: x\r\nAuthorization: {}\r\n", basic("operator", "not-the-token"));
        assert_eq!(request(addr, path, &wrong).0, 401, "{path}");
        let right = format!("Host: relay.example.org\r\nAuthorization: {}\r\n", basic("operator", TOKEN));
        assert_eq!(request(addr, path, &right).0, 200, "{path}");
        assert_eq!(get(addr, path, Some(TOKEN)).0, 200, "{path}");
    }
    // Basic opens /metrics too; a token alone, as a user name, does not.
    assert_eq!(request(addr, "/metrics", &format!("Host: x\r\nAuthorization: {}\r\n", basic("o", TOKEN))).0, 200);
    assert_eq!(request(addr, "/metrics", &format!("Host: x\r\nAuthorization: {}\r\n", basic(TOKEN, ""))).0, 401);
}

/// Without a token, the self-test answers only when the browser names the
/// listener by address or as localhost: a page at another name that
/// resolves here (DNS rebinding) gets 403 and no credential.
#[test]
fn without_a_token_only_an_address_or_localhost_opens_it() {
    let (_node, admin) = start(DatapathKind::Epoll, true, None);
    let addr = admin.local_addr();
    for host in ["attacker.example", "attacker.example:80", "127.0.0.1.attacker.example"] {
        for path in ["/selftest", "/selftest/config"] {
            let (code, _, body) = request(addr, path, &format!("Host: {host}\r\n"));
            assert_eq!(code, 403, "Host {host} {path}");
            assert!(!body.contains("credential"), "{body}");
        }
        let head = format!("POST /api/v1/credentials HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}");
        let (code, body) = http(addr, &head);
        assert!(code == 403 && !body.contains("credential"), "Host {host}: {code} {body}");
    }
    for host in [addr.to_string(), "localhost".into(), format!("LOCALHOST:{}", addr.port()), "[::1]:9478".into()] {
        assert_eq!(request(addr, "/selftest", &format!("Host: {host}\r\n")).0, 200, "Host {host}");
    }
    // Nor do /metrics and /status (they name users and addresses); the
    // probes, which say only ok, answer any name.
    for path in ["/metrics", "/status"] {
        assert_eq!(request(addr, path, "Host: relay.example.org\r\n").0, 403, "{path}");
        assert_eq!(request(addr, path, "Host: localhost\r\n").0, 200, "{path}");
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(request(addr, path, "Host: relay.example.org\r\n").0, 200, "{path}");
    }
}

/// The page is whole in itself: no script, style, image or font from
/// anywhere, and a policy that forbids loading any; never cached.
#[test]
fn the_page_loads_nothing_from_elsewhere() {
    let (_node, admin) = start(DatapathKind::Epoll, false, None);
    let (code, head, body) = request(admin.local_addr(), "/selftest", "Host: 127.0.0.1\r\n");
    assert_eq!(code, 200);
    assert!(head.contains("Content-Type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("Content-Security-Policy: default-src 'none';"), "{head}");
    assert!(head.contains("connect-src 'self'"), "{head}");
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    for loads in ["src=", "href=", "@import", "url(", "http://", "https://", "//cdn"] {
        assert!(!body.contains(loads), "the page loads something ({loads})");
    }
}

/// The minted credential is a TURN REST credential the relay accepts,
/// short-lived; without a REST secret there is none.
#[test]
fn the_minted_credential_allocates() {
    let (node, admin) = start(DatapathKind::Epoll, true, None);
    let (code, body) =
        post(admin.local_addr(), "/api/v1/credentials", r#"{"user": "ip2p-selftest", "ttl": 300}"#, None);
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    let minted = &answer["iceServers"][0];
    let username = minted["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "ip2p-selftest");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(expiry > now && expiry <= now + 301, "expires at {expiry}, now {now}");
    let mut client = Client::new(node.local_addrs()[0], username, minted["credential"].as_str().unwrap()).unwrap();
    client.allocate(None).unwrap();
    let mut wrong = Client::new(node.local_addrs()[0], username, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    assert!(wrong.allocate(None).is_err());

    let (_node, admin) = start(DatapathKind::Epoll, false, None);
    let (code, body) = post(admin.local_addr(), "/api/v1/credentials", r#"{"user": "ip2p-selftest"}"#, None);
    assert_eq!(code, 409);
    assert!(body.contains("no TURN REST secret"), "{body}");
    let (code, body) = http(admin.local_addr(), "GET /selftest/config HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(code, 200);
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["mint"], json!(false));
    assert_eq!(config["realm"], json!("selftest.test"));
}
