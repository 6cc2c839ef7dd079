//! Which request gets what, and who may see it. `/metrics`, `/status` and
//! the API (`/api/v1/`) name users and addresses (and the API ends
//! sessions), and the self-test mints TURN credentials:
//! with `admin.token` set they answer only the token; `/healthz` and
//! `/readyz` stay open for probes (they say only ok or not). Without a
//! token, every other page answers only a request for this listener's
//! address or localhost (no DNS rebinding), and a listener off loopback
//! serves `/metrics` alone of them: nothing there mints a credential or
//! shows a session.

use super::pages::{SELFTEST_CSP, SELFTEST_PAGE, selftest_config, status};
use super::response::{head_only, ok, plain, response};
use crate::node::NodeHandle;

/// What the routes answer from: the node, and who may see what.
pub(super) struct Routes {
    pub(super) node: NodeHandle,
    pub(super) gate: Gate,
}

/// Who may see what: the token private pages ask for, and whether the
/// listener is off loopback. What it decides needs no node: a request
/// that passes it is answered with a page.
pub(crate) struct Gate {
    pub(crate) token: Option<String>,
    /// The listener is not on loopback.
    pub(crate) exposed: bool,
}

/// What the gate made of a request.
pub(crate) enum Judged<'a> {
    /// This answer, whatever the node holds (an error, a refusal).
    Answer(Vec<u8>),
    /// The page at `path` with `query`, for `method` (for HEAD, the head
    /// of GET's answer alone), and the request's body (a POST's).
    Page { method: &'a str, path: &'a str, query: &'a str, body: &'a [u8] },
}

/// The largest body a request may carry (a POST to the API).
pub(crate) const MAX_BODY: usize = 4096;

/// Where the API lives (`api.rs`).
const API: &str = "/api/v1/";

/// The pages that say only whether the node is alive or ready: open to
/// anyone, from any Host, on the probes' own connection budget.
pub(super) fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

impl Routes {
    /// The answer to `request` once it is whole, `None` while it is not;
    /// on a connection of the probes' budget (`probe_only`), only probes
    /// are answered.
    pub(super) fn answer(&self, request: &[u8], probe_only: bool) -> Option<Vec<u8>> {
        Some(match self.gate.judge(request, probe_only)? {
            Judged::Answer(answer) => answer,
            Judged::Page { method: "HEAD", path, query, .. } => head_only(self.page("HEAD", path, query, &[])),
            Judged::Page { method, path, query, body } => self.page(method, path, query, body),
        })
    }

    /// The page at `path`, for a request that may see it.
    fn page(&self, method: &str, path: &str, query: &str, body: &[u8]) -> Vec<u8> {
        let node = &self.node;
        if let Some(api) = path.strip_prefix(API) {
            return super::api::answer(node, method, api, query, body);
        }
        let no_store = [("Cache-Control", "no-store")];
        match path {
            "/metrics" => match crate::metrics::render(node) {
                Ok(body) => ok(crate::metrics::CONTENT_TYPE, body.into_bytes()),
                Err(_) => plain(500, "cannot encode the metrics\n", &[]),
            },
            // Alive: every worker answers (a stuck worker is worth a restart).
            "/healthz" if node.stats().len() == node.workers() => plain(200, "ok\n", &[]),
            "/healthz" => plain(503, "a worker does not answer\n", &[]),
            // Ready for new clients: not draining.
            "/readyz" if node.draining() => plain(503, "draining\n", &[]),
            "/readyz" => plain(200, "ready\n", &[]),
            "/status" => ok("application/json", status(node).to_string().into_bytes()),
            "/selftest" => response(
                200,
                "OK",
                "text/html; charset=utf-8",
                &[
                    ("Content-Security-Policy", SELFTEST_CSP),
                    ("Cache-Control", "no-store"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "no-referrer"),
                ],
                SELFTEST_PAGE.as_bytes().to_vec(),
            ),
            "/selftest/config" => {
                response(200, "OK", "application/json", &no_store, selftest_config(node).to_string().into_bytes())
            }
            _ => plain(404, "not found; try /metrics, /healthz, /readyz, /status or /selftest\n", &[]),
        }
    }
}

