//! Writing an HTTP answer: status line, headers, body, one request per
//! connection.

use serde_json::{Value, json};

/// A 200 with `body`.
pub(super) fn ok(content_type: &str, body: Vec<u8>) -> Vec<u8> {
    response(200, "OK", content_type, &[], body)
}

/// A plain-text answer.
pub(super) fn plain(code: u16, body: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    response(code, reason(code), "text/plain; charset=utf-8", headers, body.as_bytes().to_vec())
}

/// The reason phrase of `code` (of those the listener answers).
pub(super) fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Internal Server Error",
    }
}

pub(super) fn response(
    code: u16,
    reason: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The head of a response (for HEAD), its Content-Length kept.
pub(super) fn head_only(mut response: Vec<u8>) -> Vec<u8> {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
    response
}

/// A 200 with `value` as JSON, not to be cached.
pub(super) fn json_ok(value: &Value) -> Vec<u8> {
    response(200, "OK", "application/json", &[("Cache-Control", "no-store")], value.to_string().into_bytes())
}

/// An error as JSON: `{"error": message}`.
pub(super) fn error(code: u16, message: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let reason = reason(code);
    let body = json!({ "error": message }).to_string().into_bytes();
    response(code, reason, "application/json", headers, body)
}
