//! The bounded ring between a worker and the writer thread: one single-producer,
//! single-consumer ring of fixed slots per recorded stream, allocated when the recording starts,
//! so pushing a packet never allocates, locks or waits. A full ring is a counted drop.
//!
//! The producer is the one [`RecordSink`] (owned by the worker, `push` takes `&mut self`); the
//! consumer is the writer thread (`Spool::drain`). The producer fills slots in `[head, tail +
//! capacity)` and publishes them by advancing `head` (release); the consumer reads `[tail,
//! head)` and hands them back by advancing `tail` (release). Each side caches the other's index
//! and only re-reads it when the ring looks full or empty, so a push touches no cache line the
//! writer is writing. The recording ends when the sink is dropped.

use std::cell::UnsafeCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

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

/// An index on its own cache line: the producer's and the consumer's never share one.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// Shared by the sink (producer) and the writer (consumer).
pub(crate) struct Spool {
    slots: Box<[UnsafeCell<Slot>]>,
    /// Next slot the producer fills (written by the producer only).
    head: Padded,
    /// Next slot the consumer reads (written by the consumer only).
    tail: Padded,
    closed: AtomicBool,
    tap: Tap,
    pt: Option<u8>,
    pub(crate) stats: Arc<RecordingStats>,
}

// SAFETY: a slot is only touched by the producer while it lies in [head, tail + capacity) and
// only by the consumer while it lies in [tail, head); `head` and `tail` move forward with
// release stores read by acquire loads, so each hand-over of a slot happens-before its next use
// by the other side. There is one producer (the unique `RecordSink`, through `&mut self`) and
// one consumer (the writer thread; `drain` is crate-private and documented as such).
unsafe impl Sync for Spool {}

