//! Configuration: a TOML file (every key documented in
//! `deploy/ip2p-relay.example.toml`), command-line flags that override it,
//! and validation that names the offending key.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;

use crate::proto::{self, Credentials, PeerPolicy, RelayIp, UserSecret};

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

/// Which channel numbers ChannelBind accepts (`allocation.channel_numbers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChannelNumbers {
    /// 0x4000..=0x7FFF (RFC 5766, coturn's clients).
    #[default]
    Rfc5766,
    /// 0x4000..=0x4FFF (RFC 8656).
    Rfc8656,
}

impl From<ChannelNumbers> for proto::ChannelNumbers {
    fn from(c: ChannelNumbers) -> Self {
        match c {
            ChannelNumbers::Rfc5766 => Self::Rfc5766,
            ChannelNumbers::Rfc8656 => Self::Rfc8656,
        }
    }
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

/// `ip2p-relay`: a STUN/TURN relay.
#[derive(Debug, Parser)]
#[command(name = "ip2p-relay", version = crate::VERSION, about = "A STUN/TURN relay (RFC 8489, RFC 8656)")]
pub struct Cli {
    /// A subcommand; without one the relay runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The relay's options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file (and any flags given with it), print the
    /// resolved settings, and exit: 0 if valid, 1 if not.
    CheckConfig {
        /// The config file.
        file: PathBuf,
    },
    /// Write a first config to FILE (never over an existing one): loopback
    /// only, with a random REST secret and nonce secret. Packages run it on
    /// install so the service starts, and serves nobody else, until edited.
    InitConfig {
        /// Where to write it (e.g. /etc/ip2p/relay.toml).
        file: PathBuf,
    },
}

/// The config `init-config` writes, with its two secrets in hex.
#[must_use]
pub fn initial_config(rest_secret: &[u8; 32], nonce_secret: &[u8; 32]) -> String {
    format!(
        r#"# Written by `ip2p-relay init-config`: a relay on this host's loopback
# only, with secrets of its own. To serve clients, set `listen` and
# [relay] `ips` (every key is described in the example config,
# /usr/share/doc/ip2p-relay/examples/relay.toml), check the file with
# `ip2p-relay check-config /etc/ip2p/relay.toml`, then
# `systemctl restart ip2p-relay`.
listen = ["127.0.0.1:3478"]

[auth]
# TURN REST API secret: the service that hands out TURN credentials signs
# them with it. Every node behind one name needs the same one.
secrets = ["{}"]
# Signs nonces: the same on every node, so a client may move between them.
nonce_secret = "{}"

[admin]
# /metrics, /healthz, /readyz and /status.
listen = "{DEFAULT_ADMIN}"
"#,
        hex::encode(rest_secret),
        hex::encode(nonce_secret)
    )
}

/// Options of a running relay. Each flag overrides its config key.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Development defaults: listen on 127.0.0.1:3478, a demo user whose
    /// credentials are printed, loopback peers allowed.
    #[arg(long)]
    pub dev: bool,
    /// Address to serve STUN/TURN on, over UDP and TCP (repeatable). (config: listen)
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Address to serve TURN over TLS on (repeatable; needs --cert and --key). (config: tls.listen)
    #[arg(long = "tls-listen", value_name = "ADDR:PORT")]
    pub tls_listen: Vec<SocketAddr>,
    /// TLS certificate chain, PEM. (config: tls.cert)
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// TLS private key, PEM. (config: tls.key)
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The REALM. (config: realm)
    #[arg(long)]
    pub realm: Option<String>,
    /// A static user (repeatable). Visible to every local user in the
    /// process list: prefer --users-file. (config: auth.users)
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// A file of static users, one NAME:PASSWORD a line. (config: auth.users_file)
    #[arg(long = "users-file", value_name = "FILE")]
    pub users_file: Option<PathBuf>,
    /// A TURN REST API shared secret (repeatable, for rotation). Visible to
    /// every local user in the process list: prefer --auth-secret-file.
    /// (config: auth.secrets)
    #[arg(long = "auth-secret", value_name = "SECRET")]
    pub auth_secrets: Vec<String>,
    /// A file of TURN REST API shared secrets, one a line. (config: auth.secrets_file)
    #[arg(long = "auth-secret-file", value_name = "FILE")]
    pub auth_secret_file: Option<PathBuf>,
    /// Allow relaying to a range the defaults deny (repeatable). (config: peers.allow)
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peers: Vec<String>,
    /// Deny relaying to a range (repeatable). (config: peers.deny)
    #[arg(long = "deny-peer", value_name = "CIDR")]
    pub deny_peers: Vec<String>,
    /// Local address relay sockets bind to; up to 8 per family. (config: relay.ips)
    #[arg(long = "relay-ip", value_name = "IP")]
    pub relay_ips: Vec<IpAddr>,
    /// Public address to advertise behind 1:1 NAT, paired in order with the relay addresses of its family. (config: relay.external_ips)
    #[arg(long = "external-ip", value_name = "IP")]
    pub external_ips: Vec<IpAddr>,
    /// Relay port range. (config: relay.ports)
    #[arg(long = "relay-ports", value_name = "LOW-HIGH")]
    pub relay_ports: Option<String>,
    /// Worker threads; 0 = one per core. (config: workers)
    #[arg(long)]
    pub workers: Option<usize>,
    /// Datapath. (config: datapath)
    #[arg(long, value_enum)]
    pub datapath: Option<DatapathKind>,
    /// The XDP fast path: off, auto or on. (config: xdp.mode)
    #[arg(long, value_enum, value_name = "MODE")]
    pub xdp: Option<XdpMode>,
    /// An interface to attach the XDP fast path to (repeatable). (config: xdp.interfaces)
    #[arg(long = "xdp-interface", value_name = "IFNAME")]
    pub xdp_interfaces: Vec<String>,
    /// Admin HTTP listener (/metrics, /healthz, /readyz, /status), or `off`;
    /// default 127.0.0.1:9478. (config: admin.listen)
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<String>,
    /// A file holding the bearer token /metrics and /status ask for. (config: admin.token_file)
    #[arg(long = "admin-token-file", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The Unix socket this process takes handover requests on (an upgrade
    /// without dropping calls), and asks at with --take-over. (config:
    /// handover.socket)
    #[arg(long = "handover-socket", value_name = "PATH")]
    pub handover_socket: Option<PathBuf>,
    /// Take over the node of the process listening at the handover socket:
    /// its sockets and allocations, instead of binding afresh.
    #[arg(long = "take-over")]
    pub take_over: bool,
}

