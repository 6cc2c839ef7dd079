//! Codec errors and the STUN error codes a server answers them with.

use core::fmt;

use crate::attr::AttrType;

/// Why bytes could not be parsed or a message could not be written.
///
/// Small and `Copy`: the forwarding path returns it without allocating.
/// [`Error::response`] says what a server should answer, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than a fixed header needs.
    Truncated,
    /// Not a STUN message: leading bits, magic cookie or length alignment
    /// are wrong (RFC 8489 §6.3 says to discard such a datagram silently).
    NotStun,
    /// The length field disagrees with the number of bytes received.
    LengthMismatch,
    /// An attribute's length runs past the end of the message.
    AttributeOverflow,
    /// An attribute value has a size or content its type does not allow,
    /// or sits where it may not (anything after FINGERPRINT).
    InvalidAttribute(AttrType),
    /// A ChannelData channel number outside 0x4000..=0x4FFF.
    InvalidChannel,
    /// The message carries no MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256.
    MissingIntegrity,
    /// MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 does not match the key.
    IntegrityMismatch,
    /// FINGERPRINT is absent or does not match the message.
    FingerprintMismatch,
    /// The output buffer (or its headroom or tailroom) is too small.
    BufferTooSmall,
    /// A value does not fit its length field (a message over 65,535 bytes,
    /// an attribute value over 65,535 bytes).
    TooLong,
}

impl Error {
    /// The error response a server sends for a *request* that failed with
    /// this error; `None` means the request is discarded without an answer.
    ///
    /// RFC 8489 §6.3: a message that fails the basic checks (leading bits,
    /// cookie, length) is dropped silently, as is one whose FINGERPRINT is
    /// wrong (it was not meant for us). A malformed attribute is a 400 and
    /// failed authentication a 401 (§9.2.4).
    #[must_use]
    pub const fn response(self) -> Option<ErrorCode> {
        match self {
            Error::AttributeOverflow | Error::InvalidAttribute(_) | Error::InvalidChannel => {
                Some(ErrorCode::BAD_REQUEST)
            }
            Error::MissingIntegrity | Error::IntegrityMismatch => Some(ErrorCode::UNAUTHENTICATED),
            Error::Truncated
            | Error::NotStun
            | Error::LengthMismatch
            | Error::FingerprintMismatch
            | Error::BufferTooSmall
            | Error::TooLong => None,
        }
    }
}

/// A request's decoding error as the answer it gets: [`Error::response`],
/// or 400 for an error that says nothing more (so that `?` maps a
/// malformed attribute to its STUN error code in one place).
impl From<Error> for ErrorCode {
    fn from(e: Error) -> Self {
        e.response().unwrap_or(ErrorCode::BAD_REQUEST)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("packet shorter than its header"),
            Error::NotStun => f.write_str("not a STUN message"),
            Error::LengthMismatch => f.write_str("STUN length field does not match the packet"),
            Error::AttributeOverflow => f.write_str("STUN attribute runs past the message end"),
            Error::InvalidAttribute(t) => write!(f, "invalid STUN attribute {t}"),
            Error::InvalidChannel => f.write_str("channel number outside 0x4000..=0x4FFF"),
            Error::MissingIntegrity => f.write_str("no MESSAGE-INTEGRITY attribute"),
            Error::IntegrityMismatch => f.write_str("MESSAGE-INTEGRITY does not match"),
            Error::FingerprintMismatch => f.write_str("FINGERPRINT absent or wrong"),
            Error::BufferTooSmall => f.write_str("output buffer too small"),
            Error::TooLong => f.write_str("value too long for its length field"),
        }
    }
}

impl core::error::Error for Error {}

/// A STUN error code (RFC 8489 §14.8): class × 100 + number, 300..=699.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(u16);

impl ErrorCode {
    /// 300, RFC 8489: the client should contact ALTERNATE-SERVER.
    pub const TRY_ALTERNATE: Self = Self(300);
    /// 400, RFC 8489: the request was malformed.
    pub const BAD_REQUEST: Self = Self(400);
    /// 401, RFC 8489: credentials missing or wrong (the RFC's "Unauthenticated").
    pub const UNAUTHENTICATED: Self = Self(401);
    /// 403, RFC 8656: the request is valid but refused by policy.
    pub const FORBIDDEN: Self = Self(403);
    /// 420, RFC 8489: a comprehension-required attribute was not understood.
    pub const UNKNOWN_ATTRIBUTE: Self = Self(420);
    /// 437, RFC 8656: the 5-tuple already has a different allocation, or none.
    pub const ALLOCATION_MISMATCH: Self = Self(437);
    /// 438, RFC 8489: the NONCE is no longer valid.
    pub const STALE_NONCE: Self = Self(438);
    /// 440, RFC 8656: the requested address family is not supported.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: Self = Self(440);
    /// 441, RFC 8656: credentials differ from the allocation's.
    pub const WRONG_CREDENTIALS: Self = Self(441);
    /// 442, RFC 8656: REQUESTED-TRANSPORT names an unsupported protocol.
    pub const UNSUPPORTED_TRANSPORT_PROTOCOL: Self = Self(442);
    /// 443, RFC 8656: peer address family differs from the relayed address.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: Self = Self(443);
    /// 446, RFC 6062: a connection to that peer already exists.
    pub const CONNECTION_ALREADY_EXISTS: Self = Self(446);
    /// 447, RFC 6062: the connection to the peer timed out or failed.
    pub const CONNECTION_TIMEOUT_OR_FAILURE: Self = Self(447);
    /// 486, RFC 8656: the user's allocation quota is used up.
    pub const ALLOCATION_QUOTA_REACHED: Self = Self(486);
    /// 487, RFC 8445: ICE role conflict.
    pub const ROLE_CONFLICT: Self = Self(487);
    /// 500, RFC 8489: a temporary server error.
    pub const SERVER_ERROR: Self = Self(500);
    /// 508, RFC 8656: the server cannot allocate now (ports, memory, limits).
    pub const INSUFFICIENT_CAPACITY: Self = Self(508);

    /// An error code from its number; `None` outside 300..=699.
    #[must_use]
    pub const fn new(code: u16) -> Option<Self> {
        if code >= 300 && code <= 699 { Some(Self(code)) } else { None }
    }

    /// The numeric code, e.g. 401.
    #[must_use]
    pub const fn code(self) -> u16 {
        self.0
    }

    /// The hundreds digit (3..=6).
    #[must_use]
    #[allow(clippy::cast_possible_truncation)] // 300..=699 / 100 and % 100 fit a u8
    pub const fn class(self) -> u8 {
        (self.0 / 100) as u8
    }

    /// The code modulo 100.
    #[must_use]
    #[allow(clippy::cast_possible_truncation)]
    pub const fn number(self) -> u8 {
        (self.0 % 100) as u8
    }

    /// The reason phrase the RFCs suggest for this code.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self.0 {
            300 => "Try Alternate",
            400 => "Bad Request",
            401 => "Unauthenticated",
            403 => "Forbidden",
            420 => "Unknown Attribute",
            437 => "Allocation Mismatch",
            438 => "Stale Nonce",
            440 => "Address Family not Supported",
            441 => "Wrong Credentials",
            442 => "Unsupported Transport Protocol",
            443 => "Peer Address Family Mismatch",
            446 => "Connection Already Exists",
            447 => "Connection Timeout or Failure",
            486 => "Allocation Quota Reached",
            487 => "Role Conflict",
            500 => "Server Error",
            508 => "Insufficient Capacity",
            _ => "Error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}
