//! The pages' content: `/status` as JSON, the self-test page and its
//! configuration.

use std::net::SocketAddr;

use crate::config::DatapathKind;
use crate::node::NodeHandle;

/// The self-test page, embedded: it loads nothing from anywhere else.
pub(super) const SELFTEST_PAGE: &str = include_str!("selftest.html");
/// What the self-test page may do in a browser: its own inline script and
/// style, and fetches to this listener; nothing else, in no frame.
pub(super) const SELFTEST_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                            connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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

/// `/status`: what a person asks a node first.
pub(super) fn status(node: &NodeHandle) -> serde_json::Value {
    let workers = node.stats();
    let mut gauges = ip2p_turn::Gauges::default();
    let mut streams = crate::datapath::stats::StreamCounters::default();
    for w in &workers {
        gauges.add(&w.gauges);
        streams.add(&w.streams);
    }
    let last = workers.iter().filter_map(|w| w.streams.last_proxied).max_by_key(|l| l.at);
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
        "connections": streams.open,
        // Whom clients behind a load balancer are seen as: the latest
        // client a PROXY header named (and the balancer).
        "proxy_protocol": {
            "from": node.proxy_protocol_from().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "headers_accepted": streams.proxy_accepted,
            "refused": {
                "untrusted": streams.proxy_untrusted,
                "invalid": streams.proxy_invalid,
                "timeout": streams.proxy_timeout,
            },
            "last": last.map(|l| serde_json::json!({
                "client": l.client.to_string(),
                "balancer": l.balancer.to_string(),
                "at": l.at,
            })),
        },
        "fleet": node.fleet().map(|f| serde_json::json!({
            "name": f.settings().name,
            "node": f.settings().node,
            "region": f.settings().region,
            "store_up": f.store_up(),
            "nodes": f.view().nodes.len(),
        })),
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