/// The config file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<Vec<SocketAddr>>,
    realm: Option<String>,
    software: Option<String>,
    workers: Option<usize>,
    datapath: Option<DatapathKind>,
    io_uring_buffers: Option<u16>,
    busy_poll_us: Option<u32>,
    busy_poll_adaptive: Option<bool>,
    gso: Option<bool>,
    #[serde(default)]
    relay: RelaySection,
    #[serde(default)]
    allocation: AllocationSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    peers: PeersSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    tls: TlsSection,
    #[serde(default)]
    connections: ConnectionsSection,
    #[serde(default)]
    drain: DrainSection,
    #[serde(default)]
    admin: AdminSection,
    #[serde(default)]
    xdp: XdpSection,
    #[serde(default)]
    handover: HandoverSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandoverSection {
    socket: Option<PathBuf>,
    fd_store: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct XdpSection {
    mode: Option<XdpMode>,
    interfaces: Option<Vec<String>>,
    attach: Option<XdpAttach>,
    channels: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum XdpAttach {
    Native,
    Generic,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

/// Where the admin listener goes unless told otherwise: this host only.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9478";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainSection {
    timeout: Option<u64>,
    #[serde(default)]
    alternates: Vec<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    listen: Option<Vec<SocketAddr>>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionsSection {
    max: Option<usize>,
    max_per_ip: Option<u32>,
    idle_timeout: Option<u64>,
    tls_handshake_timeout: Option<u64>,
    send_buffer: Option<usize>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelaySection {
    ips: Option<Vec<IpAddr>>,
    external_ips: Option<Vec<IpAddr>>,
    ports: Option<String>,
    short_circuit: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationSection {
    channel_numbers: Option<ChannelNumbers>,
    default_lifetime: Option<u64>,
    max_lifetime: Option<u64>,
    max_allocations: Option<usize>,
    user_quota: Option<usize>,
    ip_quota: Option<usize>,
    bandwidth: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default)]
    users: Vec<UserEntry>,
    users_file: Option<PathBuf>,
    #[serde(default)]
    secrets: Vec<String>,
    secrets_file: Option<PathBuf>,
    nonce_secret: Option<String>,
    nonce_secret_file: Option<PathBuf>,
    nonce_lifetime: Option<u64>,
    max_credential_lifetime: Option<u64>,
    unauthenticated_rate: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersSection {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    level: Option<String>,
    format: Option<LogFormat>,
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

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

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
    /// Worker threads.
    pub workers: usize,
    /// Datapath choice.
    pub datapath: DatapathKind,
    /// The XDP fast path.
    pub xdp: Xdp,
    /// Provided receive buffers per io_uring worker (a power of two).
    pub io_uring_buffers: u16,
    /// How long an idle worker polls before it sleeps (0: it sleeps at once).
    pub busy_poll: Duration,
    /// It polls only while work comes within `busy_poll` of the last.
    pub busy_poll_adaptive: bool,
    /// Runs of datagrams to one destination go as one send (UDP GSO).
    pub gso: bool,
    /// The TURN core's configuration (each worker narrows `ports`).
    pub proto: proto::Config,
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
}

/// Demo credentials of `--dev`.
pub const DEV_USER: (&str, &str) = ("demo", "demo-password");

impl Settings {
    /// Reads the config file named by `args` (if any) and applies the flags.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key or flag at fault.
    pub fn load(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        Self::resolve(file, args)
    }

    /// Parses config text (for `check-config` and tests).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn from_toml(text: &str, args: &RunArgs) -> Result<Self, ConfigError> {
        let file = toml::from_str(text).map_err(|e| err("", e.to_string()))?;
        Self::resolve(file, args)
    }

    /// The file and the flags, checked section by section.
    fn resolve(file: File, args: &RunArgs) -> Result<Self, ConfigError> {
        let dev = args.dev;
        let listen = pick(&args.listen, file.listen, || {
            vec![
                if dev { "127.0.0.1:3478" } else { "0.0.0.0:3478" }.parse().unwrap_or(SocketAddr::from(([0; 4], 3478))),
            ]
        });
        if listen.is_empty() {
            return Err(err("listen", "at least one address is needed"));
        }
        let (tls_listen, tls) = tls(args, file.tls)?;
        let connections = connections(&file.connections)?;
        let drain_timeout = secs("drain.timeout", file.drain.timeout.unwrap_or(30), 0, 86_400)?;
        if let Some(bad) = file.drain.alternates.iter().find(|a| a.ip().is_unspecified() || a.port() == 0) {
            return Err(err("drain.alternates", format!("{bad} is not an address clients can use")));
        }
        let (admin, admin_token) = admin(args, file.admin)?;
        let realm = realm(args.realm.clone().or(file.realm))?;
        let Engine { workers, datapath, io_uring_buffers, busy_poll } =
            engine(args, file.workers, file.datapath, file.io_uring_buffers, file.busy_poll_us)?;
        let relay_ips = relay_ips(args, &file.relay, &listen)?;
        let xdp = xdp(args, file.xdp)?;
        let ports_text = args.relay_ports.clone().or(file.relay.ports).unwrap_or_else(|| "49152-65535".into());
        let ports = parse_ports(&ports_text).ok_or_else(|| {
            err("relay.ports", format!("expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got {ports_text:?}"))
        })?;
        if usize::from(ports.1 - ports.0) + 1 < workers {
            return Err(err("relay.ports", format!("{ports_text} has fewer ports than the {workers} workers")));
        }
        let alloc = allocation(&file.allocation)?;
        let auth = auth(args, &file.auth, dev)?;
        let mut allow = parse_nets("peers.allow", pick(&args.allow_peers, Some(file.peers.allow), Vec::new))?;
        if dev && allow.is_empty() {
            allow = parse_nets("peers.allow", vec!["127.0.0.0/8".into(), "::1/128".into()])?;
        }
        let deny = parse_nets("peers.deny", pick(&args.deny_peers, Some(file.peers.deny), Vec::new))?;
        // The host's addresses: what no client may reach through the
        // relay but at a live relayed address.
        let mut host = interface_addresses();
        host.extend(relay_ips.iter().flatten().flat_map(|r| [Some(r.bind), r.external]).flatten());
        host.extend(listen.iter().chain(&tls_listen).chain(&admin).map(SocketAddr::ip));
        host.retain(|ip| !ip.is_unspecified());
        host.sort();
        host.dedup();

        let log_level = file.log.level.unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|e| err("log.level", e.to_string()))?;
        let software = match file.software {
            Some(s) if s.is_empty() => None,
            // RFC 8489 §14.14: fewer than 128 characters.
            Some(s) if s.chars().count() >= 128 => return Err(err("software", "must be fewer than 128 characters")),
            Some(s) => Some(s),
            None => Some(format!("ip2p {}", crate::VERSION)),
        };
        let handover_socket = args.handover_socket.clone().or(file.handover.socket);
        if args.take_over && handover_socket.is_none() {
            return Err(err("handover.socket", "--take-over needs the socket to ask at (--handover-socket PATH)"));
        }
        Ok(Self {
            listen,
            tls_listen,
            tls,
            connections,
            drain_timeout,
            handover_socket,
            take_over: args.take_over,
            fd_store: file.handover.fd_store.unwrap_or(true),
            admin,
            admin_token,
            workers,
            datapath,
            xdp: xdp.clone(),
            io_uring_buffers,
            busy_poll,
            busy_poll_adaptive: file.busy_poll_adaptive.unwrap_or(true),
            gso: file.gso.unwrap_or(true),
            proto: proto::Config {
                software,
                default_lifetime: alloc.default_lifetime,
                max_lifetime: alloc.max_lifetime,
                relay_ips,
                ports: ports.0..=ports.1,
                channel_numbers: alloc.channel_numbers,
                policy: PeerPolicy { allow, deny, host },
                alternates: file.drain.alternates,
                bandwidth: alloc.bandwidth,
                unauthenticated_rate: auth.unauthenticated_rate,
                // The XDP tables mirror the forwarding state.
                events: xdp.mode != XdpMode::Off,
                short_circuit: file.relay.short_circuit.unwrap_or(true),
                credentials: Credentials {
                    realm,
                    users: auth.users,
                    rest_secrets: auth.secrets.into_iter().map(String::into_bytes).collect(),
                    nonce_secret: auth.nonce_secret,
                    nonce_lifetime: auth.nonce_lifetime,
                    max_rest_lifetime: auth.max_rest_lifetime,
                },
            },
            max_allocations: alloc.max_allocations,
            user_quota: alloc.user_quota,
            ip_quota: alloc.ip_quota,
            log_level,
            log_format: file.log.format.unwrap_or_default(),
            nonce_secret_generated: auth.nonce_secret_generated,
            dev,
        })
    }
}

/// `tls.listen`, and the certificate and key when there are TLS listeners.
fn tls(args: &RunArgs, file: TlsSection) -> Result<(Vec<SocketAddr>, Option<crate::tls::Tls>), ConfigError> {
    let tls_listen = pick(&args.tls_listen, file.listen, Vec::new);
    let cert = args.cert.clone().or(file.cert);
    let key = args.key.clone().or(file.key);
    let tls = match (&cert, &key) {
        (Some(cert), Some(key)) => Some(crate::tls::Tls::load(cert, key).map_err(|e| err("tls", e))?),
        (None, None) if tls_listen.is_empty() => None,
        (None, None) => return Err(err("tls.listen", "TLS listeners need tls.cert and tls.key (--cert, --key)")),
        (Some(_), None) => return Err(err("tls.key", "tls.cert is given without its key")),
        (None, Some(_)) => return Err(err("tls.cert", "tls.key is given without its certificate")),
    };
    if tls.is_some() && tls_listen.is_empty() {
        return Err(err("tls.listen", "a certificate is given but no TLS listener (--tls-listen ADDR:PORT)"));
    }
    Ok((tls_listen, tls))
}

/// `[connections]`.
fn connections(c: &ConnectionsSection) -> Result<Connections, ConfigError> {
    Ok(Connections {
        max: ranged("connections.max", c.max.unwrap_or(10_000), 1, 1_000_000, "connections")?,
        max_per_ip: ranged("connections.max_per_ip", c.max_per_ip.unwrap_or(64), 1, 1_000_000, "connections")?,
        idle_timeout: secs("connections.idle_timeout", c.idle_timeout.unwrap_or(30), 1, 3600)?,
        tls_handshake_timeout: secs(
            "connections.tls_handshake_timeout",
            c.tls_handshake_timeout.unwrap_or(10),
            1,
            300,
        )?,
        send_buffer: ranged(
            "connections.send_buffer",
            c.send_buffer.unwrap_or(256 * 1024),
            65_600,
            64 << 20,
            "bytes (it must hold a largest frame)",
        )?,
    })
}

/// `[admin]`: the listener's address (`None`: off) and its token.
fn admin(args: &RunArgs, file: AdminSection) -> Result<(Option<SocketAddr>, Option<String>), ConfigError> {
    let (admin_key, admin_text) = match (&args.admin, file.listen) {
        (Some(flag), _) => ("--admin", flag.clone()),
        (None, Some(text)) => ("admin.listen", text),
        (None, None) => ("admin.listen", DEFAULT_ADMIN.to_owned()),
    };
    let admin = match admin_text.as_str() {
        "off" | "" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            err(admin_key, format!("expected ADDR:PORT (e.g. {DEFAULT_ADMIN}) or \"off\", got {text:?}"))
        })?),
    };
    let token = match (file.token, args.admin_token_file.as_ref().or(file.token_file.as_ref())) {
        (Some(_), Some(_)) => return Err(err("admin.token_file", "give admin.token or a token file, not both")),
        (Some(token), None) => Some(token),
        (None, Some(path)) => Some(
            read_lines("admin.token_file", path)?
                .into_iter()
                .next()
                .ok_or_else(|| err("admin.token_file", "the file holds no token"))?,
        ),
        (None, None) => None,
    };
    if let Some(token) = &token {
        check_secret("admin.token", token, MIN_SECRET)?;
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err("admin.token", "use printable ASCII without spaces (it goes into an HTTP header)"));
        }
    }
    Ok((admin, token))
}

