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

mod nack;
mod police;
mod reports;
mod rtcp;
mod rtx;
#[cfg(test)]
mod tests;

pub use rtcp::SERVER_SSRC;

use std::collections::{HashMap, VecDeque};
use std::mem::{offset_of, size_of};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::api::{
    Command, DropReason, Event, Feedback, LegId, LegStats, MediaKind, Remote, VideoCodec, bump,
};
use crate::batch::TxBatch;
use crate::egress::{Egress, Verdict};
use crate::keyframe::{rtp_payload, starts_keyframe};
use crate::packet::{Class, RtpHeader, classify};
use crate::record::{RecordSink, Tap};
use crate::srtp::{SessionKeys, SrtpContext, SrtpError};

/// Index of a leg in the worker's table; the driver maps sockets to `(Slot, is_rtcp_socket)`.
pub type Slot = u32;

/// A socket owned by a driver: the leg's slot and whether it is the RTCP (port + 1) socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketRef {
    pub slot: Slot,
    pub rtcp: bool,
}

impl SocketRef {
    /// Dense token for driver tables: `slot * 2 + rtcp`.
    pub fn token(self) -> usize {
        self.slot as usize * 2 + usize::from(self.rtcp)
    }

    pub fn from_token(token: usize) -> Self {
        SocketRef {
            slot: (token / 2) as Slot,
            rtcp: token % 2 == 1,
        }
    }
}

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
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and cannot fault on any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// At most one keyframe request per source stream within this interval.
const KEYFRAME_COALESCE: std::time::Duration = std::time::Duration::from_millis(500);
/// What a REMB announces when a cap is lifted (10 Mbit/s).
const UNCAPPED_REMB: u64 = 10_000_000;

/// Which stream of a leg each payload type (0–127) belongs to: bit `pt` of `known` says it
/// belongs to one, bit `pt` of `video` which. 32 bytes where a byte per type took 128, and
/// in the leg's first cache lines, next to what every packet reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PtKinds {
    known: u128,
    video: u128,
}

impl PtKinds {
    /// Every payload type belongs to `kind` (a plain leg).
    fn all(kind: MediaKind) -> Self {
        PtKinds {
            known: u128::MAX,
            video: if kind_index(kind) == 1 { u128::MAX } else { 0 },
        }
    }

    /// No payload type belongs anywhere (a bundled leg before its types are named).
    fn none() -> Self {
        PtKinds { known: 0, video: 0 }
    }

    /// Payload type `pt` belongs to stream `k`.
    fn set(&mut self, pt: u8, k: usize) {
        let bit = 1u128 << (pt & 0x7f);
        self.known |= bit;
        if k == 1 {
            self.video |= bit;
        } else {
            self.video &= !bit;
        }
    }

