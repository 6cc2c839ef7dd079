//! TURN beside HTTPS on one port: a real nginx (Debian's package, its
//! stream module reading the ClientHello) running
//! deploy/nginx/turn-beside-https.conf with only its addresses changed,
//! in front of the relay's TLS listener and a web site. One headless
//! Chromium loads the site's HTTPS page from that port and relays over
//! `turns:` through the same port, and the self-test page shows the
//! browser's address (not nginx's) as the one the relay saw. On each
//! datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::SocketAddr;

use ip2p_relay::admin::Admin;
use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use ip2p_tests::balancer::{Balancer, Kind};
use ip2p_tests::browser::Browser;
use ip2p_tests::support::Pki;
use serde_json::{Value, json};

/// Where nginx connects to its backends from: the address the relay trusts.
const BALANCER: &str = "127.0.0.4";

/// A node with a TLS listener that trusts PROXY headers from [`BALANCER`]
/// and mints self-test credentials; its admin listener.
fn start(dp: DatapathKind, pki: &Pki) -> (Node, Admin) {
    let text = format!(
        r#"
        listen = ["127.0.0.1:0"]
        realm = "beside.test"
        workers = 2
        {tls}
        [auth]
        secrets = ["beside-https-rest-secret-0123456789"]
        [connections]
        proxy_protocol_from = ["{BALANCER}"]
        "#,
        tls = pki.tls_table("127.0.0.1:0"),
    );
    let node = ip2p_tests::start_node(dp, &text);
    let admin = Admin::start("127.0.0.1:0".parse().unwrap(), node.handle(), None).unwrap();
    (node, admin)
}

/// nginx with the recipe on its first port, the relay's TLS listener
/// behind it, and a web site of its own on its second port that answers
/// with the client address its PROXY header named. Each connection's
/// ALPN and route go to `stream.log`.
fn nginx(turns: SocketAddr, pki: &Pki) -> Balancer {
    let recipe = include_str!("../../deploy/nginx/turn-beside-https.conf");
    Balancer::start(Kind::Nginx, 2, |ports, dir| {
        let [front, web] = ports else { unreachable!() };
        let recipe = recipe
            .replace("listen 443;", &format!("listen 127.0.0.1:{front};"))
            .replace("127.0.0.1:5349", &turns.to_string())
            .replace("127.0.0.1:8443", &format!("127.0.0.1:{web}"))
            .replace("proxy_protocol on;", &format!("proxy_protocol on;\n        proxy_bind {BALANCER};"))
            .replace(
                "stream {",
                &format!(
                    "stream {{\n    log_format routes 'alpn=[$ssl_preread_alpn_protocols] to=$ip2p_backend';\n    \
                     access_log {}/stream.log routes;",
                    dir.display()
                ),
            );
        let temp = |name: &str| format!("{name}_temp_path {};", dir.join(name).display());
        format!(
            "daemon off;\nworker_processes 1;\npid {pid};\nerror_log {dir}/error.log warn;\n\
             load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nevents {{ worker_connections 256; }}\n\
             {recipe}\n\
             http {{\n    access_log off;\n    {body} {proxy} {fastcgi} {uwsgi} {scgi}\n    server {{\n        \
             listen 127.0.0.1:{web} ssl proxy_protocol;\n        ssl_certificate {cert};\n        \
             ssl_certificate_key {key};\n        location / {{\n            default_type text/html;\n            \
             return 200 '<h1 id=\"site\">the web site</h1><p id=\"you\">$proxy_protocol_addr</p>';\n        }}\n    \
             }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            dir = dir.display(),
            body = temp("client_body"),
            proxy = temp("proxy"),
            fastcgi = temp("fastcgi"),
            uwsgi = temp("uwsgi"),
            scgi = temp("scgi"),
            cert = pki.cert().display(),
            key = pki.key().display(),
        )
    })
}

fn turns_beside_https_through_nginx(dp: DatapathKind) {
    let pki = Pki::new("beside-https");
    let (node, admin) = start(dp, &pki);
    let lb = nginx(node.tls_addrs()[0], &pki);
    let front = lb.ports[0];
    let mut browser = Browser::start(1000, 720, Some(&pki.leaf_spki_sha256));

    // The site, over HTTPS on the port, sees the browser's own address.
    browser.open(&format!("https://127.0.0.1:{front}/"), "document.getElementById('site') !== null");
    assert_eq!(browser.eval("document.getElementById('you').textContent"), json!("127.0.0.1"));

    // TURN over TLS through the same port.
    browser.open(
        &format!("http://{}/selftest", admin.local_addr()),
        "document.getElementById('status').textContent === 'Ready.'",
    );
    let url = format!("turns:127.0.0.1:{front}?transport=tcp");
    browser.eval(&format!("document.getElementById('urls').value = {}", json!(url)));
    let out = browser.eval("runSelftest()");
    let result = &out["results"][0];
    assert_eq!(result["connected"], json!(true), "{out}\nnginx: {}", routes(&lb));
    let relays: Vec<&Value> =
        result["candidates"].as_array().unwrap().iter().filter(|c| c["type"] == json!("relay")).collect();
    assert!(relays.iter().all(|c| c["relayProtocol"] == json!("tls")) && !relays.is_empty(), "{result}");
    // The relay saw the browser, not nginx.
    let seen: Vec<&str> = result["seen"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(!seen.is_empty() && seen.iter().all(|s| s.starts_with("127.0.0.1:")), "{seen:?}");
    let text = browser.eval("document.body.innerText").as_str().unwrap().to_owned();
    assert!(text.contains(seen[0]), "the page shows it: {text}");

    let proxied: u64 = node.stats().iter().map(|w| w.streams.proxy_accepted).sum();
    assert!(proxied >= 2, "two peer connections' allocations came through nginx: {proxied}");
    // What Chromium offered for turns: (logged for the recipe's reasoning).
    let log = routes(&lb);
    assert!(log.contains(&format!("to={}", node.tls_addrs()[0])), "{log}");
    eprintln!("nginx routed: {log}");
}

/// nginx's stream log: each connection's ALPN and where it went.
fn routes(lb: &Balancer) -> String {
    std::fs::read_to_string(lb.dir().join("stream.log")).unwrap_or_else(|_| lb.log())
}

on_both_datapaths! {
    turns_beside_https_through_nginx: turns_beside_https_through_nginx();
}