/// `realm`: 1 to [`proto::MAX_REALM`] bytes.
fn realm(realm: Option<String>) -> Result<String, ConfigError> {
    let realm = realm.unwrap_or_else(|| "ip2p".into());
    if realm.is_empty() || realm.len() > proto::MAX_REALM {
        return Err(err(
            "realm",
            format!(
                "must be 1 to {} bytes: it goes into every 401, which must stay within 4 times \
                 the smallest Allocate (docs/security.md)",
                proto::MAX_REALM
            ),
        ));
    }
    Ok(realm)
}

/// The keys that shape the workers.
struct Engine {
    workers: usize,
    datapath: DatapathKind,
    io_uring_buffers: u16,
    busy_poll: Duration,
}

/// `workers`, `datapath`, `io_uring_buffers`, `busy_poll_us`.
fn engine(
    args: &RunArgs,
    workers: Option<usize>,
    datapath: Option<DatapathKind>,
    io_uring_buffers: Option<u16>,
    busy_poll_us: Option<u32>,
) -> Result<Engine, ConfigError> {
    let workers = match args.workers.or(workers).unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n if n > 1024 => return Err(err("workers", format!("{n} is more than 1024"))),
        n => n,
    };
    let datapath = args.datapath.or(datapath).unwrap_or_default();
    let io_uring_buffers = io_uring_buffers.unwrap_or(crate::datapath::uring::DEFAULT_BUFFERS);
    if !io_uring_buffers.is_power_of_two() || io_uring_buffers > 32_768 {
        return Err(err("io_uring_buffers", format!("{io_uring_buffers} is not a power of two up to 32768")));
    }
    let busy_poll_us = busy_poll_us.unwrap_or(0);
    if busy_poll_us > 10_000 {
        return Err(err("busy_poll_us", format!("{busy_poll_us} is more than 10000 (10 ms)")));
    }
    Ok(Engine { workers, datapath, io_uring_buffers, busy_poll: Duration::from_micros(u64::from(busy_poll_us)) })
}

