//! Entry points for the fuzz targets (`fuzz/`): what the control plane
//! reads from outside the process, each one call that must never panic,
//! whatever the bytes. Not an API. (A broken invariant here panics: that
//! is how a fuzzer reports it.)
#![allow(clippy::expect_used)]

use ip2p_turn::Moved;

use crate::admin::routes::{Gate, Judged};
use crate::handover::snapshot::Snapshot;

/// An admin request as the listener judges it before any page is made: the
/// status code of its answer, `Some(0)` for a page the node would serve,
/// `None` while the request is not whole.
#[must_use]
pub fn admin_request(request: &[u8], token: Option<&str>, exposed: bool, probe_only: bool) -> Option<u16> {
    let gate = Gate { token: token.map(str::to_owned), exposed };
    Some(match gate.judge(request, probe_only)? {
        Judged::Answer(answer) => {
            let status = answer.get(9..12).and_then(|s| std::str::from_utf8(s).ok()).and_then(|s| s.parse().ok());
            status.expect("every answer has a status line")
        }
        Judged::Page { method, path, query, body } => {
            assert!(!path.contains('?'), "the query is not part of the path");
            assert!(body.is_empty() || method == "POST", "a body for a {method}");
            assert!(body.len() <= crate::admin::routes::MAX_BODY);
            // What the API reads of it: the filters, a body as each POST
            // reads it, a path segment as a user name.
            crate::admin::api_inputs(query, body, path);
            0
        }
    })
}

/// A handover snapshot as a new process reads it (written in boot
/// `fuzz`): the allocations it names, with each connection's state and the
/// counterpart's messages decoded too; `None` when it is refused.
#[must_use]
pub fn handover_snapshot(bytes: &[u8]) -> Option<Vec<Moved<usize>>> {
    let _ = crate::handover::exchange::parse_message(bytes);
    let snapshot = Snapshot::parse(bytes, "fuzz").ok()?;
    let mut allocations = Vec::new();
    for w in snapshot.workers {
        for c in &w.connections {
            let _ = c.state();
        }
        allocations.extend(w.allocations);
    }
    Some(allocations)
}

/// What a fleet node reads from its store (control messages, node
/// records, stored secrets, answers, Sentinel URLs), from `bytes` as text.
pub fn fleet_store(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        crate::fleet::read_from_store(text);
    }
}

/// A connection's first bytes read as a PROXY protocol header (v1 or v2):
/// never a panic, and a header never longer than the bytes or the bound.
/// Then the same bytes in pieces (the first byte says how long each is)
/// through a balancer's connection's opening: what it holds stays under
/// the bound, and what it hands the stream is the rest of the bytes.
pub fn proxy_header(bytes: &[u8]) {
    use crate::datapath::opening::{Opening, Step};
    use crate::datapath::proxy::{MAX_HEADER, Parsed, parse};
    if let Parsed::Header(_, len) = parse(bytes) {
        assert!(len <= bytes.len() && len <= MAX_HEADER, "{len} of {}", bytes.len());
    }
    let Some((&piece, bytes)) = bytes.split_first() else { return };
    let mut opening = Opening::new(true);
    for (i, chunk) in bytes.chunks(usize::from(piece).max(1)).enumerate() {
        match opening.step(chunk) {
            Step::Wait => assert!(matches!(&opening, Opening::Header(held) if held.len() < MAX_HEADER)),
            Step::Refuse(_) => return,
            Step::Open { skip, rest, .. } => {
                let seen = i * usize::from(piece).max(1) + chunk.len();
                let stream = rest.map_or(chunk.len() - skip.min(chunk.len()), |r| r.len());
                assert!(skip <= chunk.len() && stream <= seen, "{skip} {stream} {seen}");
                return;
            }
        }
    }
}
