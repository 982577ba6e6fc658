//! SFU rooms: publishers send into a room, listeners receive one publisher each.
//!
//! A room's legs share one data-plane group (one worker), so fanout and listener switches are
//! decided by a single thread. The room fixes one audio and one video codec; publishers are
//! answered with those only, and listeners are offered them with the publisher's payload types.

use serde_json::{Value, json};
use sluice_dataplane::api::{Command, MediaKind, Rewrite};

use super::flows::{NewSession, client_sdp};
use super::session::{ConnId, Kind, MediaLine};
use super::webrtc_flows::cname_for;
use super::{Manager, Outcome, RoomId, SessionId, peer_sdp, random_ssrc, sdp_kind};
use crate::cluster::Owned;
use crate::errors::{ApiError, ErrorCode};
use crate::request::{CreateRoom, CreateSession};
use crate::sdp::{self, CodecName, Direction, Forced, OfferMedia};

pub const DEFAULT_AUDIO: CodecName = CodecName::Opus;
pub const DEFAULT_VIDEO: CodecName = CodecName::Vp8;

pub struct Room {
    pub id: RoomId,
    pub audio_codec: CodecName,
    pub video_codec: CodecName,
    /// kbps, 0 = none.
    pub bitrate: u64,
    pub publishers: Vec<SessionId>,
    pub listeners: Vec<SessionId>,
    /// Created by a `publish`: destroyed when its last member leaves.
    pub auto: bool,
}

impl Room {
    fn info(&self) -> Value {
        json!({
            "room_id": self.id,
            "class": "sfu",
            "audio_codec": self.audio_codec.as_str(),
            "video_codec": self.video_codec.as_str(),
            "bitrate": self.bitrate,
            "publishers": self.publishers,
            "listeners": self.listeners,
        })
    }
}

/// Body of a `destroyed` event (sessions and rooms alike).
pub fn stop_body(reason: ErrorCode) -> Value {
    json!({ "code": reason.code(), "reason": reason.name() })
}

impl Manager {
    pub(super) fn emit_room(&mut self, room: &RoomId, kind: &str, body: Value) {
        self.emit("room", kind, room.as_str(), body);
    }

    fn add_room(
        &mut self,
        id: RoomId,
        audio: CodecName,
        video: CodecName,
        bitrate: u64,
        auto: bool,
    ) {
        let room = Room {
            id: id.clone(),
            audio_codec: audio,
            video_codec: video,
            bitrate,
            publishers: Vec::new(),
            listeners: Vec::new(),
            auto,
        };
        let body =
            json!({ "class": "sfu", "audio_codec": audio.as_str(), "video_codec": video.as_str() });
        self.rooms.insert(id.clone(), room);
        if auto && self.cluster.is_some() {
            // A room a publisher made: known cluster-wide unless another node has it already
            // (this node then holds a shard of that room), claimed before the publisher's
            // `create` is answered.
            self.rooms_to_claim.push(id.clone());
        }
        self.emit_room(&id, "created", body);
    }

    pub(super) fn room_create(&mut self, c: CreateRoom) -> Outcome {
        let id = c.room_id.unwrap_or_else(RoomId::random);
        if self.rooms.contains_key(&id) {
            return Err(ApiError::new(
                ErrorCode::RoomAlreadyExists,
                format!("Room already exists: {id}"),
            ));
        }
        let audio = c.audio_codec.unwrap_or(DEFAULT_AUDIO);
        let video = c.video_codec.unwrap_or(DEFAULT_VIDEO);
        self.add_room(id.clone(), audio, video, c.bitrate.unwrap_or(0), false);
        Ok(json!({ "room_id": id }))
    }

    pub(super) fn room_destroy(&mut self, id: &RoomId) -> Outcome {
        let room = self
            .rooms
            .get_mut(id)
            .ok_or_else(|| ApiError::room_not_found(id.as_str()))?;
        // Keep the room while its members go, so that it is not auto-destroyed under us.
        room.auto = false;
        // Listeners first: once their publisher is gone they would end as `publisher_stop`.
        let members: Vec<SessionId> = room
            .listeners
            .iter()
            .chain(&room.publishers)
            .cloned()
            .collect();
        for m in members {
            self.destroy(&m, ErrorCode::RoomDestroyed);
        }
        self.rooms.remove(id);
        self.emit_room(id, "destroyed", stop_body(ErrorCode::UserStop));
        Ok(json!({}))
    }

    pub(super) fn room_info(&self, id: &RoomId) -> Outcome {
        self.rooms
            .get(id)
            .map(Room::info)
            .ok_or_else(|| ApiError::room_not_found(id.as_str()))
    }

    pub(super) fn room_list(&self) -> Value {
        let mut ids: Vec<&RoomId> = self.rooms.keys().collect();
        ids.sort();
        Value::Array(
            ids.into_iter()
                .map(|id| json!({ "room_id": id, "class": "sfu" }))
                .collect(),
        )
    }

