//! Proxy sessions (the gateway) and `set_answer` for every session whose offer the server made
//! (proxy slaves, listeners).
//!
//! Master M answers its peer's offer (plain or WebRTC); its slave S offers the same codecs (same
//! payload types) in the profile M's `sdp_type` asks for: `rtp` (the WebRTC→SIP gateway) or
//! `webrtc` (the default; SIP→WebRTC for a plain master, WebRTC↔WebRTC for a WebRTC one). Once
//! S's answer arrives the legs are connected both ways, payload types mapped; SRTP is
//! decrypted on a secure leg and (re-)encrypted on the other, and a route into a WebRTC leg
//! always carries the SSRC that leg's SDP announced.

use serde_json::json;
use sluice_dataplane::api::{Command, Feedback, Rewrite};

use super::flows::{NewSession, answered_dtmf, client_sdp, pt_pairs, select_media};
use super::session::{ConnId, Kind, MediaLine, MediaSettings, SdpText, Transport};
use super::webrtc_flows::cname_for;
use super::{Manager, Outcome, SessionId, peer_sdp, remote_of, sdp_kind};
use crate::errors::{ApiError, ErrorCode};
use crate::request::{CreateSession, SdpObject, SdpType};
use crate::sdp::{self, Codec, Forced, OfferMedia, Proto, Sdp};

/// What the peer's answer kept of the feedback the server offered on `leg`: NACK when the
/// answered codec has `rtcp-fb nack` (WebRTC or RTP/AVPF), RTX when the answer has an RTX
/// format for it. RTX keeps the payload types the server offered: they are what it sends.
fn answered_feedback(leg: &MediaLine, m: &sdp::Media, codec: &Codec) -> Feedback {
    let webrtc = leg.transport == Transport::Webrtc;
    let ours = leg.offered.as_ref();
    let rtx = ours
        .and_then(|o| Some((o.codec.pt, o.rtx.as_ref()?.pt)))
        .filter(|_| webrtc && m.codecs.iter().any(|c| c.apt() == Some(codec.pt)));
    Feedback {
        clock_rate: codec.clock_rate,
        nack: codec.has_nack() && (webrtc || m.proto == Proto::RtpAvpf),
        rtx_pts: rtx.map_or(Vec::new(), |(media, rtx)| vec![(media, rtx)]),
        rtx_ssrc: rtx.and(leg.rtx_ssrc),
    }
}

impl Manager {
    pub(super) fn create_master(&mut self, conn: ConnId, c: &CreateSession) -> Outcome {
        let offer = peer_sdp(c.offer.as_ref())?;
        // A WebRTC offer of data channels alone is relayed to a WebRTC slave.
        let selected = select_media(&offer, &Forced::default())?;
        if selected.iter().all(Option::is_none)
            && matches!(c.sdp_type, Some(SdpType::Rtp | SdpType::Srtp))
        {
            return Err(ApiError::invalid(
                "an offer of data channels alone has nothing to relay to a plain RTP slave",
            ));
        }
        let group = self.new_group();
        let opened = self.open_answer_legs(group, &offer, &selected)?;
        let id = SessionId::random();
        let kind = Kind::ProxyMaster { slave: None };
        let mut s = NewSession::from_create(conn, c).build(
            id.clone(),
            kind,
            group,
            client_sdp(c.offer.as_ref(), &offer),
            opened.legs,
        );
        // A master's `sdp_type` is the profile of its slave's offer.
        s.sdp_type = c.sdp_type.unwrap_or_default();
        s.webrtc = opened.webrtc;
        s.peer_offer = Some(offer);
        s.selected = selected;
        self.insert_session(s, c.subscribe);
        Ok(json!({ "session_id": id }))
    }

    pub(super) fn get_proxy_offer(&mut self, conn: ConnId, master: &SessionId) -> Outcome {
        let m = self.session(master)?;
        match &m.kind {
            Kind::ProxyMaster { slave: Some(s) } => {
                let s = self.session(s)?;
                Ok(json!({ "session_id": s.id, "offer": s.offer.to_json() }))
            }
            Kind::ProxyMaster { slave: None } => {
                self.admit_session()?;
                let opts = NewSession {
                    owner: conn,
                    stop_after_peer: m.stop_after_peer,
                    wait_timeout: m.wait_timeout,
                    ready_timeout: m.ready_timeout,
                    subscribe: true,
                    media: MediaSettings::default(),
                };
                let sdp_type = m.sdp_type;
                self.create_slave(master, sdp_type, opts)
            }
            _ => Err(ApiError::invalid(format!(
                "session {master} is not a proxy master"
            ))),
        }
    }

