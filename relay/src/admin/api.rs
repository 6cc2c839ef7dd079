//! The admin API under `/api/v1` (docs/operations.md, "Sessions"):
//! the node's sessions, listed, one by id, and ended; revocations and
//! credentials (`grants.rs`). JSON in and out; every error is JSON with a
//! message (`{"error": "..."}`).

use std::net::IpAddr;

use serde_json::{Value, json};

use super::response::{error, json_ok};
use crate::node::NodeHandle;
use ip2p_turn::{Session, SessionId};

/// The answer to `method` on `path` (under `/api/v1/`) with `query` and
/// `body`.
pub(super) fn answer(node: &NodeHandle, method: &str, path: &str, query: &str, body: &[u8]) -> Vec<u8> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, &segments[..]) {
        ("POST", ["revocations"]) => super::grants::revoke(node, body),
        ("GET" | "HEAD", ["revocations"]) => super::grants::revocations(node),
        ("DELETE", ["revocations", user]) => super::grants::lift(node, user),
        ("POST", ["credentials"]) => super::grants::mint(node, body),
        ("GET" | "HEAD", ["fleet"]) => super::fleet::nodes(node),
        (_, ["fleet"]) => error(405, "fleet: GET only", &[("Allow", "GET, HEAD")]),
        (_, ["fleet", rest @ ..]) => super::fleet::auth(node, method, rest, body),
        (_, ["revocations"]) => error(405, "revocations: GET or POST", &[("Allow", "GET, HEAD, POST")]),
        (_, ["revocations", _]) => error(405, "a revocation: DELETE", &[("Allow", "DELETE")]),
        (_, ["credentials"]) => error(405, "credentials: POST", &[("Allow", "POST")]),
        ("GET" | "HEAD", ["sessions"]) => match Filter::parse(query) {
            Ok(filter) => list(node, &filter),
            Err(why) => error(400, &why, &[]),
        },
        ("GET" | "HEAD", ["sessions", id]) => match find(node, id) {
            Some(s) => json_ok(&session_json(node, &s)),
            None => no_session(id),
        },
        ("DELETE", ["sessions", id]) => end(node, id),
        (_, ["sessions"]) => error(405, "sessions: GET only", &[("Allow", "GET, HEAD")]),
        (_, ["sessions", _]) => error(405, "a session: GET or DELETE", &[("Allow", "GET, HEAD, DELETE")]),
        _ => {
            let shown: String = path.chars().take(64).collect();
            error(
                404,
                &format!("no such API: /api/v1/{shown}; there are sessions, revocations, credentials, fleet"),
                &[],
            )
        }
    }
}

/// `GET /api/v1/sessions`: the live sessions that pass `filter`; with
/// `scope=fleet`, every node's (each with its node's id).
fn list(node: &NodeHandle, filter: &Filter) -> Vec<u8> {
    if filter.fleet {
        return super::fleet::sessions(node, filter.user.clone(), filter.client, filter.transport.as_deref());
    }
    let query = ip2p_turn::SessionQuery { user: filter.user.clone(), client: filter.client, id: None };
    let mut sessions: Vec<Session> = node.sessions(&query).into_iter().filter(|s| filter.passes(node, s)).collect();
    sessions.sort_by_key(|s| (s.started, s.id));
    let sessions: Vec<Value> = sessions.iter().map(|s| session_json(node, s)).collect();
    json_ok(&json!({ "sessions": sessions }))
}

/// `DELETE /api/v1/sessions/{id}`: ends it now; answers with the session
/// as it was just before.
fn end(node: &NodeHandle, id: &str) -> Vec<u8> {
    let Some(session) = find(node, id) else {
        // Another node's, perhaps.
        return match node.fleet() {
            Some(_) if SessionId::parse(id).is_some() => super::fleet::kill(node, id).unwrap_or_else(|| no_session(id)),
            _ => no_session(id),
        };
    };
    match node.end_session(session.id) {
        Some(true) => {
            tracing::info!(session = %session.id, user = %session.user, client = %session.client, "session ended by the operator");
            json_ok(&session_json(node, &session))
        }
        // Ended on its own meanwhile.
        Some(false) => no_session(id),
        None => error(503, "a worker did not answer; try again", &[("Retry-After", "1")]),
    }
}

