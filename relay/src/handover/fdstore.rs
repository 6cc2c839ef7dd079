//! The handover through systemd's file descriptor store, for `systemctl
//! restart`: on SIGTERM while systemd restarts the service, the process
//! stores every descriptor of the handover (`FDSTORE=1`, each named by its
//! index in the snapshot) and the snapshot itself in a memfd, and exits;
//! systemd passes them to the next process it starts (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`), which takes the node over as from a process. On a
//! stop systemd discards the store; the process drains as before.

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use super::pack::{MAX_BYTES, MAX_FDS, Unpacked, bytes_to_send, give_up, unpack};
use crate::node::NodeHandle;

/// Each descriptor's name: this and its index in the snapshot.
const PREFIX: &str = "ip2p-handover-";
/// The memfd holding the snapshot.
const SNAPSHOT: &str = "ip2p-handover-snapshot";

/// Whether systemd is restarting this service right now (its job is a
/// `restart`): a SIGTERM then is a restart, not a stop. `Some`: it is, and
/// its store takes that many descriptors (`FileDescriptorStoreMax=`).
/// Asked of `systemctl`; anything else (no systemd, no store, no answer
/// within 3 s) is `None`.
#[must_use]
pub fn restarting() -> Option<usize> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let unit = own_unit()?;
    let jobs = output_within(systemctl().args(["list-jobs", "--no-legend", "--full"]), 3)?;
    let restart = jobs.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&unit.as_str()) && fields.get(2) == Some(&"restart")
    });
    tracing::debug!(%unit, restart, "systemd's jobs");
    if !restart {
        return None;
    }
    let mut show = systemctl();
    show.args(["show", "--property", "FileDescriptorStoreMax", "--value", &unit]);
    let max = output_within(&mut show, 3)?.trim().parse().ok().filter(|&max| max > 0);
    if max.is_none() {
        tracing::warn!(%unit, "restarting without a file descriptor store (FileDescriptorStoreMax=): draining");
    }
    max
}

/// `systemctl`, by its absolute path: not whatever PATH finds first.
/// (`IP2P_TEST_SYSTEMCTL` stands in for it in the tests of a restart.)
fn systemctl() -> Command {
    Command::new(std::env::var_os("IP2P_TEST_SYSTEMCTL").unwrap_or_else(|| SYSTEMCTL.into()))
}

/// Where Debian and every merged-/usr distribution have it.
const SYSTEMCTL: &str = "/usr/bin/systemctl";

/// The service unit this process runs in, from its cgroup (the unified
/// hierarchy's, or on a hybrid one systemd's own).
fn own_unit() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let paths = cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2));
    paths.filter_map(|p| p.rsplit('/').find(|c| c.ends_with(".service"))).next().map(str::to_owned)
}

/// What `command` writes to stdout, if it succeeds within `seconds`.
fn output_within(command: &mut Command, seconds: u64) -> Option<String> {
    let mut child = command
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Hands the node over to systemd's store (of `max` descriptors) for the
/// restart: stops the workers, stores every descriptor and the snapshot.
/// `Ok`: the process is to exit at once (no drain); the number of
/// allocations stored.
///
/// # Errors
/// The workers did not stop, the store is too small, or it refused a
/// descriptor: what was stored is removed again and the workers go on.
pub fn store(
    node: &NodeHandle,
    max: usize,
    nonce_secret: &[u8; 32],
    admin: Option<BorrowedFd<'_>>,
) -> io::Result<usize> {
    let admin = admin.and_then(|fd| fd.try_clone_to_owned().ok());
    let (snapshot, fds, moved) = give_up(node, nonce_secret, admin)?;
    if fds.len() >= max {
        let e = io::Error::other(format!(
            "{} descriptors and the snapshot do not fit in FileDescriptorStoreMax={max}",
            fds.len()
        ));
        tracing::warn!(error = %e, "handover: systemd's file descriptor store is too small; draining instead");
        node.resume();
        return Err(e);
    }
    let mut names = Vec::new();
    // FDPOLL=0: an ICMP error queued on a relay socket (POLLERR) must not
    // make systemd drop it from the store.
    fn store(name: &str) -> [NotifyState<'_>; 3] {
        [NotifyState::FdStore, NotifyState::FdName(name), NotifyState::Custom("FDPOLL=0")]
    }
    let stored = || -> io::Result<()> {
        for (i, fd) in fds.iter().enumerate() {
            names.push(format!("{PREFIX}{i}"));
            let name = names.last().map_or("", String::as_str);
            sd_notify::notify_with_fds(false, &store(name), &[fd.as_fd()])?;
        }
        let memfd = nix::sys::memfd::memfd_create(c"ip2p-handover", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
        let mut file = std::fs::File::from(memfd);
        file.write_all(&bytes_to_send(snapshot))?;
        file.rewind()?;
        names.push(SNAPSHOT.to_owned());
        sd_notify::notify_with_fds(false, &store(SNAPSHOT), &[file.as_fd()])
    };
    if let Err(e) = stored() {
        tracing::warn!(error = %e, "handover: systemd's file descriptor store refused; going on");
        remove(&names);
        node.resume();
        return Err(e);
    }
    tracing::info!(
        allocations = moved,
        descriptors = fds.len(),
        "handover: stored in systemd's file descriptor store; exiting"
    );
    Ok(moved)
}

/// Removes the descriptors named `names` from systemd's store.
pub(super) fn remove(names: &[String]) {
    for name in names {
        let _ = sd_notify::notify(false, &[NotifyState::FdStoreRemove, NotifyState::FdName(name)]);
    }
}

/// What systemd's store passed to this process at start, if it holds a
/// node a previous process left there: the names of what it held (to
/// remove from it once taken over), and the node unpacked, or why it is
/// unusable.
#[must_use]
pub(super) fn take() -> Option<(Vec<String>, io::Result<Unpacked>)> {
    let passed: Vec<_> = sd_notify::listen_fds_with_names(true).ok()?.collect();
    if !passed.iter().any(|(_, name)| name.starts_with(PREFIX)) {
        return None;
    }
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let mut names: Vec<String> = Vec::new();
    let mut snapshot = None;
    let mut fds: Vec<Option<OwnedFd>> = Vec::new();
    for (raw, name) in passed {
        // SAFETY: systemd passed these descriptors to this process
        // (LISTEN_PID is this process's); nothing else here owns them.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if name == SNAPSHOT {
            snapshot = Some(fd);
        } else if let Some(i) = name.strip_prefix(PREFIX).and_then(|i| i.parse::<usize>().ok()).filter(|&i| i < MAX_FDS)
        {
            if fds.len() <= i {
                fds.resize_with(i + 1, || None);
            }
            if let Some(slot) = fds.get_mut(i) {
                *slot = Some(fd);
            }
        } else {
            continue;
        }
        names.push(name);
    }
    let unpacked = snapshot.ok_or_else(|| invalid("no snapshot in the store")).and_then(|fd| {
        let mut bytes = Vec::new();
        let mut file = std::fs::File::from(fd);
        file.rewind()?;
        file.take(MAX_BYTES as u64).read_to_end(&mut bytes)?;
        unpack(&bytes, fds)
    });
    Some((names, unpacked))
}