impl Spool {
    pub(crate) fn new(
        capacity: usize,
        tap: Tap,
        pt: Option<u8>,
        stats: Arc<RecordingStats>,
    ) -> (Arc<Spool>, RecordSink) {
        let capacity = capacity.max(1);
        let slots = (0..capacity)
            .map(|_| {
                UnsafeCell::new(Slot {
                    len: 0,
                    at: None,
                    data: [0; SLOT_BYTES],
                })
            })
            .collect();
        let spool = Arc::new(Spool {
            slots,
            head: Padded(AtomicUsize::new(0)),
            tail: Padded(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            tap,
            pt,
            stats,
        });
        let sink = RecordSink {
            spool: Arc::clone(&spool),
            head: 0,
            tail_seen: 0,
        };
        (spool, sink)
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Hands every queued packet, oldest first, to `f`, then frees their slots. Returns how
    /// many there were. Only the writer thread (one consumer) may call this.
    pub(crate) fn drain(&self, mut f: impl FnMut(&Slot)) -> usize {
        let tail = self.tail.0.load(Ordering::Relaxed);
        let head = self.head.0.load(Ordering::Acquire);
        let n = head.wrapping_sub(tail);
        for i in 0..n {
            let index = tail.wrapping_add(i) % self.capacity();
            // SAFETY: `index` lies in [tail, head): published by the producer (acquire above)
            // and not reused by it until `tail` moves past it below.
            f(unsafe { &*self.slots[index].get() });
        }
        self.tail.0.store(head, Ordering::Release);
        n
    }

    /// The sink is gone: nothing more will be queued.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The worker's end of a recording: pushes packets, never blocks. Dropping it ends the
/// recording once the writer has drained what was queued.
pub struct RecordSink {
    spool: Arc<Spool>,
    /// Producer's copy of `head` (it is the only writer of it).
    head: usize,
    /// Last `tail` seen: re-read only when the ring looks full.
    tail_seen: usize,
}

impl RecordSink {
    /// Which side of the leg this sink records.
    #[inline]
    pub fn tap(&self) -> Tap {
        self.spool.tap
    }

    /// Whether a packet of payload type `pt` belongs in this recording (the stream's codec;
    /// DTMF and other payload types are left out, as janus-pp-rec expects one codec).
    #[inline]
    pub fn accepts(&self, pt: u8) -> bool {
        self.spool.pt.is_none_or(|want| want == pt)
    }

    /// Queues a copy of `packet`; `false` (and a counted drop) when the ring is full.
    #[inline]
    pub fn push(&mut self, at: Option<Instant>, packet: &[u8]) -> bool {
        self.push_with(at, packet, |_| {})
    }

    /// Queues a copy of `packet` and lets `edit` rewrite the copy in place (an egress tap
    /// records the header the listener receives).
    #[inline]
    pub fn push_with(
        &mut self,
        at: Option<Instant>,
        packet: &[u8],
        edit: impl FnOnce(&mut [u8]),
    ) -> bool {
        let spool = &*self.spool;
        let capacity = spool.capacity();
        if packet.len() > SLOT_BYTES {
            spool.stats.count_dropped(1);
            return false;
        }
        if self.head.wrapping_sub(self.tail_seen) >= capacity {
            self.tail_seen = spool.tail.0.load(Ordering::Acquire);
            if self.head.wrapping_sub(self.tail_seen) >= capacity {
                spool.stats.count_dropped(1);
                return false;
            }
        }
        let index = self.head % capacity;
        // SAFETY: `index` lies in [head, tail + capacity): the consumer has released it (the
        // acquire load of `tail`) and does not read it until `head` moves past it below; `&mut
        // self` makes this the only producer.
        let slot = unsafe { &mut *spool.slots[index].get() };
        slot.len = packet.len();
        slot.at = at;
        slot.data[..packet.len()].copy_from_slice(packet);
        edit(&mut slot.data[..packet.len()]);
        self.head = self.head.wrapping_add(1);
        spool.head.0.store(self.head, Ordering::Release);
        true
    }
}

impl Drop for RecordSink {
    fn drop(&mut self) {
        self.spool.closed.store(true, Ordering::Release);
    }
}

impl fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordSink")
            .field("tap", &self.spool.tap)
            .field("pt", &self.spool.pt)
            .field("queued", &self.head.wrapping_sub(self.tail_seen))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(capacity: usize) -> (Arc<Spool>, RecordSink) {
        Spool::new(capacity, Tap::Received, Some(0), Arc::default())
    }

    fn last_bytes(spool: &Spool) -> Vec<u8> {
        let mut out = vec![];
        spool.drain(|s| out.push(s.bytes()[s.len - 1]));
        out
    }

    #[test]
    fn full_ring_is_a_counted_drop_and_slots_are_reused() {
        let (spool, mut sink) = spool(4);
        for i in 0..6u8 {
            let ok = sink.push(None, &[0x80, 0, i]);
            assert_eq!(ok, i < 4, "push {i}");
        }
        assert_eq!(spool.stats.snapshot().dropped, 2);
        assert_eq!(last_bytes(&spool), vec![0, 1, 2, 3], "oldest first");
        for i in 10..14u8 {
            assert!(
                sink.push(None, &[0x80, 0, i]),
                "drained slots are free again"
            );
        }
        assert!(!sink.push(None, &[0x80, 0, 99]));
        assert_eq!(last_bytes(&spool), vec![10, 11, 12, 13]);
        assert_eq!(last_bytes(&spool), Vec::<u8>::new());
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        let (spool, mut sink) = spool(3);
        let mut seen = vec![];
        for round in 0..100u16 {
            for i in 0..2u16 {
                let v = (round * 2 + i) as u8;
                assert!(sink.push(None, &[v]));
            }
            seen.extend(last_bytes(&spool));
        }
        let want: Vec<u8> = (0..200u16).map(|v| v as u8).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn closes_when_the_sink_goes_and_keeps_what_was_queued() {
        let (spool, mut sink) = spool(2);
        assert!(sink.push(None, &[1]));
        assert!(!spool.is_closed());
        drop(sink);
        assert!(spool.is_closed());
        assert_eq!(last_bytes(&spool), vec![1]);
    }

    #[test]
    fn producer_and_consumer_threads_hand_over_every_packet() {
        let (spool, mut sink) = spool(64);
        let consumer = {
            let spool = Arc::clone(&spool);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let closed = spool.is_closed();
                    spool.drain(|s| got.push(u16::from_be_bytes([s.data[0], s.data[1]])));
                    if closed {
                        return got;
                    }
                    std::thread::yield_now();
                }
            })
        };
        let mut sent = Vec::new();
        for v in 0..20_000u16 {
            if sink.push(None, &v.to_be_bytes()) {
                sent.push(v);
            }
        }
        drop(sink);
        let got = consumer.join().expect("consumer thread");
        assert_eq!(got, sent, "every accepted packet arrives once, in order");
        assert_eq!(spool.stats.snapshot().dropped as usize, 20_000 - sent.len());
    }

    #[test]
    fn payload_type_filter_and_oversize() {
        let (spool, mut sink) = spool(2);
        assert!(sink.accepts(0) && !sink.accepts(101));
        assert!(!sink.push(None, &[0u8; SLOT_BYTES + 1]));
        assert_eq!(spool.stats.snapshot().dropped, 1);
    }
}
