//! Transport address values (RFC 8489 §14.1, §14.2): family, port and
//! address, optionally XOR-ed with the magic cookie and transaction ID.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::header::{MAGIC_COOKIE, TransactionId};

/// An address family as STUN encodes it. Unknown values are kept: a TURN
/// server answers them with 440, which needs the value it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressFamily(pub u8);

impl AddressFamily {
    /// IPv4 (0x01).
    pub const IPV4: Self = Self(0x01);
    /// IPv6 (0x02).
    pub const IPV6: Self = Self(0x02);

    /// The family of an address.
    #[must_use]
    pub const fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::IPV4,
            IpAddr::V6(_) => Self::IPV6,
        }
    }
}

/// The 16 bytes an IPv6 address is XOR-ed with: cookie, then transaction ID.
fn xor_key(tid: &TransactionId) -> [u8; 16] {
    let mut key = [0u8; 16];
    let (cookie, rest) = key.split_at_mut(4);
    cookie.copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    rest.copy_from_slice(&tid.0);
    key
}

fn xor<const N: usize>(mut bytes: [u8; N], key: &[u8; 16]) -> [u8; N] {
    for (b, k) in bytes.iter_mut().zip(key) {
        *b ^= k;
    }
    bytes
}

/// Encoded length of an address value: 8 for IPv4, 20 for IPv6.
pub(crate) const fn value_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Decodes an address value, XOR-ed when `tid` is given. `None` when the
/// family is unknown or the length does not match it.
pub(crate) fn decode(value: &[u8], tid: Option<&TransactionId>) -> Option<SocketAddr> {
    let ([_, family, p0, p1], ip) = value.split_first_chunk::<4>()?;
    let key = tid.map_or([0; 16], xor_key);
    let port = u16::from_be_bytes(xor([*p0, *p1], &key));
    let ip = match *family {
        0x01 => IpAddr::V4(Ipv4Addr::from(xor(<[u8; 4]>::try_from(ip).ok()?, &key))),
        0x02 => IpAddr::V6(Ipv6Addr::from(xor(<[u8; 16]>::try_from(ip).ok()?, &key))),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Encodes an address value into `out` (exactly [`value_len`] bytes).
pub(crate) fn encode(addr: &SocketAddr, tid: Option<&TransactionId>, out: &mut [u8]) {
    let key = tid.map_or([0; 16], xor_key);
    let [p0, p1] = xor(addr.port().to_be_bytes(), &key);
    let family = AddressFamily::of(&addr.ip()).0;
    let head = [0, family, p0, p1];
    match addr.ip() {
        IpAddr::V4(ip) => put(out, &head, &xor(ip.octets(), &key)),
        IpAddr::V6(ip) => put(out, &head, &xor(ip.octets(), &key)),
    }
}

fn put(out: &mut [u8], head: &[u8; 4], ip: &[u8]) {
    debug_assert_eq!(out.len(), 4 + ip.len());
    if let Some((h, rest)) = out.split_first_chunk_mut::<4>() {
        *h = *head;
        if let Some(dst) = rest.get_mut(..ip.len()) {
            dst.copy_from_slice(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: TransactionId = TransactionId([0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae]);

    #[test]
    fn rfc5769_xor_mapped_addresses() {
        // RFC 5769 §2.2 and §2.3 values for 192.0.2.1:32853 and
        // [2001:db8:1234:5678:11:2233:4455:6677]:32853.
        let v4 = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        let v6 = [
            0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2,
            0xb9, 0xd9,
        ];
        let a4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let a6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap();
        assert_eq!(decode(&v4, Some(&TID)), Some(a4));
        assert_eq!(decode(&v6, Some(&TID)), Some(a6));
        let mut out = [0u8; 20];
        encode(&a6, Some(&TID), &mut out);
        assert_eq!(out, v6);
        encode(&a4, Some(&TID), &mut out[..8]);
        assert_eq!(out[..8], v4);
    }

    #[test]
    fn plain_addresses_are_not_xored() {
        let a: SocketAddr = "10.1.2.3:4660".parse().unwrap();
        let mut out = [0u8; 8];
        encode(&a, None, &mut out);
        assert_eq!(out, [0, 1, 0x12, 0x34, 10, 1, 2, 3]);
        assert_eq!(decode(&out, None), Some(a));
    }

    #[test]
    fn bad_family_or_length_is_rejected() {
        assert_eq!(decode(&[0, 3, 0, 0, 1, 2, 3, 4], None), None);
        assert_eq!(decode(&[0, 1, 0, 0, 1, 2, 3], None), None);
        assert_eq!(decode(&[0, 2, 0, 0, 1, 2, 3, 4], None), None);
        assert_eq!(decode(&[0, 1, 0], None), None);
    }
}
