//! `ip2p-relay`: command line, config, logging, signals and the systemd
//! notification protocol; the work is in the library.

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ip2p_relay::admin::Admin;
use ip2p_relay::config::{Cli, Command, DEV_USER, DatapathKind, LogFormat, RunArgs, Settings};
use ip2p_relay::handover;
use ip2p_relay::node::{self, Node};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use sd_notify::NotifyState;

/// How often STATUS= is refreshed when no watchdog asks for more.
const STATUS_EVERY: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    if let Ok(exe) = std::env::current_exe() {
        let _ = STARTED_AS.set(exe);
    }
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(file, cli.run),
        Some(Command::InitConfig { file }) => init_config(&file),
        None => run(&cli.run),
    }
}

fn check_config(file: std::path::PathBuf, mut args: RunArgs) -> ExitCode {
    args.config = Some(file.clone());
    match Settings::load(&args) {
        Ok(s) => {
            println!("{}: valid", file.display());
            println!("  listen        {:?} (UDP and TCP)", s.listen);
            if !s.tls_listen.is_empty() {
                println!("  tls listen    {:?}", s.tls_listen);
            }
            println!("  workers       {} ({:?} datapath)", s.workers, s.datapath);
            if s.xdp.mode != ip2p_relay::config::XdpMode::Off {
                let on = if s.xdp.interfaces.is_empty() {
                    "the serving interfaces".to_owned()
                } else {
                    s.xdp.interfaces.join(", ")
                };
                let hook = if s.xdp.generic { "generic" } else { "native" };
                let built = if ip2p_xdp::PROGRAM.is_some() { "" } else { " (this build has no XDP program)" };
                println!("  xdp           {:?} on {on}, {hook} hook, {} channels{built}", s.xdp.mode, s.xdp.channels);
            }
            println!("  relay         {:?}", s.proto.relay_ips);
            println!("  relay ports   {:?}", s.proto.ports);
            println!("  realm         {}", s.proto.credentials.realm);
            println!(
                "  credentials   {} users, {} REST secrets",
                s.proto.credentials.users.len(),
                s.proto.credentials.rest_secrets.len()
            );
            println!("  lifetimes     default {:?}, max {:?}", s.proto.default_lifetime, s.proto.max_lifetime);
            let total = s.max_allocations.map_or_else(|| "from relay ports and fds".to_owned(), |n| n.to_string());
            println!(
                "  quotas        allocations {total} on the node, {} per user, {} per address (0: none)",
                s.user_quota, s.ip_quota
            );
            println!(
                "  limits        {} unauthenticated answers/s per prefix, REST credentials up to {} s ahead",
                s.proto.unauthenticated_rate, s.proto.credentials.max_rest_lifetime
            );
            if let Some(admin) = s.admin {
                let token = if s.admin_token.is_some() { "with a token" } else { "no token" };
                println!("  admin         {admin} ({token})");
            }
            if s.nonce_secret_generated {
                println!("  note          auth.nonce_secret is not set: nonces will not survive a restart");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ip2p-relay: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes a first config, readable by its owner and group only (it holds
/// secrets); never over an existing file.
fn init_config(file: &std::path::Path) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = ip2p_relay::config::initial_config(&rand::random(), &rand::random());
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(file)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    match written {
        Ok(()) => {
            println!("{}: written (loopback only until edited)", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ip2p-relay: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let mut settings = match Settings::load(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ip2p-relay: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let log_filter = init_logging(&settings);

    // Signals go to this thread only: block them before workers inherit
    // the mask, then wait for them here.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGUSR2] {
        signals.add(s);
    }
    if let Err(e) = signals.thread_block() {
        eprintln!("ip2p-relay: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }

    let mut taken = None;
    // What systemd's file descriptor store holds from a restart comes
    // first; unusable, it is let go of and the node starts afresh.
    let stored = handover::fdstore::take_over().and_then(|t| {
        t.inspect_err(|e| {
            tracing::error!(error = %e, "cannot take over the node in systemd's file descriptor store; starting afresh");
        })
        .ok()
    });
    let asked = settings.handover_socket.clone().filter(|_| settings.take_over && stored.is_none());
    let started = match (stored, asked) {
        (Some(mut t), _) => {
            let started = t.start(&mut settings);
            taken = Some(t);
            started
        }
        (None, Some(path)) => match handover::take_over(&path) {
            Ok(mut t) => {
                let started = t.start(&mut settings);
                taken = Some(t);
                started
            }
            Err(e) => {
                let hint = match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                        " (does a relay with this handover.socket run?)"
                    }
                    _ => " (the running relay goes on serving)",
                };
                Err(std::io::Error::new(e.kind(), format!("cannot take over at {}: {e}{hint}", path.display())))
            }
        },
        (None, None) => node::start(&settings),
    };
    let mut node = match started {
        Ok(node) => node,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("ip2p-relay: {e}");
            if let Some(t) = taken {
                let _ = t.report(Err(&e.to_string()));
            }
            return ExitCode::FAILURE;
        }
    };
    // What can fail comes before a previous process is told this one
    // serves (it exits then): the admin listener (the previous process's
    // when it had one here) and the handover socket.
    let failed = |taken: Option<handover::TakenOver>, what: &str, e: &std::io::Error| {
        tracing::error!(error = %e, "cannot start");
        eprintln!("ip2p-relay: {e} ({what})");
        if let Some(t) = taken {
            let _ = t.report(Err(&e.to_string()));
        }
        ExitCode::FAILURE
    };
    let inherited_admin = taken.as_mut().and_then(|t| t.admin.take());
    let admin = match settings.admin {
        Some(addr) => {
            let same = |l: &std::net::TcpListener| {
                l.local_addr().is_ok_and(|a| a.ip() == addr.ip() && (a.port() == addr.port() || addr.port() == 0))
            };
            let token = settings.admin_token.clone();
            let started = match inherited_admin.filter(same) {
                Some(listener) => Admin::serve(listener, node.handle(), token),
                None => Admin::start(addr, node.handle(), token),
            };
            match started {
                Ok(admin) => {
                    tracing::info!(admin = %admin.local_addr(), token = settings.admin_token.is_some(), "admin listener: /metrics /healthz /readyz /status /selftest");
                    if !addr.ip().is_loopback() && settings.admin_token.is_none() {
                        tracing::warn!(
                            admin = %addr,
                            "the admin listener is not on loopback and has no token: anyone who reaches it reads \
                             /metrics and /status (users, addresses); set admin.token_file (docs/security.md)"
                        );
                    }
                    Some(admin)
                }
                Err(e) => return failed(taken, "admin.listen, --admin ADDR:PORT or off", &e),
            }
        }
        None => None,
    };
    let handover = match settings.handover_socket.as_deref().map(handover::listen).transpose() {
        Ok(h) => h,
        Err(e) => return failed(taken, "handover.socket, --handover-socket PATH", &e),
    };
    if let Some(t) = taken {
        let (allocations, writer) = (t.allocations, t.writer.clone());
        match t.report(Ok(())) {
            Ok(()) => {
                tracing::info!(allocations, from = %writer, version = %ip2p_relay::VERSION, "took over the previous process's node")
            }
            Err(e) => tracing::warn!(error = %e, "the previous process did not hear that this one serves"),
        }
    }
    if !settings.dev && (!args.users.is_empty() || !args.auth_secrets.is_empty()) {
        tracing::warn!(
            "credentials given with --user or --auth-secret are visible to every local user in the process list; \
             use --users-file and --auth-secret-file (or the config file)"
        );
    }
    if settings.nonce_secret_generated && !settings.take_over {
        tracing::info!("auth.nonce_secret not set: using a random one (nonces end with this process)");
    }
    if settings.dev {
        print_dev_banner(&settings, node.local_addrs(), admin.as_ref().map(Admin::local_addr));
    }
    // Every socket is bound and every worker runs: tell systemd.
    notify(&[NotifyState::Ready, NotifyState::Status(&status(&node))]);
    let mut reload = Reload { args, settings: &settings, log_filter };
    let signal_fd = match SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot read signals");
            return ExitCode::FAILURE;
        }
    };
    match serve(&mut node, &mut reload, &signal_fd, handover.as_ref(), admin.as_ref().map(Admin::listener)) {
        Ok(Stop::HandedOver) => {
            notify(&[NotifyState::Stopping]);
        }
        Ok(Stop::Signal(signal)) => {
            notify(&[NotifyState::Stopping]);
            // A `systemctl restart` hands over through systemd's store; a
            // stop (or a store that refused) drains: SIGTERM for
            // drain.timeout, SIGINT for a tenth of it.
            let store = (signal == Some(Signal::SIGTERM) && node.settings().fd_store)
                .then(handover::fdstore::restarting)
                .flatten();
            let secret = node.settings().proto.credentials.nonce_secret;
            let admin_fd = admin.as_ref().map(Admin::listener);
            let stored =
                store.is_some_and(|max| handover::fdstore::store(&node.handle(), max, &secret, admin_fd).is_ok());
            if !stored {
                let timeout = node.settings().drain_timeout;
                drain(&node, if signal == Some(Signal::SIGINT) { timeout / 10 } else { timeout }, &signal_fd);
            }
        }
        Err(e) => {
            notify(&[NotifyState::Stopping]);
            tracing::error!(error = %e, "waiting for signals failed; shutting down");
        }
    }
    drop(admin);
    match node.shutdown() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "a worker failed");
            ExitCode::FAILURE
        }
    }
}

/// Waits for signals until one says stop. Meanwhile, with a systemd
/// watchdog, pings it at half its interval, but only when every worker
/// answered (a stuck worker stops the pings and systemd restarts the
/// service); STATUS= is refreshed on the same beat.
/// Returns why it stops: a signal, or a new process that took over.
fn serve(
    node: &mut Node,
    reload: &mut Reload<'_>,
    signal_fd: &SignalFd,
    handover: Option<&std::os::fd::OwnedFd>,
    admin: Option<std::os::fd::BorrowedFd<'_>>,
) -> nix::Result<Stop> {
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec));
    let beat = watchdog.map_or(STATUS_EVERY, |w| (w / 2).max(Duration::from_millis(10)));
    let timeout = PollTimeout::try_from(beat).unwrap_or(PollTimeout::MAX);
    loop {
        let mut fds = vec![PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        fds.extend(handover.map(|h| PollFd::new(h.as_fd(), PollFlags::POLLIN)));
        match poll(&mut fds, timeout) {
            Ok(0) => {
                let alive = node.stats().len() == node.workers();
                if watchdog.is_some() && alive {
                    notify(&[NotifyState::Watchdog]);
                } else if !alive {
                    tracing::error!("a worker did not answer: withholding the watchdog ping");
                }
                notify(&[NotifyState::Status(&status(node))]);
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
        let asked = fds.get(1).and_then(PollFd::revents).is_some_and(|r| r.contains(PollFlags::POLLIN));
        if let Some(h) = handover.filter(|_| asked) {
            let secret = node.settings().proto.credentials.nonce_secret;
            match handover::serve_one(h.as_fd(), &node.handle(), &secret, admin) {
                Ok(Some(pid)) => {
                    // Under systemd the new process is the service now.
                    notify(&[NotifyState::MainPid(pid)]);
                    return Ok(Stop::HandedOver);
                }
                Ok(None) => notify(&[NotifyState::Status(&status(node))]),
                Err(e) => tracing::warn!(error = %e, "handover: cannot accept a request"),
            }
        }
        if !fds.first().and_then(PollFd::revents).is_some_and(|r| r.contains(PollFlags::POLLIN)) {
            continue;
        }
        let Some(info) = signal_fd.read_signal()? else { continue };
        match i32::try_from(info.ssi_signo).ok().and_then(|n| Signal::try_from(n).ok()) {
            Some(Signal::SIGUSR2) => upgrade(node.settings()),
            Some(Signal::SIGHUP) => {
                // systemd 253 and later want the time with RELOADING=1.
                let mut reloading = vec![NotifyState::Reloading];
                reloading.extend(NotifyState::monotonic_usec_now().ok());
                notify(&reloading);
                reload.run(node);
                notify(&[NotifyState::Ready, NotifyState::Status(&status(node))]);
            }
            signal => {
                tracing::info!(?signal, "shutting down");
                return Ok(Stop::Signal(signal));
            }
        }
    }
}

/// SIGUSR2: starts this program (the file it was started from, which an
/// upgrade may have replaced) again with the same arguments and
/// `--take-over`; the new process asks at the handover socket, and this
/// one hands over to it there (or goes on if it fails).
fn upgrade(settings: &Settings) {
    let Some(path) = settings.handover_socket.as_ref() else {
        tracing::warn!("SIGUSR2: no handover.socket configured, nothing to hand over to");
        return;
    };
    let Some(program) = STARTED_AS.get() else { return };
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if !args.iter().any(|a| a == "--take-over") {
        args.push("--take-over".into());
    }
    match std::process::Command::new(program).args(&args).spawn() {
        Ok(mut child) => {
            tracing::info!(program = %program.display(), pid = child.id(), socket = %path.display(), "SIGUSR2: started a new process to take over");
            // Reaped whatever becomes of it; it outlives this process if
            // it takes over.
            std::thread::spawn(move || {
                if let Ok(status) = child.wait()
                    && !status.success()
                {
                    tracing::warn!(%status, "the new process did not take over");
                }
            });
        }
        Err(e) => tracing::warn!(program = %program.display(), error = %e, "SIGUSR2: cannot start a new process"),
    }
}

/// The program file this process was started from, read at start: after
/// an upgrade replaced it, `/proc/self/exe` names the deleted old file.
static STARTED_AS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Why [`serve`] returned.
enum Stop {
    /// A signal to stop (drain first).
    Signal(Option<Signal>),
    /// A new process took the node over: exit at once.
    HandedOver,
}

/// Drains: new allocations are refused while the existing ones keep
/// relaying, until none is left or `timeout` passes. Another SIGINT or
/// SIGTERM ends the wait at once.
fn drain(node: &Node, timeout: Duration, signal_fd: &SignalFd) {
    node.drain();
    let deadline = std::time::Instant::now() + timeout;
    tracing::info!(allocations = node.allocations(), timeout_s = timeout.as_secs_f32(), "draining");
    let mut shown = None;
    while node.allocations() > 0 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            tracing::info!(allocations = node.allocations(), "drain timeout: closing the remaining allocations");
            return;
        }
        if shown != Some(node.allocations()) {
            // Only on change: the notification socket is not a log.
            shown = Some(node.allocations());
            notify(&[NotifyState::Status(&format!("draining: {}", status(node)))]);
        }
        let mut fds = [PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(left.min(Duration::from_millis(100))).unwrap_or(PollTimeout::ZERO);
        let hup = Signal::SIGHUP as u32;
        let stop = |s: Option<nix::sys::signalfd::siginfo>| s.is_some_and(|i| i.ssi_signo != hup);
        if poll(&mut fds, wait).is_ok_and(|n| n > 0) && signal_fd.read_signal().is_ok_and(stop) {
            tracing::info!("second stop signal: closing the remaining allocations");
            return;
        }
    }
    tracing::info!("drained: no allocation left");
}

/// Tells systemd, when it started us (NOTIFY_SOCKET); a no-op otherwise.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// The STATUS= line: what an operator sees in `systemctl status`.
fn status(node: &Node) -> String {
    let datapath = match node.datapath() {
        DatapathKind::IoUring => "io_uring",
        _ => "epoll",
    };
    format!("{} allocations, {} workers, {datapath} datapath", node.allocations(), node.workers())
}

/// What a SIGHUP needs: how the config was given, what runs, and the
/// log filter to change.
struct Reload<'a> {
    args: &'a RunArgs,
    settings: &'a Settings,
    log_filter: LogFilter,
}

