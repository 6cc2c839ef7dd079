//! A real load balancer in front of the relay: HAProxy or nginx (Debian's
//! packages; `tests/deps.sh` installs them, not their services), started
//! by the test on loopback ports with a configuration of its own and
//! ended by its PID when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::TempDir;

/// Which balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Haproxy,
    Nginx,
}

/// A balancer of this test's own.
#[derive(Debug)]
pub struct Balancer {
    child: Child,
    /// The ports it listens on, as the configuration was given them.
    pub ports: Vec<u16>,
    dir: TempDir,
}

impl Balancer {
    /// Starts `kind` with the configuration `config` writes for `ports`
    /// free loopback ports (and the directory it may keep files in), and
    /// waits until it listens on all of them. Another process may take a
    /// port first: then it starts again on others.
    pub fn start(kind: Kind, ports: usize, config: impl Fn(&[u16], &std::path::Path) -> String) -> Self {
        let mut last = String::new();
        for _ in 0..10 {
            let free: Vec<u16> = (0..ports).map(|_| free_port()).collect();
            let dir = TempDir::new(&format!("{kind:?}").to_lowercase());
            let file = dir.file("balancer.conf", &config(&free, dir.path()));
            let log = std::fs::File::create(dir.path().join("balancer.log")).unwrap();
            let mut command = match kind {
                Kind::Haproxy => {
                    let mut c = Command::new("haproxy");
                    c.arg("-db").arg("-f").arg(&file);
                    c
                }
                Kind::Nginx => {
                    let mut c = Command::new("nginx");
                    c.arg("-p").arg(dir.path()).arg("-c").arg(&file);
                    c
                }
            };
            let child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{kind:?} did not start ({e}); tests/deps.sh installs it"));
            let mut balancer = Self { child, ports: free, dir };
            if balancer.listening() {
                return balancer;
            }
            last = balancer.log();
        }
        panic!("{kind:?} did not start: {last}");
    }

    /// Whether it came to listen on all its ports (and still runs).
    fn listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            if self.ports.iter().all(|p| listens(&tcp, *p)) {
                std::thread::sleep(Duration::from_millis(50));
                return self.child.try_wait().ok().flatten().is_none();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The directory it keeps its files in.
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// What it logged.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("balancer.log")).unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        // nginx's workers end with their master on SIGTERM; HAProxy is one
        // process in the foreground.
        let _ = kill(Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0)), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port the OS just handed out and let go of.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether `/proc/net/tcp`'s text has a socket listening on `port`.
fn listens(tcp: &str, port: u16) -> bool {
    let hex = format!(":{port:04X}");
    tcp.lines().skip(1).any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.get(1).is_some_and(|a| a.ends_with(&hex)) && fields.get(3) == Some(&"0A")
    })
}
