//! `[fleet]`: the Redis the node joins a fleet through, and its name,
//! node id, region and advertised host there. Without `fleet.redis` the
//! node runs alone and nothing else of the section may be set.

use super::check::{check_secret, ranged, read_lines};
use super::cli::RunArgs;
use super::defaults;
use super::file::FleetSection;
use super::settings::{ConfigError, Fleet, err};

/// The fleet the node joins, when `fleet.redis` (or `--fleet-redis`) is
/// set.
pub(super) fn fleet(args: &RunArgs, file: FleetSection) -> Result<Option<Fleet>, ConfigError> {
    let Some(redis) = args.fleet_redis.clone().or(file.redis) else {
        let set = [
            ("fleet.name", file.name.is_some()),
            ("fleet.node", file.node.is_some() || args.fleet_node.is_some()),
            ("fleet.region", file.region.is_some() || args.fleet_region.is_some()),
            ("fleet.advertise", file.advertise.is_some()),
            ("fleet.redirect_above", file.redirect_above.is_some()),
            ("fleet.when_store_down", file.when_store_down.is_some()),
            ("fleet.usage_stream", file.usage_stream.is_some()),
            ("fleet.password_file", file.password_file.is_some()),
            ("fleet.ca_file", file.ca_file.is_some()),
        ];
        return match set.into_iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(err(key, "needs fleet.redis (--fleet-redis URL): without it the node runs alone")),
            None => Ok(None),
        };
    };
    let redis = match &file.password_file {
        Some(path) => with_password(&redis, path)?,
        None => redis,
    };
    check_url(&redis)?;
    let ca = file.ca_file.as_deref().map(|path| ca(&redis, path)).transpose()?;
    let node = match args.fleet_node.clone().or(file.node) {
        Some(node) => node,
        None => hostname()?,
    };
    let redirect_above = file.redirect_above.unwrap_or(defaults::FLEET_REDIRECT_ABOVE);
    if !(redirect_above > 0.0 && redirect_above <= 1.0) {
        return Err(err(
            "fleet.redirect_above",
            format!("{redirect_above}: a share of the capacity, above 0 and at most 1"),
        ));
    }
    let fleet = Fleet {
        redis,
        name: name("fleet.name", file.name.unwrap_or_else(|| defaults::FLEET_NAME.into()))?,
        node: name("fleet.node", node)?,
        region: name(
            "fleet.region",
            args.fleet_region.clone().or(file.region).unwrap_or_else(|| defaults::FLEET_REGION.into()),
        )?,
        advertise: file.advertise.map(advertise).transpose()?,
        redirect_above,
        when_store_down: file.when_store_down.unwrap_or_default(),
        usage_stream: ranged(
            "fleet.usage_stream",
            file.usage_stream.unwrap_or(defaults::FLEET_USAGE_STREAM),
            0,
            100_000_000,
            "records",
        )?,
        ca,
    };
    Ok(Some(fleet))
}

/// A URL the Redis client reads (`redis://`, `rediss://` for TLS,
/// `redis+unix://`), without saying its password in the error.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if scheme == Some("redis+sentinel") {
        return match sentinel_parts(url) {
            Some(_) => Ok(()),
            None => Err(err("fleet.redis", "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER")),
        };
    }
    if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
        return Err(err(
            "fleet.redis",
            "a redis://HOST:PORT URL (rediss:// for TLS, redis+unix:///PATH, redis+sentinel://HOST:PORT,.../MASTER)",
        ));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| err("fleet.redis", format!("not a URL the Redis client reads: {:?}", e.kind())))
}

/// `url` with the password in `path` (its first line), which must be a
/// real secret: a Secret's file instead of a password in the URL.
fn with_password(url: &str, path: &std::path::Path) -> Result<String, ConfigError> {
    let key = "fleet.password_file";
    let password = read_lines(key, path)?.into_iter().next().ok_or_else(|| err(key, "the file is empty"))?;
    check_secret(key, &password, defaults::MIN_SECRET)?;
    let Some((scheme, rest)) = url.split_once("://").filter(|(_, rest)| !rest.contains('@')) else {
        return Err(err(key, "fleet.redis names a password already"));
    };
    let encoded = percent_encoding::utf8_percent_encode(&password, percent_encoding::NON_ALPHANUMERIC);
    Ok(format!("{scheme}://:{encoded}@{rest}"))
}

/// The CA certificates in `path` (PEM), for a `rediss://` store.
fn ca(url: &str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let key = "fleet.ca_file";
    if !url.starts_with("rediss://") {
        return Err(err(key, "only for a rediss:// store"));
    }
    let pem = std::fs::read(path).map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(err(key, format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(pem)
}

/// A fleet, node or region name: 1 to 64 letters, digits, `.`, `-`, `_`
/// (it is part of Redis keys and of the records others read).
fn name(key: &str, value: String) -> Result<String, ConfigError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if value.is_empty() || value.len() > 64 || !value.chars().all(ok) {
        return Err(err(key, format!("{value:?}: 1 to 64 letters, digits, '.', '-' or '_'")));
    }
    Ok(value)
}

/// The host name or address clients are to use for this node.
fn advertise(value: String) -> Result<String, ConfigError> {
    let host = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-');
    let ok = match value.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_unspecified(),
        Err(_) => !value.is_empty() && value.len() <= 253 && value.chars().all(host) && !value.starts_with(['-', '.']),
    };
    if !ok {
        return Err(err("fleet.advertise", format!("{value:?}: a host name or an address clients can use")));
    }
    Ok(value)
}

/// The host's name, the default node id.
fn hostname() -> Result<String, ConfigError> {
    let name = nix::unistd::gethostname().map_err(|e| err("fleet.node", format!("no host name to default to: {e}")))?;
    name.into_string().map_err(|_| err("fleet.node", "the host name is not UTF-8: set fleet.node"))
}

/// The store's URL without its password, for logs and `check-config`.
#[must_use]
pub(super) fn shown_url(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, rest))) => format!("{scheme}://{rest}"),
        _ => url.to_owned(),
    }
}

/// A Sentinel URL's (`redis+sentinel://[:PASSWORD@]HOST:PORT[,...]/MASTER`)
/// password (percent-decoded), Sentinels and master.
#[must_use]
pub fn sentinel_parts(url: &str) -> Option<(Option<String>, Vec<String>, String)> {
    let rest = url.strip_prefix("redis+sentinel://")?;
    let (password, rest) = match rest.rsplit_once('@') {
        Some((user_info, rest)) => {
            let password = user_info.split_once(':').map_or(user_info, |(_, p)| p);
            (Some(percent_encoding::percent_decode_str(password).decode_utf8().ok()?.into_owned()), rest)
        }
        None => (None, rest),
    };
    let (hosts, master) = rest.split_once('/')?;
    let sentinels: Vec<String> = hosts.split(',').filter(|h| !h.is_empty()).map(str::to_owned).collect();
    let master = master.trim_end_matches('/');
    (!sentinels.is_empty() && !master.is_empty() && !master.contains('/'))
        .then(|| (password, sentinels, master.to_owned()))
}
