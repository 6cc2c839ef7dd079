//! From the file and the flags to [`Settings`]: one function per section,
//! each checking its keys and naming the one at fault.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ip2p_turn::{Credentials, PeerPolicy, RelayIp};

use super::auth::auth;
use super::check::{check_secret, parse_nets, parse_ports, pick, ranged, read_lines, secs};
use super::cli::RunArgs;
use super::defaults::{self, MIN_SECRET};
use super::file::{
    self, AdminSection, AllocationSection, ConnectionsSection, File, RelaySection, TlsSection, UsageSection, XdpAttach,
    XdpSection,
};
use super::settings::{ConfigError, Connections, Engine, Settings, Usage, Xdp, err};

impl Settings {
    /// Reads the config file named by `args` (if any) and applies the flags.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key or flag at fault.
    pub fn load(args: &RunArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => file::read(path)?,
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
        let engine = engine(args, &file)?;
        let default_listen = if dev { defaults::DEV_LISTEN } else { defaults::LISTEN };
        let listen = pick(&args.listen, file.listen, || vec![default_listen]);
        if listen.is_empty() {
            return Err(err("listen", "at least one address is needed"));
        }
        let (tls_listen, tls) = tls(args, file.tls)?;
        let drain_timeout = secs("drain.timeout", file.drain.timeout, defaults::DRAIN_TIMEOUT, 0, 86_400)?;
        if let Some(bad) = file.drain.alternates.iter().find(|a| a.ip().is_unspecified() || a.port() == 0) {
            return Err(err("drain.alternates", format!("{bad} is not an address clients can use")));
        }
        let (admin, admin_token) = admin(args, file.admin)?;
        let served: Vec<SocketAddr> = listen.iter().chain(&tls_listen).chain(&admin).copied().collect();
        loopback_only(dev, &served)?;
        let xdp = xdp(args, file.xdp)?;
        let alloc = allocation(&file.allocation)?;
        let handover_socket = args.handover_socket.clone().or(file.handover.socket);
        if args.take_over && handover_socket.is_none() {
            return Err(err("handover.socket", "--take-over needs the socket to ask at (--handover-socket PATH)"));
        }
        let usage = usage(args, file.usage)?;
        let log_level = log_level(file.log.level)?;
        let auth = auth(args, &file.auth, dev)?;
        let mut turn = ip2p_turn::Config {
            software: software(file.software)?,
            default_lifetime: alloc.default_lifetime,
            max_lifetime: alloc.max_lifetime,
            relay_ips: relay_ips(args, &file.relay, &listen)?,
            ports: relay_ports(args, &file.relay, engine.workers)?,
            channel_numbers: file.allocation.channel_numbers.unwrap_or_default().into(),
            policy: PeerPolicy::default(),
            alternates: file.drain.alternates,
            bandwidth: alloc.bandwidth,
            unauthenticated_rate: auth.unauthenticated_rate,
            // The XDP tables mirror the forwarding state.
            events: xdp.mode != super::XdpMode::Off,
            session_events: false,
            strict_expiry: args.strict_expiry || file.auth.strict_expiry.unwrap_or(false),
            admission: None,
            short_circuit: file.relay.short_circuit.unwrap_or(defaults::SHORT_CIRCUIT),
            credentials: Credentials {
                realm: realm(args.realm.clone().or(file.realm))?,
                users: auth.users,
                rest_secrets: auth.secrets.into_iter().map(String::into_bytes).collect(),
                nonce_secret: auth.nonce_secret,
                nonce_lifetime: auth.nonce_lifetime,
                max_rest_lifetime: auth.max_rest_lifetime,
            },
        };
        turn.policy = peers(args, file.peers, dev, own_addresses(&turn.relay_ips, &served))?;
        let fleet = super::fleet::fleet(args, file.fleet)?;
        turn.admission = fleet.as_ref().map(|f| f.when_store_down.fallback());
        // Records for the file, or for the fleet's stream.
        let usage = (usage.file.is_some() || fleet.as_ref().is_some_and(|f| f.usage_stream > 0)).then_some(usage);
        turn.session_events = usage.is_some();
        Ok(Self {
            listen,
            tls_listen,
            tls,
            connections: connections(args, &file.connections)?,
            drain_timeout,
            handover_socket,
            take_over: args.take_over,
            fd_store: file.handover.fd_store.unwrap_or(defaults::FD_STORE),
            admin,
            admin_token,
            engine,
            xdp,
            turn,
            max_allocations: alloc.max_allocations,
            user_quota: alloc.user_quota,
            ip_quota: alloc.ip_quota,
            log_level,
            log_format: file.log.format.unwrap_or_default(),
            nonce_secret_generated: auth.nonce_secret_generated,
            dev,
            usage,
            fleet,
        })
    }
}

