//! ChannelData messages (RFC 8656 §12.4, §12.5): a 4-byte header (channel
//! number, length) in front of application data.

use core::ops::Range;

use zerocopy::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::Error;
use crate::header::pad4;

/// Size of the ChannelData header.
pub const CHANNEL_HEADER_LEN: usize = 4;

/// The ChannelData header exactly as it sits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ChannelHeader {
    /// Channel number, 0x4000..=0x7FFF.
    pub channel: U16,
    /// Length of the application data, without padding.
    pub length: U16,
}

/// Whether `n` is a channel number RFC 8656 lets a client bind
/// (0x4000..=0x4FFF).
#[must_use]
pub const fn is_valid_channel(n: u16) -> bool {
    n >= 0x4000 && n <= 0x4FFF
}

/// Whether `n` is a channel number RFC 5766 let a client bind
/// (0x4000..=0x7FFF, RFC 5766 §11). RFC 8656 narrowed the range, and notes
/// that this breaks RFC 5766 clients; coturn's own client tools still use
/// it, picking numbers at random up to 0x7FFF.
#[must_use]
pub const fn is_rfc5766_channel(n: u16) -> bool {
    is_channel_number(n)
}

/// Whether `n` has the ChannelData form: its two top bits are 01
/// (0x4000..=0x7FFF). Which of these a server binds is its policy.
#[must_use]
pub const fn is_channel_number(n: u16) -> bool {
    n & 0xC000 == 0x4000
}

/// How a ChannelData message travels, which decides its padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP (or DTLS): no padding needed (RFC 8656 §12.5).
    Datagram,
    /// TCP or TLS: padded to a multiple of 4 bytes.
    Stream,
}

impl Transport {
    /// Bytes a ChannelData message with `len` bytes of data occupies.
    #[must_use]
    pub const fn framed_len(self, len: usize) -> usize {
        CHANNEL_HEADER_LEN
            + match self {
                Transport::Datagram => len,
                Transport::Stream => pad4(len),
            }
    }
}

/// A ChannelData message borrowed from the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    channel: u16,
    data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses a ChannelData message. Bytes after the data (padding) are
    /// allowed and ignored.
    ///
    /// # Errors
    /// [`Error::Truncated`] if `buf` is shorter than the header or the
    /// length it claims (RFC 8656 §12.5: discard), [`Error::InvalidChannel`]
    /// for a number outside 0x4000..=0x7FFF. Whether the channel may be
    /// bound at all (RFC 8656 allows 0x4000..=0x4FFF, RFC 5766 all of
    /// them) is the server's check: an unbound channel's data is dropped.
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Result<Self, Error> {
        let (header, rest) = ChannelHeader::ref_from_prefix(buf).map_err(|_| Error::Truncated)?;
        let channel = header.channel.get();
        if !is_channel_number(channel) {
            return Err(Error::InvalidChannel);
        }
        let data = rest.get(..usize::from(header.length.get())).ok_or(Error::Truncated)?;
        Ok(Self { channel, data })
    }

    /// The channel number.
    #[must_use]
    pub const fn channel(&self) -> u16 {
        self.channel
    }

    /// The application data.
    #[must_use]
    pub const fn data(&self) -> &'a [u8] {
        self.data
    }
}

/// Writes a ChannelData message carrying a copy of `data` at the start of
/// `buf`; returns its length (with padding for [`Transport::Stream`]).
///
/// # Errors
/// [`Error::InvalidChannel`] outside 0x4000..=0x7FFF, [`Error::TooLong`] for more than 65,535 bytes
/// of data, [`Error::BufferTooSmall`].
pub fn write_channel_data(buf: &mut [u8], channel: u16, data: &[u8], transport: Transport) -> Result<usize, Error> {
    let total = transport.framed_len(data.len());
    let frame = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    let (_, rest) = frame.split_at_mut(CHANNEL_HEADER_LEN);
    let (dst, pad) = rest.split_at_mut(data.len());
    dst.copy_from_slice(data);
    pad.fill(0);
    frame_channel_data(buf, CHANNEL_HEADER_LEN..CHANNEL_HEADER_LEN + data.len(), channel, transport).map(|r| r.len())
}

