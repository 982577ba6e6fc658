//! Per-destination RTP rewriting: one continuous stream whatever happens upstream.
//!
//! Every leg that receives forwarded media has one `Egress`. It maps the source's sequence
//! numbers and timestamps onto its own by adding offsets. A dropped packet (mute) shifts the
//! sequence offset back by one, so receivers never see a gap; a new source SSRC (a listener
//! switch, a phone restarting its stream) re-bases both offsets right after what was last sent.
//!
//! Public only so that the criterion benches can time the rewrite alone; the forwarder is its
//! one user.

use crate::api::{Pt, Rewrite};
use crate::packet::RtpHeader;

/// Sentinel in the payload-type table: not negotiated.
const NO_PT: u8 = 0xff;

/// `repr(C)`: the offsets every packet reads first, the payload-type table (read only where
/// a mapping exists) last.
#[derive(Debug)]
#[repr(C)]
pub struct Egress {
    ssrc: Option<u32>,
    last_in_ssrc: Option<u32>,
    /// Timestamp step inserted at a source change: 20 ms at the codec's clock rate.
    ts_gap: u32,
    ts_off: u32,
    last_out_ts: u32,
    seq_off: u16,
    last_out_seq: u16,
    /// First output sequence number sent under the current offsets: outputs from here to
    /// `last_out_seq` map back to the source one to one (what a NACK may name).
    valid_from: u16,
    /// `pt_table[source pt]` = destination pt, or `NO_PT`; `None` passes every payload type
    /// unchanged. Boxed: most routes map none, and 128 bytes inline in every stream of every
    /// leg would be most of a leg's memory.
    pt_table: Option<Box<[u8; 128]>>,
}

/// What the egress decided for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send(RtpHeader),
    UnknownPt,
}

impl Egress {
    pub fn new(rewrite: &Rewrite, clock_rate: u32) -> Self {
        let mut egress = Egress {
            pt_table: None,
            ssrc: None,
            ts_gap: 1,
            seq_off: 0,
            ts_off: 0,
            last_in_ssrc: None,
            last_out_seq: 0,
            last_out_ts: 0,
            // Empty range: nothing sent yet.
            valid_from: 1,
        };
        egress.reconfigure(rewrite, clock_rate);
        egress
    }

    /// The codec's clock, learnt after the route was set up: only the step at the next
    /// source change depends on it.
    pub(crate) fn set_clock_rate(&mut self, clock_rate: u32) {
        self.ts_gap = (clock_rate / 50).max(1);
    }

    /// New source or new mapping; offsets carry over so the output stays continuous.
    pub(crate) fn reconfigure(&mut self, rewrite: &Rewrite, clock_rate: u32) {
        self.pt_table = (!rewrite.pt_map.is_empty()).then(|| {
            let mut table = Box::new([NO_PT; 128]);
            for &(Pt(from), Pt(to)) in &rewrite.pt_map {
                table[usize::from(from & 0x7f)] = to & 0x7f;
            }
            table
        });
        self.ssrc = rewrite.ssrc.map(|s| s.0);
        self.set_clock_rate(clock_rate);
        // Force a re-base on the next packet even if the new source reuses the old SSRC.
        self.last_in_ssrc = self.last_in_ssrc.map(|s| !s);
        self.valid_from = self.last_out_seq.wrapping_add(1);
    }

    /// The SSRC the destination sees on this stream, once something was sent.
    pub(crate) fn out_ssrc(&self) -> Option<u32> {
        self.ssrc.or(self.last_in_ssrc)
    }

    /// Maps a sequence number the destination saw back to the source's `(ssrc, seq)`: only
    /// for packets sent under the current offsets (not before a switch, a mute or a
    /// reconfiguration), so a retransmission is always the packet that carried that number.
    pub(crate) fn source_seq(&self, out_seq: u16) -> Option<(u32, u16)> {
        let ssrc = self.last_in_ssrc?;
        let span = self
            .last_out_seq
            .wrapping_add(1)
            .wrapping_sub(self.valid_from);
        if span >= 0x8000 || out_seq.wrapping_sub(self.valid_from) >= span {
            return None;
        }
        Some((ssrc, out_seq.wrapping_sub(self.seq_off)))
    }

    /// The header a packet of the current source got (or would get) when forwarded, without
    /// changing any state: what a retransmission carries. `None` for another source or an
    /// unmapped payload type.
    pub(crate) fn rewrite_again(&self, h: &RtpHeader) -> Option<RtpHeader> {
        if self.last_in_ssrc != Some(h.ssrc) {
            return None;
        }
        let pt = match &self.pt_table {
            None => h.pt,
            Some(table) => match table[usize::from(h.pt)] {
                NO_PT => return None,
                pt => pt,
            },
        };
        Some(RtpHeader {
            pt,
            seq: h.seq.wrapping_add(self.seq_off),
            ts: h.ts.wrapping_add(self.ts_off),
            ssrc: self.ssrc.unwrap_or(h.ssrc),
        })
    }

