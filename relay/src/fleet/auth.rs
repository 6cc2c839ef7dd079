//! Static users and TURN REST secrets kept in the fleet's store, beside
//! the configuration's: `ip2p:{NAME}:users` (user to `key:<32 hex>`, the
//! MD5 long-term key as coturn's `turnadmin -k` prints it, or
//! `password:<text>`), `ip2p:{NAME}:secrets` (a list, the first signs new
//! credentials), and `ip2p:{NAME}:auth_version`, raised with every change
//! (and an `auth` message on the control channel). Each node reads them
//! whole when the version moves and keeps them in memory: no request
//! waits on the store.

use std::sync::atomic::Ordering;

use ip2p_turn::{Credentials, UserSecret};
use redis::RedisResult;

use super::FleetState;
use super::store::{Keys, Store};
use crate::node::NodeHandle;

/// The users and REST secrets a fleet's store adds to the configuration's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetAuth {
    /// Users by name; one of the store wins over the file's of that name.
    pub users: Vec<(String, UserSecret)>,
    /// REST secrets, before the configuration's (the first signs).
    pub secrets: Vec<Vec<u8>>,
}

impl FleetAuth {
    /// `credentials` with what the store adds.
    pub fn merge(&self, credentials: &mut Credentials) {
        for (user, secret) in &self.users {
            credentials.users.insert(user.clone(), secret.clone());
        }
        let mut secrets = self.secrets.clone();
        secrets.extend(credentials.rest_secrets.drain(..).filter(|s| !self.secrets.contains(s)));
        credentials.rest_secrets = secrets;
    }
}

/// A stored user's secret: `key:<32 hex>` or `password:<text>`.
#[must_use]
pub(super) fn parse_secret(stored: &str) -> Option<UserSecret> {
    if let Some(hex) = stored.strip_prefix("key:") {
        let mut key = [0u8; 16];
        hex::decode_to_slice(hex, &mut key).ok()?;
        return Some(UserSecret::Md5Key(key));
    }
    let password = stored.strip_prefix("password:")?;
    (!password.is_empty()).then(|| UserSecret::Password(password.to_owned()))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_secrets_read_as_keys_or_passwords_and_nothing_else() {
        assert_eq!(parse_secret("password:wonderland"), Some(UserSecret::Password("wonderland".into())));
        assert_eq!(parse_secret(&format!("key:{}", "ab".repeat(16))), Some(UserSecret::Md5Key([0xab; 16])));
        for bad in ["wonderland", "password:", "key:abc", "key:zz", &format!("key:{}", "ab".repeat(17))] {
            assert_eq!(parse_secret(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_stores_secrets_come_first_and_its_users_win() {
        let mut c = Credentials {
            realm: "r".into(),
            users: std::collections::HashMap::new(),
            rest_secrets: Vec::new(),
            nonce_secret: [0; 32],
            nonce_lifetime: 600,
            max_rest_lifetime: 3600,
        };
        c.users.insert("alice".into(), UserSecret::Password("file".into()));
        c.users.insert("bob".into(), UserSecret::Password("file".into()));
        c.rest_secrets = vec![b"file-secret-0123456".to_vec(), b"shared-secret-01234".to_vec()];
        let auth = FleetAuth {
            users: vec![("alice".into(), UserSecret::Password("store".into()))],
            secrets: vec![b"store-secret-01234".to_vec(), b"shared-secret-01234".to_vec()],
        };
        auth.merge(&mut c);
        assert_eq!(c.users["alice"], UserSecret::Password("store".into()));
        assert_eq!(c.users["bob"], UserSecret::Password("file".into()));
        let secrets: Vec<&[u8]> = c.rest_secrets.iter().map(Vec::as_slice).collect();
        assert_eq!(secrets, [&b"store-secret-01234"[..], b"shared-secret-01234", b"file-secret-0123456"]);
    }
}

/// A REST secret as the API names it: the first 8 bytes of its SHA-256,
/// in hex (the secret itself never leaves the store).
#[must_use]
pub(super) fn fingerprint(secret: &[u8]) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(secret);
    hex::encode(digest.get(..8).unwrap_or_default())
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