impl Gate {
    /// What `request` gets, once it is whole (`None` while it is not).
    pub(crate) fn judge<'a>(&self, request: &'a [u8], probe_only: bool) -> Option<Judged<'a>> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        let (method, path, head_len) = match parsed.parse(request) {
            Ok(httparse::Status::Partial) => return None,
            Ok(httparse::Status::Complete(n)) => (parsed.method.unwrap_or(""), parsed.path.unwrap_or(""), n),
            Err(httparse::Error::TooManyHeaders) => return Some(Judged::Answer(plain(431, "too many headers\n", &[]))),
            Err(_) => return Some(Judged::Answer(plain(400, "bad request\n", &[]))),
        };
        let header = |name: &str| parsed.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let api = path.starts_with(API);
        let allowed = matches!(method, "GET" | "HEAD") || (api && matches!(method, "DELETE" | "POST"));
        if !allowed {
            let allow = if api { "GET, HEAD, POST, DELETE" } else { "GET, HEAD" };
            return Some(Judged::Answer(plain(
                405,
                "only GET (and POST and DELETE in the API)\n",
                &[("Allow", allow)],
            )));
        }
        let body = match body(method, request, head_len, header("content-length"), header("transfer-encoding")) {
            Ok(Some(body)) => body,
            Ok(None) => return None,
            Err(refusal) => return Some(Judged::Answer(refusal)),
        };
        if probe_only && !is_probe(path) {
            let busy = plain(503, "busy: only /healthz and /readyz are answered now\n", &[("Retry-After", "1")]);
            return Some(Judged::Answer(busy));
        }
        Some(match self.refusal(path, header("host"), header("authorization")) {
            Some(refusal) if method == "HEAD" => Judged::Answer(head_only(refusal)),
            Some(refusal) => Judged::Answer(refusal),
            None => Judged::Page { method, path, query, body },
        })
    }

    /// Why a request for `path` may not see it, if it may not.
    fn refusal(&self, path: &str, host: Option<&[u8]>, authorization: Option<&[u8]>) -> Option<Vec<u8>> {
        let selftest = path == "/selftest" || path.starts_with("/selftest/");
        if self.token.is_none() && !is_probe(path) {
            // Without a token, a page at any name that resolves to this
            // listener (DNS rebinding) would be same-origin with it and
            // could read /status or mint credentials: only a request for
            // an address or localhost is answered.
            if !host.is_none_or(is_local_host) {
                return Some(plain(
                    403,
                    "without admin.token, ask for this listener by its address or localhost\n",
                    &[],
                ));
            }
            // Off loopback without a token: nothing that mints a
            // credential or shows a session.
            if self.exposed && path != "/metrics" {
                return Some(plain(
                    403,
                    "this listener is not on loopback and has no admin.token: it serves /healthz, /readyz and \
                     /metrics only; set admin.token_file for the rest\n",
                    &[],
                ));
            }
        }
        let private = selftest || path.starts_with(API) || matches!(path, "/metrics" | "/status");
        if !private || self.authorized(authorization) {
            return None;
        }
        // Browsers ask a person for Basic credentials; API clients send the
        // bearer token.
        let challenge =
            if selftest { "Basic realm=\"ip2p admin\", charset=\"UTF-8\"" } else { "Bearer realm=\"ip2p\"" };
        Some(plain(
            401,
            "the admin token is needed: Authorization: Bearer <token>, or Basic with the token as password\n",
            &[("WWW-Authenticate", challenge)],
        ))
    }

    /// Whether the request may see private pages: no token is configured,
    /// or it presents the token (compared in constant time).
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else { return true };
        let presented = authorization.and_then(presented_token).unwrap_or_default();
        ip2p_wire::credentials::constant_time_eq(&presented, token.as_bytes())
    }
}

/// A request's body: none but a POST's, which says its length
/// (`Content-Length`, at most [`MAX_BODY`]); `Ok(None)` while it is not
/// whole, `Err` with the answer refusing it.
fn body<'a>(
    method: &str,
    request: &'a [u8],
    head_len: usize,
    length: Option<&[u8]>,
    chunked: Option<&[u8]>,
) -> Result<Option<&'a [u8]>, Vec<u8>> {
    if chunked.is_some() {
        return Err(plain(411, "send a body with Content-Length\n", &[]));
    }
    let length = match length.map(|v| std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<usize>().ok())) {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return Err(plain(400, "bad Content-Length\n", &[])),
    };
    if length > 0 && method != "POST" {
        return Err(plain(413, "only a POST has a body here\n", &[]));
    }
    if length > MAX_BODY {
        return Err(plain(413, &format!("a body of at most {MAX_BODY} bytes\n"), &[]));
    }
    let end = head_len.saturating_add(length);
    Ok(request.get(head_len..end))
}

/// The token in an Authorization header: `Bearer <token>`, or `Basic`
/// with any user name and the token as password (what a browser sends).
fn presented_token(authorization: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    if let Some(token) = authorization.strip_prefix(b"Bearer ") {
        return Some(token.to_vec());
    }
    let encoded = authorization.strip_prefix(b"Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    decoded.get(colon + 1..).map(<[u8]>::to_vec)
}

/// Whether a Host header names this machine by address or as localhost.
fn is_local_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_local_when_it_is_an_address_or_localhost() {
        for host in ["127.0.0.1", "127.0.0.1:9478", "[::1]:9478", "[::1]", "localhost", "LocalHost:80", "10.0.0.7:1"] {
            assert!(is_local_host(host.as_bytes()), "{host}");
        }
        let names =
            ["relay.example.org", "localhost.example.org:80", "127.0.0.1.nip.io", "", "[::1", "[::1]x", "\u{ff}"];
        for host in names {
            assert!(!is_local_host(host.as_bytes()), "{host}");
        }
        assert!(!is_local_host(b"\xff\xfe"));
    }

    #[test]
    fn the_token_comes_as_bearer_or_as_a_basic_password() {
        assert_eq!(presented_token(b"Bearer t0ken").as_deref(), Some(&b"t0ken"[..]));
        // base64("operator:t0ken"), and a password with a colon in it.
        assert_eq!(presented_token(b"Basic b3BlcmF0b3I6dDBrZW4=").as_deref(), Some(&b"t0ken"[..]));
        assert_eq!(presented_token(b"Basic OmE6Yg==").as_deref(), Some(&b"a:b"[..]));
        for bad in [&b"Basic dDBrZW4="[..], b"Basic !!!", b"Basic ", b"basic b3BlcmF0b3I6dDBrZW4=", b"Digest x", b""] {
            assert_eq!(presented_token(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
