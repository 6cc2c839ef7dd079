//! Usage records (docs/operations.md, "Usage records"): a JSON line when
//! a session starts, every `usage.interval` while it lives, and when it
//! stops, written to `usage.file` by a thread of its own, never a
//! worker's: a slow disk never blocks relaying.
//!
//! Workers hand records to the writer through an unbounded queue, so no
//! start or stop record is lost while the process lives (there is one of
//! each per session); interim records carry running totals, so under
//! pressure (more than [`MAX_QUEUED_INTERIMS`] waiting) a new one is left
//! out and counted as coalesced: the next says the same and more. The
//! writer appends whole lines, gathered while more wait (up to 64 KiB a
//! write), whenever the queue is empty (a record reaches the file within a
//! second of its event), and reopens the file on SIGHUP (logrotate's
//! rename, then a reload).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use ip2p_turn::{ListenerId, Session};
use serde_json::json;

/// Interim records waiting for the writer before new ones are coalesced.
pub const MAX_QUEUED_INTERIMS: usize = 65_536;

/// What the log did, for `/metrics`.
#[derive(Debug, Default)]
pub struct UsageCounts {
    /// Records written, by event: start, interim, stop.
    pub written: [AtomicU64; 3],
    /// Interim records left out under pressure.
    pub coalesced: AtomicU64,
    /// Records that could not be written (and were lost).
    pub failed: AtomicU64,
    queued_interims: AtomicUsize,
    /// What the fleet's stream did, when records go there too.
    pub stream: Option<Arc<crate::fleet::StreamCounts>>,
}

/// A record's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Start,
    Interim,
    Stop(&'static str),
}

impl Kind {
    const fn index(self) -> usize {
        match self {
            Self::Start => 0,
            Self::Interim => 1,
            Self::Stop(_) => 2,
        }
    }
}

enum Message {
    /// A record to format and write (formatted off the worker).
    Record(Kind, Box<Session>, Arc<str>, &'static str, u64),
    Reopen,
}

/// The usage log: its writer thread, which ends (having written every
/// record queued) once the log and every worker's sink are dropped.
#[derive(Debug)]
pub struct UsageLog {
    sink: UsageSink,
    thread: Option<JoinHandle<()>>,
}

/// Where a worker sends its records. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct UsageSink {
    tx: Sender<Message>,
    counts: Arc<UsageCounts>,
    /// Stream listeners below this index are TCP, the others TLS.
    plain_streams: usize,
}

/// A worker's usage records: where they go, and when its next interim
/// round is due (`datapath/records.rs`).
#[derive(Debug)]
pub(crate) struct Records {
    pub(crate) sink: UsageSink,
    pub(crate) interval: std::time::Duration,
    /// When the next interim pass begins.
    pub(crate) next: std::time::Instant,
    /// The next slot of a pass under way.
    pub(crate) cursor: Option<u32>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Record(..) => "Record",
            Self::Reopen => "Reopen",
        })
    }
}

/// Sessions a worker writes interim records for per loop round: a pass
/// over many thousands is spread over rounds, never one long stall.
pub(crate) const INTERIM_BATCH: u32 = 256;

