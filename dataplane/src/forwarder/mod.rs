//! The sans-IO forwarding core of one worker: its legs, their routes, and per-packet decisions.
//!
//! A driver (mmsg or io_uring) feeds it datagrams with [`Forwarder::handle_datagram`] and sends
//! what it leaves in the caller-owned [`TxBatch`]. Nothing here touches a socket or a clock, and
//! nothing allocates per packet: legs and routes change only through commands between batches.
//!
//! A leg is one transport (a UDP port pair). A plain leg carries one kind of media; a bundled
//! WebRTC leg (RFC 8843) carries audio and video, told apart by payload type. Routes are per
//! *stream* — (leg, kind) — so a bundled leg can feed two plain legs and the other way round.
//! A *secure* leg speaks SRTP: RTP is dropped until keys arrive (`SetSrtp`), then unprotected
//! on the way in and protected per destination on the way out; STUN and DTLS go to the slow
//! path (`Event::SlowPath`) and come back as `Command::Transmit`.

mod datagram;
mod leg;
mod nack;
mod police;
mod prefetch;
mod reports;
mod rtcp;
mod rtx;
mod shadow;
#[cfg(test)]
mod shadow_tests;
#[cfg(test)]
mod tests;

pub(crate) use prefetch::prefetch;
pub use prefetch::{PREFETCH_DEPTH, Upcoming};
pub use rtcp::SERVER_SSRC;
pub use shadow::PeerMsg;

use leg::{Leg, PtKinds, Srtp, Stream, kind_index, kind_of_index};

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::api::{Command, DropReason, Event, Feedback, LegId, LegStats, MediaKind, Remote, bump};
use crate::batch::TxBatch;
pub use crate::batch::{Slot, SocketRef};

/// At most one keyframe request per source stream within this interval.
const KEYFRAME_COALESCE: std::time::Duration = std::time::Duration::from_millis(500);
/// What a REMB announces when a cap is lifted (10 Mbit/s).
const UNCAPPED_REMB: u64 = 10_000_000;

#[derive(Debug, Default)]
pub struct Forwarder {
    legs: Vec<Option<Leg>>,
    free: Vec<Slot>,
    by_id: HashMap<LegId, Slot>,
    /// In the order they happened: a stream that went down and up again within one round
    /// must reach control as down, then up.
    events: VecDeque<Event>,
    /// The driver's clock, set once per batch: arrival time of recorded packets.
    now: Option<Instant>,
    /// The first `now`: the time base of jitter estimates.
    epoch: Option<Instant>,
    /// A tick still walking the legs (see [`Forwarder::handle_timeout`]).
    tick: Option<reports::TickWork>,
    /// When the next tick is due, once the first has run.
    next_tick: Option<Instant>,
    /// The worker this forwarder runs on: a leg whose id names another is a shadow here
    /// (see `shadow.rs`).
    worker: usize,
    /// Per worker: the ring this one mirrors publishers' packets into (`None` for itself).
    peers: Vec<Option<crate::mirror::Producer>>,
    /// A packet went into a ring since the driver last woke the consumers.
    mirrored: bool,
    /// Messages for other workers' forwarders, in order: (worker, message).
    peer_msgs: VecDeque<(usize, PeerMsg)>,
}

