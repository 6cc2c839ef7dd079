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
