//! `init-config`: the first config of a fresh install, on this host's
//! loopback only, with secrets of its own.

use super::defaults;

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
listen = "{admin}"

[xdp]
# The XDP fast path where the kernel, the driver and the service's
# capabilities allow it, else the sockets, saying why once
# (/usr/share/doc/ip2p-relay/xdp.md: the unit needs a drop-in for it).
mode = "auto"
"#,
        hex::encode(rest_secret),
        hex::encode(nonce_secret),
        admin = defaults::ADMIN
    )
}

/// Writes a first config with fresh secrets to `path`, readable by its
/// owner and group only (it holds secrets); never over an existing file.
///
/// # Errors
/// The file exists, or cannot be written.
pub fn write_initial(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = initial_config(&rand::random(), &rand::random());
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(path)?;
    file.write_all(text.as_bytes())
}
