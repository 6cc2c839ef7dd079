//! A TCP or TLS connection's first bytes, before its stream: from a load
//! balancer in `connections.proxy_protocol_from`, the PROXY header that
//! names the client (waited for a short while, bounded); from anyone
//! else, anything but a PROXY header, which no client may send.

use std::net::SocketAddr;
use std::time::Duration;

use super::proxy::{self, Header, Parsed};

/// How long a balancer's connection may take to send its PROXY header: a
/// balancer sends it with its first segment.
pub(crate) const HEADER_WAIT: Duration = Duration::from_secs(3);

/// Where a connection is in its opening.
#[derive(Debug)]
pub(crate) enum Opening {
    /// From a balancer: its PROXY header, as much of it as came so far
    /// (fewer than [`proxy::MAX_HEADER`] bytes).
    Header(Vec<u8>),
    /// From anyone else, nothing read yet.
    Fresh,
    /// Its stream's bytes flow.
    Open,
}

/// What a connection's bytes did to its opening.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The header is not complete yet: nothing for the stream.
    Wait,
    /// Open; the stream's bytes begin `skip` bytes into what was given
    /// (or, when `rest` holds them, are those), and the balancer named
    /// this client (`None`: the connection's own address stands).
    Open { proxied: Option<Proxied>, skip: usize, rest: Option<Vec<u8>> },
    /// Refused: close it.
    Refuse(Refusal),
}

/// A client a PROXY header named.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Proxied {
    pub(crate) client: SocketAddr,
    /// What the balancer saw of the TLS it forwarded, for logging.
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) authority: Option<String>,
}

/// Why a connection's opening was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A PROXY header from a source not trusted to send one.
    Untrusted,
    /// A balancer's connection that does not begin with a valid header.
    Invalid(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Untrusted => f.write_str("a PROXY header from a source not in connections.proxy_protocol_from"),
            Self::Invalid(why) => write!(f, "a load balancer's connection without a valid PROXY header: {why}"),
        }
    }
}

impl Opening {
    /// The opening of a connection from a balancer (`proxied`) or not.
    pub(crate) fn new(proxied: bool) -> Self {
        if proxied { Self::Header(Vec::new()) } else { Self::Fresh }
    }

    /// Whether the connection still waits for its PROXY header.
    pub(crate) fn awaiting_header(&self) -> bool {
        matches!(self, Self::Header(_))
    }

    /// Takes the connection's next `bytes`.
    pub(crate) fn step(&mut self, bytes: &[u8]) -> Step {
        let pending = match self {
            Self::Open => return Step::Open { proxied: None, skip: 0, rest: None },
            Self::Fresh => {
                *self = Self::Open;
                // Whatever could begin a header is one: no STUN message,
                // ChannelData or TLS record starts so.
                return if proxy::begins_like_one(bytes) {
                    Step::Refuse(Refusal::Untrusted)
                } else {
                    Step::Open { proxied: None, skip: 0, rest: None }
                };
            }
            Self::Header(pending) => pending,
        };
        // Most headers come whole in the first read: no copy then.
        let joined = !pending.is_empty();
        let held;
        let buf = if joined {
            pending.extend_from_slice(bytes);
            held = std::mem::take(pending);
            &held[..]
        } else {
            bytes
        };
        let (header, len) = match proxy::parse(buf) {
            Parsed::Incomplete => {
                // Fewer than MAX_HEADER bytes: an incomplete header is shorter.
                *self = Self::Header(buf.to_vec());
                return Step::Wait;
            }
            Parsed::Invalid(why) => return Step::Refuse(Refusal::Invalid(why)),
            Parsed::Header(header, len) => (header, len),
        };
        let proxied = match header {
            Header::Local => None,
            Header::Proxied { client, alpn, authority, .. } => Some(Proxied { client, alpn, authority }),
        };
        let rest = joined.then(|| buf.get(len..).unwrap_or_default().to_vec());
        *self = Self::Open;
        Step::Open { proxied, skip: if joined { 0 } else { len }, rest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.1 40000 443\r\n";

    fn client() -> Option<Proxied> {
        Some(Proxied { client: "192.0.2.1:40000".parse().unwrap(), alpn: None, authority: None })
    }

    #[test]
    fn a_balancers_header_names_the_client_and_the_rest_is_the_streams() {
        let mut o = Opening::new(true);
        let mut first = V1.to_vec();
        first.extend_from_slice(b"\x00\x01stun");
        assert_eq!(o.step(&first), Step::Open { proxied: client(), skip: V1.len(), rest: None });
        assert!(!o.awaiting_header());
        assert_eq!(o.step(b"more"), Step::Open { proxied: None, skip: 0, rest: None });
    }

    #[test]
    fn a_header_in_pieces_is_joined() {
        let mut o = Opening::new(true);
        assert_eq!(o.step(&V1[..10]), Step::Wait);
        assert!(o.awaiting_header());
        let mut tail = V1[10..].to_vec();
        tail.extend_from_slice(b"tls");
        assert_eq!(o.step(&tail), Step::Open { proxied: client(), skip: 0, rest: Some(b"tls".to_vec()) });
    }

    #[test]
    fn a_local_header_keeps_the_balancers_address() {
        let mut o = Opening::new(true);
        assert_eq!(o.step(b"PROXY UNKNOWN\r\n"), Step::Open { proxied: None, skip: 15, rest: None });
    }

    #[test]
    fn a_balancer_must_send_a_header() {
        let mut o = Opening::new(true);
        assert!(matches!(o.step(b"\x00\x01\x00\x00"), Step::Refuse(Refusal::Invalid(_))));
    }

    #[test]
    fn anyone_else_may_not_send_one_even_in_part() {
        let mut v2_then_stun = vec![0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21];
        v2_then_stun.extend_from_slice(b"\x00\x01\x00\x00");
        for first in [V1, &V1[..3], &[0x0D, 0x0A, 0x0D][..], &v2_then_stun] {
            let mut o = Opening::new(false);
            assert_eq!(o.step(first), Step::Refuse(Refusal::Untrusted), "{first:?}");
        }
        let mut o = Opening::new(false);
        assert_eq!(o.step(b"\x00\x01\x00\x00"), Step::Open { proxied: None, skip: 0, rest: None });
        assert_eq!(o.step(V1), Step::Open { proxied: None, skip: 0, rest: None }, "only the first bytes");
    }

    #[test]
    fn waiting_holds_less_than_the_bound() {
        let mut o = Opening::new(true);
        let mut v2 = vec![0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11];
        v2.extend_from_slice(&[0x03, 0xF0]);
        assert_eq!(o.step(&v2), Step::Wait);
        for _ in 0..1000 {
            match o.step(&[0; 64]) {
                Step::Wait => assert!(matches!(&o, Opening::Header(b) if b.len() < proxy::MAX_HEADER)),
                _ => break,
            }
        }
        assert!(!o.awaiting_header(), "it ends, header or refusal, by MAX_HEADER bytes");
    }
}
