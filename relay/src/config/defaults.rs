//! Every default of the configuration, named: what a key is when neither
//! the file nor a flag sets it. `deploy/ip2p-relay.example.toml` states
//! the same values beside each key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// `listen`: every IPv4 address of the host, the STUN/TURN port.
pub const LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3478);
/// `listen` with `--dev`: this host only.
pub const DEV_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478);
/// `admin.listen`: this host only.
pub const ADMIN: &str = "127.0.0.1:9478";
/// `realm`.
pub const REALM: &str = "ip2p";
/// `relay.ports`: the dynamic port range of IANA (and of RFC 8656 §5).
pub const RELAY_PORTS: &str = "49152-65535";
/// `workers`: 0 is one per allowed CPU.
pub const WORKERS: usize = 0;
/// Most `workers`.
pub const MAX_WORKERS: usize = 1024;
/// `io_uring_buffers`: provided receive buffers per io_uring worker (a
/// power of two), each as large as the largest datagram.
pub const IO_URING_BUFFERS: u16 = 512;
/// Most `io_uring_buffers`.
pub const MAX_IO_URING_BUFFERS: u16 = 32_768;
/// `busy_poll_us`: an idle worker sleeps at once.
pub const BUSY_POLL_US: u32 = 0;
/// Most `busy_poll_us` (10 ms).
pub const MAX_BUSY_POLL_US: u32 = 10_000;
/// `busy_poll_adaptive`: poll only while packets come close together.
pub const BUSY_POLL_ADAPTIVE: bool = true;
/// `gso`: runs of datagrams to one destination go as one send.
pub const GSO: bool = true;
/// `relay.short_circuit`: traffic between two allocations of the node
/// skips the kernel.
pub const SHORT_CIRCUIT: bool = true;
/// `drain.timeout`: how long SIGTERM waits for allocations to end.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// `handover.fd_store`: `systemctl restart` hands over through systemd's
/// file descriptor store.
pub const FD_STORE: bool = true;

/// `connections.max`: TCP and TLS connections on the node.
pub const CONNECTIONS: usize = 10_000;
/// `connections.max_per_ip`: connections from one address (an IPv6 /64).
pub const CONNECTIONS_PER_IP: u32 = 64;
/// `connections.idle_timeout`: how long a connection may stay without an
/// allocation.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// `connections.tls_handshake_timeout`.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `connections.send_buffer`: unsent bytes held per connection.
pub const SEND_BUFFER: usize = 256 * 1024;
/// The smallest `connections.send_buffer`: a largest frame must fit.
pub const MIN_SEND_BUFFER: usize = 65_600;

/// `xdp.channels`: channels the fast path's tables hold.
pub const XDP_CHANNELS: u64 = 65_536;

/// `allocation.default_lifetime` (RFC 8656 §7.2: 10 minutes).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// `allocation.max_lifetime` (RFC 8656 §7.2 suggests an hour).
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// `allocation.user_quota`: allocations one user may hold (a REST
/// username's user part: one person's calls, each with a few allocations).
pub const USER_QUOTA: usize = 100;
/// `allocation.ip_quota`: allocations one client address (an IPv6 /64)
/// may hold: room for many users behind one NAT, not for one client to
/// take a node.
pub const IP_QUOTA: usize = 500;
/// `allocation.bandwidth`: bytes a second per allocation and direction; 0
/// is no limit.
pub const BANDWIDTH: u64 = 0;

/// `auth.nonce_lifetime`.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(600);
/// `auth.max_credential_lifetime`: how far ahead a REST credential's
/// expiry may lie: two days (issuers commonly give a day).
pub const MAX_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(2 * 86_400);
/// `auth.unauthenticated_rate`: unauthenticated answers a second per
/// source prefix.
pub const UNAUTHENTICATED_RATE: u32 = 200;
/// The shortest REST secret or admin token accepted.
pub const MIN_SECRET: usize = 16;

/// `log.level`.
pub const LOG_LEVEL: &str = "info";

/// The demo credentials of `--dev`.
pub const DEV_USER: (&str, &str) = ("demo", "demo-password");
/// `peers.allow` with `--dev`: the banner's echo peer, 127.0.0.2, alone
/// (the rest of loopback is the host's, as everywhere).
pub const DEV_PEERS: [&str; 1] = ["127.0.0.2/32"];

/// Between a live session's interim usage records.
pub(super) const USAGE_INTERVAL: Duration = Duration::from_secs(60);

/// `fleet.name`.
pub(super) const FLEET_NAME: &str = "ip2p";
/// `fleet.region`.
pub(super) const FLEET_REGION: &str = "default";
/// `fleet.redirect_above`: a node this full sends new allocations to a
/// less loaded one.
pub(super) const FLEET_REDIRECT_ABOVE: f64 = 0.9;
/// `fleet.usage_stream`: the usage records' stream keeps about this many.
pub(super) const FLEET_USAGE_STREAM: u64 = 1_000_000;