impl UsageLog {
    /// Opens `path` for appending (created if missing, readable by its
    /// owner and group alone), if given, and starts the writer, which
    /// also gives every record to `stream`, if given. `plain_streams`:
    /// the node's TCP listeners, before its TLS ones.
    ///
    /// # Errors
    /// The file cannot be opened, or the thread cannot be spawned.
    pub fn open(
        path: Option<&Path>,
        plain_streams: usize,
        stream: Option<crate::fleet::UsageStream>,
    ) -> io::Result<Self> {
        let file = match path {
            Some(p) => Some(open(p).map_err(|e| io::Error::new(e.kind(), format!("usage.file {}: {e}", p.display())))?),
            None => None,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let counts = Arc::new(UsageCounts { stream: stream.as_ref().map(|s| s.counts()), ..UsageCounts::default() });
        let writer = Writer::new(path, file, Arc::clone(&counts), stream);
        let thread = std::thread::Builder::new().name("ip2p-usage".into()).spawn(move || writer.run(&rx))?;
        Ok(Self { sink: UsageSink { tx, counts, plain_streams }, thread: Some(thread) })
    }

    /// A sink for a worker.
    pub(crate) fn sink(&self) -> UsageSink {
        self.sink.clone()
    }

    /// What it did.
    #[must_use]
    pub fn counts(&self) -> Arc<UsageCounts> {
        Arc::clone(&self.sink.counts)
    }

    /// Reopens the file by its path, after what is queued now (SIGHUP).
    pub fn reopen(&self) {
        let _ = self.sink.tx.send(Message::Reopen);
    }
}

impl Drop for UsageLog {
    fn drop(&mut self) {
        // The writer ends when the workers' sinks are gone too.
        let (tx, _) = crossbeam_channel::unbounded();
        drop(std::mem::replace(&mut self.sink.tx, tx));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl UsageSink {
    /// Queues the record of `kind` for session `s` (its counters as they
    /// stand) of `realm`, at unix time `time`; an interim one only while
    /// the queue has room. The writer formats it.
    pub(crate) fn record(&self, kind: Kind, s: Session, realm: &Arc<str>, time: u64) {
        if kind == Kind::Interim {
            let queued = self.counts.queued_interims.fetch_add(1, Ordering::Relaxed);
            if queued >= MAX_QUEUED_INTERIMS {
                self.counts.queued_interims.fetch_sub(1, Ordering::Relaxed);
                self.counts.coalesced.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let transport = self.transport(s.listener);
        let _ = self.tx.send(Message::Record(kind, Box::new(s), Arc::clone(realm), transport, time));
    }

    fn transport(&self, listener: ListenerId) -> &'static str {
        transport(listener, self.plain_streams)
    }
}

/// How a client on `listener` reaches the node: "udp", "tcp" or "tls"
/// (the stream listeners are the TCP ones, `plain` of them, then TLS).
pub(crate) fn transport(listener: ListenerId, plain: usize) -> &'static str {
    match listener.transport {
        ip2p_wire::Transport::Datagram => "udp",
        ip2p_wire::Transport::Stream if usize::from(listener.index) < plain => "tcp",
        ip2p_wire::Transport::Stream => "tls",
    }
}

/// A session as the API and the records show it (`realm`, `transport`
/// given).
pub(crate) fn session_json(s: &Session, realm: &str, transport: &str) -> serde_json::Value {
    json!({
        "id": s.id.to_string(),
        "user": s.user,
        "username": s.username,
        "realm": realm,
        "client": s.client.to_string(),
        "transport": transport,
        "relayed": s.relayed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "relay_transport": if s.tcp { "tcp" } else { "udp" },
        "started": s.started,
        "expires": s.expires,
        "permissions": s.permissions,
        "channels": s.channels,
        "packets_to_peers": s.usage.packets_to_peers,
        "bytes_to_peers": s.usage.bytes_to_peers,
        "packets_from_peers": s.usage.packets_from_peers,
        "bytes_from_peers": s.usage.bytes_from_peers,
    })
}

/// One record: the session's fields, `event`, `time` and (a stop's)
/// `reason`, as one flat JSON object (a line of the file, without its
/// newline).
fn record(kind: Kind, s: &Session, realm: &str, transport: &str, time: u64) -> String {
    let mut record = session_json(s, realm, transport);
    let (event, reason) = match kind {
        Kind::Start => ("start", None),
        Kind::Interim => ("interim", None),
        Kind::Stop(reason) => ("stop", Some(reason)),
    };
    if let Some(map) = record.as_object_mut() {
        map.insert("event".into(), event.into());
        map.insert("time".into(), time.into());
        if let Some(reason) = reason {
            map.insert("reason".into(), reason.into());
        }
    }
    record.to_string()
}

fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().append(true).create(true).mode(0o640).open(path)
}

/// Bytes of whole records gathered before they go to the file in one
/// write.
const BATCH: usize = 64 * 1024;

/// The log's thread: records go to the file as whole lines only, each
/// batch in one append, so two processes writing it at once (the moment
/// of a handover) never interleave inside a line.
struct Writer {
    path: PathBuf,
    /// The file, when records are written to one.
    file: Option<File>,
    /// The fleet's stream, when records go there too.
    stream: Option<crate::fleet::UsageStream>,
    /// Whole lines not written yet, and how many records of each kind.
    pending: Vec<u8>,
    pending_records: [u64; 3],
    counts: Arc<UsageCounts>,
}

impl Writer {
    fn new(
        path: Option<&Path>,
        file: Option<File>,
        counts: Arc<UsageCounts>,
        stream: Option<crate::fleet::UsageStream>,
    ) -> Self {
        let path = path.map(Path::to_owned).unwrap_or_default();
        Self { path, file, stream, pending: Vec::with_capacity(BATCH), pending_records: [0; 3], counts }
    }

    fn run(mut self, rx: &Receiver<Message>) {
        while let Ok(message) = rx.recv() {
            match message {
                Message::Record(kind, s, realm, transport, time) => {
                    let mut line = record(kind, &s, &realm, transport, time);
                    if let Some(stream) = &self.stream {
                        stream.send(line.clone());
                    }
                    line.push('\n');
                    self.add(kind, &line);
                }
                Message::Reopen => self.reopen(),
            }
            if rx.is_empty() || self.pending.len() >= BATCH {
                self.flush();
            }
        }
        self.flush();
    }

