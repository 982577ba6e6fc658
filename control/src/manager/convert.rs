//! Between the API's and SDP's values and the data plane's.

use serde_json::{Value, json};
use sluice_dataplane::api::{MediaKind, Remote};

use super::session::SdpText;
use crate::errors::{ApiError, ErrorCode};
use crate::request::SdpObject;
use crate::sdp::{self, Media, Sdp};

/// The peer's SDP from an `offer`/`answer` object: present and parsable (plain RTP or WebRTC).
pub fn peer_sdp(obj: Option<&SdpObject>) -> Result<Sdp, ApiError> {
    let text = obj
        .and_then(|o| o.sdp.as_deref())
        .filter(|s| !s.trim().is_empty());
    let Some(text) = text else {
        return Err(ApiError::plain(ErrorCode::MissingSdp));
    };
    Sdp::parse(text).map_err(|e| ApiError::invalid(format!("invalid SDP: {e}")))
}

/// Where a leg sends, from the peer's m-line.
pub fn remote_of(sdp: &Sdp, m: &Media) -> Remote {
    Remote {
        rtp: m.rtp_addr(sdp),
        rtcp: m.rtcp_addr(sdp),
        rtcp_mux: m.rtcp_mux,
    }
}

pub fn dp_kind(kind: &sdp::MediaKind) -> Option<MediaKind> {
    match kind {
        sdp::MediaKind::Audio => Some(MediaKind::Audio),
        sdp::MediaKind::Video => Some(MediaKind::Video),
        _ => None,
    }
}

pub fn sdp_kind(kind: MediaKind) -> sdp::MediaKind {
    match kind {
        MediaKind::Audio => sdp::MediaKind::Audio,
        MediaKind::Video => sdp::MediaKind::Video,
    }
}

pub(super) fn answer_body(answer: &SdpText) -> Value {
    json!({ "answer": answer.to_json() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(sdp: &str) -> SdpObject {
        SdpObject {
            sdp: Some(sdp.into()),
            ..SdpObject::default()
        }
    }

    #[test]
    fn missing_sdp_has_its_own_code() {
        assert_eq!(peer_sdp(None).unwrap_err().code, ErrorCode::MissingSdp);
        assert_eq!(
            peer_sdp(Some(&SdpObject::default())).unwrap_err().code,
            ErrorCode::MissingSdp
        );
    }

    #[test]
    fn webrtc_offers_are_accepted() {
        let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AA\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n";
        assert!(peer_sdp(Some(&obj(text))).expect("parses").is_webrtc());
    }

    #[test]
    fn plain_offer_gives_remote_addresses() {
        let text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 0\r\n";
        let sdp = peer_sdp(Some(&obj(text))).expect("plain offer");
        let r = remote_of(&sdp, &sdp.media[0]);
        assert_eq!(r.rtp, Some("127.0.0.1:4000".parse().expect("valid")));
        assert_eq!(r.rtcp, Some("127.0.0.1:4001".parse().expect("valid")));
        assert!(!r.rtcp_mux);
    }
}
