//! API frames parsed into typed requests at the edge ("parse, don't validate").
//!
//! A frame is `{class, subclass, cmd, data, tid}`. Unknown fields are ignored (NkMedia clients
//! send extra ones); a field of the wrong type is `invalid_parameters`, a missing mandatory one
//! `missing_field`, an unknown class/subclass/cmd `unknown_command`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

mod commands;
mod data;

pub use commands::COMMANDS;

use data::{
    CandidateData, DrainData, IdData, LoginData, PatternData, RecorderData, RoomCreateData,
    SetAnswerData, SetTypeData, UpdateMediaData, codec, data_as, parse_create, required,
};

use crate::errors::ApiError;
use crate::manager::{RoomId, SessionId};
use crate::sdp::{CodecName, MediaKind};

/// Frames larger than this get an error reply instead of being processed.
pub const MAX_FRAME: usize = 1 << 20;

/// A text frame from a client.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A request with its transaction id (`Value::Null` when absent).
    Request { tid: Value, request: Request },
    /// A reply (`result`) or ack from the client to one of our events: nothing to do.
    Ignore,
}

/// An unparsable frame: the error and the tid, if it could be read.
#[derive(Debug, PartialEq)]
pub struct FrameError {
    pub tid: Value,
    pub error: ApiError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionType {
    Echo,
    Proxy,
    Publish,
    Listen,
}

impl SessionType {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "echo" => Ok(SessionType::Echo),
            "proxy" => Ok(SessionType::Proxy),
            "publish" => Ok(SessionType::Publish),
            "listen" => Ok(SessionType::Listen),
            other => Err(ApiError::invalid(format!(
                "unknown session type '{other}' (expected echo, proxy, publish or listen)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Echo => "echo",
            SessionType::Proxy => "proxy",
            SessionType::Publish => "publish",
            SessionType::Listen => "listen",
        }
    }
}

/// The profile of an SDP: WebRTC (ICE + DTLS-SRTP) or plain RTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SdpType {
    #[default]
    Webrtc,
    Rtp,
    /// Plain RTP secured by SDES (RFC 4568): `RTP/SAVP` with `a=crypto`.
    Srtp,
}

impl SdpType {
    /// The profile an SDP describes: WebRTC (ICE/DTLS), SDES-secured or plain RTP.
    pub fn of(sdp: &crate::sdp::Sdp) -> Self {
        if sdp.is_webrtc() {
            SdpType::Webrtc
        } else if sdp
            .media
            .iter()
            .any(|m| crate::sdp::sdes::is_sdes_proto(&m.proto))
        {
            SdpType::Srtp
        } else {
            SdpType::Rtp
        }
    }

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "webrtc" => Ok(SdpType::Webrtc),
            "rtp" => Ok(SdpType::Rtp),
            "srtp" => Ok(SdpType::Srtp),
            other => Err(ApiError::invalid(format!(
                "invalid sdp_type '{other}' (expected webrtc, rtp or srtp)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SdpType::Webrtc => "webrtc",
            SdpType::Rtp => "rtp",
            SdpType::Srtp => "srtp",
        }
    }
}

/// An `offer` or `answer` object.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct SdpObject {
    pub sdp: Option<String>,
    pub sdp_type: Option<String>,
    pub trickle_ice: Option<bool>,
}

/// Media settings, at `create` or in `update_media`; `None` leaves a setting unchanged.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct MediaUpdate {
    pub mute_audio: Option<bool>,
    pub mute_video: Option<bool>,
    pub mute_data: Option<bool>,
    /// Bits per second, 0 = no cap.
    pub bitrate: Option<u64>,
}

/// `{class, subclass, type, obj_id}` with `*` wildcards; a missing field is `*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventPattern {
    pub class: String,
    pub subclass: String,
    pub kind: String,
    pub obj_id: String,
}

