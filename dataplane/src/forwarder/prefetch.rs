//! Prefetching for the packet path: what handling the next datagrams of a round will read,
//! asked of the CPU before it is read (the hardware-specific part of the forwarder).

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use super::leg::{Leg, Stream};
use super::{Forwarder, Slot, SocketRef};
use crate::api::LegStats;

/// Datagrams [`Forwarder::prefetch_ahead`] looks ahead: one per stage of dependent reads.
pub const PREFETCH_DEPTH: usize = 5;
/// Destinations of one datagram prefetched (a fanout's first few; the rest are found in turn).
const PREFETCH_OUTPUTS: usize = 4;

/// A datagram a driver has received and is yet to hand over: the socket (so the leg) it is
/// for and the payload type its second byte names (which entry of the leg's table it will
/// read). Drivers resolve this once per datagram and hand it on with the datagram.
#[derive(Clone, Copy, Debug)]
pub struct Upcoming {
    at: SocketRef,
    pt: u8,
}

impl Upcoming {
    /// Not a datagram for any leg of ours (a command wake-up, a send completion, a port no
    /// socket holds): nothing to fetch, nothing to hand over.
    pub const NONE: Upcoming = Upcoming {
        at: SocketRef {
            slot: Slot::MAX,
            rtcp: false,
        },
        pt: 0,
    };

    /// Datagram `data` for socket `at`.
    #[inline]
    pub fn new(at: SocketRef, data: &[u8]) -> Self {
        Upcoming {
            at,
            pt: data.get(1).copied().unwrap_or(0),
        }
    }

    /// The socket it is for, unless `NONE`.
    #[inline]
    pub fn socket(self) -> Option<SocketRef> {
        (self.at.slot != Slot::MAX).then_some(self.at)
    }
}

/// Asks for the cache line holding `p`. A hint: never faults, whatever `p` is.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and cannot fault on any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How far ahead in a fanout the destinations' legs are asked for, and (half as far) what
/// those legs point to: their SRTP state and counters.
const FANOUT_AHEAD: usize = 8;

impl Forwarder {
    /// Inside a fanout over `outputs`, at output `i`: asks for the leg of output
    /// `i + FANOUT_AHEAD`, and for the SRTP state and counters of output `i +
    /// FANOUT_AHEAD / 2` (whose leg was asked for before), so that in a room of hundreds the
    /// misses of several listeners overlap instead of each waiting in turn.
    #[inline]
    pub(super) fn prefetch_fanout(&self, outputs: &[Slot], i: usize, k: usize) {
        if let Some(entry) = outputs
            .get(i + FANOUT_AHEAD)
            .and_then(|&o| self.legs.get(o as usize))
        {
            let base = (entry as *const Option<Leg>).cast::<u8>();
            let dst_stream = offset_of!(Leg, streams) + k * size_of::<Stream>();
            for off in [
                offset_of!(Leg, stats),
                offset_of!(Leg, remote),
                dst_stream + offset_of!(Stream, mute_out),
                dst_stream + offset_of!(Stream, egress),
                dst_stream + offset_of!(Stream, tx_report),
            ] {
                prefetch(base.wrapping_add(off));
            }
        }
        if let Some(Some(dst)) = outputs
            .get(i + FANOUT_AHEAD / 2)
            .and_then(|&o| self.legs.get(o as usize))
        {
            let stats = Arc::as_ptr(&dst.stats).cast::<u8>();
            prefetch(stats.wrapping_add(offset_of!(LegStats, tx_packets)));
            if let Some(srtp) = &dst.srtp {
                srtp.tx.prefetch();
            }
        }
    }

    /// Asks the CPU for what handling the datagrams in `ahead` will read, before it is read.
    ///
    /// With thousands of legs every table entry a datagram touches is a cache miss, and they
    /// depend on each other: its leg names its counters and its outputs, the outputs name the
    /// destination legs, and those name their counters. One datagram alone waits for each in
    /// turn. So a driver calls this before handling datagram `next` of a batch, and each
    /// datagram goes through one stage per call on its way to the front: the leg itself
    /// [`PREFETCH_DEPTH`] datagrams ahead, its counters and streams next, and so on, each stage
    /// reading only lines the one before asked for. By its turn everything is in cache, and
    /// the misses of several datagrams overlap. Call it for `next` from `-PREFETCH_DEPTH`
    /// first to start the pipeline. Only prefetches: nothing changes, a wrong guess costs a
    /// line of bandwidth.
    pub fn prefetch_ahead(&self, ahead: &[Upcoming], next: isize) {
        for stage in 0..PREFETCH_DEPTH {
            let i = next + (PREFETCH_DEPTH - stage) as isize;
            if let Some(u) = usize::try_from(i).ok().and_then(|i| ahead.get(i)) {
                self.prefetch_stage(*u, stage);
            }
        }
    }

    fn prefetch_stage(&self, u: Upcoming, stage: usize) {
        let Some(entry) = self.legs.get(u.at.slot as usize) else {
            return;
        };
        if stage == 0 {
            // The entry's address only: what the later stages read. (`Option<Leg>` keeps the
            // leg at offset 0: its tag lives in a niche of one of its fields.)
            let base = (entry as *const Option<Leg>).cast::<u8>();
            for off in [
                offset_of!(Leg, stats),
                offset_of!(Leg, remote),
                offset_of!(Leg, police),
                offset_of!(Leg, reports),
                offset_of!(Leg, pt_kinds),
            ] {
                prefetch(base.wrapping_add(off));
            }
            return;
        }
        let Some(leg) = entry else { return };
        let Some(k) = leg.pt_kinds.get(u.pt) else {
            return;
        };
        let stream = &leg.streams[k];
        match stage {
            1 => {
                let stats = Arc::as_ptr(&leg.stats).cast::<u8>();
                prefetch(stats.wrapping_add(offset_of!(LegStats, rx_packets)));
                prefetch(stats.wrapping_add(offset_of!(LegStats, rx_kind_packets)));
                let base = (stream as *const Stream).cast::<u8>();
                for off in [
                    offset_of!(Stream, outputs),
                    offset_of!(Stream, rtx),
                    offset_of!(Stream, rx),
                    offset_of!(Stream, rx) + 64,
                    offset_of!(Stream, record),
                ] {
                    prefetch(base.wrapping_add(off));
                }
            }
            2 => prefetch(stream.outputs.as_ptr().cast()),
            3 => {
                for &out in stream.outputs.iter().take(PREFETCH_OUTPUTS) {
                    let Some(dst) = self.legs.get(out as usize) else {
                        continue;
                    };
                    let base = (dst as *const Option<Leg>).cast::<u8>();
                    let dst_stream = offset_of!(Leg, streams) + k * size_of::<Stream>();
                    for off in [
                        offset_of!(Leg, stats),
                        offset_of!(Leg, remote),
                        offset_of!(Leg, reports),
                        dst_stream + offset_of!(Stream, mute_out),
                        dst_stream + offset_of!(Stream, egress),
                        dst_stream + offset_of!(Stream, tx_report),
                        dst_stream + offset_of!(Stream, record),
                    ] {
                        prefetch(base.wrapping_add(off));
                    }
                }
            }
            _ => {
                for &out in stream.outputs.iter().take(PREFETCH_OUTPUTS) {
                    if let Some(Some(dst)) = self.legs.get(out as usize) {
                        let stats = Arc::as_ptr(&dst.stats).cast::<u8>();
                        prefetch(stats.wrapping_add(offset_of!(LegStats, tx_packets)));
                    }
                }
            }
        }
    }
}
