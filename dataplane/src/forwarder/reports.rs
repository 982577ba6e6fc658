//! RTCP reports the server terminates and regenerates (RFC 3550 §6.4), on the forwarder's own
//! tick ([`Forwarder::handle_timeout`], every [`TICK_INTERVAL`]).
//!
//! - Towards publishers: a receiver report per stream the server receives, with what it saw
//!   (fraction lost, cumulative lost, extended highest sequence number, interarrival jitter,
//!   LSR/DLSR from the stream's last sender report).
//! - Towards listeners: a sender report per stream, with the listener's SSRC and a timestamp
//!   translated through its `Egress` offsets. Each source leg's NTP clock is mapped onto the
//!   server's wall clock once (at its first sender report), so audio and video of one peer
//!   keep their relation, and every listener gets the server's NTP time: across a switch the
//!   mapping from the listener's RTP time to NTP time continues (and is clamped so that it
//!   never goes back).
//! - A listener whose NACKs named more than 5 % of the packets sent to it since the last tick
//!   is reported (`Event::SlowLink`).
//!
//! Only streams whose RTCP is terminated get reports: secure legs, listeners (rewritten
//! SSRCs) and the publishers feeding them. Plain proxy and echo legs keep passing RTCP
//! through unchanged.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Forwarder, Slot, kind_of_index, rtcp};
use crate::api::{Event, MEDIA_SILENT_TICKS};
use crate::batch::TxBatch;
use crate::packet::RtpHeader;
use crate::rtcp::{self as wire, Compound, Packet, ReportBlock};

/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// A peer is on a slow link when its NACKs name more than 1/20 of what it was sent...
const SLOW_LINK_RATIO: u64 = 20;
/// ...and it was sent at least this many packets (a handful of NACKs on a trickle is noise).
const SLOW_LINK_MIN_PACKETS: u64 = 20;

/// The RTP clock of stream `k` when the SDP named none: Opus's 48 kHz for audio, 90 kHz for
/// video (RFC 7587 §4.1, RFC 3551 §5).
pub(crate) fn default_clock_rate(k: usize) -> u32 {
    if k == 0 { 48_000 } else { 90_000 }
}

/// Arrival time of the current batch in RTP units of a `rate`-Hz clock (for jitter).
#[inline]
pub(super) fn arrival_units(
    now: Option<Instant>,
    epoch: Option<Instant>,
    rate: u32,
) -> Option<u32> {
    let d = now?.saturating_duration_since(epoch?);
    Some((d.as_micros() * u128::from(rate) / 1_000_000) as u32)
}

/// NTP timestamp (32.32 fixed point, RFC 3550 §4) of a wall-clock time.
pub(crate) fn ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    ntp_span(d).wrapping_add(NTP_UNIX_OFFSET << 32)
}

fn ntp_span(d: Duration) -> u64 {
    (d.as_secs() << 32) + ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// `rate`-Hz clock ticks in a signed NTP-format interval.
fn ticks(ntp_delta: i64, rate: u32) -> i64 {
    ((i128::from(ntp_delta) * i128::from(rate)) >> 32) as i64
}

/// How often the data plane reports (SR/RR), repeats a cap's REMB, and checks for silence
/// and slow links, on its own clock: control has no part in it.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// Legs one step of a tick reports on at most: about 100 µs of cache misses when every leg
/// is cold.
pub const TICK_STEP: usize = 256;
/// At most an RR and an SR for each of a leg's two streams, and a REMB.
const REPORTS_PER_LEG: usize = 5;

/// A tick in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TickWork {
    wallclock: SystemTime,
    /// `now` when the tick started: `wallclock` is the NTP time of this instant.
    started: Instant,
    /// The next slot to report on.
    next: Slot,
}

/// A peer's last sender report on one stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SenderInfo {
    ntp: u64,
    rtp: u32,
    at: Instant,
}

