//! Users and TURN REST secrets kept in the fleet's store (a real
//! redis-server): set with one command on one node, in force on every
//! node within a second, without a reload.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ip2p_client::{Client, ClientError};
use ip2p_tests::redis::Redis;
use ip2p_tests::{Relay, TempDir, relay_bin};

use super::fleet::{node, until_listed};

/// `ip2p-relay ARGS --admin ADMIN`: its output, which must succeed.
fn ctl(admin: SocketAddr, args: &[&str]) -> String {
    let out =
        std::process::Command::new(relay_bin()).args(["--admin", &admin.to_string()]).args(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
    stdout.into_owned()
}

/// Whether `user` with `password` allocates on `relay` within `limit`
/// (`want`), or keeps being refused with 401 for it (`!want`).
fn allocates(relay: &Relay, user: &str, password: &str, want: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let result = Client::new(relay.addr, user, password).unwrap().allocate(None);
        match (&result, want) {
            (Ok(_), true) | (Err(ClientError::Rejected(401, _)), false) => return start.elapsed(),
            (Err(ClientError::Rejected(401, _)), true) | (Ok(_), false) if start.elapsed() < limit => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => panic!("{user} on {}: {result:?} after {:?}", relay.addr, start.elapsed()),
        }
    }
}

fn a_user_and_a_secret_set_on_one_node_hold_on_every_node(dp: &'static str) {
    let redis = Redis::start();
    let (a, b, c) = (node(dp, &redis, "a", ""), node(dp, &redis, "b", ""), node(dp, &redis, "c", ""));
    until_listed(a.admin.unwrap(), &["a", "b", "c"], Duration::from_secs(5));
    let dir = TempDir::new("fleet-auth");
    let password = dir.file("carol", "in-the-store\n");
    ctl(a.admin.unwrap(), &["fleet-user", "carol", "--password-file", password.to_str().unwrap()]);
    let took = allocates(&c, "carol", "in-the-store", true, Duration::from_secs(1));
    eprintln!("{dp}: a user stored on a allocates on c after {took:?}");
    assert!(ctl(b.admin.unwrap(), &["fleet-user"]).contains("carol"));
    assert!(redis.cli(&["HGET", "ip2p:{ip2p}:users", "carol"]).starts_with("key:"), "{dp}: never the password");
    // A new REST secret: it signs on every node from now on.
    let secret = dir.file("secret", "a-new-fleet-secret-0123456789\n");
    let added = ctl(b.admin.unwrap(), &["fleet-secret", "--add-file", secret.to_str().unwrap()]);
    let username = format!("{}:web-user", ip2p_relay::unix_now() + 600);
    let signed = ip2p_turn::auth::rest_password(b"a-new-fleet-secret-0123456789", &username);
    allocates(&a, &username, &signed, true, Duration::from_secs(1));
    let fingerprint = added.split('"').nth(3).unwrap().to_owned();
    let listed = ctl(c.admin.unwrap(), &["fleet-secret"]);
    assert!(listed.contains(&fingerprint), "{dp}: {listed}");
    // Removed: refused everywhere, the configuration's own still good.
    ctl(c.admin.unwrap(), &["fleet-user", "carol", "--remove"]);
    allocates(&b, "carol", "in-the-store", false, Duration::from_secs(1));
    ctl(a.admin.unwrap(), &["fleet-secret", "--remove", &fingerprint]);
    allocates(&c, &username, &signed, false, Duration::from_secs(1));
    allocates(&c, "alice", "wonderland", true, Duration::ZERO);
    // A SIGHUP keeps what the store adds.
    ctl(a.admin.unwrap(), &["fleet-user", "dave", "--password-file", password.to_str().unwrap()]);
    allocates(&a, "dave", "in-the-store", true, Duration::from_secs(1));
    a.signal(nix::sys::signal::Signal::SIGHUP);
    a.wait_for("configuration reloaded");
    allocates(&a, "dave", "in-the-store", true, Duration::ZERO);
    // A store restarted without its data: the nodes keep what they have.
    drop(a);
    let mut redis = redis;
    redis.stop();
    assert!(redis.spawn());
    c.wait_for("the store has no users or secrets any more");
    allocates(&c, "dave", "in-the-store", true, Duration::ZERO);
}

on_both_datapaths! {
    names:
    a_user_and_a_secret_set_on_one_node_hold_on_every_node: a_user_and_a_secret_set_on_one_node_hold_on_every_node();
}
