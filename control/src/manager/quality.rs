//! Media quality as control drives it: bitrate caps and media up/down.
//!
//! - Bitrate: a session's `bitrate` (bps) and, for a publisher, its room's `room_bitrate`
//!   (kbps) give one effective cap (the lower of the two that are set). It goes to the data
//!   plane as `Command::SetBitrate` on each of the session's own legs (what its peer sends:
//!   REMB towards WebRTC senders, policing everywhere) at once when it changes, and again every
//!   second while it is non-zero, because the data plane re-sends the REMB on each repeat.
//! - Media status: every stream (leg, kind) of a session is watched through the leg's
//!   per-kind receive counter. A stream that was up and received nothing for
//!   [`MEDIA_SILENCE`] (looked at every [`MEDIA_CHECK`], so reported 2 to 3 s after the last
//!   packet) is reported `status {class:"media", media, status:"down"}`; the first
//!   packet after that reports `up` again. `Event::MediaUp` (the data plane's first packet) and
//!   the counters feed the same state, so each transition is reported exactly once.
//! - RTCP: every [`RTCP_TICK`] each worker gets `Command::RtcpTick` (receiver reports to
//!   publishers, translated sender reports to listeners, the NACK-rate check); a listener
//!   whose NACKs named more than 5 % of what it was sent in that second is reported
//!   `status {class:"slow_link", media, nacks, packets}` (`Event::SlowLink`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_dataplane::api::{Command, LegId, LegStats, MediaKind, VideoCodec};

use super::Manager;
use super::session::{Kind, Leg, Session};
use crate::errors::ApiError;
use crate::sdp::CodecName;

/// How often a non-zero cap is sent again (REMB "every second").
pub const BITRATE_REPEAT: Duration = Duration::from_secs(1);
/// How often the data plane's RTCP reports (and slow-link checks) run.
pub const RTCP_TICK: Duration = Duration::from_secs(1);
/// How often receive counters are looked at.
pub const MEDIA_CHECK: Duration = Duration::from_millis(500);
/// Silence after which a stream that was up is reported down.
pub const MEDIA_SILENCE: Duration = Duration::from_secs(2);

/// When the periodic quality work is next due (driven by the actor's tick).
#[derive(Debug)]
pub struct QualityClock {
    next_bitrate: Instant,
    next_media: Instant,
    next_rtcp: Instant,
}

impl QualityClock {
    pub fn new(now: Instant) -> Self {
        QualityClock {
            next_bitrate: now + BITRATE_REPEAT,
            next_media: now + MEDIA_CHECK,
            next_rtcp: now + RTCP_TICK,
        }
    }
}

/// The receive side of one stream of a session, as last seen.
#[derive(Clone, Debug)]
pub struct RxWatch {
    pub leg: LegId,
    pub kind: MediaKind,
    stats: Arc<LegStats>,
    /// The leg's receive counter for `kind` when last looked at.
    count: u64,
    /// When that counter last moved.
    last_rx: Instant,
    pub up: bool,
}

/// One watch per distinct (leg, kind) of `legs` (a bundled leg carries several kinds).
pub fn watches_for(legs: &[Leg]) -> Vec<RxWatch> {
    let now = Instant::now();
    let mut out: Vec<RxWatch> = Vec::with_capacity(legs.len());
    for l in legs {
        if out.iter().any(|w| w.leg == l.info.id && w.kind == l.kind) {
            continue;
        }
        out.push(RxWatch {
            leg: l.info.id,
            kind: l.kind,
            stats: l.info.stats.clone(),
            count: 0,
            last_rx: now,
            up: false,
        });
    }
    out
}

