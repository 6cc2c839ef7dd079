//! The end-to-end tests' harness: the relay binary started as an operator
//! would start it (flags, a config file, a low fd limit, a shell standing
//! in for systemd) by [`Relay::start`], its log read line by line, its
//! process measured from /proc, its admin API scraped, and raw STUN
//! packets built with ip2p-wire to send at it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ip2p_relay::config::{DatapathKind, RunArgs, Settings};
use ip2p_relay::node::{self, Node};
use ip2p_wire::{Attribute, Class, Message, MessageType, MessageWriter, Method, TransactionId};

pub mod balancer;
pub mod browser;
pub mod redis;
pub mod support;

/// The relay binary of this build, built first if it is not (or not up to
/// date): `cargo test` of this crate alone does not build other crates'
/// binaries.
pub fn relay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("IP2P_RELAY_BIN") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/e2e-<hash> → target/<profile>/ip2p-relay
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "ip2p-relay", "--bin", "ip2p-relay"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "cannot build ip2p-relay");
        profile_dir.join("ip2p-relay")
    })
    .clone()
}

/// The version string of [`next_relay_bin`].
pub const NEXT_VERSION: &str = "0.0.0-next";

/// The relay built once more with another version string
/// ([`NEXT_VERSION`]), for a handover between versions: `make test`
/// builds it first (`IP2P_RELAY_NEXT_BIN`); otherwise it is built here, in
/// a target directory of its own.
pub fn next_relay_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("IP2P_RELAY_NEXT_BIN") {
            return PathBuf::from(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let target = root.join("target/next");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "ip2p-relay", "--bin", "ip2p-relay", "--target-dir"])
            .arg(&target)
            .env("IP2P_VERSION", NEXT_VERSION)
            .current_dir(root)
            .status()
            .unwrap();
        assert!(status.success(), "cannot build ip2p-relay {NEXT_VERSION}");
        target.join("debug/ip2p-relay")
    })
    .clone()
}

/// The settings `toml` gives on datapath `dp`, as the binary reads them.
pub fn settings(dp: DatapathKind, toml: &str) -> Settings {
    let args = RunArgs { datapath: Some(dp), ..RunArgs::default() };
    Settings::from_toml(toml, &args).unwrap()
}

/// A node started in this process from `toml` on datapath `dp`.
pub fn start_node(dp: DatapathKind, toml: &str) -> Node {
    node::start(&settings(dp, toml)).unwrap()
}

/// A file in a fresh directory of this test's, removed with it.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ip2p-e2e-{}-{name}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` in the directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running relay process, and its log (its stderr, read line by line
/// for the process's whole life, so the relay never blocks on a full
/// pipe). Killed when dropped, if it still runs.
#[derive(Debug)]
pub struct Relay {
    child: Child,
    lines: Mutex<Receiver<String>>,
    /// What it prints on stdout (the banner of `--dev`), line by line.
    stdout: Mutex<Receiver<String>>,
    /// Every line read so far.
    seen: Mutex<Vec<String>>,
    /// The first listen address (UDP and TCP).
    pub addr: SocketAddr,
    /// Every listen address, in the config's order (ports resolved).
    pub addrs: Vec<SocketAddr>,
    /// The TLS listen addresses.
    pub tls_addrs: Vec<SocketAddr>,
    /// The admin listener, when it has one.
    pub admin: Option<SocketAddr>,
    /// The config file, when it was started with one.
    config: Option<PathBuf>,
    _dir: TempDir,
}

/// How to start a relay: the config file and flags it is given, and how
/// its process is started.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// `--datapath`: "epoll" or "io_uring"; `None`: the binary's choice.
    pub datapath: Option<&'static str>,
    /// The config file's text (`--config`); `None`: flags alone.
    pub config: Option<String>,
    /// Flags, after `--config` and `--datapath`.
    pub args: Vec<String>,
    /// `ulimit -n` to start it under, if any.
    pub fd_limit: Option<u32>,
    /// Shell lines run in its process before the relay is exec'd there
    /// (what a test stands in for: `WATCHDOG_PID=$$`, descriptors moved
    /// into place as systemd passes them).
    pub shell: Option<String>,
    /// The network namespace to run it in, if any (see [`Netns`]).
    pub netns: Option<String>,
    /// Another binary than [`relay_bin`].
    pub bin: Option<PathBuf>,
    /// Environment variables to set.
    pub env: Vec<(String, String)>,
}