/// `[relay]` `ips` and `external_ips`, by family: up to 8 per family,
/// defaulting to the first listen address, externals paired in order.
fn relay_ips(args: &RunArgs, file: &RelaySection, listen: &[SocketAddr]) -> Result<[Vec<RelayIp>; 2], ConfigError> {
    let mut ips = pick(&args.relay_ips, file.ips.clone(), Vec::new);
    if ips.is_empty() {
        ips = listen.iter().map(SocketAddr::ip).filter(|ip| !ip.is_unspecified()).take(1).collect();
    }
    if ips.is_empty() {
        return Err(err(
            "relay.ips",
            "needed when listening on an unspecified address (0.0.0.0 or ::): \
             give this host's address with --relay-ip",
        ));
    }
    let externals = pick(&args.external_ips, file.external_ips.clone(), Vec::new);
    let mut relay_ips: [Vec<RelayIp>; 2] = [Vec::new(), Vec::new()];
    for ip in &ips {
        let [v4, v6] = &mut relay_ips;
        let family = if ip.is_ipv6() { v6 } else { v4 };
        if family.iter().any(|r| r.bind == *ip) {
            return Err(err("relay.ips", format!("{ip} is given twice")));
        }
        if family.len() == proto::MAX_RELAY_IPS {
            return Err(err("relay.ips", format!("at most {} addresses per family", proto::MAX_RELAY_IPS)));
        }
        family.push(RelayIp { bind: *ip, external: None });
    }
    if let Some(ip) = externals.iter().find(|ip| ip.is_unspecified()) {
        return Err(err("relay.external_ips", format!("{ip} cannot be advertised")));
    }
    // External addresses pair with the relay addresses of their family
    // in order.
    for (v6, family) in [false, true].into_iter().zip(&mut relay_ips) {
        let mine: Vec<IpAddr> = externals.iter().filter(|ip| ip.is_ipv6() == v6).copied().collect();
        match mine.first() {
            Some(ip) if family.is_empty() => {
                return Err(err("relay.external_ips", format!("{ip} has no relay address of its family")));
            }
            Some(_) if mine.len() > family.len() => {
                return Err(err(
                    "relay.external_ips",
                    "more addresses of a family than relay.ips has (they pair in order)",
                ));
            }
            _ => {}
        }
        for (relay, ip) in family.iter_mut().zip(mine) {
            relay.external = Some(ip);
        }
    }
    for r in relay_ips.iter().flatten() {
        if r.bind.is_unspecified() && r.external.is_none() {
            return Err(err(
                "relay.external_ips",
                format!("relay address {} is unspecified: give the address to advertise", r.bind),
            ));
        }
    }
    Ok(relay_ips)
}

/// `[xdp]` and `--xdp`, `--xdp-interface`.
fn xdp(args: &RunArgs, file: XdpSection) -> Result<Xdp, ConfigError> {
    let interfaces = pick(&args.xdp_interfaces, file.interfaces, Vec::new);
    if let Some(bad) = interfaces.iter().find(|i| i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '\0'])) {
        return Err(err("xdp.interfaces", format!("{bad:?} is not an interface name")));
    }
    let channels = ranged("xdp.channels", file.channels.unwrap_or(65_536), 1, 4_194_304, "channels")?;
    let channels = u32::try_from(channels).unwrap_or(u32::MAX);
    Ok(Xdp {
        mode: args.xdp.or(file.mode).unwrap_or_default(),
        interfaces,
        generic: file.attach == Some(XdpAttach::Generic),
        channels,
    })
}

/// `[allocation]`, checked.
struct AllocationKeys {
    default_lifetime: Duration,
    max_lifetime: Duration,
    max_allocations: Option<usize>,
    user_quota: usize,
    ip_quota: usize,
    bandwidth: u64,
    channel_numbers: proto::ChannelNumbers,
}

