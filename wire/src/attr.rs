//! STUN and TURN attributes (RFC 8489 §14, RFC 8656 §18, RFC 6062 §6.2):
//! one type per attribute behind the [`Attr`] trait, and [`Attribute`] for
//! any of them.
//!
//! Values borrow from the message: decoding never copies or allocates.
//! Values a server must judge (a channel number out of range, an unknown
//! address family or transport) decode as data; only values whose size or
//! encoding is impossible are [`Error::InvalidAttribute`].

use core::fmt;
use core::net::SocketAddr;

use crate::addr::{self, AddressFamily};
use crate::error::{Error, ErrorCode};
use crate::header::TransactionId;

/// An attribute type number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrType(pub u16);

impl AttrType {
    /// Types below 0x8000 are comprehension-required: an agent that does
    /// not understand one must fail the request with 420 (RFC 8489 §14).
    #[must_use]
    pub const fn is_comprehension_required(self) -> bool {
        self.0 < 0x8000
    }
}

impl fmt::Debug for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "AttrType({:#06x})", self.0),
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One attribute type's value: how it decodes from and encodes to the bytes
/// after the 4-byte attribute header (padding excluded).
pub trait Attr<'a>: Sized {
    /// The attribute's type number.
    const TYPE: AttrType;
    /// Decodes a value. `tid` is the message's transaction ID (the XOR
    /// address attributes need it).
    ///
    /// # Errors
    /// [`Error::InvalidAttribute`] when the value's size or content is
    /// impossible for this type.
    fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, Error>;
    /// The value's encoded length, without padding.
    fn value_len(&self) -> usize;
    /// Encodes the value into `out`, which is exactly
    /// [`value_len`](Self::value_len) bytes long.
    fn encode(&self, out: &mut [u8], tid: &TransactionId);
}

/// An attribute as it sits in a message: type and value, not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawAttribute<'a> {
    /// The attribute type.
    pub typ: AttrType,
    /// The value, without padding.
    pub value: &'a [u8],
}

/// A cursor over an output slice whose size the caller already checked.
struct Out<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Out<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn put(&mut self, bytes: &[u8]) {
        let end = self.pos + bytes.len();
        debug_assert!(end <= self.buf.len(), "attribute encoder overran its value");
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }
}

fn invalid<T>(t: AttrType) -> Result<T, Error> {
    Err(Error::InvalidAttribute(t))
}

fn array<const N: usize>(value: &[u8], t: AttrType) -> Result<&[u8; N], Error> {
    value.try_into().map_err(|_| Error::InvalidAttribute(t))
}

/// Defines a UTF-8 text attribute with a maximum length in bytes.
macro_rules! text_attr {
    ($(#[$doc:meta])* $name:ident, $t:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a str);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$t;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
                if value.len() > $max {
                    return invalid(Self::TYPE);
                }
                core::str::from_utf8(value).map(Self).map_err(|_| Error::InvalidAttribute(Self::TYPE))
            }
            fn value_len(&self) -> usize {
                self.0.len()
            }
            fn encode(&self, out: &mut [u8], _: &TransactionId) {
                Out::new(out).put(self.0.as_bytes());
            }
        }
    };
}

/// Defines an attribute holding opaque bytes of a fixed size.
macro_rules! fixed_bytes_attr {
    ($(#[$doc:meta])* $name:ident, $t:ident, $n:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<'a>(pub &'a [u8; $n]);

        impl<'a> Attr<'a> for $name<'a> {
            const TYPE: AttrType = AttrType::$t;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
                array(value, Self::TYPE).map(Self)
            }
            fn value_len(&self) -> usize {
                $n
            }
            fn encode(&self, out: &mut [u8], _: &TransactionId) {
                Out::new(out).put(self.0);
            }
        }
    };
}

