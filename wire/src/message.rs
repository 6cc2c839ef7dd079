//! A borrowed view of one STUN message (RFC 8489 §5, §6.3, §14).

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use zerocopy::FromBytes;

use crate::attr::{Attr, AttrType, Attribute, RawAttribute};
use crate::error::Error;
use crate::header::pad4;
use crate::header::{Class, HEADER_LEN, Header, MAGIC_COOKIE, MessageType, Method, TransactionId};

/// XOR-ed into the CRC-32 of a message to make its FINGERPRINT (RFC 8489 §14.7).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Which integrity attribute protects a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityKind {
    /// MESSAGE-INTEGRITY, HMAC-SHA1.
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256, HMAC-SHA256.
    Sha256,
}

/// A STUN message borrowed from the bytes it was parsed from.
///
/// [`Message::parse`] checks the header and the framing of every attribute
/// once; afterwards no accessor can fail on framing or panic. Attribute
/// values are decoded lazily, only when asked for.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    buf: &'a [u8],
    header: &'a Header,
    /// Where the attributes a receiver processes end: the first
    /// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 or FINGERPRINT.
    attrs_end: usize,
    integrity: Option<usize>,
    integrity_sha256: Option<usize>,
    fingerprint: Option<usize>,
}

impl<'a> Message<'a> {
    /// Parses a whole message: `buf` must be exactly one message, as a UDP
    /// datagram or a frame cut by [`crate::framer::frame`].
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::NotStun`] or [`Error::LengthMismatch`]
    /// for bytes that are not one STUN message; [`Error::AttributeOverflow`]
    /// or [`Error::InvalidAttribute`] for a STUN message with broken
    /// attribute framing.
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let (header, body) = Header::ref_from_prefix(buf).map_err(|_| Error::Truncated)?;
        let length = usize::from(header.length.get());
        if header.message_type.get() & 0xC000 != 0 || header.cookie.get() != MAGIC_COOKIE || length % 4 != 0 {
            return Err(Error::NotStun);
        }
        if body.len() != length {
            return Err(Error::LengthMismatch);
        }
        let mut msg =
            Self { buf, header, attrs_end: buf.len(), integrity: None, integrity_sha256: None, fingerprint: None };
        let mut pos = HEADER_LEN;
        let mut rest = body;
        while let Some((&[t0, t1, l0, l1], after)) = rest.split_first_chunk::<4>() {
            let typ = AttrType(u16::from_be_bytes([t0, t1]));
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            if msg.fingerprint.is_some() {
                // RFC 8489 §14.7: FINGERPRINT is the last attribute.
                return Err(Error::InvalidAttribute(AttrType::FINGERPRINT));
            }
            let invalid = Error::InvalidAttribute(typ);
            match typ {
                // RFC 8489 §14.5, §14.6: after MESSAGE-INTEGRITY only
                // MESSAGE-INTEGRITY-SHA256 and FINGERPRINT count; after
                // MESSAGE-INTEGRITY-SHA256 only FINGERPRINT.
                AttrType::MESSAGE_INTEGRITY if msg.integrity.is_none() && msg.integrity_sha256.is_none() => {
                    if len != 20 {
                        return Err(invalid);
                    }
                    msg.integrity = Some(pos);
                }
                AttrType::MESSAGE_INTEGRITY_SHA256 if msg.integrity_sha256.is_none() => {
                    if !(16..=32).contains(&len) || len % 4 != 0 {
                        return Err(invalid);
                    }
                    msg.integrity_sha256 = Some(pos);
                }
                AttrType::FINGERPRINT => {
                    if len != 4 {
                        return Err(invalid);
                    }
                    msg.fingerprint = Some(pos);
                }
                _ => {}
            }
            if msg.attrs_end == buf.len()
                && (msg.integrity.is_some() || msg.integrity_sha256.is_some() || msg.fingerprint.is_some())
            {
                msg.attrs_end = pos;
            }
            rest = after.get(pad4(len)..).ok_or(Error::AttributeOverflow)?;
            pos += 4 + pad4(len);
        }
        Ok(msg)
    }

    /// The header.
    #[must_use]
    pub fn header(&self) -> &'a Header {
        self.header
    }

    /// Method and class.
    #[must_use]
    pub fn message_type(&self) -> MessageType {
        MessageType::from_u16(self.header.message_type.get())
    }

    /// The method.
    #[must_use]
    pub fn method(&self) -> Method {
        self.message_type().method
    }

    /// The class.
    #[must_use]
    pub fn class(&self) -> Class {
        self.message_type().class
    }

    /// The transaction ID.
    #[must_use]
    pub fn transaction_id(&self) -> &'a TransactionId {
        &self.header.transaction_id
    }

    /// The whole message.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The attributes a receiver processes, in order: those before
    /// MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. RFC 8489
    /// §14.5 says anything after MESSAGE-INTEGRITY is to be ignored.
    #[must_use]
    pub fn attributes(&self) -> RawAttributes<'a> {
        RawAttributes { rest: self.buf.get(HEADER_LEN..self.attrs_end).unwrap_or_default() }
    }

    /// Every attribute in the message, including the integrity and
    /// fingerprint attributes and anything after them.
    #[must_use]
    pub fn all_attributes(&self) -> RawAttributes<'a> {
        RawAttributes { rest: self.buf.get(HEADER_LEN..).unwrap_or_default() }
    }

    /// The first processed attribute of type `typ`.
    #[must_use]
    pub fn get_raw(&self, typ: AttrType) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.typ == typ)
    }

    /// The first processed attribute of type `A`, decoded.
    ///
    /// # Errors
    /// [`Error::InvalidAttribute`] if it is present but malformed.
    pub fn get<A: Attr<'a>>(&self) -> Result<Option<A>, Error> {
        self.get_raw(A::TYPE).map(|raw| A::decode(raw.value, self.transaction_id())).transpose()
    }

    /// Every processed attribute of type `A` (several XOR-PEER-ADDRESS, say).
    pub fn get_all<A: Attr<'a>>(&self) -> impl Iterator<Item = Result<A, Error>> + 'a {
        let tid = self.transaction_id();
        self.attributes().filter(|a| a.typ == A::TYPE).map(move |a| A::decode(a.value, tid))
    }

    /// The processed attributes, decoded.
    pub fn decoded(&self) -> impl Iterator<Item = Result<Attribute<'a>, Error>> + 'a {
        let tid = self.transaction_id();
        self.attributes().map(move |a| Attribute::decode(a, tid))
    }

    /// The comprehension-required attribute types (below 0x8000) that this
    /// crate does not know: what a 420 response lists in UNKNOWN-ATTRIBUTES.
    pub fn unknown_comprehension_required(&self) -> impl Iterator<Item = AttrType> + 'a {
        self.attributes().map(|a| a.typ).filter(|t| t.is_comprehension_required() && !t.is_known())
    }

    /// The integrity attribute a receiver checks: MESSAGE-INTEGRITY-SHA256
    /// when present, else MESSAGE-INTEGRITY.
    #[must_use]
    pub fn integrity_kind(&self) -> Option<IntegrityKind> {
        match (self.integrity_sha256, self.integrity) {
            (Some(_), _) => Some(IntegrityKind::Sha256),
            (None, Some(_)) => Some(IntegrityKind::Sha1),
            (None, None) => None,
        }
    }

    /// Checks the message's integrity under `key` (the long-term key from
    /// [`crate::credentials`], or a short-term password's bytes), in
    /// constant time. MESSAGE-INTEGRITY-SHA256 is checked when present
    /// (§14.6 allows it truncated to 16 bytes), else MESSAGE-INTEGRITY.
    ///
    /// # Errors
    /// [`Error::MissingIntegrity`] or [`Error::IntegrityMismatch`].
    pub fn verify_integrity(&self, key: &[u8]) -> Result<IntegrityKind, Error> {
        let mismatch = |_| Error::IntegrityMismatch;
        if let Some(pos) = self.integrity_sha256 {
            let tag = self.value_at(pos);
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| Error::IntegrityMismatch)?;
            self.feed(&mut mac, pos, 4 + tag.len());
            mac.verify_truncated_left(tag).map_err(mismatch)?;
            Ok(IntegrityKind::Sha256)
        } else if let Some(pos) = self.integrity {
            let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).map_err(|_| Error::IntegrityMismatch)?;
            self.feed(&mut mac, pos, 24);
            mac.verify_slice(self.value_at(pos)).map_err(mismatch)?;
            Ok(IntegrityKind::Sha1)
        } else {
            Err(Error::MissingIntegrity)
        }
    }

    /// Whether the message carries FINGERPRINT.
    #[must_use]
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint.is_some()
    }

    /// Checks FINGERPRINT.
    ///
    /// # Errors
    /// [`Error::FingerprintMismatch`] when it is absent or wrong.
    pub fn verify_fingerprint(&self) -> Result<(), Error> {
        let pos = self.fingerprint.ok_or(Error::FingerprintMismatch)?;
        let expected = fingerprint(self.buf.get(..pos).unwrap_or_default());
        if self.value_at(pos) == expected.to_be_bytes() { Ok(()) } else { Err(Error::FingerprintMismatch) }
    }

    /// The value of the attribute whose header starts at `pos` (a position
    /// the parse recorded, so it is in bounds).
    fn value_at(&self, pos: usize) -> &'a [u8] {
        self.buf.get(pos..).and_then(|attr| RawAttributes { rest: attr }.next()).map_or(&[], |a| a.value)
    }

    /// Feeds a MAC the message up to `pos` as RFC 8489 §14.5 says: with the
    /// header's length covering the attributes up to and including the
    /// integrity attribute of `attr_len` bytes that starts at `pos`.
    fn feed(&self, mac: &mut impl Mac, pos: usize, attr_len: usize) {
        let mut header = *self.header;
        header.length.set(u16::try_from(pos + attr_len - HEADER_LEN).unwrap_or(u16::MAX));
        mac.update(zerocopy::IntoBytes::as_bytes(&header));
        mac.update(self.buf.get(HEADER_LEN..pos).unwrap_or_default());
    }
}

/// The FINGERPRINT value of the message bytes before the attribute, whose
/// header must already count it in the length.
#[must_use]
pub fn fingerprint(before: &[u8]) -> u32 {
    crc32fast::hash(before) ^ FINGERPRINT_XOR
}

/// Iterator over the attributes of a message that was checked by
/// [`Message::parse`].
#[derive(Debug, Clone)]
pub struct RawAttributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RawAttributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&[t0, t1, l0, l1], after) = self.rest.split_first_chunk::<4>()?;
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let value = after.get(..len)?;
        self.rest = after.get(pad4(len)..).unwrap_or_default();
        Some(RawAttribute { typ: AttrType(u16::from_be_bytes([t0, t1])), value })
    }
}
