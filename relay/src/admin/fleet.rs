//! `GET /api/v1/fleet`: the fleet's live nodes as this node last read
//! them from the registry (at most a beat old), with whether the store
//! answers.

use serde_json::json;

use super::response::{error, json_ok};
use crate::node::NodeHandle;

/// The live nodes, or 404 when the node is in no fleet.
pub(super) fn nodes(node: &NodeHandle) -> Vec<u8> {
    let Some(fleet) = node.fleet() else {
        return error(404, "this node is in no fleet (fleet.redis is not set)", &[]);
    };
    let view = fleet.view();
    let settings = fleet.settings();
    json_ok(&json!({
        "fleet": settings.name,
        "node": settings.node,
        "store_up": fleet.store_up(),
        "read_ms_ago": view.at.map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
        "nodes": view.nodes,
    }))
}

/// `GET /api/v1/sessions?scope=fleet`: every node's sessions (of `user`,
/// from `client`, over `transport`), each with its node's id, gathered
/// through the store within [`crate::fleet::GATHER`]; `nodes` names the
/// nodes that answered.
pub(super) fn sessions(
    node: &NodeHandle,
    user: Option<String>,
    client: Option<std::net::IpAddr>,
    transport: Option<&str>,
) -> Vec<u8> {
    let Some(fleet) = node.fleet() else {
        return error(400, "scope=fleet: this node is in no fleet (fleet.redis is not set)", &[]);
    };
    match fleet.sessions(user, client) {
        Ok((mut sessions, nodes)) => {
            sessions.retain(|s| transport.is_none_or(|t| s["transport"] == t));
            sessions.sort_by_key(|s| (s["started"].as_u64(), s["id"].as_str().map(str::to_owned)));
            json_ok(&json!({ "sessions": sessions, "nodes": nodes }))
        }
        Err(e) => error(503, &e, &[("Retry-After", "1")]),
    }
}

/// `DELETE /api/v1/sessions/{id}` of another node's session: ended
/// wherever it lives; `None` when no node had it.
pub(super) fn kill(node: &NodeHandle, id: &str) -> Option<Vec<u8>> {
    match node.fleet()?.kill(id) {
        Ok(Some(session)) => Some(json_ok(&session)),
        Ok(None) => None,
        Err(e) => Some(error(503, &e, &[("Retry-After", "1")])),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredUser {
    user: String,
    password: Option<String>,
    /// MD5(user:realm:password) in hex, as `turnadmin -k` prints it.
    key: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSecret {
    secret: String,
}

/// The fleet's stored users and REST secrets (docs/fleet.md): `GET`,
/// `POST` and `DELETE` on `/api/v1/fleet/users` and `/secrets`.
pub(super) fn auth(node: &NodeHandle, method: &str, path: &[&str], body: &[u8]) -> Vec<u8> {
    let Some(fleet) = node.fleet() else {
        return error(404, "this node is in no fleet (fleet.redis is not set)", &[]);
    };
    let answer = match (method, path) {
        ("GET" | "HEAD", ["users"]) => fleet.auth_listed().map(|(users, _)| json!({ "users": users })),
        ("GET" | "HEAD", ["secrets"]) => {
            fleet.auth_listed().map(|(_, secrets)| json!({ "secrets": secrets.iter().map(|f| json!({ "fingerprint": f })).collect::<Vec<_>>() }))
        }
        ("POST", ["users"]) => return set_user(node, fleet, body),
        ("POST", ["secrets"]) => match serde_json::from_slice::<StoredSecret>(body) {
            Ok(s) if s.secret.len() >= crate::config::defaults::MIN_SECRET && !s.secret.chars().any(char::is_control) => {
                fleet.add_secret(&s.secret).map(|f| json!({ "fingerprint": f }))
            }
            Ok(_) => return error(400, "secret: at least 16 bytes (`openssl rand -hex 32`), no control characters", &[]),
            Err(e) => return error(400, &format!("bad body: {e}"), &[]),
        },
        ("DELETE", ["users", user]) => {
            let Some(user) = super::grants::decode_user(user) else { return error(400, "not UTF-8", &[]) };
            match fleet.remove_user(&user) {
                Ok(false) => return error(404, "no such user in the fleet's store", &[]),
                other => other.map(|_| json!({ "user": user })),
            }
        }
        ("DELETE", ["secrets", fingerprint]) => match fleet.remove_secret(fingerprint) {
            Ok(false) => return error(404, "no stored secret has that fingerprint", &[]),
            other => other.map(|_| json!({ "fingerprint": fingerprint })),
        },
        _ => return error(405, "fleet users and secrets: GET, POST, or DELETE one", &[("Allow", "GET, HEAD, POST, DELETE")]),
    };
    match answer {
        Ok(v) => json_ok(&v),
        Err(e) => error(503, &e, &[("Retry-After", "1")]),
    }
}

/// `POST /api/v1/fleet/users`: `{"user", "password"}` (stored as its MD5
/// key in this node's realm, never as itself) or `{"user", "key"}`.
fn set_user(node: &NodeHandle, fleet: &crate::fleet::FleetState, body: &[u8]) -> Vec<u8> {
    let stored = match serde_json::from_slice::<StoredUser>(body) {
        Ok(s) => s,
        Err(e) => return error(400, &format!("bad body: {e}"), &[]),
    };
    if stored.user.is_empty() || stored.user.len() > 508 || stored.user.chars().any(char::is_control) {
        return error(400, "user: 1 to 508 bytes, no control characters", &[]);
    }
    let realm = node.credentials().realm.clone();
    let key = match (&stored.password, &stored.key) {
        (Some(p), None) if !p.is_empty() => {
            let key = ip2p_wire::credentials::LongTermKey::md5(&stored.user, &realm, p);
            key.as_bytes().try_into().ok()
        }
        (None, Some(hex)) => {
            let mut key = [0u8; 16];
            hex::decode_to_slice(hex, &mut key).ok().map(|()| key)
        }
        _ => None,
    };
    let Some(key) = key else {
        return error(400, "either password (not empty) or key (32 hex digits), not both", &[]);
    };
    match fleet.set_user(&stored.user, key) {
        Ok(()) => json_ok(&json!({ "user": stored.user, "realm": realm })),
        Err(e) => error(503, &e, &[("Retry-After", "1")]),
    }
}
