//! Checks of single values, each naming the key at fault: ranges, secrets,
//! address lists, and how a flag, the file and a default combine.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::settings::{ConfigError, err};

/// Flags win over the file; the file over the default.
pub(super) fn pick<T: Clone>(flag: &[T], file: Option<Vec<T>>, default: impl FnOnce() -> Vec<T>) -> Vec<T> {
    if !flag.is_empty() {
        return flag.to_vec();
    }
    match file {
        Some(v) if !v.is_empty() => v,
        _ => default(),
    }
}

/// `value` if it lies in `lo..=hi`, else an error naming `key`.
pub(super) fn ranged<T: PartialOrd + fmt::Display + Copy>(
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

/// Seconds in `lo..=hi` (`value`, else `default`) as a duration.
pub(super) fn secs(
    key: &str,
    value: Option<u64>,
    default: Duration,
    lo: u64,
    hi: u64,
) -> Result<Duration, ConfigError> {
    ranged(key, value.unwrap_or(default.as_secs()), lo, hi, "seconds").map(Duration::from_secs)
}

/// The non-blank lines of a secrets file, `#` comments aside.
pub(super) fn read_lines(key: &str, path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// Refuses a secret that is too short or a placeholder from our examples.
pub(super) fn check_secret(key: &str, secret: &str, min: usize) -> Result<(), ConfigError> {
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
pub(super) fn is_placeholder(secret: &str) -> bool {
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
pub(super) fn weak_key(key: &[u8]) -> bool {
    let step = |w: &[u8]| match w {
        [a, b] => b.wrapping_sub(*a),
        _ => 0,
    };
    let mut steps = key.windows(2).map(step);
    let constant = steps.next().is_none_or(|first| steps.all(|s| s == first));
    let (a, b) = key.split_at(key.len() / 2);
    constant || (key.len().is_multiple_of(2) && a == b)
}

/// `LOW-HIGH` with `1 <= LOW <= HIGH`.
pub(super) fn parse_ports(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi): (u16, u16) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo >= 1 && lo <= hi).then_some((lo, hi))
}

/// Addresses and CIDR ranges.
pub(super) fn parse_nets(key: &str, specs: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    specs
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| err(key, format!("{s:?} is not an address or CIDR range")))
        })
        .collect()
}