    /// The slave S of proxy master M: S offers M's selected codecs (same PTs) from legs in M's
    /// group; they are connected once S's answer arrives.
    pub(super) fn create_slave(
        &mut self,
        master: &SessionId,
        sdp_type: SdpType,
        opts: NewSession,
    ) -> Outcome {
        let m = self.session(master)?;
        let Kind::ProxyMaster { slave: None } = &m.kind else {
            return Err(ApiError::invalid(format!(
                "session {master} is not a proxy master without slave"
            )));
        };
        let group = m.group;
        let mut offered: Vec<OfferMedia> = m
            .legs
            .iter()
            .map(|l| {
                let peer_m = m.peer_offer.as_ref().and_then(|o| o.media.get(l.mline));
                OfferMedia {
                    kind: sdp_kind(l.kind),
                    mid: peer_m.and_then(|pm| pm.mid.clone()),
                    codec: l.codec.clone(),
                    dtmf: l.dtmf.clone(),
                    direction: peer_m.map(|pm| pm.direction).unwrap_or_default(),
                    ssrc: None,
                    cname: None,
                    rtx: None,
                    rtx_ssrc: None,
                }
            })
            .collect();
        // A WebRTC master's data channels are offered to a WebRTC slave and relayed.
        let data = m.webrtc.is_some()
            && m.peer_offer
                .as_ref()
                .and_then(crate::webrtc::sdp::data_offer)
                .is_some();
        let id = SessionId::random();
        let (opened, offer) =
            self.open_offer_legs(group, &mut offered, sdp_type, &cname_for(&id), data)?;
        let kind = Kind::ProxySlave {
            master: master.clone(),
        };
        let subscribe = opts.subscribe;
        let mut s = opts.build(id.clone(), kind, group, offer.clone(), opened.legs);
        s.sdp_type = sdp_type;
        s.webrtc = opened.webrtc;
        if let Some(m) = self.sessions.get_mut(master) {
            m.kind = Kind::ProxyMaster {
                slave: Some(id.clone()),
            };
        }
        self.insert_session(s, subscribe);
        Ok(json!({ "session_id": id, "offer": offer.to_json() }))
    }

    pub(super) fn set_answer(&mut self, id: &SessionId, answer: &SdpObject) -> Outcome {
        let s = self.session(id)?;
        if s.answer.is_some() {
            return Err(ApiError::plain(ErrorCode::AnswerAlreadySet));
        }
        let kind = s.kind.clone();
        if !matches!(kind, Kind::ProxySlave { .. } | Kind::Listen { .. }) {
            return Err(ApiError::invalid(format!(
                "session {id} takes no answer (for a proxy, set the answer on its slave session)"
            )));
        }
        let webrtc = s.webrtc.is_some();
        let sdp = peer_sdp(Some(answer))?;
        if sdp.is_webrtc() != webrtc {
            let (ours, theirs) = if webrtc {
                ("WebRTC", "plain RTP")
            } else {
                ("plain RTP", "WebRTC")
            };
            return Err(ApiError::invalid(format!(
                "the server offered {ours} on session {id}: a {theirs} answer does not fit"
            )));
        }
        self.apply_answer(id, &sdp)?;
        if webrtc {
            self.webrtc_apply_answer(id, &sdp)?;
        }
        if let Kind::ProxySlave { master } = &kind {
            self.connect_proxy(master, id)?;
        }
        self.mark_ready(id, client_sdp(Some(answer), &sdp), false);
        if !webrtc {
            // A WebRTC peer asks once its keys are in place (see `webrtc_flows`).
            self.request_keyframes_for(id);
        }
        Ok(json!({}))
    }