    /// The index of the stream `pt` belongs to, if any.
    #[inline]
    fn get(&self, pt: u8) -> Option<usize> {
        let shift = pt & 0x7f;
        ((self.known >> shift) & 1 == 1).then_some(((self.video >> shift) & 1) as usize)
    }
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

fn kind_of_index(i: usize) -> MediaKind {
    if i == 0 {
        MediaKind::Audio
    } else {
        MediaKind::Video
    }
}

/// One kind of media through a leg: where the peer's packets go, and how what comes in from
/// elsewhere is rewritten before it reaches the peer.
///
/// `repr(C)`, fields in the order a packet touches them: what every packet reads comes first,
/// so that with thousands of legs (every packet a cache miss) it costs few cache lines.
#[derive(Debug)]
#[repr(C)]
struct Stream {
    /// Legs fed by this stream of this leg's peer.
    outputs: Vec<Slot>,
    /// The SSRC the peer last sent on this stream (what a keyframe request names).
    last_in_ssrc: Option<u32>,
    /// A packet arrived since the last tick looked (the media up/down watch).
    heard: bool,
    /// Ticks in a row that found `heard` unset while the stream was up.
    silent_ticks: u8,
    media_up: bool,
    mute_in: bool,
    mute_out: bool,
    /// The peer negotiated generic NACK for this stream (`Command::SetFeedback`).
    nack: bool,
    /// Video towards this leg waits for the new source's keyframe (after a switch).
    hold: Option<VideoCodec>,
    /// The peer negotiated RTX (RFC 4588) for this stream.
    repair: Option<Box<rtx::Repair>>,
    /// The last packets the peer sent, for listeners' NACKs: only while some output of this
    /// stream negotiated NACK (`nack` above), so plain legs neither pay for it nor copy.
    rtx: Option<Box<nack::RtxCache>>,
    egress: Egress,
    /// What the server sends the peer (sender reports towards a listener).
    tx_report: reports::TxReport,
    /// What the server receives from the peer (receiver reports).
    rx: reports::RxStats,
    /// The RTP clock of the negotiated codec (`Feedback::clock_rate`): jitter, sender-report
    /// timestamps and the step at a source change are in its units.
    clock_rate: u32,
    /// Recording of this stream (`Command::Record`): what the peer sends, or what it is sent.
    record: Option<RecordSink>,
    /// This stream's feed.
    source: Option<Slot>,
    /// When a keyframe was last asked of this stream's peer (requests are coalesced).
    last_keyframe_request: Option<Instant>,
}

impl Stream {
    /// Stream `k` (audio, video) at its kind's usual clock until the SDP says otherwise.
    fn new(k: usize) -> Self {
        let clock_rate = reports::default_clock_rate(k);
        Stream {
            outputs: Vec::new(),
            source: None,
            egress: Egress::new(&Default::default(), clock_rate),
            clock_rate,
            last_in_ssrc: None,
            heard: false,
            silent_ticks: 0,
            media_up: false,
            mute_in: false,
            mute_out: false,
            record: None,
            hold: None,
            last_keyframe_request: None,
            rtx: None,
            nack: false,
            repair: None,
            rx: reports::RxStats::default(),
            tx_report: reports::TxReport::default(),
        }
    }
}

/// SRTP state of a secure leg: one context per direction.
struct Srtp {
    rx: SrtpContext,
    tx: SrtpContext,
}

impl Srtp {
    /// Both directions' contexts from one handshake's keys, which share one profile.
    fn new(keys: &SessionKeys) -> Result<Self, SrtpError> {
        if keys.local.profile() != keys.remote.profile() {
            return Err(SrtpError::ProfileMismatch);
        }
        Ok(Srtp {
            rx: SrtpContext::new(&keys.remote)?,
            tx: SrtpContext::new(&keys.local)?,
        })
    }
}

impl std::fmt::Debug for Srtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srtp")
            .field("profile", &self.rx.profile())
            .finish()
    }
}

/// `repr(C)` for the same reason as `Stream`: the fields every packet reads first.
#[derive(Debug)]
#[repr(C)]
struct Leg {
    stats: Arc<LegStats>,
    srtp: Option<Box<Srtp>>,
    /// Speaks SRTP with ICE/DTLS on the slow path.
    secure: bool,
    /// How much of the slow path the peer may still use (secure legs only).
    slow_path: Option<Box<police::SlowPathBudget>>,
    /// Where the peer's packets actually come from (symmetric RTP), once seen.
    latched_rtp: Option<SocketAddr>,
    remote: Remote,
    /// The `bitrate` cap on what the peer sends.
    police: Option<police::TokenBucket>,
    /// The stream each payload type belongs to.
    pt_kinds: PtKinds,
    streams: [Stream; 2],
    latched_rtcp: Option<SocketAddr>,
    reports: reports::LegReports,
    id: LegId,
}

impl Leg {
    fn rtp_dest(&self) -> Option<SocketAddr> {
        self.latched_rtp.or(self.remote.rtp)
    }

