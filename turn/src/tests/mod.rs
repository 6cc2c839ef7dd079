//! Deterministic tests of the TURN core, on one harness (`harness.rs`):
//! fake sockets, a virtual clock, and a minimal client that does the
//! long-term credential dance.

mod admission;
mod credentials;
mod events;
mod harness;
mod moved;
mod rejudge;
mod relaying;
mod requests;
mod security;
mod sessions;
mod short_circuit;
mod steering;
mod tcp_allocations;