/// Defines an attribute holding a transport address, XOR-ed or not.
macro_rules! address_attr {
    ($(#[$doc:meta])* $name:ident, $t:ident, $xor:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub SocketAddr);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$t;
            fn decode(value: &'a [u8], tid: &TransactionId) -> Result<Self, Error> {
                addr::decode(value, $xor.then_some(tid)).map(Self).ok_or(Error::InvalidAttribute(Self::TYPE))
            }
            fn value_len(&self) -> usize {
                addr::value_len(&self.0)
            }
            fn encode(&self, out: &mut [u8], tid: &TransactionId) {
                addr::encode(&self.0, $xor.then_some(tid), out);
            }
        }
    };
}

/// Defines an attribute holding a 32-bit number.
macro_rules! u32_attr {
    ($(#[$doc:meta])* $name:ident, $t:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub u32);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$t;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
                array::<4>(value, Self::TYPE).map(|b| Self(u32::from_be_bytes(*b)))
            }
            fn value_len(&self) -> usize {
                4
            }
            fn encode(&self, out: &mut [u8], _: &TransactionId) {
                Out::new(out).put(&self.0.to_be_bytes());
            }
        }
    };
}

/// Defines an attribute holding an address family and three reserved bytes.
macro_rules! family_attr {
    ($(#[$doc:meta])* $name:ident, $t:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name(pub AddressFamily);

        impl<'a> Attr<'a> for $name {
            const TYPE: AttrType = AttrType::$t;
            fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
                array::<4>(value, Self::TYPE).map(|b| Self(AddressFamily(b[0])))
            }
            fn value_len(&self) -> usize {
                4
            }
            fn encode(&self, out: &mut [u8], _: &TransactionId) {
                Out::new(out).put(&[self.0.0, 0, 0, 0]);
            }
        }
    };
}

address_attr!(
    /// MAPPED-ADDRESS (RFC 8489 §14.1): the client's address, not XOR-ed
    /// (only for RFC 3489 clients).
    MappedAddress, MAPPED_ADDRESS, false
);
address_attr!(
    /// XOR-MAPPED-ADDRESS (RFC 8489 §14.2): the client's reflexive address.
    XorMappedAddress, XOR_MAPPED_ADDRESS, true
);
address_attr!(
    /// ALTERNATE-SERVER (RFC 8489 §14.15): where a 300 sends the client.
    AlternateServer, ALTERNATE_SERVER, false
);
address_attr!(
    /// XOR-PEER-ADDRESS (RFC 8656 §18.3): a peer; a request may carry several.
    XorPeerAddress, XOR_PEER_ADDRESS, true
);
address_attr!(
    /// XOR-RELAYED-ADDRESS (RFC 8656 §18.5): an address the server relays from.
    XorRelayedAddress, XOR_RELAYED_ADDRESS, true
);

text_attr!(
    /// USERNAME (RFC 8489 §14.3): fewer than 509 bytes of UTF-8.
    Username, USERNAME, 508
);
text_attr!(
    /// REALM (RFC 8489 §14.9): at most 763 bytes of UTF-8.
    Realm, REALM, 763
);
text_attr!(
    /// NONCE (RFC 8489 §14.10): at most 763 bytes. See
    /// [`crate::credentials::SecurityFeatures`] for its RFC 8489 cookie.
    Nonce, NONCE, 763
);
text_attr!(
    /// SOFTWARE (RFC 8489 §14.14): at most 763 bytes of UTF-8.
    Software, SOFTWARE, 763
);
text_attr!(
    /// ALTERNATE-DOMAIN (RFC 8489 §14.16): the alternate server's domain
    /// name, for TLS certificate checks.
    AlternateDomain, ALTERNATE_DOMAIN, 255
);

fixed_bytes_attr!(
    /// USERHASH (RFC 8489 §14.4): SHA-256 of `username ":" realm`.
    Userhash, USERHASH, 32
);
fixed_bytes_attr!(
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 over the message.
    MessageIntegrity, MESSAGE_INTEGRITY, 20
);
fixed_bytes_attr!(
    /// RESERVATION-TOKEN (RFC 8656 §18.9): names a reserved relay port.
    ReservationToken, RESERVATION_TOKEN, 8
);

