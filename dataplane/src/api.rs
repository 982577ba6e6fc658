//! The narrow waist between `control` and the data plane: plain owned values.
//!
//! `control` opens *legs* (one UDP port pair for one media stream of one session), connects them
//! (`Connect { from, to }` = forward what `from`'s peer sends to `to`'s peer) and reads their
//! counters. Workers report [`Event`]s back. Nothing here knows JSON or SDP.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::record::{
    DataSink, RecordSink, RecordSpec, RecordState, Recording, RecordingSnapshot, RecordingStats,
    Tap,
};

/// Identifies a leg across the whole data plane. The top 16 bits name the owning worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

impl LegId {
    pub(crate) fn new(worker: usize, seq: u64) -> Self {
        LegId(((worker as u64) << 48) | (seq & 0xFFFF_FFFF_FFFF))
    }

    /// Index of the worker that owns this leg.
    pub fn worker(self) -> usize {
        (self.0 >> 48) as usize
    }
}

/// Where a leg lives: a group's legs share one worker. Legs that forward to each other
/// usually share one (an echo session, a proxy pair), so a packet never leaves its thread;
/// a room's legs may spread over workers ([`crate::Dataplane::spread_group`]), the
/// publisher's worker then hands its decrypted packets to theirs (`crate::mirror`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GroupId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// 0 for audio, 1 for video: the index of per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            MediaKind::Audio => 0,
            MediaKind::Video => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// Synchronisation source identifier (RFC 3550 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ssrc(pub u32);

/// As SDP and logs write it: the decimal number.
impl std::fmt::Display for Ssrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// RTP payload type (7 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pt(pub u8);

/// Video codecs whose keyframes the data plane recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
}

/// Which I/O backend the workers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// io_uring where the kernel allows it, else mmsg.
    Auto,
    Uring,
    Mmsg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Uring,
    Mmsg,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Mmsg => "mmsg",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Address media sockets bind to.
    pub media_ip: IpAddr,
    /// Inclusive UDP port range; RTP takes even ports, RTCP the odd one above.
    pub port_lo: u16,
    pub port_hi: u16,
    /// Number of worker threads (each pinned to a core when `pin` is set).
    pub workers: usize,
    pub io: IoMode,
    pub pin: bool,
    /// io_uring only: once traffic arrives in bursts, wait up to this long for more datagrams
    /// before handling a round, so one wake-up and one submit serve many packets. Zero turns
    /// it off; it bounds the latency added.
    pub batch_wait: std::time::Duration,
    /// Where the kernel lets us (BPF sk_lookup: Linux 5.9+, CAP_NET_ADMIN and CAP_BPF),
    /// deliver every datagram for a worker's ports to one socket of that worker, so that many
    /// calls cost one receive, not one each (either backend). Where it cannot, legs receive on their
    /// own sockets, as with `false`.
    pub steer: bool,
    /// Where the kernel lets us (CAP_NET_RAW + CAP_NET_ADMIN), send every leg's datagrams
    /// through raw sockets, one per worker and address family, headers written here with the
    /// leg's own address and port, so that many calls cost one hot socket, not one each.
    /// Multicast, large datagrams and GSO runs still leave from the leg's socket, as
    /// everything does with `false`.
    pub raw_send: bool,
}

/// Where a leg sends, as learnt from the peer's SDP. `None` means "only after latching".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Remote {
    pub rtp: Option<SocketAddr>,
    pub rtcp: Option<SocketAddr>,
    /// RTCP shares the RTP port (RFC 5761).
    pub rtcp_mux: bool,
}

#[derive(Clone, Debug)]
pub struct LegSpec {
    pub group: GroupId,
    /// The kind a plain leg carries (a bundled leg's kinds come from `bundle`).
    pub kind: MediaKind,
    pub remote: Remote,
    /// SRTP with ICE and DTLS on the slow path (WebRTC); plain RTP when false.
    pub secure: bool,
    /// BUNDLE (RFC 8843): which payload types carry which kind. Empty for a plain leg.
    pub bundle: Vec<(Pt, MediaKind)>,
}

impl LegSpec {
    /// A plain RTP leg for one kind of media.
    pub fn plain(group: GroupId, kind: MediaKind, remote: Remote) -> Self {
        LegSpec {
            group,
            kind,
            remote,
            secure: false,
            bundle: Vec::new(),
        }
    }
}

/// What `open_leg` returns: the local ports to announce and the leg's live counters.
#[derive(Clone, Debug)]
pub struct LegInfo {
    pub id: LegId,
    pub local_ip: IpAddr,
    pub rtp_port: u16,
    pub rtcp_port: u16,
    pub stats: Arc<LegStats>,
}