/// What a watch saw when looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl RxWatch {
    /// Compares the counter with the last look: `Up` when packets arrive on a stream that was
    /// not up, `Down` when a stream that was up has been silent for `silence`.
    pub fn observe(&mut self, count: u64, now: Instant, silence: Duration) -> Option<Transition> {
        if count != self.count {
            self.count = count;
            self.last_rx = now;
            if !self.up {
                self.up = true;
                return Some(Transition::Up);
            }
            return None;
        }
        if self.up && now.saturating_duration_since(self.last_rx) >= silence {
            self.up = false;
            return Some(Transition::Down);
        }
        None
    }

    /// The data plane saw the stream's first packet (`Event::MediaUp`).
    pub fn media_up(&mut self, now: Instant) -> Option<Transition> {
        if self.up {
            return None;
        }
        self.up = true;
        self.last_rx = now;
        Some(Transition::Up)
    }
}

/// The lower of two caps, 0 meaning none.
pub fn min_cap(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// The data plane's keyframe detector for a room's video codec (none for others).
pub fn video_codec(name: CodecName) -> Option<VideoCodec> {
    match name {
        CodecName::Vp8 => Some(VideoCodec::Vp8),
        CodecName::Vp9 => Some(VideoCodec::Vp9),
        CodecName::H264 => Some(VideoCodec::H264),
        _ => None,
    }
}

fn media_status(kind: MediaKind, t: Transition) -> Value {
    let status = match t {
        Transition::Up => "up",
        Transition::Down => "down",
    };
    json!({"class": "media", "media": kind.as_str(), "status": status})
}

impl Manager {
    /// The room cap (kbps) that applies to a session: its room's, for a publisher.
    fn room_cap_kbps(&self, s: &Session) -> Option<u64> {
        match &s.kind {
            Kind::Publish { room } => self.rooms.get(room).map(|r| r.bitrate),
            _ => None,
        }
    }

    /// The cap (bps, 0 = none) on what the session's peer sends.
    pub(super) fn effective_bitrate(&self, s: &Session) -> u64 {
        let room = self.room_cap_kbps(s).unwrap_or(0).saturating_mul(1000);
        min_cap(s.media.bitrate, room)
    }

    /// Sends the session's effective cap to each of its legs (a bundled leg once). With
    /// `force` false, only when it differs from what was last sent.
    pub(super) fn push_bitrate(&mut self, id: &str, force: bool) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        let bps = self.effective_bitrate(s);
        if !force && bps == s.bitrate_sent {
            return;
        }
        let mut sent: Vec<LegId> = Vec::with_capacity(s.legs.len());
        for l in &s.legs {
            if !sent.contains(&l.info.id) {
                sent.push(l.info.id);
                // A failure is logged by `send`; the next repeat tries again.
                let _ = self.send(Command::SetBitrate {
                    leg: l.info.id,
                    bps,
                });
            }
        }
        if let Some(s) = self.sessions.get_mut(id) {
            s.bitrate_sent = bps;
        }
    }

    /// `get_info`, with the effective bitrate (bps) and the room's cap (kbps) where one applies.
    pub(super) fn session_info(&self, id: &str) -> Result<Value, ApiError> {
        let s = self.session(id)?;
        let mut info = s.info();
        info["bitrate"] = json!(self.effective_bitrate(s));
        let room = s.kind.room().and_then(|r| self.rooms.get(r));
        if let Some(r) = room {
            info["room_bitrate"] = json!(r.bitrate);
        }
        Ok(info)
    }

    /// `Event::MediaUp`: reported unless the counters got there first.
    pub(super) fn media_up(&mut self, leg: LegId, kind: MediaKind) {
        let Some(id) = self.leg_owner.get(&leg).cloned() else {
            return;
        };
        let now = Instant::now();
        let t = self.sessions.get_mut(&id).and_then(|s| {
            s.rx.iter_mut()
                .find(|w| w.leg == leg && w.kind == kind)
                .and_then(|w| w.media_up(now))
        });
        if let Some(t) = t {
            self.emit_session(&id, "status", media_status(kind, t));
        }
    }

    /// `Event::SlowLink`: the session's peer asks for many retransmissions.
    pub(super) fn slow_link(&mut self, leg: LegId, nacks: u64, packets: u64) {
        let Some(id) = self.leg_owner.get(&leg).cloned() else {
            return;
        };
        let media: Vec<&str> = self
            .sessions
            .get(&id)
            .map(|s| {
                s.legs
                    .iter()
                    .filter(|l| l.info.id == leg)
                    .map(|l| l.kind.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let body =
            json!({"class": "slow_link", "media": media, "nacks": nacks, "packets": packets});
        self.emit_session(&id, "status", body);
    }

    /// The actor's periodic quality work: bitrate repeats and the media up/down watch.
    pub(super) fn quality_tick(&mut self) {
        let now = Instant::now();
        if now >= self.quality.next_bitrate {
            self.quality.next_bitrate = now + BITRATE_REPEAT;
            let mut capped: Vec<String> = self
                .sessions
                .values()
                .filter(|s| self.effective_bitrate(s) != 0 || s.bitrate_sent != 0)
                .map(|s| s.id.clone())
                .collect();
            capped.sort();
            for id in capped {
                self.push_bitrate(&id, true);
            }
        }
        if now >= self.quality.next_rtcp {
            self.quality.next_rtcp = now + RTCP_TICK;
            let wallclock = std::time::SystemTime::now();
            for worker in 0..self.dp.workers() {
                // A failure is logged by `send`; the next tick tries again.
                let _ = self.send(Command::RtcpTick { worker, wallclock });
            }
        }
        if now >= self.quality.next_media {
            self.quality.next_media = now + MEDIA_CHECK;
            self.watch_media(now);
        }
    }

    fn watch_media(&mut self, now: Instant) {
        let mut events = Vec::new();
        for (id, s) in &mut self.sessions {
            for w in &mut s.rx {
                let count = w.stats.rx_kind_packets[w.kind.index()].load(Ordering::Relaxed);
                if let Some(t) = w.observe(count, now, MEDIA_SILENCE) {
                    events.push((id.clone(), media_status(w.kind, t)));
                }
            }
        }
        events.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, body) in events {
            self.emit_session(&id, "status", body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(now: Instant) -> RxWatch {
        RxWatch {
            leg: LegId(1),
            kind: MediaKind::Audio,
            stats: Arc::new(LegStats::default()),
            count: 0,
            last_rx: now,
            up: false,
        }
    }

    #[test]
    fn caps_combine_ignoring_zero() {
        assert_eq!(min_cap(0, 0), 0);
        assert_eq!(min_cap(64_000, 0), 64_000);
        assert_eq!(min_cap(0, 128_000), 128_000);
        assert_eq!(min_cap(300_000, 128_000), 128_000);
    }

    #[test]
    fn streams_go_down_after_silence_and_up_once_on_resume() {
        let t0 = Instant::now();
        let s = Duration::from_secs(2);
        let mut w = watch(t0);
        assert_eq!(
            w.observe(0, t0 + Duration::from_secs(5), s),
            None,
            "never up"
        );
        assert_eq!(
            w.observe(3, t0 + Duration::from_secs(6), s),
            Some(Transition::Up)
        );
        assert_eq!(w.observe(9, t0 + Duration::from_secs(7), s), None);
        assert_eq!(w.observe(9, t0 + Duration::from_millis(8500), s), None);
        assert_eq!(
            w.observe(9, t0 + Duration::from_secs(9), s),
            Some(Transition::Down)
        );
        assert_eq!(w.observe(9, t0 + Duration::from_secs(12), s), None, "once");
        assert_eq!(
            w.observe(10, t0 + Duration::from_secs(13), s),
            Some(Transition::Up)
        );
    }

    #[test]
    fn media_up_event_and_counters_report_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs(2);
        let mut w = watch(t0);
        assert_eq!(w.media_up(t0), Some(Transition::Up));
        assert_eq!(w.observe(1, t0 + Duration::from_millis(500), s), None);
        assert_eq!(w.media_up(t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn room_video_codecs_map_to_keyframe_detectors() {
        assert_eq!(video_codec(CodecName::Vp8), Some(VideoCodec::Vp8));
        assert_eq!(video_codec(CodecName::H264), Some(VideoCodec::H264));
        assert_eq!(video_codec(CodecName::Av1), None);
    }
}