impl Reload<'_> {
    /// SIGHUP (`systemctl reload`): reads the config again. A config that
    /// does not validate is refused and the running one stays. Otherwise
    /// users, REST secrets, peer policy, quotas, lifetimes and the log level
    /// change at once, allocations untouched; options that need a restart
    /// are named. The TLS certificate is read again too.
    fn run(&mut self, node: &mut Node) {
        let new = match Settings::load(self.args) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the new configuration is invalid; keeping the running one");
                return;
            }
        };
        let restart = node.reconfigure(&new);
        match tracing_subscriber::EnvFilter::try_new(&new.log_level) {
            Ok(filter) => {
                let _ = self.log_filter.reload(filter);
            }
            Err(e) => tracing::warn!(error = %e, "log.level not applied"),
        }
        if let Some(tls) = &self.settings.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "the new TLS certificate is refused; keeping the old one"),
            }
        }
        if restart.is_empty() {
            tracing::info!("configuration reloaded");
        } else {
            tracing::warn!(needs_restart = ?restart, "configuration reloaded; these changes need a restart");
        }
    }
}

type LogFilter = tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Logs to stderr (journald takes it from there), text or JSON, with a
/// filter a reload can change; RUST_LOG wins over the config.
fn init_logging(settings: &Settings) -> LogFilter {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colours only for a person at a terminal, never into journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let format = match settings.log_format {
        LogFormat::Text => format.boxed(),
        LogFormat::Json => format.json().boxed(),
    };
    tracing_subscriber::registry().with(filter).with(format).init();
    handle
}

