//! The `ip2p-relay` binary: config checking, refusing bad configs with the
//! key at fault, the `--dev` mode `make run` uses, stopped by SIGTERM, and
//! SIGHUP reloading the TLS certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use ip2p_client::Client;
use ip2p_tests::support::Pki;
use ip2p_tests::{Relay, RelayOptions, TempDir, relay_bin};
use nix::sys::signal::Signal;

#[test]
fn check_config_refuses_the_examples_placeholders_and_accepts_it_without() {
    let example = include_str!("../../deploy/ip2p-relay.example.toml");
    let dir = TempDir::new("cli-example");
    let as_is = dir.file("example.toml", example);
    let out = Command::new(relay_bin()).args(["check-config", as_is.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the placeholders must be refused");
    assert!(stderr.contains("auth.users[0]") && stderr.contains("placeholder"), "{stderr}");
    let real = example
        .replace("\"change-me\"", "\"a real password\"")
        .replace("\"a-long-random-shared-secret\"", "\"kq3vZ8tX1mR4wY7pL0sN\"")
        .replace(
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "8f1d2c3b4a5968778695a4b3c2d1e0f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
        );
    let fixed = dir.file("fixed.toml", &real);
    let out = Command::new(relay_bin()).args(["check-config", fixed.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("valid") && stdout.contains("49152..=65535"), "{stdout}");
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    let dir = TempDir::new("cli-bad");
    let bad = dir.file(
        "bad.toml",
        "listen = [\"127.0.0.1:3478\"]\n[relay]\nports = \"9-1\"\n[auth]\nsecrets = [\"a-rest-secret-for-tests\"]\n",
    );
    let out = Command::new(relay_bin()).args(["check-config", bad.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("relay.ports"), "{stderr}");

    let out = Command::new(relay_bin()).args(["--config", bad.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad config never starts the server");
    assert!(String::from_utf8_lossy(&out.stderr).contains("relay.ports"));

    let out = Command::new(relay_bin()).args(["--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no credentials"));

    let out = Command::new(relay_bin()).args(["--dev", "--relay-ports", "1-0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("relay.ports"));
}

#[test]
fn a_taken_port_fails_the_start() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(relay_bin()).args(["--dev", "--listen", &addr]).stdout(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn a_taken_admin_port_fails_the_start_and_a_bad_one_is_a_config_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(relay_bin()).args(["--dev", "--listen", "127.0.0.1:0", "--admin", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("admin listener {addr}")), "{stderr}");
    let out = Command::new(relay_bin()).args(["--dev", "--admin", "localhost"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--admin: expected ADDR:PORT"));
}

#[test]
fn dev_mode_serves_and_stops_on_sigterm() {
    let mut relay = Relay::start(&RelayOptions::flags(&[
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--admin",
        "127.0.0.1:0",
    ]));
    let banner = relay.stdout_line();
    let addr: SocketAddr = banner
        .split_once(" on ")
        .and_then(|(_, rest)| rest.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {banner:?}"));
    assert_eq!(addr, relay.addr);
    let (user, password) = (relay.stdout_line(), relay.stdout_line());
    let user = user.split_whitespace().last().unwrap();
    let password = password.split_whitespace().last().unwrap();

    let mut c = Client::new(addr, user, password).unwrap();
    assert_eq!(c.binding().unwrap(), c.local_addr().unwrap());
    c.allocate(None).unwrap();

    // The banner names the self-test page, which the admin listener serves.
    let selftest = std::iter::repeat_with(|| relay.stdout_line())
        .take_while(|l| !l.starts_with("Ctrl-C"))
        .find_map(|l| l.trim().strip_prefix("selftest: ").map(str::to_owned))
        .expect("the banner names no self-test page");
    let (admin, path) = selftest.strip_prefix("http://").unwrap().split_once('/').unwrap();
    let (code, page) = ip2p_tests::http(
        admin.split(' ').next().unwrap().parse().unwrap(),
        &format!("GET /{} HTTP/1.1\r\nHost: {admin}\r\n\r\n", path.split(' ').next().unwrap()),
    );
    assert_eq!(code, 200, "{selftest}: {page}");
    assert!(page.contains("<title>ip2p relay self-test</title>"), "{page}");
    // It mints its credential: nothing to type.
    let admin: SocketAddr = admin.split(' ').next().unwrap().parse().unwrap();
    let (code, minted) =
        ip2p_tests::post(admin, "/api/v1/credentials", r#"{"user": "ip2p-selftest", "ttl": 300}"#, None);
    assert_eq!(code, 200, "{minted}");
    let minted: serde_json::Value = serde_json::from_str(&minted).unwrap();
    let server = &minted["iceServers"][0];
    let mut selftest =
        Client::new(addr, server["username"].as_str().unwrap(), server["credential"].as_str().unwrap()).unwrap();
    selftest.allocate(None).unwrap();
    selftest.refresh(Some(0)).unwrap();

    // SIGTERM drains (tests/drain.rs): with no allocation left, it exits at once.
    c.refresh(Some(0)).unwrap();
    relay.signal(Signal::SIGTERM);
    assert!(relay.exit_within(Duration::from_secs(5)).success());
}

#[test]
fn sighup_reloads_the_tls_certificate() {
    let mut pki = Pki::new("cli-sighup");
    let (cert, key) = (pki.cert(), pki.key());
    let mut relay = Relay::start(&RelayOptions::flags(&[
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--user",
        "u:p",
        "--admin",
        "off",
        "--allow-peer",
        "127.0.0.2",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]));
    let addr = relay.tls_addrs[0];
    Client::tls(addr, "localhost", pki.roots.clone(), "u", "p").unwrap().allocate(None).unwrap();

    pki.issue();
    relay.signal(Signal::SIGHUP);
    relay.wait_for("TLS certificate reloaded");
    Client::tls(addr, "localhost", pki.roots.clone(), "u", "p").unwrap().allocate(None).unwrap();

    std::fs::write(pki.key(), "garbage").unwrap();
    relay.signal(Signal::SIGHUP);
    // A key that does not load makes the whole new configuration invalid.
    relay.wait_for("reload refused");
    Client::tls(addr, "localhost", pki.roots.clone(), "u", "p").unwrap().allocate(None).unwrap();

    relay.signal(Signal::SIGTERM);
    assert!(relay.exit_within(Duration::from_secs(10)).success());
}

#[test]
fn init_config_writes_a_valid_private_config_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("cli-init");
    let path = dir.path().join("relay.toml");
    let out = Command::new(relay_bin()).args(["init-config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640, "it holds secrets");
    let text = std::fs::read_to_string(&path).unwrap();
    let out = Command::new(relay_bin()).args(["check-config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("127.0.0.1:3478") && shown.contains("1 REST secrets"), "{shown}");
    // Never over an existing file.
    let out = Command::new(relay_bin()).args(["init-config", path.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    // Each install gets its own secrets.
    std::fs::remove_file(&path).unwrap();
    Command::new(relay_bin()).args(["init-config", path.to_str().unwrap()]).output().unwrap();
    assert_ne!(std::fs::read_to_string(&path).unwrap(), text);
}

fn ctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(relay_bin()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The operator's subcommands against a running node: by its config file
/// (the admin listener and its token) and by `--admin`.
#[test]
fn sessions_kill_revoke_and_credentials_from_the_command_line() {
    let dir = TempDir::new("cli-ctl");
    let token = dir.file("admin-token", "a-token-of-sixteen-bytes-or-more\n");
    let config = format!(
        "listen = [\"127.0.0.1:0\"]\nrealm = \"ip2p.test\"\nworkers = 1\n\
         [auth]\nsecrets = [\"an-e2e-rest-secret-of-some-length\"]\nusers = [{{ name = \"alice\", password = \"wonderland\" }}]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let relay = Relay::start(&RelayOptions::new("epoll", &config));
    let admin = relay.admin.unwrap().to_string();
    let by_flags = ["--admin", admin.as_str(), "--admin-token-file", token.to_str().unwrap()];
    let mut alice = Client::new(relay.addr, "alice", "wonderland").unwrap();
    alice.allocate(None).unwrap();

    let (ok, out, err) = ctl(&[&by_flags[..], &["sessions", "--user", "alice"]].concat());
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.contains("alice")).unwrap_or_else(|| panic!("{out}"));
    let id = line.split_whitespace().next().unwrap().to_owned();
    assert!(out.contains("1 sessions"), "{out}");
    // Without the token: refused, saying so.
    let (ok, _, err) = ctl(&["--admin", &admin, "sessions"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) = ctl(&[&by_flags[..], &["kill", &id]].concat());
    assert!(ok && out.contains(&id), "{out} {err}");
    let (ok, _, err) = ctl(&[&by_flags[..], &["kill", &id]].concat());
    assert!(!ok && err.contains("404"), "{err}");

    let (ok, out, err) = ctl(&[&by_flags[..], &["credentials", "web-user", "--ttl", "60"]].concat());
    assert!(ok, "{err}");
    let minted: serde_json::Value = serde_json::from_str(&out).unwrap();
    let server = &minted["iceServers"][0];
    let (user, pass) = (server["username"].as_str().unwrap(), server["credential"].as_str().unwrap());
    let mut web = Client::new(relay.addr, user, pass).unwrap();
    web.allocate(None).unwrap();
    let (ok, out, err) = ctl(&[&by_flags[..], &["revoke", "web-user", "--for", "10m"]].concat());
    assert!(ok && out.contains("1 sessions ended"), "{out} {err}");
    assert!(Client::new(relay.addr, user, pass).unwrap().allocate(None).is_err(), "revoked");
    let (ok, _, err) = ctl(&[&by_flags[..], &["revoke", "web-user", "--for", "1w"]].concat());
    assert!(!ok && err.contains("1w"), "{err}");
    // Nothing listens: said clearly.
    let (ok, _, err) = ctl(&["--admin", "127.0.0.1:1", "sessions"]);
    assert!(!ok && err.contains("127.0.0.1:1"), "{err}");
}
