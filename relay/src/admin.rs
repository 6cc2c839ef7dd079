//! The admin HTTP listener (tiny_http, on its own threads, never on a
//! worker's): `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! service managers and load balancers, `/status` as JSON for people.
//! It binds to loopback by default: metrics name users and addresses.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::DatapathKind;
use crate::node::NodeHandle;

/// A running admin listener; stops when dropped.
pub struct Admin {
    server: Arc<Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Admin {
    /// Binds `addr` and serves `node`'s endpoints until dropped.
    ///
    /// # Errors
    /// The address cannot be bound (in use, not local...).
    pub fn start(addr: SocketAddr, node: NodeHandle) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("admin listener {addr}: {e}")))?;
        let addr = listener.local_addr()?;
        let server = Server::from_listener(listener, None).map_err(|e| io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new().name("ip2p-admin".into()).spawn(move || {
            // Ends with an error once `unblock` is called on drop.
            while let Ok(request) = serving.recv() {
                answer(request, &node);
            }
        })?;
        Ok(Self { server, addr, thread: Some(thread) })
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
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(request: Request, node: &NodeHandle) {
    let path = request.url().split('?').next().unwrap_or_default().to_owned();
    let response = if !matches!(request.method(), Method::Get | Method::Head) {
        with(text(405, "only GET\n"), "Allow", "GET, HEAD")
    } else {
        match path.as_str() {
            "/metrics" => match crate::metrics::render(node) {
                Ok(body) => with(Response::from_string(body), "Content-Type", crate::metrics::CONTENT_TYPE),
                Err(_) => text(500, "cannot encode the metrics\n"),
            },
            // Alive: every worker answers (a stuck worker is worth a restart).
            "/healthz" if node.stats().len() == node.workers() => text(200, "ok\n"),
            "/healthz" => text(503, "a worker does not answer\n"),
            // Ready for new clients: not draining.
            "/readyz" if node.draining() => text(503, "draining\n"),
            "/readyz" => text(200, "ready\n"),
            "/status" => with(Response::from_string(status(node).to_string()), "Content-Type", "application/json"),
            _ => text(404, "not found; try /metrics, /healthz, /readyz or /status\n"),
        }
    };
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "admin response not sent");
    }
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
        "version": env!("CARGO_PKG_VERSION"),
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
        },
        "permissions": gauges.permissions,
        "channels": gauges.channels,
        "connections": connections,
        "per_worker": workers.iter().map(|w| serde_json::json!({
            "worker": w.worker,
            "allocations": w.allocations,
            "cpu_seconds": w.cpu.as_secs_f64(),
        })).collect::<Vec<_>>(),
    })
}

fn text(code: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    with(Response::from_string(body).with_status_code(code), "Content-Type", "text/plain; charset=utf-8")
}

/// Adds a header (ours are ASCII constants, so it always parses).
fn with<R: io::Read>(response: Response<R>, name: &str, value: &str) -> Response<R> {
    match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(h) => response.with_header(h),
        Err(()) => response,
    }
}
