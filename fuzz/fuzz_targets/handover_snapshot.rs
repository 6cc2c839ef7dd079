//! What a new process reads in a handover, from a counterpart it trusts
//! by its credentials but whose bytes it checks all the same: the
//! snapshot (and the conversation's messages) parsed without a panic, and
//! each allocation it names adopted by a core, within that core's limits,
//! or refused: never a lifetime past the core's maximum, never a quota or
//! socket left behind once every lifetime has passed.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ip2p_turn::testing::{FakeSockets, config};
use ip2p_turn::{Held, NodeState, Quotas, Server};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some(allocations) = ip2p_relay::fuzzing::handover_snapshot(bytes) else { return };
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let shared = Arc::new(NodeState::new(Quotas::default()));
    let mut server = Server::new(Arc::new(config()), shared.clone(), now, 1_800_000_000, 1);
    let mut sockets = FakeSockets::default();
    for moved in allocations.into_iter().take(64) {
        let Ok(held) = moved.try_map(|_, bound| Ok::<_, ()>(Held { addr: bound, socket: None })) else { continue };
        sockets.held.extend(held.relays.iter().flatten().map(|r| r.bound));
        let _ = server.adopt(now, held, &mut sockets);
    }
    // The testing config's maximum lifetime is an hour.
    server.handle_timeout(now + Duration::from_secs(3600), &mut sockets);
    assert_eq!(server.allocations(), 0, "an adopted allocation outlived the maximum lifetime");
    assert_eq!(shared.quotas.total(), 0, "quota left");
    assert!(sockets.open.is_empty(), "a relay socket left open");
});
