//! Media quality as control drives it: bitrate caps and media up/down.
//!
//! - Bitrate: a session's `bitrate` (bps) and, for a publisher, its room's `room_bitrate`
//!   (kbps) give one effective cap (the lower of the two that are set). It goes to the data
//!   plane as `Command::SetBitrate` on each of the session's own legs (what its peer sends:
//!   REMB towards WebRTC senders, policing everywhere) when it changes; the data plane repeats
//!   the REMB on its own tick while the cap holds.
//! - Media status: the data plane watches every stream (leg, kind) of a session on its own
//!   tick (one a second): the first packet reports `Event::MediaUp`, and a stream that was up and heard
//!   nothing for [`MEDIA_SILENT_TICKS`](sluice_dataplane::api::MEDIA_SILENT_TICKS) ticks
//!   (one a second, so 2 to 3 s after the last packet) `Event::MediaDown`. Each becomes
//!   `status {class:"media", media, status}` on the session, `up` or `down`, once per
//!   transition of a stream the session negotiated.
//! - Slow links: on the same tick the data plane checks the NACK rate; a listener whose NACKs
//!   named more than 5 % of what it was sent in that second is reported
//!   `status {class:"slow_link", media, nacks, packets}` (`Event::SlowLink`).

use serde_json::{Value, json};
use sluice_dataplane::api::{Command, LegId, MediaKind, VideoCodec};

use super::session::{Kind, MediaLine, Session};
use super::{Manager, SessionId};
use crate::errors::ApiError;
use crate::sdp::CodecName;

/// The media status of one stream of a session, as last reported.
#[derive(Clone, Debug)]
pub struct RxWatch {
    pub leg: LegId,
    pub kind: MediaKind,
    pub up: bool,
}

/// One watch per distinct (leg, kind) of `legs` (a bundled leg carries several kinds).
pub fn watches_for(legs: &[MediaLine]) -> Vec<RxWatch> {
    let mut out: Vec<RxWatch> = Vec::with_capacity(legs.len());
    for l in legs {
        if out.iter().any(|w| w.leg == l.info.id && w.kind == l.kind) {
            continue;
        }
        out.push(RxWatch {
            leg: l.info.id,
            kind: l.kind,
            up: false,
        });
    }
    out
}

/// A stream's media status changing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

impl RxWatch {
    /// The data plane's report: the transition to tell the session about, if it is one.
    pub fn report(&mut self, t: Transition) -> Option<Transition> {
        let up = t == Transition::Up;
        if self.up == up {
            return None;
        }
        self.up = up;
        Some(t)
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
    pub(super) fn push_bitrate(&mut self, id: &SessionId, force: bool) {
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
                // A failure is logged by `send`.
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
    pub(super) fn session_info(&self, id: &SessionId) -> Result<Value, ApiError> {
        let s = self.session(id)?;
        let mut info = s.info();
        info["bitrate"] = json!(self.effective_bitrate(s));
        let room = s.kind.room().and_then(|r| self.rooms.get(r));
        if let Some(r) = room {
            info["room_bitrate"] = json!(r.bitrate);
        }
        if let Some(c) = &self.cluster {
            info["node"] = json!(c.node_id.as_ref());
            if let Kind::Listen { publisher, .. } = &s.kind {
                info["publisher_id"] = json!(self.public_publisher_id(publisher));
            }
        }
        Ok(info)
    }

    /// `Event::MediaUp` and `Event::MediaDown`: reported on a stream the session negotiated.
    pub(super) fn media_status(&mut self, leg: LegId, kind: MediaKind, t: Transition) {
        let Some(id) = self.leg_owner.get(&leg).cloned() else {
            return;
        };
        let t = self.sessions.get_mut(&id).and_then(|s| {
            s.rx.iter_mut()
                .find(|w| w.leg == leg && w.kind == kind)
                .and_then(|w| w.report(t))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_combine_ignoring_zero() {
        assert_eq!(min_cap(0, 0), 0);
        assert_eq!(min_cap(64_000, 0), 64_000);
        assert_eq!(min_cap(0, 128_000), 128_000);
        assert_eq!(min_cap(300_000, 128_000), 128_000);
    }

    #[test]
    fn each_transition_is_reported_once() {
        let mut w = RxWatch {
            leg: LegId(1),
            kind: MediaKind::Audio,
            up: false,
        };
        assert_eq!(w.report(Transition::Down), None, "never up");
        assert_eq!(w.report(Transition::Up), Some(Transition::Up));
        assert_eq!(w.report(Transition::Up), None, "once");
        assert_eq!(w.report(Transition::Down), Some(Transition::Down));
        assert_eq!(w.report(Transition::Down), None, "once");
        assert_eq!(w.report(Transition::Up), Some(Transition::Up));
    }

    #[test]
    fn room_video_codecs_map_to_keyframe_detectors() {
        assert_eq!(video_codec(CodecName::Vp8), Some(VideoCodec::Vp8));
        assert_eq!(video_codec(CodecName::H264), Some(VideoCodec::H264));
        assert_eq!(video_codec(CodecName::Av1), None);
    }
}
