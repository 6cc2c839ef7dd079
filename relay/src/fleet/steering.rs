//! Load-aware steering, from the registry's view: which nodes the
//! credentials endpoint names, and where an Allocate goes when this node
//! is full or draining. The least loaded node of the region that is not
//! draining and below the share of its capacity the fleet redirects
//! above; never this node for an Allocate it sends away.

use ip2p_turn::Steer;

use super::record::NodeRecord;
use crate::config::Fleet;

/// The nodes to hand a client, best first (at most two): those of
/// `region` with room, by load; else the least loaded of the region not
/// draining; else of any region. Empty when the view holds none.
#[must_use]
pub fn best_nodes<'a>(nodes: &'a [NodeRecord], region: &str, share: f64) -> Vec<&'a NodeRecord> {
    let in_region = |n: &&NodeRecord| n.region == region;
    let with_room: Vec<&NodeRecord> = nodes.iter().filter(in_region).filter(|n| n.has_room(share)).collect();
    let open: Vec<&NodeRecord> = nodes.iter().filter(in_region).filter(|n| !n.draining).collect();
    let anywhere: Vec<&NodeRecord> = nodes.iter().filter(|n| !n.draining).collect();
    let mut best = [with_room, open, anywhere].into_iter().find(|c| !c.is_empty()).unwrap_or_default();
    best.sort_by(|a, b| a.load().total_cmp(&b.load()).then_with(|| a.id.cmp(&b.id)));
    best.truncate(2);
    best
}

/// What the workers do with new allocations, from the live `nodes`:
/// above `fleet.redirect_above` of `own`'s capacity (or draining) they go
/// to the least loaded other node of the region with room that has an
/// address of the client's family and transport.
#[must_use]
pub(super) fn steer(nodes: &[NodeRecord], fleet: &Fleet, own: &NodeRecord, tls_from: u16) -> Steer {
    let mut others: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| n.id != fleet.node && n.region == fleet.region && n.has_room(fleet.redirect_above))
        .collect();
    others.sort_by(|a, b| a.load().total_cmp(&b.load()).then_with(|| a.id.cmp(&b.id)));
    let pick = |tls: bool, v6: bool| {
        others.iter().find_map(|n| {
            let addresses = if tls { &n.tls_addresses } else { &n.addresses };
            addresses.iter().find(|a| a.is_ipv6() == v6).copied()
        })
    };
    // The allocation count at the threshold, at least 1: a record's
    // capacity is at most 10^8 and the share at most 1, so it fits.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let above = (own.capacity as f64 * fleet.redirect_above).ceil().max(1.0) as usize;
    Steer {
        plain: [pick(false, false), pick(false, true)],
        tls: [pick(true, false), pick(true, true)],
        tls_from,
        above,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, allocations: u64, draining: bool) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            region: region.into(),
            version: "0".into(),
            urls: vec![],
            addresses: vec![
                format!("192.0.2.{}:3478", id.len()).parse().unwrap(),
                "[2001:db8::1]:3478".parse().unwrap(),
            ],
            tls_addresses: vec![format!("192.0.2.{}:443", id.len()).parse().unwrap()],
            allocations,
            capacity: 100,
            packets_per_second: 0,
            bytes_per_second: 0,
            draining,
            started: 0,
        }
    }

    fn fleet(node: &str) -> Fleet {
        Fleet {
            redis: String::new(),
            name: "f".into(),
            node: node.into(),
            region: "eu".into(),
            advertise: None,
            redirect_above: 0.9,
            when_store_down: crate::config::StoreDown::Local,
            usage_stream: 0,
            ca: None,
        }
    }

    fn ids(nodes: &[&NodeRecord]) -> Vec<String> {
        nodes.iter().map(|n| n.id.clone()).collect()
    }

    #[test]
    fn credentials_name_the_two_least_loaded_of_the_region_with_room() {
        let nodes = [
            node("a", "eu", 50, false),
            node("bb", "eu", 10, false),
            node("ccc", "eu", 95, false),
            node("dddd", "eu", 0, true),
            node("e", "us", 0, false),
        ];
        assert_eq!(ids(&best_nodes(&nodes, "eu", 0.9)), ["bb", "a"]);
        assert_eq!(ids(&best_nodes(&nodes, "us", 0.9)), ["e"]);
        // All full: the least loaded that is open; no region: any.
        let full = [node("a", "eu", 95, false), node("bb", "eu", 92, false)];
        assert_eq!(ids(&best_nodes(&full, "eu", 0.9)), ["bb", "a"]);
        assert_eq!(ids(&best_nodes(&nodes, "mars", 0.9)), ["e", "bb"]);
        assert!(best_nodes(&[], "eu", 0.9).is_empty());
    }

    #[test]
    fn an_allocate_goes_to_the_least_loaded_other_node_with_room() {
        let nodes = [node("a", "eu", 10, false), node("bb", "eu", 50, false), node("ccc", "eu", 20, false)];
        let s = steer(&nodes, &fleet("a"), &nodes[0], 1);
        assert_eq!(s.plain, [Some("192.0.2.3:3478".parse().unwrap()), Some("[2001:db8::1]:3478".parse().unwrap())]);
        assert_eq!((s.tls, s.tls_from, s.above), ([Some("192.0.2.3:443".parse().unwrap()), None], 1, 90));
        // Never itself, never a full, draining or faraway node.
        let nodes = [
            node("a", "eu", 10, false),
            node("bb", "eu", 95, false),
            node("ccc", "eu", 0, true),
            node("e", "us", 0, false),
        ];
        assert_eq!(steer(&nodes, &fleet("a"), &nodes[0], 1).plain, [None, None]);
    }
}
