//! Generic NACK (RFC 4585 §6.2.1): a retransmission cache per source stream, answers to
//! listeners' NACKs from it, and NACKs upstream for what it lacks.
//!
//! The cache keeps the plaintext packets as received (before any rewrite) in fixed slots
//! indexed by sequence number. It exists only while at least one output of the stream
//! negotiated NACK (`Command::SetFeedback`): a plain RTP/AVP route (echo, SIP proxy) costs
//! neither its memory nor the per-packet copy. A
//! listener's NACK names *its* sequence numbers; its `Egress` maps them back to the source's
//! (only for packets sent under the current offsets), and the cached packet goes out again
//! through the same rewrite and SRTP protection, so it is byte-identical to the original —
//! or, towards a listener that negotiated RTX, as an RTX packet (see `rtx.rs`).
//!
//! Why re-protecting is safe: SRTP refuses to protect an index twice by default, because
//! under AES-GCM the same index (nonce) with a *different* plaintext leaks the
//! authentication key. A retransmission has the same index and the same plaintext, hence
//! the same ciphertext: nothing new is revealed. The cache guarantees "same plaintext": a
//! second, different packet with the sequence number of a cached one poisons that slot (it
//! is never served), and packets older than the cache window are not cached at all. Repeats
//! are allowed only around the retransmission's own `protect_rtp`, never for forwarding.

use std::time::{Duration, Instant};

use super::{Feedback, Forwarder, Slot, SocketRef, rtcp, rtx};
use crate::api::bump;
use crate::batch::{MAX_DATAGRAM, TxBatch};
use crate::packet::RtpHeader;
use crate::rtcp::{self as wire, Compound, Packet};

/// How long a cached packet can be asked for.
pub(crate) const MAX_AGE: Duration = Duration::from_millis(500);
/// Slots per stream: 500 ms of video at up to ~1000 packets/s, of audio at 50-100.
const VIDEO_SLOTS: usize = 512;
const AUDIO_SLOTS: usize = 64;
/// Sequence numbers handled per received NACK packet (the rest is ignored).
const MAX_NACKED: usize = wire::NACK_MAX_SEQS;
/// The same missing packet is asked upstream at most once per this interval, however many
/// listeners miss it.
const UPSTREAM_COALESCE: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    ssrc: u32,
    seq: u16,
    /// 0: empty.
    len: u16,
    /// Two different packets carried this (ssrc, seq): never served.
    poisoned: bool,
    at: Option<Instant>,
    /// The last sequence number mapping to this slot that was asked upstream, and when.
    asked_seq: u16,
    asked_at: Option<Instant>,
}

/// The last packets of one source stream, plaintext, in preallocated slots.
pub(crate) struct RtxCache {
    entries: Box<[Entry]>,
    data: Box<[u8]>,
    /// Newest (ssrc, seq) cached: older packets beyond the window are not cached.
    highest: Option<(u32, u16)>,
}