    /// Matches the peer's answer to what we offered on each leg and points plain legs at it
    /// (a WebRTC leg's remote is what ICE selects).
    fn apply_answer(&mut self, id: &SessionId, answer: &Sdp) -> Result<(), ApiError> {
        let s = self.session(id)?;
        let mut updates = Vec::with_capacity(s.legs.len());
        for leg in &s.legs {
            let m = answer.media.get(leg.mline);
            let chosen = match (m, leg.offered.as_ref()) {
                (Some(m), Some(ours)) => sdp::answered_codec(m, ours).map(|c| (c, m)),
                _ => None,
            };
            let srtp = match chosen {
                Some((_, m)) if !leg.sdes.is_empty() => Some(answered_sdes(&leg.sdes, m)?),
                _ => None,
            };
            updates.push(chosen.map(|(codec, m)| {
                let dtmf = answered_dtmf(m, codec.clock_rate);
                let feedback = answered_feedback(leg, m, &codec);
                (codec, dtmf, remote_of(answer, m), feedback, srtp)
            }));
        }
        // An offer of data channels alone (a listener of a chat-only publisher) is answered
        // by its data line.
        let data_accepted = s.webrtc.is_some() && crate::webrtc::sdp::data_offer(answer).is_some();
        if updates.iter().all(Option::is_none) && !data_accepted {
            return Err(ApiError::invalid(
                "the answer accepts none of the offered media (no matching codec)",
            ));
        }
        let mut commands = Vec::new();
        if let Some(s) = self.sessions.get_mut(id) {
            for (leg, update) in s.legs.iter_mut().zip(updates) {
                if let Some((codec, dtmf, remote, feedback, srtp)) = update {
                    if let Some(keys) = srtp {
                        commands.push(Command::SetSrtp {
                            leg: leg.info.id,
                            keys: Box::new(keys),
                        });
                    }
                    leg.codec = codec;
                    leg.dtmf = dtmf;
                    leg.accepted = true;
                    if feedback != Feedback::default() {
                        commands.push(Command::SetFeedback {
                            leg: leg.info.id,
                            kind: leg.kind,
                            feedback: feedback.clone(),
                        });
                    }
                    leg.feedback = feedback;
                    if leg.transport == Transport::Plain {
                        leg.remote = remote;
                        commands.push(Command::SetRemote {
                            leg: leg.info.id,
                            remote,
                        });
                    }
                }
            }
        }
        for cmd in commands {
            self.send(cmd)?;
        }
        Ok(())
    }

    /// Connects master and slave legs both ways and makes the master's answer.
    fn connect_proxy(&mut self, master: &SessionId, slave: &SessionId) -> Result<(), ApiError> {
        let m = self.session(master)?;
        let s = self.session(slave)?;
        let mut commands = Vec::new();
        let mut selected = m.selected.clone();
        let mut ports = vec![0; m.peer_offer.as_ref().map_or(0, |o| o.media.len())];
        for (ml, sl) in m.legs.iter().zip(&s.legs) {
            if !sl.accepted {
                if let Some(x) = selected.get_mut(ml.mline) {
                    *x = None;
                }
                continue;
            }
            if let Some(p) = ports.get_mut(ml.mline) {
                *p = ml.info.rtp_port;
            }
            let fwd = pt_pairs((&ml.codec, ml.dtmf.as_ref()), (&sl.codec, sl.dtmf.as_ref()));
            let back = fwd.iter().map(|(a, b)| (*b, *a)).collect();
            commands.push(Command::Connect {
                from: ml.info.id,
                to: sl.info.id,
                kind: ml.kind,
                rewrite: Rewrite {
                    pt_map: fwd,
                    ssrc: sl.ssrc,
                },
            });
            commands.push(Command::Connect {
                from: sl.info.id,
                to: ml.info.id,
                kind: ml.kind,
                rewrite: Rewrite {
                    pt_map: back,
                    ssrc: ml.ssrc,
                },
            });
        }
        let Some(peer_offer) = m.peer_offer.clone() else {
            return Err(ApiError::new(
                ErrorCode::InternalError,
                "proxy master without offer",
            ));
        };
        let master_webrtc = m.webrtc.is_some();
        for cmd in commands {
            self.send(cmd)?;
        }
        let answer = if master_webrtc {
            self.session_webrtc_answer(master, &peer_offer, &selected)
                .map(|sdp| SdpText::of(&sdp))
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::InternalError, "WebRTC master without legs")
                })?
        } else {
            let local = self.local_transport(ports);
            SdpText::rtp(&sdp::build_answer(&peer_offer, &selected, &local))
        };
        self.mark_ready(master, answer, true);
        Ok(())
    }
}

/// The SRTP keys of an SDES leg once answered: the answer's `a=crypto` names (by tag) which
/// of the offered suites it took, and carries the peer's key for it.
fn answered_sdes(
    offered: &[crate::sdp::sdes::SdesKey],
    m: &crate::sdp::Media,
) -> Result<sluice_dataplane::srtp::SessionKeys, ApiError> {
    let theirs = crate::sdp::sdes::keys(m);
    theirs
        .iter()
        .find_map(|t| {
            let ours = offered
                .iter()
                .find(|o| o.tag == t.tag && o.profile == t.profile)?;
            Some(sluice_dataplane::srtp::SessionKeys {
                local: ours.master()?,
                remote: t.master()?,
            })
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "the answer to an SRTP offer has no a=crypto line matching an offered one",
            )
        })
}
