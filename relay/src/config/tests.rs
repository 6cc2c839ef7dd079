//! The configuration's checks, each naming the key at fault.

use std::net::IpAddr;

use super::defaults::{self, DEV_USER};
use super::{RunArgs, Settings, XdpMode};

fn args(f: impl FnOnce(&mut RunArgs)) -> RunArgs {
    let mut a = RunArgs::default();
    f(&mut a);
    a
}

#[test]
fn the_example_config_refuses_its_placeholders_and_is_valid_without_them() {
    let example = include_str!("../../../deploy/ip2p-relay.example.toml");
    let mut text = example.to_owned();
    for (placeholder, key, real) in [
        ("\"change-me\"", "auth.users[0]", "\"a real password\""),
        ("\"a-long-random-shared-secret\"", "auth.secrets", "\"kq3vZ8tX1mR4wY7pL0sN\""),
        (
            "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"",
            "auth.nonce_secret",
            "\"8f1d2c3b4a5968778695a4b3c2d1e0f00f1e2d3c4b5a69788796a5b4c3d2e1f0\"",
        ),
    ] {
        let e = Settings::from_toml(&text, &RunArgs::default()).unwrap_err();
        assert_eq!(e.key, key, "{e}");
        text = text.replace(placeholder, real);
    }
    let s = Settings::from_toml(&text, &RunArgs::default()).unwrap();
    assert_eq!(s.listen, ["0.0.0.0:3478".parse().unwrap()]);
    assert_eq!(s.turn.ports, 49152..=65535);
    assert_eq!(s.turn.credentials.realm, "example.org");
    assert!(!s.nonce_secret_generated);
    assert!(s.tls.is_none() && s.tls_listen.is_empty());
    assert_eq!(s.connections.max_per_ip, 64);
    assert_eq!(s.connections.send_buffer, 262_144);
    assert!(s.connections.proxy_protocol_from.is_empty(), "no balancer is trusted unless named");
}

#[test]
fn balancers_come_from_the_file_or_the_flags() {
    let text = r#"
        listen = ["127.0.0.1:3478"]
        [auth]
        users = [{ name = "a", password = "b" }]
        [connections]
        proxy_protocol_from = ["10.1.0.0/16", "192.0.2.7"]
    "#;
    let s = Settings::from_toml(text, &RunArgs::default()).unwrap();
    let nets: Vec<String> = s.connections.proxy_protocol_from.iter().map(ToString::to_string).collect();
    assert_eq!(nets, ["10.1.0.0/16", "192.0.2.7/32"]);
    let a = args(|a| a.proxy_protocol_from = vec!["2001:db8::/48".into()]);
    let s = Settings::from_toml(text, &a).unwrap();
    assert_eq!(s.connections.proxy_protocol_from, ["2001:db8::/48".parse::<ipnet::IpNet>().unwrap()]);
}

#[test]
fn the_handover_socket_comes_from_the_file_or_a_flag_and_take_over_needs_it() {
    let text = "listen = [\"127.0.0.1:3478\"]\n[auth]\nusers = [{ name = \"a\", password = \"b\" }]\n";
    let s = Settings::from_toml(text, &RunArgs::default()).unwrap();
    assert_eq!((s.handover_socket, s.take_over), (None, false));
    let with = format!("{text}[handover]\nsocket = \"/run/x/h.sock\"\n");
    let s = Settings::from_toml(&with, &RunArgs::default()).unwrap();
    assert_eq!(s.handover_socket.as_deref(), Some(std::path::Path::new("/run/x/h.sock")));
    let flag = RunArgs { handover_socket: Some("/tmp/other.sock".into()), take_over: true, ..RunArgs::default() };
    let s = Settings::from_toml(&with, &flag).unwrap();
    assert_eq!((s.handover_socket.as_deref(), s.take_over), (Some(std::path::Path::new("/tmp/other.sock")), true));
    let alone = RunArgs { take_over: true, ..RunArgs::default() };
    assert_eq!(Settings::from_toml(text, &alone).unwrap_err().key, "handover.socket");
    let typo = format!("{text}[handover]\nsockets = \"/run/x/h.sock\"\n");
    assert!(Settings::from_toml(&typo, &RunArgs::default()).is_err(), "unknown keys are refused");
    assert!(Settings::from_toml(text, &RunArgs::default()).unwrap().fd_store, "on by default");
    let off = format!("{text}[handover]\nfd_store = false\n");
    assert!(!Settings::from_toml(&off, &RunArgs::default()).unwrap().fd_store);
}

