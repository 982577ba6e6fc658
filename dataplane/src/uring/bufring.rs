//! The provided buffer ring every receive of a worker draws from.

use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;

use super::BGID;

/// A provided buffer ring (`IORING_REGISTER_PBUF_RING`): `count` ring entries followed by
/// `count` buffers of `size` bytes, in one anonymous mapping that outlives its registration.
pub(super) struct BufRing {
    base: *mut u8,
    map_len: usize,
    ring_len: usize,
    count: u16,
    size: usize,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
}

/// `struct io_uring_buf`: the first entry's `resv` field is the ring's tail.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

impl BufRing {
    pub(super) fn new(count: u16, size: usize) -> io::Result<Self> {
        debug_assert!(count.is_power_of_two());
        // Buffers start on a 4 KiB boundary after the ring; mmap page-aligns the ring itself.
        let page = 4096;
        let ring_len = (usize::from(count) * mem::size_of::<RingEntry>()).div_ceil(page) * page;
        let map_len = ring_len + usize::from(count) * size;
        // SAFETY: anonymous private mapping, no fd or address hint; checked for MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            base: base.cast(),
            map_len,
            ring_len,
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            ring.provide(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring as buffer group `BGID` of `ring`. The mapping must outlive `ring`.
    pub(super) fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: `base` is a page-aligned mapping of `count` entries that lives until `self`
        // is dropped; callers drop the IoUring first.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(self.base as u64, self.count, BGID, 0)
        }
    }

    /// Hands buffer `bid` (back) to the kernel; visible after the next [`BufRing::publish`].
    #[inline]
    pub(super) fn provide(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, inside the ring part of the mapping. The kernel reads only the
        // entries between its head and the published tail, never this one; only `addr`, `len`
        // and `bid` are written, so entry 0's `resv` (the tail) is left alone.
        unsafe {
            let entry = self.base.cast::<RingEntry>().add(index);
            ptr::addr_of_mut!((*entry).addr)
                .write(self.base as u64 + (self.ring_len + usize::from(bid) * self.size) as u64);
            ptr::addr_of_mut!((*entry).len).write(self.size as u32);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the entries written since the last call (release store of the tail).
    #[inline]
    pub(super) fn publish(&self) {
        // SAFETY: the tail is entry 0's `resv`, a u16 at offset 14 of a page-aligned mapping,
        // which the kernel only reads (with acquire semantics).
        let tail = unsafe {
            AtomicU16::from_ptr(ptr::addr_of_mut!((*self.base.cast::<RingEntry>()).resv))
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which the kernel filled and handed to us.
    #[inline]
    /// Buffer `bid` as the kernel filled it, for in-place edits before it is provided again.
    pub(super) fn buf_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        if bid >= self.count {
            return &mut [];
        }
        // SAFETY: as in `buf`; `&mut self` makes this the only view of the buffer.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(self.ring_len + usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }

    pub(super) fn buf(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.count {
            return &[];
        }
        // SAFETY: the range lies inside buffer `bid` of the mapping; the kernel no longer writes
        // to it until it is provided again, which needs `&mut self`.
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(self.ring_len + usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; nothing refers to it any more.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}
