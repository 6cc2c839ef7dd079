//! The fleet's store: one connection to Redis with short timeouts, made
//! again when it breaks, and the scripts the node runs there. Every key of
//! a fleet carries its name as a hash tag (`ip2p:{NAME}:...`), so a
//! Cluster keeps one fleet on one slot and each script's keys together.

use std::time::Duration;

use redis::{Connection, RedisResult};

use super::scripts::{ADMIT, APPLY, LEAVE, PUBLISH, REWRITE};

/// How long a connect, a command or an answer may take before the store
/// counts as down.
pub(super) const TIMEOUT: Duration = Duration::from_millis(500);

/// The names of a fleet's keys.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(fleet: &str) -> Self {
        Self { prefix: format!("ip2p:{{{fleet}}}:") }
    }

    /// What every key of the fleet begins with.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The live nodes, each scored by when its record expires.
    pub(super) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// The nodes' records by id.
    pub(super) fn records(&self) -> String {
        format!("{}records", self.prefix)
    }
}

/// A connection to the fleet's Redis, made when needed.
pub(super) struct Store {
    target: super::target::Target,
    con: Option<Connection>,
    keys: Keys,
    /// A new connection was made: the node's counts must be written whole
    /// (the store may have lost them).
    pub(super) fresh: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("keys", &self.keys).field("connected", &self.con.is_some()).finish()
    }
}

impl Store {
    /// The store of `fleet` (not connected yet).
    pub(super) fn new(fleet: &crate::config::Fleet) -> RedisResult<Self> {
        let target = super::target::Target::parse(fleet)?;
        Ok(Self { target, con: None, keys: Keys::new(&fleet.name), fresh: false })
    }

    /// Runs `f` on the connection (made first when there is none); an
    /// error drops the connection, so the next call makes a new one.
    pub(super) fn with<T>(&mut self, f: impl FnOnce(&mut Connection, &Keys) -> RedisResult<T>) -> RedisResult<T> {
        if self.con.is_none() {
            let mut con = self.target.client()?.get_connection_with_timeout(TIMEOUT)?;
            con.set_read_timeout(Some(TIMEOUT))?;
            con.set_write_timeout(Some(TIMEOUT))?;
            // Pipelines call the quota scripts by their hash.
            for script in [&*ADMIT, &*APPLY, &*REWRITE] {
                script.load(&mut con)?;
            }
            self.fresh = true;
            self.con = Some(con);
        }
        let con = self.con.as_mut().ok_or_else(|| redis::RedisError::from(std::io::Error::other("no connection")))?;
        let result = f(con, &self.keys);
        if result.is_err() {
            self.con = None;
        }
        result
    }

    /// Publishes `record` (JSON) as node `id`'s for `ttl`; every live
    /// node's record as stored (`None` for one missing).
    pub(super) fn publish(&mut self, id: &str, record: &str, ttl: Duration) -> RedisResult<Vec<Option<String>>> {
        let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.with(|con, keys| PUBLISH.key(keys.nodes()).key(keys.records()).arg(id).arg(record).arg(ttl).invoke(con))
    }

    /// Takes node `id` out of the registry.
    pub(super) fn leave(&mut self, id: &str) -> RedisResult<()> {
        self.with(|con, keys| LEAVE.key(keys.nodes()).key(keys.records()).arg(id).invoke::<i64>(con).map(|_| ()))
    }
}