/// `[allocation]`: lifetimes, quotas, bandwidth, channel numbers.
fn allocation(a: &AllocationSection) -> Result<AllocationKeys, ConfigError> {
    let default_lifetime =
        ranged("allocation.default_lifetime", a.default_lifetime.unwrap_or(600), 1, 86_400, "seconds")?;
    let max_lifetime = ranged("allocation.max_lifetime", a.max_lifetime.unwrap_or(3600), 1, 86_400, "seconds")?;
    if max_lifetime < default_lifetime {
        return Err(err("allocation.max_lifetime", format!("{max_lifetime} is below default_lifetime")));
    }
    let max_allocations =
        a.max_allocations.map(|n| ranged("allocation.max_allocations", n, 0, 10_000_000, "allocations")).transpose()?;
    let user_quota =
        ranged("allocation.user_quota", a.user_quota.unwrap_or(DEFAULT_USER_QUOTA), 0, 10_000_000, "allocations")?;
    let ip_quota = ranged("allocation.ip_quota", a.ip_quota.unwrap_or(DEFAULT_IP_QUOTA), 0, 10_000_000, "allocations")?;

    let bandwidth = a.bandwidth.unwrap_or(0);
    if bandwidth != 0 {
        ranged(
            "allocation.bandwidth",
            bandwidth,
            1500,
            1_250_000_000,
            "bytes a second (0: no limit; a packet must fit)",
        )?;
    }
    Ok(AllocationKeys {
        default_lifetime: Duration::from_secs(default_lifetime),
        max_lifetime: Duration::from_secs(max_lifetime),
        max_allocations,
        user_quota,
        ip_quota,
        bandwidth,
        channel_numbers: a.channel_numbers.unwrap_or_default().into(),
    })
}

/// `[auth]`, checked, with the secrets read from their files.
struct AuthKeys {
    users: HashMap<String, UserSecret>,
    secrets: Vec<String>,
    nonce_secret: [u8; 32],
    nonce_secret_generated: bool,
    nonce_lifetime: u64,
    max_rest_lifetime: u64,
    unauthenticated_rate: u32,
}

/// `[auth]`: users (file, table, flags), REST secrets, the nonce secret,
/// lifetimes and the rate of unauthenticated answers.
fn auth(args: &RunArgs, file: &AuthSection, dev: bool) -> Result<AuthKeys, ConfigError> {
    let mut users = HashMap::new();
    let users_file = args.users_file.as_ref().or(file.users_file.as_ref());
    let (users_key, users_lines) = match users_file {
        Some(path) => ("auth.users_file", read_lines("auth.users_file", path)?),
        None => ("", Vec::new()),
    };
    for (i, line) in users_lines.iter().enumerate() {
        let (name, password) = line
            .split_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| err(users_key, format!("line {}: expected NAME:PASSWORD", i + 1)))?;
        if users.insert(name.to_owned(), UserSecret::Password(password.to_owned())).is_some() {
            return Err(err(users_key, format!("user {name:?} is listed twice")));
        }
    }
    for (i, u) in file.users.iter().enumerate() {
        let key = format!("auth.users[{i}]");
        if u.name.is_empty() {
            return Err(err(&key, "name is empty"));
        }
        let secret = match (&u.password, &u.key) {
            (Some(p), None) if is_placeholder(p) => {
                return Err(err(&key, "password is the example's placeholder: set a real one"));
            }
            (Some(p), None) => UserSecret::Password(p.clone()),
            (None, Some(k)) => {
                let mut md5 = [0u8; 16];
                hex::decode_to_slice(k, &mut md5)
                    .map_err(|_| err(&key, "key must be 32 hex digits: MD5(name:realm:password)"))?;
                UserSecret::Md5Key(md5)
            }
            _ => return Err(err(&key, "give exactly one of password or key")),
        };
        if users.insert(u.name.clone(), secret).is_some() {
            return Err(err(&key, format!("user {:?} is listed twice", u.name)));
        }
    }
    for spec in &args.users {
        let (name, password) = spec
            .split_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| err("--user", format!("expected NAME:PASSWORD, got {spec:?}")))?;
        users.insert(name.to_owned(), UserSecret::Password(password.to_owned()));
    }
    if dev && users.is_empty() {
        users.insert(DEV_USER.0.into(), UserSecret::Password(DEV_USER.1.into()));
    }
    for (name, secret) in &users {
        if let UserSecret::Password(p) = secret
            && is_placeholder(p)
            && !(dev && name == DEV_USER.0)
        {
            return Err(err("auth.users", format!("{name:?}'s password is a placeholder: set a real one")));
        }
    }
    let mut secrets = pick(&args.auth_secrets, Some(file.secrets.clone()), Vec::new);
    if let Some(path) = args.auth_secret_file.as_ref().or(file.secrets_file.as_ref()) {
        secrets.extend(read_lines("auth.secrets_file", path)?);
    }
    for secret in &secrets {
        check_secret("auth.secrets", secret, MIN_SECRET)?;
    }
    if users.is_empty() && secrets.is_empty() {
        return Err(err(
            "auth",
            "no credentials: add a user (--user NAME:PASSWORD) or a REST secret (--auth-secret); \
             ip2p does not run an open relay",
        ));
    }
    let nonce_text = match (&file.nonce_secret, &file.nonce_secret_file) {
        (Some(_), Some(_)) => {
            return Err(err("auth.nonce_secret_file", "give nonce_secret or nonce_secret_file, not both"));
        }
        (Some(text), None) => Some(text.clone()),
        (None, Some(path)) => {
            let lines = read_lines("auth.nonce_secret_file", path)?;
            Some(lines.into_iter().next().ok_or_else(|| err("auth.nonce_secret_file", "the file holds no secret"))?)
        }
        (None, None) => None,
    };
    let (nonce_secret, nonce_secret_generated) = match &nonce_text {
        Some(hex_text) => {
            let mut secret = [0u8; 32];
            hex::decode_to_slice(hex_text, &mut secret)
                .map_err(|_| err("auth.nonce_secret", "must be 64 hex digits (32 bytes)"))?;
            if weak_key(&secret) {
                return Err(err(
                    "auth.nonce_secret",
                    "is a placeholder (a run or a pattern): make one with `openssl rand -hex 32`",
                ));
            }
            (secret, false)
        }
        None => (rand::random(), true),
    };
    let nonce_lifetime = ranged("auth.nonce_lifetime", file.nonce_lifetime.unwrap_or(600), 1, 86_400, "seconds")?;
    let max_rest_lifetime = ranged(
        "auth.max_credential_lifetime",
        file.max_credential_lifetime.unwrap_or(DEFAULT_MAX_CREDENTIAL_LIFETIME),
        60,
        366 * 86_400,
        "seconds",
    )?;
    let unauthenticated_rate = ranged(
        "auth.unauthenticated_rate",
        file.unauthenticated_rate.unwrap_or(DEFAULT_UNAUTHENTICATED_RATE),
        0,
        1_000_000,
        "responses a second",
    )?;
    Ok(AuthKeys {
        users,
        secrets,
        nonce_secret,
        nonce_secret_generated,
        nonce_lifetime,
        max_rest_lifetime,
        unauthenticated_rate,
    })
}

