//! The deployment files agree with the relay: each Kubernetes manifest's
//! config (one relay per node, and a fleet of them with its store)
//! refuses its placeholder secrets and validates, with real ones,
//! with the flags its DaemonSet passes; the admin API stays on loopback
//! where its probes reach it; pods get longer to stop than the relay takes
//! to drain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::process::Command;

use ip2p_tests::{TempDir, relay_bin};

const MANIFEST: &str = include_str!("../../deploy/kubernetes/ip2p-relay.yaml");
/// The fleet's: relays joined through a store in the cluster.
const FLEET: &str = include_str!("../../deploy/kubernetes/ip2p-fleet.yaml");
const MANIFESTS: [&str; 2] = [MANIFEST, FLEET];

/// The value of `key: value` on the first line that has it.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find_map(|l| l.trim().strip_prefix(key)).unwrap_or_else(|| panic!("no {key}")).trim()
}

/// The indented block after `key: |` (a file of the Secret).
fn block<'a>(manifest: &'a str, key: &str) -> Vec<&'a str> {
    manifest
        .lines()
        .skip_while(|l| !l.contains(&format!("{key}: |")))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| &l[4..])
        .collect()
}

#[test]
fn the_daemonset_config_refuses_placeholders_and_validates_with_its_flags() {
    for manifest in MANIFESTS {
        validates(manifest);
    }
}

fn validates(manifest: &str) {
    let config = block(manifest, "relay.toml");
    assert!(config.len() > 5, "no relay.toml in the Secret");
    // The Secret's files where the pod mounts them: a directory of ours.
    let dir = TempDir::new("k8s");
    let text = config.join("\n").replace("/etc/ip2p/", &format!("{}/", dir.path().display()));
    let path = dir.file("relay.toml", &text);
    // What the DaemonSet passes, with a documentation address for the node.
    assert!(manifest.contains("- --relay-ip=$(HOST_IP)"));
    let region = manifest.lines().find_map(|l| l.trim().strip_prefix("- --fleet-region="));
    let check = || {
        let mut command = Command::new(relay_bin());
        command.args(["--relay-ip", "192.0.2.7"]);
        if let Some(r) = region {
            command.args(["--fleet-region", r]);
        }
        command.args(["check-config", path.to_str().unwrap()]).output().unwrap()
    };
    let secrets: Vec<&str> = ["rest-secret", "nonce-secret", "admin-token", "store-password"]
        .into_iter()
        .filter(|name| manifest.contains(&format!("  {name}: \"")))
        .collect();
    for name in &secrets {
        dir.file(name, value(manifest, &format!("{name}:")).trim_matches('"'));
    }
    let out = check();
    assert!(!out.status.success(), "the manifest's placeholders must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("placeholder"), "{}", String::from_utf8_lossy(&out.stderr));
    // Replaced as the manifest says (`openssl rand -hex 32`), it validates.
    for (i, name) in secrets.iter().enumerate() {
        let hex: String = (0..32).map(|j| format!("{:02x}", (j * 37 + i * 11 + 7) % 251)).collect();
        dir.file(name, &hex);
    }
    let out = check();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    if let Some(r) = region {
        assert!(stdout.contains(&format!("in region {r}")), "{stdout}");
    }

    // Draining ends before Kubernetes kills the pod.
    let drain: u64 = config.iter().find_map(|l| l.trim().strip_prefix("timeout = ")).unwrap().parse().unwrap();
    let grace: u64 = value(manifest, "terminationGracePeriodSeconds:").parse().unwrap();
    assert!(drain < grace, "drain.timeout {drain} s must end before the {grace} s grace period");
}

/// The fleet's relays reach their store by its Service, with the password
/// the store requires, from the same Secret; each DaemonSet runs on its
/// region's nodes and says that region.
#[test]
fn the_fleets_relays_and_store_agree() {
    let config = block(FLEET, "relay.toml");
    let url = config.iter().find_map(|l| l.strip_prefix("redis = ")).unwrap().trim_matches('"');
    let service = value(FLEET, "name: ip2p-store");
    assert!(service.is_empty() && url.starts_with("redis://ip2p-store.ip2p.svc"), "{url}");
    assert!(config.contains(&"password_file = \"/etc/ip2p/store-password\""));
    assert!(FLEET.contains("secretKeyRef: { name: ip2p-fleet-config, key: store-password }"));
    assert!(FLEET.contains("--requirepass \\\"$STORE_PASSWORD\\\""));
    assert!(FLEET.contains("--appendonly yes"), "the store keeps users, secrets and revocations");
    let region = FLEET.lines().find_map(|l| l.trim().strip_prefix("- --fleet-region=")).unwrap();
    assert!(FLEET.contains(&format!("topology.kubernetes.io/region: {region}")));
}

#[test]
fn the_admin_api_stays_off_every_address_a_client_can_name() {
    // With host networking every node address is one a TURN client can
    // name: the admin API is on loopback, with a token, and the probes go
    // there.
    for manifest in MANIFESTS {
        assert_eq!(value(manifest, "hostNetwork:"), "true");
        stays_on_loopback(manifest);
    }
}

fn stays_on_loopback(manifest: &str) {
    let config = block(manifest, "relay.toml");
    assert!(config.contains(&"listen = \"127.0.0.1:9478\""), "{config:?}");
    assert!(config.iter().any(|l| l.starts_with("token_file = ")));
    assert!(!manifest.contains("--admin="), "no flag may move it");
    assert!(manifest.contains("httpGet: { host: 127.0.0.1, path: /healthz, port: 9478 }"));
    assert!(manifest.contains("httpGet: { host: 127.0.0.1, path: /readyz, port: 9478 }"));
}
