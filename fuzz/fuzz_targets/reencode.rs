//! Parse then re-encode reproduces the message (the invariant the property
//! tests check too, from the same file).
#![no_main]

#[path = "../../wire/tests/support/reencode.rs"]
mod reencode;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| reencode::check(data));