impl std::fmt::Debug for RtxCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtxCache")
            .field("slots", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl RtxCache {
    /// A cache for a stream of kind index `k` (0 audio, 1 video).
    pub(crate) fn for_kind(k: usize) -> Box<Self> {
        let n = if k == 0 { AUDIO_SLOTS } else { VIDEO_SLOTS };
        Box::new(RtxCache {
            entries: vec![Entry::default(); n].into_boxed_slice(),
            data: vec![0u8; n * MAX_DATAGRAM].into_boxed_slice(),
            highest: None,
        })
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) % self.entries.len()
    }

    /// Keeps a copy of a received packet (plaintext, as the source sent it).
    #[inline]
    pub(crate) fn insert(&mut self, now: Option<Instant>, h: &RtpHeader, packet: &[u8]) {
        if packet.len() > MAX_DATAGRAM {
            return;
        }
        match self.highest {
            Some((ssrc, top)) if ssrc == h.ssrc => {
                let ahead = h.seq.wrapping_sub(top);
                if ahead != 0 && ahead < 0x8000 {
                    self.highest = Some((ssrc, h.seq));
                } else if usize::from(top.wrapping_sub(h.seq)) >= self.entries.len() {
                    // Too old to have a slot of its own.
                    return;
                }
            }
            _ => self.highest = Some((h.ssrc, h.seq)),
        }
        let i = self.index(h.seq);
        let n = MAX_DATAGRAM;
        let e = &mut self.entries[i];
        if e.len != 0 && e.ssrc == h.ssrc && e.seq == h.seq {
            // A duplicate: fine if identical, poison otherwise (see the module comment).
            let old = &self.data[i * n..i * n + usize::from(e.len)];
            if old != packet {
                e.poisoned = true;
            }
            return;
        }
        e.ssrc = h.ssrc;
        e.seq = h.seq;
        e.len = packet.len() as u16;
        e.poisoned = false;
        e.at = now;
        self.data[i * n..i * n + packet.len()].copy_from_slice(packet);
    }

    /// The cached packet `(ssrc, seq)` if it is there, sound and young enough.
    pub(crate) fn get(&self, now: Option<Instant>, ssrc: u32, seq: u16) -> Option<&[u8]> {
        let i = self.index(seq);
        let e = &self.entries[i];
        if e.len == 0 || e.poisoned || e.ssrc != ssrc || e.seq != seq {
            return None;
        }
        if let (Some(now), Some(at)) = (now, e.at)
            && now.saturating_duration_since(at) > MAX_AGE
        {
            return None;
        }
        let start = i * MAX_DATAGRAM;
        Some(&self.data[start..start + usize::from(e.len)])
    }

    /// Whether `seq` should be asked upstream now (and notes that it is).
    fn ask_upstream(&mut self, now: Option<Instant>, seq: u16) -> bool {
        let i = self.index(seq);
        let e = &mut self.entries[i];
        let recent = e.asked_seq == seq
            && matches!((now, e.asked_at), (Some(now), Some(at))
                if now.saturating_duration_since(at) < UPSTREAM_COALESCE);
        if recent {
            return false;
        }
        e.asked_seq = seq;
        e.asked_at = now;
        true
    }
}

/// The sequence numbers named by the generic NACKs of a compound RTCP packet, with their
/// media SSRC, written into `out`; returns how many (at most `out.len()`).
pub(crate) fn nacked(data: &[u8], out: &mut [(u32, u16)]) -> usize {
    let named = Compound::new(data)
        .filter_map(|p| match p {
            Packet::Nack(n) => Some(n),
            _ => None,
        })
        .flat_map(|n| n.seqs().map(move |seq| (n.media, seq)));
    let mut count = 0;
    for (slot, item) in out.iter_mut().zip(named) {
        *slot = item;
        count += 1;
    }
    count
}

/// Longest NACK we build.
pub(crate) const NACK_MAX: usize = wire::NACK_MAX;

/// A generic NACK from the server for `seqs` of `media_ssrc`, into `out`; returns its length.
pub(crate) fn nack(media_ssrc: u32, seqs: &[u16], out: &mut [u8; NACK_MAX]) -> usize {
    wire::nack(rtcp::SERVER_SSRC, media_ssrc, seqs, out)
}

impl Forwarder {
    /// Gives the source stream `(src, k)` a retransmission cache while some output of it
    /// negotiated NACK, and frees it when none does any more.
    pub(super) fn refresh_rtx_cache(&mut self, src: Slot, k: usize) {
        let Some(s) = self.legs.get(src as usize).and_then(Option::as_ref) else {
            return;
        };
        let wanted = s.streams[k].outputs.iter().any(|&o| {
            self.legs
                .get(o as usize)
                .and_then(Option::as_ref)
                .is_some_and(|d| d.streams[k].nack)
        });
        if let Some(s) = self.leg_mut(src) {
            let cache = &mut s.streams[k].rtx;
            match (wanted, cache.is_some()) {
                (true, false) => *cache = Some(RtxCache::for_kind(k)),
                (false, true) => *cache = None,
                _ => {}
            }
        }
    }

    /// What the peer of `slot` negotiated for stream `k` (`Command::SetFeedback`).
    pub(super) fn set_feedback(&mut self, slot: Slot, k: usize, f: &Feedback) {
        let Some(leg) = self.leg_mut(slot) else {
            return;
        };
        let pairs: Vec<(u8, u8)> = f.rtx_pts.iter().map(|(m, r)| (m.0, r.0)).collect();
        // The RTX stream starts at an unpredictable number (RFC 3550 §5.1), from its SSRC.
        let seq0 = f.rtx_ssrc.map_or(0, |s| (s.0 >> 16) as u16 ^ s.0 as u16);
        let repair = rtx::Repair::new(&pairs, f.rtx_ssrc.map(|s| s.0), seq0);
        if let Some(r) = &repair {
            // RTX payload types belong to the stream they repair (BUNDLE demultiplexing).
            for pt in r.rtx_pts() {
                leg.pt_kinds.set(pt, k);
            }
        }
        let stream = &mut leg.streams[k];
        if f.clock_rate != 0 && f.clock_rate != stream.clock_rate {
            stream.clock_rate = f.clock_rate;
            stream.egress.set_clock_rate(f.clock_rate);
        }
        stream.nack = f.nack;
        stream.repair = repair;
        if let Some(src) = stream.source {
            self.refresh_rtx_cache(src, k);
        }
    }

