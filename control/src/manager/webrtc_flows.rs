//! The manager's side of WebRTC sessions: opening the bundled secure leg, the server's WebRTC
//! SDP (answers and offers, with the SSRCs it sends with), the slow path (`Event::SlowPath`),
//! the periodic tick, and trickle ICE (`set_candidate`, `set_candidate_end`).

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::json;
use sluice_dataplane::api::{Command, GroupId, LegId, LegInfo, LegSpec, MediaKind, Pt, Remote};

use super::session::{Kind, MediaLine, Session};
use super::{Manager, Outcome, SessionId, random_u64};
use crate::errors::{ApiError, ErrorCode};
use crate::sdp::{Codec, Direction, OfferMedia, Sdp, Selected};
use crate::webrtc::sdp::{
    DataOffer, RemoteIce, WebrtcLocal, announce_ssrc, data_offer, webrtc_answer_with_data,
    webrtc_offer_with_data,
};
use crate::webrtc::transport::{Effect, WebrtcTransport};

#[path = "datachannels.rs"]
mod datachannels;

/// `cname` of the streams the server sends (RFC 7022 allows any per-session value).
pub(super) fn cname_for(session: &SessionId) -> String {
    let s = session.as_str();
    format!("sluice-{}", s.get(..8).unwrap_or(s))
}

/// The peer's ICE/DTLS parameters, or why its WebRTC SDP is unusable.
pub(super) fn remote_ice(sdp: &Sdp) -> Result<RemoteIce, ApiError> {
    RemoteIce::from_sdp(sdp).map_err(|e| ApiError::invalid(format!("invalid WebRTC SDP: {e}")))
}

/// What one bundled leg carries: every stream's codec (and DTMF) payload type.
fn bundle_of<'a>(
    streams: impl Iterator<Item = (MediaKind, &'a Codec, Option<&'a Codec>)>,
) -> Vec<(Pt, MediaKind)> {
    let mut bundle = Vec::new();
    for (kind, codec, dtmf) in streams {
        for c in std::iter::once(codec).chain(dtmf) {
            if !bundle.iter().any(|(pt, _)| *pt == c.pt) {
                bundle.push((c.pt, kind));
            }
        }
    }
    bundle
}

/// Adds `a=ssrc:N cname:…`, `a=ssrc:N msid:…` and `a=msid` to every m-line on which the server
/// sends (RFC 8830): str0m, for one, drops RTP with an SSRC its remote SDP does not declare.
pub(super) fn announce_ssrcs(sdp: &mut Sdp, legs: &[MediaLine], cname: &str) {
    for leg in legs {
        let (Some(ssrc), Some(m)) = (leg.ssrc, sdp.media.get_mut(leg.mline)) else {
            continue;
        };
        if m.port == 0 || !matches!(m.direction, Direction::SendRecv | Direction::SendOnly) {
            continue;
        }
        announce_ssrc(m, ssrc, leg.rtx_ssrc, cname);
    }
}

