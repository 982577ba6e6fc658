//! The bounded ring between a worker and the writer thread: fixed slots allocated once per
//! recording, recycled through a free queue, so pushing a packet never allocates, locks or
//! waits. A full ring is a counted drop.
//!
//! Two lock-free queues of boxed slots: the producer takes an empty slot from `free`, copies the
//! packet in and moves the box (a pointer) into `full`; the writer takes it from `full`, writes
//! it out and returns it to `free`. Both queues have room for every slot, so a push into either
//! cannot fail. The recording ends when its last [`RecordSink`] is dropped.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_queue::ArrayQueue;

use super::{RecordingStats, Tap};
use crate::batch::MAX_DATAGRAM;

/// Bytes per slot: the largest datagram the data plane receives.
pub const SLOT_BYTES: usize = MAX_DATAGRAM;

/// One packet waiting for the writer.
pub(crate) struct Slot {
    pub(crate) len: usize,
    /// When the packet arrived (`None` when the driver gave no clock: the writer uses its own).
    pub(crate) at: Option<Instant>,
    pub(crate) data: [u8; SLOT_BYTES],
}

impl Slot {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// Shared by the sinks (producers) and the writer (consumer).
pub(crate) struct Spool {
    full: ArrayQueue<Box<Slot>>,
    free: ArrayQueue<Box<Slot>>,
    /// Live [`RecordSink`]s; 0 = the recording is over once `full` is drained.
    producers: AtomicUsize,
    tap: Tap,
    /// Only this payload type is recorded (e.g. not `telephone-event`), when set.
    pt: Option<u8>,
    pub(crate) stats: Arc<RecordingStats>,
}

impl Spool {
    /// A spool with `capacity` slots (at least one), allocated now; returns its first sink.
    pub(crate) fn new(
        capacity: usize,
        tap: Tap,
        pt: Option<u8>,
        stats: Arc<RecordingStats>,
    ) -> (Arc<Spool>, RecordSink) {
        let capacity = capacity.max(1);
        let free = ArrayQueue::new(capacity);
        for _ in 0..capacity {
            let slot = Box::new(Slot {
                len: 0,
                at: None,
                data: [0; SLOT_BYTES],
            });
            // `free` has room for exactly `capacity` slots.
            let _ = free.push(slot);
        }
        let spool = Arc::new(Spool {
            full: ArrayQueue::new(capacity),
            free,
            producers: AtomicUsize::new(1),
            tap,
            pt,
            stats,
        });
        let sink = RecordSink {
            spool: Arc::clone(&spool),
        };
        (spool, sink)
    }

    /// The next packet to write, oldest first.
    pub(crate) fn pop(&self) -> Option<Box<Slot>> {
        self.full.pop()
    }

    /// Returns a written slot for reuse.
    pub(crate) fn recycle(&self, slot: Box<Slot>) {
        // Every slot was taken from `free`, so there is room for it.
        let _ = self.free.push(slot);
    }

    /// True once every sink is gone: what `pop` returns after this is all there will be.
    pub(crate) fn is_closed(&self) -> bool {
        // Acquire pairs with the Release of the last sink's drop: its pushes are visible.
        self.producers.load(Ordering::Acquire) == 0
    }
}

/// The producer end of a recording, installed on a leg with `Command::Record`. Cloning makes
/// another producer; the recording is closed (file finished and renamed) when the last one is
/// dropped, e.g. by `Command::Record { sink: None }` or when the leg closes.
pub struct RecordSink {
    spool: Arc<Spool>,
}

impl RecordSink {
    /// Which packets of the leg are recorded.
    #[inline]
    pub fn tap(&self) -> Tap {
        self.spool.tap
    }

    /// Whether packets of payload type `pt` belong in this recording.
    #[inline]
    pub fn accepts(&self, pt: u8) -> bool {
        self.spool.pt.is_none_or(|want| want == pt)
    }

    /// Queues a copy of `packet`, received (or sent) at `at`. Never blocks and never allocates:
    /// returns false, and counts a drop, when the ring is full or the packet is oversized.
    #[inline]
    pub fn push(&self, at: Option<Instant>, packet: &[u8]) -> bool {
        self.push_with(at, packet, |_| {})
    }

    /// Like [`push`](Self::push), then `edit`s the copy in place (e.g. the rewritten header of
    /// a sent packet).
    #[inline]
    pub fn push_with(
        &self,
        at: Option<Instant>,
        packet: &[u8],
        edit: impl FnOnce(&mut [u8]),
    ) -> bool {
        let spool = &*self.spool;
        if packet.len() > SLOT_BYTES {
            spool.stats.count_dropped(1);
            return false;
        }
        let Some(mut slot) = spool.free.pop() else {
            spool.stats.count_dropped(1);
            return false;
        };
        slot.len = packet.len();
        slot.at = at;
        slot.data[..packet.len()].copy_from_slice(packet);
        edit(&mut slot.data[..packet.len()]);
        if let Err(slot) = spool.full.push(slot) {
            // Cannot happen (both queues hold every slot); keep the slot rather than free it.
            spool.recycle(slot);
            spool.stats.count_dropped(1);
            return false;
        }
        true
    }
}

impl Clone for RecordSink {
    fn clone(&self) -> Self {
        // Relaxed: this sink keeps the count above zero while the new one is made.
        self.spool.producers.fetch_add(1, Ordering::Relaxed);
        RecordSink {
            spool: Arc::clone(&self.spool),
        }
    }
}

impl Drop for RecordSink {
    fn drop(&mut self) {
        self.spool.producers.fetch_sub(1, Ordering::Release);
    }
}

impl fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordSink")
            .field("tap", &self.spool.tap)
            .field("pt", &self.spool.pt)
            .field("queued", &self.spool.full.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(capacity: usize) -> (Arc<Spool>, RecordSink) {
        Spool::new(capacity, Tap::Received, Some(0), Arc::default())
    }

    #[test]
    fn full_ring_is_a_counted_drop_and_slots_are_recycled() {
        let (spool, sink) = spool(4);
        for i in 0..6u8 {
            let ok = sink.push(None, &[0x80, 0, i]);
            assert_eq!(ok, i < 4, "push {i}");
        }
        assert_eq!(spool.stats.snapshot().dropped, 2);
        let slot = spool.pop().expect("oldest first");
        assert_eq!(slot.bytes(), &[0x80, 0, 0]);
        spool.recycle(slot);
        assert!(sink.push(None, &[0x80, 0, 9]));
        let rest: Vec<u8> = std::iter::from_fn(|| spool.pop())
            .map(|s| {
                let last = s.bytes()[2];
                spool.recycle(s);
                last
            })
            .collect();
        assert_eq!(rest, vec![1, 2, 3, 9]);
    }

    #[test]
    fn closes_when_the_last_sink_goes() {
        let (spool, sink) = spool(2);
        let other = sink.clone();
        drop(sink);
        assert!(!spool.is_closed());
        assert!(other.push(None, &[1]));
        drop(other);
        assert!(spool.is_closed());
        assert!(spool.pop().is_some(), "what was queued is still there");
    }

    #[test]
    fn payload_type_filter_and_oversize() {
        let (spool, sink) = spool(2);
        assert!(sink.accepts(0) && !sink.accepts(101));
        assert!(!sink.push(None, &[0u8; SLOT_BYTES + 1]));
        assert_eq!(spool.stats.snapshot().dropped, 1);
    }
}
