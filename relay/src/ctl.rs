//! The operator's command line (`ip2p-relay sessions`, `kill`, `revoke`,
//! `credentials`): calls to the admin API of the node the configuration
//! (or `--admin`) names, with its token, as `eturnalctl` does for
//! eturnal. A plain HTTP/1.1 exchange with our own listener, which
//! answers one request per connection with a Content-Length.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::config::{RunArgs, Settings};

/// What an operator asks of a running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// List its sessions, of one `user` if given.
    Sessions {
        /// Only this user's.
        user: Option<String>,
    },
    /// End session `id`.
    Kill {
        /// The session's id.
        id: String,
    },
    /// Revoke `user`, for `seconds` (default: the node's longest credential lifetime).
    Revoke {
        /// The user.
        user: String,
        /// For how long.
        seconds: Option<u64>,
    },
    /// Mint a credential for `user`, valid `ttl` seconds.
    Credentials {
        /// The user.
        user: String,
        /// Seconds it is valid (default: the node's longest).
        ttl: Option<u64>,
    },
    /// The fleet's stored users: list them, or set or remove one.
    FleetUser(FleetChange),
    /// The fleet's stored REST secrets: list them, or add or remove one.
    FleetSecret(FleetChange),
}

/// What a fleet call changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetChange {
    /// Nothing: list.
    List,
    /// Sets a user (name, password), or adds a secret (the secret).
    Set(String, String),
    /// Removes a user (name) or a secret (fingerprint).
    Remove(String),
}

/// Carries out `call` against the node `args` names; what to print, or
/// why it failed.
///
/// # Errors
/// The admin listener cannot be found or reached, or refused the call
/// (its message).
pub fn run(args: &RunArgs, call: &Call) -> Result<String, String> {
    let (addr, token) = admin_of(args)?;
    let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let (method, path, body) = match call {
        Call::Sessions { user: None } => ("GET", "/api/v1/sessions".to_owned(), None),
        Call::Sessions { user: Some(u) } => ("GET", format!("/api/v1/sessions?user={}", encode(u)), None),
        Call::Kill { id } => ("DELETE", format!("/api/v1/sessions/{}", encode(id)), None),
        Call::Revoke { user, seconds } => {
            let until = seconds.map(|s| crate::unix_now().saturating_add(s));
            let body = serde_json::json!({ "user": user, "until": until });
            ("POST", "/api/v1/revocations".to_owned(), Some(body))
        }
        Call::Credentials { user, ttl } => {
            ("POST", "/api/v1/credentials".to_owned(), Some(serde_json::json!({ "user": user, "ttl": ttl })))
        }
        Call::FleetUser(change) | Call::FleetSecret(change) => {
            let kind = if matches!(call, Call::FleetUser(_)) { "users" } else { "secrets" };
            let path = format!("/api/v1/fleet/{kind}");
            match change {
                FleetChange::List => ("GET", path, None),
                FleetChange::Set(user, password) if kind == "users" => {
                    ("POST", path, Some(serde_json::json!({ "user": user, "password": password })))
                }
                FleetChange::Set(_, secret) => ("POST", path, Some(serde_json::json!({ "secret": secret }))),
                FleetChange::Remove(which) => ("DELETE", format!("{path}/{}", encode(which)), None),
            }
        }
    };
    let answer = exchange(addr, token.as_deref(), method, &path, body.as_ref())
        .map_err(|e| format!("the admin listener at {addr}: {e}"))?;
    Ok(match call {
        Call::Sessions { .. } => table(&answer),
        Call::Kill { id } => format!("session {id} ended\n"),
        Call::Revoke { user, .. } => format!(
            "{user} revoked until {} ({} sessions ended)\n",
            at(&answer, "until"),
            at(&answer, "sessions_ended").as_u64().map_or_else(|| "?".into(), |n| n.to_string())
        ),
        Call::Credentials { .. } | Call::FleetUser(_) | Call::FleetSecret(_) => format!("{answer:#}\n"),
    })
}

/// The admin listener's address and token: `--admin` and
/// `--admin-token-file`, else the configuration's (`--config`), else the
/// default address without a token. A wildcard address is asked on
/// loopback.
fn admin_of(args: &RunArgs) -> Result<(SocketAddr, Option<String>), String> {
    let (addr, token) = if args.config.is_some() {
        let settings = Settings::load(args).map_err(|e| e.to_string())?;
        (settings.admin.ok_or("the configuration turns the admin listener off (admin.listen)")?, settings.admin_token)
    } else {
        let addr = args.admin.as_deref().unwrap_or(crate::config::defaults::ADMIN);
        let addr: SocketAddr = addr.parse().map_err(|_| format!("--admin {addr}: not an ADDR:PORT"))?;
        let token = match &args.admin_token_file {
            Some(f) => Some(std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?.trim().to_owned()),
            None => None,
        };
        (addr, token)
    };
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    Ok((SocketAddr::new(ip, addr.port()), token))
}

/// One request, its JSON answer; a JSON error's message as the error.
fn exchange(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> io::Result<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let answer = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json: Value = serde_json::from_str(answer).unwrap_or_else(|_| Value::String(answer.trim().to_owned()));
    if (200..300).contains(&code) {
        return Ok(json);
    }
    let message = at(&json, "error").as_str().map_or_else(|| json.to_string(), str::to_owned);
    Err(io::Error::other(format!("{code}: {message}")))
}

/// Sessions as a table, one a line.
fn table(answer: &Value) -> String {
    let now = crate::unix_now();
    let mut out = format!(
        "{:<16}  {:<20}  {:<24}  {:<4}  {:>6}  {:>10}  {:>14}  {:>10}  {:>14}\n",
        "ID", "USER", "CLIENT", "VIA", "AGE", "TO PEERS", "BYTES", "FROM PEERS", "BYTES"
    );
    let sessions = at(answer, "sessions").as_array().map(Vec::as_slice).unwrap_or_default();
    for s in sessions {
        let age = now.saturating_sub(at(s, "started").as_u64().unwrap_or(now));
        let text = |k: &str| at(s, k).as_str().unwrap_or("?").to_owned();
        let n = |k: &str| at(s, k).as_u64().unwrap_or(0);
        out.push_str(&format!(
            "{:<16}  {:<20}  {:<24}  {:<4}  {:>5}s  {:>10}  {:>14}  {:>10}  {:>14}\n",
            text("id"),
            text("user"),
            text("client"),
            text("transport"),
            age,
            n("packets_to_peers"),
            n("bytes_to_peers"),
            n("packets_from_peers"),
            n("bytes_from_peers"),
        ));
    }
    out.push_str(&format!("{} sessions\n", sessions.len()));
    out
}

/// Field `key` of `v` (null if it has none).
fn at<'v>(v: &'v Value, key: &str) -> &'v Value {
    v.get(key).unwrap_or(&Value::Null)
}