u32_attr!(
    /// FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message XOR 0x5354554e.
    Fingerprint, FINGERPRINT
);
u32_attr!(
    /// LIFETIME (RFC 8656 §18.2): seconds until the allocation expires.
    Lifetime, LIFETIME
);
u32_attr!(
    /// CONNECTION-ID (RFC 6062 §6.2.1): names a TCP peer connection.
    ConnectionId, CONNECTION_ID
);

family_attr!(
    /// REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6): the family of the relayed
    /// address the client wants.
    RequestedAddressFamily, REQUESTED_ADDRESS_FAMILY
);
family_attr!(
    /// ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): asks for an IPv6 relayed
    /// address besides the IPv4 one.
    AdditionalAddressFamily, ADDITIONAL_ADDRESS_FAMILY
);

/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): HMAC-SHA256, possibly
/// truncated to 16..=32 bytes in steps of 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for MessageIntegritySha256<'a> {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY_SHA256;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        if (16..=32).contains(&value.len()) && value.len().is_multiple_of(4) {
            Ok(Self(value))
        } else {
            invalid(Self::TYPE)
        }
    }
    fn value_len(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        Out::new(out).put(self.0);
    }
}

/// DATA (RFC 8656 §18.4): the payload of a Send or Data indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for Data<'a> {
    const TYPE: AttrType = AttrType::DATA;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        Ok(Self(value))
    }
    fn value_len(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        Out::new(out).put(self.0);
    }
}

/// ERROR-CODE (RFC 8489 §14.8): an error response's code and reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodeAttr<'a> {
    /// The code.
    pub code: ErrorCode,
    /// The reason phrase, at most 763 bytes of UTF-8.
    pub reason: &'a str,
}

impl<'a> ErrorCodeAttr<'a> {
    /// The code with the RFC's reason phrase.
    #[must_use]
    pub const fn new(code: ErrorCode) -> ErrorCodeAttr<'static> {
        ErrorCodeAttr { code, reason: code.reason() }
    }
}

/// Decodes the class/number word and reason shared by ERROR-CODE and
/// ADDRESS-ERROR-CODE.
fn decode_code(value: &[u8], t: AttrType) -> Result<(u8, ErrorCode, &str), Error> {
    let Some(([first, _, class, number], reason)) = value.split_first_chunk::<4>() else {
        return invalid(t);
    };
    let code = u16::from(class & 0x07) * 100 + u16::from(*number);
    match (ErrorCode::new(code), *number < 100, core::str::from_utf8(reason)) {
        (Some(code), true, Ok(reason)) if reason.len() <= 763 => Ok((*first, code, reason)),
        _ => invalid(t),
    }
}

impl<'a> Attr<'a> for ErrorCodeAttr<'a> {
    const TYPE: AttrType = AttrType::ERROR_CODE;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        let (_, code, reason) = decode_code(value, Self::TYPE)?;
        Ok(Self { code, reason })
    }
    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let mut o = Out::new(out);
        o.put(&[0, 0, self.code.class(), self.code.number()]);
        o.put(self.reason.as_bytes());
    }
}

/// ADDRESS-ERROR-CODE (RFC 8656 §18.12): why one family of a dual
/// allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressErrorCode<'a> {
    /// The family that could not be allocated.
    pub family: AddressFamily,
    /// The code (usually 440 or 508).
    pub code: ErrorCode,
    /// The reason phrase.
    pub reason: &'a str,
}

impl<'a> Attr<'a> for AddressErrorCode<'a> {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        let (family, code, reason) = decode_code(value, Self::TYPE)?;
        Ok(Self { family: AddressFamily(family), code, reason })
    }
    fn value_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let mut o = Out::new(out);
        o.put(&[self.family.0, 0, self.code.class(), self.code.number()]);
        o.put(self.reason.as_bytes());
    }
}

