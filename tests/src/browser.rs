//! A headless Chromium driven over the DevTools protocol, for the tests
//! that need a real browser's WebRTC stack (the admin listener's self-test
//! page). The browser is Debian's `chromium-headless-shell` (tests/deps.sh
//! installs it); the protocol runs over a pair of pipes
//! (`--remote-debugging-pipe`: the browser reads commands on its fd 3 and
//! writes answers and events on its fd 4, each a JSON text ended by a NUL),
//! so no port is opened and nothing else is needed.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::TempDir;

/// The browsers tried, in order.
const BROWSERS: [&str; 3] = ["chromium-headless-shell", "chromium", "google-chrome"];

/// A browser with one page open; the browser is killed when dropped.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    to_browser: std::fs::File,
    from_browser: Receiver<Value>,
    next_id: u64,
    /// The page's session (commands for the page carry it).
    session: String,
    _profile: TempDir,
}

impl Browser {
    /// Starts a headless browser with one blank page `width`×`height`
    /// pixels. WebRTC may use loopback interfaces (the relays under test
    /// listen there). With `trust`, a TLS certificate whose public key has
    /// that hash (base64 SHA-256 of its SubjectPublicKeyInfo) is accepted
    /// whoever signed it, for whichever name.
    ///
    /// # Panics
    /// No browser is installed, or it does not answer.
    #[must_use]
    pub fn start(width: u32, height: u32, trust: Option<&str>) -> Self {
        let profile = TempDir::new("chromium");
        let (commands_read, commands_write) = nix::unistd::pipe().unwrap();
        let (answers_read, answers_write) = nix::unistd::pipe().unwrap();
        let program = BROWSERS
            .iter()
            .find(|b| {
                Command::new("sh").args(["-c", &format!("command -v {b}")]).output().is_ok_and(|o| o.status.success())
            })
            .expect("no headless Chromium: tests/deps.sh (make test) installs chromium-headless-shell");
        let mut command = Command::new(program);
        command
            .args([
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox", // the tests run as root
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--allow-loopback-in-peer-connection",
                "--hide-scrollbars",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .args(trust.map(|spki| format!("--ignore-certificate-errors-spki-list={spki}")))
            .process_group(0) // its helper processes go with it
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (commands_fd, answers_fd) = (commands_read.as_raw_fd(), answers_write.as_raw_fd());
        // SAFETY: between fork and exec only dup2, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                // fd 3 reads commands, fd 4 writes answers. Moved out of
                // the way first, in case either already is 3 or 4.
                let (c, a) = (libc::dup(commands_fd), libc::dup(answers_fd));
                if c < 0 || a < 0 || libc::dup2(c, 3) < 0 || libc::dup2(a, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        drop((commands_read, answers_write));
        let (tx, from_browser) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(std::fs::File::from(answers_read));
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                if message.last() == Some(&0) {
                    message.pop();
                }
                if let Ok(value) = serde_json::from_slice(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        let mut browser = Self {
            child,
            to_browser: std::fs::File::from(commands_write),
            from_browser,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = created["targetId"].as_str().unwrap().to_owned();
        let attached = browser.call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }));
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.page("Page.enable", json!({}));
        browser.page("Network.enable", json!({}));
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    /// Sends a command to the browser; its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// Sends a command to the page; its result.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.to_browser.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(answer) if answer["id"] == json!(id) => {
                    assert!(answer.get("error").is_none(), "{method}: {}", answer["error"]);
                    return answer["result"].clone();
                }
                Ok(_) => {} // an event, or another command's answer
                Err(RecvTimeoutError::Timeout) => panic!("{method}: the browser did not answer in 60 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: the browser exited"),
            }
        }
    }

    /// Sends `headers` with every request the page makes.
    pub fn set_headers(&mut self, headers: Value) {
        self.page("Network.setExtraHTTPHeaders", json!({ "headers": headers }));
    }

    /// Opens `url` and waits until `ready` (a script expression) is true.
    ///
    /// # Panics
    /// It is not within 20 s.
    pub fn open(&mut self, url: &str, ready: &str) {
        self.page("Page.navigate", json!({ "url": url }));
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(ready) != json!(true) {
            assert!(Instant::now() < deadline, "{url}: `{ready}` is not true after 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of a script expression in the page, promises awaited
    /// (`null` when it throws).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .page("Runtime.evaluate", json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }));
        result["result"]["value"].clone()
    }

    /// A PNG of the whole page.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let shot = self.page("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true }));
        base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: a plain syscall; the group is the browser's own.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}