/// What the server received on one stream (RFC 3550 §A.1, §A.3, §A.8).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RxStats {
    ssrc: u32,
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the last packet, in RTP units.
    transit: Option<u32>,
    /// Interarrival jitter, scaled by 16 (§A.8).
    jitter: u32,
    sr: Option<SenderInfo>,
}

impl RxStats {
    /// One received packet; `arrival` in the stream's RTP clock units, if the time is known.
    #[inline]
    pub(crate) fn on_packet(&mut self, h: &RtpHeader, arrival: Option<u32>) {
        if !self.started || h.ssrc != self.ssrc {
            *self = RxStats {
                ssrc: h.ssrc,
                started: true,
                base_seq: u32::from(h.seq),
                max_seq: h.seq,
                ..RxStats::default()
            };
        }
        let ahead = h.seq.wrapping_sub(self.max_seq);
        if ahead != 0 && ahead < 0x8000 {
            if h.seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = h.seq;
        }
        self.received += 1;
        if let Some(arrival) = arrival {
            let transit = arrival.wrapping_sub(h.ts);
            if let Some(prev) = self.transit {
                let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
                self.jitter = self
                    .jitter
                    .wrapping_add(d)
                    .wrapping_sub((self.jitter + 8) >> 4);
            }
            self.transit = Some(transit);
        }
    }

