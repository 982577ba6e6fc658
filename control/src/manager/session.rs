//! One media session as the manager sees it: its kind and links, its SDP, and its legs.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_dataplane::api::{
    DropReason, Feedback, GroupId, LegId, LegInfo, MediaKind, Remote, Ssrc,
};
use tokio::sync::oneshot;

use super::{RoomId, SessionId};
use crate::errors::ApiError;
use crate::request::{MediaUpdate, SdpType, SessionType};
use crate::sdp::{Codec, OfferMedia, Sdp, Selected};

/// A WebSocket connection, as the owner of sessions and the target of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a leg's packets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain RTP/RTCP on a port pair of its own.
    Plain,
    /// WebRTC: the session's one bundled, secure data-plane leg (shared by its m-lines), with
    /// ICE and DTLS in the session's [`crate::webrtc::transport::WebrtcTransport`].
    Webrtc,
}

/// A session's role and its links to other sessions and rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Echo,
    ProxyMaster { slave: Option<SessionId> },
    ProxySlave { master: SessionId },
    Publish { room: RoomId },
    Listen { room: RoomId, publisher: SessionId },
}

impl Kind {
    pub fn session_type(&self) -> SessionType {
        match self {
            Kind::Echo => SessionType::Echo,
            Kind::ProxyMaster { .. } | Kind::ProxySlave { .. } => SessionType::Proxy,
            Kind::Publish { .. } => SessionType::Publish,
            Kind::Listen { .. } => SessionType::Listen,
        }
    }

    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Kind::Publish { room } | Kind::Listen { room, .. } => Some(room),
            _ => None,
        }
    }
}

/// `{sdp, sdp_type}` as sent and returned by the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpText {
    pub sdp: String,
    pub sdp_type: SdpType,
}

impl SdpText {
    /// A plain SDP of the server's: RTP, or SRTP where an m-line is SDES-secured.
    pub fn rtp(sdp: &Sdp) -> Self {
        SdpText::of(sdp)
    }

    /// The profile follows the SDP: WebRTC when it carries ICE/DTLS, SRTP with SDES, else
    /// plain RTP.
    pub fn of(sdp: &Sdp) -> Self {
        SdpText {
            sdp: sdp.to_string(),
            sdp_type: SdpType::of(sdp),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "sdp": self.sdp, "sdp_type": self.sdp_type.as_str() })
    }
}

/// One m-line of a session: what was negotiated for it and the data-plane leg that carries it
/// (a bundled WebRTC leg carries several m-lines).
#[derive(Clone, Debug)]
pub struct MediaLine {
    pub info: LegInfo,
    pub kind: MediaKind,
    pub transport: Transport,
    /// Index of the m-line this leg serves in the session's SDP.
    pub mline: usize,
    /// The codec the peer of this leg sends and receives, with the peer's payload type.
    pub codec: Codec,
    pub dtmf: Option<Codec>,
    pub remote: Remote,
    /// Where the peer's RTP actually comes from, once seen.
    pub latched: Option<SocketAddr>,
    /// What the server offered on this leg (slave and listener legs).
    pub offered: Option<OfferMedia>,
    /// The fixed SSRC the server sends with towards this leg's peer (listeners, WebRTC legs;
    /// announced in the server's SDP): the `Rewrite.ssrc` of every route into the leg.
    pub ssrc: Option<Ssrc>,
    /// The SSRC of the server's RTX stream towards this leg's peer (WebRTC video; announced
    /// as `a=ssrc-group:FID ssrc rtx_ssrc`).
    pub rtx_ssrc: Option<Ssrc>,
    /// NACK and RTX as negotiated with the peer (`Command::SetFeedback`).
    pub feedback: Feedback,
    /// False when the peer's answer rejected the m-line.
    pub accepted: bool,
    /// The SDES keys the server offered on this leg (an SRTP offer of the server's; the
    /// answer picks one by its tag).
    pub sdes: Vec<crate::sdp::sdes::SdesKey>,
}

/// Mute flags and the bitrate cap of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaSettings {
    pub mute_audio: bool,
    pub mute_video: bool,
    pub mute_data: bool,
    /// bps, 0 = none: caps what the session's peer sends (REMB and policing, see
    /// `quality.rs`; a publisher's room may cap it lower).
    pub bitrate: u64,
}

impl MediaSettings {
    pub fn apply(&mut self, u: &MediaUpdate) {
        if let Some(v) = u.mute_audio {
            self.mute_audio = v;
        }
        if let Some(v) = u.mute_video {
            self.mute_video = v;
        }
        if let Some(v) = u.mute_data {
            self.mute_data = v;
        }
        if let Some(v) = u.bitrate {
            self.bitrate = v;
        }
    }

    pub fn muted(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Audio => self.mute_audio,
            MediaKind::Video => self.mute_video,
        }
    }
}

/// A waiter for the session's answer (`get_answer` on a session still in `wait`).
pub type Waiter = oneshot::Sender<Result<Value, ApiError>>;