    /// NACKs in RTCP (plaintext) from the peer of `slot`: resend from the source's cache,
    /// ask the source for the rest. `false` when the packet held no NACK for a stream fed
    /// through this leg (so it can go on its way).
    pub(super) fn handle_nacks(&mut self, slot: Slot, rtcp: &[u8], tx: &mut TxBatch) -> bool {
        let mut named = [(0u32, 0u16); MAX_NACKED];
        let n = nacked(rtcp, &mut named);
        if n == 0 {
            return false;
        }
        let mut handled = false;
        for k in 0..2 {
            let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) else {
                return handled;
            };
            let stream = &leg.streams[k];
            let (Some(src), Some(out_ssrc)) = (stream.source, stream.egress.out_ssrc()) else {
                continue;
            };
            let mut mine = [0u16; MAX_NACKED];
            let mut m = 0;
            for &(media, seq) in &named[..n] {
                if media == out_ssrc {
                    mine[m] = seq;
                    m += 1;
                }
            }
            if m > 0 {
                handled = true;
                self.serve_nack(slot, k, src, &mine[..m], tx);
            }
        }
        handled
    }

    /// Resends what the cache of `src`'s stream `k` holds of the listener's `seqs` and asks
    /// `src` for the rest.
    fn serve_nack(&mut self, slot: Slot, k: usize, src: Slot, seqs: &[u16], tx: &mut TxBatch) {
        let now = self.now;
        // Counted whether or not they can be served: the NACK rate is what `SlowLink` reads.
        if let Some(dst) = self.leg_mut(slot) {
            bump(&dst.stats.nack_received, seqs.len() as u64);
            dst.reports.nacks_window += seqs.len() as u64;
        }
        // Taken out for the loop so the source and the listener can be borrowed together
        // (they are the same leg for an echo); put back below. No cache: the listener did
        // not negotiate NACK.
        let Some(mut cache) = self.leg_mut(src).and_then(|s| s.streams[k].rtx.take()) else {
            return;
        };
        let mut missing = [0u16; MAX_NACKED];
        let mut n_missing = 0;
        let mut src_ssrc = None;
        if let Some(dst) = self.leg_mut(slot) {
            let dest = dst.rtp_dest();
            let keyless = dst.secure && dst.srtp.is_none();
            for &seq in seqs {
                let Some((ssrc, source_seq)) = dst.streams[k].egress.source_seq(seq) else {
                    continue;
                };
                src_ssrc = Some(ssrc);
                let Some(packet) = cache.get(now, ssrc, source_seq) else {
                    if cache.ask_upstream(now, source_seq) {
                        missing[n_missing] = source_seq;
                        n_missing += 1;
                    }
                    continue;
                };
                let (Some(dest), false) = (dest, keyless) else {
                    continue;
                };
                let Some(h) = RtpHeader::read(packet) else {
                    continue;
                };
                let stream = &mut dst.streams[k];
                let Some(rewritten) = stream.egress.rewrite_again(&h) else {
                    continue;
                };
                // Towards a listener that negotiated RTX: an RTX packet, with a fresh index.
                let as_rtx = stream.repair.as_mut().and_then(|r| r.next(rewritten.pt));
                let via = SocketRef { slot, rtcp: false };
                let srtp = &mut dst.srtp;
                let sent = tx.push(via, dest, packet, |buf, len| {
                    rewritten.write(buf);
                    let len = match as_rtx {
                        Some(rtx) => rtx::wrap(buf, len, rtx)?,
                        None => len,
                    };
                    match srtp {
                        Some(s) if as_rtx.is_some() => s.tx.protect_rtp(buf, len).ok(),
                        Some(s) => {
                            // Same index, same plaintext: see the module comment.
                            s.tx.set_allow_repeat_tx(true);
                            let out = s.tx.protect_rtp(buf, len).ok();
                            s.tx.set_allow_repeat_tx(false);
                            out
                        }
                        None => Some(len),
                    }
                });
                if sent {
                    bump(&dst.stats.retransmitted, 1);
                }
            }
            if n_missing > 0 {
                bump(&dst.stats.nack_forwarded, n_missing as u64);
            }
        }
        if let Some(s) = self.leg_mut(src) {
            s.streams[k].rtx = Some(cache);
        }
        if let (Some(ssrc), true) = (src_ssrc, n_missing > 0) {
            self.ask_source(src, k, ssrc, &missing[..n_missing], tx);
        }
    }
}

