//! ip2p-wire: a sans-I/O codec for STUN (RFC 8489), TURN (RFC 8656, RFC
//! 6062) and ChannelData.
//!
//! - No sockets, no clock, no allocation: parsing borrows from the input
//!   ([`Message`], [`ChannelData`]) and writing goes into a caller's
//!   `&mut [u8]` ([`MessageWriter`], [`frame_channel_data`],
//!   [`frame_indication`]).
//! - [`classify`] sorts a datagram by its first byte (RFC 7983) for the
//!   price of one comparison; [`framer::frame`] cuts a TCP/TLS stream.
//! - [`Message::parse`] checks the header and every attribute's framing once;
//!   after that no accessor can panic, and values decode lazily.
//! - Errors are one small `Copy` type; [`Error::response`] maps each to the
//!   STUN error code a server answers with, or to silence.
//!
//! ```
//! use ip2p_wire::{classify, ChannelData, Message, PacketKind};
//!
//! fn handle(packet: &[u8]) {
//!     match classify(packet) {
//!         PacketKind::ChannelData => {
//!             if let Ok(cd) = ChannelData::parse(packet) {
//!                 let _ = (cd.channel(), cd.data()); // forward to the bound peer
//!             }
//!         }
//!         PacketKind::Stun => {
//!             if let Ok(msg) = Message::parse(packet) {
//!                 let _ = msg.method(); // run the TURN state machine
//!             }
//!         }
//!         PacketKind::Other => {} // not ours: drop
//!     }
//! }
//! # handle(&[0x40, 0x00, 0x00, 0x00]);
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

mod addr;
pub mod attr;
pub mod channel;
pub mod credentials;
mod error;
pub mod framer;
mod header;
mod message;
mod writer;

pub use addr::AddressFamily;
pub use attr::{Attr, AttrType, Attribute, RawAttribute};
pub use channel::{
    ChannelData, Transport, frame_channel_data, is_channel_number, is_rfc5766_channel, is_valid_channel,
    write_channel_data,
};
pub use error::{Error, ErrorCode};
pub use header::{Class, HEADER_LEN, Header, MAGIC_COOKIE, MessageType, Method, TransactionId, pad4};
pub use message::{FINGERPRINT_XOR, IntegrityKind, Message, RawAttributes, fingerprint};
pub use writer::{MessageWriter, frame_indication, indication_overhead};

/// What a datagram from a client (or a frame on a stream) is, judged by its
/// first byte as RFC 7983 and RFC 8656 §12 lay out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// First byte 0..=3: a STUN message.
    Stun,
    /// First byte 0x40..=0x7F: ChannelData (RFC 8656 binds channels
    /// 0x4000..=0x4FFF, RFC 5766 up to 0x7FFF; a server drops data on
    /// channels it did not bind).
    ChannelData,
    /// Anything else (empty, DTLS, RTP...).
    Other,
}

/// Sorts a packet by its first byte. This is the only test the forwarding
/// path pays before parsing.
#[inline]
#[must_use]
pub fn classify(packet: &[u8]) -> PacketKind {
    match packet.first() {
        Some(0x00..=0x03) => PacketKind::Stun,
        Some(0x40..=0x7F) => PacketKind::ChannelData,
        _ => PacketKind::Other,
    }
}
