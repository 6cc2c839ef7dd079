//! The pages' content: `/status` as JSON, the self-test page, its
//! configuration and the credential it is minted.

use std::net::SocketAddr;

use crate::config::DatapathKind;
use crate::node::NodeHandle;

/// The self-test page, embedded: it loads nothing from anywhere else.
pub(super) const SELFTEST_PAGE: &str = include_str!("selftest.html");
/// What the self-test page may do in a browser: its own inline script and
/// style, and fetches to this listener; nothing else, in no frame.
pub(super) const SELFTEST_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                            connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// How long a credential minted for the self-test lives, at most.
const SELFTEST_CREDENTIAL_SECONDS: u64 = 300;
/// The user part of a minted credential's username (quotas count it).
const SELFTEST_USER: &str = "ip2p-selftest";

/// `/selftest/config`: the TURN servers the page tests by default (this
/// node's first listener of each transport; `host` null where it listens
/// on every address) and whether it can mint a credential.
pub(super) fn selftest_config(node: &NodeHandle) -> serde_json::Value {
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
pub(super) fn mint(credentials: &ip2p_turn::Credentials, unix_now: u64) -> Option<serde_json::Value> {
    let secret = credentials.rest_secrets.first()?;
    let ttl = SELFTEST_CREDENTIAL_SECONDS.min(credentials.max_rest_lifetime);
    let username = format!("{}:{SELFTEST_USER}", unix_now.saturating_add(ttl));
    let credential = ip2p_turn::auth::rest_password(secret, &username);
    Some(serde_json::json!({ "username": username, "credential": credential, "ttl_seconds": ttl }))
}

/// `/status`: what a person asks a node first.
pub(super) fn status(node: &NodeHandle) -> serde_json::Value {
    let workers = node.stats();
    let mut gauges = ip2p_turn::Gauges::default();
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
            "passed_packets": {
                "expired": o.expired.packets,
                "no_route": o.no_route.packets,
                "too_big": o.too_big.packets,
                "spoofed": o.spoofed.packets,
            },
        })),
        "per_worker": workers.iter().map(|w| serde_json::json!({
            "worker": w.worker,
            "allocations": w.allocations,
            "cpu_seconds": w.cpu.as_secs_f64(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_credential_is_what_the_rest_api_verifies() {
        use base64::Engine as _;
        use hmac::{KeyInit, Mac};
        let mut credentials = ip2p_turn::Credentials {
            realm: "r".into(),
            users: std::collections::HashMap::new(),
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