/// A list of 16-bit values, either as received or built from a slice.
#[derive(Debug, Clone, Copy)]
enum List<'a, T> {
    Wire(&'a [u8]),
    Items(&'a [T]),
}

/// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9): the comprehension-required
/// attributes a 420 response did not understand.
#[derive(Debug, Clone, Copy)]
pub struct UnknownAttributes<'a>(List<'a, AttrType>);

impl<'a> UnknownAttributes<'a> {
    /// The attribute for a 420 response listing `types`.
    #[must_use]
    pub const fn new(types: &'a [AttrType]) -> Self {
        Self(List::Items(types))
    }

    /// The listed attribute types.
    pub fn iter(&self) -> impl Iterator<Item = AttrType> + 'a {
        let (wire, items): (&[u8], &[AttrType]) = match self.0 {
            List::Wire(w) => (w, &[]),
            List::Items(i) => (&[], i),
        };
        wire.chunks_exact(2)
            .filter_map(|c| c.first_chunk::<2>())
            .map(|c| AttrType(u16::from_be_bytes(*c)))
            .chain(items.iter().copied())
    }
}

impl PartialEq for UnknownAttributes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for UnknownAttributes<'_> {}

impl<'a> Attr<'a> for UnknownAttributes<'a> {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        if value.len().is_multiple_of(2) { Ok(Self(List::Wire(value))) } else { invalid(Self::TYPE) }
    }
    fn value_len(&self) -> usize {
        match self.0 {
            List::Wire(w) => w.len(),
            List::Items(i) => 2 * i.len(),
        }
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let mut o = Out::new(out);
        match self.0 {
            List::Wire(w) => o.put(w),
            List::Items(items) => items.iter().for_each(|t| o.put(&t.0.to_be_bytes())),
        }
    }
}

/// A password algorithm number (RFC 8489 §18.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlgorithmId(pub u16);

impl AlgorithmId {
    /// MD5 of `username:realm:password`, the RFC 5389 key.
    pub const MD5: Self = Self(0x0001);
    /// SHA-256 of `username:realm:password`.
    pub const SHA256: Self = Self(0x0002);
}

/// PASSWORD-ALGORITHM (RFC 8489 §14.12): the algorithm the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithm<'a> {
    /// The algorithm.
    pub algorithm: AlgorithmId,
    /// Its parameters (none for MD5 and SHA-256).
    pub params: &'a [u8],
}

impl<'a> PasswordAlgorithm<'a> {
    /// An algorithm without parameters.
    #[must_use]
    pub const fn new(algorithm: AlgorithmId) -> Self {
        Self { algorithm, params: &[] }
    }

    /// Splits one algorithm entry off the front of `value`; the entry's
    /// parameters are padded to 4 bytes unless they end the value.
    fn split(value: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let ([a0, a1, l0, l1], rest) = value.split_first_chunk::<4>()?;
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let params = rest.get(..len)?;
        let rest = rest.get(crate::header::pad4(len).min(rest.len())..)?;
        Some((Self { algorithm: AlgorithmId(u16::from_be_bytes([*a0, *a1])), params }, rest))
    }

    fn encode_into(&self, o: &mut Out<'_>) {
        // value_len() is checked against u16::MAX by the writer.
        let len = u16::try_from(self.params.len()).unwrap_or(u16::MAX);
        o.put(&self.algorithm.0.to_be_bytes());
        o.put(&len.to_be_bytes());
        o.put(self.params);
    }
}

impl<'a> Attr<'a> for PasswordAlgorithm<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        match Self::split(value) {
            Some((alg, [])) => Ok(alg),
            _ => invalid(Self::TYPE),
        }
    }
    fn value_len(&self) -> usize {
        4 + self.params.len()
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        self.encode_into(&mut Out::new(out));
    }
}

/// PASSWORD-ALGORITHMS (RFC 8489 §14.11): the algorithms a server offers,
/// in its order of preference.
#[derive(Debug, Clone, Copy)]
pub struct PasswordAlgorithms<'a>(List<'a, PasswordAlgorithm<'a>>);

