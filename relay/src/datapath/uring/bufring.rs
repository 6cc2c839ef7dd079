//! The provided-buffer ring: the receive buffers the kernel fills, handed
//! out by buffer ID and given back when what was sent from them is done.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

use ip2p_turn::{PEER_HEADROOM, PEER_TAILROOM};

/// The buffer group of the provided-buffer ring.
pub(super) const BGID: u16 = 0;
/// Bytes the kernel reserves for the source address in each received
/// buffer. With the 16-byte `io_uring_recvmsg_out` header the payload
/// starts at byte 80: headroom for the largest header the relay writes.
pub(super) const NAME_LEN: u32 = 64;
const PAYLOAD_OFFSET: usize = 16 + NAME_LEN as usize;
/// One receive buffer: header, name, the largest UDP payload, tailroom.
pub(super) const BUF_SIZE: usize = PAYLOAD_OFFSET + 65_535 + PEER_TAILROOM;

const _: () = assert!(PAYLOAD_OFFSET >= PEER_HEADROOM);

/// The provided-buffer ring and the buffers it hands out.
pub(super) struct BufRing {
    entries: *mut BufRingEntry,
    memory: *mut u8,
    /// Number of buffers, a power of two.
    pub(super) count: u16,
    /// Our copy of the tail; published to the kernel by [`Self::publish`].
    tail: u16,
    /// Buffers the kernel can use now.
    pub(super) available: usize,
}

impl BufRing {
    fn layouts(count: u16) -> io::Result<(Layout, Layout)> {
        let bad = |_| io::Error::new(io::ErrorKind::InvalidInput, "bad buffer ring size");
        let ring = Layout::from_size_align(usize::from(count) * size_of::<BufRingEntry>(), 4096).map_err(bad)?;
        // The allocator's own alignment: for a large zeroed block it maps
        // fresh pages, which stay untouched until a datagram lands (a
        // stricter alignment makes it clear all 32 MiB by hand: ~10 ms and
        // the whole block resident at every worker's start).
        let memory = Layout::from_size_align(usize::from(count) * BUF_SIZE, 16).map_err(bad)?;
        Ok((ring, memory))
    }

    /// Allocates the ring and `count` buffers (a power of two). Allocate
    /// it before the `IoUring` it is registered with, so that the ring is
    /// dropped first.
    pub(super) fn new(count: u16) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32_768 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "io_uring buffers must be a power of two"));
        }
        let (ring, memory) = Self::layouts(count)?;
        // SAFETY: both layouts have non-zero size. Zeroed memory is a valid
        // (empty) buffer ring; the buffers' pages are only touched as
        // datagrams land in them.
        let (entries, memory) = unsafe { (alloc_zeroed(ring), alloc_zeroed(memory)) };
        if entries.is_null() || memory.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "cannot allocate receive buffers"));
        }
        Ok(Self { entries: entries.cast(), memory, count, tail: 0, available: 0 })
    }

    /// Registers the ring with `ring` and provides every buffer.
    pub(super) fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the ring memory is page-aligned, `count` entries long, and
        // outlives the registration: it is freed only in `Drop`, after the
        // `IoUring` (declared later, or an earlier field of `Loop`) is gone
        // or has unregistered it.
        unsafe { ring.submitter().register_buf_ring_with_flags(self.entries as u64, self.count, BGID, 0)? };
        for bid in 0..self.count {
            self.provide(bid);
        }
        self.publish();
        Ok(())
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    pub(super) fn provide(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let bid = bid.min(self.count - 1);
        // SAFETY: `index` < count, inside the ring allocation; the kernel
        // only reads entries up to the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: `bid` < count, so the buffer lies inside `memory`.
        entry.set_addr(unsafe { self.memory.add(usize::from(bid) * BUF_SIZE) } as u64);
        entry.set_len(u32::try_from(BUF_SIZE - PEER_TAILROOM).unwrap_or(u32::MAX));
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.available += 1;
    }

    pub(super) fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's `resv`, inside
        // the ring allocation, and is shared with the kernel: write it
        // atomically, with release ordering so the entries are seen first.
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Buffer `bid`, whole.
    pub(super) fn buffer(&mut self, bid: u16) -> &mut [u8] {
        let bid = usize::from(bid.min(self.count - 1));
        // SAFETY: inside `memory`; the kernel is done with this buffer (its
        // completion was reaped) and does not get it back before `provide`.
        unsafe { std::slice::from_raw_parts_mut(self.memory.add(bid * BUF_SIZE), BUF_SIZE) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if let Ok((ring, memory)) = Self::layouts(self.count) {
            // SAFETY: allocated in `new` with these layouts; the ring that
            // used them is gone (dropped earlier) or unregistered them.
            unsafe {
                dealloc(self.entries.cast(), ring);
                dealloc(self.memory, memory);
            }
        }
    }
}