    /// The destination's timestamp for a source timestamp of source `ssrc` (SR translation).
    pub(crate) fn out_ts(&self, ssrc: u32, ts: u32) -> Option<u32> {
        (self.last_in_ssrc == Some(ssrc)).then(|| ts.wrapping_add(self.ts_off))
    }

    /// Whether the destination sees its own SSRC (a listener) rather than the sender's.
    pub(crate) fn rewrites_ssrc(&self) -> bool {
        self.ssrc.is_some()
    }

    /// Rewrites the header of a packet to be sent.
    #[inline]
    pub fn forward(&mut self, h: &RtpHeader) -> Verdict {
        let pt = match &self.pt_table {
            None => h.pt,
            Some(table) => match table[usize::from(h.pt)] {
                NO_PT => return Verdict::UnknownPt,
                pt => pt,
            },
        };
        self.rebase_if_new_source(h);
        let seq = h.seq.wrapping_add(self.seq_off);
        let ts = h.ts.wrapping_add(self.ts_off);
        if seq_newer(seq, self.last_out_seq) {
            self.last_out_seq = seq;
            self.last_out_ts = ts;
        }
        Verdict::Send(RtpHeader {
            pt,
            seq,
            ts,
            ssrc: self.ssrc.unwrap_or(h.ssrc),
        })
    }

    /// Accounts for a packet that is not sent (muted): later packets close the gap.
    #[inline]
    pub(crate) fn skip(&mut self, h: &RtpHeader) {
        self.rebase_if_new_source(h);
        let seq = h.seq.wrapping_add(self.seq_off);
        if seq_newer(seq, self.last_out_seq) {
            // Keep the timestamp moving with real time, but not the sequence number.
            self.last_out_ts = h.ts.wrapping_add(self.ts_off);
            self.seq_off = self.seq_off.wrapping_sub(1);
            self.valid_from = self.last_out_seq.wrapping_add(1);
        }
    }

    fn rebase_if_new_source(&mut self, h: &RtpHeader) {
        match self.last_in_ssrc {
            Some(s) if s == h.ssrc => {}
            None => {
                // First packet ever: keep the source's numbering (identity for proxies and echo).
                self.last_in_ssrc = Some(h.ssrc);
                self.last_out_seq = h.seq.wrapping_sub(1);
                self.last_out_ts = h.ts;
                self.valid_from = h.seq;
            }
            Some(_) => {
                self.last_in_ssrc = Some(h.ssrc);
                self.seq_off = self.last_out_seq.wrapping_add(1).wrapping_sub(h.seq);
                self.ts_off = self
                    .last_out_ts
                    .wrapping_add(self.ts_gap)
                    .wrapping_sub(h.ts);
                // The next packet is exactly last + 1.
                self.last_out_seq = h.seq.wrapping_add(self.seq_off).wrapping_sub(1);
                self.valid_from = self.last_out_seq.wrapping_add(1);
            }
        }
    }
}