    /// A member left: tell subscribers, and drop an auto-created room once it is empty.
    pub(super) fn left_room(&mut self, room: &RoomId, session: &SessionId, publisher: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.publishers.retain(|p| p != session);
        r.listeners.retain(|l| l != session);
        let empty = r.auto && r.publishers.is_empty() && r.listeners.is_empty();
        let kind = if publisher {
            "stopped_publisher"
        } else {
            "stopped_listener"
        };
        self.emit_room(room, kind, json!({ "session_id": session }));
        if empty {
            self.rooms.remove(room);
            self.cluster_disown(crate::cluster::Owned::Room, room.as_str());
            self.emit_room(room, "destroyed", stop_body(ErrorCode::NoRoomMembers));
        }
    }

    pub(super) fn create_publisher(&mut self, conn: ConnId, c: &CreateSession) -> Outcome {
        let offer = peer_sdp(c.offer.as_ref())?;
        let existing = c.room_id.as_ref().and_then(|id| self.rooms.get(id));
        let (audio, video) = match existing {
            Some(r) => (r.audio_codec, r.video_codec),
            None => (
                c.room_audio_codec.unwrap_or(DEFAULT_AUDIO),
                c.room_video_codec.unwrap_or(DEFAULT_VIDEO),
            ),
        };
        let exists = existing.is_some();
        let forced = Forced {
            audio: Some(audio),
            video: Some(video),
        };
        let mut selected = super::flows::select_media(&offer, &forced)?;
        // A publisher only sends to us.
        for s in selected.iter_mut().flatten() {
            s.direction = Direction::RecvOnly;
        }
        let room_id = c.room_id.clone().unwrap_or_else(RoomId::random);
        if !exists {
            self.add_room(
                room_id.clone(),
                audio,
                video,
                c.room_bitrate.unwrap_or(0),
                true,
            );
        }
        // A room's legs spread over the workers: the publisher's decrypts once and hands
        // its packets to the listeners' workers.
        let group = self.dp.spread_group();
        let mut opened = match self.open_answer_legs(group, &offer, &selected) {
            Ok(v) => v,
            Err(e) => {
                if !exists {
                    self.rooms.remove(&room_id);
                    self.cluster_disown(Owned::Room, room_id.as_str());
                    self.emit_room(&room_id, "destroyed", stop_body(ErrorCode::InternalError));
                }
                return Err(e);
            }
        };
        super::flows::accept_data(&mut opened, &offer);
        let id = SessionId::random();
        let answer = self.answer_sdp(&id, &offer, &selected, &opened);
        let kind = Kind::Publish {
            room: room_id.clone(),
        };
        let offer_text = client_sdp(c.offer.as_ref(), &offer);
        let opts = NewSession::from_create(conn, c);
        let mut s = opts.build(id.clone(), kind, group, offer_text, opened.legs);
        s.sdp_type = answer.sdp_type;
        s.webrtc = opened.webrtc;
        s.answer = Some(answer.clone());
        s.peer_offer = Some(offer);
        s.selected = selected;
        self.insert_session(s, c.subscribe);
        if let Some(r) = self.rooms.get_mut(&room_id) {
            r.publishers.push(id.clone());
        }
        self.emit_room(&room_id, "started_publisher", json!({ "session_id": id }));
        Ok(
            json!({ "session_id": id, "room": room_id, "room_id": room_id, "answer": answer.to_json() }),
        )
    }

    /// A publisher's room and legs, or why `id` cannot be listened to.
    fn publisher(
        &self,
        id: &SessionId,
    ) -> Result<(RoomId, Vec<MediaLine>, Option<&sdp::Sdp>), ApiError> {
        let p = self.session(id)?;
        match &p.kind {
            Kind::Publish { room } => Ok((room.clone(), p.legs.clone(), p.peer_offer.as_ref())),
            _ => Err(ApiError::new(
                ErrorCode::InvalidPublisher,
                format!("session {id} is not a publisher"),
            )),
        }
    }