/// How packets are rewritten on their way from one leg to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Payload type translation (source leg's number → destination leg's number). Packets whose
    /// payload type is not listed pass unchanged when the list is empty, and are dropped
    /// (`DropReason::UnknownPt`) otherwise.
    pub pt_map: Vec<(Pt, Pt)>,
    /// Fixed outgoing SSRC (listeners see one stream whatever the publisher); `None` keeps the
    /// sender's SSRC.
    pub ssrc: Option<Ssrc>,
}

/// What a leg's peer negotiated for one kind of media: the codec's RTP clock, RTCP feedback
/// and retransmission. The default (nothing negotiated) is what a plain RTP/AVP peer of an
/// Opus or video codec gets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Feedback {
    /// The RTP clock rate of the negotiated codec, from its `a=rtpmap` (8000 for PCMU, PCMA
    /// and G.722, 48000 for Opus, 90000 for video): the unit of jitter, sender-report
    /// timestamps and the timestamp step at a source change. 0 = the kind's usual rate
    /// (48 kHz audio, 90 kHz video).
    pub clock_rate: u32,
    /// The peer negotiated generic NACK (`a=rtcp-fb:PT nack`, RFC 4585 §4.2): its NACKs are
    /// answered from the source's retransmission cache, which exists only while some
    /// destination of the source stream negotiated this.
    pub nack: bool,
    /// RTX (RFC 4588) as the peer's SDP numbers it: `(media PT, RTX PT)` pairs
    /// (`a=fmtp:RTX apt=MEDIA`). The peer's RTX packets are unwrapped to its media stream.
    pub rtx_pts: Vec<(Pt, Pt)>,
    /// The RTX SSRC the server announced towards the peer (`a=ssrc-group:FID`): with it,
    /// the peer's NACKs are answered as RTX packets from this SSRC.
    pub rtx_ssrc: Option<Ssrc>,
}

/// Commands from control to the worker owning the leg(s) (for `Connect`, the destination's).
#[derive(Debug)]
pub enum Command {
    /// Update where the leg sends (e.g. after `set_answer`). Latching still overrides it.
    SetRemote { leg: LegId, remote: Remote },
    /// Forward what `from`'s peer sends to `to`'s peer. A leg has at most one source, so this
    /// replaces `to`'s previous source (a listener switch): the destination's sequence numbers
    /// and timestamps continue without a jump.
    Connect {
        from: LegId,
        to: LegId,
        kind: MediaKind,
        rewrite: Rewrite,
    },
    /// Stop feeding `to`.
    Disconnect { to: LegId },
    /// What the leg's peer negotiated for its `kind` stream (clock rate, NACK, RTX). Sent
    /// once the peer's SDP is known, before or after the stream's routes are connected.
    SetFeedback {
        leg: LegId,
        kind: MediaKind,
        feedback: Feedback,
    },
    /// `mute_in`: drop media coming from this leg's peer; `mute_out`: drop media going to it.
    /// Receivers see contiguous sequence numbers either way.
    SetMute {
        leg: LegId,
        /// `None`: every kind the leg carries.
        kind: Option<MediaKind>,
        mute_in: bool,
        mute_out: bool,
    },
    /// Keys from the DTLS handshake: the leg starts (un)protecting SRTP.
    SetSrtp {
        leg: LegId,
        keys: Box<crate::srtp::SessionKeys>,
    },
    /// Start (`Some`) or stop (`None`) recording one kind of media of the leg: its packets are
    /// copied into the sink (see [`crate::record`]). Replacing or dropping a sink closes that
    /// recording, and so does closing the leg.
    Record {
        leg: LegId,
        kind: MediaKind,
        sink: Option<RecordSink>,
    },
    /// Cap what the leg's peer sends, in bits per second (0 = unlimited): a token bucket
    /// drops what exceeds the cap by more than a burst allowance (`DropReason::Policed`), and
    /// an RTCP REMB (draft-alvestrand-rmcat-remb) naming the SSRCs last heard asks the sender
    /// to stay below it; the data plane repeats it every tick while the cap holds. Sending
    /// the same value again re-sends the REMB without resetting the bucket.
    SetBitrate { leg: LegId, bps: u64 },
    /// After a switch, drop the video going to `to` until the new source sends a keyframe
    /// (`DropReason::WaitingKeyframe`), so the receiver never decodes a broken picture.
    HoldForKeyframe { to: LegId, codec: VideoCodec },
    /// Ask the leg's peer for a keyframe of its `kind` stream: an RTCP PLI (RFC 4585 §6.3.1)
    /// naming the SSRC last received on that stream (SRTCP on a secure leg).
    RequestKeyframe { leg: LegId, kind: MediaKind },
    /// Send a slow-path datagram (STUN response, DTLS record) from the leg's RTP socket.
    Transmit {
        leg: LegId,
        to: SocketAddr,
        data: Vec<u8>,
    },
}

