//! A leg and its two streams: what the forwarder keeps per UDP port pair and per kind of
//! media, laid out for the packet path (`repr(C)`, what every packet reads first).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{Slot, nack, police, reports, rtx};
use crate::api::{LegId, LegStats, MediaKind, Remote, VideoCodec};
use crate::egress::Egress;
use crate::record::RecordSink;
use crate::srtp::{SessionKeys, SrtpContext, SrtpError};

/// Which stream of a leg each payload type (0–127) belongs to: bit `pt` of `known` says it
/// belongs to one, bit `pt` of `video` which. 32 bytes where a byte per type took 128, and
/// in the leg's first cache lines, next to what every packet reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PtKinds {
    pub(super) known: u128,
    pub(super) video: u128,
}

impl PtKinds {
    /// Every payload type belongs to `kind` (a plain leg).
    pub(super) fn all(kind: MediaKind) -> Self {
        PtKinds {
            known: u128::MAX,
            video: if kind_index(kind) == 1 { u128::MAX } else { 0 },
        }
    }

    /// No payload type belongs anywhere (a bundled leg before its types are named).
    pub(super) fn none() -> Self {
        PtKinds { known: 0, video: 0 }
    }

    /// Payload type `pt` belongs to stream `k`.
    pub(super) fn set(&mut self, pt: u8, k: usize) {
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
    pub(super) fn get(&self, pt: u8) -> Option<usize> {
        let shift = pt & 0x7f;
        ((self.known >> shift) & 1 == 1).then_some(((self.video >> shift) & 1) as usize)
    }
}

pub(super) fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

pub(super) fn kind_of_index(i: usize) -> MediaKind {
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
pub(super) struct Stream {
    /// Legs fed by this stream of this leg's peer.
    pub(super) outputs: Vec<Slot>,
    /// Other workers whose listeners this stream feeds: (worker, how many listeners).
    pub(super) mirrors: Vec<(u16, u32)>,
    /// The SSRC the peer last sent on this stream (what a keyframe request names).
    pub(super) last_in_ssrc: Option<u32>,
    /// A packet arrived since the last tick looked (the media up/down watch).
    pub(super) heard: bool,
    /// Ticks in a row that found `heard` unset while the stream was up.
    pub(super) silent_ticks: u8,
    pub(super) media_up: bool,
    pub(super) mute_in: bool,
    pub(super) mute_out: bool,
    /// The peer negotiated generic NACK for this stream (`Command::SetFeedback`).
    pub(super) nack: bool,
    /// Video towards this leg waits for the new source's keyframe (after a switch).
    pub(super) hold: Option<VideoCodec>,
    /// The peer negotiated RTX (RFC 4588) for this stream.
    pub(super) repair: Option<Box<rtx::Repair>>,
    /// The last packets the peer sent, for listeners' NACKs: only while some output of this
    /// stream negotiated NACK (`nack` above), so plain legs neither pay for it nor copy.
    pub(super) rtx: Option<Box<nack::RtxCache>>,
    pub(super) egress: Egress,
    /// What the server sends the peer (sender reports towards a listener).
    pub(super) tx_report: reports::TxReport,
    /// What the server receives from the peer (receiver reports).
    pub(super) rx: reports::RxStats,
    /// The RTP clock of the negotiated codec (`Feedback::clock_rate`): jitter, sender-report
    /// timestamps and the step at a source change are in its units.
    pub(super) clock_rate: u32,
    /// Recording of this stream (`Command::Record`): what the peer sends, or what it is sent.
    pub(super) record: Option<RecordSink>,
    /// This stream's feed.
    pub(super) source: Option<Slot>,
    /// When a keyframe was last asked of this stream's peer (requests are coalesced).
    pub(super) last_keyframe_request: Option<Instant>,
}

impl Stream {
    /// Stream `k` (audio, video) at its kind's usual clock until the SDP says otherwise.
    pub(super) fn new(k: usize) -> Self {
        let clock_rate = reports::default_clock_rate(k);
        Stream {
            outputs: Vec::new(),
            mirrors: Vec::new(),
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
pub(super) struct Srtp {
    pub(super) rx: SrtpContext,
    pub(super) tx: SrtpContext,
}

impl Srtp {
    /// Both directions' contexts from one handshake's keys, which share one profile.
    pub(super) fn new(keys: &SessionKeys) -> Result<Self, SrtpError> {
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
pub(super) struct Leg {
    pub(super) stats: Arc<LegStats>,
    pub(super) srtp: Option<Box<Srtp>>,
    /// Speaks SRTP with ICE/DTLS on the slow path.
    pub(super) secure: bool,
    /// How much of the slow path the peer may still use (secure legs only).
    pub(super) slow_path: Option<Box<police::SlowPathBudget>>,
    /// Where the peer's packets actually come from (symmetric RTP), once seen.
    pub(super) latched_rtp: Option<SocketAddr>,
    pub(super) remote: Remote,
    /// The `bitrate` cap on what the peer sends.
    pub(super) police: Option<police::TokenBucket>,
    /// The stream each payload type belongs to.
    pub(super) pt_kinds: PtKinds,
    pub(super) streams: [Stream; 2],
    pub(super) latched_rtcp: Option<SocketAddr>,
    pub(super) reports: reports::LegReports,
    pub(super) id: LegId,
}

impl Leg {
    pub(super) fn rtp_dest(&self) -> Option<SocketAddr> {
        self.latched_rtp.or(self.remote.rtp)
    }

    /// RTCP goes to the RTP socket when muxed (RFC 5761), else to the RTCP socket.
    pub(super) fn rtcp_dest(&self) -> Option<(bool, SocketAddr)> {
        if self.remote.rtcp_mux {
            self.rtp_dest().map(|a| (false, a))
        } else {
            self.latched_rtcp.or(self.remote.rtcp).map(|a| (true, a))
        }
    }
}