/// RFC 3550 §A.1 style serial-number comparison: `a` is newer than `b`.
#[inline]
fn seq_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 0x8000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Ssrc;

    fn h(ssrc: u32, seq: u16, ts: u32) -> RtpHeader {
        RtpHeader {
            pt: 96,
            seq,
            ts,
            ssrc,
        }
    }

    fn sent(v: Verdict) -> RtpHeader {
        match v {
            Verdict::Send(h) => h,
            other => panic!("expected Send, got {other:?}"),
        }
    }

    #[test]
    fn passthrough_keeps_numbering() {
        let mut e = Egress::new(&Rewrite::default(), 90000);
        let out = sent(e.forward(&h(7, 100, 1000)));
        assert_eq!(out, h(7, 100, 1000));
    }

    #[test]
    fn muted_route_keeps_seq_contiguous() {
        let mut e = Egress::new(&Rewrite::default(), 8000);
        let mut out = vec![];
        for seq in 0..100u16 {
            let p = h(1, seq.wrapping_add(65500), u32::from(seq) * 160);
            if (20..40).contains(&seq) || seq % 7 == 3 {
                e.skip(&p);
            } else {
                out.push(sent(e.forward(&p)).seq);
            }
        }
        for w in out.windows(2) {
            assert_eq!(w[1], w[0].wrapping_add(1), "gap in {out:?}");
        }
    }

    #[test]
    fn source_switch_continues_sequence_and_timestamp() {
        let rw = Rewrite {
            pt_map: vec![],
            ssrc: Some(Ssrc(42)),
        };
        let mut e = Egress::new(&rw, 90000);
        let a = sent(e.forward(&h(1, 500, 9000)));
        let b = sent(e.forward(&h(1, 501, 12000)));
        e.reconfigure(&rw, 90000);
        let c = sent(e.forward(&h(2, 40000, 77)));
        let d = sent(e.forward(&h(2, 40001, 3077)));
        assert_eq!([a.ssrc, b.ssrc, c.ssrc, d.ssrc], [42; 4]);
        assert_eq!([a.seq, b.seq, c.seq, d.seq], [500, 501, 502, 503]);
        assert_eq!(c.ts, 12000 + 1800);
        assert_eq!(d.ts, c.ts + 3000);
    }

    #[test]
    fn switch_back_to_same_ssrc_still_rebases() {
        let rw = Rewrite {
            pt_map: vec![],
            ssrc: Some(Ssrc(42)),
        };
        let mut e = Egress::new(&rw, 8000);
        sent(e.forward(&h(1, 10, 0)));
        e.reconfigure(&rw, 8000);
        sent(e.forward(&h(2, 900, 0)));
        e.reconfigure(&rw, 8000);
        let back = sent(e.forward(&h(1, 11, 160)));
        assert_eq!(back.seq, 12);
    }

    #[test]
    fn payload_types_are_mapped_or_refused() {
        let rw = Rewrite {
            pt_map: vec![(Pt(96), Pt(100))],
            ssrc: None,
        };
        let mut e = Egress::new(&rw, 90000);
        assert_eq!(sent(e.forward(&h(1, 1, 1))).pt, 100);
        assert_eq!(
            e.forward(&RtpHeader {
                pt: 97,
                ..h(1, 2, 2)
            }),
            Verdict::UnknownPt
        );
    }

    #[test]
    fn reordered_packet_keeps_its_place() {
        let mut e = Egress::new(&Rewrite::default(), 8000);
        sent(e.forward(&h(1, 10, 0)));
        sent(e.forward(&h(1, 12, 320)));
        let late = sent(e.forward(&h(1, 11, 160)));
        assert_eq!(late.seq, 11);
        assert_eq!(sent(e.forward(&h(1, 13, 480))).seq, 13);
    }

    #[test]
    fn nacked_numbers_map_back_only_under_current_offsets() {
        let rw = Rewrite {
            pt_map: vec![],
            ssrc: Some(Ssrc(42)),
        };
        let mut e = Egress::new(&rw, 90000);
        assert_eq!(e.source_seq(0), None, "nothing sent");
        for seq in 100..110 {
            sent(e.forward(&h(1, seq, 0)));
        }
        assert_eq!(e.source_seq(105), Some((1, 105)));
        assert_eq!(e.source_seq(110), None, "not sent yet");
        e.skip(&h(1, 110, 0));
        let out = sent(e.forward(&h(1, 111, 0)));
        assert_eq!(out.seq, 110);
        assert_eq!(e.source_seq(110), Some((1, 111)));
        assert_eq!(e.source_seq(105), None, "before the mute: offsets changed");
        e.reconfigure(&rw, 90000);
        assert_eq!(e.source_seq(110), None, "after a switch");
        let again = e.rewrite_again(&h(1, 111, 0));
        assert_eq!(again, None, "another source now (re-base pending)");
    }

    /// Fixed-seed xorshift: property-style checks without a proptest dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn output_is_contiguous_across_random_mutes_and_switches() {
        for seed in 1..200u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let rw = Rewrite {
                pt_map: vec![],
                ssrc: Some(Ssrc(9)),
            };
            let mut e = Egress::new(&rw, 90000);
            let mut sources: Vec<(u32, u16, u32)> = (0..3)
                .map(|i| (i + 1, rng.next() as u16, rng.next() as u32))
                .collect();
            let mut current = 0usize;
            let mut out: Vec<RtpHeader> = vec![];
            for _ in 0..500 {
                match rng.next() % 20 {
                    0 => {
                        current = (rng.next() % 3) as usize;
                        e.reconfigure(&rw, 90000);
                    }
                    n => {
                        let (ssrc, seq, ts) = &mut sources[current];
                        *seq = seq.wrapping_add(1);
                        *ts = ts.wrapping_add(3000);
                        let h = h(*ssrc, *seq, *ts);
                        if n < 6 {
                            e.skip(&h);
                        } else {
                            out.push(sent(e.forward(&h)));
                        }
                    }
                }
            }
            for w in out.windows(2) {
                assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "seed {seed}");
                assert!(
                    w[1].ts.wrapping_sub(w[0].ts) < 0x8000_0000,
                    "seed {seed}: ts went back"
                );
                assert_eq!(w[1].ssrc, 9);
            }
        }
    }
}
