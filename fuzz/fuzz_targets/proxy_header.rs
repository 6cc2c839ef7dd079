//! The PROXY protocol header (v1 text, v2 binary) a load balancer sends
//! before a connection's bytes: whatever arrives, no panic, no length
//! past the bytes or the bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    ip2p_relay::fuzzing::proxy_header(bytes);
});
