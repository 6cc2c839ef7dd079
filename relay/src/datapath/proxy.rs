//! The PROXY protocol's header (HAProxy's specification, versions 1 and 2)
//! in front of a TCP or TLS connection from a load balancer: the client's
//! address as the balancer saw it. Read before anything else of the
//! connection, bounded ([`MAX_HEADER`] bytes); a header that is not one
//! is refused, never guessed at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's signature.
const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
/// Version 1's first bytes.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Version 1's longest line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The longest header taken, version 2 with its TLVs: a balancer's is
/// far shorter (HAProxy's with SSL TLVs: about 200 bytes).
pub(crate) const MAX_HEADER: usize = 1024;

/// v2 TLV types read (for logging only): the ALPN and the authority (SNI).
const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_AUTHORITY: u8 = 0x02;

/// What a header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Header {
    /// The balancer's own connection (a health check: `LOCAL`, or an
    /// address family the relay cannot use): the connection's addresses
    /// stand.
    Local,
    /// A client's connection through the balancer.
    Proxied {
        /// The client's address.
        client: SocketAddr,
        /// The address the client reached (the balancer's).
        server: SocketAddr,
        /// v2's ALPN TLV, if any.
        alpn: Option<Vec<u8>>,
        /// v2's authority TLV (the TLS SNI), if any.
        authority: Option<String>,
    },
}

/// The outcome of reading a connection's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed (and may still make a header).
    Incomplete,
    /// A header of this many bytes; the connection's own bytes follow.
    Header(Header, usize),
    /// Not a PROXY header (why).
    Invalid(&'static str),
}

/// Whether `buf` begins like a header of either version (it may be too
/// short to say more).
pub(crate) fn begins_like_one(buf: &[u8]) -> bool {
    let like = |prefix: &[u8]| {
        !buf.is_empty() && buf.get(..buf.len().min(prefix.len())) == prefix.get(..buf.len().min(prefix.len()))
    };
    like(&V2_SIGNATURE) || like(V1_PREFIX)
}

/// Reads a header at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf.get(..n) == V2_SIGNATURE.get(..n) && !buf.is_empty() {
        return v2(buf);
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf.get(..n) == V1_PREFIX.get(..n) && !buf.is_empty() {
        return v1(buf);
    }
    if buf.is_empty() { Parsed::Incomplete } else { Parsed::Invalid("not a PROXY header") }
}

/// `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`.
fn v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() < V1_MAX { Parsed::Incomplete } else { Parsed::Invalid("a v1 line past 107 bytes") };
    };
    let Some(line) = buf.get(V1_PREFIX.len()..end).and_then(|l| std::str::from_utf8(l).ok()) else {
        return Parsed::Invalid("a v1 line that is not text");
    };
    let len = end + 2;
    let mut fields = line.split(' ');
    let family = fields.next();
    if family == Some("UNKNOWN") {
        // The rest is to be ignored: the connection's addresses stand.
        return Parsed::Header(Header::Local, len);
    }
    let v6 = match family {
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Parsed::Invalid("a v1 protocol other than TCP4, TCP6, UNKNOWN"),
    };
    let parts: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = parts[..] else { return Parsed::Invalid("a v1 line without four fields") };
    let ip = |s: &str| s.parse::<IpAddr>().ok().filter(|ip| ip.is_ipv6() == v6);
    // Ports in decimal, no sign, no leading zero (the specification's form).
    let port = |s: &str| s.parse::<u16>().ok().filter(|_| s == "0" || !s.starts_with('0'));
    match (ip(src), ip(dst), port(sport), port(dport)) {
        (Some(s), Some(d), Some(sp), Some(dp)) => Parsed::Header(
            Header::Proxied {
                client: SocketAddr::new(s, sp),
                server: SocketAddr::new(d, dp),
                alpn: None,
                authority: None,
            },
            len,
        ),
        _ => Parsed::Invalid("a v1 address or port that does not read"),
    }
}

/// The binary version 2.
fn v2(buf: &[u8]) -> Parsed {
    let [_, _, _, _, _, _, _, _, _, _, _, _, ver_cmd, family, hi, lo, ..] = *buf else {
        return Parsed::Incomplete;
    };
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("a v2 header of another version");
    }
    let body = usize::from(u16::from_be_bytes([hi, lo]));
    let len = 16 + body;
    if len > MAX_HEADER {
        return Parsed::Invalid("a v2 header past 1024 bytes");
    }
    let Some(block) = buf.get(16..len) else { return Parsed::Incomplete };
    match ver_cmd & 0x0F {
        0 => return Parsed::Header(Header::Local, len),
        1 => {}
        _ => return Parsed::Invalid("a v2 command other than LOCAL and PROXY"),
    }
    let (addrs, tlvs) = match family {
        // TCP over IPv4, then IPv6.
        0x11 => match block.split_at_checked(12) {
            Some((a, rest)) => (v4_pair(a), rest),
            None => return Parsed::Invalid("a v2 IPv4 block too short"),
        },
        0x21 => match block.split_at_checked(36) {
            Some((a, rest)) => (v6_pair(a), rest),
            None => return Parsed::Invalid("a v2 IPv6 block too short"),
        },
        // UNSPEC, UDP, Unix sockets: nothing the relay can use as a TCP
        // client's address; the connection's own stand.
        0x00 | 0x01 | 0x02 | 0x12 | 0x22 | 0x31 | 0x32 => return Parsed::Header(Header::Local, len),
        _ => return Parsed::Invalid("a v2 address family the specification does not name"),
    };
    let Some((client, server)) = addrs else { return Parsed::Invalid("a v2 address block that does not read") };
    let Some((alpn, authority)) = read_tlvs(tlvs) else { return Parsed::Invalid("a v2 TLV past its header") };
    Parsed::Header(Header::Proxied { client, server, alpn, authority }, len)
}

