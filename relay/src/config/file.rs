//! The config file as serde reads it: every key optional, unknown keys
//! refused. What a key means, and its default, is in
//! `deploy/ip2p-relay.example.toml`; [`super::resolve`] checks the values.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::settings::{ConfigError, DatapathKind, LogFormat, XdpMode, err};

/// The config file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) listen: Option<Vec<SocketAddr>>,
    pub(super) realm: Option<String>,
    pub(super) software: Option<String>,
    pub(super) workers: Option<usize>,
    pub(super) datapath: Option<DatapathKind>,
    pub(super) io_uring_buffers: Option<u16>,
    pub(super) busy_poll_us: Option<u32>,
    pub(super) busy_poll_adaptive: Option<bool>,
    pub(super) gso: Option<bool>,
    #[serde(default)]
    pub(super) relay: RelaySection,
    #[serde(default)]
    pub(super) allocation: AllocationSection,
    #[serde(default)]
    pub(super) auth: AuthSection,
    #[serde(default)]
    pub(super) peers: PeersSection,
    #[serde(default)]
    pub(super) log: LogSection,
    #[serde(default)]
    pub(super) tls: TlsSection,
    #[serde(default)]
    pub(super) connections: ConnectionsSection,
    #[serde(default)]
    pub(super) drain: DrainSection,
    #[serde(default)]
    pub(super) admin: AdminSection,
    #[serde(default)]
    pub(super) xdp: XdpSection,
    #[serde(default)]
    pub(super) handover: HandoverSection,
    #[serde(default)]
    pub(super) usage: UsageSection,
    #[serde(default)]
    pub(super) fleet: FleetSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FleetSection {
    pub(super) redis: Option<String>,
    pub(super) name: Option<String>,
    pub(super) node: Option<String>,
    pub(super) region: Option<String>,
    pub(super) advertise: Option<String>,
    pub(super) redirect_above: Option<f64>,
    pub(super) when_store_down: Option<super::settings::StoreDown>,
    pub(super) usage_stream: Option<u64>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageSection {
    pub(super) file: Option<PathBuf>,
    pub(super) interval: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HandoverSection {
    pub(super) socket: Option<PathBuf>,
    pub(super) fd_store: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct XdpSection {
    pub(super) mode: Option<XdpMode>,
    pub(super) interfaces: Option<Vec<String>>,
    pub(super) attach: Option<XdpAttach>,
    pub(super) channels: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum XdpAttach {
    Native,
    Generic,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminSection {
    pub(super) listen: Option<String>,
    pub(super) token: Option<String>,
    pub(super) token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DrainSection {
    pub(super) timeout: Option<u64>,
    #[serde(default)]
    pub(super) alternates: Vec<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    pub(super) listen: Option<Vec<SocketAddr>>,
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectionsSection {
    pub(super) max: Option<usize>,
    pub(super) max_per_ip: Option<u32>,
    pub(super) idle_timeout: Option<u64>,
    pub(super) tls_handshake_timeout: Option<u64>,
    pub(super) send_buffer: Option<usize>,
    pub(super) proxy_protocol_from: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RelaySection {
    pub(super) ips: Option<Vec<IpAddr>>,
    pub(super) external_ips: Option<Vec<IpAddr>>,
    pub(super) ports: Option<String>,
    pub(super) short_circuit: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllocationSection {
    pub(super) channel_numbers: Option<ChannelNumbers>,
    pub(super) default_lifetime: Option<u64>,
    pub(super) max_lifetime: Option<u64>,
    pub(super) max_allocations: Option<usize>,
    pub(super) user_quota: Option<usize>,
    pub(super) ip_quota: Option<usize>,
    pub(super) bandwidth: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthSection {
    #[serde(default)]
    pub(super) users: Vec<UserEntry>,
    pub(super) users_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) secrets: Vec<String>,
    pub(super) secrets_file: Option<PathBuf>,
    pub(super) nonce_secret: Option<String>,
    pub(super) nonce_secret_file: Option<PathBuf>,
    pub(super) nonce_lifetime: Option<u64>,
    pub(super) max_credential_lifetime: Option<u64>,
    pub(super) unauthenticated_rate: Option<u32>,
    pub(super) strict_expiry: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserEntry {
    pub(super) name: String,
    pub(super) password: Option<String>,
    pub(super) key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PeersSection {
    #[serde(default)]
    pub(super) allow: Vec<String>,
    #[serde(default)]
    pub(super) deny: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogSection {
    pub(super) level: Option<String>,
    pub(super) format: Option<LogFormat>,
}

/// Which channel numbers ChannelBind accepts (`allocation.channel_numbers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ChannelNumbers {
    /// 0x4000..=0x7FFF (RFC 5766, coturn's clients).
    #[default]
    Rfc5766,
    /// 0x4000..=0x4FFF (RFC 8656).
    Rfc8656,
}

impl From<ChannelNumbers> for ip2p_turn::ChannelNumbers {
    fn from(c: ChannelNumbers) -> Self {
        match c {
            ChannelNumbers::Rfc5766 => Self::Rfc5766,
            ChannelNumbers::Rfc8656 => Self::Rfc8656,
        }
    }
}

/// Reads and parses the config file at `path`.
pub(super) fn read(path: &Path) -> Result<File, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| err("", format!("{}: {e}", path.display())))
}
