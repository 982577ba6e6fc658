//! Raw `data` objects as serde reads them, and the helpers that turn them into typed
//! requests with NkMedia's error codes.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    CreateSession, DEFAULT_READY_TIMEOUT, DEFAULT_WAIT_TIMEOUT, MediaUpdate, SdpObject, SdpType,
    SessionType,
};
use crate::errors::ApiError;
use crate::manager::{RoomId, SessionId};
use crate::sdp::{CodecName, MediaKind};

pub(super) fn data_as<T: DeserializeOwned>(data: Value) -> Result<T, ApiError> {
    serde_json::from_value(data).map_err(|e| ApiError::invalid(e.to_string()))
}

pub(super) fn required<T>(v: Option<T>, name: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| ApiError::missing_field(name))
}

pub(super) fn seconds(v: Option<f64>, name: &str, default: Duration) -> Result<Duration, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => Duration::try_from_secs_f64(s).map_err(|_| {
            ApiError::invalid(format!(
                "field '{name}' must be a non-negative number of seconds"
            ))
        }),
    }
}

pub(super) fn codec(
    v: Option<String>,
    name: &str,
    kind: MediaKind,
) -> Result<Option<CodecName>, ApiError> {
    let Some(text) = v else { return Ok(None) };
    match CodecName::parse(&text) {
        Some(c) if c.kind() == kind => Ok(Some(c)),
        _ => Err(ApiError::invalid(format!(
            "field '{name}': unsupported {kind} codec '{text}'"
        ))),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct IdData {
    pub session_id: Option<SessionId>,
    pub room_id: Option<RoomId>,
}

/// `media/node/drain`: `timeout` in seconds (absent: `--drain-timeout`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DrainData {
    pub timeout: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct LoginData {
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PatternData {
    pub class: Option<String>,
    pub subclass: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub obj_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CreateData {
    #[serde(rename = "type")]
    pub session_type: Option<String>,
    pub offer: Option<SdpObject>,
    pub wait_reply: Option<bool>,
    pub sdp_type: Option<String>,
    pub master_id: Option<SessionId>,
    pub stop_after_peer: Option<bool>,
    pub wait_timeout: Option<f64>,
    pub ready_timeout: Option<f64>,
    pub subscribe: Option<bool>,
    #[serde(flatten)]
    pub media: MediaUpdate,
    pub room_id: Option<RoomId>,
    pub room_audio_codec: Option<String>,
    pub room_video_codec: Option<String>,
    pub room_bitrate: Option<u64>,
    pub publisher_id: Option<SessionId>,
    pub publisher: Option<SessionId>,
    /// The node to place the session on (a cluster); absent = the node asked.
    pub node: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SetAnswerData {
    pub session_id: Option<SessionId>,
    pub answer: Option<SdpObject>,
}

/// `set_candidate`: a trickled ICE candidate as the browser's `RTCIceCandidate` gives it.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CandidateData {
    pub session_id: Option<SessionId>,
    #[serde(rename = "sdpMid")]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u32>,
    pub candidate: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UpdateMediaData {
    pub session_id: Option<SessionId>,
    #[serde(flatten)]
    pub media: MediaUpdate,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct SetTypeData {
    pub session_id: Option<SessionId>,
    #[serde(rename = "type")]
    pub session_type: Option<String>,
    pub publisher_id: Option<SessionId>,
    pub publisher: Option<SessionId>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RecorderData {
    pub session_id: Option<SessionId>,
    pub action: Option<String>,
    pub uri: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RoomCreateData {
    pub room_id: Option<RoomId>,
    pub class: Option<String>,
    pub audio_codec: Option<String>,
    pub video_codec: Option<String>,
    pub bitrate: Option<u64>,
}

pub(super) fn parse_create(data: Value) -> Result<CreateSession, ApiError> {
    let d: CreateData = data_as(data)?;
    let session_type = SessionType::parse(&required(d.session_type, "type")?)?;
    let _accepted_and_implied = d.wait_reply;
    Ok(CreateSession {
        session_type,
        offer: d.offer,
        sdp_type: d.sdp_type.as_deref().map(SdpType::parse).transpose()?,
        master_id: d.master_id,
        stop_after_peer: d.stop_after_peer.unwrap_or(true),
        wait_timeout: seconds(d.wait_timeout, "wait_timeout", DEFAULT_WAIT_TIMEOUT)?,
        ready_timeout: seconds(d.ready_timeout, "ready_timeout", DEFAULT_READY_TIMEOUT)?,
        subscribe: d.subscribe.unwrap_or(true),
        media: d.media,
        room_id: d.room_id,
        room_audio_codec: codec(d.room_audio_codec, "room_audio_codec", MediaKind::Audio)?,
        room_video_codec: codec(d.room_video_codec, "room_video_codec", MediaKind::Video)?,
        room_bitrate: d.room_bitrate,
        publisher_id: d.publisher_id.or(d.publisher),
        node: d.node.filter(|n| !n.is_empty()),
    })
}