impl<'a> PasswordAlgorithms<'a> {
    /// The attribute offering `algorithms`.
    #[must_use]
    pub const fn new(algorithms: &'a [PasswordAlgorithm<'a>]) -> Self {
        Self(List::Items(algorithms))
    }

    /// The offered algorithms, in order.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let (mut wire, items): (&[u8], &[PasswordAlgorithm<'a>]) = match self.0 {
            List::Wire(w) => (w, &[]),
            List::Items(i) => (&[], i),
        };
        core::iter::from_fn(move || {
            let (alg, rest) = PasswordAlgorithm::split(wire)?;
            wire = rest;
            Some(alg)
        })
        .chain(items.iter().copied())
    }
}

impl PartialEq for PasswordAlgorithms<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for PasswordAlgorithms<'_> {}

impl<'a> Attr<'a> for PasswordAlgorithms<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        let mut rest = value;
        while !rest.is_empty() {
            match PasswordAlgorithm::split(rest) {
                Some((_, r)) => rest = r,
                None => return invalid(Self::TYPE),
            }
        }
        Ok(Self(List::Wire(value)))
    }
    fn value_len(&self) -> usize {
        match self.0 {
            List::Wire(w) => w.len(),
            List::Items(i) => i.iter().map(|a| 4 + crate::header::pad4(a.params.len())).sum(),
        }
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let mut o = Out::new(out);
        match self.0 {
            // As received: its last entry's padding may be short.
            List::Wire(w) => o.put(w),
            List::Items(items) => {
                for alg in items {
                    alg.encode_into(&mut o);
                    let padding = crate::header::pad4(alg.params.len()) - alg.params.len();
                    o.put([0; 3].get(..padding).unwrap_or_default());
                }
            }
        }
    }
}

/// CHANNEL-NUMBER (RFC 8656 §18.1). Any number decodes; the server
/// checks the range it allows (see [`crate::channel::is_valid_channel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelNumber(pub u16);

impl<'a> Attr<'a> for ChannelNumber {
    const TYPE: AttrType = AttrType::CHANNEL_NUMBER;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        array::<4>(value, Self::TYPE).map(|b| Self(u16::from_be_bytes([b[0], b[1]])))
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let [a, b] = self.0.to_be_bytes();
        Out::new(out).put(&[a, b, 0, 0]);
    }
}

/// EVEN-PORT (RFC 8656 §18.8): asks for an even relay port, and with the R
/// bit for the next port to be reserved too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvenPort {
    /// The R bit: reserve the next-higher port.
    pub reserve_next: bool,
}

impl<'a> Attr<'a> for EvenPort {
    const TYPE: AttrType = AttrType::EVEN_PORT;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        array::<1>(value, Self::TYPE).map(|b| Self { reserve_next: b[0] & 0x80 != 0 })
    }
    fn value_len(&self) -> usize {
        1
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        Out::new(out).put(&[if self.reserve_next { 0x80 } else { 0 }]);
    }
}

/// REQUESTED-TRANSPORT (RFC 8656 §18.7): the IP protocol number of the
/// relayed transport. Any number decodes; the server answers 442 for one
/// it does not relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedTransport(pub u8);

impl RequestedTransport {
    /// UDP (17).
    pub const UDP: Self = Self(17);
    /// TCP (6), RFC 6062.
    pub const TCP: Self = Self(6);
}

impl<'a> Attr<'a> for RequestedTransport {
    const TYPE: AttrType = AttrType::REQUESTED_TRANSPORT;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        array::<4>(value, Self::TYPE).map(|b| Self(b[0]))
    }
    fn value_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        Out::new(out).put(&[self.0, 0, 0, 0]);
    }
}

/// DONT-FRAGMENT (RFC 8656 §18.10): set DF on the relayed packets. Empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DontFragment;