    /// A receiver report block about this stream; updates the interval counters.
    fn report_block(&mut self, now: Instant) -> ReportBlock {
        let ext_max = u64::from(self.cycles) + u64::from(self.max_seq);
        let expected = (ext_max + 1).saturating_sub(u64::from(self.base_seq));
        let lost = expected as i64 - self.received as i64;
        let lost = lost.clamp(-0x80_0000, 0x7f_ffff) as i32;
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        let (lsr, dlsr) = match self.sr {
            Some(sr) => {
                let delay = ntp_span(now.saturating_duration_since(sr.at)) >> 16;
                ((sr.ntp >> 16) as u32, delay.min(u64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        ReportBlock {
            ssrc: self.ssrc,
            fraction_lost: fraction,
            lost,
            highest_seq: ext_max as u32,
            jitter: self.jitter >> 4,
            lsr,
            dlsr,
        }
    }
}

/// The sender side of one stream towards a listener.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TxReport {
    pub(crate) packets: u32,
    pub(crate) octets: u32,
    /// The last sender report sent: (NTP, RTP).
    last: Option<(u64, u32)>,
}

/// Per-leg report state.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LegReports {
    /// This leg's peer NTP clock minus the server's (set at its first sender report).
    ntp_offset: Option<u64>,
    /// Sequence numbers NACKed since the last tick.
    pub(crate) nacks_window: u64,
    /// `tx_packets` at the last tick.
    tx_at_tick: u64,
}

impl Forwarder {
    /// Notes the sender reports a peer sent (the RTCP is plaintext here).
    pub(super) fn note_sender_reports(&mut self, slot: Slot, data: &[u8]) {
        let Some(now) = self.now else { return };
        let Some(leg) = self.leg_mut(slot) else {
            return;
        };
        let mut reported = false;
        for part in Compound::new(data) {
            let Packet::SenderReport(sr) = part else {
                continue;
            };
            reported = true;
            for s in &mut leg.streams {
                if s.rx.started && s.rx.ssrc == sr.ssrc {
                    s.rx.sr = Some(SenderInfo {
                        ntp: sr.ntp,
                        rtp: sr.rtp,
                        at: now,
                    });
                }
            }
        }
        // Listeners on other workers get their sender reports from the same.
        if reported && leg.streams.iter().any(|s| !s.mirrors.is_empty()) {
            self.push_mirrored_rtcp(slot, data);
        }
    }

    /// Whether RTCP about stream `k` of `slot` stops at the server (so the server reports).
    fn terminates_rtcp(&self, slot: Slot, k: usize) -> bool {
        let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) else {
            return false;
        };
        leg.secure
            || leg.streams[k].outputs.is_empty()
            || leg.streams[k].outputs.iter().any(|&o| {
                self.legs
                    .get(o as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|d| d.secure || d.streams[k].egress.rewrites_ssrc())
            })
    }

    /// When the data plane next has work of its own: at once while a tick is walking the
    /// legs, else the next tick (an interval after the first `now`, then every interval).
    /// `None` before the driver gave a first `now`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.tick.is_some() {
            return self.now;
        }
        self.next_tick.or_else(|| Some(self.epoch? + TICK_INTERVAL))
    }

    /// Does what is due at `now` (`wallclock` is the same instant on the NTP clock of the
    /// sender reports): starts a tick — RRs to publishers, SRs to listeners, REMB for capped
    /// legs, the slow-link and silence checks — or takes the next step of one. A tick walks
    /// the legs a few at a time (`TICK_STEP`, and what fits `tx`), so that 10,000 legs never
    /// hold up forwarding for milliseconds. A busy worker that misses deadlines does not make
    /// them up: the next tick is an interval after this one.
    pub fn handle_timeout(&mut self, now: Instant, wallclock: SystemTime, tx: &mut TxBatch) {
        self.set_now(now);
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        if self.tick.is_some() {
            self.poll_tick(tx);
        } else {
            self.next_tick = Some(now + TICK_INTERVAL);
            self.rtcp_tick(wallclock, tx);
        }
    }

    /// Starts a walk over every leg and takes its first step; a walk still under way is
    /// restarted.
    pub(super) fn rtcp_tick(&mut self, wallclock: SystemTime, tx: &mut TxBatch) {
        let Some(now) = self.now else { return };
        self.tick = Some(TickWork {
            wallclock,
            started: now,
            next: 0,
        });
        self.poll_tick(tx);
    }

    /// Reports on the next legs of a tick in progress, as many as fit `tx` (at most
    /// [`TICK_STEP`]). Returns whether legs are left for a later step.
    pub(super) fn poll_tick(&mut self, tx: &mut TxBatch) -> bool {
        let (Some(work), Some(now)) = (self.tick, self.now) else {
            return false;
        };
        // Each step's reports carry the time they are sent at.
        let ntp_now = ntp(work.wallclock + now.saturating_duration_since(work.started));
        // The server's NTP time of an earlier instant.
        let ntp_at = |t: Instant| ntp_now.wrapping_sub(ntp_span(now.saturating_duration_since(t)));
        let steps = (tx.remaining() / REPORTS_PER_LEG).min(TICK_STEP);
        let end = (work.next as usize + steps).min(self.legs.len()) as Slot;
        for slot in work.next..end {
            let Some(leg) = self.leg_mut(slot) else {
                continue;
            };
            if leg.reports.ntp_offset.is_none()
                && let Some(sr) = leg.streams.iter().find_map(|s| s.rx.sr)
            {
                leg.reports.ntp_offset = Some(sr.ntp.wrapping_sub(ntp_at(sr.at)));
            }
            self.slow_link_check(slot);
            self.silence_check(slot);
            self.repeat_remb(slot, tx);
            for k in 0..2 {
                self.send_rr(slot, k, now, tx);
                self.send_sr(slot, k, ntp_now, tx);
            }
        }
        let more = (end as usize) < self.legs.len();
        self.tick = more.then_some(TickWork { next: end, ..work });
        more
    }

    /// The media watch: a stream that was up and heard nothing over the last
    /// [`MEDIA_SILENT_TICKS`] ticks is down (`Event::MediaDown`), until its next packet.
    fn silence_check(&mut self, slot: Slot) {
        let Some(leg) = self.legs.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let id = leg.id;
        for (k, stream) in leg.streams.iter_mut().enumerate() {
            if std::mem::take(&mut stream.heard) {
                stream.silent_ticks = 0;
                continue;
            }
            if !stream.media_up {
                continue;
            }
            stream.silent_ticks += 1;
            if stream.silent_ticks >= MEDIA_SILENT_TICKS {
                stream.media_up = false;
                stream.silent_ticks = 0;
                self.events.push_back(Event::MediaDown {
                    leg: id,
                    kind: kind_of_index(k),
                });
            }
        }
    }

    fn slow_link_check(&mut self, slot: Slot) {
        let Some(leg) = self.leg_mut(slot) else {
            return;
        };
        let sent = leg
            .stats
            .tx_packets
            .load(std::sync::atomic::Ordering::Relaxed);
        let packets = sent.wrapping_sub(leg.reports.tx_at_tick);
        let nacks = std::mem::take(&mut leg.reports.nacks_window);
        leg.reports.tx_at_tick = sent;
        if packets >= SLOW_LINK_MIN_PACKETS && nacks * SLOW_LINK_RATIO > packets {
            let id = leg.id;
            self.events.push_back(Event::SlowLink {
                leg: id,
                nacks,
                packets,
            });
        }
    }

    fn send_rr(&mut self, slot: Slot, k: usize, now: Instant, tx: &mut TxBatch) {
        let started = self
            .legs
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|l| l.streams[k].rx.started);
        if !started || !self.terminates_rtcp(slot, k) {
            return;
        }
        let Some(leg) = self.leg_mut(slot) else {
            return;
        };
        let block = leg.streams[k].rx.report_block(now);
        let p = wire::receiver_report(rtcp::SERVER_SSRC, &block);
        Self::send_rtcp(leg, slot, &p, tx);
    }

    /// A sender report towards a listener's stream `k`, if its source has sent one.
    fn send_sr(&mut self, slot: Slot, k: usize, ntp_now: u64, tx: &mut TxBatch) {
        let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let stream = &leg.streams[k];
        if !(leg.secure || stream.egress.rewrites_ssrc()) {
            return;
        }
        let (Some(src), Some(out_ssrc)) = (stream.source, stream.egress.out_ssrc()) else {
            return;
        };
        let Some(source) = self.legs.get(src as usize).and_then(Option::as_ref) else {
            return;
        };
        let (Some(sr), Some(offset)) = (source.streams[k].rx.sr, source.reports.ntp_offset) else {
            return;
        };
        // Where the source's RTP clock is now, through its own NTP clock.
        let rate = source.streams[k].clock_rate;
        let peer_now = ntp_now.wrapping_add(offset);
        let src_rtp = sr
            .rtp
            .wrapping_add(ticks(peer_now.wrapping_sub(sr.ntp) as i64, rate) as u32);
        let Some(mut rtp) = stream.egress.out_ts(source.streams[k].rx.ssrc, src_rtp) else {
            return;
        };
        if let Some((last_ntp, last_rtp)) = stream.tx_report.last {
            let elapsed = ntp_now.wrapping_sub(last_ntp) as i64;
            if elapsed <= 0 {
                return;
            }
            // Never back (nor standing still) in RTP time while NTP time advances.
            if (rtp.wrapping_sub(last_rtp) as i32) <= 0 {
                rtp = last_rtp.wrapping_add(ticks(elapsed, rate).max(1) as u32);
            }
        }
        let p = wire::sender_report(
            out_ssrc,
            ntp_now,
            rtp,
            stream.tx_report.packets,
            stream.tx_report.octets,
        );
        let Some(leg) = self.leg_mut(slot) else {
            return;
        };
        if Self::send_rtcp(leg, slot, &p, tx) {
            leg.streams[k].tx_report.last = Some((ntp_now, rtp));
        }
    }
}

/// Sent on the forwarding path: one more packet of `len` bytes in the listener's report.
#[inline]
pub(crate) fn count_sent(r: &mut TxReport, len: usize) {
    r.packets = r.packets.wrapping_add(1);
    r.octets = r.octets.wrapping_add(len as u32);
}