/// Allocations one user may hold by default (a REST username's user part:
/// one person's calls, each with a few allocations).
pub const DEFAULT_USER_QUOTA: usize = 100;
/// Allocations one client address (an IPv6 /64) may hold by default: room
/// for many users behind one NAT, not for one client to take a node.
pub const DEFAULT_IP_QUOTA: usize = 500;
/// How far ahead a REST credential's expiry may lie by default: two days
/// (issuers commonly give a day).
pub const DEFAULT_MAX_CREDENTIAL_LIFETIME: u64 = 2 * 86_400;
/// Unauthenticated responses a second per source prefix, by default.
pub const DEFAULT_UNAUTHENTICATED_RATE: u32 = 200;
/// The shortest REST secret or admin token accepted.
const MIN_SECRET: usize = 16;

/// `value` if it lies in `lo..=hi`, else an error naming `key`.
fn ranged<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: T,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<T, ConfigError> {
    if value < lo || value > hi {
        return Err(err(key, format!("{value} is out of range: {lo} to {hi} {unit}")));
    }
    Ok(value)
}

/// Seconds in `lo..=hi` as a duration.
fn secs(key: &str, value: u64, lo: u64, hi: u64) -> Result<Duration, ConfigError> {
    ranged(key, value, lo, hi, "seconds").map(Duration::from_secs)
}

