//! Builds STUN messages in place in a caller's buffer (RFC 8489 §5, §14).

use core::net::SocketAddr;
use core::ops::Range;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use zerocopy::IntoBytes;
use zerocopy::network_endian::{U16, U32};

use crate::addr;
use crate::attr::{Attr, AttrType, Attribute, XorPeerAddress};
use crate::error::Error;
use crate::header::pad4;
use crate::header::{Class, HEADER_LEN, Header, MAGIC_COOKIE, MessageType, Method, TransactionId};
use crate::message::fingerprint;

/// The largest attribute section the 16-bit length field can describe
/// (a multiple of 4).
const MAX_BODY: usize = 0xFFFC;

/// Writes one STUN message into a `&mut [u8]`, attribute by attribute.
///
/// The header's length always matches what has been written, so the
/// integrity attributes and FINGERPRINT are computed over exactly the bytes
/// RFC 8489 §14.5-§14.7 names. Call them last, in that order.
///
/// ```
/// use ip2p_wire::{MessageWriter, MessageType, Method, Class, TransactionId, Message};
/// use ip2p_wire::attr::{Lifetime, Software};
///
/// let mut buf = [0u8; 128];
/// let tid = TransactionId([7; 12]);
/// let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::REFRESH, Class::Success), tid)?;
/// w.add(&Lifetime(600))?;
/// w.add(&Software("ip2p"))?;
/// w.integrity(b"key")?;
/// let len = w.fingerprint()?;
///
/// let msg = Message::parse(&buf[..len])?;
/// assert_eq!(msg.get::<Lifetime>()?, Some(Lifetime(600)));
/// msg.verify_integrity(b"key")?;
/// msg.verify_fingerprint()?;
/// # Ok::<(), ip2p_wire::Error>(())
/// ```
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
    padding: u8,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message of type `typ` at the beginning of `buf`.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] if `buf` cannot hold the 20-byte header.
    pub fn new(buf: &'b mut [u8], typ: MessageType, tid: TransactionId) -> Result<Self, Error> {
        let header = Header {
            message_type: U16::new(typ.to_u16()),
            length: U16::ZERO,
            cookie: U32::new(MAGIC_COOKIE),
            transaction_id: tid,
        };
        header.write_to_prefix(buf).map_err(|_| Error::BufferTooSmall)?;
        Ok(Self { buf, len: HEADER_LEN, tid, padding: 0 })
    }

    /// Sets the byte used to pad attribute values to 4 bytes (default 0).
    /// Receivers ignore padding (RFC 8489 §14); this exists so RFC 5769's
    /// vectors, which pad with spaces, can be reproduced byte for byte.
    pub fn set_padding(&mut self, byte: u8) {
        self.padding = byte;
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether only the header has been written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// The message as written so far (always a valid message).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Appends a typed attribute.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`], or [`Error::TooLong`] past 65,535 bytes.
    pub fn add<'a, A: Attr<'a>>(&mut self, attr: &A) -> Result<&mut Self, Error> {
        let tid = self.tid;
        attr.encode(self.reserve(A::TYPE, attr.value_len())?, &tid);
        Ok(self)
    }

    /// Appends any decoded attribute.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn add_attribute(&mut self, attr: &Attribute<'_>) -> Result<&mut Self, Error> {
        let tid = self.tid;
        attr.encode(self.reserve(attr.typ(), attr.value_len())?, &tid);
        Ok(self)
    }

    /// Appends an attribute given as raw bytes.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn add_raw(&mut self, typ: AttrType, value: &[u8]) -> Result<&mut Self, Error> {
        self.reserve(typ, value.len())?.copy_from_slice(value);
        Ok(self)
    }

    /// Appends MESSAGE-INTEGRITY: HMAC-SHA1 under `key` over the message so
    /// far, with the length field already counting this attribute.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn integrity(&mut self, key: &[u8]) -> Result<&mut Self, Error> {
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).map_err(|_| Error::TooLong)?;
        self.mac_attribute(AttrType::MESSAGE_INTEGRITY, mac)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 (full 32 bytes), as
    /// [`integrity`](Self::integrity) does for SHA-1.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn integrity_sha256(&mut self, key: &[u8]) -> Result<&mut Self, Error> {
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| Error::TooLong)?;
        self.mac_attribute(AttrType::MESSAGE_INTEGRITY_SHA256, mac)
    }

    fn mac_attribute<M: Mac>(&mut self, typ: AttrType, mut mac: M) -> Result<&mut Self, Error> {
        let start = self.len;
        let out_len = <M as hmac::digest::OutputSizeUser>::output_size();
        self.reserve(typ, out_len)?;
        mac.update(self.buf.get(..start).unwrap_or_default());
        let tag = mac.finalize().into_bytes();
        if let Some(dst) = self.buf.get_mut(start + 4..start + 4 + out_len) {
            dst.copy_from_slice(&tag);
        }
        Ok(self)
    }

    /// Appends FINGERPRINT and finishes the message.
    ///
    /// # Errors
    /// As [`add`](Self::add).
    pub fn fingerprint(mut self) -> Result<usize, Error> {
        let start = self.len;
        self.reserve(AttrType::FINGERPRINT, 4)?;
        let crc = fingerprint(self.buf.get(..start).unwrap_or_default());
        if let Some(dst) = self.buf.get_mut(start + 4..start + 8) {
            dst.copy_from_slice(&crc.to_be_bytes());
        }
        Ok(self.len)
    }

    /// Finishes the message; returns its length.
    #[must_use]
    pub fn finish(self) -> usize {
        self.len
    }

    /// Writes an attribute header and padding, updates the message length,
    /// and returns the value's bytes for the caller to fill.
    fn reserve(&mut self, typ: AttrType, value_len: usize) -> Result<&mut [u8], Error> {
        let len16 = u16::try_from(value_len).map_err(|_| Error::TooLong)?;
        let start = self.len;
        let end = start + 4 + pad4(value_len);
        if end - HEADER_LEN > MAX_BODY {
            return Err(Error::TooLong);
        }
        let slot = self.buf.get_mut(start..end).ok_or(Error::BufferTooSmall)?;
        let (head, value) = slot.split_at_mut(4);
        head.copy_from_slice(&tlv_header(typ, len16));
        value.fill(self.padding);
        self.len = end;
        let body = u16::try_from(end - HEADER_LEN).map_err(|_| Error::TooLong)?;
        if let Some(l) = self.buf.get_mut(2..4) {
            l.copy_from_slice(&body.to_be_bytes());
        }
        self.buf.get_mut(start + 4..start + 4 + value_len).ok_or(Error::BufferTooSmall)
    }
}

