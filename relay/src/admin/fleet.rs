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
