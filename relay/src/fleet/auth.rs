//! Static users and TURN REST secrets kept in the fleet's store, beside
//! the configuration's: `ip2p:{NAME}:users` (user to `key:<32 hex>`, the
//! MD5 long-term key as coturn's `turnadmin -k` prints it, or
//! `password:<text>`), `ip2p:{NAME}:secrets` (a list, the first signs new
//! credentials), and `ip2p:{NAME}:auth_version`, raised with every change
//! (and an `auth` message on the control channel). Each node reads them
//! whole when the version moves and keeps them in memory: no request
//! waits on the store.

use std::sync::atomic::Ordering;

use redis::RedisResult;

use super::state::FleetState;
use super::store::{Keys, Store};
use super::users::{FleetAuth, parse_secret};
use crate::node::NodeHandle;

impl Keys {
    pub(super) fn users(&self) -> String {
        format!("{}users", self.prefix())
    }

    pub(super) fn secrets(&self) -> String {
        format!("{}secrets", self.prefix())
    }

    pub(super) fn auth_version(&self) -> String {
        format!("{}auth_version", self.prefix())
    }
}

/// The stored users and secrets as read: their version, each user's name
/// and stored secret, the secrets in order.
pub(super) type Stored = (u64, Vec<(String, String)>, Vec<String>);

impl Store {
    /// The version of the stored users and secrets (0: never set).
    pub(super) fn auth_version(&mut self) -> RedisResult<u64> {
        self.with(|con, keys| {
            let v: Option<u64> = redis::cmd("GET").arg(keys.auth_version()).query(con)?;
            Ok(v.unwrap_or(0))
        })
    }

    /// The stored users (name and raw secret) and secrets, with the
    /// version they are of.
    pub(super) fn auth(&mut self) -> RedisResult<Stored> {
        self.with(|con, keys| {
            let mut pipe = redis::pipe();
            pipe.atomic().cmd("GET").arg(keys.auth_version()).cmd("HGETALL").arg(keys.users());
            pipe.cmd("LRANGE").arg(keys.secrets()).arg(0).arg(-1);
            let (version, users, secrets): (Option<u64>, Vec<(String, String)>, Vec<String>) = pipe.query(con)?;
            Ok((version.unwrap_or(0), users, secrets))
        })
    }
}

/// Reads the stored users and secrets when their version moved past what
/// the node has, and gives them to the node (its workers from their next
/// request on).
pub(super) fn refresh(store: &mut Store, state: &FleetState, node: &NodeHandle) -> RedisResult<()> {
    let version = store.auth_version()?;
    let running = state.auth_version.load(Ordering::Relaxed);
    if version == running {
        return Ok(());
    }
    if version == 0 {
        // The store lost them (a Redis restarted without its data): the
        // node keeps what it has rather than refuse every stored user.
        if !state.auth_lost.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "fleet: the store has no users or secrets any more (restarted empty?); keeping the ones in memory: write them again"
            );
        }
        return Ok(());
    }
    state.auth_lost.store(false, Ordering::Relaxed);
    let (version, users, secrets) = store.auth()?;
    let mut auth = FleetAuth::default();
    for (user, stored) in users {
        let sane = !user.is_empty() && user.len() <= 508 && !user.chars().any(char::is_control);
        match parse_secret(&stored).filter(|_| sane) {
            Some(secret) => auth.users.push((user, secret)),
            None => {
                state.counts.records_ignored.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user = %user.chars().take(64).collect::<String>(), "fleet: a stored user is not key:<32 hex> or password:<text>; left out");
            }
        }
    }
    auth.secrets = secrets.into_iter().filter(|s| s.len() >= 16).map(String::into_bytes).collect();
    let (n_users, n_secrets) = (auth.users.len(), auth.secrets.len());
    node.set_fleet_auth(auth);
    state.auth_version.store(version, Ordering::Relaxed);
    tracing::info!(version, users = n_users, secrets = n_secrets, "fleet: users and REST secrets from the store");
    Ok(())
}

/// A change to the stored users and secrets.
#[derive(Debug)]
pub(super) enum AuthChange<'a> {
    /// Sets `user`'s stored secret (`key:<hex>`).
    SetUser(&'a str, String),
    RemoveUser(&'a str),
    /// Puts a REST secret first (it signs from now on).
    AddSecret(&'a str),
    RemoveSecret(String),
}

impl Store {
    /// Makes `change`, raises the version and tells every node, in one
    /// transaction; whether it changed anything.
    pub(super) fn change_auth(&mut self, change: &AuthChange<'_>) -> RedisResult<bool> {
        self.with(|con, keys| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            match change {
                AuthChange::SetUser(user, stored) => pipe.cmd("HSET").arg(keys.users()).arg(*user).arg(stored),
                AuthChange::RemoveUser(user) => pipe.cmd("HDEL").arg(keys.users()).arg(*user),
                AuthChange::AddSecret(secret) => {
                    pipe.cmd("LREM").arg(keys.secrets()).arg(0).arg(*secret).ignore();
                    pipe.cmd("LPUSH").arg(keys.secrets()).arg(*secret)
                }
                AuthChange::RemoveSecret(secret) => pipe.cmd("LREM").arg(keys.secrets()).arg(0).arg(secret),
            };
            pipe.cmd("INCR").arg(keys.auth_version()).ignore();
            pipe.cmd("PUBLISH").arg(keys.control()).arg(r#"{"op":"auth"}"#).ignore();
            let (changed,): (i64,) = pipe.query(con)?;
            Ok(changed > 0 || matches!(change, AuthChange::SetUser(..)))
        })
    }

    /// The stored users' names and the secrets, in order.
    pub(super) fn auth_listed(&mut self) -> RedisResult<(Vec<String>, Vec<String>)> {
        self.with(|con, keys| {
            let mut pipe = redis::pipe();
            pipe.cmd("HKEYS").arg(keys.users()).cmd("LRANGE").arg(keys.secrets()).arg(0).arg(-1);
            pipe.query(con)
        })
    }
}
