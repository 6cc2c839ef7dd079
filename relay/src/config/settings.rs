//! The settings a node runs with: resolved once from the file and the
//! flags, checked, then handed to the node as typed values.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

/// The validated settings the node runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Addresses to listen on (UDP and TCP).
    pub listen: Vec<SocketAddr>,
    /// Addresses to serve TLS on.
    pub tls_listen: Vec<SocketAddr>,
    /// The certificate and key, when there are TLS listeners.
    pub tls: Option<crate::tls::Tls>,
    /// Limits on TCP and TLS connections.
    pub connections: Connections,
    /// How long SIGTERM waits for allocations to end (SIGINT a tenth).
    pub drain_timeout: Duration,
    /// The Unix socket handover requests come to, if any.
    pub handover_socket: Option<PathBuf>,
    /// Start by taking over the node at `handover_socket`.
    pub take_over: bool,
    /// On `systemctl restart`, hand the node over through systemd's file
    /// descriptor store instead of draining.
    pub fd_store: bool,
    /// The admin HTTP listener's address; `None` when turned off.
    pub admin: Option<SocketAddr>,
    /// The bearer token /metrics and /status ask for, if any.
    pub admin_token: Option<String>,
    /// The workers and how they move packets.
    pub engine: Engine,
    /// The XDP fast path.
    pub xdp: Xdp,
    /// The TURN core's configuration (each worker narrows `ports`).
    pub turn: ip2p_turn::Config,
    /// Allocations on the node; 0 = no limit; `None`: as many as the relay
    /// ports and the open file limit allow (the node works it out).
    pub max_allocations: Option<usize>,
    /// Allocations per user (a REST username's user part); 0 = no limit.
    pub user_quota: usize,
    /// Allocations per client address (an IPv6 client's /64); 0 = no limit.
    pub ip_quota: usize,
    /// `tracing` filter, e.g. `info` or `ip2p_relay=debug`.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Whether the nonce secret was generated (nonces do not survive a
    /// restart and other nodes cannot check them).
    pub nonce_secret_generated: bool,
    /// Development mode: print the demo credentials.
    pub dev: bool,
    /// Usage records, when written.
    pub usage: Option<Usage>,
    /// The fleet the node joins, if any.
    pub fleet: Option<Fleet>,
}

/// The fleet a node joins (`[fleet]`): nodes sharing one Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// The Redis URL (it may hold a password: never logged).
    pub redis: String,
    /// The fleet's name: its keys' prefix in Redis.
    pub name: String,
    /// This node's id in the fleet.
    pub node: String,
    /// Its region.
    pub region: String,
    /// The host name or address clients are told for it, when not its
    /// addresses.
    pub advertise: Option<String>,
    /// The share of its capacity above which it sends new allocations to
    /// a less loaded node.
    pub redirect_above: f64,
    /// What new allocations get while Redis cannot be reached.
    pub when_store_down: StoreDown,
    /// The usage records' stream in Redis holds about this many (0: no
    /// stream).
    pub usage_stream: u64,
    /// The CA certificates (PEM) a `rediss://` store's certificate is
    /// checked against, when not the system's.
    pub ca: Option<Vec<u8>>,
}

impl StoreDown {
    /// What the core does when the fleet cannot say.
    #[must_use]
    pub const fn fallback(self) -> ip2p_turn::Fallback {
        match self {
            Self::Local => ip2p_turn::Fallback::Local,
            Self::Refuse => ip2p_turn::Fallback::Refuse,
        }
    }
}

/// New allocations while the fleet's store is down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreDown {
    /// Admitted under the node's own limits.
    #[default]
    Local,
    /// Refused with 508.
    Refuse,
}

/// Where usage records go and how often a live session's is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The file (appended to; reopened on SIGHUP), if any (a fleet's
    /// stream may take the records alone).
    pub file: Option<PathBuf>,
    /// Between a live session's interim records.
    pub interval: Duration,
}

/// The keys that shape the workers: how many, which datapath, and how
/// each waits and sends. None of them changes without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// Worker threads.
    pub workers: usize,
    /// Datapath choice.
    pub datapath: DatapathKind,
    /// Provided receive buffers per io_uring worker (a power of two).
    pub io_uring_buffers: u16,
    /// How long an idle worker polls before it sleeps (0: it sleeps at once).
    pub busy_poll: Duration,
    /// It polls only while work comes within `busy_poll` of the last.
    pub busy_poll_adaptive: bool,
    /// Runs of datagrams to one destination go as one send (UDP GSO).
    pub gso: bool,
}

/// Limits on TCP and TLS connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connections {
    /// Connections on the node.
    pub max: usize,
    /// Connections from one IP address.
    pub max_per_ip: u32,
    /// How long a connection may stay open without an allocation.
    pub idle_timeout: Duration,
    /// How long a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Unsent bytes held per connection; past it, packets to that client
    /// are dropped (and counted).
    pub send_buffer: usize,
    /// Load balancers whose TCP and TLS connections begin with a PROXY
    /// protocol header naming the client (none: no connection may).
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
}

/// The XDP fast path's settings (`[xdp]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xdp {
    /// Off, auto or on.
    pub mode: XdpMode,
    /// Interfaces to attach to; empty: those holding the listen and relay
    /// addresses (every interface but loopback for a wildcard listener).
    pub interfaces: Vec<String>,
    /// The kernel's generic hook instead of the driver's.
    pub generic: bool,
    /// Channels the tables hold (each takes one entry per direction).
    pub channels: u32,
}

/// Which datapath moves the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DatapathKind {
    /// io_uring if the kernel offers what it needs, else epoll.
    #[default]
    Auto,
    /// io_uring only: fail to start without it.
    #[value(name = "io_uring")]
    IoUring,
    /// epoll (through mio) with recvmmsg/sendmmsg.
    Epoll,
}

/// Whether to run the XDP fast path (`xdp.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Sockets only.
    #[default]
    Off,
    /// Attach where it can; say in one line per interface why not elsewhere.
    Auto,
    /// Attach to every interface or fail to start.
    On,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A configuration error: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (`relay.ports`) or flag (`--relay-ports`) at fault; empty for
    /// a file that does not parse.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.key, self.message) }
    }
}

impl std::error::Error for ConfigError {}

/// The error of `key`.
pub(super) fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}