/// The non-blank lines of a secrets file, `#` comments aside.
fn read_lines(key: &str, path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// Refuses a secret that is too short or a placeholder from our examples.
fn check_secret(key: &str, secret: &str, min: usize) -> Result<(), ConfigError> {
    if secret.len() < min {
        return Err(err(
            key,
            format!("a secret of {} bytes is too short: at least {min} (`openssl rand -hex 32`)", secret.len()),
        ));
    }
    if is_placeholder(secret) || weak_key(secret.as_bytes()) {
        return Err(err(key, "a secret is a placeholder: make one with `openssl rand -hex 32`"));
    }
    Ok(())
}

/// The placeholders of example configs (ours and the usual ones), which
/// must never reach production.
fn is_placeholder(secret: &str) -> bool {
    let s = secret.to_ascii_lowercase().replace(['-', '_', ' '], "");
    [
        "changeme",
        "replacewith",
        "replaceme",
        "placeholder",
        "example",
        "yoursecret",
        "secrethere",
        "alongrandom",
        "xxxxxx",
    ]
    .iter()
    .any(|p| s.contains(p))
}

/// A key with little entropy: bytes in a constant step (one byte
/// repeated, `0123...`, `00112233...`) or two halves alike.
fn weak_key(key: &[u8]) -> bool {
    let step = |w: &[u8]| match w {
        [a, b] => b.wrapping_sub(*a),
        _ => 0,
    };
    let mut steps = key.windows(2).map(step);
    let constant = steps.next().is_none_or(|first| steps.all(|s| s == first));
    let (a, b) = key.split_at(key.len() / 2);
    constant || (key.len() % 2 == 0 && a == b)
}

/// Every address of this host's interfaces (loopback included), for the
/// peer policy: none of them is a peer but at a live relayed address.
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    addrs
        .filter_map(|a| {
            let a = a.address?;
            a.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}

/// Flags win over the file; the file over the default.
fn pick<T: Clone>(flag: &[T], file: Option<Vec<T>>, default: impl FnOnce() -> Vec<T>) -> Vec<T> {
    if !flag.is_empty() {
        return flag.to_vec();
    }
    match file {
        Some(v) if !v.is_empty() => v,
        _ => default(),
    }
}

fn read_file(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| err("", format!("{}: {e}", path.display())))
}

fn parse_ports(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

fn parse_nets(key: &str, specs: Vec<String>) -> Result<Vec<IpNet>, ConfigError> {
    specs
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| err(key, format!("{s:?} is not an address or CIDR range")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut RunArgs)) -> RunArgs {
        let mut a = RunArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn the_example_config_refuses_its_placeholders_and_is_valid_without_them() {
        let example = include_str!("../../deploy/ip2p-relay.example.toml");
        let mut text = example.to_owned();
        for (placeholder, key, real) in [
            ("\"change-me\"", "auth.users[0]", "\"a real password\""),
            ("\"a-long-random-shared-secret\"", "auth.secrets", "\"kq3vZ8tX1mR4wY7pL0sN\""),
            (
                "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"",
                "auth.nonce_secret",
                "\"8f1d2c3b4a5968778695a4b3c2d1e0f00f1e2d3c4b5a69788796a5b4c3d2e1f0\"",
            ),
        ] {
            let e = Settings::from_toml(&text, &RunArgs::default()).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            text = text.replace(placeholder, real);
        }
        let s = Settings::from_toml(&text, &RunArgs::default()).unwrap();
        assert_eq!(s.listen, ["0.0.0.0:3478".parse().unwrap()]);
        assert_eq!(s.proto.ports, 49152..=65535);
        assert_eq!(s.proto.credentials.realm, "example.org");
        assert!(!s.nonce_secret_generated);
        assert!(s.tls.is_none() && s.tls_listen.is_empty());
        assert_eq!(s.connections.max_per_ip, 64);
        assert_eq!(s.connections.send_buffer, 262_144);
    }

    #[test]
    fn the_handover_socket_comes_from_the_file_or_a_flag_and_take_over_needs_it() {
        let text = "listen = [\"127.0.0.1:3478\"]\n[auth]\nusers = [{ name = \"a\", password = \"b\" }]\n";
        let s = Settings::from_toml(text, &RunArgs::default()).unwrap();
        assert_eq!((s.handover_socket, s.take_over), (None, false));
        let with = format!("{text}[handover]\nsocket = \"/run/x/h.sock\"\n");
        let s = Settings::from_toml(&with, &RunArgs::default()).unwrap();
        assert_eq!(s.handover_socket.as_deref(), Some(std::path::Path::new("/run/x/h.sock")));
        let flag = RunArgs { handover_socket: Some("/tmp/other.sock".into()), take_over: true, ..RunArgs::default() };
        let s = Settings::from_toml(&with, &flag).unwrap();
        assert_eq!((s.handover_socket.as_deref(), s.take_over), (Some(std::path::Path::new("/tmp/other.sock")), true));
        let alone = RunArgs { take_over: true, ..RunArgs::default() };
        assert_eq!(Settings::from_toml(text, &alone).unwrap_err().key, "handover.socket");
        let typo = format!("{text}[handover]\nsockets = \"/run/x/h.sock\"\n");
        assert!(Settings::from_toml(&typo, &RunArgs::default()).is_err(), "unknown keys are refused");
        assert!(Settings::from_toml(text, &RunArgs::default()).unwrap().fd_store, "on by default");
        let off = format!("{text}[handover]\nfd_store = false\n");
        assert!(!Settings::from_toml(&off, &RunArgs::default()).unwrap().fd_store);
    }

    #[test]
    fn flags_override_the_file() {
        let text = r#"
            listen = ["127.0.0.1:3478"]
            realm = "file"
            [auth]
            users = [{ name = "a", password = "b" }]
            [relay]
            ports = "50000-50010"
        "#;
        let a = args(|a| {
            a.realm = Some("flag".into());
            a.relay_ports = Some("40000-40100".into());
            a.listen = vec!["127.0.0.2:5000".parse().unwrap()];
        });
        let s = Settings::from_toml(text, &a).unwrap();
        assert_eq!(s.proto.credentials.realm, "flag");
        assert_eq!(s.proto.ports, 40000..=40100);
        assert_eq!(s.listen, ["127.0.0.2:5000".parse().unwrap()]);
        assert_eq!(s.proto.relay_ips[0][0].bind, "127.0.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn several_relay_addresses_per_family_pair_with_externals_in_order() {
        let base = args(|a| a.users = vec!["u:p".into()]);
        let file = |ips: &str, externals: &str| {
            format!("listen = [\"127.0.0.1:3478\"]\n[relay]\nips = [{ips}]\nexternal_ips = [{externals}]")
        };
        let text = file(r#""127.0.0.1", "::1", "127.0.0.2""#, r#""192.0.2.1", "192.0.2.2""#);
        let s = Settings::from_toml(&text, &base).unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let v4: Vec<_> = s.proto.relay_ips[0].iter().map(|r| (r.bind, r.external)).collect();
        assert_eq!(v4, [(ip("127.0.0.1"), Some(ip("192.0.2.1"))), (ip("127.0.0.2"), Some(ip("192.0.2.2")))]);
        assert_eq!(s.proto.relay_ips[1].iter().map(|r| (r.bind, r.external)).collect::<Vec<_>>(), [(ip("::1"), None)]);
        assert!(s.proto.policy.host.contains(&ip("192.0.2.2")) && s.proto.policy.host.contains(&ip("127.0.0.2")));
        let nine = (1..=9).map(|i| format!("\"127.0.0.{i}\"")).collect::<Vec<_>>().join(", ");
        for (ips, externals, expected) in [
            (r#""127.0.0.1", "127.0.0.1""#.to_owned(), "", "given twice"),
            (nine, "", "at most 8"),
            (r#""127.0.0.1""#.to_owned(), r#""192.0.2.1", "192.0.2.2""#, "pair in order"),
            (r#""127.0.0.1""#.to_owned(), r#""2001:db8::1""#, "no relay address of its family"),
        ] {
            let e = Settings::from_toml(&file(&ips, externals), &base).unwrap_err().to_string();
            assert!(e.contains(expected) && e.contains("relay."), "{ips} / {externals}: got {e}");
        }
    }

    #[test]
    fn the_fast_path_is_off_unless_asked_and_its_events_follow_it() {
        let base = args(|a| {
            a.users = vec!["u:p".into()];
            a.relay_ips = vec!["127.0.0.1".parse().unwrap()];
        });
        let off = Settings::from_toml("", &base).unwrap();
        assert_eq!((off.xdp.mode, off.proto.events), (XdpMode::Off, false));
        let on = Settings::from_toml("[xdp]\nmode = \"auto\"\ninterfaces = [\"eth0\"]\nattach = \"generic\"", &base)
            .unwrap();
        assert_eq!((on.xdp.mode, on.proto.events, on.xdp.generic), (XdpMode::Auto, true, true));
        assert_eq!(on.xdp.interfaces, ["eth0"]);
        let flag = args(|a| {
            a.users = vec!["u:p".into()];
            a.relay_ips = vec!["127.0.0.1".parse().unwrap()];
            a.xdp = Some(XdpMode::On);
        });
        assert_eq!(Settings::from_toml("[xdp]\nmode = \"off\"", &flag).unwrap().xdp.mode, XdpMode::On);
    }

    #[test]
    fn errors_name_the_key() {
        let base = args(|a| {
            a.users = vec!["u:p".into()];
            a.relay_ips = vec!["127.0.0.1".parse().unwrap()];
        });
        let cases: &[(&str, &str)] = &[
            ("lisen = []", "unknown field `lisen`"),
            ("[relay]\nports = \"10-5\"", "relay.ports"),
            ("[relay]\nports = \"x\"", "relay.ports"),
            ("[relay]\nexternal_ips = [\"::1\"]", "relay.external_ips"),
            ("[allocation]\nmax_lifetime = 10", "allocation.max_lifetime"),
            ("[peers]\nallow = [\"300.1.1.1/8\"]", "peers.allow"),
            ("[auth]\nnonce_secret = \"abc\"", "auth.nonce_secret"),
            ("[auth]\nusers = [{ name = \"a\" }]", "auth.users[0]"),
            ("[auth]\nusers = [{ name = \"a\", key = \"zz\" }]", "auth.users[0]"),
            ("[log]\nlevel = \"[[\"", "log.level"),
            ("workers = 5000", "workers"),
            ("io_uring_buffers = 100", "io_uring_buffers"),
            ("busy_poll_us = 20000", "busy_poll_us"),
            ("[tls]\nlisten = [\"127.0.0.1:443\"]", "tls.listen"),
            ("[tls]\ncert = \"/nonexistent.pem\"", "tls.key"),
            ("[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"", "cannot read certificate"),
            ("[connections]\nsend_buffer = 10", "connections.send_buffer"),
            ("[connections]\nidle_timeout = 0", "connections"),
            ("[allocation]\nbandwidth = 100", "allocation.bandwidth"),
            ("[admin]\nlisten = \"9478\"", "admin.listen"),
            ("[allocation]\ndefault_lifetime = 18446744073709551615", "allocation.default_lifetime"),
            ("[allocation]\nmax_lifetime = 100000", "allocation.max_lifetime"),
            ("[allocation]\nuser_quota = 100000000", "allocation.user_quota"),
            ("[allocation]\nbandwidth = 18446744073709551615", "allocation.bandwidth"),
            ("[auth]\nnonce_lifetime = 0", "auth.nonce_lifetime"),
            ("[auth]\nnonce_lifetime = 18446744073709551615", "auth.nonce_lifetime"),
            ("[auth]\nmax_credential_lifetime = 9223372036854775807", "auth.max_credential_lifetime"),
            ("[auth]\nsecrets = [\"short\"]", "auth.secrets"),
            ("[auth]\nsecrets = [\"replace-with-your-rest-secret\"]", "auth.secrets"),
            ("[auth]\nsecrets = [\"aaaaaaaaaaaaaaaaaaaaaaaa\"]", "auth.secrets"),
            (
                "[auth]\nnonce_secret = \"0000000000000000000000000000000000000000000000000000000000000000\"",
                "auth.nonce_secret",
            ),
            ("[auth]\nusers = [{ name = \"a\", password = \"changeme\" }]", "auth.users[0]"),
            ("[auth]\nsecrets_file = \"/nonexistent/secrets\"", "auth.secrets_file"),
            ("[connections]\nidle_timeout = 18446744073709551615", "connections.idle_timeout"),
            ("[connections]\nmax = 0", "connections.max"),
            ("[connections]\nsend_buffer = 18446744073709551615", "connections.send_buffer"),
            ("[drain]\ntimeout = 18446744073709551615", "drain.timeout"),
            ("realm = \"a-realm-of-thirty-three-bytes-xyz\"", "realm"),
            ("software = \"x\"\n[admin]\ntoken = \"short\"", "admin.token"),
            ("[xdp]\nmode = \"maybe\"", "unknown variant `maybe`"),
            ("[xdp]\nchannels = 0", "xdp.channels"),
            ("[xdp]\nchannels = 5000000000", "xdp.channels"),
            ("[xdp]\ninterfaces = [\"eth0/1\"]", "xdp.interfaces"),
            ("[xdp]\ninterfaces = [\"an-interface-name-too-long\"]", "xdp.interfaces"),
            ("[xdp]\nattach = \"hardware\"", "unknown variant `hardware`"),
        ];
        for (text, expected) in cases {
            let e = Settings::from_toml(text, &base).unwrap_err();
            assert!(e.to_string().contains(expected), "{text:?}: got {e}");
        }
        let e = Settings::from_toml("", &args(|a| a.users = vec!["u:p".into()])).unwrap_err();
        assert_eq!(e.key, "relay.ips", "0.0.0.0 gives no relay address");
        let e = Settings::from_toml("listen = [\"127.0.0.1:1\"]", &RunArgs::default()).unwrap_err();
        assert_eq!(e.key, "auth", "no credentials at all");
        let e =
            Settings::from_toml("listen = [\"127.0.0.1:1\"]", &args(|a| a.users = vec!["nocolon".into()])).unwrap_err();
        assert_eq!(e.key, "--user");
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = std::env::temp_dir().join(format!("ip2p-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (secrets, users, token) = (dir.join("secrets"), dir.join("users"), dir.join("token"));
        std::fs::write(&secrets, "# rotated monthly\nkq3vZ8tX1mR4wY7pL0sN\n\nQ9w8E7r6T5y4U3i2O1p0\n").unwrap();
        std::fs::write(&users, "alice:wonderland\nbob:builder\n").unwrap();
        std::fs::write(&token, "Zk2Yx7Wv4Ut1Sr8Qp5On\n").unwrap();
        let a = args(|a| {
            a.listen = vec!["127.0.0.1:3478".parse().unwrap()];
            a.auth_secret_file = Some(secrets.clone());
            a.users_file = Some(users.clone());
            a.admin_token_file = Some(token.clone());
        });
        let s = Settings::from_toml("", &a).unwrap();
        assert_eq!(
            s.proto.credentials.rest_secrets,
            [b"kq3vZ8tX1mR4wY7pL0sN".to_vec(), b"Q9w8E7r6T5y4U3i2O1p0".to_vec()]
        );
        assert_eq!(s.proto.credentials.users.len(), 2);
        assert_eq!(s.admin_token.as_deref(), Some("Zk2Yx7Wv4Ut1Sr8Qp5On"));
        std::fs::write(&users, "alice\n").unwrap();
        assert_eq!(Settings::from_toml("", &a).unwrap_err().key, "auth.users_file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_are_on_by_default() {
        let s = Settings::from_toml("listen = [\"127.0.0.1:1\"]", &args(|a| a.users = vec!["u:p".into()])).unwrap();
        assert_eq!((s.user_quota, s.ip_quota, s.max_allocations), (DEFAULT_USER_QUOTA, DEFAULT_IP_QUOTA, None));
        assert_eq!(s.proto.credentials.max_rest_lifetime, DEFAULT_MAX_CREDENTIAL_LIFETIME);
        assert_eq!(s.proto.unauthenticated_rate, DEFAULT_UNAUTHENTICATED_RATE);
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(s.proto.policy.host.contains(&ip("127.0.0.1")), "listen and relay address");
    }

    #[test]
    fn dev_mode_works_with_nothing_else() {
        let s = Settings::from_toml("", &args(|a| a.dev = true)).unwrap();
        assert_eq!(s.listen, ["127.0.0.1:3478".parse().unwrap()]);
        assert!(s.proto.credentials.users.contains_key(DEV_USER.0));
        assert_eq!(s.proto.policy.judge("127.0.0.2".parse().unwrap()), crate::proto::Judgement::Allowed);
        assert_eq!(s.proto.policy.judge("127.0.0.1".parse().unwrap()), crate::proto::Judgement::Host);
        assert!(s.nonce_secret_generated);
    }
}