fn v4_pair(a: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let src: [u8; 4] = a.get(0..4)?.try_into().ok()?;
    let dst: [u8; 4] = a.get(4..8)?.try_into().ok()?;
    let (sp, dp) = ports(a.get(8..12)?)?;
    Some((SocketAddr::new(Ipv4Addr::from(src).into(), sp), SocketAddr::new(Ipv4Addr::from(dst).into(), dp)))
}

fn v6_pair(a: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let src: [u8; 16] = a.get(0..16)?.try_into().ok()?;
    let dst: [u8; 16] = a.get(16..32)?.try_into().ok()?;
    let (sp, dp) = ports(a.get(32..36)?)?;
    Some((SocketAddr::new(Ipv6Addr::from(src).into(), sp), SocketAddr::new(Ipv6Addr::from(dst).into(), dp)))
}

fn ports(p: &[u8]) -> Option<(u16, u16)> {
    let [a, b, c, d] = *p else { return None };
    Some((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])))
}

/// The ALPN and authority TLVs among `tlvs` (others skipped); `None` when
/// a TLV runs past the header.
fn read_tlvs(mut tlvs: &[u8]) -> Option<(Option<Vec<u8>>, Option<String>)> {
    let (mut alpn, mut authority) = (None, None);
    while !tlvs.is_empty() {
        let [kind, hi, lo, ..] = *tlvs else { return None };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        let value = tlvs.get(3..end)?;
        match kind {
            PP2_TYPE_ALPN => alpn = Some(value.to_vec()),
            PP2_TYPE_AUTHORITY => authority = std::str::from_utf8(value).ok().map(str::to_owned),
            _ => {}
        }
        tlvs = tlvs.get(end..)?;
    }
    Some((alpn, authority))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn proxied(client: &str, server: &str) -> Header {
        Header::Proxied {
            client: client.parse().unwrap(),
            server: server.parse().unwrap(),
            alpn: None,
            authority: None,
        }
    }

    #[test]
    fn version_1_reads_as_the_specification_writes_it() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nSTUN...";
        assert_eq!(parse(line), Parsed::Header(proxied("192.0.2.7:40000", "198.51.100.1:443"), 45));
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n";
        assert_eq!(parse(v6), Parsed::Header(proxied("[2001:db8::7]:40000", "[2001:db8::1]:443"), v6.len()));
        assert_eq!(parse(b"PROXY UNKNOWN whatever\r\n"), Parsed::Header(Header::Local, 24));
        for partial in [&b"PRO"[..], b"PROXY TCP4 192.0.2.7", b""] {
            assert_eq!(parse(partial), Parsed::Incomplete, "{partial:?}");
        }
        for bad in [
            &b"PROXY TCP4 2001:db8::7 198.51.100.1 40000 443\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 040000 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 443\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000\r\n",
            b"PROXY UDP4 192.0.2.7 198.51.100.1 40000 443\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(matches!(parse(bad), Parsed::Invalid(_)), "{bad:?}");
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(parse(&long), Parsed::Invalid("a v1 line past 107 bytes"));
    }

    fn v2_header(cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x20 | cmd, family]);
        h.extend(u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend(block);
        h
    }

    #[test]
    fn version_2_reads_addresses_and_the_tlvs_it_logs() {
        let mut block = vec![192, 0, 2, 7, 198, 51, 100, 1];
        block.extend(40000u16.to_be_bytes());
        block.extend(443u16.to_be_bytes());
        block.extend([PP2_TYPE_ALPN, 0, 9]);
        block.extend(b"stun.turn");
        block.extend([PP2_TYPE_AUTHORITY, 0, 11]);
        block.extend(b"example.org");
        block.extend([0x20, 0, 2, 1, 2]); // SSL, not read
        let h = v2_header(1, 0x11, &block);
        let mut with_data = h.clone();
        with_data.extend(b"STUN");
        let expected = Header::Proxied {
            client: "192.0.2.7:40000".parse().unwrap(),
            server: "198.51.100.1:443".parse().unwrap(),
            alpn: Some(b"stun.turn".to_vec()),
            authority: Some("example.org".into()),
        };
        assert_eq!(parse(&with_data), Parsed::Header(expected, h.len()));
        for cut in 1..h.len() {
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "{cut}");
        }
        // A balancer's health check, and a family the relay cannot use.
        assert_eq!(parse(&v2_header(0, 0x00, &[])), Parsed::Header(Header::Local, 16));
        assert_eq!(parse(&v2_header(1, 0x12, &block[..12])), Parsed::Header(Header::Local, 28));
        let mut v6 = [0u8; 36];
        v6[15] = 7;
        v6[31] = 1;
        assert!(matches!(parse(&v2_header(1, 0x21, &v6)), Parsed::Header(Header::Proxied { .. }, 52)));
        for bad in [
            v2_header(2, 0x11, &block),
            v2_header(1, 0x11, &block[..8]),
            v2_header(1, 0x41, &block),
            v2_header(1, 0x11, &[&block[..12], &[PP2_TYPE_ALPN, 0, 40, 1]].concat()),
            v2_header(1, 0x11, &vec![0; 2000]),
        ] {
            assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
        }
        let mut wrong_version = v2_header(1, 0x11, &block);
        wrong_version[12] = 0x11;
        assert_eq!(parse(&wrong_version), Parsed::Invalid("a v2 header of another version"));
    }
}