impl EventPattern {
    pub fn matches(&self, class: &str, subclass: &str, kind: &str, obj_id: &str) -> bool {
        let m = |p: &str, v: &str| p == "*" || p == v;
        m(&self.class, class)
            && m(&self.subclass, subclass)
            && m(&self.kind, kind)
            && m(&self.obj_id, obj_id)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CreateSession {
    pub session_type: SessionType,
    pub offer: Option<SdpObject>,
    pub sdp_type: Option<SdpType>,
    pub master_id: Option<SessionId>,
    pub stop_after_peer: bool,
    pub wait_timeout: Duration,
    pub ready_timeout: Duration,
    pub subscribe: bool,
    pub media: MediaUpdate,
    pub room_id: Option<RoomId>,
    pub room_audio_codec: Option<CodecName>,
    pub room_video_codec: Option<CodecName>,
    /// kbps.
    pub room_bitrate: Option<u64>,
    pub publisher_id: Option<SessionId>,
    /// The cluster node to place the session on (`None`: the node that got the request).
    pub node: Option<String>,
}

pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(86400);

#[derive(Clone, Debug, PartialEq)]
pub struct CreateRoom {
    pub room_id: Option<RoomId>,
    pub audio_codec: Option<CodecName>,
    pub video_codec: Option<CodecName>,
    /// kbps.
    pub bitrate: Option<u64>,
}

/// The `action` of `recorder_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecorderOp {
    Start,
    Stop,
    GetActions,
}

impl RecorderOp {
    pub const ALL: [RecorderOp; 3] = [RecorderOp::Start, RecorderOp::Stop, RecorderOp::GetActions];

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        RecorderOp::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "unknown recorder action '{s}' (expected start, stop or get_actions)"
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecorderOp::Start => "start",
            RecorderOp::Stop => "stop",
            RecorderOp::GetActions => "get_actions",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Login {
        user: Option<String>,
        password: Option<String>,
    },
    Subscribe(EventPattern),
    Unsubscribe(EventPattern),
    Create(Box<CreateSession>),
    Destroy {
        session_id: SessionId,
    },
    SetAnswer {
        session_id: SessionId,
        answer: SdpObject,
    },
    GetOffer {
        session_id: SessionId,
    },
    GetAnswer {
        session_id: SessionId,
    },
    GetProxyOffer {
        session_id: SessionId,
    },
    GetInfo {
        session_id: SessionId,
    },
    GetList,
    UpdateMedia {
        session_id: SessionId,
        media: MediaUpdate,
    },
    SetType {
        session_id: SessionId,
        publisher_id: SessionId,
    },
    RecorderAction {
        session_id: SessionId,
        action: RecorderOp,
        /// `file://…` naming the recording (inside the record dir).
        uri: Option<String>,
    },
    /// A trickled remote ICE candidate (`candidate:...`, as `RTCIceCandidate.candidate`).
    SetCandidate {
        session_id: SessionId,
        mid: Option<String>,
        mline_index: Option<u32>,
        candidate: String,
    },
    SetCandidateEnd {
        session_id: SessionId,
    },
    RoomCreate(CreateRoom),
    RoomDestroy {
        room_id: RoomId,
    },
    RoomGetInfo {
        room_id: RoomId,
    },
    RoomGetList,
    /// Stop accepting sessions and stop once the live ones end, or after `timeout` (`None`:
    /// the configured `--drain-timeout`).
    NodeDrain {
        timeout: Option<Duration>,
    },
    /// The live nodes of the cluster (this node alone without one).
    NodeGetList,
}

impl Request {
    /// True for requests that may wait for the session (an `{ack}` is sent first).
    pub fn may_wait(&self) -> bool {
        matches!(self, Request::GetOffer { .. } | Request::GetAnswer { .. })
    }

