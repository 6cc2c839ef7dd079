//! TURN over TCP and TLS, apart from how the bytes move (RFC 8656 §3.1,
//! §12.5; RFC 8489 §6.2.2).
//!
//! A [`Stream`] cuts what a connection receives into STUN messages and
//! ChannelData frames with the framer of ip2p-wire: a frame is handed on
//! where it lies in the received bytes, and only a frame split across reads
//! is copied (TLS decrypts into a buffer of its own first). What it sends
//! waits in a bounded queue: past [`Stream::new`]'s bound a frame is
//! dropped and counted, so a slow reader costs its own packets, never
//! memory without limit or other connections' time.

use std::io::{self, Read, Write};
use std::sync::Arc;

use ip2p_wire::framer::{Framed, frame};

/// Largest frame: a STUN message of 65,535 + 20 bytes, rounded up.
const MAX_FRAME: usize = 65_556;
/// Largest frame a connection may send before it has an allocation: its
/// requests (an Allocate with credentials is a few hundred bytes). A
/// stranger's half-sent frame then holds 2 KiB, not 64 KiB, until the
/// idle timeout closes it.
pub(crate) const FIRST_FRAME: usize = 2048;
/// Plaintext read from TLS at a time: the size of the scratch buffer a
/// datapath passes to [`Stream::receive`].
pub(crate) const TLS_CHUNK: usize = 16 * 1024;

/// Handles one frame of a stream (which it may change in place); may write
/// a reply into the scratch buffer and return its length.
pub(crate) type OnFrame<'a> = &'a mut dyn FnMut(&mut [u8], &mut [u8]) -> Option<usize>;

/// Why a connection must close.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// Bytes that are neither STUN nor ChannelData: the stream is out of
    /// sync (RFC 8656 §12.5 gives no way to recover).
    Framing,
    /// The TLS layer failed (handshake, bad record, alert).
    Tls(rustls::Error),
    /// The client ended its TLS session (close_notify).
    Closed,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Framing => f.write_str("bytes that are neither STUN nor ChannelData"),
            Self::Tls(e) => write!(f, "TLS: {e}"),
            Self::Closed => f.write_str("TLS session closed by the client"),
        }
    }
}