    fn add(&mut self, kind: Kind, line: &str) {
        if kind == Kind::Interim {
            self.counts.queued_interims.fetch_sub(1, Ordering::Relaxed);
        }
        self.pending.extend_from_slice(line.as_bytes());
        if let Some(n) = self.pending_records.get_mut(kind.index()) {
            *n += 1;
        }
    }

    /// Writes what is gathered; counts it written, or lost.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.pending_records);
        let Some(file) = &mut self.file else {
            self.pending.clear();
            return;
        };
        match file.write_all(&self.pending) {
            Ok(()) => {
                for (n, written) in records.iter().zip(&self.counts.written) {
                    written.fetch_add(*n, Ordering::Relaxed);
                }
            }
            Err(e) => self.failed(records.iter().sum(), &e),
        }
        self.pending.clear();
    }

    fn failed(&self, records: u64, e: &io::Error) {
        let before = self.counts.failed.fetch_add(records, Ordering::Relaxed);
        // Logged at the first, then each time the count passes a power of two.
        if before == 0 || (before + records).ilog2() > before.ilog2() {
            tracing::warn!(file = %self.path.display(), error = %e, failed = before + records, "usage records not written");
        }
    }

    /// The file again by its path (logrotate renamed it); on failure the
    /// old one stays.
    fn reopen(&mut self) {
        self.flush();
        if self.file.is_none() {
            return;
        }
        match open(&self.path) {
            Ok(file) => self.file = Some(file),
            Err(e) => tracing::warn!(file = %self.path.display(), error = %e, "usage file not reopened"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ip2p_turn::{SessionId, Usage};

    fn session() -> Session {
        Session {
            id: SessionId(0xabc),
            user: "alice".into(),
            username: "1767225600:alice".into(),
            listener: ListenerId::stream(1),
            client: "192.0.2.7:40000".parse().unwrap(),
            relayed: vec!["203.0.113.1:50000".parse().unwrap()],
            relays: Vec::new(),
            tcp: false,
            started: 1_767_222_000,
            expires: 1_767_222_600,
            permissions: 1,
            channels: 2,
            usage: Usage { packets_to_peers: 1, bytes_to_peers: 2, packets_from_peers: 3, bytes_from_peers: 4 },
        }
    }

    #[test]
    fn a_record_is_one_flat_json_object_on_a_line() {
        let line = record(Kind::Stop("killed"), &session(), "example.org", "tls", 1_767_222_100) + "\n";
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "stop");
        assert_eq!(v["reason"], "killed");
        assert_eq!(v["time"], 1_767_222_100);
        assert_eq!(v["id"], "0000000000000abc");
        assert_eq!(
            (&v["user"], &v["username"], &v["transport"]),
            (&"alice".into(), &"1767225600:alice".into(), &"tls".into())
        );
        assert_eq!(v["bytes_from_peers"], 4);
        assert!(v.as_object().unwrap().values().all(|f| !f.is_object()), "flat");
        let start: serde_json::Value =
            serde_json::from_str(&super::record(Kind::Start, &session(), "r", "udp", 1)).unwrap();
        assert!(start.get("reason").is_none());
    }

    #[test]
    fn records_the_file_refuses_are_counted_lost() {
        // Every write to /dev/full fails with ENOSPC.
        let log = UsageLog::open(Some(Path::new("/dev/full")), 1, None).unwrap();
        let realm: Arc<str> = "r".into();
        for kind in [Kind::Start, Kind::Stop("expired")] {
            log.sink().record(kind, session(), &realm, 1);
        }
        let counts = log.counts();
        drop(log);
        assert_eq!(counts.failed.load(Ordering::Relaxed), 2);
        assert!(counts.written.iter().all(|n| n.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn interim_records_coalesce_under_pressure_and_stops_never_do() {
        let dir = std::env::temp_dir().join(format!("ip2p-usage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("usage.jsonl");
        let log = UsageLog::open(Some(&path), 1, None).unwrap();
        let sink = log.sink();
        let realm: Arc<str> = "r".into();
        // As if the writer were stuck: the queue already full.
        log.sink.counts.queued_interims.store(MAX_QUEUED_INTERIMS, Ordering::Relaxed);
        sink.record(Kind::Interim, session(), &realm, 1);
        sink.record(Kind::Stop("expired"), session(), &realm, 2);
        let counts = log.counts();
        assert_eq!(counts.coalesced.load(Ordering::Relaxed), 1);
        log.sink.counts.queued_interims.store(0, Ordering::Relaxed);
        sink.record(Kind::Interim, session(), &realm, 3);
        drop(sink);
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let events: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(events, ["stop", "interim"]);
        assert_eq!(counts.written.iter().map(|n| n.load(Ordering::Relaxed)).collect::<Vec<_>>(), [0, 1, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
