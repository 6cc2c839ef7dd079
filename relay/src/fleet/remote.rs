//! What the admin API asks of the whole fleet, through the store: on its
//! own connection (never the agent's), each call within the store's
//! timeouts, a gathering of answers within [`GATHER`].

use std::time::{Duration, Instant};

use serde_json::Value;

use super::auth::AuthChange;
use super::control::Control;
use super::state::FleetState;
use super::store::Store;

/// How long a fleet-wide question waits for the nodes' answers.
pub const GATHER: Duration = Duration::from_millis(1500);

impl FleetState {
    /// Runs `f` on the API's connection to the store (made when needed).
    fn api<T>(&self, f: impl FnOnce(&mut Store) -> redis::RedisResult<T>) -> Result<T, String> {
        let mut api = self.api.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if api.is_none() {
            *api = Some(Store::new(&self.settings).map_err(|e| e.to_string())?);
        }
        let store = api.as_mut().ok_or("no store")?;
        f(store).map_err(|e| format!("the fleet's store: {e}"))
    }

    /// Revokes `user` until `until` in the whole fleet: kept in the store
    /// and sent to every node.
    ///
    /// # Errors
    /// The store did not take it.
    pub fn revoke(&self, user: &str, until: u64) -> Result<(), String> {
        self.api(|s| s.send(&Control::Revoke { user: user.into(), until })).map(|_| ())
    }

    /// Lifts `user`'s revocation in the whole fleet.
    ///
    /// # Errors
    /// The store did not take it.
    pub fn lift(&self, user: &str) -> Result<(), String> {
        self.api(|s| s.send(&Control::Lift { user: user.into() })).map(|_| ())
    }

    /// Every node's sessions (of `user`, from `client`), each with its
    /// node's id; and the ids of the nodes that answered.
    ///
    /// # Errors
    /// The store did not take the question.
    pub fn sessions(
        &self,
        user: Option<String>,
        client: Option<std::net::IpAddr>,
    ) -> Result<(Vec<Value>, Vec<String>), String> {
        let reply = self.reply_key();
        let question = Control::Sessions { reply: reply.clone(), user, client };
        let answers = self.api(|s| {
            let listening = s.send(&question)?;
            s.answers(&reply, listening, Instant::now() + GATHER)
        })?;
        Ok(super::control::gather(answers))
    }

    /// Ends session `id` wherever it lives: the session as it was, with
    /// its node's id, when a node had it.
    ///
    /// # Errors
    /// The store did not take the question.
    pub fn kill(&self, id: &str) -> Result<Option<Value>, String> {
        let reply = self.reply_key();
        let question = Control::Kill { reply: reply.clone(), id: id.into() };
        let answers = self.api(|s| {
            s.send(&question)?;
            s.answers(&reply, 1, Instant::now() + GATHER)
        })?;
        Ok(answers
            .into_iter()
            .find(|a| a.get("ended") == Some(&Value::Bool(true)))
            .and_then(|mut a| a.get_mut("session").map(Value::take)))
    }

    /// A reply list of its own for one question.
    fn reply_key(&self) -> String {
        format!("{}{:016x}", super::store::Keys::new(&self.settings.name).reply_prefix(), rand::random::<u64>())
    }
}

impl FleetState {
    /// Stores `user` with MD5 long-term key `key` for every node.
    ///
    /// # Errors
    /// The store did not take it.
    pub fn set_user(&self, user: &str, key: [u8; 16]) -> Result<(), String> {
        let stored = format!("key:{}", hex::encode(key));
        self.api(|s| s.change_auth(&AuthChange::SetUser(user, stored))).map(|_| ())
    }

    /// Removes `user` from the store; whether it was there.
    ///
    /// # Errors
    /// The store did not take it.
    pub fn remove_user(&self, user: &str) -> Result<bool, String> {
        self.api(|s| s.change_auth(&AuthChange::RemoveUser(user)))
    }

    /// Puts REST secret `secret` first in the store (it signs from now
    /// on); its fingerprint.
    ///
    /// # Errors
    /// The store did not take it.
    pub fn add_secret(&self, secret: &str) -> Result<String, String> {
        self.api(|s| s.change_auth(&AuthChange::AddSecret(secret)))?;
        Ok(super::users::fingerprint(secret.as_bytes()))
    }

    /// Removes the stored REST secret of `fingerprint`; whether there was
    /// one.
    ///
    /// # Errors
    /// The store did not take it.
    pub fn remove_secret(&self, fingerprint: &str) -> Result<bool, String> {
        let (_, secrets) = self.api(Store::auth_listed)?;
        let Some(secret) = secrets.into_iter().find(|s| super::users::fingerprint(s.as_bytes()) == fingerprint) else {
            return Ok(false);
        };
        self.api(|s| s.change_auth(&AuthChange::RemoveSecret(secret)))
    }

    /// The stored users' names, and the stored secrets' fingerprints in
    /// order (the first signs).
    ///
    /// # Errors
    /// The store did not answer.
    pub fn auth_listed(&self) -> Result<(Vec<String>, Vec<String>), String> {
        let (mut users, secrets) = self.api(Store::auth_listed)?;
        users.sort();
        Ok((users, secrets.iter().map(|s| super::users::fingerprint(s.as_bytes())).collect()))
    }
}
