//! The command line: subcommands and the flags of a running relay, each
//! of which overrides its config key (`ip2p-relay --help`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::settings::{DatapathKind, XdpMode};

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
    /// List the running node's sessions: its admin listener as --config
    /// (admin.listen, admin.token_file) or --admin and --admin-token-file
    /// name it.
    Sessions {
        /// Only this user's (a REST username's user part).
        #[arg(long)]
        user: Option<String>,
    },
    /// End a session of the running node now.
    Kill {
        /// The session's id (`sessions` shows it).
        id: String,
    },
    /// Revoke a user on the running node: its sessions end, and its
    /// credentials are refused until the revocation ends.
    Revoke {
        /// The user (a REST username's user part).
        user: String,
        /// For how long: seconds, or with s, m, h or d (default: the
        /// node's longest credential lifetime).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Option<u64>,
    },
    /// Mint a TURN REST credential for a user on the running node, with
    /// its URLs (an RTCIceServer list, as JSON).
    Credentials {
        /// The user.
        user: String,
        /// Seconds it is valid (default: the node's longest).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// A static user for every node of the running node's fleet, stored
    /// in its Redis as an MD5 key (docs/fleet.md); with neither option,
    /// list the stored users.
    FleetUser {
        /// The user.
        user: Option<String>,
        /// A file holding its password (set or replace the user).
        #[arg(long = "password-file", value_name = "FILE", requires = "user")]
        password_file: Option<PathBuf>,
        /// Remove the user from the store.
        #[arg(long, requires = "user", conflicts_with = "password_file")]
        remove: bool,
    },
    /// TURN REST secrets for every node of the running node's fleet: with
    /// neither option, list their fingerprints (the first signs).
    FleetSecret {
        /// A file holding a new secret: it signs from now on, the others
        /// still verify.
        #[arg(long = "add-file", value_name = "FILE")]
        add_file: Option<PathBuf>,
        /// Remove the secret of this fingerprint.
        #[arg(long, value_name = "FINGERPRINT", conflicts_with = "add_file")]
        remove: Option<String>,
    },
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
    /// End a session opened with a TURN REST credential when the
    /// credential expires, whatever lifetime it refreshed to. (config:
    /// auth.strict_expiry)
    #[arg(long = "strict-expiry")]
    pub strict_expiry: bool,
    /// Allow relaying to a range the defaults deny (repeatable). (config: peers.allow)
    #[arg(long = "allow-peer", value_name = "CIDR")]
    pub allow_peers: Vec<String>,
    /// A load balancer whose TCP and TLS connections begin with a PROXY
    /// protocol header, v1 or v2 (repeatable; CIDR or address). (config:
    /// connections.proxy_protocol_from)
    #[arg(long = "proxy-protocol-from", value_name = "CIDR")]
    pub proxy_protocol_from: Vec<String>,
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
    /// Write usage records (JSON lines: a session's start, interim and
    /// stop) to this file. (config: usage.file)
    #[arg(long = "usage-file", value_name = "PATH")]
    pub usage_file: Option<PathBuf>,
    /// Seconds between a live session's interim records, 1 to 86400;
    /// default 60. (config: usage.interval)
    #[arg(long = "usage-interval", value_name = "SECONDS")]
    pub usage_interval: Option<u64>,
    /// Join the fleet whose Redis is at this URL (redis://HOST:PORT, or
    /// rediss:// for TLS). (config: fleet.redis)
    #[arg(long = "fleet-redis", value_name = "URL")]
    pub fleet_redis: Option<String>,
    /// This node's id in the fleet; default the host name. (config: fleet.node)
    #[arg(long = "fleet-node", value_name = "NAME")]
    pub fleet_node: Option<String>,
    /// This node's region in the fleet; default `default`. (config: fleet.region)
    #[arg(long = "fleet-region", value_name = "NAME")]
    pub fleet_region: Option<String>,
    /// Take over the node of the process listening at the handover socket:
    /// its sockets and allocations, instead of binding afresh.
    #[arg(long = "take-over")]
    pub take_over: bool,
}

/// A duration as `--for` takes it: seconds, or a number with `s`, `m`,
/// `h` or `d`.
///
/// # Errors
/// Anything else.
pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{s}: a number of seconds, or with s, m, h or d")),
    };
    let n: u64 = n.parse().map_err(|_| format!("{s}: a number of seconds, or with s, m, h or d"))?;
    n.checked_mul(scale).filter(|&n| n > 0).ok_or_else(|| format!("{s}: out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        for bad in ["", "0", "h", "1w", "-1", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
