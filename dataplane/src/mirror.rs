//! Cross-worker fanout: single-producer, single-consumer rings that carry a publisher's
//! decrypted packets from its worker to each other worker serving listeners of it.
//!
//! One ring per ordered pair of workers, made at start. An entry is a fixed slot (the
//! datagram plus a few words saying which stream it is for), so pushing is one copy into
//! memory the consumer reads in place, with no allocation and no lock: the producer owns
//! `head`, the consumer `tail`, and each publishes its index with a release store after
//! the slot was written (read). The slots are zeroed memory the kernel hands out lazily, so
//! rings between workers that never share a room cost address space, not memory.
//!
//! What travels: RTP after the publisher's worker authenticated and decrypted it (each
//! consumer rewrites and encrypts for its own listeners), and the publisher's sender reports
//! (so those workers can send their listeners SRs). A full ring is a counted drop on the
//! publisher's leg (`DropReason::WorkerRing`), never a wait.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::api::LegId;
use crate::batch::MAX_DATAGRAM;

/// Entries per ring (a power of two). At 100 publisher packets per millisecond into one
/// worker, five milliseconds of stall before a drop.
pub const RING_ENTRIES: usize = 512;

/// What an entry carries besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carried {
    /// An RTP packet of the stream of this index (0 audio, 1 video), in the clear.
    Rtp { k: u8, muted: bool },
    /// RTCP from the publisher, in the clear (its sender reports).
    Rtcp,
}

/// One entry as the consumer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Mirrored<'a> {
    /// The publisher's leg (the consumer's shadow of it carries this id).
    pub leg: LegId,
    pub carried: Carried,
    pub data: &'a [u8],
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Head {
    leg: u64,
    len: u16,
    /// 0/1: RTP of that stream; 2: RTCP.
    what: u8,
    muted: u8,
}

#[repr(C)]
struct Entry {
    head: Head,
    data: [u8; MAX_DATAGRAM],
}

/// An index owned by one side, alone on its cache line so the other side's index does not
/// bounce with it.
#[repr(align(128))]
struct Index(AtomicUsize);

struct Ring {
    entries: Box<[UnsafeCell<Entry>]>,
    /// Entries pushed (written by the producer only).
    head: Index,
    /// Entries consumed (written by the consumer only).
    tail: Index,
}

// SAFETY: an entry is written only by the producer while it is outside [tail, head), and
// read only by the consumer while inside it; `head` and `tail` publish those hand-overs
// with release stores and acquire loads. Each half is held by one thread (neither is Clone).
unsafe impl Sync for Ring {}
// SAFETY: as above; the ring holds plain bytes.
unsafe impl Send for Ring {}

/// Zeroed entries (all-zero is a valid `Entry`: integers and bytes), from the allocator's
/// zeroed pages, which the kernel backs only once written.
fn zeroed_entries(n: usize) -> Box<[UnsafeCell<Entry>]> {
    let layout = std::alloc::Layout::array::<UnsafeCell<Entry>>(n).expect("ring size");
    // SAFETY: the layout has a non-zero size (n > 0, Entry is not zero-sized); an all-zero
    // `Entry` is valid, and the pointer comes from the global allocator with this layout, as
    // `Box<[T]>` expects.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut UnsafeCell<Entry>;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n))
    }
}

/// A ring's two halves: the producer for the publisher's worker, the consumer for the other.
pub fn ring(entries: usize) -> (Producer, Consumer) {
    assert!(
        entries.is_power_of_two(),
        "ring entries must be a power of two"
    );
    let ring = Arc::new(Ring {
        entries: zeroed_entries(entries),
        head: Index(AtomicUsize::new(0)),
        tail: Index(AtomicUsize::new(0)),
    });
    (
        Producer {
            ring: Arc::clone(&ring),
            head: 0,
            tail_seen: 0,
            pushed: false,
        },
        Consumer {
            ring,
            tail: 0,
            head_seen: 0,
        },
    )
}

/// The pushing half, held by the publisher's worker.
pub struct Producer {
    ring: Arc<Ring>,
    head: usize,
    /// The consumer's `tail` as last read: room is re-checked only when this says full.
    tail_seen: usize,
    /// Something was pushed since the last [`Producer::take_pushed`]: the consumer needs a
    /// wake-up.
    pushed: bool,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Copies one packet in and publishes it at once. `false` when the ring is full (the
    /// consumer is behind) or the packet too large: the caller counts a drop.
    #[inline]
    pub fn push(&mut self, leg: LegId, carried: Carried, data: &[u8]) -> bool {
        let cap = self.ring.entries.len();
        if data.len() > MAX_DATAGRAM {
            return false;
        }
        if self.head.wrapping_sub(self.tail_seen) == cap {
            self.tail_seen = self.ring.tail.0.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.tail_seen) == cap {
                return false;
            }
        }
        let (what, muted) = match carried {
            Carried::Rtp { k, muted } => (k, u8::from(muted)),
            Carried::Rtcp => (2, 0),
        };
        let cell = &self.ring.entries[self.head & (cap - 1)];
        // SAFETY: this entry is outside [tail, head): the consumer does not read it until
        // the release store of `head` below.
        let entry = unsafe { &mut *cell.get() };
        entry.head = Head {
            leg: leg.0,
            len: data.len() as u16,
            what,
            muted,
        };
        entry.data[..data.len()].copy_from_slice(data);
        self.head = self.head.wrapping_add(1);
        self.ring.head.0.store(self.head, Ordering::Release);
        self.pushed = true;
        true
    }

