//! What operators load into their monitoring: the Grafana dashboard
//! (`deploy/grafana/ip2p-relay.json`) and the Prometheus alert rules
//! (`deploy/prometheus/ip2p-relay.rules.yml`). Every metric either queries
//! must exist in a live `/metrics` scrape of a relay started here; every
//! expression must parse (promtool); each alert must fire when it should
//! and not otherwise (promtool's unit tests beside the rules); and a real
//! Prometheus scraping a relay answers every dashboard query with data and
//! evaluates every rule without error. On each datapath.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ip2p_relay::admin::Admin;
use ip2p_relay::config::DatapathKind;
use ip2p_relay::node::Node;
use serde_json::Value;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// A relay that has served a client, in a fleet of its own on a real
/// redis-server (so the fleet's metrics are there too), and the names its
/// `/metrics` has samples or families of (`_total` for counters,
/// `_bucket`, `_sum` and `_count` for histograms).
fn live_metric_names(dp: DatapathKind) -> (Node, Admin, BTreeSet<String>, InFleet) {
    // With usage records, for their metrics (the file outlives its
    // directory's removal while the node writes it).
    let dir = ip2p_tests::TempDir::new("operator-usage");
    let redis = ip2p_tests::redis::Redis::start();
    let text = format!(
        "listen = [\"127.0.0.1:0\"]\nworkers = 2\n\
         [auth]\nusers = [{{ name = \"alice\", password = \"wonderland\" }}]\n\
         [usage]\nfile = \"{}\"\n[fleet]\nredis = \"{}\"\nnode = \"operator\"\n",
        dir.path().join("usage.jsonl").display(),
        redis.url()
    );
    let node = ip2p_tests::start_node(dp, &text);
    let state = node.handle().fleet().cloned().unwrap();
    let agent = ip2p_relay::fleet::Agent::start(state.clone(), node.handle()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.view().nodes.is_empty() {
        assert!(Instant::now() < deadline, "the node never read the registry");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin = Admin::start("127.0.0.1:0".parse().unwrap(), node.handle(), None).unwrap();
    let mut client = ip2p_client::Client::new(node.local_addrs()[0], "alice", "wonderland").unwrap();
    client.allocate(None).unwrap();
    let (code, body) = ip2p_tests::get(admin.local_addr(), "/metrics", None);
    assert_eq!(code, 200);
    let mut names = BTreeSet::new();
    for line in body.lines() {
        if let Some(family) = line.strip_prefix("# TYPE ") {
            let (name, kind) = family.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_owned());
        }
    }
    assert!(names.contains("ip2p_relayed_packets_total"), "{names:?}");
    (node, admin, names, InFleet(agent, redis))
}

/// What keeps the relay in its fleet: its agent, then its Redis.
struct InFleet(#[allow(dead_code)] ip2p_relay::fleet::Agent, #[allow(dead_code)] ip2p_tests::redis::Redis);

/// The metric names a PromQL expression reads: what is left once strings,
/// label matchers and ranges are dropped, that is neither a function, nor
/// an aggregation, nor a keyword, nor a label list of `by`, `without`, `on`, `ignoring` or
/// `group_left`/`group_right`.
fn metric_names(expr: &str) -> Vec<String> {
    let mut plain = String::new();
    let (mut braces, mut brackets, mut quote) = (0u32, 0u32, None);
    for c in expr.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ if braces == 0 && brackets == 0 => plain.push(c),
            _ => {}
        }
        if matches!(c, '{' | '}' | '[' | ']') {
            plain.push(' ');
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '$') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':' | '.' | '$')) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next].is_whitespace() {
            next += 1;
        }
        let rest: String = chars[next..].iter().take(8).collect();
        // A function's call, or an aggregation's before its `by`/`without`.
        let call = chars.get(next) == Some(&'(')
            || rest.starts_with("by ")
            || rest.starts_with("by(")
            || rest.starts_with("without");
        if matches!(word.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right") && call {
            // Skip the label list.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            continue;
        }
        let keyword = matches!(word.as_str(), "and" | "or" | "unless" | "bool" | "offset" | "inf" | "nan");
        if !call && !keyword && !c.is_ascii_digit() && !word.starts_with('$') {
            names.push(word);
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_expressions() {
    let expr = r#"histogram_quantile(0.99, sum by (instance, le) (rate(ip2p_a_bucket{x="y{z}"}[5m])))
        > 1e-2 and on (instance) sum(ip2p_b) without (w) / ignoring(q) group_left(r) ip2p_c offset 1d
        unless max without(x) (ip2p_d)"#;
    assert_eq!(metric_names(expr), ["ip2p_a_bucket", "ip2p_b", "ip2p_c", "ip2p_d"]);
    assert_eq!(metric_names(r#"rate(ip2p_x_total{instance=~"$instance"}[$__rate_interval])"#), ["ip2p_x_total"]);
}

/// The promtool `make test` fetched (tests/deps.sh), with Prometheus
/// beside it.
fn promtool() -> PathBuf {
    let fetched = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/promtool/usr/bin/promtool");
    assert!(fetched.exists(), "no promtool: tests/deps.sh (make test) fetches it into target/promtool");
    fetched
}

fn promtool_ok(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool()).args(args).current_dir(dir).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

/// Every `expr` of the dashboard's panels, and the metric its variables
/// take their values from.
fn dashboard_expressions(dashboard: &Value) -> (Vec<String>, Vec<String>) {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(e)) = map.get("expr") {
                    out.push(e.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["definition"].as_str().unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).unwrap();
            inner.split(',').next().unwrap().trim().to_owned()
        })
        .collect();
    (exprs, variables)
}

/// The dashboard is a Grafana dashboard (panels with unique ids on a 24
/// column grid, each reading the chosen Prometheus data source), covers
/// what an operator watches, and reads only metrics the relay exports, in
/// expressions Prometheus parses.
fn the_dashboard_reads_live_metrics(dp: DatapathKind) {
    let text = std::fs::read_to_string(format!("{DEPLOY}/grafana/ip2p-relay.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is not JSON");
    assert_eq!(dashboard["uid"], "ip2p-relay");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id {} twice", p["id"]);
        let grid = &p["gridPos"];
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "{} is off the grid", p["title"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{} queries nothing", p["title"]);
            assert!(p["description"].as_str().is_some_and(|d| !d.is_empty()), "{} says nothing", p["title"]);
        }
    }
    let (exprs, variables) = dashboard_expressions(&dashboard);
    let (_node, _admin, live, _fleet) = live_metric_names(dp);
    let mut read = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            assert!(live.contains(&name), "the dashboard reads {name}, which /metrics does not have: {expr}");
            read.insert(name);
        }
    }
    for name in &variables {
        assert!(live.contains(name), "a dashboard variable reads {name}, which /metrics does not have");
    }
    for watched in [
        "ip2p_relayed_packets_total",
        "ip2p_relayed_bytes_total",
        "ip2p_allocations",
        "ip2p_permissions",
        "ip2p_channels",
        "ip2p_allocations_refused_total",
        "ip2p_auth_failures_total",
        "ip2p_dropped_packets_total",
        "ip2p_request_duration_seconds_bucket",
        "ip2p_worker_cpu_seconds_total",
        "ip2p_worker_relayed_packets_total",
        "ip2p_open_fds",
        "ip2p_max_fds",
        "ip2p_relay_ports",
        "ip2p_allocations_counted",
        "ip2p_draining",
        "ip2p_fleet_store_up",
        "ip2p_fleet_nodes",
        "ip2p_fleet_region_allocations",
        "ip2p_fleet_region_capacity",
        "ip2p_fleet_admissions_total",
    ] {
        assert!(read.contains(watched), "the dashboard does not show {watched}");
    }
    // Prometheus parses each one, Grafana's variables given values: as
    // recording rules, which promtool checks.
    let dir = ip2p_tests::TempDir::new("dashboard-rules");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*");
        rules.push_str(&format!("      - record: dashboard:expr{i}\n        expr: {}\n", serde_json::json!(expr)));
    }
    dir.file("dashboard.rules.yml", &rules);
    let out = promtool_ok(&["check", "rules", "dashboard.rules.yml"], dir.path());
    assert!(out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");
}