    /// The session a request is about, if it names one.
    pub fn session_id(&self) -> Option<&SessionId> {
        match self {
            Request::Destroy { session_id }
            | Request::SetAnswer { session_id, .. }
            | Request::GetOffer { session_id }
            | Request::GetAnswer { session_id }
            | Request::GetProxyOffer { session_id }
            | Request::GetInfo { session_id }
            | Request::UpdateMedia { session_id, .. }
            | Request::SetType { session_id, .. }
            | Request::RecorderAction { session_id, .. }
            | Request::SetCandidate { session_id, .. }
            | Request::SetCandidateEnd { session_id } => Some(session_id),
            _ => None,
        }
    }
}

/// Parses one text frame.
pub fn parse_frame(text: &str) -> Result<Frame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
        tid: Value::Null,
        error: ApiError::syntax(e),
    })?;
    let Value::Object(mut obj) = value else {
        return Err(FrameError {
            tid: Value::Null,
            error: ApiError::syntax("a frame must be a JSON object"),
        });
    };
    let tid = obj.remove("tid").unwrap_or(Value::Null);
    let fail = |error| FrameError {
        tid: tid.clone(),
        error,
    };
    if !obj.contains_key("cmd") && (obj.contains_key("result") || obj.contains_key("ack")) {
        return Ok(Frame::Ignore);
    }
    let class = text_field(&obj, "class").map_err(fail)?;
    let subclass = match obj.get("subclass") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(fail(ApiError::invalid("field 'subclass' must be a string"))),
    };
    let cmd = text_field(&obj, "cmd").map_err(fail)?;
    let data = match obj.remove("data") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(fail(ApiError::invalid("field 'data' must be an object"))),
    };
    let request = parse_request(&class, subclass.as_deref(), &cmd, data).map_err(fail)?;
    Ok(Frame::Request { tid, request })
}

fn text_field(obj: &serde_json::Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(ApiError::missing_field(name)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid(format!(
            "field '{name}' must be a string"
        ))),
    }
}

