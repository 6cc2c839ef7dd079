//! What one node asks of every node: messages on the fleet's control
//! channel (`ip2p:{NAME}:control`, Redis pub/sub), each node's listener
//! thread carrying them out. A revocation ends the user's sessions and is
//! refused from then on; a kill ends a session wherever it lives; a
//! sessions query is answered with this node's sessions. Answers go to
//! the asker's reply list (`ip2p:{NAME}:reply:...`, expiring). Revocations
//! are also kept in the store (`ip2p:{NAME}:revocations`, user to unix
//! time), read whole on every (re)subscription: what was revoked while
//! this node was away is in force before it listens on.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::RedisResult;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::state::FleetState;
use super::store::{Keys, Store, TIMEOUT};
use crate::node::NodeHandle;

/// The most sessions one node puts in an answer to a fleet-wide list.
pub const MAX_LISTED: usize = 10_000;
/// How long an answer waits in its reply list for the asker.
const REPLY_TTL_MS: u64 = 5000;

/// A message on the control channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum Control {
    /// `user` is refused until `until` (unix seconds); its sessions end.
    Revoke { user: String, until: u64 },
    /// `user`'s revocation ends.
    Lift { user: String },
    /// This node's sessions (of `user`, from `client`), to `reply`.
    Sessions { reply: String, user: Option<String>, client: Option<IpAddr> },
    /// End session `id` if it is this node's; say so to `reply`.
    Kill { reply: String, id: String },
    /// The stored users and REST secrets changed: read them again.
    Auth,
}

impl Control {
    /// Whether a message read from the store is one a node sends: a user
    /// name a request could carry, a reply list of this fleet's.
    pub(super) fn is_sane(&self, keys: &Keys) -> bool {
        let user = |u: &str| !u.is_empty() && u.len() <= 508 && !u.chars().any(char::is_control);
        let reply = |r: &str| r.len() <= 128 && r.starts_with(&keys.reply_prefix());
        match self {
            Self::Revoke { user: u, .. } | Self::Lift { user: u } => user(u),
            Self::Sessions { reply: r, user: u, .. } => reply(r) && u.as_deref().is_none_or(user),
            Self::Kill { reply: r, id } => reply(r) && id.len() <= 16,
            Self::Auth => true,
        }
    }
}

impl Keys {
    /// The control channel.
    pub(super) fn control(&self) -> String {
        format!("{}control", self.prefix())
    }

    /// The revocations in force, user to unix time.
    pub(super) fn revocations(&self) -> String {
        format!("{}revocations", self.prefix())
    }

    /// What every reply list's name begins with.
    pub(super) fn reply_prefix(&self) -> String {
        format!("{}reply:", self.prefix())
    }
}

impl Store {
    /// The revocations in force at `now`, the lapsed ones removed.
    pub(super) fn revocations(&mut self, now: u64) -> RedisResult<Vec<(String, u64)>> {
        self.with(|con, keys| {
            let all: Vec<(String, u64)> = redis::cmd("HGETALL").arg(keys.revocations()).query(con)?;
            let (live, lapsed): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, until)| *until > now);
            if !lapsed.is_empty() {
                let users: Vec<&String> = lapsed.iter().map(|(u, _)| u).collect();
                redis::cmd("HDEL").arg(keys.revocations()).arg(users).query::<i64>(con)?;
            }
            Ok(live)
        })
    }

    /// Sends `message` to every node; how many listen.
    pub(super) fn send(&mut self, message: &Control) -> RedisResult<usize> {
        let text = serde_json::to_string(message).map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
        self.with(|con, keys| {
            let mut pipe = redis::pipe();
            pipe.atomic();
            match message {
                Control::Revoke { user, until } => {
                    pipe.cmd("HSET").arg(keys.revocations()).arg(user).arg(until).ignore();
                }
                Control::Lift { user } => {
                    pipe.cmd("HDEL").arg(keys.revocations()).arg(user).ignore();
                }
                Control::Sessions { .. } | Control::Kill { .. } | Control::Auth => {}
            }
            pipe.cmd("PUBLISH").arg(keys.control()).arg(text);
            let (listening,): (usize,) = pipe.query(con)?;
            Ok(listening)
        })
    }

    /// Puts `answer` on reply list `reply`.
    fn answer(&mut self, reply: &str, answer: &Value) -> RedisResult<()> {
        self.with(|con, _| {
            redis::pipe()
                .cmd("RPUSH")
                .arg(reply)
                .arg(answer.to_string())
                .ignore()
                .cmd("PEXPIRE")
                .arg(reply)
                .arg(REPLY_TTL_MS)
                .ignore()
                .query::<()>(con)
        })
    }

    /// Up to `n` answers on reply list `reply`, waiting until `deadline`.
    pub(super) fn answers(&mut self, reply: &str, n: usize, deadline: std::time::Instant) -> RedisResult<Vec<Value>> {
        let mut answers = Vec::new();
        while answers.len() < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // Each wait shorter than the connection's read timeout.
            let wait = left.min(TIMEOUT / 2).as_secs_f64().max(0.01);
            let popped: Option<(String, String)> =
                self.with(|con, _| redis::cmd("BLPOP").arg(reply).arg(wait).query(con))?;
            answers.extend(popped.and_then(|(_, text)| serde_json::from_str(&text).ok()));
        }
        Ok(answers)
    }
}