/// Wraps data that already sits in `buf[data]` into a ChannelData message
/// without moving it: the header goes into the 4 bytes of headroom in front,
/// and for [`Transport::Stream`] zero padding after. Returns the range of
/// the message in `buf`. This is the relay's zero-copy framing of a peer's
/// datagram for a client with a channel.
///
/// # Errors
/// [`Error::InvalidChannel`] outside 0x4000..=0x7FFF, [`Error::TooLong`] for more than 65,535 bytes
/// of data, [`Error::BufferTooSmall`] without the headroom or tailroom.
#[inline]
pub fn frame_channel_data(
    buf: &mut [u8],
    data: Range<usize>,
    channel: u16,
    transport: Transport,
) -> Result<Range<usize>, Error> {
    if !is_channel_number(channel) {
        return Err(Error::InvalidChannel);
    }
    let length = u16::try_from(data.len()).map_err(|_| Error::TooLong)?;
    let start = data.start.checked_sub(CHANNEL_HEADER_LEN).ok_or(Error::BufferTooSmall)?;
    let end = start + transport.framed_len(data.len());
    let frame = buf.get_mut(start..end).ok_or(Error::BufferTooSmall)?;
    let header = ChannelHeader { channel: U16::new(channel), length: U16::new(length) };
    header.write_to_prefix(frame).map_err(|_| Error::BufferTooSmall)?;
    if let Some(pad) = frame.get_mut(CHANNEL_HEADER_LEN + data.len()..) {
        pad.fill(0);
    }
    Ok(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_ignores_padding() {
        let buf = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0xff];
        let cd = ChannelData::parse(&buf).unwrap();
        assert_eq!(cd.channel(), 0x4001);
        assert_eq!(cd.data(), b"abc");
    }

    #[test]
    fn rejects_bad_channels_and_short_data() {
        assert_eq!(ChannelData::parse(&[0x3f, 0xff, 0, 0]), Err(Error::InvalidChannel));
        assert_eq!(ChannelData::parse(&[0x80, 0x00, 0, 0]), Err(Error::InvalidChannel));
        assert!(ChannelData::parse(&[0x56, 0x9d, 0, 0]).is_ok(), "RFC 5766 range parses");
        assert_eq!(ChannelData::parse(&[0x40, 0x00, 0, 4, 1, 2, 3]), Err(Error::Truncated));
        assert_eq!(ChannelData::parse(&[0x40, 0x00, 0]), Err(Error::Truncated));
        assert!(ChannelData::parse(&[0x4f, 0xff, 0, 0]).is_ok());
    }

    #[test]
    fn frames_in_place_with_stream_padding() {
        let mut buf = [0xAAu8; 16];
        buf[4..9].copy_from_slice(b"hello");
        let r = frame_channel_data(&mut buf, 4..9, 0x4123, Transport::Stream).unwrap();
        assert_eq!(r, 0..12);
        assert_eq!(&buf[..12], &[0x41, 0x23, 0, 5, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]);
        let r = frame_channel_data(&mut buf, 4..9, 0x4123, Transport::Datagram).unwrap();
        assert_eq!(r, 0..9);
        assert_eq!(frame_channel_data(&mut buf, 3..9, 0x4123, Transport::Datagram), Err(Error::BufferTooSmall));
        assert_eq!(frame_channel_data(&mut buf, 4..16, 0x4123, Transport::Stream), Ok(0..16));
        assert_eq!(frame_channel_data(&mut buf, 5..14, 0x4123, Transport::Stream), Err(Error::BufferTooSmall));
        assert_eq!(frame_channel_data(&mut buf, 4..9, 0x8000, Transport::Stream), Err(Error::InvalidChannel));
    }

    #[test]
    fn write_copies_data() {
        let mut buf = [0u8; 8];
        assert_eq!(write_channel_data(&mut buf, 0x4000, b"xyz", Transport::Stream), Ok(8));
        assert_eq!(ChannelData::parse(&buf).unwrap().data(), b"xyz");
        assert_eq!(write_channel_data(&mut buf, 0x4000, b"xyzxy", Transport::Stream), Err(Error::BufferTooSmall));
    }
}