fn parse_request(
    class: &str,
    subclass: Option<&str>,
    cmd: &str,
    data: Value,
) -> Result<Request, ApiError> {
    let session_id = |data: Value| -> Result<SessionId, ApiError> {
        required(data_as::<IdData>(data)?.session_id, "session_id")
    };
    let room_id = |data: Value| -> Result<RoomId, ApiError> {
        required(data_as::<IdData>(data)?.room_id, "room_id")
    };
    let known = commands::lookup(class, subclass, cmd)?;
    match known {
        ("core", "user", "login") => {
            let d: LoginData = data_as(data)?;
            Ok(Request::Login {
                user: d.user,
                password: d.password,
            })
        }
        ("core", "event", "subscribe" | "unsubscribe") => {
            let d: PatternData = data_as(data)?;
            let star = |v: Option<String>| v.unwrap_or_else(|| "*".to_owned());
            let pattern = EventPattern {
                class: star(d.class),
                subclass: star(d.subclass),
                kind: star(d.kind),
                obj_id: star(d.obj_id),
            };
            Ok(if cmd == "subscribe" {
                Request::Subscribe(pattern)
            } else {
                Request::Unsubscribe(pattern)
            })
        }
        ("media", "session", cmd) => match cmd {
            "create" => parse_create(data).map(|c| Request::Create(Box::new(c))),
            "destroy" => Ok(Request::Destroy {
                session_id: session_id(data)?,
            }),
            "set_answer" => {
                let d: SetAnswerData = data_as(data)?;
                let session_id = required(d.session_id, "session_id")?;
                Ok(Request::SetAnswer {
                    session_id,
                    answer: required(d.answer, "answer")?,
                })
            }
            "get_offer" => Ok(Request::GetOffer {
                session_id: session_id(data)?,
            }),
            "get_answer" => Ok(Request::GetAnswer {
                session_id: session_id(data)?,
            }),
            "get_proxy_offer" => Ok(Request::GetProxyOffer {
                session_id: session_id(data)?,
            }),
            "get_info" => Ok(Request::GetInfo {
                session_id: session_id(data)?,
            }),
            "get_list" => Ok(Request::GetList),
            "update_media" => {
                let d: UpdateMediaData = data_as(data)?;
                Ok(Request::UpdateMedia {
                    session_id: required(d.session_id, "session_id")?,
                    media: d.media,
                })
            }
            "set_type" => {
                let d: SetTypeData = data_as(data)?;
                let session_id = required(d.session_id, "session_id")?;
                let kind = SessionType::parse(&required(d.session_type, "type")?)?;
                if kind != SessionType::Listen {
                    return Err(ApiError::invalid("set_type only supports type 'listen'"));
                }
                let publisher_id = required(d.publisher_id.or(d.publisher), "publisher_id")?;
                Ok(Request::SetType {
                    session_id,
                    publisher_id,
                })
            }
            "recorder_action" => {
                let d: RecorderData = data_as(data)?;
                let session_id = required(d.session_id, "session_id")?;
                let action = RecorderOp::parse(&required(d.action, "action")?)?;
                Ok(Request::RecorderAction {
                    session_id,
                    action,
                    uri: d.uri,
                })
            }
            "set_candidate" => {
                let d: CandidateData = data_as(data)?;
                Ok(Request::SetCandidate {
                    session_id: required(d.session_id, "session_id")?,
                    mid: d.sdp_mid,
                    mline_index: d.sdp_mline_index,
                    candidate: required(d.candidate, "candidate")?,
                })
            }
            "set_candidate_end" => Ok(Request::SetCandidateEnd {
                session_id: session_id(data)?,
            }),
            _ => Err(commands::unlisted(known)),
        },
        ("media", "room", cmd) => match cmd {
            "create" => {
                let d: RoomCreateData = data_as(data)?;
                if let Some(class) = d.class.as_deref()
                    && class != "sfu"
                {
                    return Err(ApiError::invalid(format!(
                        "room class '{class}' is not supported (only sfu)"
                    )));
                }
                Ok(Request::RoomCreate(CreateRoom {
                    room_id: d.room_id,
                    audio_codec: codec(d.audio_codec, "audio_codec", MediaKind::Audio)?,
                    video_codec: codec(d.video_codec, "video_codec", MediaKind::Video)?,
                    bitrate: d.bitrate,
                }))
            }
            "destroy" => Ok(Request::RoomDestroy {
                room_id: room_id(data)?,
            }),
            "get_info" => Ok(Request::RoomGetInfo {
                room_id: room_id(data)?,
            }),
            "get_list" => Ok(Request::RoomGetList),
            _ => Err(commands::unlisted(known)),
        },
        ("media", "node", "drain") => {
            let d: DrainData = data_as(data)?;
            let timeout = d
                .timeout
                .map(|t| data::seconds(Some(t), "timeout", Duration::ZERO))
                .transpose()?;
            Ok(Request::NodeDrain { timeout })
        }
        ("media", "node", "get_list") => Ok(Request::NodeGetList),
        _ => Err(commands::unlisted(known)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorCode;
    use serde_json::json;

    fn request(v: Value) -> Result<Frame, FrameError> {
        parse_frame(&v.to_string())
    }

    fn error_code(v: Value) -> ErrorCode {
        request(v).expect_err("should fail").error.code
    }

    #[test]
    fn malformed_json_is_a_syntax_error_without_tid() {
        let err = parse_frame("{not json").expect_err("malformed");
        assert_eq!(
            (err.tid, err.error.code),
            (Value::Null, ErrorCode::SyntaxError)
        );
    }

    #[test]
    fn missing_class_or_cmd_names_the_field() {
        let err = request(json!({"cmd": "create", "tid": 3})).expect_err("no class");
        assert_eq!(err.tid, json!(3));
        assert_eq!(err.error.code, ErrorCode::MissingField);
        assert!(err.error.message.contains("class"));
        let err = request(json!({"class": "media", "tid": 4})).expect_err("no cmd");
        assert!(err.error.message.contains("cmd"));
    }

    #[test]
    fn client_replies_are_ignored() {
        assert_eq!(
            request(json!({"result": "ok", "tid": 1})),
            Ok(Frame::Ignore)
        );
    }

    #[test]
    fn unknown_commands_are_rejected() {
        let v = json!({"class": "media", "subclass": "session", "cmd": "fly", "tid": 1});
        assert_eq!(error_code(v), ErrorCode::UnknownCommand);
        let v = json!({"class": "nope", "cmd": "create", "tid": 1});
        assert_eq!(error_code(v), ErrorCode::UnknownCommand);
    }

    #[test]
    fn create_needs_a_type_and_fills_defaults() {
        let v =
            json!({"class": "media", "subclass": "session", "cmd": "create", "data": {}, "tid": 1});
        let err = request(v).expect_err("no type");
        assert_eq!(err.error, ApiError::missing_field("type"));
        let v = json!({"class": "media", "subclass": "session", "cmd": "create", "tid": 1,
            "data": {"type": "echo", "offer": {"sdp": "v=0"}, "wait_timeout": 0.5, "mute_audio": true,
                     "unknown_field": [1, 2]}});
        let Ok(Frame::Request {
            request: Request::Create(c),
            ..
        }) = request(v)
        else {
            panic!("create expected")
        };
        assert_eq!(c.session_type, SessionType::Echo);
        assert_eq!(c.wait_timeout, Duration::from_millis(500));
        assert_eq!(c.ready_timeout, DEFAULT_READY_TIMEOUT);
        assert!(c.stop_after_peer && c.subscribe);
        assert_eq!(c.media.mute_audio, Some(true));
        assert_eq!(c.offer.and_then(|o| o.sdp).as_deref(), Some("v=0"));
    }

    #[test]
    fn wrong_field_types_are_invalid_parameters() {
        let v = json!({"class": "media", "subclass": "session", "cmd": "create", "tid": 1,
            "data": {"type": "echo", "wait_timeout": "soon"}});
        assert_eq!(error_code(v), ErrorCode::InvalidParameters);
        let v = json!({"class": "media", "subclass": "session", "cmd": "create", "tid": 1,
            "data": {"type": "echo", "mute_audio": "yes"}});
        assert_eq!(error_code(v), ErrorCode::InvalidParameters);
        let v = json!({"class": "media", "subclass": "session", "cmd": "destroy", "tid": 1,
            "data": {"session_id": 5}});
        assert_eq!(error_code(v), ErrorCode::InvalidParameters);
    }

    #[test]
    fn publisher_alias_is_accepted() {
        let v = json!({"class": "media", "subclass": "session", "cmd": "create", "tid": 1,
            "data": {"type": "listen", "publisher": "p1", "room_audio_codec": "pcmu"}});
        let Ok(Frame::Request {
            request: Request::Create(c),
            ..
        }) = request(v)
        else {
            panic!("create expected")
        };
        assert_eq!(c.publisher_id, Some("p1".into()));
        assert_eq!(c.room_audio_codec, Some(CodecName::Pcmu));
    }

    #[test]
    fn room_codecs_must_be_of_their_kind() {
        let v = json!({"class": "media", "subclass": "room", "cmd": "create", "tid": 1,
            "data": {"audio_codec": "vp8"}});
        assert_eq!(error_code(v), ErrorCode::InvalidParameters);
    }

    #[test]
    fn login_accepts_a_missing_subclass() {
        let v = json!({"class": "core", "cmd": "login", "tid": 1, "data": {"user": "u", "password": "p"}});
        let Ok(Frame::Request { request, .. }) = request(v) else {
            panic!("login expected")
        };
        assert_eq!(
            request,
            Request::Login {
                user: Some("u".into()),
                password: Some("p".into())
            }
        );
    }

    #[test]
    fn subscription_wildcards_match() {
        let v = json!({"class": "core", "subclass": "event", "cmd": "subscribe", "tid": 1,
            "data": {"class": "media", "subclass": "session"}});
        let Ok(Frame::Request {
            request: Request::Subscribe(p),
            ..
        }) = request(v)
        else {
            panic!("subscribe")
        };
        assert!(p.matches("media", "session", "answer", "abc"));
        assert!(!p.matches("media", "room", "created", "r1"));
        let exact = EventPattern {
            class: "media".into(),
            subclass: "session".into(),
            kind: "destroyed".into(),
            obj_id: "s1".into(),
        };
        assert!(exact.matches("media", "session", "destroyed", "s1"));
        assert!(!exact.matches("media", "session", "destroyed", "s2"));
    }

    #[test]
    fn node_drain_takes_an_optional_timeout() {
        let drain = |data: Value| {
            let frame = json!({"class": "media", "subclass": "node", "cmd": "drain", "data": data});
            request(frame)
        };
        let Ok(Frame::Request { request: r, .. }) = drain(json!({})) else {
            panic!("drain")
        };
        assert_eq!(r, Request::NodeDrain { timeout: None });
        let Ok(Frame::Request { request: r, .. }) = drain(json!({"timeout": 2.5})) else {
            panic!("drain with timeout")
        };
        assert_eq!(
            r,
            Request::NodeDrain {
                timeout: Some(Duration::from_millis(2500))
            }
        );
        let e = drain(json!({"timeout": -1})).expect_err("negative");
        assert_eq!(e.error.code, ErrorCode::InvalidParameters);
    }
}