/// The listener: a thread subscribed to the control channel.
pub(super) struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Starts `node`'s listener in `state`'s fleet.
    pub(super) fn start(state: Arc<FleetState>, node: NodeHandle) -> std::io::Result<Self> {
        let client = super::target::Target::parse(&state.settings)
            .map_err(|e| std::io::Error::other(format!("fleet.redis: {e}")))?;
        let store = Store::new(&state.settings).map_err(|e| std::io::Error::other(format!("fleet.redis: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ip2p-fleet-listen".into())
            .spawn(move || listen(&client, store, &state, &node, &stopping))?;
        Ok(Self { stop, thread: Some(thread) })
    }

    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

/// Subscribes (again after any failure, a second later) until `stop`.
fn listen(client: &super::target::Target, mut store: Store, state: &FleetState, node: &NodeHandle, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = subscribed(client, &mut store, state, node, stop) {
            tracing::debug!(error = %e, "fleet: the control channel broke; subscribing again");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// One subscription: the revocations in force applied first, then each
/// message as it comes.
fn subscribed(
    client: &super::target::Target,
    store: &mut Store,
    state: &FleetState,
    node: &NodeHandle,
    stop: &AtomicBool,
) -> RedisResult<()> {
    let keys = Keys::new(&state.settings.name);
    let mut con = client.client()?.get_connection_with_timeout(TIMEOUT)?;
    con.set_read_timeout(Some(Duration::from_millis(250)))?;
    let mut pubsub = con.as_pubsub();
    pubsub.subscribe(keys.control())?;
    for (user, until) in store.revocations(crate::unix_now())? {
        let _ = node.revoke(&user, until);
    }
    super::auth::refresh(store, state, node)?;
    while !stop.load(Ordering::Relaxed) {
        let message = match pubsub.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e),
        };
        let text: String = message.get_payload()?;
        match serde_json::from_str::<Control>(&text) {
            Ok(control) if control.is_sane(&keys) => carry_out(control, store, state, node),
            _ => {
                state.counts.records_ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Does what `control` asks of this node.
fn carry_out(control: Control, store: &mut Store, state: &FleetState, node: &NodeHandle) {
    let id = state.settings.node.as_str();
    let answered = match control {
        Control::Revoke { user, until } => {
            let ended = node.revoke(&user, until).ok().flatten();
            tracing::info!(user = %user, until, ended = ?ended, "user revoked in the fleet");
            Ok(())
        }
        Control::Lift { user } => {
            node.revocations().remove(&user);
            Ok(())
        }
        Control::Auth => super::auth::refresh(store, state, node),
        Control::Sessions { reply, user, client } => {
            let query = ip2p_turn::SessionQuery { user, client, id: None };
            let mut sessions = node.sessions(&query);
            let truncated = sessions.len() > MAX_LISTED;
            sessions.truncate(MAX_LISTED);
            let realm = node.credentials().realm.clone();
            let listed: Vec<Value> = sessions
                .iter()
                .map(|s| with_node(crate::usage::session_json(s, &realm, node.transport(s.listener)), id))
                .collect();
            store.answer(&reply, &json!({ "node": id, "sessions": listed, "truncated": truncated }))
        }
        Control::Kill { reply, id: session } => {
            let found = ip2p_turn::SessionId::parse(&session)
                .and_then(|sid| node.sessions(&ip2p_turn::SessionQuery { id: Some(sid), ..Default::default() }).pop());
            let Some(s) = found else { return };
            let ended = node.end_session(s.id) == Some(true);
            let shown = crate::usage::session_json(&s, &node.credentials().realm, node.transport(s.listener));
            let shown = with_node(shown, id);
            if ended {
                tracing::info!(session = %s.id, user = %s.user, "session ended by the operator, through the fleet");
            }
            store.answer(&reply, &json!({ "node": id, "ended": ended, "session": shown }))
        }
    };
    if let Err(e) = answered {
        tracing::debug!(error = %e, "fleet: could not answer on the control channel");
    }
}

/// A session's JSON with the id of the node it lives on.
fn with_node(mut session: Value, node: &str) -> Value {
    if let Some(fields) = session.as_object_mut() {
        fields.insert("node".into(), json!(node));
    }
    session
}

/// The revocations in force in `fleet` now, read before the node serves
/// (none, with a warning, when the store cannot be reached: the listener
/// applies them once it can).
#[must_use]
pub fn revocations_in_force(fleet: &crate::config::Fleet) -> Vec<(String, u64)> {
    let read = Store::new(fleet).and_then(|mut s| s.revocations(crate::unix_now()));
    read.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "fleet: cannot read the fleet's revocations before serving; applying them once the store answers");
        Vec::new()
    })
}

/// What the node reads from the store, each as it reads it (for the fuzz
/// target): `text` as a control message, a node record, a stored user's
/// secret, the answers to a sessions question, and a Sentinel URL.
pub(crate) fn read_from_store(text: &str) {
    let keys = Keys::new("fuzz");
    if let Ok(c) = serde_json::from_str::<Control>(text) {
        let _ = c.is_sane(&keys);
    }
    if let Ok(r) = serde_json::from_str::<super::record::NodeRecord>(text)
        && r.is_sane()
    {
        assert!(r.load() >= 0.0, "a sane record's load: {r:?}");
        let _ = super::steering::best_nodes(std::slice::from_ref(&r), &r.region, 0.9);
    }
    let _ = super::users::parse_secret(text);
    if let Ok(serde_json::Value::Array(answers)) = serde_json::from_str(text) {
        let _ = gather(answers);
    }
    let _ = crate::config::sentinel_parts(text);
}

/// The nodes' answers to a sessions question: every session listed, and
/// the ids of the nodes that answered (whatever the answers hold).
pub(super) fn gather(answers: Vec<Value>) -> (Vec<Value>, Vec<String>) {
    let mut sessions = Vec::new();
    let mut nodes = Vec::new();
    for mut a in answers {
        nodes.extend(a.get("node").and_then(Value::as_str).map(str::to_owned));
        if let Some(Value::Array(listed)) = a.get_mut("sessions").map(Value::take) {
            sessions.extend(listed);
        }
    }
    nodes.sort();
    (sessions, nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_a_node_sends_are_carried_out() {
        let keys = Keys::new("f");
        let read = |text: &str| serde_json::from_str::<Control>(text).ok().filter(|c| c.is_sane(&keys));
        let reply = keys.reply_prefix() + "00ff";
        assert!(read(r#"{"op":"revoke","user":"alice","until":99}"#).is_some());
        assert!(read(&format!(r#"{{"op":"kill","reply":"{reply}","id":"00ff"}}"#)).is_some());
        for bad in [
            r#"{"op":"revoke","user":"","until":99}"#.to_owned(),
            format!(r#"{{"op":"lift","user":"{}"}}"#, "u".repeat(509)),
            r#"{"op":"lift","user":"a\nb"}"#.to_owned(),
            // Answers written to a key of someone else's.
            r#"{"op":"sessions","reply":"users:admin","user":null,"client":null}"#.to_owned(),
            r#"{"op":"kill","reply":"ip2p:{other}:reply:1","id":"1"}"#.to_owned(),
            format!(r#"{{"op":"kill","reply":"{reply}","id":"{}"}}"#, "f".repeat(17)),
            r#"{"op":"flushall"}"#.to_owned(),
            r#"{"op":"revoke","user":"a","until":1,"extra":true}"#.to_owned(),
            "not json".to_owned(),
        ] {
            assert!(read(&bad).is_none(), "{bad}");
        }
    }
}
