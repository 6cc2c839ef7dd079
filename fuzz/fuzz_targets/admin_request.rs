//! The admin listener's requests, as bytes from anyone who reaches it:
//! parsed and judged (token, Host, loopback or not, the probes' budget)
//! without a panic, every answer with a status line, and no page for a
//! request that must be refused: without a token off loopback nothing but
//! the probes and /metrics, and nothing private without the token.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    token: bool,
    exposed: bool,
    probe_only: bool,
    request: &'a [u8],
}

const TOKEN: &str = "fuzz-admin-token-0123456789";

fuzz_target!(|input: Input<'_>| {
    let token = input.token.then_some(TOKEN);
    let Some(status) = ip2p_relay::fuzzing::admin_request(input.request, token, input.exposed, input.probe_only) else {
        return;
    };
    if status != 0 {
        return;
    }
    // A page: which one it is, as the gate saw it.
    let text = String::from_utf8_lossy(input.request);
    // HTTP's separator is the space alone (Rust's whitespace has more).
    let path = text.split(' ').nth(1).unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let probe = matches!(path, "/healthz" | "/readyz");
    assert!(!input.probe_only || probe, "a page past the probes' budget: {path:?}");
    if !probe && !input.token && input.exposed {
        assert_eq!(path, "/metrics", "off loopback without a token");
    }
    let private = matches!(path, "/metrics" | "/status" | "/selftest")
        || path.starts_with("/selftest/")
        || path.starts_with("/api/v1/");
    if input.token && private {
        assert!(presents_token(&text), "a private page without the token: {text:?}");
    }
});

/// Whether `text` holds the token, as itself or inside a base64 word (HTTP
/// Basic's user:password).
fn presents_token(text: &str) -> bool {
    use base64::Engine as _;
    text.contains(TOKEN)
        || text.split(|c: char| c.is_whitespace()).any(|word| {
            let decoded = base64::engine::general_purpose::STANDARD.decode(word).unwrap_or_default();
            String::from_utf8_lossy(&decoded).contains(TOKEN)
        })
}