impl Manager {
    /// Opens the one bundled secure leg of a WebRTC session.
    pub(super) fn open_bundle<'a>(
        &mut self,
        group: GroupId,
        streams: impl Iterator<Item = (MediaKind, &'a Codec, Option<&'a Codec>)>,
    ) -> Result<LegInfo, ApiError> {
        let bundle = bundle_of(streams);
        let kind = bundle.first().map_or(MediaKind::Audio, |(_, k)| *k);
        let spec = LegSpec {
            group,
            kind,
            remote: Remote {
                rtp: None,
                rtcp: None,
                rtcp_mux: true,
            },
            secure: true,
            bundle,
        };
        let info = self.dp.open_leg(spec).map_err(|e| {
            ApiError::new(
                ErrorCode::InternalError,
                format!("cannot open media ports: {e}"),
            )
        })?;
        self.register_opened(&info);
        Ok(info)
    }

    /// Opens the bundled leg for the accepted m-lines of a WebRTC offer.
    pub(super) fn open_answer_bundle(
        &mut self,
        group: GroupId,
        offer: &Sdp,
        selected: &[Option<Selected>],
    ) -> Result<(LegInfo, WebrtcTransport), ApiError> {
        let remote = remote_ice(offer)?;
        let streams = selected
            .iter()
            .flatten()
            .filter_map(|s| super::dp_kind(&s.kind).map(|k| (k, &s.codec, s.dtmf.as_ref())));
        let info = self.open_bundle(group, streams)?;
        let mut transport = WebrtcTransport::answering(info.id, &remote, self.data_limits);
        transport.port = info.rtp_port;
        Ok((info, transport))
    }

    /// Opens the bundled leg for an offer the server makes.
    pub(super) fn open_offer_bundle(
        &mut self,
        group: GroupId,
        offered: &[OfferMedia],
    ) -> Result<(LegInfo, WebrtcTransport), ApiError> {
        let streams = offered
            .iter()
            .filter_map(|om| super::dp_kind(&om.kind).map(|k| (k, &om.codec, om.dtmf.as_ref())));
        let info = self.open_bundle(group, streams)?;
        let mut transport = WebrtcTransport::offering(info.id, self.data_limits);
        transport.port = info.rtp_port;
        Ok((info, transport))
    }

    fn webrtc_local(&mut self, t: &WebrtcTransport, port: u16) -> WebrtcLocal {
        self.sdp_version += 1;
        let mut local = t.local(self.announced_ip, port, &self.cert);
        local.session_id = random_u64() >> 2;
        local.session_version = self.sdp_version;
        local
    }

    /// The server's WebRTC answer to an offer, its selected codecs and the data m-line it
    /// accepts, announcing the SSRCs of `legs`.
    pub(super) fn webrtc_answer_sdp(
        &mut self,
        t: &WebrtcTransport,
        port: u16,
        (offer, selected, data): (&Sdp, &[Option<Selected>], Option<&DataOffer>),
        legs: &[MediaLine],
        cname: &str,
    ) -> Sdp {
        let local = self.webrtc_local(t, port);
        let mut answer = webrtc_answer_with_data(offer, selected, data, &local);
        announce_ssrcs(&mut answer, legs, cname);
        answer
    }

    /// The server's WebRTC offer (`actpass`), with a data m-line when `data`; each entry's
    /// SSRC is announced by the writer.
    pub(super) fn webrtc_offer_sdp(
        &mut self,
        t: &WebrtcTransport,
        port: u16,
        offered: &[OfferMedia],
        data: bool,
    ) -> Sdp {
        let local = self.webrtc_local(t, port);
        webrtc_offer_with_data(offered, data, &local)
    }

    /// The WebRTC answer of a session whose transport lives in it already (a proxy master).
    pub(super) fn session_webrtc_answer(
        &mut self,
        id: &SessionId,
        offer: &Sdp,
        selected: &[Option<Selected>],
    ) -> Option<Sdp> {
        self.sdp_version += 1;
        let version = self.sdp_version;
        // A WebRTC slave that took the data m-line we offered: the master's is accepted too,
        // and channels are relayed both ways.
        let slave_data = match self.sessions.get(id).map(|s| &s.kind) {
            Some(Kind::ProxyMaster { slave: Some(slave) }) => self
                .sessions
                .get(slave)
                .and_then(|s| s.webrtc.as_ref())
                .is_some_and(|t| t.has_data()),
            _ => false,
        };
        let data = data_offer(offer).filter(|_| slave_data);
        let s = self.sessions.get_mut(id)?;
        let t = s.webrtc.as_mut()?;
        if let Some(d) = &data {
            t.enable_data(d.max_message_size);
        }
        // A master of data channels alone has no media leg: its transport's port.
        let port = s.legs.first().map_or(t.port, |l| l.info.rtp_port);
        let mut local = t.local(self.announced_ip, port, &self.cert);
        local.session_id = random_u64() >> 2;
        local.session_version = version;
        let mut answer = webrtc_answer_with_data(offer, selected, data.as_ref(), &local);
        announce_ssrcs(&mut answer, &s.legs, &cname_for(id));
        Some(answer)
    }

    /// The peer's answer to the server's WebRTC offer: ICE credentials, fingerprint, role.
    pub(super) fn webrtc_apply_answer(
        &mut self,
        id: &SessionId,
        answer: &Sdp,
    ) -> Result<(), ApiError> {
        let remote = remote_ice(answer)?;
        let mut out = Vec::new();
        let now = Instant::now();
        let cert = &self.cert;
        let Some(t) = self.sessions.get_mut(id).and_then(|s| s.webrtc.as_mut()) else {
            return Err(ApiError::invalid(format!(
                "session {id} has no WebRTC transport"
            )));
        };
        t.apply_answer(&remote, cert, now, &mut out)?;
        // Our offer had a data m-line (a listener's) and the peer accepted it.
        if let Some(data) = data_offer(answer) {
            t.enable_data(data.max_message_size);
        }
        self.apply_effects(id, out);
        Ok(())
    }

    /// A STUN or DTLS datagram from a secure leg.
    pub(super) fn slow_path(&mut self, leg: LegId, from: SocketAddr, data: &[u8]) {
        let Some(id) = self.leg_owner.get(&leg).cloned() else {
            return;
        };
        let cert = &self.cert;
        let Some(t) = self.sessions.get_mut(&id).and_then(|s| s.webrtc.as_mut()) else {
            tracing::debug!(?leg, "slow-path datagram on a leg without WebRTC transport");
            return;
        };
        let mut out = Vec::new();
        t.handle_datagram(Instant::now(), from, data, cert, &mut out);
        self.apply_effects(&id, out);
    }

    /// `Event::SrtpRefused`: the session's WebRTC transport has failed.
    pub(super) fn srtp_refused(&mut self, leg: LegId, error: &str) {
        let Some(id) = self.leg_owner.get(&leg).cloned() else {
            return;
        };
        let Some(t) = self.sessions.get_mut(&id).and_then(|s| s.webrtc.as_mut()) else {
            return;
        };
        let mut out = Vec::new();
        t.srtp_refused(error, &mut out);
        self.apply_effects(&id, out);
    }

    /// DTLS retransmissions and ICE consent of every WebRTC session.
    pub(super) fn webrtc_tick(&mut self) {
        let now = Instant::now();
        let cert = &self.cert;
        let mut pending = Vec::new();
        let sessions = &mut self.sessions;
        // Every WebRTC transport arrives with its session (`insert_session`) and leaves with
        // it; an id whose session lost it is dropped here all the same.
        self.webrtc_sessions.retain(|id| {
            let Some(t) = sessions.get_mut(id).and_then(|s| s.webrtc.as_mut()) else {
                return false;
            };
            let mut out = Vec::new();
            t.tick(now, cert, &mut out);
            if !out.is_empty() {
                pending.push((id.clone(), out));
            }
            true
        });
        for (id, out) in pending {
            self.apply_effects(&id, out);
        }
    }

    fn apply_effects(&mut self, id: &SessionId, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Data(ev) => self.data_event(id, ev),
                Effect::Send(cmd) => {
                    // A failure is logged by `send`; the session's timers clean up.
                    let _ = self.send(cmd);
                }
                Effect::Status(body) => {
                    // Video can start at once: ask whoever feeds this peer for a keyframe
                    // now that SRTP keys are in place.
                    if body["status"] == "up" {
                        self.request_keyframes_for(id);
                        // SRTCP keys are in place: the REMB can go out without waiting for
                        // the next repeat.
                        if self.sessions.get(id).is_some_and(|s| s.bitrate_sent != 0) {
                            self.push_bitrate(id, true);
                        }
                    }
                    self.emit_session(id, "status", body);
                }
            }
        }
    }

    /// Asks the sender(s) of the video this session's peer receives for a keyframe (RTCP PLI):
    /// a listener's publisher, a proxy leg's peer, an echo's own peer. Used when a WebRTC
    /// transport comes up, a listener is answered or switched, or video is unmuted.
    pub(super) fn request_keyframes_for(&self, id: &SessionId) {
        let Some(s) = self.sessions.get(id) else {
            return;
        };
        if !s.legs.iter().any(|l| l.kind == MediaKind::Video) {
            return;
        }
        let feeder = match &s.kind {
            Kind::Listen { publisher, .. } => self.sessions.get(publisher),
            Kind::ProxyMaster { slave: Some(p) } | Kind::ProxySlave { master: p } => {
                self.sessions.get(p)
            }
            Kind::Echo | Kind::Publish { .. } => Some(s),
            Kind::ProxyMaster { slave: None } => None,
        };
        self.request_own_keyframe(feeder);
    }

    /// A keyframe request to the session's own peer, on each of its video legs.
    pub(super) fn request_own_keyframe(&self, s: Option<&Session>) {
        let mut asked: Vec<LegId> = Vec::new();
        for l in s.iter().flat_map(|s| &s.legs) {
            if l.kind == MediaKind::Video && !asked.contains(&l.info.id) {
                asked.push(l.info.id);
                let _ = self.send(Command::RequestKeyframe {
                    leg: l.info.id,
                    kind: MediaKind::Video,
                });
            }
        }
    }

    /// `set_candidate`: a trickled candidate of the session's WebRTC peer.
    pub(super) fn set_candidate(
        &mut self,
        id: &SessionId,
        mid: Option<&str>,
        mline_index: Option<u32>,
        candidate: &str,
    ) -> Outcome {
        let s = self.session_mut(id)?;
        let lines = webrtc_mlines(s);
        if let Some(i) = mline_index
            && !lines.is_empty()
            && i as usize >= lines.len()
        {
            return Err(ApiError::invalid(format!(
                "sdpMLineIndex {i} is out of range ({} m-lines)",
                lines.len()
            )));
        }
        if let Some(mid) = mid
            && !lines.is_empty()
            && !lines.iter().any(|m| m.as_deref() == Some(mid))
        {
            return Err(ApiError::invalid(format!("no m-line with sdpMid {mid:?}")));
        }
        let t = transport_of(s)?;
        // An empty candidate is how browsers say end-of-candidates.
        if candidate.trim().is_empty() {
            t.end_of_candidates();
        } else {
            t.add_candidate(candidate)?;
        }
        Ok(json!({}))
    }

    /// `set_candidate_end`.
    pub(super) fn set_candidate_end(&mut self, id: &SessionId) -> Outcome {
        let s = self.session_mut(id)?;
        transport_of(s)?.end_of_candidates();
        Ok(json!({}))
    }
}

fn transport_of(s: &mut Session) -> Result<&mut WebrtcTransport, ApiError> {
    let id = s.id.clone();
    s.webrtc.as_deref_mut().ok_or_else(|| {
        ApiError::invalid(format!(
            "session {id} has no WebRTC transport (ICE candidates apply to WebRTC peers only)"
        ))
    })
}

/// The mids of the WebRTC peer's SDP (its offer, else the server's offer it answers).
fn webrtc_mlines(s: &Session) -> Vec<Option<String>> {
    let sdp = s
        .peer_offer
        .clone()
        .or_else(|| Sdp::parse(&s.offer.sdp).ok());
    sdp.map(|o| o.media.iter().map(|m| m.mid.clone()).collect())
        .unwrap_or_default()
}