impl RelayOptions {
    /// A relay on `datapath` with `config` as its config file.
    pub fn new(datapath: &'static str, config: &str) -> Self {
        Self { datapath: Some(datapath), config: Some(config.to_owned()), ..Self::default() }
    }

    /// A relay given flags alone.
    pub fn flags(args: &[&str]) -> Self {
        Self { args: args.iter().map(|&a| a.to_owned()).collect(), ..Self::default() }
    }

    /// With environment variable `key` set to `value`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// With one more flag.
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_owned());
        self
    }

    /// Whether the relay is to log an admin listener: `--admin` says, or
    /// the config's `[admin]` table, or by default it has one.
    fn admin(&self) -> bool {
        if let Some(i) = self.args.iter().rposition(|a| a == "--admin") {
            return self.args.get(i + 1).is_some_and(|a| a != "off");
        }
        self.config.as_deref().is_none_or(|c| !c.contains("[admin]") || !c.contains("listen = \"off\""))
    }

    /// The command that starts it, with `config` as its config file.
    fn command(&self, config: Option<&Path>) -> Command {
        let bin = self.bin.clone().unwrap_or_else(relay_bin);
        let mut script = self.shell.clone().unwrap_or_default();
        if let Some(n) = self.fd_limit {
            script.push_str(&format!("\nulimit -n {n}"));
        }
        // ip netns exec NS, then bash -c SCRIPT when there is one, then the relay.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(Into::into));
        }
        if !script.is_empty() {
            // Any line that fails stops it before the relay starts.
            argv.extend(["bash".into(), "-c".into(), format!("set -e\n{script}\nexec \"$0\" \"$@\"").into()]);
        }
        argv.push(bin.into_os_string());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        if let Some(datapath) = self.datapath {
            command.args(["--datapath", datapath]);
        }
        command
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

impl Relay {
    /// Starts the binary and waits for its start line (and its admin
    /// listener's, when it has one).
    pub fn start(opts: &RelayOptions) -> Self {
        let dir = TempDir::new("relay");
        let config = opts.config.as_ref().map(|text| dir.file("relay.toml", text));
        let mut child = opts.command(config.as_deref()).spawn().unwrap();
        let lines = read_lines(child.stderr.take().unwrap());
        let stdout = read_lines(child.stdout.take().unwrap());
        let mut relay = Self {
            child,
            lines: Mutex::new(lines),
            stdout: Mutex::new(stdout),
            seen: Mutex::new(Vec::new()),
            addr: "0.0.0.0:0".parse().unwrap(),
            addrs: Vec::new(),
            tls_addrs: Vec::new(),
            admin: None,
            config,
            _dir: dir,
        };
        let started = relay.wait_for("ip2p-relay started");
        let list = |key: &str| -> Vec<SocketAddr> {
            // `[127.0.0.1:3478, [::1]:3478] `: the list ends at the bracket before a space.
            let list = started.split(key).nth(1).and_then(|l| l.split("] ").next()).unwrap_or_default();
            list.split(", ").filter(|a| !a.is_empty()).map(|a| a.parse().unwrap()).collect()
        };
        relay.addrs = list("listen=[");
        relay.tls_addrs = list("tls=[");
        relay.addr = relay.addrs[0];
        if opts.admin() {
            let line = relay.wait_for("admin listener");
            relay.admin = Some(field(&line, "admin=").parse().unwrap());
        }
        relay
    }

    /// The process ID.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Sends the process `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// The config file it was started with (a test may change it and
    /// reload).
    pub fn config_path(&self) -> &Path {
        self.config.as_deref().expect("started without a config file")
    }

