//! Usage records to the fleet's stream (`ip2p:{NAME}:usage`, `XADD` with
//! `MAXLEN ~`): one consumer reads every node's records there. A thread of
//! its own sends them in pipelined batches; while Redis is away they wait
//! in a bounded queue ([`MAX_WAITING`]) and go on reconnection, and what
//! the queue cannot keep is counted, never silently lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::store::{Keys, Store};
use crate::config::Fleet;

/// Records waiting for the stream at most.
pub const MAX_WAITING: usize = 100_000;
/// Records sent in one round trip at most.
const BATCH: usize = 500;
/// How long the stream waits after a failure before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// How long a stopping node keeps trying to send what waits.
const LAST_TRY: Duration = Duration::from_secs(2);

/// What the stream did (for `/metrics`).
#[derive(Debug, Default)]
pub struct StreamCounts {
    /// Records in the stream.
    pub sent: AtomicU64,
    /// Records the queue could not keep while the store was away, or
    /// still waiting when the node stopped.
    pub lost: AtomicU64,
}

/// The usage records' stream and its thread; dropped, it sends what
/// waits (for 2 s at most) and ends.
#[derive(Debug)]
pub struct UsageStream {
    tx: Option<Sender<String>>,
    counts: Arc<StreamCounts>,
    thread: Option<JoinHandle<()>>,
}

impl UsageStream {
    /// The stream of `fleet`.
    ///
    /// # Errors
    /// The store's URL cannot be used, or the thread cannot be spawned.
    pub fn start(fleet: &Fleet) -> std::io::Result<Self> {
        let store = Store::new(fleet).map_err(|e| std::io::Error::other(format!("fleet.redis: {e}")))?;
        let (tx, rx) = crossbeam_channel::bounded(MAX_WAITING);
        let counts = Arc::new(StreamCounts::default());
        let sender =
            Sending { store, max_len: fleet.usage_stream, counts: Arc::clone(&counts), waiting: VecDeque::new() };
        let thread = std::thread::Builder::new().name("ip2p-usage-stream".into()).spawn(move || sender.run(&rx))?;
        Ok(Self { tx: Some(tx), counts, thread: Some(thread) })
    }

    /// Queues `record` (a JSON object); counted lost when the queue is
    /// full.
    pub fn send(&self, record: String) {
        if self.tx.as_ref().is_none_or(|tx| tx.try_send(record).is_err()) {
            self.counts.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What it did.
    #[must_use]
    pub fn counts(&self) -> Arc<StreamCounts> {
        Arc::clone(&self.counts)
    }
}

impl Drop for UsageStream {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Keys {
    /// The usage records' stream.
    pub(super) fn usage(&self) -> String {
        format!("{}usage", self.prefix())
    }
}

/// The stream's thread.
struct Sending {
    store: Store,
    max_len: u64,
    counts: Arc<StreamCounts>,
    /// Taken from the queue, not sent yet.
    waiting: VecDeque<String>,
}

impl Sending {
    fn run(mut self, rx: &Receiver<String>) {
        let mut retry_at: Option<Instant> = None;
        loop {
            let wait = retry_at.map_or(Duration::from_secs(3600), |at| at.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(record) => self.waiting.push_back(record),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while self.waiting.len() < BATCH
                && let Ok(record) = rx.try_recv()
            {
                self.waiting.push_back(record);
            }
            if retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            retry_at = self.send_waiting().err().map(|()| Instant::now() + RETRY);
        }
        // Stopping: what waits goes now, or counts as lost.
        let deadline = Instant::now() + LAST_TRY;
        while !self.waiting.is_empty() && Instant::now() < deadline && self.send_waiting().is_ok() {}
        self.counts.lost.fetch_add(self.waiting.len() as u64, Ordering::Relaxed);
    }

    /// Sends what waits, a batch a round trip; `Err` when the store failed
    /// (what was not sent waits on).
    fn send_waiting(&mut self) -> Result<(), ()> {
        while !self.waiting.is_empty() {
            let n = self.waiting.len().min(BATCH);
            let batch: Vec<&String> = self.waiting.iter().take(n).collect();
            let max_len = self.max_len;
            let sent = self.store.with(|con, keys| {
                let mut pipe = redis::pipe();
                for record in batch {
                    pipe.cmd("XADD").arg(keys.usage()).arg("MAXLEN").arg("~").arg(max_len).arg("*");
                    pipe.arg("record").arg(record).ignore();
                }
                pipe.query::<()>(con)
            });
            if let Err(e) = sent {
                tracing::debug!(error = %e, waiting = self.waiting.len(), "fleet: usage records wait for the store");
                return Err(());
            }
            self.waiting.drain(..n);
            self.counts.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }
}