/// An attribute's 4-byte type-length header.
fn tlv_header(typ: AttrType, len: u16) -> [u8; 4] {
    let ([a, b], [c, d]) = (typ.0.to_be_bytes(), len.to_be_bytes());
    [a, b, c, d]
}

/// Bytes a Send or Data indication puts in front of its payload: header,
/// XOR-PEER-ADDRESS and the DATA attribute header (36 for an IPv4 peer,
/// 48 for IPv6).
#[must_use]
pub const fn indication_overhead(peer: &SocketAddr) -> usize {
    HEADER_LEN + 4 + addr::value_len(peer) + 4
}

/// Wraps a payload that already sits in `buf[payload]` into a Send or Data
/// indication without moving it: the header, XOR-PEER-ADDRESS and DATA
/// header go into the headroom in front of it, and up to 3 padding bytes
/// after it. Returns the range of the finished message in `buf`.
///
/// This is the relay's zero-copy framing of a peer's datagram for a client
/// that has no channel (RFC 8656 §11.6).
///
/// # Errors
/// [`Error::BufferTooSmall`] without [`indication_overhead`] bytes of
/// headroom or the padding's tailroom; [`Error::TooLong`] for a payload
/// whose message would exceed 65,535 bytes.
pub fn frame_indication(
    buf: &mut [u8],
    payload: Range<usize>,
    method: Method,
    peer: SocketAddr,
    tid: TransactionId,
) -> Result<Range<usize>, Error> {
    let overhead = indication_overhead(&peer);
    let data_len = payload.len();
    let start = payload.start.checked_sub(overhead).ok_or(Error::BufferTooSmall)?;
    let end = payload.end + (pad4(data_len) - data_len);
    let frame = buf.get_mut(start..end).ok_or(Error::BufferTooSmall)?;
    // The body is a multiple of 4, so fitting in 16 bits means <= MAX_BODY.
    let body = u16::try_from(frame.len() - HEADER_LEN).map_err(|_| Error::TooLong)?;
    let data_len16 = u16::try_from(data_len).map_err(|_| Error::TooLong)?;
    let (head, rest) = frame.split_at_mut_checked(overhead).ok_or(Error::BufferTooSmall)?;
    let mut w = MessageWriter::new(head, MessageType::new(method, Class::Indication), tid)?;
    w.add(&XorPeerAddress(peer))?;
    // The DATA header is written by hand: its value is already in place.
    let data_head = head.get_mut(overhead - 4..).ok_or(Error::BufferTooSmall)?;
    data_head.copy_from_slice(&tlv_header(AttrType::DATA, data_len16));
    if let Some(l) = head.get_mut(2..4) {
        l.copy_from_slice(&body.to_be_bytes());
    }
    if let Some(pad) = rest.get_mut(data_len..) {
        pad.fill(0);
    }
    Ok(start..end)
}