impl<'a> Attr<'a> for DontFragment {
    const TYPE: AttrType = AttrType::DONT_FRAGMENT;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        if value.is_empty() { Ok(Self) } else { invalid(Self::TYPE) }
    }
    fn value_len(&self) -> usize {
        0
    }
    fn encode(&self, _: &mut [u8], _: &TransactionId) {}
}

/// ICMP (RFC 8656 §18.13): an ICMP error a peer's packet caused, carried in
/// a Data indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    /// The ICMP (or ICMPv6) type.
    pub icmp_type: u8,
    /// The ICMP code.
    pub code: u8,
    /// Type-specific data (the MTU for "fragmentation needed").
    pub error_data: u32,
}

impl<'a> Attr<'a> for Icmp {
    const TYPE: AttrType = AttrType::ICMP;
    fn decode(value: &'a [u8], _: &TransactionId) -> Result<Self, Error> {
        let [_, _, icmp_type, code, d0, d1, d2, d3] = *array::<8>(value, Self::TYPE)?;
        Ok(Self { icmp_type, code, error_data: u32::from_be_bytes([d0, d1, d2, d3]) })
    }
    fn value_len(&self) -> usize {
        8
    }
    fn encode(&self, out: &mut [u8], _: &TransactionId) {
        let mut o = Out::new(out);
        o.put(&[0, 0, self.icmp_type, self.code]);
        o.put(&self.error_data.to_be_bytes());
    }
}

