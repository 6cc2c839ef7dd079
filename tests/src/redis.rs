//! A real `redis-server` (Debian's package; `tests/deps.sh` installs it)
//! on a loopback port, started by the test that uses it and ended by its
//! PID when dropped: no persistence, its files in a scratch directory.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::TempDir;

/// A redis-server of this test's own.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
    /// Its arguments beyond the address and port.
    args: Vec<String>,
    /// A Sentinel's configuration, which it rewrites: kept while it runs.
    config: Option<TempDir>,
}

impl Redis {
    /// Starts one on a free loopback port and waits until it answers.
    #[must_use]
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Redis::start`] with more arguments (`--replicaof`, a Sentinel's
    /// configuration file and `--sentinel`...).
    #[must_use]
    pub fn start_with(args: &[&str]) -> Self {
        for _ in 0..20 {
            // A port the OS just handed out and let go of: another process
            // may take it first, then redis-server fails and we go again.
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let args = args.iter().map(|a| (*a).to_owned()).collect();
            let dir = TempDir::new(&format!("redis-{port}"));
            let mut redis = Self { child: None, port, dir, args, config: None };
            if redis.spawn() {
                return redis;
            }
        }
        panic!("redis-server did not start (is it installed? tests/deps.sh installs it)");
    }

    /// A Sentinel of its own watching `master` as `name` (quorum 1, down
    /// after 500 ms).
    #[must_use]
    pub fn sentinel(master: &Redis, name: &str) -> Self {
        let dir = TempDir::new("sentinel-config");
        let config = dir.file(
            "sentinel.conf",
            &format!(
                "sentinel monitor {name} 127.0.0.1 {} 1\nsentinel down-after-milliseconds {name} 500\n\
                 sentinel failover-timeout {name} 2000\n",
                master.port
            ),
        );
        let config = config.display().to_string();
        let mut sentinel = Self::start_with(&[&config, "--sentinel"]);
        sentinel.config = Some(dir);
        sentinel
    }

    /// Starts the server on its port again (after [`Redis::stop`]): empty,
    /// as after a restart that lost its data. Whether it answers.
    pub fn spawn(&mut self) -> bool {
        let sentinel = self.args.iter().any(|a| a == "--sentinel");
        let mut command = Command::new("redis-server");
        // A Sentinel's configuration file comes first.
        command.args(self.args.iter().take_while(|a| !a.starts_with("--")));
        command.args(["--bind", "127.0.0.1", "--port", &self.port.to_string()]);
        if !sentinel {
            command.args(["--save", "", "--appendonly", "no"]);
        }
        let child = command
            .args(["--dir", &self.dir.path().display().to_string(), "--protected-mode", "yes"])
            .args(self.args.iter().skip_while(|a| !a.starts_with("--")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (tests/deps.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                self.child = None;
                return false;
            }
            // The server that answers must be ours: another test's may
            // hold the port (ours then fails to bind and exits).
            let pid = self.child.as_ref().map(Child::id);
            let info = self.try_cli(&["INFO", "server"]).unwrap_or_default();
            if pid.is_some_and(|p| info.lines().any(|l| l.trim() == format!("process_id:{p}"))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        false
    }

    /// Its URL for `fleet.redis`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What `redis-cli` prints for `args` against it.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops it (SIGKILL: what it held is gone) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing answers.
    pub fn hang(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Lets it go on after [`Redis::hang`].
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        if let Some(child) = &self.child {
            let _ = kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume();
        self.stop();
    }
}
