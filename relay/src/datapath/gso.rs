//! UDP generic segmentation offload (GSO, `UDP_SEGMENT`): a run of
//! datagrams to one destination, all of one size but the last (which may
//! be shorter), goes to the kernel as one send, which cuts it into
//! datagrams late (in the device, or just before it), so the run pays for
//! one trip down the stack instead of one each. A video sender's frame is
//! such a run: a burst of full-size packets to one peer.

use std::net::SocketAddr;

/// Most datagrams in one GSO send (the kernel's `UDP_MAX_SEGMENTS`).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send (it is one UDP datagram until cut).
const MAX_BYTES: usize = 64_000;

/// A run being built: datagrams to `to`, of `size` bytes but the last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Run<K> {
    pub(crate) to: K,
    size: usize,
    n: usize,
    bytes: usize,
    /// A shorter datagram ended it.
    closed: bool,
}

impl<K: PartialEq> Run<K> {
    /// A run starting with a datagram of `len` bytes to `to`.
    pub(crate) fn new(to: K, len: usize) -> Self {
        Self { to, size: len, n: 1, bytes: len, closed: len == 0 }
    }

    /// Takes the next datagram, `len` bytes to `to`, if it extends the run.
    pub(crate) fn push(&mut self, to: &K, len: usize) -> bool {
        let fits = *to == self.to
            && !self.closed
            && (1..=self.size).contains(&len)
            && self.n < MAX_SEGMENTS
            && self.bytes + len <= MAX_BYTES;
        if fits {
            self.n += 1;
            self.bytes += len;
            self.closed = len < self.size;
        }
        fits
    }

    /// The segment size (the first datagram's).
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// How many of `msgs` (destination, length), from the first, can go as one
/// GSO send: 1 when the first goes alone.
pub(crate) fn run(msgs: impl IntoIterator<Item = (SocketAddr, usize)>) -> usize {
    let mut msgs = msgs.into_iter();
    let Some((to, len)) = msgs.next() else { return 0 };
    let mut run = Run::new(to, len);
    while msgs.next().is_some_and(|(to, len)| run.push(&to, len)) {}
    run.n
}

/// What GSO did on one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GsoCounters {
    /// Sends that carried several datagrams.
    pub sends: u64,
    /// The datagrams they carried.
    pub datagrams: u64,
}

impl GsoCounters {
    pub(crate) fn count(&mut self, datagrams: usize) {
        self.sends += 1;
        self.datagrams += datagrams as u64;
    }
}

/// A GSO send failed with `errno`: whether the kernel refused GSO itself
/// rather than the datagrams' path (full buffers, no route), so that the
/// run should go datagram by datagram: EIO (the device cannot checksum
/// it), EINVAL (a segment over the path MTU), EOPNOTSUPP. EIO also turns
/// GSO off (`enabled`) for the worker, with a log line.
pub(crate) fn fall_back(errno: i32, enabled: &mut bool) -> bool {
    if errno == libc::EIO && *enabled {
        tracing::warn!("UDP GSO refused by the device (EIO): this worker sends datagram by datagram");
        *enabled = false;
    }
    matches!(errno, libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_one_destination_one_size_and_at_most_one_shorter_last() {
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        assert_eq!(run([]), 0);
        assert_eq!(run([(a, 100)]), 1);
        assert_eq!(run([(a, 100), (a, 100), (a, 100), (b, 100)]), 3);
        assert_eq!(run([(a, 100), (a, 100), (a, 60), (a, 60)]), 3, "the shorter one ends it");
        assert_eq!(run([(a, 100), (a, 120)]), 1, "a longer one cannot follow");
        assert_eq!(run([(a, 0), (a, 0)]), 1, "no empty segments");
        assert_eq!(run(std::iter::repeat_n((a, 10), 100)), MAX_SEGMENTS);
        assert_eq!(run(std::iter::repeat_n((a, 1200), 100)), MAX_BYTES / 1200);
    }
}
