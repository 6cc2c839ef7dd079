//! What a fleet node reads from its Redis, which anyone who can write
//! there controls: control messages, node records, stored user secrets,
//! the answers to a fleet-wide question, Sentinel URLs. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    ip2p_relay::fuzzing::fleet_store(bytes);
});