#[test]
fn flags_override_the_file() {
    let text = r#"
        listen = ["127.0.0.1:3478"]
        realm = "file"
        [auth]
        users = [{ name = "a", password = "b" }]
        [relay]
        ports = "50000-50010"
    "#;
    let a = args(|a| {
        a.realm = Some("flag".into());
        a.relay_ports = Some("40000-40100".into());
        a.listen = vec!["127.0.0.2:5000".parse().unwrap()];
    });
    let s = Settings::from_toml(text, &a).unwrap();
    assert_eq!(s.turn.credentials.realm, "flag");
    assert_eq!(s.turn.ports, 40000..=40100);
    assert_eq!(s.listen, ["127.0.0.2:5000".parse().unwrap()]);
    assert_eq!(s.turn.relay_ips[0][0].bind, "127.0.0.2".parse::<IpAddr>().unwrap());
}

#[test]
fn several_relay_addresses_per_family_pair_with_externals_in_order() {
    let base = args(|a| a.users = vec!["u:p".into()]);
    let file = |ips: &str, externals: &str| {
        format!("listen = [\"127.0.0.1:3478\"]\n[relay]\nips = [{ips}]\nexternal_ips = [{externals}]")
    };
    let text = file(r#""127.0.0.1", "::1", "127.0.0.2""#, r#""192.0.2.1", "192.0.2.2""#);
    let s = Settings::from_toml(&text, &base).unwrap();
    let ip = |t: &str| t.parse::<IpAddr>().unwrap();
    let v4: Vec<_> = s.turn.relay_ips[0].iter().map(|r| (r.bind, r.external)).collect();
    assert_eq!(v4, [(ip("127.0.0.1"), Some(ip("192.0.2.1"))), (ip("127.0.0.2"), Some(ip("192.0.2.2")))]);
    assert_eq!(s.turn.relay_ips[1].iter().map(|r| (r.bind, r.external)).collect::<Vec<_>>(), [(ip("::1"), None)]);
    assert!(s.turn.policy.host.contains(&ip("192.0.2.2")) && s.turn.policy.host.contains(&ip("127.0.0.2")));
    let nine = (1..=9).map(|i| format!("\"127.0.0.{i}\"")).collect::<Vec<_>>().join(", ");
    for (ips, externals, expected) in [
        (r#""127.0.0.1", "127.0.0.1""#.to_owned(), "", "given twice"),
        (nine, "", "at most 8"),
        (r#""127.0.0.1""#.to_owned(), r#""192.0.2.1", "192.0.2.2""#, "pair in order"),
        (r#""127.0.0.1""#.to_owned(), r#""2001:db8::1""#, "no relay address of its family"),
    ] {
        let e = Settings::from_toml(&file(&ips, externals), &base).unwrap_err().to_string();
        assert!(e.contains(expected) && e.contains("relay."), "{ips} / {externals}: got {e}");
    }
}

#[test]
fn the_fast_path_is_off_unless_asked_and_its_events_follow_it() {
    let base = args(|a| {
        a.users = vec!["u:p".into()];
        a.relay_ips = vec!["127.0.0.1".parse().unwrap()];
    });
    let off = Settings::from_toml("", &base).unwrap();
    assert_eq!((off.xdp.mode, off.turn.events), (XdpMode::Off, false));
    let on =
        Settings::from_toml("[xdp]\nmode = \"auto\"\ninterfaces = [\"eth0\"]\nattach = \"generic\"", &base).unwrap();
    assert_eq!((on.xdp.mode, on.turn.events, on.xdp.generic), (XdpMode::Auto, true, true));
    assert_eq!(on.xdp.interfaces, ["eth0"]);
    let flag = args(|a| {
        a.users = vec!["u:p".into()];
        a.relay_ips = vec!["127.0.0.1".parse().unwrap()];
        a.xdp = Some(XdpMode::On);
    });
    assert_eq!(Settings::from_toml("[xdp]\nmode = \"off\"", &flag).unwrap().xdp.mode, XdpMode::On);
}

#[test]
fn errors_name_the_key() {
    let base = args(|a| {
        a.users = vec!["u:p".into()];
        a.relay_ips = vec!["127.0.0.1".parse().unwrap()];
    });
    let cases: &[(&str, &str)] = &[
        ("lisen = []", "unknown field `lisen`"),
        ("[relay]\nports = \"10-5\"", "relay.ports"),
        ("[relay]\nports = \"x\"", "relay.ports"),
        ("[relay]\nexternal_ips = [\"::1\"]", "relay.external_ips"),
        ("[allocation]\nmax_lifetime = 10", "allocation.max_lifetime"),
        ("[peers]\nallow = [\"300.1.1.1/8\"]", "peers.allow"),
        ("[connections]\nproxy_protocol_from = [\"balancer\"]", "connections.proxy_protocol_from"),
        ("[auth]\nnonce_secret = \"abc\"", "auth.nonce_secret"),
        ("[auth]\nusers = [{ name = \"a\" }]", "auth.users[0]"),
        ("[auth]\nusers = [{ name = \"a\", key = \"zz\" }]", "auth.users[0]"),
        ("[log]\nlevel = \"[[\"", "log.level"),
        ("workers = 5000", "workers"),
        ("io_uring_buffers = 100", "io_uring_buffers"),
        ("busy_poll_us = 20000", "busy_poll_us"),
        ("[tls]\nlisten = [\"127.0.0.1:443\"]", "tls.listen"),
        ("[tls]\ncert = \"/nonexistent.pem\"", "tls.key"),
        ("[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"", "cannot read certificate"),
        ("[connections]\nsend_buffer = 10", "connections.send_buffer"),
        ("[connections]\nidle_timeout = 0", "connections"),
        ("[allocation]\nbandwidth = 100", "allocation.bandwidth"),
        ("[admin]\nlisten = \"9478\"", "admin.listen"),
        ("[allocation]\ndefault_lifetime = 18446744073709551615", "allocation.default_lifetime"),
        ("[allocation]\nmax_lifetime = 100000", "allocation.max_lifetime"),
        ("[allocation]\nuser_quota = 100000000", "allocation.user_quota"),
        ("[allocation]\nbandwidth = 18446744073709551615", "allocation.bandwidth"),
        ("[auth]\nnonce_lifetime = 0", "auth.nonce_lifetime"),
        ("[auth]\nnonce_lifetime = 18446744073709551615", "auth.nonce_lifetime"),
        ("[auth]\nmax_credential_lifetime = 9223372036854775807", "auth.max_credential_lifetime"),
        ("[auth]\nsecrets = [\"short\"]", "auth.secrets"),
        ("[auth]\nsecrets = [\"replace-with-your-rest-secret\"]", "auth.secrets"),
        ("[auth]\nsecrets = [\"aaaaaaaaaaaaaaaaaaaaaaaa\"]", "auth.secrets"),
        (
            "[auth]\nnonce_secret = \"0000000000000000000000000000000000000000000000000000000000000000\"",
            "auth.nonce_secret",
        ),
        ("[auth]\nusers = [{ name = \"a\", password = \"changeme\" }]", "auth.users[0]"),
        ("[auth]\nsecrets_file = \"/nonexistent/secrets\"", "auth.secrets_file"),
        ("[connections]\nidle_timeout = 18446744073709551615", "connections.idle_timeout"),
        ("[connections]\nmax = 0", "connections.max"),
        ("[connections]\nsend_buffer = 18446744073709551615", "connections.send_buffer"),
        ("[drain]\ntimeout = 18446744073709551615", "drain.timeout"),
        ("realm = \"a-realm-of-thirty-three-bytes-xyz\"", "realm"),
        ("software = \"x\"\n[admin]\ntoken = \"short\"", "admin.token"),
        ("[xdp]\nmode = \"maybe\"", "unknown variant `maybe`"),
        ("[xdp]\nchannels = 0", "xdp.channels"),
        ("[xdp]\nchannels = 5000000000", "xdp.channels"),
        ("[xdp]\ninterfaces = [\"eth0/1\"]", "xdp.interfaces"),
        ("[xdp]\ninterfaces = [\"an-interface-name-too-long\"]", "xdp.interfaces"),
        ("[xdp]\nattach = \"hardware\"", "unknown variant `hardware`"),
    ];
    for (text, expected) in cases {
        let e = Settings::from_toml(text, &base).unwrap_err();
        assert!(e.to_string().contains(expected), "{text:?}: got {e}");
    }
    let e = Settings::from_toml("", &args(|a| a.users = vec!["u:p".into()])).unwrap_err();
    assert_eq!(e.key, "relay.ips", "0.0.0.0 gives no relay address");
    let e = Settings::from_toml("listen = [\"127.0.0.1:1\"]", &RunArgs::default()).unwrap_err();
    assert_eq!(e.key, "auth", "no credentials at all");
    let e = Settings::from_toml("listen = [\"127.0.0.1:1\"]", &args(|a| a.users = vec!["nocolon".into()])).unwrap_err();
    assert_eq!(e.key, "--user");
}

#[test]
fn secrets_come_from_files() {
    let dir = std::env::temp_dir().join(format!("ip2p-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (secrets, users, token) = (dir.join("secrets"), dir.join("users"), dir.join("token"));
    std::fs::write(&secrets, "# rotated monthly\nkq3vZ8tX1mR4wY7pL0sN\n\nQ9w8E7r6T5y4U3i2O1p0\n").unwrap();
    std::fs::write(&users, "alice:wonderland\nbob:builder\n").unwrap();
    std::fs::write(&token, "Zk2Yx7Wv4Ut1Sr8Qp5On\n").unwrap();
    let a = args(|a| {
        a.listen = vec!["127.0.0.1:3478".parse().unwrap()];
        a.auth_secret_file = Some(secrets.clone());
        a.users_file = Some(users.clone());
        a.admin_token_file = Some(token.clone());
    });
    let s = Settings::from_toml("", &a).unwrap();
    assert_eq!(s.turn.credentials.rest_secrets, [b"kq3vZ8tX1mR4wY7pL0sN".to_vec(), b"Q9w8E7r6T5y4U3i2O1p0".to_vec()]);
    assert_eq!(s.turn.credentials.users.len(), 2);
    assert_eq!(s.admin_token.as_deref(), Some("Zk2Yx7Wv4Ut1Sr8Qp5On"));
    std::fs::write(&users, "alice\n").unwrap();
    assert_eq!(Settings::from_toml("", &a).unwrap_err().key, "auth.users_file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limits_are_on_by_default() {
    let s = Settings::from_toml("listen = [\"127.0.0.1:1\"]", &args(|a| a.users = vec!["u:p".into()])).unwrap();
    assert_eq!((s.user_quota, s.ip_quota, s.max_allocations), (defaults::USER_QUOTA, defaults::IP_QUOTA, None));
    assert_eq!(s.turn.credentials.max_rest_lifetime, defaults::MAX_CREDENTIAL_LIFETIME.as_secs());
    assert_eq!(s.turn.unauthenticated_rate, defaults::UNAUTHENTICATED_RATE);
    let ip = |t: &str| t.parse::<IpAddr>().unwrap();
    assert!(s.turn.policy.host.contains(&ip("127.0.0.1")), "listen and relay address");
}

#[test]
fn dev_mode_works_with_nothing_else() {
    let s = Settings::from_toml("", &args(|a| a.dev = true)).unwrap();
    assert_eq!(s.listen, ["127.0.0.1:3478".parse().unwrap()]);
    assert!(s.turn.credentials.users.contains_key(DEV_USER.0));
    let local = ip2p_turn::LocalRanges::default();
    assert_eq!(s.turn.policy.judge("127.0.0.2".parse().unwrap(), &local), ip2p_turn::Judgement::Allowed);
    for host in ["127.0.0.1", "127.0.0.3", "::1"] {
        assert_eq!(s.turn.policy.judge(host.parse().unwrap(), &local), ip2p_turn::Judgement::Host, "{host}");
    }
    assert!(s.nonce_secret_generated);
}

#[test]
fn dev_mode_listens_on_loopback_only() {
    let dev = args(|a| a.dev = true);
    for (text, open) in [
        ("listen = [\"0.0.0.0:3478\"]", "0.0.0.0:3478"),
        ("listen = [\"127.0.0.1:3478\", \"[::]:3478\"]", "[::]:3478"),
        ("[admin]\nlisten = \"192.0.2.1:9000\"", "192.0.2.1:9000"),
    ] {
        let e = Settings::from_toml(text, &dev).unwrap_err();
        assert_eq!(e.key, "listen", "{text}");
        assert!(e.message.contains(open) && e.message.contains("password"), "{e}");
    }
    assert!(Settings::from_toml("listen = [\"[::1]:3478\"]", &dev).is_ok());
}

#[test]
fn a_loopback_peer_named_alone_is_a_peer_unless_the_node_serves_there() {
    let base = args(|a| a.users = vec!["u:p".into()]);
    let peers = |text: &str| Settings::from_toml(text, &base).unwrap().turn.policy.loopback_peers;
    let ip = |t: &str| t.parse::<IpAddr>().unwrap();
    let allow = "[peers]\nallow = [\"127.0.0.2/32\", \"127.0.0.3\", \"127.0.0.0/8\", \"::1/128\", \"10.0.0.1/32\"]";
    let served =
        format!("listen = [\"127.0.0.1:3478\", \"[::1]:3478\"]\n[relay]\nips = [\"127.0.0.1\", \"::1\"]\n{allow}");
    assert_eq!(peers(&served), [ip("127.0.0.2"), ip("127.0.0.3")], "a range or the node's own address is not");
    let wildcard = format!("listen = [\"0.0.0.0:3478\"]\n[relay]\nips = [\"192.0.2.1\"]\n{allow}");
    assert_eq!(peers(&wildcard), [ip("::1")], "127.0.0.2:3478 would be the listener");
}

#[test]
fn a_fleet_needs_its_store_and_takes_its_defaults() {
    let text = "listen = [\"127.0.0.1:3478\"]\n[auth]\nusers = [{ name = \"a\", password = \"b\" }]\n";
    assert_eq!(Settings::from_toml(text, &RunArgs::default()).unwrap().fleet, None);
    let with = format!("{text}[fleet]\nredis = \"redis://127.0.0.1:6379\"\n");
    let fleet = Settings::from_toml(&with, &RunArgs::default()).unwrap().fleet.unwrap();
    assert_eq!((fleet.name.as_str(), fleet.region.as_str(), fleet.redirect_above), ("ip2p", "default", 0.9));
    assert_eq!(fleet.node, nix::unistd::gethostname().unwrap().into_string().unwrap());
    assert_eq!(fleet.when_store_down, super::StoreDown::Local);
    let flags = args(|a| {
        a.fleet_redis = Some("rediss://:pw@127.0.0.1:6380".into());
        a.fleet_node = Some("n-1".into());
        a.fleet_region = Some("eu".into());
    });
    let fleet = Settings::from_toml(text, &flags).unwrap().fleet.unwrap();
    assert_eq!((fleet.node.as_str(), fleet.region.as_str()), ("n-1", "eu"));
    for (keys, key) in [
        ("node = \"a\"", "fleet.node"),
        ("redis = \"redis://x:1\"\nname = \"\"", "fleet.name"),
        ("redis = \"redis://x:1\"\nregion = \"a/b\"", "fleet.region"),
        ("redis = \"redis://x:1\"\nadvertise = \"0.0.0.0\"", "fleet.advertise"),
        ("redis = \"redis://x:1\"\nredirect_above = 0.0", "fleet.redirect_above"),
        ("redis = \"tcp://x:1\"", "fleet.redis"),
    ] {
        let e = Settings::from_toml(&format!("{text}[fleet]\n{keys}\n"), &RunArgs::default()).unwrap_err();
        assert_eq!(e.key, key, "{keys}: {e}");
    }
    let e = Settings::from_toml(
        &format!("{text}[fleet]\nredis = \"redis://:hunter2@x:1/notanumber\"\n"),
        &RunArgs::default(),
    )
    .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "the password is never shown: {e}");
    assert_eq!(super::fleet::shown_url("redis://:hunter2@x:1/0"), "redis://x:1/0");
    // A password from a file, a real one only.
    let dir = std::env::temp_dir().join(format!("ip2p-fleet-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let real = file("real", "9f8e7d6c5b4a39281716/x y\n");
    let with = format!("{text}[fleet]\nredis = \"redis://x:1\"\npassword_file = \"{real}\"\n");
    let fleet = Settings::from_toml(&with, &RunArgs::default()).unwrap().fleet.unwrap();
    assert_eq!(fleet.redis, "redis://:9f8e7d6c5b4a39281716%2Fx%20y@x:1");
    let placeholder = file("placeholder", "replace-with-your-redis-password\n");
    let with = format!("{text}[fleet]\nredis = \"redis://x:1\"\npassword_file = \"{placeholder}\"\n");
    assert_eq!(Settings::from_toml(&with, &RunArgs::default()).unwrap_err().key, "fleet.password_file");
    let twice = format!("{text}[fleet]\nredis = \"redis://:a@x:1\"\npassword_file = \"{real}\"\n");
    assert_eq!(Settings::from_toml(&twice, &RunArgs::default()).unwrap_err().key, "fleet.password_file");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(super::fleet::shown_url("redis://x:1"), "redis://x:1");
}