/// Data-plane ticks (one a second) in a row without a packet after which an up stream is
/// reported down.
pub const MEDIA_SILENT_TICKS: u8 = 2;

/// Reports from workers to control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The first valid RTP packet arrived from the leg's peer.
    MediaUp { leg: LegId, kind: MediaKind },
    /// A stream that was up received nothing for [`MEDIA_SILENT_TICKS`] ticks in a row (2 to
    /// 3 s); its next packet reports `MediaUp` again.
    MediaDown { leg: LegId, kind: MediaKind },
    /// The peer's packets now come from (or RTCP from) this address.
    Latched {
        leg: LegId,
        addr: SocketAddr,
        rtcp: bool,
    },
    /// Since the previous tick, the leg's peer asked for more than 5 % of the packets
    /// it was sent to be retransmitted (`nacks` sequence numbers for `packets` sent).
    SlowLink {
        leg: LegId,
        nacks: u64,
        packets: u64,
    },
    /// `Command::SetSrtp` gave keys the leg cannot use: it stays unsecured (its SRTP is
    /// dropped as [`DropReason::NotSecured`]) until usable keys arrive.
    SrtpRefused {
        leg: LegId,
        error: crate::srtp::SrtpError,
    },
    /// A leg's closing finished (`Dataplane::start_close` or `close_leg`): its sockets are
    /// closed and its ports back in the pool.
    LegClosed { leg: LegId },
    /// A STUN or DTLS datagram on a secure leg, for the slow path.
    SlowPath {
        leg: LegId,
        from: SocketAddr,
        data: Vec<u8>,
    },
}

/// Why a datagram was not forwarded. Counted per leg, never an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than any valid header, or a header that does not parse.
    Malformed = 0,
    /// First byte outside every RFC 7983 range.
    Unclassified,
    /// STUN on a plain leg (only a secure leg runs ICE).
    Stun,
    /// DTLS on a plain leg (only a secure leg runs DTLS-SRTP).
    Dtls,
    /// The kind of media is muted towards its destination.
    Muted,
    /// The leg has nowhere to forward to (e.g. a listener's own uplink).
    NoRoute,
    /// Payload type not negotiated between the legs.
    UnknownPt,
    /// Peer address still unknown (nothing in the SDP, nothing latched yet).
    NoDestination,
    /// The send batch or the kernel refused the packet.
    SendFailed,
    /// Larger than the receive buffer: truncated by the kernel.
    Truncated,
    /// SRTP on a secure leg before its DTLS handshake gave keys.
    NotSecured,
    /// SRTP/SRTCP authentication or replay check failed.
    SrtpAuth,
    /// Above the leg's bitrate cap (token bucket).
    Policed,
    /// Video held after a switch until the new source's keyframe.
    WaitingKeyframe,
    /// An RTX packet without an original packet in it (padding, e.g. a bandwidth probe).
    RtxPadding,
    /// STUN or DTLS beyond what one leg's peer may hand the slow path (a token bucket per
    /// kind: a flood at one port cannot load the control plane).
    SlowPathLimit,
    /// The ring carrying a publisher's packets to another worker's listeners was full (that
    /// worker is behind): counted on the publisher's leg.
    WorkerRing,
}

impl DropReason {
    pub const COUNT: usize = 17;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Unclassified,
        DropReason::Stun,
        DropReason::Dtls,
        DropReason::Muted,
        DropReason::NoRoute,
        DropReason::UnknownPt,
        DropReason::NoDestination,
        DropReason::SendFailed,
        DropReason::Truncated,
        DropReason::NotSecured,
        DropReason::SrtpAuth,
        DropReason::Policed,
        DropReason::WaitingKeyframe,
        DropReason::RtxPadding,
        DropReason::SlowPathLimit,
        DropReason::WorkerRing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Unclassified => "unclassified",
            DropReason::Stun => "stun",
            DropReason::Dtls => "dtls",
            DropReason::Muted => "muted",
            DropReason::NoRoute => "no_route",
            DropReason::UnknownPt => "unknown_pt",
            DropReason::NoDestination => "no_destination",
            DropReason::SendFailed => "send_failed",
            DropReason::Truncated => "truncated",
            DropReason::NotSecured => "not_secured",
            DropReason::SrtpAuth => "srtp_auth",
            DropReason::Policed => "policed",
            DropReason::WaitingKeyframe => "waiting_keyframe",
            DropReason::RtxPadding => "rtx_padding",
            DropReason::SlowPathLimit => "slow_path_limit",
            DropReason::WorkerRing => "worker_ring",
        }
    }
}

