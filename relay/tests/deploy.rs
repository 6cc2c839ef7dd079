//! The deployment files agree with the relay: the Kubernetes manifest's
//! config validates with the flags its DaemonSet passes, its probes and
//! scrape annotation name the admin endpoints, and pods get longer to stop
//! than the relay takes to drain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ip2p-relay");
const MANIFEST: &str = include_str!("../../deploy/kubernetes/ip2p-relay.yaml");

/// The value of `key: value` on the first line that has it.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find_map(|l| l.trim().strip_prefix(key)).unwrap_or_else(|| panic!("no {key}")).trim()
}

#[test]
fn the_daemonset_config_validates_with_its_flags() {
    // The Secret's relay.toml: the indented block after `relay.toml: |`.
    let block: Vec<&str> = MANIFEST
        .lines()
        .skip_while(|l| !l.contains("relay.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| &l[4..])
        .collect();
    assert!(block.len() > 5, "no relay.toml in the Secret");
    let path = std::env::temp_dir().join(format!("ip2p-k8s-{}.toml", std::process::id()));
    std::fs::write(&path, block.join("\n")).unwrap();
    // What the DaemonSet passes, with a documentation address for the node.
    assert!(MANIFEST.contains("- --relay-ip=$(HOST_IP)") && MANIFEST.contains("- --admin=$(HOST_IP):9478"));
    let out = Command::new(BIN)
        .args(["--relay-ip", "192.0.2.7", "--admin", "192.0.2.7:9478", "check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Draining ends before Kubernetes kills the pod.
    let drain: u64 = block.iter().find_map(|l| l.trim().strip_prefix("timeout = ")).unwrap().parse().unwrap();
    let grace: u64 = value(MANIFEST, "terminationGracePeriodSeconds:").parse().unwrap();
    assert!(drain < grace, "drain.timeout {drain} s must end before the {grace} s grace period");
}

#[test]
fn the_daemonset_uses_host_networking_and_the_admin_endpoints() {
    assert_eq!(value(MANIFEST, "hostNetwork:"), "true");
    assert_eq!(value(MANIFEST, "prometheus.io/scrape:"), "\"true\"");
    assert_eq!(value(MANIFEST, "prometheus.io/port:"), "\"9478\"");
    assert_eq!(value(MANIFEST, "prometheus.io/path:"), "/metrics");
    assert!(MANIFEST.contains("httpGet: { path: /healthz, port: 9478 }"));
    assert!(MANIFEST.contains("httpGet: { path: /readyz, port: 9478 }"));
}