impl Forwarder {
    /// A NACK for `seqs` of `ssrc` towards the peer of `src`'s stream `k` (the publisher's
    /// worker sends it where `src` is a shadow).
    pub(super) fn ask_source(
        &mut self,
        src: Slot,
        k: usize,
        ssrc: u32,
        seqs: &[u16],
        tx: &mut TxBatch,
    ) {
        if self.is_shadow(src) {
            self.shadow_nack(src, k, ssrc, seqs);
            return;
        }
        if let Some(s) = self.leg_mut(src) {
            let mut buf = [0u8; NACK_MAX];
            let len = nack(ssrc, seqs, &mut buf);
            Self::send_rtcp(s, src, &buf[..len], tx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(ssrc: u32, seq: u16) -> RtpHeader {
        RtpHeader {
            pt: 96,
            seq,
            ts: 0,
            ssrc,
        }
    }

    #[test]
    fn nack_round_trips_through_pid_and_blp() {
        let seqs = [65530u16, 65535, 3, 4, 100, 65531];
        let mut buf = [0u8; NACK_MAX];
        let len = nack(7, &seqs, &mut buf);
        assert_eq!(len, 12 + 4 * 2, "two FCI entries: 65530..=10 and 100");
        let mut out = [(0, 0); 32];
        let n = nacked(&buf[..len], &mut out);
        let mut got: Vec<u16> = out[..n]
            .iter()
            .map(|&(m, s)| {
                assert_eq!(m, 7);
                s
            })
            .collect();
        let mut want = seqs.to_vec();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn nacked_reads_every_nack_of_a_compound_up_to_its_room() {
        let mut buf = [0u8; NACK_MAX];
        let mut compound = vec![0x80, 201, 0, 1, 0, 0, 0, 1];
        let len = nack(7, &[10, 11], &mut buf);
        compound.extend_from_slice(&buf[..len]);
        let len = nack(8, &[20], &mut buf);
        compound.extend_from_slice(&buf[..len]);
        let mut out = [(0, 0); 4];
        assert_eq!(nacked(&compound, &mut out), 3);
        assert_eq!(out[..3], [(7, 10), (7, 11), (8, 20)]);
        let mut small = [(0, 0); 2];
        assert_eq!(nacked(&compound, &mut small), 2);
        assert_eq!(small, [(7, 10), (7, 11)]);
    }

    #[test]
    fn cache_serves_recent_packets_and_poisons_conflicting_duplicates() {
        let t0 = Instant::now();
        let mut c = RtxCache::for_kind(1);
        c.insert(Some(t0), &h(1, 10), b"ten");
        c.insert(Some(t0), &h(1, 11), b"eleven");
        assert_eq!(c.get(Some(t0), 1, 10), Some(&b"ten"[..]));
        assert_eq!(c.get(Some(t0), 2, 10), None, "other SSRC");
        assert_eq!(c.get(Some(t0 + MAX_AGE * 2), 1, 10), None, "too old");
        c.insert(Some(t0), &h(1, 11), b"eleven");
        assert!(
            c.get(Some(t0), 1, 11).is_some(),
            "identical duplicate is fine"
        );
        c.insert(Some(t0), &h(1, 11), b"ELEVEN");
        assert_eq!(
            c.get(Some(t0), 1, 11),
            None,
            "conflicting duplicate: never served"
        );
        // Far newer packets take the slots over; a very late old one is not cached.
        c.insert(Some(t0), &h(1, 10 + VIDEO_SLOTS as u16 * 2), b"new");
        c.insert(Some(t0), &h(1, 10), b"late");
        assert_eq!(c.get(Some(t0), 1, 10), None);
    }
}