fn find(node: &NodeHandle, id: &str) -> Option<Session> {
    let id = SessionId::parse(id)?;
    node.sessions(&ip2p_turn::SessionQuery { id: Some(id), ..Default::default() }).into_iter().next()
}

pub(super) fn no_session(id: &str) -> Vec<u8> {
    // The id as asked, within reason, for the message.
    let shown: String = id.chars().take(32).collect();
    error(404, &format!("no live session {shown:?}"), &[])
}

/// A session as the API shows it (as its usage records do).
fn session_json(node: &NodeHandle, s: &Session) -> Value {
    crate::usage::session_json(s, &node.credentials().realm, node.transport(s.listener))
}

/// Which sessions a list shows: those of `user`, of the client IP
/// `client`, over `transport` (each when given); of the whole fleet
/// (`scope=fleet`) or this node's.
#[derive(Debug, Default, PartialEq, Eq)]
struct Filter {
    user: Option<String>,
    client: Option<IpAddr>,
    transport: Option<String>,
    fleet: bool,
}

impl Filter {
    /// The query string's filters; an unknown or repeated one, or a value
    /// that cannot match, is an error (saying which).
    fn parse(query: &str) -> Result<Self, String> {
        let mut filter = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let repeated = match &*key {
                "user" => filter.user.replace(value.into_owned()).is_some(),
                "client" => {
                    let ip = value.parse().map_err(|_| format!("client: {value:?} is not an IP address"))?;
                    filter.client.replace(ip).is_some()
                }
                "transport" if matches!(&*value, "udp" | "tcp" | "tls") => {
                    filter.transport.replace(value.into_owned()).is_some()
                }
                "transport" => return Err(format!("transport: {value:?} is none of udp, tcp, tls")),
                "scope" if matches!(&*value, "node" | "fleet") => {
                    std::mem::replace(&mut filter.fleet, value == "fleet")
                }
                "scope" => return Err(format!("scope: {value:?} is neither node nor fleet")),
                other => {
                    let shown: String = other.chars().take(32).collect();
                    return Err(format!("unknown filter {shown:?}; the filters are user, client, transport, scope"));
                }
            };
            if repeated {
                return Err(format!("{key} given twice"));
            }
        }
        Ok(filter)
    }

    /// Whether `s`, which the workers picked by user and client, is of
    /// the transport asked for (which names the relay's listeners).
    fn passes(&self, node: &NodeHandle, s: &Session) -> bool {
        self.transport.as_ref().is_none_or(|t| t == node.transport(s.listener))
    }
}

/// A list's query string read as its filters (for the fuzz target): why
/// it is refused, if it is.
///
/// # Errors
/// What a list would answer 400 with.
pub(crate) fn parse_filter(query: &str) -> Result<(), String> {
    Filter::parse(query).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_exactly_and_refused_clearly() {
        assert_eq!(Filter::parse(""), Ok(Filter::default()));
        let f = Filter::parse("user=web%20user&client=192.0.2.7&transport=tls").unwrap();
        assert_eq!(f.user.as_deref(), Some("web user"));
        assert_eq!(f.client, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(f.transport.as_deref(), Some("tls"));
        assert_eq!(Filter::parse("client=%3A%3A1").unwrap().client, Some("::1".parse().unwrap()));
        for (bad, says) in [
            ("client=example.org", "not an IP"),
            ("transport=dtls", "none of udp"),
            ("users=alice", "unknown filter"),
            ("user=a&user=b", "twice"),
        ] {
            let why = Filter::parse(bad).unwrap_err();
            assert!(why.contains(says), "{bad}: {why}");
        }
        let long = format!("{}=1", "k".repeat(10_000));
        assert!(Filter::parse(&long).unwrap_err().len() < 100, "the message stays short");
    }
}
