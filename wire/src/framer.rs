//! Cuts a TCP or TLS byte stream into STUN messages and ChannelData frames
//! (RFC 8656 §12.5: on streams ChannelData is padded to 4 bytes), without
//! copying.

use crate::channel::{CHANNEL_HEADER_LEN, Transport, is_channel_number};
use crate::error::Error;
use crate::header::{HEADER_LEN, MAGIC_COOKIE};

/// What a complete frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A STUN message: parse it with [`crate::Message::parse`].
    Stun,
    /// A ChannelData message: parse it with [`crate::ChannelData::parse`].
    ChannelData,
}

/// The result of looking at the front of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed<'a> {
    /// A whole frame is at the front of the buffer. `bytes` borrows it,
    /// padding included: consume `bytes.len()` bytes.
    Complete {
        /// The frame's kind.
        kind: FrameKind,
        /// The frame.
        bytes: &'a [u8],
    },
    /// The frame is not complete: read at least `needed` more bytes.
    Incomplete {
        /// Bytes still missing (a lower bound while the header is partial).
        needed: usize,
    },
}

/// Looks for one frame at the front of `buf`.
///
/// Only the fixed headers are examined; the frame's contents are checked
/// when it is parsed. The largest frame is 65,556 bytes (a STUN message)
/// or 65,540 (padded ChannelData): a caller bounds its buffer by that or
/// rejects earlier with its own limit.
///
/// # Errors
/// [`Error::NotStun`] when the bytes can be neither a STUN message nor
/// ChannelData. It means the stream is out of sync: close it.
pub fn frame(buf: &[u8]) -> Result<Framed<'_>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(Framed::Incomplete { needed: CHANNEL_HEADER_LEN });
    };
    let (kind, header) = match first >> 6 {
        0b00 => (FrameKind::Stun, HEADER_LEN),
        0b01 => (FrameKind::ChannelData, CHANNEL_HEADER_LEN),
        _ => return Err(Error::NotStun),
    };
    let Some(&[b0, b1, l0, l1]) = buf.first_chunk::<4>() else {
        return Ok(Framed::Incomplete { needed: header - buf.len() });
    };
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    let total = match kind {
        FrameKind::Stun => {
            if length % 4 != 0 {
                return Err(Error::NotStun);
            }
            if let Some(cookie) = buf.get(4..8)
                && cookie != MAGIC_COOKIE.to_be_bytes()
            {
                return Err(Error::NotStun);
            }
            HEADER_LEN + length
        }
        FrameKind::ChannelData => {
            debug_assert!(is_channel_number(u16::from_be_bytes([b0, b1])));
            Transport::Stream.framed_len(length)
        }
    };
    Ok(match buf.get(..total) {
        Some(bytes) => Framed::Complete { kind, bytes },
        None => Framed::Incomplete { needed: total - buf.len() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_a_stream_into_frames() {
        let mut stream = Vec::new();
        // A Binding request with no attributes.
        stream.extend_from_slice(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]);
        stream.extend_from_slice(&[9; 12]);
        // ChannelData with 5 bytes of data and 3 of padding.
        stream.extend_from_slice(&[0x40, 0x00, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0]);

        let Framed::Complete { kind, bytes } = frame(&stream).unwrap() else { panic!() };
        assert_eq!((kind, bytes.len()), (FrameKind::Stun, 20));
        let rest = &stream[20..];
        let Framed::Complete { kind, bytes } = frame(rest).unwrap() else { panic!() };
        assert_eq!((kind, bytes.len()), (FrameKind::ChannelData, 12));
        assert_eq!(frame(&rest[12..]), Ok(Framed::Incomplete { needed: 4 }));
    }

    #[test]
    fn says_how_much_is_missing() {
        let msg = [0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0x80];
        assert_eq!(frame(&msg[..1]), Ok(Framed::Incomplete { needed: 19 }));
        assert_eq!(frame(&msg[..6]), Ok(Framed::Incomplete { needed: 22 }));
        assert_eq!(frame(&msg), Ok(Framed::Incomplete { needed: 6 }));
        assert_eq!(frame(&[0x4f, 0xff, 0, 1]), Ok(Framed::Incomplete { needed: 4 }));
    }

    #[test]
    fn rejects_what_cannot_be_a_frame() {
        // ASCII letters (0x40..=0x7F) look like ChannelData and wait for
        // the length they seem to announce (RFC 7983's ranges overlap
        // ASCII): a relay's frame-size and idle limits end such streams. A
        // byte with the top bit set fails at once.
        assert_eq!(frame(b"PUT / HTTP/1.1\r\n"), Ok(Framed::Incomplete { needed: 0x5420 + 4 - 16 }));
        assert_eq!(frame(&[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00]), Err(Error::NotStun)); // TLS ClientHello
        assert_eq!(frame(&[0x00, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]), Err(Error::NotStun));
        assert_eq!(frame(&[0x00, 0x01, 0x00, 0x03]), Err(Error::NotStun));
        assert_eq!(frame(&[0xC0, 0x00, 0x00, 0x00]), Err(Error::NotStun));
        assert_eq!(frame(&[0x80]), Err(Error::NotStun));
    }
}
