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
#[command(name = "ip2p-relay", version, about = "A STUN/TURN relay (RFC 8489, RFC 8656)")]
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
    /// A static user (repeatable). (config: auth.users)
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    pub users: Vec<String>,
    /// A TURN REST API shared secret (repeatable, for rotation). (config: auth.secrets)
    #[arg(long = "auth-secret", value_name = "SECRET")]
    pub auth_secrets: Vec<String>,
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
    /// Admin HTTP listener (/metrics, /healthz, /readyz, /status), or `off`;
    /// default 127.0.0.1:9478. (config: admin.listen)
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin: Option<String>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: Option<String>,
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
    channel_numbers: Option<crate::proto::ChannelNumbers>,
    default_lifetime: Option<u64>,
    max_lifetime: Option<u64>,
    max_allocations: Option<usize>,
    user_quota: Option<usize>,
    bandwidth: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    secrets: Vec<String>,
    nonce_secret: Option<String>,
    nonce_lifetime: Option<u64>,
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
    /// The admin HTTP listener's address; `None` when turned off.
    pub admin: Option<SocketAddr>,
    /// Worker threads.
    pub workers: usize,
    /// Datapath choice.
    pub datapath: DatapathKind,
    /// Provided receive buffers per io_uring worker (a power of two).
    pub io_uring_buffers: u16,
    /// How long an idle worker polls before it sleeps (0: it sleeps at once).
    pub busy_poll: Duration,
    /// The TURN core's configuration (each worker narrows `ports`).
    pub proto: proto::Config,
    /// Allocations on the node; 0 = no limit.
    pub max_allocations: usize,
    /// Allocations per username; 0 = no limit.
    pub user_quota: usize,
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

    #[allow(clippy::too_many_lines)]
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

        let tls_listen = pick(&args.tls_listen, file.tls.listen, Vec::new);
        let cert = args.cert.clone().or(file.tls.cert);
        let key = args.key.clone().or(file.tls.key);
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
        let c = file.connections;
        let connections = Connections {
            max: c.max.unwrap_or(10_000),
            max_per_ip: c.max_per_ip.unwrap_or(64),
            idle_timeout: Duration::from_secs(c.idle_timeout.unwrap_or(30)),
            tls_handshake_timeout: Duration::from_secs(c.tls_handshake_timeout.unwrap_or(10)),
            send_buffer: c.send_buffer.unwrap_or(256 * 1024),
        };
        if connections.max_per_ip == 0 || connections.idle_timeout.is_zero() {
            return Err(err("connections", "max_per_ip and idle_timeout must be at least 1"));
        }
        if connections.tls_handshake_timeout.is_zero() {
            return Err(err("connections.tls_handshake_timeout", "must be at least 1 second"));
        }
        if connections.send_buffer < 65_600 {
            return Err(err("connections.send_buffer", "must hold a largest frame: at least 65600 bytes"));
        }

        let drain_timeout = Duration::from_secs(file.drain.timeout.unwrap_or(30));
        if let Some(bad) = file.drain.alternates.iter().find(|a| a.ip().is_unspecified() || a.port() == 0) {
            return Err(err("drain.alternates", format!("{bad} is not an address clients can use")));
        }

        let (admin_key, admin_text) = match (&args.admin, file.admin.listen) {
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

        let realm = args.realm.clone().or(file.realm).unwrap_or_else(|| "ip2p".into());
        if realm.is_empty() || realm.len() > 763 {
            return Err(err("realm", "must be 1 to 763 bytes"));
        }

        let workers = match args.workers.or(file.workers).unwrap_or(0) {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n if n > 1024 => return Err(err("workers", format!("{n} is more than 1024"))),
            n => n,
        };
        let datapath = args.datapath.or(file.datapath).unwrap_or_default();
        let io_uring_buffers = file.io_uring_buffers.unwrap_or(crate::datapath::uring::DEFAULT_BUFFERS);
        if !io_uring_buffers.is_power_of_two() || io_uring_buffers > 32_768 {
            return Err(err("io_uring_buffers", format!("{io_uring_buffers} is not a power of two up to 32768")));
        }
        let busy_poll_us = file.busy_poll_us.unwrap_or(0);
        if busy_poll_us > 10_000 {
            return Err(err("busy_poll_us", format!("{busy_poll_us} is more than 10000 (10 ms)")));
        }

        // Relay addresses: up to 8 per family, defaulting to the listen address.
        let mut ips = pick(&args.relay_ips, file.relay.ips, Vec::new);
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
        let externals = pick(&args.external_ips, file.relay.external_ips, Vec::new);
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

        let ports_text = args.relay_ports.clone().or(file.relay.ports).unwrap_or_else(|| "49152-65535".into());
        let ports = parse_ports(&ports_text).ok_or_else(|| {
            err("relay.ports", format!("expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got {ports_text:?}"))
        })?;
        if usize::from(ports.1 - ports.0) + 1 < workers {
            return Err(err("relay.ports", format!("{ports_text} has fewer ports than the {workers} workers")));
        }

        let a = file.allocation;
        let default_lifetime = a.default_lifetime.unwrap_or(600);
        let max_lifetime = a.max_lifetime.unwrap_or(3600);
        if default_lifetime == 0 {
            return Err(err("allocation.default_lifetime", "must be at least 1 second"));
        }
        if max_lifetime < default_lifetime {
            return Err(err("allocation.max_lifetime", format!("{max_lifetime} is below default_lifetime")));
        }

        let bandwidth = a.bandwidth.unwrap_or(0);
        if bandwidth != 0 && bandwidth < 1500 {
            return Err(err("allocation.bandwidth", "0 (no limit) or at least 1500 bytes a second: a packet must fit"));
        }

        let mut users = HashMap::new();
        for (i, u) in file.auth.users.iter().enumerate() {
            let key = format!("auth.users[{i}]");
            if u.name.is_empty() {
                return Err(err(&key, "name is empty"));
            }
            let secret = match (&u.password, &u.key) {
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
        let secrets = pick(&args.auth_secrets, Some(file.auth.secrets), Vec::new);
        if secrets.iter().any(String::is_empty) {
            return Err(err("auth.secrets", "a secret is empty"));
        }
        if users.is_empty() && secrets.is_empty() {
            return Err(err(
                "auth",
                "no credentials: add a user (--user NAME:PASSWORD) or a REST secret (--auth-secret); \
                 ip2p does not run an open relay",
            ));
        }
        let (nonce_secret, nonce_secret_generated) = match &file.auth.nonce_secret {
            Some(hex_text) => {
                let mut secret = [0u8; 32];
                hex::decode_to_slice(hex_text, &mut secret)
                    .map_err(|_| err("auth.nonce_secret", "must be 64 hex digits (32 bytes)"))?;
                (secret, false)
            }
            None => (rand::random(), true),
        };
        let nonce_lifetime = file.auth.nonce_lifetime.unwrap_or(600);
        if nonce_lifetime == 0 {
            return Err(err("auth.nonce_lifetime", "must be at least 1 second"));
        }

        let mut allow = parse_nets("peers.allow", pick(&args.allow_peers, Some(file.peers.allow), Vec::new))?;
        if dev && allow.is_empty() {
            allow = parse_nets("peers.allow", vec!["127.0.0.0/8".into(), "::1/128".into()])?;
        }
        let deny = parse_nets("peers.deny", pick(&args.deny_peers, Some(file.peers.deny), Vec::new))?;
        let own = relay_ips.iter().flatten().flat_map(|r| [Some(r.bind), r.external]).flatten().collect();

        let log_level = file.log.level.unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|e| err("log.level", e.to_string()))?;

        let software = match file.software {
            Some(s) if s.is_empty() => None,
            Some(s) => Some(s),
            None => Some(concat!("ip2p ", env!("CARGO_PKG_VERSION")).to_owned()),
        };
        Ok(Self {
            listen,
            tls_listen,
            tls,
            connections,
            drain_timeout,
            admin,
            workers,
            datapath,
            io_uring_buffers,
            busy_poll: Duration::from_micros(u64::from(busy_poll_us)),
            proto: proto::Config {
                software,
                default_lifetime: Duration::from_secs(default_lifetime),
                max_lifetime: Duration::from_secs(max_lifetime),
                relay_ips,
                ports: ports.0..=ports.1,
                channel_numbers: a.channel_numbers.unwrap_or_default(),
                policy: PeerPolicy { allow, deny, own },
                alternates: file.drain.alternates,
                bandwidth,
                short_circuit: file.relay.short_circuit.unwrap_or(true),
                credentials: Credentials {
                    realm,
                    users,
                    rest_secrets: secrets.into_iter().map(String::into_bytes).collect(),
                    nonce_secret,
                    nonce_lifetime,
                },
            },
            max_allocations: a.max_allocations.unwrap_or(0),
            user_quota: a.user_quota.unwrap_or(0),
            log_level,
            log_format: file.log.format.unwrap_or_default(),
            nonce_secret_generated,
            dev,
        })
    }
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
    fn the_example_config_is_valid() {
        let text = include_str!("../../deploy/ip2p-relay.example.toml");
        let s = Settings::from_toml(text, &RunArgs::default()).unwrap();
        assert_eq!(s.listen, ["0.0.0.0:3478".parse().unwrap()]);
        assert_eq!(s.proto.ports, 49152..=65535);
        assert_eq!(s.proto.credentials.realm, "example.org");
        assert!(!s.nonce_secret_generated);
        assert!(s.tls.is_none() && s.tls_listen.is_empty());
        assert_eq!(s.connections.max_per_ip, 64);
        assert_eq!(s.connections.send_buffer, 262_144);
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
        assert!(s.proto.policy.own.contains(&ip("192.0.2.2")) && s.proto.policy.own.contains(&ip("127.0.0.2")));
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
    fn dev_mode_works_with_nothing_else() {
        let s = Settings::from_toml("", &args(|a| a.dev = true)).unwrap();
        assert_eq!(s.listen, ["127.0.0.1:3478".parse().unwrap()]);
        assert!(s.proto.credentials.users.contains_key(DEV_USER.0));
        assert!(s.proto.policy.allows("127.0.0.1".parse().unwrap()));
        assert!(s.nonce_secret_generated);
    }
}
