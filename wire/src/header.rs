//! The 20-byte STUN header (RFC 8489 §5): message type, length, magic
//! cookie and transaction ID.

use core::fmt;

use zerocopy::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The fixed value in bytes 4..8 of every RFC 5389/8489 STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Size of the STUN header.
pub const HEADER_LEN: usize = 20;

/// The STUN header exactly as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// Message type: two zero bits, then method and class interleaved.
    pub message_type: U16,
    /// Length of the attributes in bytes (a multiple of 4).
    pub length: U16,
    /// [`MAGIC_COOKIE`].
    pub cookie: U32,
    /// The transaction ID.
    pub transaction_id: TransactionId,
}

/// The 96-bit transaction ID that pairs a response with its request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(transparent)]
pub struct TransactionId(pub [u8; 12]);

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The message class: the two class bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request: expects a response.
    Request,
    /// An indication: no response.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// A STUN method: the 12 method bits of the message type.
///
/// Unknown methods are data (`Method(0x123)`), not errors: a server answers
/// an unknown request method with 400, which needs the method it saw.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(u16);

impl Method {
    /// Binding (RFC 8489).
    pub const BINDING: Self = Self(0x001);
    /// Allocate (RFC 8656).
    pub const ALLOCATE: Self = Self(0x003);
    /// Refresh (RFC 8656).
    pub const REFRESH: Self = Self(0x004);
    /// Send, indication only (RFC 8656).
    pub const SEND: Self = Self(0x006);
    /// Data, indication only (RFC 8656).
    pub const DATA: Self = Self(0x007);
    /// CreatePermission (RFC 8656).
    pub const CREATE_PERMISSION: Self = Self(0x008);
    /// ChannelBind (RFC 8656).
    pub const CHANNEL_BIND: Self = Self(0x009);
    /// Connect (RFC 6062).
    pub const CONNECT: Self = Self(0x00A);
    /// ConnectionBind (RFC 6062).
    pub const CONNECTION_BIND: Self = Self(0x00B);
    /// ConnectionAttempt, indication only (RFC 6062).
    pub const CONNECTION_ATTEMPT: Self = Self(0x00C);

    /// A method from its number; `None` if it does not fit in 12 bits.
    #[must_use]
    pub const fn new(method: u16) -> Option<Self> {
        if method <= 0x0FFF { Some(Self(method)) } else { None }
    }

    /// The 12-bit method number.
    #[must_use]
    pub const fn value(self) -> u16 {
        self.0
    }

    /// The method's name in the RFCs, if it is one this crate knows.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x001 => "Binding",
            0x003 => "Allocate",
            0x004 => "Refresh",
            0x006 => "Send",
            0x007 => "Data",
            0x008 => "CreatePermission",
            0x009 => "ChannelBind",
            0x00A => "Connect",
            0x00B => "ConnectionBind",
            0x00C => "ConnectionAttempt",
            _ => return None,
        })
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Method({:#05x})", self.0),
        }
    }
}

/// Method and class, as packed into the 14-bit message type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// A message type from its parts.
    #[must_use]
    pub const fn new(method: Method, class: Class) -> Self {
        Self { method, class }
    }

    /// Decodes the message type field (the two leading zero bits are the
    /// parser's concern: they are ignored here).
    ///
    /// RFC 8489 §5: the bits are M11..M7 C1 M6..M4 C0 M3..M0.
    #[must_use]
    pub const fn from_u16(t: u16) -> Self {
        let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
        let class = match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        Self { method: Method(method), class }
    }

    /// Encodes method and class into the message type field.
    #[must_use]
    pub const fn to_u16(self) -> u16 {
        let m = self.method.0;
        let c: u16 = match self.class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
    }
}

/// `n` rounded up to a multiple of 4: attribute and stream padding.
#[inline]
#[must_use]
pub const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_match_the_rfc_table() {
        // RFC 8489 §5 and RFC 8656 §17 give these encodings.
        let cases = [
            (0x0001, Method::BINDING, Class::Request),
            (0x0101, Method::BINDING, Class::Success),
            (0x0111, Method::BINDING, Class::Error),
            (0x0003, Method::ALLOCATE, Class::Request),
            (0x0103, Method::ALLOCATE, Class::Success),
            (0x0113, Method::ALLOCATE, Class::Error),
            (0x0016, Method::SEND, Class::Indication),
            (0x0017, Method::DATA, Class::Indication),
            (0x0109, Method::CHANNEL_BIND, Class::Success),
            (0x001C, Method::CONNECTION_ATTEMPT, Class::Indication),
        ];
        for (wire, method, class) in cases {
            let t = MessageType::new(method, class);
            assert_eq!(t.to_u16(), wire, "{t:?}");
            assert_eq!(MessageType::from_u16(wire), t);
        }
    }

    #[test]
    fn every_method_and_class_round_trips() {
        for m in 0..=0x0FFF {
            for class in [Class::Request, Class::Indication, Class::Success, Class::Error] {
                let t = MessageType::new(Method(m), class);
                assert_eq!(t.to_u16() & 0xC000, 0);
                assert_eq!(MessageType::from_u16(t.to_u16()), t);
            }
        }
    }

    #[test]
    fn header_is_twenty_bytes() {
        assert_eq!(core::mem::size_of::<Header>(), HEADER_LEN);
    }
}