/// `log.level`: a `tracing` filter.
fn log_level(level: Option<String>) -> Result<String, ConfigError> {
    let level = level.unwrap_or_else(|| defaults::LOG_LEVEL.into());
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| err("log.level", e.to_string()))?;
    Ok(level)
}

/// `[usage]`: the file, if any, and the interval.
fn usage(args: &RunArgs, file: UsageSection) -> Result<Usage, ConfigError> {
    let interval = secs("usage.interval", args.usage_interval.or(file.interval), defaults::USAGE_INTERVAL, 1, 86_400)?;
    Ok(Usage { file: args.usage_file.clone().or(file.file), interval })
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
fn connections(args: &RunArgs, c: &ConnectionsSection) -> Result<Connections, ConfigError> {
    let proxy_from = pick(&args.proxy_protocol_from, c.proxy_protocol_from.clone(), Vec::new);
    Ok(Connections {
        max: ranged("connections.max", c.max.unwrap_or(defaults::CONNECTIONS), 1, 1_000_000, "connections")?,
        max_per_ip: ranged(
            "connections.max_per_ip",
            c.max_per_ip.unwrap_or(defaults::CONNECTIONS_PER_IP),
            1,
            1_000_000,
            "connections",
        )?,
        idle_timeout: secs("connections.idle_timeout", c.idle_timeout, defaults::IDLE_TIMEOUT, 1, 3600)?,
        tls_handshake_timeout: secs(
            "connections.tls_handshake_timeout",
            c.tls_handshake_timeout,
            defaults::TLS_HANDSHAKE_TIMEOUT,
            1,
            300,
        )?,
        send_buffer: ranged(
            "connections.send_buffer",
            c.send_buffer.unwrap_or(defaults::SEND_BUFFER),
            defaults::MIN_SEND_BUFFER,
            64 << 20,
            "bytes (it must hold a largest frame)",
        )?,
        proxy_protocol_from: parse_nets("connections.proxy_protocol_from", &proxy_from)?,
    })
}

/// `[admin]`: the listener's address (`None`: off) and its token.
fn admin(args: &RunArgs, file: AdminSection) -> Result<(Option<SocketAddr>, Option<String>), ConfigError> {
    let (admin_key, admin_text) = match (&args.admin, file.listen) {
        (Some(flag), _) => ("--admin", flag.clone()),
        (None, Some(text)) => ("admin.listen", text),
        (None, None) => ("admin.listen", defaults::ADMIN.to_owned()),
    };
    let admin = match admin_text.as_str() {
        "off" | "" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            err(admin_key, format!("expected ADDR:PORT (e.g. {}) or \"off\", got {text:?}", defaults::ADMIN))
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

/// `realm`: 1 to [`ip2p_turn::MAX_REALM`] bytes.
fn realm(realm: Option<String>) -> Result<String, ConfigError> {
    let realm = realm.unwrap_or_else(|| defaults::REALM.into());
    if realm.is_empty() || realm.len() > ip2p_turn::MAX_REALM {
        return Err(err(
            "realm",
            format!(
                "must be 1 to {} bytes: it goes into every 401, which must stay within 4 times \
                 the smallest Allocate (docs/security.md)",
                ip2p_turn::MAX_REALM
            ),
        ));
    }
    Ok(realm)
}

/// `software`: empty leaves it out; fewer than 128 characters (RFC 8489
/// §14.14); by default this build's name and version.
fn software(software: Option<String>) -> Result<Option<String>, ConfigError> {
    match software {
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.chars().count() >= 128 => Err(err("software", "must be fewer than 128 characters")),
        Some(s) => Ok(Some(s)),
        None => Ok(Some(format!("ip2p {}", crate::VERSION))),
    }
}

/// `workers`, `datapath`, `io_uring_buffers`, `busy_poll_us`,
/// `busy_poll_adaptive`, `gso`.
fn engine(args: &RunArgs, file: &File) -> Result<Engine, ConfigError> {
    let workers = match args.workers.or(file.workers).unwrap_or(defaults::WORKERS) {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n if n > defaults::MAX_WORKERS => {
            return Err(err("workers", format!("{n} is more than {}", defaults::MAX_WORKERS)));
        }
        n => n,
    };
    let io_uring_buffers = file.io_uring_buffers.unwrap_or(defaults::IO_URING_BUFFERS);
    if !io_uring_buffers.is_power_of_two() || io_uring_buffers > defaults::MAX_IO_URING_BUFFERS {
        return Err(err(
            "io_uring_buffers",
            format!("{io_uring_buffers} is not a power of two up to {}", defaults::MAX_IO_URING_BUFFERS),
        ));
    }
    let busy_poll_us = file.busy_poll_us.unwrap_or(defaults::BUSY_POLL_US);
    if busy_poll_us > defaults::MAX_BUSY_POLL_US {
        return Err(err("busy_poll_us", format!("{busy_poll_us} is more than {} (10 ms)", defaults::MAX_BUSY_POLL_US)));
    }
    Ok(Engine {
        workers,
        datapath: args.datapath.or(file.datapath).unwrap_or_default(),
        io_uring_buffers,
        busy_poll: Duration::from_micros(u64::from(busy_poll_us)),
        busy_poll_adaptive: file.busy_poll_adaptive.unwrap_or(defaults::BUSY_POLL_ADAPTIVE),
        gso: file.gso.unwrap_or(defaults::GSO),
    })
}

/// `relay.ports`: a range with a port for every worker at least.
fn relay_ports(
    args: &RunArgs,
    file: &RelaySection,
    workers: usize,
) -> Result<std::ops::RangeInclusive<u16>, ConfigError> {
    let text = args.relay_ports.clone().or_else(|| file.ports.clone()).unwrap_or_else(|| defaults::RELAY_PORTS.into());
    let (lo, hi) = parse_ports(&text)
        .ok_or_else(|| err("relay.ports", format!("expected LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got {text:?}")))?;
    if usize::from(hi - lo) + 1 < workers {
        return Err(err("relay.ports", format!("{text} has fewer ports than the {workers} workers")));
    }
    Ok(lo..=hi)
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
    let mut relay_ips: [Vec<RelayIp>; 2] = [Vec::new(), Vec::new()];
    for ip in &ips {
        let [v4, v6] = &mut relay_ips;
        let family = if ip.is_ipv6() { v6 } else { v4 };
        if family.iter().any(|r| r.bind == *ip) {
            return Err(err("relay.ips", format!("{ip} is given twice")));
        }
        if family.len() == ip2p_turn::MAX_RELAY_IPS {
            return Err(err("relay.ips", format!("at most {} addresses per family", ip2p_turn::MAX_RELAY_IPS)));
        }
        family.push(RelayIp { bind: *ip, external: None });
    }
    pair_externals(&mut relay_ips, &pick(&args.external_ips, file.external_ips.clone(), Vec::new))?;
    Ok(relay_ips)
}

/// Pairs `relay.external_ips` with the relay addresses of their family, in
/// order; an unspecified relay address needs one.
fn pair_externals(relay_ips: &mut [Vec<RelayIp>; 2], externals: &[IpAddr]) -> Result<(), ConfigError> {
    if let Some(ip) = externals.iter().find(|ip| ip.is_unspecified()) {
        return Err(err("relay.external_ips", format!("{ip} cannot be advertised")));
    }
    for (v6, family) in [false, true].into_iter().zip(relay_ips.iter_mut()) {
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
    if let Some(r) = relay_ips.iter().flatten().find(|r| r.bind.is_unspecified() && r.external.is_none()) {
        return Err(err(
            "relay.external_ips",
            format!("relay address {} is unspecified: give the address to advertise", r.bind),
        ));
    }
    Ok(())
}

/// With `--dev` (a fixed, printed password), every address served must be
/// a loopback address.
fn loopback_only(dev: bool, served: &[SocketAddr]) -> Result<(), ConfigError> {
    match served.iter().find(|a| !a.ip().is_loopback()) {
        Some(open) if dev => {
            Err(err("listen", format!("--dev serves on loopback only: on {open} its printed password is anyone's")))
        }
        _ => Ok(()),
    }
}

/// `[peers]` and `--allow-peer`, `--deny-peer` (with `--dev` and no allow
/// list, its echo peer 127.0.0.2), around `own`: the node's own addresses.
fn peers(args: &RunArgs, file: super::file::PeersSection, dev: bool, own: Own) -> Result<PeerPolicy, ConfigError> {
    let mut allow = parse_nets("peers.allow", &pick(&args.allow_peers, Some(file.allow), Vec::new))?;
    if dev && allow.is_empty() {
        allow = parse_nets("peers.allow", &defaults::DEV_PEERS.map(str::to_owned))?;
    }
    let deny = parse_nets("peers.deny", &pick(&args.deny_peers, Some(file.deny), Vec::new))?;
    // A loopback address named on its own is a peer, unless the node
    // serves on it (or on every address of its family).
    let loopback_peers = allow
        .iter()
        .filter(|net| net.prefix_len() == net.max_prefix_len() && net.addr().is_loopback())
        .map(ipnet::IpNet::addr)
        .filter(|ip| !own.addresses.contains(ip) && !own.wildcard.contains(&ip.is_ipv4()))
        .collect();
    Ok(PeerPolicy { allow, deny, host: own.addresses, loopback_peers })
}

/// The node's own addresses: no client reaches them through it but at a
/// live relayed address.
struct Own {
    /// The relay addresses (as bound and as advertised) and the addresses
    /// served on.
    addresses: Vec<IpAddr>,
    /// The families served on every address (`true`: IPv4).
    wildcard: Vec<bool>,
}

/// [`Own`] of a node with these relay addresses serving on `served`.
fn own_addresses(relay_ips: &[Vec<RelayIp>; 2], served: &[SocketAddr]) -> Own {
    let relays = relay_ips.iter().flatten().flat_map(|r| [Some(r.bind), r.external]).flatten();
    let mut addresses: Vec<IpAddr> = relays.chain(served.iter().map(SocketAddr::ip)).collect();
    let wildcard = addresses.iter().filter(|ip| ip.is_unspecified()).map(IpAddr::is_ipv4).collect();
    addresses.retain(|ip| !ip.is_unspecified());
    addresses.sort();
    addresses.dedup();
    Own { addresses, wildcard }
}

/// `[xdp]` and `--xdp`, `--xdp-interface`.
fn xdp(args: &RunArgs, file: XdpSection) -> Result<Xdp, ConfigError> {
    let interfaces = pick(&args.xdp_interfaces, file.interfaces, Vec::new);
    if let Some(bad) = interfaces.iter().find(|i| i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '\0'])) {
        return Err(err("xdp.interfaces", format!("{bad:?} is not an interface name")));
    }
    let channels = ranged("xdp.channels", file.channels.unwrap_or(defaults::XDP_CHANNELS), 1, 4_194_304, "channels")?;
    Ok(Xdp {
        mode: args.xdp.or(file.mode).unwrap_or_default(),
        interfaces,
        generic: file.attach == Some(XdpAttach::Generic),
        channels: u32::try_from(channels).unwrap_or(u32::MAX),
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
}

/// `[allocation]`: lifetimes, quotas, bandwidth.
fn allocation(a: &AllocationSection) -> Result<AllocationKeys, ConfigError> {
    let default_lifetime =
        secs("allocation.default_lifetime", a.default_lifetime, defaults::DEFAULT_LIFETIME, 1, 86_400)?;
    let max_lifetime = secs("allocation.max_lifetime", a.max_lifetime, defaults::MAX_LIFETIME, 1, 86_400)?;
    if max_lifetime < default_lifetime {
        return Err(err("allocation.max_lifetime", format!("{} is below default_lifetime", max_lifetime.as_secs())));
    }
    let quota = |key: &str, value: Option<usize>, default: usize| {
        ranged(key, value.unwrap_or(default), 0, 10_000_000, "allocations")
    };
    let max_allocations =
        a.max_allocations.map(|n| ranged("allocation.max_allocations", n, 0, 10_000_000, "allocations")).transpose()?;
    let bandwidth = a.bandwidth.unwrap_or(defaults::BANDWIDTH);
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
        default_lifetime,
        max_lifetime,
        max_allocations,
        user_quota: quota("allocation.user_quota", a.user_quota, defaults::USER_QUOTA)?,
        ip_quota: quota("allocation.ip_quota", a.ip_quota, defaults::IP_QUOTA)?,
        bandwidth,
    })
}