fn print_dev_banner(settings: &Settings, local: &[std::net::SocketAddr], admin: Option<std::net::SocketAddr>) {
    let addr = local.first().map_or_else(|| "127.0.0.1:3478".to_owned(), ToString::to_string);
    let realm = &settings.proto.credentials.realm;
    println!("ip2p-relay (development mode) on {addr}, realm {realm:?}");
    println!("  user:     {}", DEV_USER.0);
    println!("  password: {}", DEV_USER.1);
    println!("  peers:    loopback (127.0.0.0/8, ::1) except this host's own addresses: try an echo on 127.0.0.2");
    let port = local.first().map_or(3478, std::net::SocketAddr::port);
    println!("  try:      turnutils_uclient -p {port} -u {} -w {} -r {realm} -y 127.0.0.1", DEV_USER.0, DEV_USER.1);
    println!("  WebRTC:   {{ urls: \"turn:{addr}\", username: \"{}\", credential: \"{}\" }}", DEV_USER.0, DEV_USER.1);
    if let Some(admin) = admin {
        println!(
            "  selftest: http://{admin}/selftest (in a browser: relay candidates and a data channel through the relay)"
        );
        println!("  metrics:  http://{admin}/metrics (also /status, /healthz, /readyz)");
    }
    println!("Ctrl-C stops it.");
}