/// The `expr` values of a rules file: one line, or a folded block below.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        let indent = line.len() - line.trim_start().len();
        let value = value.trim();
        if value.starts_with(['>', '|']) {
            let mut block = Vec::new();
            while let Some(next) = lines.peek().filter(|l| l.len() - l.trim_start().len() > indent) {
                block.push(next.trim());
                lines.next();
            }
            exprs.push(block.join(" "));
        } else {
            exprs.push(value.to_owned());
        }
    }
    exprs
}

/// The rules without their annotations (what the unit tests check is
/// which alerts fire with which labels).
fn without_annotations(yaml: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(level) = skipping {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skipping = None;
        }
        if line.trim() == "annotations:" {
            skipping = Some(indent);
            continue;
        }
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// promtool checks the rules; its unit tests show each alert firing for a
/// node in trouble and not for one that only looks like it; every
/// expression reads metrics the relay exports (or Prometheus's `up`), and
/// every alert tells the person it wakes what to look at.
fn the_alert_rules_check_and_read_live_metrics(dp: DatapathKind) {
    let rules_path = format!("{DEPLOY}/prometheus/ip2p-relay.rules.yml");
    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let out = promtool_ok(&["check", "rules", &rules_path], Path::new(DEPLOY));
    let alerts = rules.matches("- alert: ").count();
    assert!(out.contains(&format!("SUCCESS: {alerts} rules found")), "{out}");
    assert_eq!(rules.matches("description: ").count(), alerts, "an alert without a description");

    let dir = ip2p_tests::TempDir::new("alert-rules");
    dir.file("ip2p-relay.rules.yml", &without_annotations(&rules));
    let tests = std::fs::read_to_string(format!("{DEPLOY}/prometheus/ip2p-relay.rules.test.yml")).unwrap();
    dir.file("ip2p-relay.rules.test.yml", &tests);
    let out = promtool_ok(&["test", "rules", "ip2p-relay.rules.test.yml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {alert}\n")), "{alert} has no unit test");
    }

    let (_node, _admin, live, _fleet) = live_metric_names(dp);
    let exprs = rule_expressions(&rules);
    assert_eq!(exprs.len(), alerts);
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr}");
        for name in names {
            assert!(name == "up" || live.contains(&name), "a rule reads {name}, which /metrics does not have: {expr}");
        }
    }
}

