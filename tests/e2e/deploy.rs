//! The deployment files agree with the relay: the Kubernetes manifest's
//! config refuses its placeholder secrets and validates, with real ones,
//! with the flags its DaemonSet passes; the admin API stays on loopback
//! where its probes reach it; pods get longer to stop than the relay takes
//! to drain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::process::Command;

use ip2p_tests::{TempDir, relay_bin};

const MANIFEST: &str = include_str!("../../deploy/kubernetes/ip2p-relay.yaml");

/// The value of `key: value` on the first line that has it.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find_map(|l| l.trim().strip_prefix(key)).unwrap_or_else(|| panic!("no {key}")).trim()
}

/// The indented block after `key: |` (a file of the Secret).
fn block<'a>(key: &str) -> Vec<&'a str> {
    MANIFEST
        .lines()
        .skip_while(|l| !l.contains(&format!("{key}: |")))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| &l[4..])
        .collect()
}

#[test]
fn the_daemonset_config_refuses_placeholders_and_validates_with_its_flags() {
    let config = block("relay.toml");
    assert!(config.len() > 5, "no relay.toml in the Secret");
    // The Secret's files where the pod mounts them: a directory of ours.
    let dir = TempDir::new("k8s");
    let text = config.join("\n").replace("/etc/ip2p/", &format!("{}/", dir.path().display()));
    let path = dir.file("relay.toml", &text);
    let check = || {
        // What the DaemonSet passes, with a documentation address for the node.
        assert!(MANIFEST.contains("- --relay-ip=$(HOST_IP)"));
        Command::new(relay_bin())
            .args(["--relay-ip", "192.0.2.7", "check-config", path.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let secrets = ["rest-secret", "nonce-secret", "admin-token"];
    for name in secrets {
        dir.file(name, value(MANIFEST, &format!("{name}:")).trim_matches('"'));
    }
    let out = check();
    assert!(!out.status.success(), "the manifest's placeholders must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("placeholder"), "{}", String::from_utf8_lossy(&out.stderr));
    // Replaced as the manifest says (`openssl rand -hex 32`), it validates.
    for (name, real) in secrets.iter().zip(["5f2a9c", "8d3b71", "c41e06"]) {
        let hex: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + real.len() * 11 + real.as_bytes()[0] as usize) % 251))
            .collect();
        dir.file(name, &hex);
    }
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Draining ends before Kubernetes kills the pod.
    let drain: u64 = config.iter().find_map(|l| l.trim().strip_prefix("timeout = ")).unwrap().parse().unwrap();
    let grace: u64 = value(MANIFEST, "terminationGracePeriodSeconds:").parse().unwrap();
    assert!(drain < grace, "drain.timeout {drain} s must end before the {grace} s grace period");
}

#[test]
fn the_admin_api_stays_off_every_address_a_client_can_name() {
    assert_eq!(value(MANIFEST, "hostNetwork:"), "true");
    // With host networking every node address is one a TURN client can
    // name: the admin API is on loopback, with a token, and the probes go
    // there.
    let config = block("relay.toml");
    assert!(config.contains(&"listen = \"127.0.0.1:9478\""), "{config:?}");
    assert!(config.iter().any(|l| l.starts_with("token_file = ")));
    assert!(!MANIFEST.contains("--admin="), "no flag may move it");
    assert!(MANIFEST.contains("httpGet: { host: 127.0.0.1, path: /healthz, port: 9478 }"));
    assert!(MANIFEST.contains("httpGet: { host: 127.0.0.1, path: /readyz, port: 9478 }"));
}
