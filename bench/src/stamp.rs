//! The stamp at the front of every payload: which session sent it, its
//! sequence number, and when it was *meant* to leave (open loop: latency is
//! measured from the schedule, not from when the sender got around to it).

/// Bytes of the stamp; payloads are at least this long.
pub const STAMP_LEN: usize = 24;
const MAGIC: [u8; 4] = *b"ip2p";

/// A payload's stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending session.
    pub session: u32,
    /// Its sequence number within the session, from 0.
    pub seq: u64,
    /// Intended send time, nanoseconds since the run's start.
    pub intended_ns: u64,
}

impl Stamp {
    /// Writes the stamp at the front of `payload` (at least [`STAMP_LEN`]).
    pub fn write(&self, payload: &mut [u8]) {
        let Some(head) = payload.first_chunk_mut::<STAMP_LEN>() else { return };
        let (session, seq, intended) =
            (self.session.to_be_bytes(), self.seq.to_be_bytes(), self.intended_ns.to_be_bytes());
        let bytes = MAGIC.iter().chain(&session).chain(&seq).chain(&intended);
        for (dst, src) in head.iter_mut().zip(bytes) {
            *dst = *src;
        }
    }

    /// Reads a stamp; `None` for a payload that does not carry one.
    #[must_use]
    pub fn read(payload: &[u8]) -> Option<Self> {
        let head = payload.first_chunk::<STAMP_LEN>()?;
        let (magic, rest) = head.split_first_chunk::<4>()?;
        if *magic != MAGIC {
            return None;
        }
        let (session, rest) = rest.split_first_chunk::<4>()?;
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let intended = rest.first_chunk::<8>()?;
        Some(Self {
            session: u32::from_be_bytes(*session),
            seq: u64::from_be_bytes(*seq),
            intended_ns: u64::from_be_bytes(*intended),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_foreign_bytes_are_refused() {
        let s = Stamp { session: 7, seq: 1 << 40, intended_ns: 123_456_789 };
        let mut p = [0xAAu8; 100];
        s.write(&mut p);
        assert_eq!(Stamp::read(&p), Some(s));
        assert_eq!(p[24], 0xAA, "only the stamp is written");
        assert_eq!(Stamp::read(&p[..23]), None);
        p[0] = b'x';
        assert_eq!(Stamp::read(&p), None);
    }
}