/// A Prometheus server (Debian's, from the package promtool came from)
/// scraping one relay's admin listener every second as the job
/// `ip2p-relay`, with the alert rules loaded; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: ip2p_tests::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let binary = promtool().with_file_name("prometheus");
        assert!(binary.exists(), "no {}: tests/deps.sh (make test) fetches it", binary.display());
        let dir = ip2p_tests::TempDir::new("prometheus");
        let rules = std::fs::read_to_string(format!("{DEPLOY}/prometheus/ip2p-relay.rules.yml")).unwrap();
        dir.file("ip2p-relay.rules.yml", &rules);
        let config = dir.file(
            "prometheus.yml",
            &format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 rule_files: [ip2p-relay.rules.yml]\n\
                 scrape_configs:\n  - job_name: ip2p-relay\n    static_configs: [{{ targets: [\"{target}\"] }}]\n"
            ),
        );
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .args(["--web.listen-address=127.0.0.1:0", "--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The port the OS chose, from the socket table.
        let pid = format!("pid={},", child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let out = Command::new("ss").args(["-ltnpH"]).output().unwrap();
            let listening = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.contains(&pid))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|a| a.parse().ok()));
            if let Some(addr) = listening {
                break addr;
            }
            assert!(Instant::now() < deadline, "Prometheus does not listen after 20 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        Self { child, addr, _dir: dir }
    }

    /// An instant query's result (the vector), once Prometheus answers.
    fn query(&self, expr: &str) -> Vec<Value> {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        // 503 while its storage is not ready yet (a loaded machine).
        let deadline = Instant::now() + Duration::from_secs(10);
        let (code, body) = loop {
            let (code, body) =
                ip2p_tests::http(self.addr, &format!("GET /api/v1/query?query={encoded} HTTP/1.0\r\n\r\n"));
            if code != 503 || Instant::now() > deadline {
                break (code, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(code, 200, "{expr}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["status"], "success", "{expr}: {body}");
        answer["data"]["result"].as_array().unwrap().clone()
    }

    /// The rules as Prometheus last evaluated them.
    fn rules(&self) -> Vec<Value> {
        let (code, body) = ip2p_tests::http(self.addr, "GET /api/v1/rules HTTP/1.0\r\n\r\n");
        assert_eq!(code, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        answer["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prometheus scrapes a relay that has served a client: every query of
/// the dashboard answers with data (the variables given values), and every
/// alert rule evaluates without error, none firing on a healthy node.
fn prometheus_answers_the_dashboard_and_evaluates_the_rules(dp: DatapathKind) {
    let (_node, admin, _, _fleet) = live_metric_names(dp);
    let prometheus = Prometheus::start(admin.local_addr());
    // Enough scrapes for a rate over 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.query("count_over_time(ip2p_uptime_seconds[10s]) >= 5").is_empty() {
        assert!(Instant::now() < deadline, "Prometheus has not scraped the relay 5 times in 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DEPLOY}/grafana/ip2p-relay.json")).unwrap()).unwrap();
    let (exprs, variables) = dashboard_expressions(&dashboard);
    for expr in &exprs {
        let expr = expr.replace("$__rate_interval", "5s").replace("$instance", ".*");
        assert!(!prometheus.query(&expr).is_empty(), "no data for the dashboard's {expr}");
    }
    for metric in &variables {
        let instances = prometheus.query(&format!("count by (instance) ({metric})"));
        assert_eq!(instances.len(), 1, "{instances:?}");
        assert_eq!(instances[0]["metric"]["instance"], admin.local_addr().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let rules = loop {
        let rules = prometheus.rules();
        if rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001"))) {
            break rules;
        }
        assert!(Instant::now() < deadline, "the rules are not evaluated after 10 s: {rules:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        rules.len(),
        std::fs::read_to_string(format!("{DEPLOY}/prometheus/ip2p-relay.rules.yml"))
            .unwrap()
            .matches("- alert: ")
            .count()
    );
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{}: {}", rule["name"], rule["lastError"]);
        assert_eq!(rule["state"], "inactive", "{} on a healthy node: {rule}", rule["name"]);
    }
}

on_both_datapaths! {
    the_dashboard_reads_live_metrics: the_dashboard_reads_live_metrics();
    the_alert_rules_check_and_read_live_metrics: the_alert_rules_check_and_read_live_metrics();
    prometheus_answers_the_dashboard_and_evaluates_the_rules: prometheus_answers_the_dashboard_and_evaluates_the_rules();
}
