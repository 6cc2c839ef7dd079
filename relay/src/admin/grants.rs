//! Who may use the relay, by the admin API: revocations (a user's
//! credentials refused until a time, its sessions ended) and credentials
//! for applications (a TURN REST credential with the node's URLs, as an
//! RTCIceServer list).

use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::{Value, json};

use super::response::{error, json_ok};
use crate::node::NodeHandle;

/// The longest user name a request's USERNAME can carry (RFC 8489
/// §14.3: less than 509 bytes).
const MAX_USER: usize = 508;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    user: String,
    until: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mint {
    user: String,
    ttl: Option<u64>,
    /// In a fleet: the region whose nodes to name (default this node's).
    region: Option<String>,
}

/// A JSON body as `T`, or the 400 saying why not.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Vec<u8>> {
    serde_json::from_slice(body).map_err(|e| error(400, &format!("bad body: {e}"), &[]))
}

/// A user name as the API takes it: 1 to 508 bytes, no control character.
fn check_user(user: &str) -> Result<(), Vec<u8>> {
    if user.is_empty() || user.len() > MAX_USER || user.chars().any(char::is_control) {
        return Err(error(400, &format!("user: 1 to {MAX_USER} bytes, no control characters"), &[]));
    }
    Ok(())
}

/// `POST /api/v1/revocations`: `{"user": NAME, "until": UNIX}` (`until`
/// defaults to the longest credential lifetime from now).
pub(super) fn revoke(node: &NodeHandle, body: &[u8]) -> Vec<u8> {
    let now = crate::unix_now();
    let revoke = match parse::<Revoke>(body) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    if let Err(answer) = check_user(&revoke.user) {
        return answer;
    }
    let until = revoke.until.unwrap_or_else(|| now.saturating_add(node.credentials().max_rest_lifetime));
    if until <= now {
        return error(400, "until: a unix time in the future", &[]);
    }
    match node.revoke(&revoke.user, until) {
        Ok(ended) => {
            tracing::info!(user = %revoke.user, until, ended = ?ended, "user revoked");
            // In a fleet, on every node too (this one's answer counts
            // the sessions it ended itself).
            let fleet = node.fleet().map(|f| f.revoke(&revoke.user, until));
            if let Some(Err(e)) = &fleet {
                tracing::warn!(user = %revoke.user, error = %e, "revoked on this node only");
            }
            let in_fleet = fleet.map(|r| r.is_ok());
            json_ok(&json!({ "user": revoke.user, "until": until, "sessions_ended": ended, "fleet": in_fleet }))
        }
        Err(_) => error(507, &format!("the node holds {} revocations already", ip2p_turn::MAX_REVOCATIONS), &[]),
    }
}

/// `GET /api/v1/revocations`.
pub(super) fn revocations(node: &NodeHandle) -> Vec<u8> {
    let live = node.revocations().live(crate::unix_now());
    let list: Vec<Value> = live.into_iter().map(|(user, until)| json!({ "user": user, "until": until })).collect();
    json_ok(&json!({ "revocations": list }))
}

/// A user name from a path segment (percent-encoded UTF-8).
pub(super) fn decode_user(encoded: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(encoded).decode_utf8().ok()
}

/// `body` read as each POST reads it (for the fuzz target).
pub(super) fn read_bodies(body: &[u8]) {
    if let Ok(r) = parse::<Revoke>(body) {
        let _ = check_user(&r.user);
    }
    if let Ok(m) = parse::<Mint>(body) {
        let _ = check_user(&m.user);
    }
}

/// `DELETE /api/v1/revocations/{user}` (the name percent-encoded).
pub(super) fn lift(node: &NodeHandle, encoded: &str) -> Vec<u8> {
    let Some(user) = decode_user(encoded) else {
        return error(400, "the user name is not UTF-8", &[]);
    };
    let in_fleet = node.fleet().map(|f| f.lift(&user));
    if let Some(Err(e)) = &in_fleet {
        tracing::warn!(user = %user, error = %e, "revocation lifted on this node only");
    }
    if node.revocations().remove(&user) || in_fleet.is_some_and(|r| r.is_ok()) {
        tracing::info!(user = %user, "revocation lifted");
        json_ok(&json!({ "user": user }))
    } else {
        let shown: String = user.chars().take(64).collect();
        error(404, &format!("no revocation of {shown:?}"), &[])
    }
}

/// `POST /api/v1/credentials`: `{"user": NAME, "ttl": SECONDS}` → an
/// RTCIceServer list with a TURN REST credential of `user` (signed with
/// the first secret) valid for `ttl` (default and most: the node's
/// longest credential lifetime; longer is cut to it).
pub(super) fn mint(node: &NodeHandle, body: &[u8]) -> Vec<u8> {
    let mint = match parse::<Mint>(body) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    if let Err(answer) = check_user(&mint.user) {
        return answer;
    }
    let credentials = node.credentials();
    let Some(secret) = credentials.rest_secrets.first() else {
        return error(409, "no TURN REST secret is configured (auth.secrets): nothing to sign with", &[]);
    };
    // At most what the node accepts (auth.max_credential_lifetime).
    let most = credentials.max_rest_lifetime;
    let ttl = mint.ttl.unwrap_or(most).min(most);
    if ttl == 0 {
        return error(400, "ttl: at least 1 second", &[]);
    }
    if let Some(region) = &mint.region
        && (region.is_empty()
            || region.len() > 64
            || !region.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        return error(400, "region: 1 to 64 letters, digits, '.', '-' or '_'", &[]);
    }
    let username = format!("{}:{}", crate::unix_now().saturating_add(ttl), mint.user);
    let credential = ip2p_turn::auth::rest_password(secret, &username);
    let servers: Vec<Value> = servers(node, mint.region.as_deref())
        .into_iter()
        .map(|urls| json!({ "urls": urls, "username": username, "credential": credential }))
        .collect();
    json_ok(&json!({ "iceServers": servers }))
}

/// The URLs of the nodes to name, best first: in a fleet whose store
/// answers, the best two of `region` (default this node's region); else
/// this node's.
fn servers(node: &NodeHandle, region: Option<&str>) -> Vec<Vec<String>> {
    if let Some(fleet) = node.fleet().filter(|f| f.store_up()) {
        let view = fleet.view();
        let settings = fleet.settings();
        let best = crate::fleet::best_nodes(&view.nodes, region.unwrap_or(&settings.region), settings.redirect_above);
        if !best.is_empty() {
            return best.into_iter().map(|n| n.urls.clone()).collect();
        }
    }
    vec![urls(node)]
}

/// The node's URLs: `stun:` and `turn:` over UDP and TCP on each listen
/// address, `turns:` on each TLS one; an address clients cannot use (a
/// wildcard, or one behind 1:1 NAT) as the relay address that stands for
/// it says.
fn urls(node: &NodeHandle) -> Vec<String> {
    let mut urls = Vec::new();
    for &a in node.listen() {
        let host = host(node.advertised(a.ip()), a.port());
        urls.extend([
            format!("stun:{host}"),
            format!("turn:{host}?transport=udp"),
            format!("turn:{host}?transport=tcp"),
        ]);
    }
    for &a in node.tls_listen() {
        urls.push(format!("turns:{}?transport=tcp", host(node.advertised(a.ip()), a.port())));
    }
    urls
}

fn host(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}