    /// The next line containing `what`, within 10 s.
    pub fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let lines = self.lines.lock().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no log line with {what:?}; the log so far:\n{}", self.seen.lock().unwrap().join("\n"))
            });
            self.seen.lock().unwrap().push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
    }

    /// The next line it prints on stdout, within 10 s.
    pub fn stdout_line(&self) -> String {
        let stdout = self.stdout.lock().unwrap();
        stdout.recv_timeout(Duration::from_secs(10)).expect("nothing more on stdout")
    }

    /// Every line logged so far (reading what is waiting).
    pub fn seen(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        let mut seen = self.seen.lock().unwrap();
        while let Ok(line) = lines.try_recv() {
            seen.push(line);
        }
        seen.clone()
    }

    /// The lines logged so far that contain `what`.
    pub fn count(&self, what: &str) -> usize {
        self.seen().iter().filter(|l| l.contains(what)).count()
    }

    /// CPU time the process has used (user and system).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // After the command name in parentheses: field 14 and 15 are utime, stime.
        let rest = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        let ticks = fields[11] + fields[12];
        // In USER_HZ, which Linux fixes at 100 for /proc.
        Duration::from_millis(ticks * 10)
    }

    /// Threads of the process.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap().count()
    }

    /// Open file descriptors of the process.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Resident memory, in kB.
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The admin API's metrics (no token).
    pub fn metrics(&self) -> HashMap<String, f64> {
        metrics(self.admin.expect("no admin listener"), None)
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// How the process exited, which it must within `limit`.
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process exits within 5 s (a handover's old process).
    pub fn exits(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        !self.alive()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Only a process not yet reaped is signalled: a PID once waited
        // for may be another's now.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of `from`, read on a thread of their own to its end.
fn read_lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The text after `key` up to `]`, `,` or a space, in a log line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let rest = line.split(key).nth(1).unwrap_or_else(|| panic!("no {key} in {line:?}"));
    rest.split([']', ',', ' ']).next().unwrap()
}

/// A network namespace of the test's own (`ip netns add`), deleted with
/// it: hosts and addresses a test needs that loopback does not have.
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new(tag: &str) -> Self {
        let name = format!("ip2p-e2e-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Self(name);
        ns.run(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS` inside the namespace.
    pub fn run(&self, args: &[&str]) {
        let mut all = vec!["-n", self.0.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Runs `f` on a thread that has entered the namespace (its sockets
    /// live there), and returns what it returns.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// An HTTP request to the admin API: its status code and body.
pub fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let (code, _, body) = http_with_head(addr, request);
    (code, body)
}

/// [`http`], with the response's head (status line and headers) too.
pub fn http_with_head(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (code, head.to_owned(), body.to_owned())
}

/// GET `path`, with a bearer token if given.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n"))
}

/// POST `body` (JSON) to `path`, with a bearer token if given.
pub fn post(addr: SocketAddr, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n");
    http(addr, &format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()))
}

/// DELETE `path`, with a bearer token if given.
pub fn delete(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    http(addr, &format!("DELETE {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n"))
}

/// The samples of `/metrics`: `name{labels}` → value.
pub fn metrics(addr: SocketAddr, token: Option<&str>) -> HashMap<String, f64> {
    let (code, body) = get(addr, "/metrics", token);
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// A request of `method` with `attrs` and no credentials; with
/// `fingerprint`, FINGERPRINT last.
pub fn request(method: Method, attrs: &[Attribute<'_>], fingerprint: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let tid = TransactionId(std::array::from_fn(|i| u8::try_from(i).unwrap() ^ 0x5A));
    let mut w = MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
    for a in attrs {
        w.add_attribute(a).unwrap();
    }
    let len = if fingerprint { w.fingerprint().unwrap() } else { w.finish() };
    buf.truncate(len);
    buf
}

/// A plain UDP peer on loopback, at 127.0.0.2: 127.0.0.1 is the host's
/// (and the relay's) own address, never a peer but at a relayed address.
pub fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// What `peer` receives next, and from whom; fails after its read timeout.
pub fn recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer received nothing");
    (buf[..n].to_vec(), from)
}

/// A UDP socket on loopback for raw packets.
pub fn udp(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    s
}

/// Sends `packet` to `to` and returns the answer, if one comes within
/// half a second.
pub fn exchange(socket: &UdpSocket, to: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(packet, to).unwrap();
    let mut buf = [0u8; 2048];
    socket.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

/// The error code of a STUN response.
pub fn code(response: &[u8]) -> Option<u16> {
    let m = Message::parse(response).ok()?;
    m.get::<ip2p_wire::attr::ErrorCodeAttr>().ok()?.map(|e| e.code.code())
}