    pub(super) fn create_listener(&mut self, conn: ConnId, c: &CreateSession) -> Outcome {
        let publisher = c
            .publisher_id
            .clone()
            .ok_or_else(|| ApiError::missing_field("publisher_id"))?;
        let sdp_type = c.sdp_type.unwrap_or_default();
        let (room, pub_legs, pub_offer) = self.publisher(&publisher)?;
        if let Some(r) = &c.room_id
            && *r != room
        {
            return Err(ApiError::new(
                ErrorCode::InvalidPublisher,
                format!("publisher {publisher} is not in room {r}"),
            ));
        }
        if !self.rooms.contains_key(&room) {
            return Err(ApiError::room_not_found(room.as_str()));
        }
        let group = self.dp.spread_group();
        let id = SessionId::random();
        let cname = cname_for(&id);
        let mut offered: Vec<OfferMedia> = pub_legs
            .iter()
            .map(|l| OfferMedia {
                kind: sdp_kind(l.kind),
                mid: pub_offer
                    .and_then(|o| o.media.get(l.mline))
                    .and_then(|m| m.mid.clone()),
                codec: l.codec.clone(),
                dtmf: l.dtmf.clone(),
                direction: Direction::SendOnly,
                ssrc: Some(random_ssrc()),
                cname: Some(cname.clone()),
                rtx: None,
                rtx_ssrc: None,
            })
            .collect();
        // The publisher's data channels (a relay publisher's: its origin's) are mirrored to
        // the listener.
        let data = self.publisher_has_data(&publisher);
        let (opened, offer) = self.open_offer_legs(group, &mut offered, sdp_type, &cname, data)?;
        let legs = opened.legs;
        for (pl, ll) in pub_legs.iter().zip(&legs) {
            let rewrite = Rewrite {
                pt_map: Vec::new(),
                ssrc: ll.ssrc,
            };
            if let Err(e) = self.send(Command::Connect {
                from: pl.info.id,
                to: ll.info.id,
                kind: ll.kind,
                rewrite,
            }) {
                self.abandon_legs(&legs);
                return Err(e);
            }
        }
        let kind = Kind::Listen {
            room: room.clone(),
            publisher: publisher.clone(),
        };
        let opts = NewSession::from_create(conn, c);
        let mut s = opts.build(id.clone(), kind, group, offer.clone(), legs);
        s.sdp_type = sdp_type;
        s.webrtc = opened.webrtc;
        self.insert_session(s, c.subscribe);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.listeners.push(id.clone());
        }
        self.emit_room(
            &room,
            "started_listener",
            json!({ "session_id": id, "publisher_id": publisher }),
        );
        Ok(json!({ "session_id": id, "offer": offer.to_json() }))
    }

    /// Switches a listener to another publisher of its room, without renegotiation: the
    /// listener keeps its SSRC and payload types; the data plane keeps seq/ts continuous,
    /// switches audio at once and holds video until the new publisher's keyframe.
    pub(super) fn set_type(&mut self, id: &SessionId, publisher: &SessionId) -> Outcome {
        let l = self.session(id)?;
        let Kind::Listen { room, .. } = &l.kind else {
            return Err(ApiError::invalid(format!("session {id} is not a listener")));
        };
        let room = room.clone();
        let listener_legs = l.legs.clone();
        let (pub_room, pub_legs, _) = self.publisher(publisher)?;
        if pub_room != room {
            return Err(ApiError::invalid(format!(
                "publisher {publisher} is not in the listener's room {room}"
            )));
        }
        // Disconnects first: on a bundled leg one cuts every kind, and the connects that
        // follow restore the kinds the new publisher has.
        let mut disconnects = Vec::new();
        let mut connects = Vec::new();
        for ll in &listener_legs {
            let cmd = match pub_legs.iter().find(|p| p.kind == ll.kind) {
                Some(pl) => {
                    let want = ll.offered.as_ref().map_or(&ll.codec, |o| &o.codec);
                    let mut pt_map = Vec::new();
                    if pl.codec.pt != want.pt {
                        pt_map.push((pl.codec.pt, want.pt));
                        let want_dtmf = ll.offered.as_ref().and_then(|o| o.dtmf.as_ref());
                        if let (Some(a), Some(b)) = (&pl.dtmf, want_dtmf) {
                            pt_map.push((a.pt, b.pt));
                        }
                    }
                    Command::Connect {
                        from: pl.info.id,
                        to: ll.info.id,
                        kind: ll.kind,
                        rewrite: Rewrite {
                            pt_map,
                            ssrc: ll.ssrc,
                        },
                    }
                }
                None => Command::Disconnect { to: ll.info.id },
            };
            match cmd {
                Command::Disconnect { .. } => disconnects.push(cmd),
                _ => connects.push(cmd),
            }
        }
        // Video from the new publisher waits for its first keyframe (requested below), so
        // the listener never decodes a picture predicted from the old one.
        let codec = self
            .rooms
            .get(&room)
            .and_then(|r| super::quality::video_codec(r.video_codec));
        let holds: Vec<Command> = connects
            .iter()
            .filter_map(|cmd| match (cmd, codec) {
                (
                    Command::Connect {
                        to,
                        kind: MediaKind::Video,
                        ..
                    },
                    Some(codec),
                ) => Some(Command::HoldForKeyframe { to: *to, codec }),
                _ => None,
            })
            .collect();
        for cmd in disconnects.into_iter().chain(connects).chain(holds) {
            self.send(cmd)?;
        }
        let old = match self.sessions.get_mut(id) {
            Some(s) => std::mem::replace(
                &mut s.kind,
                Kind::Listen {
                    room,
                    publisher: publisher.clone(),
                },
            ),
            None => return Err(ApiError::session_not_found(id.as_str())),
        };
        if let Kind::Listen { publisher: old, .. } = old {
            self.relay_maybe_idle(&old);
        }
        self.repoint_mirrors(id);
        self.request_keyframes_for(id);
        self.emit_session(
            id,
            "type",
            json!({ "type": "listen", "publisher_id": self.public_publisher_id(publisher) }),
        );
        Ok(json!({}))
    }
}