    /// Whether anything was pushed since the last call (the consumer must be woken).
    pub fn take_pushed(&mut self) -> bool {
        std::mem::take(&mut self.pushed)
    }
}

/// The reading half, held by the worker serving the listeners.
pub struct Consumer {
    ring: Arc<Ring>,
    tail: usize,
    /// The producer's `head` as last read.
    head_seen: usize,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The oldest entry not consumed yet, read in place (valid until [`Consumer::advance`]).
    #[inline]
    pub fn peek(&mut self) -> Option<Mirrored<'_>> {
        if self.tail == self.head_seen {
            self.head_seen = self.ring.head.0.load(Ordering::Acquire);
            if self.tail == self.head_seen {
                return None;
            }
        }
        let cap = self.ring.entries.len();
        let cell = &self.ring.entries[self.tail & (cap - 1)];
        // SAFETY: this entry is inside [tail, head): the producer wrote it before its
        // release store of `head` (read above with acquire) and does not touch it again until
        // our release store of `tail` passes it.
        let entry = unsafe { &*cell.get() };
        let h = entry.head;
        let carried = match h.what {
            2 => Carried::Rtcp,
            k => Carried::Rtp {
                k: k & 1,
                muted: h.muted != 0,
            },
        };
        Some(Mirrored {
            leg: LegId(h.leg),
            carried,
            data: &entry.data[..usize::from(h.len).min(MAX_DATAGRAM)],
        })
    }

    /// Done with the entry `peek` gave: its slot goes back to the producer.
    #[inline]
    pub fn advance(&mut self) {
        self.tail = self.tail.wrapping_add(1);
        self.ring.tail.0.store(self.tail, Ordering::Release);
    }

    /// Whether entries are waiting.
    pub fn is_empty(&mut self) -> bool {
        self.tail == self.head_seen && {
            self.head_seen = self.ring.head.0.load(Ordering::Acquire);
            self.tail == self.head_seen
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(k: u8) -> Carried {
        Carried::Rtp { k, muted: false }
    }

    #[test]
    fn entries_arrive_once_in_order_and_a_full_ring_refuses() {
        let (mut p, mut c) = ring(4);
        for i in 0..4u8 {
            assert!(p.push(LegId(7), rtp(i & 1), &[i; 10]));
        }
        assert!(!p.push(LegId(7), rtp(0), &[9; 10]), "full");
        assert!(p.take_pushed());
        assert!(!p.take_pushed());
        for i in 0..4u8 {
            let m = c.peek().unwrap();
            assert_eq!((m.leg, m.carried), (LegId(7), rtp(i & 1)));
            assert_eq!(m.data, &[i; 10]);
            c.advance();
        }
        assert!(c.peek().is_none());
        assert!(c.is_empty());
        assert!(p.push(LegId(8), Carried::Rtcp, &[1, 2, 3]));
        let m = c.peek().unwrap();
        assert_eq!(
            (m.leg, m.carried, m.data),
            (LegId(8), Carried::Rtcp, &[1u8, 2, 3][..])
        );
        assert!(
            !p.push(LegId(8), rtp(0), &[0; MAX_DATAGRAM + 1]),
            "too large"
        );
    }

    #[test]
    fn a_consumer_thread_sees_every_entry_intact_in_order() {
        const N: usize = 200_000;
        let (mut p, mut c) = ring(64);
        let reader = std::thread::spawn(move || {
            let mut next = 0usize;
            while next < N {
                let Some(m) = c.peek() else {
                    std::hint::spin_loop();
                    continue;
                };
                let n = (next % 1000) + 1;
                assert_eq!(m.leg, LegId(next as u64));
                assert_eq!(m.data.len(), n);
                assert!(m.data.iter().all(|&b| b == next as u8));
                c.advance();
                next += 1;
            }
        });
        let mut sent = 0usize;
        while sent < N {
            let n = (sent % 1000) + 1;
            if p.push(LegId(sent as u64), rtp(0), &vec![sent as u8; n]) {
                sent += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        reader.join().unwrap();
    }
}