impl Forwarder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plain leg carrying one kind of media (every payload type belongs to it).
    pub fn add_leg(
        &mut self,
        id: LegId,
        kind: MediaKind,
        remote: Remote,
        stats: Arc<LegStats>,
    ) -> Slot {
        let leg = Leg {
            id,
            pt_kinds: PtKinds::all(kind),
            remote,
            latched_rtp: None,
            latched_rtcp: None,
            streams: [Stream::new(0), Stream::new(1)],
            secure: false,
            slow_path: None,
            srtp: None,
            police: None,
            reports: reports::LegReports::default(),
            stats,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.legs[slot as usize] = Some(leg);
                slot
            }
            None => {
                self.legs.push(Some(leg));
                (self.legs.len() - 1) as Slot
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    /// Makes a leg bundled (payload types name the kind; others are dropped as `UnknownPt`)
    /// and/or secure (SRTP, with STUN and DTLS handed to the slow path).
    pub fn set_transport(
        &mut self,
        slot: Slot,
        secure: bool,
        bundle: &[(crate::api::Pt, MediaKind)],
    ) {
        if let Some(leg) = self.leg_mut(slot) {
            leg.secure = secure;
            leg.slow_path = secure.then(|| Box::new(police::SlowPathBudget::new()));
            if !bundle.is_empty() {
                leg.pt_kinds = PtKinds::none();
                for &(pt, kind) in bundle {
                    leg.pt_kinds.set(pt.0, kind_index(kind));
                }
            }
        }
    }

    /// Removes a leg and every route into or out of it. Returns its slot for the driver.
    pub fn remove_leg(&mut self, id: LegId) -> Option<Slot> {
        let slot = self.by_id.remove(&id)?;
        self.disconnect(slot);
        let leg = self.legs[slot as usize].take()?;
        self.source_closed(&leg);
        for (k, stream) in leg.streams.iter().enumerate() {
            for &out in &stream.outputs {
                if let Some(dst) = self.leg_mut(out) {
                    dst.streams[k].source = None;
                }
            }
        }
        self.free.push(slot);
        Some(slot)
    }

    /// The time of the batch about to be handled (drivers call this; nothing here reads a clock).
    pub fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
        self.epoch.get_or_insert(now);
    }

    pub fn slot(&self, id: LegId) -> Option<Slot> {
        self.by_id.get(&id).copied()
    }

    pub fn leg_count(&self) -> usize {
        self.by_id.len()
    }

    pub fn handle_command(
        &mut self,
        cmd: Command,
        tx: &mut TxBatch,
    ) -> Result<(), crate::api::Error> {
        use crate::api::Error::UnknownLeg;
        let slot_of = |fwd: &Self, id: LegId| fwd.slot(id).ok_or(UnknownLeg(id));
        match cmd {
            Command::SetRemote { leg, remote } => {
                let slot = slot_of(self, leg)?;
                let l = self.leg_mut(slot).ok_or(UnknownLeg(leg))?;
                l.remote = remote;
                // A new answer or a new ICE pair replaces what was latched before.
                l.latched_rtp = None;
                l.latched_rtcp = None;
            }
            Command::Connect {
                from,
                to,
                kind,
                rewrite,
            } => {
                let dst = slot_of(self, to)?;
                let k = kind_index(kind);
                // A source on another worker is fed here through a shadow of it.
                let src = match self.slot(from) {
                    Some(src) => src,
                    // Without `connect_remote` (a forwarder without a driver): counted nowhere.
                    None if from.worker() != self.worker => self.shadow_of(from, Arc::default()),
                    None => return Err(UnknownLeg(from)),
                };
                // Connected again to the same source (a new rewrite): the route, and the
                // source's cache, stay.
                let same = self
                    .leg_mut(dst)
                    .is_some_and(|d| d.streams[k].source == Some(src));
                if !same {
                    self.disconnect_stream(dst, k);
                }
                if let Some(d) = self.leg_mut(dst) {
                    let stream = &mut d.streams[k];
                    stream.source = Some(src);
                    stream.egress.reconfigure(&rewrite, stream.clock_rate);
                }
                if !same && let Some(s) = self.leg_mut(src) {
                    s.streams[k].outputs.push(dst);
                }
                if same && self.is_shadow(src) {
                    // No new listener of it here after all.
                    self.mirror_sub(from, k);
                }
                self.refresh_rtx_cache(src, k);
            }
            Command::Disconnect { to } => {
                let dst = slot_of(self, to)?;
                self.disconnect(dst);
            }
            Command::SetFeedback {
                leg,
                kind,
                feedback,
            } => {
                let slot = slot_of(self, leg)?;
                let k = kind_index(kind);
                self.set_feedback(slot, k, &feedback);
            }
            Command::SetMute {
                leg,
                kind,
                mute_in,
                mute_out,
            } => {
                let slot = slot_of(self, leg)?;
                let l = self.leg_mut(slot).ok_or(UnknownLeg(leg))?;
                for (k, stream) in l.streams.iter_mut().enumerate() {
                    if kind.is_none_or(|kind| kind_index(kind) == k) {
                        stream.mute_in = mute_in;
                        stream.mute_out = mute_out;
                    }
                }
            }
            Command::SetSrtp { leg, keys } => {
                let slot = slot_of(self, leg)?;
                let l = self.leg_mut(slot).ok_or(UnknownLeg(leg))?;
                match Srtp::new(&keys) {
                    Ok(srtp) => l.srtp = Some(Box::new(srtp)),
                    // The leg stays as it was (unsecured: SRTP is dropped as `NotSecured`);
                    // control fails the session's transport.
                    Err(error) => self.events.push_back(Event::SrtpRefused { leg, error }),
                }
            }
            Command::Record { leg, kind, sink } => {
                let slot = slot_of(self, leg)?;
                let l = self.leg_mut(slot).ok_or(UnknownLeg(leg))?;
                // Dropping the previous sink closes its recording.
                l.streams[kind_index(kind)].record = sink;
            }
            Command::SetBitrate { leg, bps } => {
                let slot = slot_of(self, leg)?;
                self.set_bitrate(slot, bps, tx);
            }
            Command::HoldForKeyframe { to, codec } => {
                let slot = slot_of(self, to)?;
                if let Some(l) = self.leg_mut(slot) {
                    l.streams[1].hold = Some(codec);
                }
            }
            Command::RequestKeyframe { leg, kind } => {
                let slot = slot_of(self, leg)?;
                if !self.request_keyframe(slot, kind_index(kind), tx) {
                    tracing::debug!(?leg, "no keyframe request possible yet");
                }
            }
            Command::Transmit { leg, to, data } => {
                let slot = slot_of(self, leg)?;
                let via = SocketRef { slot, rtcp: false };
                if !tx.push(via, to, &data, |_, len| Some(len)) {
                    self.count_drop(slot, DropReason::SendFailed);
                }
            }
        }
        Ok(())
    }

    /// Queues an RTCP PLI towards the leg's peer for stream `k`. `false` when the stream has
    /// not been heard from, the peer's address is unknown or keys are missing.
    fn request_keyframe(&mut self, slot: Slot, k: usize, tx: &mut TxBatch) -> bool {
        if self.is_shadow(slot) {
            return self.shadow_keyframe_request(slot, k);
        }
        let now = self.now;
        let Some(leg) = self.leg_mut(slot) else {
            return false;
        };
        let Some(media_ssrc) = leg.streams[k].last_in_ssrc else {
            return false;
        };
        if Self::send_rtcp(leg, slot, &rtcp::pli(media_ssrc), tx) {
            leg.streams[k].last_keyframe_request = now;
            true
        } else {
            false
        }
    }

    /// Asks for a keyframe on behalf of a receiver, at most once per `KEYFRAME_COALESCE` per
    /// source stream: many listeners losing a picture make one request (RFC 4585 §3.4).
    fn forward_keyframe_request(&mut self, source: Slot, k: usize, tx: &mut TxBatch) {
        let now = self.now;
        let recent = self
            .legs
            .get(source as usize)
            .and_then(Option::as_ref)
            .and_then(|l| {
                let last = l.streams[k].last_keyframe_request?;
                Some(now?.saturating_duration_since(last) < KEYFRAME_COALESCE)
            });
        if recent != Some(true) {
            self.request_keyframe(source, k, tx);
        }
    }

    /// Applies a bitrate cap and tells the sender with a REMB (secure legs get it as SRTCP).
    fn set_bitrate(&mut self, slot: Slot, bps: u64, tx: &mut TxBatch) {
        let Some(leg) = self.leg_mut(slot) else {
            return;
        };
        match (&leg.police, bps) {
            (_, 0) => leg.police = None,
            (Some(b), _) if b.rate() == bps => {}
            _ => leg.police = Some(police::TokenBucket::new(bps)),
        }
        // Lifting the cap announces a generous ceiling so the sender ramps up again.
        let announce = if bps == 0 { UNCAPPED_REMB } else { bps };
        Self::send_remb(leg, slot, announce, tx);
    }

    /// A capped leg's REMB again (each tick): a sender that lost one, or started a new
    /// stream, hears the cap within a tick.
    fn repeat_remb(&mut self, slot: Slot, tx: &mut TxBatch) {
        let Some(leg) = self.leg_mut(slot) else {
            return;
        };
        if let Some(bps) = leg.police.as_ref().map(|p| p.rate()) {
            Self::send_remb(leg, slot, bps, tx);
        }
    }

    /// An RTCP REMB asking the leg's peer to stay below `bps`, naming the SSRCs last heard;
    /// nothing before the peer has sent.
    fn send_remb(leg: &mut Leg, slot: Slot, bps: u64, tx: &mut TxBatch) {
        let mut ssrcs = [0u32; 2];
        let mut n_ssrcs = 0;
        for ssrc in leg.streams.iter().filter_map(|s| s.last_in_ssrc) {
            ssrcs[n_ssrcs] = ssrc;
            n_ssrcs += 1;
        }
        if n_ssrcs == 0 {
            return;
        }
        let mut buf = [0u8; rtcp::REMB_MAX];
        let n = rtcp::remb(bps, &ssrcs[..n_ssrcs], &mut buf);
        Self::send_rtcp(leg, slot, &buf[..n], tx);
    }

    /// Queues RTCP the server originates towards the leg's peer (SRTCP on a secure leg).
    fn send_rtcp(leg: &mut Leg, slot: Slot, packet: &[u8], tx: &mut TxBatch) -> bool {
        let Some((rtcp_socket, dest)) = leg.rtcp_dest() else {
            return false;
        };
        if leg.secure && leg.srtp.is_none() {
            return false;
        }
        let srtp = &mut leg.srtp;
        let via = SocketRef {
            slot,
            rtcp: rtcp_socket,
        };
        let sent = tx.push(via, dest, packet, |buf, len| match srtp {
            Some(s) => s.tx.protect_rtcp(buf, len).ok(),
            None => Some(len),
        });
        if sent {
            bump(&leg.stats.rtcp_tx_packets, 1);
        }
        sent
    }

    /// How many datagrams one packet on `slot` can turn into (drivers keep that much room).
    pub fn fanout(&self, slot: Slot) -> usize {
        self.legs
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map_or(0, |l| {
                l.streams.iter().map(|s| s.outputs.len()).max().unwrap_or(0)
            })
            .max(1)
    }

    /// Books a drop the driver saw (truncation, a send the kernel refused).
    pub fn count_drop(&self, slot: Slot, reason: DropReason) {
        if let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) {
            leg.stats.count_drop(reason);
        }
    }

    /// The oldest event not yet taken.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn disconnect(&mut self, dst: Slot) {
        for k in 0..2 {
            self.disconnect_stream(dst, k);
        }
    }

    fn disconnect_stream(&mut self, dst: Slot, k: usize) {
        let Some(src) = self.leg_mut(dst).and_then(|d| d.streams[k].source.take()) else {
            return;
        };
        if let Some(s) = self.leg_mut(src) {
            s.streams[k].outputs.retain(|&o| o != dst);
        }
        self.refresh_rtx_cache(src, k);
        if self.is_shadow(src) {
            self.shadow_disconnected(src, k);
        }
    }

    fn leg_mut(&mut self, slot: Slot) -> Option<&mut Leg> {
        self.legs.get_mut(slot as usize).and_then(Option::as_mut)
    }
}
