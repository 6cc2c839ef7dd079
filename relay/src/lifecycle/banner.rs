//! What the process says once it serves: warnings about how it was
//! configured, and with `--dev` how to try it.

use std::net::SocketAddr;

use super::start::Started;
use crate::admin::Admin;
use crate::config::defaults::DEV_USER;
use crate::config::{RunArgs, Settings};

/// Logs the warnings `args` and `settings` deserve; prints the banner of
/// `--dev`.
pub(super) fn show(args: &RunArgs, settings: &Settings, started: &Started) {
    if !settings.dev && (!args.users.is_empty() || !args.auth_secrets.is_empty()) {
        tracing::warn!(
            "credentials given with --user or --auth-secret are visible to every local user in the process list; \
             use --users-file and --auth-secret-file (or the config file)"
        );
    }
    if settings.nonce_secret_generated && !settings.take_over {
        tracing::info!("auth.nonce_secret not set: using a random one (nonces end with this process)");
    }
    loopback_peers(settings);
    if settings.dev {
        dev(settings, started.node.local_addrs(), started.admin.as_ref().map(Admin::local_addr));
    }
}

/// A warning for each loopback address allowed as a peer, and for each
/// named in `peers.allow` that stays refused (the node serves there).
fn loopback_peers(settings: &Settings) {
    let policy = &settings.turn.policy;
    for peer in &policy.loopback_peers {
        tracing::warn!(
            %peer,
            "a loopback address is allowed as a peer: every service of this host listening on it, or on every \
             address, is open to the relay's clients"
        );
    }
    let named = policy.allow.iter().filter(|n| n.prefix_len() == n.max_prefix_len() && n.addr().is_loopback());
    for refused in named.map(ipnet::IpNet::addr).filter(|ip| !policy.loopback_peers.contains(ip)) {
        tracing::warn!(
            peer = %refused,
            "peers.allow names a loopback address the node serves on (or listens on every address of its \
             family): it stays refused as a peer"
        );
    }
}

/// The banner of `--dev`: the demo user and how to use it.
fn dev(settings: &Settings, local: &[SocketAddr], admin: Option<SocketAddr>) {
    let addr = local.first().map_or_else(|| "127.0.0.1:3478".to_owned(), ToString::to_string);
    let realm = &settings.turn.credentials.realm;
    let (user, password) = DEV_USER;
    println!("ip2p-relay (development mode) on {addr}, realm {realm:?}");
    println!("  user:     {user}");
    println!("  password: {password}");
    println!("  peers:    127.0.0.2 only (the rest of loopback is this host's): try an echo there");
    let port = local.first().map_or(3478, SocketAddr::port);
    println!("  try:      turnutils_uclient -p {port} -u {user} -w {password} -r {realm} -y 127.0.0.1");
    println!("  WebRTC:   {{ urls: \"turn:{addr}\", username: \"{user}\", credential: \"{password}\" }}");
    if let Some(admin) = admin {
        println!(
            "  selftest: http://{admin}/selftest (in a browser: relay candidates and a data channel through the relay)"
        );
        println!("  metrics:  http://{admin}/metrics (also /status, /healthz, /readyz)");
    }
    println!("Ctrl-C stops it.");
}