/// One connection's framing, TLS and send queue.
pub(crate) struct Stream {
    tls: Option<Box<rustls::ServerConnection>>,
    /// The start of a frame split across reads (plaintext).
    partial: Vec<u8>,
    /// The largest frame accepted: [`FIRST_FRAME`] until [`Self::trust`].
    max_frame: usize,
    /// Bytes to write after `flushing` (ciphertext on TLS).
    queued: Vec<u8>,
    /// Bytes being written, from `flushed` on: left alone while a write
    /// of them may be in flight.
    flushing: Vec<u8>,
    flushed: usize,
    /// Most unsent bytes held.
    limit: usize,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("tls", &self.tls.is_some())
            .field("partial", &self.partial.len())
            .field("backlog", &self.backlog())
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// A plain TCP stream holding at most `limit` unsent bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            tls: None,
            partial: Vec::new(),
            max_frame: FIRST_FRAME,
            queued: Vec::new(),
            flushing: Vec::new(),
            flushed: 0,
            limit,
        }
    }

    /// A TLS stream (server side).
    pub(crate) fn tls(config: Arc<rustls::ServerConfig>, limit: usize) -> Result<Self, rustls::Error> {
        let conn = rustls::ServerConnection::new(config)?;
        Ok(Self { tls: Some(Box::new(conn)), ..Self::new(limit) })
    }

    /// The connection has an allocation: frames up to the largest may come.
    pub(crate) fn trust(&mut self) {
        self.max_frame = MAX_FRAME;
    }

    /// Whether [`Self::trust`] was called.
    pub(crate) fn trusted(&self) -> bool {
        self.max_frame == MAX_FRAME
    }

    /// Whether the TLS handshake is still running.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Takes bytes read from the socket. `on_frame` gets each whole frame
    /// and a scratch buffer; the bytes of the scratch buffer it names (a
    /// reply) are sent back on this stream. `plain` is scratch for TLS's
    /// plaintext ([`TLS_CHUNK`] bytes serve). Returns the frames the send
    /// queue had no room for.
    pub(crate) fn receive(
        &mut self,
        bytes: &mut [u8],
        reply: &mut [u8],
        plain: &mut [u8],
        on_frame: OnFrame<'_>,
    ) -> Result<u64, StreamError> {
        let mut dropped = 0;
        let Self { tls, partial, max_frame, queued, flushing, flushed, limit } = self;
        let max_frame = *max_frame;
        let backlog = |q: &Vec<u8>, f: &Vec<u8>, done: usize| q.len() + f.len().saturating_sub(done);
        let Some(tls) = tls else {
            deframe(partial, bytes, max_frame, &mut |frame| {
                if let Some(n) = on_frame(frame, reply)
                    && let Some(r) = reply.get(..n)
                {
                    if backlog(queued, flushing, *flushed) + r.len() <= *limit {
                        queued.extend_from_slice(r);
                    } else {
                        dropped += 1;
                    }
                }
            })?;
            return Ok(dropped);
        };
        let mut input = &*bytes;
        let mut result = Ok(());
        while !input.is_empty() && result.is_ok() {
            if let Err(e) = tls.read_tls(&mut input) {
                tracing::debug!(error = %e, "TLS read");
                result = Err(StreamError::Framing);
                break;
            }
            if let Err(e) = tls.process_new_packets() {
                result = Err(StreamError::Tls(e));
                break;
            }
            loop {
                let n = match tls.reader().read(plain) {
                    Ok(0) => {
                        result = Err(StreamError::Closed);
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        result = Err(StreamError::Closed);
                        break;
                    }
                };
                let data = plain.get_mut(..n).unwrap_or_default();
                let mut replies = Vec::new();
                let framed = deframe(partial, data, max_frame, &mut |frame| {
                    if let Some(n) = on_frame(frame, reply)
                        && let Some(r) = reply.get(..n)
                    {
                        replies.extend_from_slice(r);
                    }
                });
                if !replies.is_empty() {
                    if backlog(queued, flushing, *flushed) + replies.len() <= *limit {
                        let _ = tls.writer().write_all(&replies);
                    } else {
                        dropped += 1;
                    }
                }
                if let Err(e) = framed {
                    result = Err(e);
                    break;
                }
            }
        }
        // Handshake messages, replies, and on failure the alert.
        while tls.wants_write() {
            if tls.write_tls(queued).is_err() {
                break;
            }
        }
        result.map(|()| dropped)
    }

    /// Queues a frame for the client; `false` (dropped) when the backlog
    /// is full or TLS is not ready for data yet.
    pub(crate) fn send(&mut self, frame: &[u8]) -> bool {
        if self.backlog() + frame.len() > self.limit {
            return false;
        }
        match &mut self.tls {
            None => self.queued.extend_from_slice(frame),
            Some(tls) => {
                if tls.is_handshaking() || tls.writer().write_all(frame).is_err() {
                    return false;
                }
                while tls.wants_write() {
                    if tls.write_tls(&mut self.queued).is_err() {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Unsent bytes.
    pub(crate) fn backlog(&self) -> usize {
        self.queued.len() + self.flushing.len().saturating_sub(self.flushed)
    }

    /// The bytes to write next, if any. They stay where they are until
    /// [`Self::wrote`] says how many went: a write of them may be in flight.
    pub(crate) fn next_write(&mut self) -> Option<&[u8]> {
        if self.flushed >= self.flushing.len() {
            self.flushing.clear();
            self.flushed = 0;
            std::mem::swap(&mut self.flushing, &mut self.queued);
        }
        self.flushing.get(self.flushed..).filter(|b| !b.is_empty())
    }

    /// `n` bytes of [`Self::next_write`] were written.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.flushed = (self.flushed + n).min(self.flushing.len());
    }

    /// The TLS session and the bytes not yet written, for whoever carries
    /// on with the connection.
    pub(crate) fn into_parts(mut self) -> (Option<Box<rustls::ServerConnection>>, Vec<u8>) {
        let mut unsent = self.flushing.split_off(self.flushed.min(self.flushing.len()));
        unsent.append(&mut self.queued);
        (self.tls, unsent)
    }

    /// A plain stream's state as it moves to the next process (a
    /// handover): the start of a frame split across reads, and the bytes
    /// not yet written. `None` for TLS, whose session cannot move.
    pub(crate) fn moving(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.tls.is_some() {
            return None;
        }
        let mut unsent = self.flushing.get(self.flushed..).unwrap_or_default().to_vec();
        unsent.extend_from_slice(&self.queued);
        Some((self.partial.clone(), unsent))
    }

    /// A plain stream moved from the previous process, as [`Self::moving`]
    /// gave it (the unsent bytes may exceed this process's bound for a
    /// while): `None` when `partial` is not the start of a frame.
    pub(crate) fn moved(limit: usize, partial: Vec<u8>, unsent: Vec<u8>) -> Option<Self> {
        if !partial.is_empty()
            && !matches!(frame(&partial), Ok(Framed::Incomplete { needed }) if partial.len() + needed <= MAX_FRAME)
        {
            return None;
        }
        let mut s = Self::new(limit);
        s.partial = partial;
        s.queued = unsent;
        Some(s)
    }

    /// Writes what is queued to `w` until it would block.
    pub(crate) fn flush_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        while let Some(bytes) = self.next_write() {
            match w.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Hands each whole frame of `partial` followed by `data` to `each`; the
/// start of a frame left incomplete is kept in `partial`. A frame that
/// lies whole in `data` is handed on where it is. A frame longer than
/// `max` is a framing error.
fn deframe(
    partial: &mut Vec<u8>,
    mut data: &mut [u8],
    max: usize,
    each: &mut dyn FnMut(&mut [u8]),
) -> Result<(), StreamError> {
    // First finish the frame a previous read began.
    while !partial.is_empty() {
        match frame(partial).map_err(|_| StreamError::Framing)? {
            Framed::Complete { bytes, .. } => {
                let len = bytes.len();
                each(partial.get_mut(..len).unwrap_or_default());
                partial.clear();
            }
            Framed::Incomplete { needed } => {
                if partial.len() + needed > max {
                    return Err(StreamError::Framing);
                }
                if data.is_empty() {
                    return Ok(());
                }
                let (head, rest) = data.split_at_mut(needed.min(data.len()));
                partial.extend_from_slice(head);
                data = rest;
            }
        }
    }
    while !data.is_empty() {
        match frame(data).map_err(|_| StreamError::Framing)? {
            Framed::Complete { bytes, .. } => {
                let (whole, rest) = data.split_at_mut(bytes.len());
                each(whole);
                data = rest;
            }
            Framed::Incomplete { needed } => {
                if data.len() + needed > max {
                    return Err(StreamError::Framing);
                }
                partial.extend_from_slice(data);
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ip2p_wire::{Transport, write_channel_data};

    fn channel(n: u16, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0; data.len() + 8];
        let len = write_channel_data(&mut out, n, data, Transport::Stream).unwrap();
        out.truncate(len);
        out
    }

    fn frames_of(stream: &mut Stream, reads: &[&[u8]]) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut got = Vec::new();
        let mut reply = [0u8; 64];
        stream.trust();
        for r in reads {
            stream.receive(&mut r.to_vec(), &mut reply, &mut [], &mut |f, _| {
                got.push(f.to_vec());
                None
            })?;
        }
        Ok(got)
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let a = channel(0x4000, b"hello");
        let b = channel(0x4001, &[7; 300]);
        let all = [a.clone(), b.clone()].concat();
        for cut in 0..all.len() {
            for cut2 in cut..all.len() {
                let mut s = Stream::new(1 << 16);
                let got = frames_of(&mut s, &[&all[..cut], &all[cut..cut2], &all[cut2..]]).expect("valid stream");
                assert_eq!(got, vec![a.clone(), b.clone()], "cuts at {cut} and {cut2}");
            }
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let mut s = Stream::new(1 << 16);
        // A TLS ClientHello on a plain TCP port: no STUN magic cookie.
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
        assert!(matches!(frames_of(&mut s, &[&hello]), Err(StreamError::Framing)));
        let mut s = Stream::new(1 << 16);
        assert!(matches!(frames_of(&mut s, &[&[0xFF; 4]]), Err(StreamError::Framing)));
        let mut s = Stream::new(1 << 16);
        let mut bad = channel(0x4000, b"ok");
        bad.extend_from_slice(&[0xFF; 8]);
        assert!(matches!(frames_of(&mut s, &[&bad]), Err(StreamError::Framing)));
    }

    #[test]
    fn replies_are_queued_and_the_backlog_is_bounded() {
        let mut s = Stream::new(10);
        let mut reply = [0u8; 64];
        let frame = channel(0x4000, b"x");
        let dropped = s.receive(&mut [frame.clone(), frame].concat(), &mut reply, &mut [], &mut |_, r| {
            r[..6].copy_from_slice(b"answer");
            Some(6)
        });
        assert_eq!(dropped.unwrap(), 1, "the second 6-byte reply does not fit in 10 bytes");
        assert_eq!(s.backlog(), 6);
        assert!(s.send(b"1234"));
        assert!(!s.send(b"1"), "full");
        let mut out = Vec::new();
        s.flush_to(&mut out).unwrap();
        assert_eq!(out, b"answer1234");
        assert_eq!(s.backlog(), 0);
    }

    #[test]
    fn a_write_in_flight_is_left_alone() {
        let mut s = Stream::new(100);
        assert!(s.send(b"abc"));
        let first = s.next_write().unwrap().as_ptr();
        assert!(s.send(b"def"), "queued behind the write in flight");
        s.wrote(1);
        assert_eq!(s.next_write().unwrap(), b"bc");
        assert_eq!(s.next_write().unwrap().as_ptr(), first.wrapping_add(1));
        s.wrote(2);
        assert_eq!(s.next_write().unwrap(), b"def");
        s.wrote(3);
        assert!(s.next_write().is_none());
    }

    /// A handover: the next process's stream goes on mid-frame, and sends
    /// what this one had not.
    #[test]
    fn a_stream_moves_mid_frame_with_its_unsent_bytes() {
        let a = channel(0x4000, &[5; 100]);
        let mut s = Stream::new(1 << 16);
        s.trust();
        assert_eq!(frames_of(&mut s, &[&a[..30]]).unwrap(), Vec::<Vec<u8>>::new());
        assert!(s.send(b"reply"));
        let (partial, unsent) = s.moving().unwrap();
        assert_eq!((partial.len(), unsent.as_slice()), (30, &b"reply"[..]));
        let mut next = Stream::moved(1 << 16, partial, unsent).unwrap();
        assert_eq!(frames_of(&mut next, &[&a[30..]]).unwrap(), vec![a.clone()]);
        let mut out = Vec::new();
        next.flush_to(&mut out).unwrap();
        assert_eq!(out, b"reply");
        // Not the start of a frame: refused.
        assert!(Stream::moved(1 << 16, vec![0xFF; 8], Vec::new()).is_none());
        assert!(Stream::moved(1 << 16, a.clone(), Vec::new()).is_none(), "a whole frame is never left pending");
    }

    #[test]
    fn a_stranger_cannot_park_a_large_frame() {
        // Before an allocation, a frame header announcing 60 KB closes the
        // stream at once instead of holding the bytes.
        let big = {
            let mut f = vec![0u8; 20];
            f[..2].copy_from_slice(&0x0001u16.to_be_bytes());
            f[2..4].copy_from_slice(&60_000u16.to_be_bytes());
            f[4..8].copy_from_slice(&ip2p_wire::MAGIC_COOKIE.to_be_bytes());
            f
        };
        let mut reply = [0u8; 64];
        let mut s = Stream::new(1 << 16);
        let r = s.receive(&mut big.clone(), &mut reply, &mut [], &mut |_, _| None);
        assert!(matches!(r, Err(StreamError::Framing)), "{r:?}");
        // A split small frame is fine, and a trusted stream takes large ones.
        let small = channel(0x4000, &[1; 100]);
        let mut s = Stream::new(1 << 16);
        assert!(s.receive(&mut small[..10].to_vec(), &mut reply, &mut [], &mut |_, _| None).is_ok());
        assert!(s.receive(&mut small[10..].to_vec(), &mut reply, &mut [], &mut |_, _| None).is_ok());
        let mut s = Stream::new(1 << 16);
        s.trust();
        assert!(s.receive(&mut big.clone(), &mut reply, &mut [], &mut |_, _| None).is_ok());
        assert_eq!(s.partial.len(), 20);
    }
}