/// Declares the type numbers and the [`Attribute`] enum from one table, so
/// the set of known attributes cannot drift between them.
macro_rules! attributes {
    ($($(#[$doc:meta])* $konst:ident = $num:literal => $variant:ident($ty:ty),)*) => {
        impl AttrType {
            $($(#[$doc])* pub const $konst: Self = Self($num);)*

            /// Whether this crate decodes the type (an unknown one is kept
            /// as [`Attribute::Unknown`]).
            #[must_use]
            pub const fn is_known(self) -> bool {
                matches!(self.0, $($num)|*)
            }

            /// The type's name in the RFCs, if it is known.
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($num => Some(stringify!($konst)),)*
                    _ => None,
                }
            }
        }

        /// Any attribute, decoded; unknown types are kept as data.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum Attribute<'a> {
            $($variant($ty),)*
            /// An attribute type this crate does not know.
            Unknown(RawAttribute<'a>),
        }

        impl<'a> Attribute<'a> {
            /// Decodes a raw attribute.
            ///
            /// # Errors
            /// [`Error::InvalidAttribute`] for a known type with an
            /// impossible value.
            pub fn decode(raw: RawAttribute<'a>, tid: &TransactionId) -> Result<Self, Error> {
                match raw.typ {
                    $(AttrType::$konst => <$ty>::decode(raw.value, tid).map(Self::$variant),)*
                    _ => Ok(Self::Unknown(raw)),
                }
            }

            /// The attribute's type number.
            #[must_use]
            pub fn typ(&self) -> AttrType {
                match self {
                    $(Self::$variant(_) => AttrType::$konst,)*
                    Self::Unknown(raw) => raw.typ,
                }
            }

            /// The encoded value length, without padding.
            #[must_use]
            pub fn value_len(&self) -> usize {
                match self {
                    $(Self::$variant(a) => a.value_len(),)*
                    Self::Unknown(raw) => raw.value.len(),
                }
            }

            /// Encodes the value into `out` (exactly `value_len()` bytes).
            pub fn encode(&self, out: &mut [u8], tid: &TransactionId) {
                match self {
                    $(Self::$variant(a) => a.encode(out, tid),)*
                    Self::Unknown(raw) => Out::new(out).put(raw.value),
                }
            }
        }
    };
}

attributes! {
    /// 0x0001, RFC 8489.
    MAPPED_ADDRESS = 0x0001 => MappedAddress(MappedAddress),
    /// 0x0006, RFC 8489.
    USERNAME = 0x0006 => Username(Username<'a>),
    /// 0x0008, RFC 8489.
    MESSAGE_INTEGRITY = 0x0008 => MessageIntegrity(MessageIntegrity<'a>),
    /// 0x0009, RFC 8489.
    ERROR_CODE = 0x0009 => ErrorCode(ErrorCodeAttr<'a>),
    /// 0x000A, RFC 8489.
    UNKNOWN_ATTRIBUTES = 0x000A => UnknownAttributes(UnknownAttributes<'a>),
    /// 0x000C, RFC 8656.
    CHANNEL_NUMBER = 0x000C => ChannelNumber(ChannelNumber),
    /// 0x000D, RFC 8656.
    LIFETIME = 0x000D => Lifetime(Lifetime),
    /// 0x0012, RFC 8656.
    XOR_PEER_ADDRESS = 0x0012 => XorPeerAddress(XorPeerAddress),
    /// 0x0013, RFC 8656.
    DATA = 0x0013 => Data(Data<'a>),
    /// 0x0014, RFC 8489.
    REALM = 0x0014 => Realm(Realm<'a>),
    /// 0x0015, RFC 8489.
    NONCE = 0x0015 => Nonce(Nonce<'a>),
    /// 0x0016, RFC 8656.
    XOR_RELAYED_ADDRESS = 0x0016 => XorRelayedAddress(XorRelayedAddress),
    /// 0x0017, RFC 8656.
    REQUESTED_ADDRESS_FAMILY = 0x0017 => RequestedAddressFamily(RequestedAddressFamily),
    /// 0x0018, RFC 8656.
    EVEN_PORT = 0x0018 => EvenPort(EvenPort),
    /// 0x0019, RFC 8656.
    REQUESTED_TRANSPORT = 0x0019 => RequestedTransport(RequestedTransport),
    /// 0x001A, RFC 8656.
    DONT_FRAGMENT = 0x001A => DontFragment(DontFragment),
    /// 0x001C, RFC 8489.
    MESSAGE_INTEGRITY_SHA256 = 0x001C => MessageIntegritySha256(MessageIntegritySha256<'a>),
    /// 0x001D, RFC 8489.
    PASSWORD_ALGORITHM = 0x001D => PasswordAlgorithm(PasswordAlgorithm<'a>),
    /// 0x001E, RFC 8489.
    USERHASH = 0x001E => Userhash(Userhash<'a>),
    /// 0x0020, RFC 8489.
    XOR_MAPPED_ADDRESS = 0x0020 => XorMappedAddress(XorMappedAddress),
    /// 0x0022, RFC 8656.
    RESERVATION_TOKEN = 0x0022 => ReservationToken(ReservationToken<'a>),
    /// 0x002A, RFC 6062.
    CONNECTION_ID = 0x002A => ConnectionId(ConnectionId),
    /// 0x8000, RFC 8656.
    ADDITIONAL_ADDRESS_FAMILY = 0x8000 => AdditionalAddressFamily(AdditionalAddressFamily),
    /// 0x8001, RFC 8656.
    ADDRESS_ERROR_CODE = 0x8001 => AddressErrorCode(AddressErrorCode<'a>),
    /// 0x8002, RFC 8489.
    PASSWORD_ALGORITHMS = 0x8002 => PasswordAlgorithms(PasswordAlgorithms<'a>),
    /// 0x8003, RFC 8489.
    ALTERNATE_DOMAIN = 0x8003 => AlternateDomain(AlternateDomain<'a>),
    /// 0x8004, RFC 8656.
    ICMP = 0x8004 => Icmp(Icmp),
    /// 0x8022, RFC 8489.
    SOFTWARE = 0x8022 => Software(Software<'a>),
    /// 0x8023, RFC 8489.
    ALTERNATE_SERVER = 0x8023 => AlternateServer(AlternateServer),
    /// 0x8028, RFC 8489.
    FINGERPRINT = 0x8028 => Fingerprint(Fingerprint),
}