pub struct Session {
    pub id: SessionId,
    pub kind: Kind,
    pub owner: ConnId,
    pub group: GroupId,
    /// Profile of the SDP the server generates for this session.
    pub sdp_type: SdpType,
    pub offer: SdpText,
    pub answer: Option<SdpText>,
    /// The peer's parsed offer and the codecs chosen from it (sessions answered by the server).
    pub peer_offer: Option<Sdp>,
    pub selected: Vec<Option<Selected>>,
    pub legs: Vec<MediaLine>,
    pub media: MediaSettings,
    pub stop_after_peer: bool,
    pub wait_timeout: Duration,
    pub ready_timeout: Duration,
    /// Bumped on every state change so that stale timers are ignored.
    pub timer_gen: u64,
    pub answer_waiters: Vec<Waiter>,
    /// The current or last `recorder_action start`.
    pub recording: Option<super::record::SessionRecording>,
    /// ICE + DTLS of the session's bundled leg, when its peer speaks WebRTC.
    pub webrtc: Option<Box<crate::webrtc::transport::WebrtcTransport>>,
    /// The cap (bps) last sent to the data plane with `SetBitrate` (0 = none).
    pub bitrate_sent: u64,
    /// Media up/down watch of each stream the session's peer sends.
    pub rx: Vec<super::quality::RxWatch>,
}

impl Session {
    /// The session's data-plane legs, each once: its m-lines' (a bundled leg serves several)
    /// and its WebRTC transport's, which is all a session of data channels alone has.
    pub fn leg_ids(&self) -> Vec<LegId> {
        let mut ids: Vec<LegId> = Vec::with_capacity(self.legs.len() + 1);
        let lines = self.legs.iter().map(|l| l.info.id);
        for id in lines.chain(self.webrtc.as_ref().map(|t| t.leg)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    pub fn is_ready(&self) -> bool {
        self.answer.is_some()
    }

    pub fn is_listener(&self) -> bool {
        matches!(self.kind, Kind::Listen { .. })
    }

    pub fn state(&self) -> &'static str {
        if self.is_ready() { "ready" } else { "wait" }
    }

    /// The `get_info` reply.
    pub fn info(&self) -> Value {
        let mut v = json!({
            "session_id": self.id,
            "type": self.kind.session_type().as_str(),
            "state": self.state(),
            "offer": self.offer.to_json(),
            "answer": self.answer.as_ref().map(SdpText::to_json),
            "mute_audio": self.media.mute_audio,
            "mute_video": self.media.mute_video,
            "mute_data": self.media.mute_data,
            "bitrate": self.media.bitrate,
            "stop_after_peer": self.stop_after_peer,
            "media": self.legs.iter().map(leg_info).collect::<Vec<_>>(),
            "recording": self.recording.as_ref().map(super::record::SessionRecording::info),
            "webrtc": self.webrtc.as_ref().map(|t| t.info()),
        });
        let extra = match &self.kind {
            Kind::Echo => json!({}),
            Kind::ProxyMaster { slave } => json!({ "slave_id": slave }),
            Kind::ProxySlave { master } => json!({ "master_id": master }),
            Kind::Publish { room } => json!({ "room_id": room }),
            Kind::Listen { room, publisher } => {
                json!({ "room_id": room, "publisher_id": publisher })
            }
        };
        if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
            obj.extend(extra);
        }
        v
    }
}

fn codec_text(c: &Codec) -> String {
    match c.channels {
        Some(ch) => format!("{}/{}/{}", c.name, c.clock_rate, ch),
        None => format!("{}/{}", c.name, c.clock_rate),
    }
}

fn leg_info(leg: &MediaLine) -> Value {
    let s = leg.info.stats.snapshot();
    let drops: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), json!(s.drop_count(*r))))
        .collect();
    let remote = leg.latched.or(leg.remote.rtp).map(|a| a.to_string());
    json!({
        "kind": leg.kind.as_str(),
        "local_ip": leg.info.local_ip.to_string(),
        "rtp_port": leg.info.rtp_port,
        "rtcp_port": leg.info.rtcp_port,
        "worker": leg.info.id.worker(),
        "remote_rtp": remote,
        "codec": codec_text(&leg.codec),
        "pt": leg.codec.pt.0,
        "accepted": leg.accepted,
        "rx_packets": s.rx_packets,
        "rx_bytes": s.rx_bytes,
        "tx_packets": s.tx_packets,
        "tx_bytes": s.tx_bytes,
        "rtcp_rx_packets": s.rtcp_rx_packets,
        "rtcp_tx_packets": s.rtcp_tx_packets,
        "nack_received": s.nack_received,
        "retransmitted": s.retransmitted,
        "nack_forwarded": s.nack_forwarded,
        "slow_path_packets": s.slow_path_packets,
        "drops": drops,
        "drops_total": s.drops_total(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::api::Pt;

    #[test]
    fn update_changes_only_given_settings() {
        let mut m = MediaSettings {
            mute_video: true,
            bitrate: 5,
            ..MediaSettings::default()
        };
        m.apply(&MediaUpdate {
            mute_audio: Some(true),
            ..MediaUpdate::default()
        });
        assert!(m.mute_audio && m.mute_video);
        assert_eq!(m.bitrate, 5);
        assert!(m.muted(MediaKind::Audio));
    }

    #[test]
    fn codec_text_has_channels_only_when_given() {
        assert_eq!(
            codec_text(&Codec::new(Pt(111), "opus", 48000, Some(2))),
            "opus/48000/2"
        );
        assert_eq!(
            codec_text(&Codec::new(Pt(0), "PCMU", 8000, None)),
            "PCMU/8000"
        );
    }

    #[test]
    fn kinds_map_to_api_types() {
        assert_eq!(
            Kind::ProxySlave { master: "m".into() }.session_type(),
            SessionType::Proxy
        );
        let room = RoomId::from("r");
        assert_eq!(Kind::Publish { room: room.clone() }.room(), Some(&room));
        assert_eq!(Kind::Echo.room(), None);
    }
}