/// How much of its time a worker spent waiting for work, since it started. Written by the
/// worker alone, once per wait (single writer: relaxed load + store), read by anyone.
#[derive(Debug)]
pub struct WorkerLoad {
    started: std::time::Instant,
    idle_ns: AtomicU64,
}

impl WorkerLoad {
    pub(crate) fn new() -> Self {
        WorkerLoad {
            started: std::time::Instant::now(),
            idle_ns: AtomicU64::new(0),
        }
    }

    /// A wait that began at `since` just ended; returns now (the driver's clock for the round).
    pub(crate) fn waited(&self, since: std::time::Instant) -> std::time::Instant {
        let now = std::time::Instant::now();
        let ns = now.saturating_duration_since(since).as_nanos() as u64;
        let idle = self.idle_ns.load(Ordering::Relaxed);
        self.idle_ns.store(idle.wrapping_add(ns), Ordering::Relaxed);
        now
    }

    /// (time busy, time alive), both since the worker started.
    pub fn busy(&self) -> (std::time::Duration, std::time::Duration) {
        let alive = self.started.elapsed();
        let idle = std::time::Duration::from_nanos(self.idle_ns.load(Ordering::Relaxed));
        (alive.saturating_sub(idle), alive)
    }
}

/// Live counters of one leg. Written by the owning worker only (single writer: relaxed load +
/// store, no read-modify-write), read by anyone.
#[derive(Debug, Default)]
pub struct LegStats {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rtcp_rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rtcp_tx_packets: AtomicU64,
    /// STUN and DTLS datagrams handed to the slow path.
    pub slow_path_packets: AtomicU64,
    /// RTP packets received per kind (audio, video): a bundled leg carries both.
    pub rx_kind_packets: [AtomicU64; 2],
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Sequence numbers the peer asked to be retransmitted (RTCP generic NACK).
    pub nack_received: AtomicU64,
    /// Packets resent to the peer from the source's retransmission cache.
    pub retransmitted: AtomicU64,
    /// Sequence numbers the cache lacked, asked of the source (translated) instead.
    pub nack_forwarded: AtomicU64,
    /// Drops counted by other workers while fanning this leg's packets out to their
    /// listeners (a room across workers): a row per worker, each written by that worker
    /// alone, made when the first shadow of the leg is.
    elsewhere: std::sync::OnceLock<Box<[[AtomicU64; DropReason::COUNT]]>>,
}

/// A point-in-time copy of [`LegStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rtcp_rx_packets: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rtcp_tx_packets: u64,
    pub slow_path_packets: u64,
    /// Indexed by `MediaKind::index()`.
    pub rx_kind_packets: [u64; 2],
    pub drops: [u64; DropReason::COUNT],
    pub nack_received: u64,
    pub retransmitted: u64,
    pub nack_forwarded: u64,
}

impl StatsSnapshot {
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
}

impl LegStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            rx_packets: l(&self.rx_packets),
            rx_bytes: l(&self.rx_bytes),
            rtcp_rx_packets: l(&self.rtcp_rx_packets),
            tx_packets: l(&self.tx_packets),
            tx_bytes: l(&self.tx_bytes),
            rtcp_tx_packets: l(&self.rtcp_tx_packets),
            slow_path_packets: l(&self.slow_path_packets),
            rx_kind_packets: [l(&self.rx_kind_packets[0]), l(&self.rx_kind_packets[1])],
            drops: std::array::from_fn(|i| {
                let elsewhere = self.elsewhere.get().map_or(0, |rows| {
                    rows.iter().map(|r| l(&r[i])).fold(0, u64::wrapping_add)
                });
                l(&self.drops[i]).wrapping_add(elsewhere)
            }),
            nack_received: l(&self.nack_received),
            retransmitted: l(&self.retransmitted),
            nack_forwarded: l(&self.nack_forwarded),
        }
    }

    /// Where worker `worker` (one of `workers`) counts the drops of this leg's packets it
    /// fans out; the first call makes the rows (a command, never a packet, comes first).
    pub(crate) fn drops_elsewhere(
        &self,
        worker: usize,
        workers: usize,
    ) -> &[AtomicU64; DropReason::COUNT] {
        let rows = self.elsewhere.get_or_init(|| {
            (0..workers.max(worker + 1))
                .map(|_| Default::default())
                .collect()
        });
        &rows[worker.min(rows.len() - 1)]
    }

    pub(crate) fn count_drop(&self, reason: DropReason) {
        bump(&self.drops[reason as usize], 1);
    }
}

/// Single-writer increment: no locked instruction on the packet path.
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no free media port in the configured range")]
    PortsExhausted,
    #[error("unknown leg {0:?}")]
    UnknownLeg(LegId),
    #[error("worker {0} is not running")]
    WorkerGone(usize),
    #[error("worker {0} is overloaded: its command queue is full")]
    QueueFull(usize),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