    /// RTCP goes to the RTP socket when muxed (RFC 5761), else to the RTCP socket.
    fn rtcp_dest(&self) -> Option<(bool, SocketAddr)> {
        if self.remote.rtcp_mux {
            self.rtp_dest().map(|a| (false, a))
        } else {
            self.latched_rtcp.or(self.remote.rtcp).map(|a| (true, a))
        }
    }
}

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
                let src = slot_of(self, from)?;
                let dst = slot_of(self, to)?;
                let k = kind_index(kind);
                self.disconnect_stream(dst, k);
                if let Some(d) = self.leg_mut(dst) {
                    let stream = &mut d.streams[k];
                    stream.source = Some(src);
                    stream.egress.reconfigure(&rewrite, stream.clock_rate);
                }
                if let Some(s) = self.leg_mut(src) {
                    s.streams[k].outputs.push(dst);
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
    }

    fn leg_mut(&mut self, slot: Slot) -> Option<&mut Leg> {
        self.legs.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// One received datagram: classify, (unprotect), latch, then forward into `tx` or count a
    /// drop. `data` is the receive buffer: SRTP is decrypted in place.
    pub fn handle_datagram(
        &mut self,
        at: SocketRef,
        src: SocketAddr,
        data: &mut [u8],
        tx: &mut TxBatch,
    ) {
        let Some(leg) = self.legs.get_mut(at.slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let class = classify(data);
        let drop = match class {
            Class::Rtp if !at.rtcp => None,
            Class::Rtcp => None,
            Class::Stun | Class::Dtls if leg.secure => {
                // The slow path (ICE-lite, DTLS) lives in control; a copy is fine off the
                // forwarding path, within the leg's budget.
                let admitted = match (&mut leg.slow_path, self.now) {
                    (Some(budget), Some(now)) => budget.admit(now, class == Class::Dtls),
                    _ => true,
                };
                if !admitted {
                    leg.stats.count_drop(DropReason::SlowPathLimit);
                    return;
                }
                bump(&leg.stats.slow_path_packets, 1);
                self.events.push_back(Event::SlowPath {
                    leg: leg.id,
                    from: src,
                    data: data.to_vec(),
                });
                return;
            }
            Class::Stun => Some(DropReason::Stun),
            Class::Dtls => Some(DropReason::Dtls),
            Class::Unknown => Some(DropReason::Unclassified),
            Class::Rtp | Class::Malformed => Some(DropReason::Malformed),
        };
        if let Some(reason) = drop {
            leg.stats.count_drop(reason);
            return;
        }
        if class == Class::Rtcp {
            bump(&leg.stats.rtcp_rx_packets, 1);
            if leg.secure {
                // SRTCP is authenticated and terminated here: sender reports are noted,
                // NACKs answered, keyframe requests reach the stream's source.
                let len = match leg.srtp.as_mut().map(|s| s.rx.unprotect_rtcp(data)) {
                    Some(Ok(len)) => len,
                    None => return leg.stats.count_drop(DropReason::NotSecured),
                    Some(Err(_)) => return leg.stats.count_drop(DropReason::SrtpAuth),
                };
                self.terminated_rtcp(at.slot, &data[..len], tx);
                return;
            }
            if at.rtcp && leg.latched_rtcp != Some(src) {
                leg.latched_rtcp = Some(src);
                self.events.push_back(Event::Latched {
                    leg: leg.id,
                    addr: src,
                    rtcp: true,
                });
            }
            // A listener's feedback cannot pass through (its SSRCs are rewritten): it is
            // answered or translated here.
            if leg.streams.iter().any(|s| s.egress.rewrites_ssrc()) {
                self.terminated_rtcp(at.slot, data, tx);
                return;
            }
            self.note_sender_reports(at.slot, data);
            self.forward_rtcp(at.slot, data, tx);
            return;
        }
        let mut len = if leg.secure {
            match leg.srtp.as_mut().map(|s| s.rx.unprotect_rtp(data)) {
                Some(Ok(len)) => len,
                Some(Err(_)) => {
                    leg.stats.count_drop(DropReason::SrtpAuth);
                    return;
                }
                None => {
                    leg.stats.count_drop(DropReason::NotSecured);
                    return;
                }
            }
        } else {
            data.len()
        };
        let Some(mut header) = RtpHeader::read(&data[..len]) else {
            leg.stats.count_drop(DropReason::Malformed);
            return;
        };
        let Some(k) = leg.pt_kinds.get(header.pt) else {
            leg.stats.count_drop(DropReason::UnknownPt);
            return;
        };
        // RFC 4588: a retransmission the peer sent on its RTX stream becomes the original
        // packet again (its media SSRC is the one last heard on the stream).
        if let Some(repair) = &leg.streams[k].repair
            && let Some(pt) = repair.repaired_pt(header.pt)
        {
            let unwrapped = leg.streams[k]
                .last_in_ssrc
                .and_then(|ssrc| rtx::unwrap(data, len, pt, ssrc));
            let Some(n) = unwrapped else {
                leg.stats.count_drop(DropReason::RtxPadding);
                return;
            };
            len = n;
            header = match RtpHeader::read(&data[..len]) {
                Some(h) => h,
                None => return leg.stats.count_drop(DropReason::Malformed),
            };
        }
        let data = &data[..len];
        if let (Some(bucket), Some(now)) = (&mut leg.police, self.now)
            && !bucket.admit(now, 8 * data.len() as u64)
        {
            leg.stats.count_drop(DropReason::Policed);
            return;
        }
        bump(&leg.stats.rx_packets, 1);
        bump(&leg.stats.rx_bytes, data.len() as u64);
        bump(&leg.stats.rx_kind_packets[k], 1);
        if leg.latched_rtp != Some(src) {
            // Symmetric RTP: answer where the peer really is (NAT), not where its SDP said.
            // On a secure leg only authenticated packets get here.
            leg.latched_rtp = Some(src);
            self.events.push_back(Event::Latched {
                leg: leg.id,
                addr: src,
                rtcp: false,
            });
        }
        let stream = &mut leg.streams[k];
        stream.last_in_ssrc = Some(header.ssrc);
        stream.heard = true;
        stream.rx.on_packet(
            &header,
            reports::arrival_units(self.now, self.epoch, stream.clock_rate),
        );
        if !stream.media_up {
            stream.media_up = true;
            self.events.push_back(Event::MediaUp {
                leg: leg.id,
                kind: kind_of_index(k),
            });
        }
        // Recording tap (what the peer sends, as Janus records it: not while muted).
        if let Some(sink) = &mut stream.record
            && sink.tap() == Tap::Received
            && !stream.mute_in
            && sink.accepts(header.pt)
        {
            sink.push(self.now, data);
        }
        if stream.outputs.is_empty() {
            leg.stats.count_drop(DropReason::NoRoute);
            return;
        }
        if let Some(cache) = &mut stream.rtx {
            cache.insert(self.now, &header, data);
        }
        let mute_in = stream.mute_in;
        // Drops are tallied locally and booked on the source leg after the loop.
        let mut drops = [0u64; DropReason::COUNT];
        // Index loop: `outputs` does not change while forwarding, and each destination is a
        // different table entry than the one borrowed above (or the same, for echo).
        let n_outputs = stream.outputs.len();
        let now = self.now;
        for i in 0..n_outputs {
            let out = self.legs[at.slot as usize]
                .as_ref()
                .map_or(Slot::MAX, |l| l.streams[k].outputs[i]);
            let Some(dst) = self.legs.get_mut(out as usize).and_then(Option::as_mut) else {
                continue;
            };
            let dest = dst.rtp_dest();
            let keyless = dst.secure && dst.srtp.is_none();
            let dst_stream = &mut dst.streams[k];
            if mute_in || dst_stream.mute_out {
                dst_stream.egress.skip(&header);
                drops[DropReason::Muted as usize] += 1;
                continue;
            }
            if let Some(codec) = dst_stream.hold {
                if rtp_payload(data).is_some_and(|p| starts_keyframe(codec, p)) {
                    dst_stream.hold = None;
                } else {
                    // Skipped like a muted packet: the receiver sees no sequence gap.
                    dst_stream.egress.skip(&header);
                    drops[DropReason::WaitingKeyframe as usize] += 1;
                    continue;
                }
            }
            let Some(dest) = dest else {
                drops[DropReason::NoDestination as usize] += 1;
                continue;
            };
            if keyless {
                drops[DropReason::NotSecured as usize] += 1;
                continue;
            }
            let rewritten = match dst_stream.egress.forward(&header) {
                Verdict::Send(h) => h,
                Verdict::UnknownPt => {
                    drops[DropReason::UnknownPt as usize] += 1;
                    continue;
                }
            };
            let via = SocketRef {
                slot: out,
                rtcp: false,
            };
            let srtp = &mut dst.srtp;
            let sent = tx.push(via, dest, data, |buf, len| {
                rewritten.write(buf);
                match srtp {
                    Some(s) => s.tx.protect_rtp(buf, len).ok(),
                    None => Some(len),
                }
            });
            if sent {
                bump(&dst.stats.tx_packets, 1);
                bump(&dst.stats.tx_bytes, data.len() as u64);
                reports::count_sent(&mut dst_stream.tx_report, data.len());
                // Recording tap of a listener: the packet as sent, before SRTP.
                if let Some(sink) = &mut dst_stream.record
                    && sink.tap() == Tap::Sent
                    && sink.accepts(rewritten.pt)
                {
                    sink.push_with(now, data, |buf| rewritten.write(buf));
                }
            } else {
                drops[DropReason::SendFailed as usize] += 1;
            }
        }
        if drops.iter().any(|&n| n != 0)
            && let Some(leg) = self.leg_mut(at.slot)
        {
            for (counter, n) in leg.stats.drops.iter().zip(drops) {
                bump(counter, n);
            }
        }
    }

    /// RTCP from a peer whose RTCP stops here (secure legs, listeners): sender reports are
    /// noted, NACKs answered from the cache, keyframe requests passed on coalesced.
    fn terminated_rtcp(&mut self, slot: Slot, data: &[u8], tx: &mut TxBatch) {
        self.note_sender_reports(slot, data);
        self.handle_nacks(slot, data, tx);
        let source = self.leg_mut(slot).and_then(|l| l.streams[1].source);
        if let Some(source) = source
            && rtcp::requests_keyframe(data)
        {
            self.forward_keyframe_request(source, 1, tx);
        }
    }

    /// RTCP between plain legs of a proxy or echo passes through; towards rewritten streams
    /// (listeners) and secure legs it is terminated here (`reports` regenerates SR/RR).
    fn forward_rtcp(&mut self, slot: Slot, data: &[u8], tx: &mut TxBatch) {
        for k in 0..2 {
            let n = self.legs[slot as usize]
                .as_ref()
                .map_or(0, |l| l.streams[k].outputs.len());
            for i in 0..n {
                let out = self.legs[slot as usize]
                    .as_ref()
                    .map_or(Slot::MAX, |l| l.streams[k].outputs[i]);
                let Some(dst) = self.legs.get_mut(out as usize).and_then(Option::as_mut) else {
                    continue;
                };
                if dst.secure || dst.streams[k].egress.rewrites_ssrc() {
                    continue;
                }
                let Some((rtcp_socket, dest)) = dst.rtcp_dest() else {
                    continue;
                };
                let via = SocketRef {
                    slot: out,
                    rtcp: rtcp_socket,
                };
                if tx.push(via, dest, data, |_, len| Some(len)) {
                    bump(&dst.stats.rtcp_tx_packets, 1);
                }
            }
        }
    }
}
