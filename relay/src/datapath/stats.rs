//! What a worker counts: the core's counters and the datapath's own, as
//! the node collects them for `/metrics` and `/status`.

use ip2p_turn::{Gauges, Stats};

use super::gso;

/// One worker's counters, as the node collects them.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Which worker.
    pub worker: usize,
    /// The core's counters.
    pub turn: Stats,
    /// Live allocations.
    pub allocations: usize,
    /// Sends that failed (full socket buffer, unreachable peer...): counted,
    /// never fatal.
    pub send_errors: u64,
    /// Datagrams too large for a receive buffer.
    pub truncated: u64,
    /// Times io_uring ran out of provided receive buffers (receives are
    /// re-armed when buffers come back; datagrams may be lost meanwhile).
    pub out_of_buffers: u64,
    /// TCP and TLS connections.
    pub streams: StreamCounters,
    /// Runs of datagrams sent as one (UDP GSO).
    pub gso: gso::GsoCounters,
    /// Allocations, permissions and channels held now.
    pub gauges: Gauges,
    /// The XDP tables as this worker keeps them.
    pub xdp: crate::fastpath::MirrorCounts,
    /// How long STUN requests took to handle.
    pub latency: RequestLatency,
    /// CPU time the worker thread has used.
    pub cpu: std::time::Duration,
}

/// Upper bounds of the request latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1];

/// A histogram of request handling times (from the request's bytes to its
/// response, including authentication and opening relay sockets): counts
/// per bucket of [`LATENCY_BUCKETS`], the last one open-ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLatency {
    /// Requests per bucket (not cumulative); the last counts the slower.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// All handling times, summed.
    pub sum: std::time::Duration,
}

impl RequestLatency {
    pub(crate) fn record(&mut self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        if let Some(n) = self.buckets.get_mut(i) {
            *n += 1;
        }
        self.sum += took;
    }

    /// Requests recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another worker's.
    pub fn add(&mut self, other: &Self) {
        for (n, o) in self.buckets.iter_mut().zip(other.buckets) {
            *n += o;
        }
        self.sum += other.sum;
    }
}

/// What happened to TCP and TLS connections on a worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Open now.
    pub open: u64,
    /// Accepted.
    pub accepted: u64,
    /// Refused at accept: a connection limit was reached.
    pub refused: u64,
    /// Closed for bytes that are neither STUN nor ChannelData.
    pub closed_framing: u64,
    /// Closed for a TLS error.
    pub closed_tls: u64,
    /// Closed for staying without an allocation (or handshake) too long.
    pub closed_idle: u64,
    /// Frames to a client dropped because its send backlog was full.
    pub dropped_backlog: u64,
    /// PROXY headers that named a load balancer's client (or said LOCAL).
    pub proxy_accepted: u64,
    /// Connections closed for a PROXY header from a source not trusted to
    /// send one.
    pub proxy_untrusted: u64,
    /// A balancer's connections closed for a malformed PROXY header (or
    /// none).
    pub proxy_invalid: u64,
    /// A balancer's connections closed for not completing their PROXY
    /// header in time.
    pub proxy_timeout: u64,
    /// The latest connection through a load balancer (not a counter: the
    /// node shows the latest of its workers').
    pub last_proxied: Option<LastProxied>,
}

/// A connection through a load balancer: whom its PROXY header named, the
/// balancer, and when (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastProxied {
    /// The client, as the header named it.
    pub client: std::net::SocketAddr,
    /// The balancer's own address.
    pub balancer: std::net::SocketAddr,
    /// When the header came.
    pub at: u64,
}

ip2p_turn::add_fields!(StreamCounters {
    open,
    accepted,
    refused,
    closed_framing,
    closed_tls,
    closed_idle,
    dropped_backlog,
    proxy_accepted,
    proxy_untrusted,
    proxy_invalid,
    proxy_timeout
});

/// Counters only a datapath sees.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DatapathCounters {
    pub(crate) send_errors: u64,
    pub(crate) truncated: u64,
    pub(crate) out_of_buffers: u64,
    pub(crate) streams: StreamCounters,
    pub(crate) gso: gso::GsoCounters,
}

/// CPU time of the calling thread.
pub(crate) fn thread_cpu_time() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(std::time::Duration::ZERO, |t| {
        std::time::Duration::new(u64::try_from(t.tv_sec()).unwrap_or(0), u32::try_from(t.tv_nsec()).unwrap_or(0))
    })
}
