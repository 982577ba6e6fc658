//! Session creation and offer/answer for echo and proxy sessions, and `set_answer` for every
//! session whose offer the server made (proxy slaves, listeners).

use serde_json::{Value, json};
use sluice_dataplane::api::{Command, GroupId, MediaKind, Pt, Remote, Rewrite};

use super::session::{ConnId, Kind, Leg, MediaSettings, SdpText, Session, Transport};
use super::{Manager, Outcome, WEBRTC_UNAVAILABLE, dp_kind, new_id, peer_sdp, remote_of, sdp_kind};
use crate::errors::{ApiError, ErrorCode};
use crate::request::{CreateSession, SdpObject, SdpType, SessionType};
use crate::sdp::{self, Codec, Forced, NegotiationError, OfferMedia, Sdp, Selected};

/// Settings a new session takes from its `create` (or, for a slave made by
/// `get_proxy_offer`, from its master).
pub(super) struct NewSession {
    pub owner: ConnId,
    pub stop_after_peer: bool,
    pub wait_timeout: std::time::Duration,
    pub ready_timeout: std::time::Duration,
    pub subscribe: bool,
    pub media: MediaSettings,
}

impl NewSession {
    pub fn from_create(owner: ConnId, c: &CreateSession) -> Self {
        let mut media = MediaSettings::default();
        media.apply(&c.media);
        NewSession {
            owner,
            stop_after_peer: c.stop_after_peer,
            wait_timeout: c.wait_timeout,
            ready_timeout: c.ready_timeout,
            subscribe: c.subscribe,
            media,
        }
    }

    pub fn build(
        &self,
        id: String,
        kind: Kind,
        group: GroupId,
        offer: SdpText,
        legs: Vec<Leg>,
    ) -> Session {
        Session {
            id,
            kind,
            owner: self.owner,
            group,
            sdp_type: SdpType::Rtp,
            offer,
            answer: None,
            peer_offer: None,
            selected: Vec::new(),
            legs,
            media: self.media,
            stop_after_peer: self.stop_after_peer,
            wait_timeout: self.wait_timeout,
            ready_timeout: self.ready_timeout,
            timer_gen: 0,
            answer_waiters: Vec::new(),
        }
    }
}

pub(super) fn negotiation_error(e: NegotiationError) -> ApiError {
    ApiError::invalid(e.to_string())
}

/// The server only generates plain RTP for now.
pub(super) fn require_rtp(sdp_type: SdpType) -> Result<(), ApiError> {
    match sdp_type {
        SdpType::Rtp => Ok(()),
        SdpType::Webrtc => Err(ApiError::invalid(WEBRTC_UNAVAILABLE)),
    }
}

/// The offer as the client sent it, kept verbatim for `get_offer`/`get_info`.
fn client_sdp(obj: Option<&SdpObject>) -> SdpText {
    SdpText {
        sdp: obj.and_then(|o| o.sdp.clone()).unwrap_or_default(),
        sdp_type: SdpType::Rtp,
    }
}

/// `telephone-event` at `rate` in an answered m-line (RFC 4733 §7.1.1).
fn answered_dtmf(m: &sdp::Media, rate: u32) -> Option<Codec> {
    m.codecs
        .iter()
        .find(|c| c.is_telephone_event() && c.clock_rate == rate)
        .cloned()
}

/// PT translation from a leg with `(codec, dtmf)` to one with `(to, to_dtmf)`.
fn pt_pairs(from: (&Codec, Option<&Codec>), to: (&Codec, Option<&Codec>)) -> Vec<(Pt, Pt)> {
    let mut map = vec![(Pt(from.0.pt), Pt(to.0.pt))];
    if let (Some(a), Some(b)) = (from.1, to.1) {
        map.push((Pt(a.pt), Pt(b.pt)));
    }
    map
}

impl Manager {
    pub(super) fn create(&mut self, conn: ConnId, c: CreateSession) -> Outcome {
        match (c.session_type, c.master_id.clone()) {
            (SessionType::Echo, _) => self.create_echo(conn, &c),
            (SessionType::Proxy, None) => self.create_master(conn, &c),
            (SessionType::Proxy, Some(master)) => {
                if let Some(Kind::ProxyMaster { slave: Some(s) }) =
                    self.sessions.get(&master).map(|m| &m.kind)
                {
                    return Err(ApiError::invalid(format!(
                        "proxy session {master} already has slave {s}"
                    )));
                }
                let sdp_type = match c.sdp_type {
                    Some(t) => t,
                    None => self.session(&master)?.sdp_type,
                };
                self.create_slave(&master, sdp_type, NewSession::from_create(conn, &c))
            }
            (SessionType::Publish, _) => self.create_publisher(conn, &c),
            (SessionType::Listen, _) => self.create_listener(conn, &c),
        }
    }

    /// Opens one leg per accepted m-line of a peer's offer; returns the legs and the RTP port
    /// of every m-line (0 = rejected).
    pub(super) fn open_answer_legs(
        &mut self,
        group: GroupId,
        offer: &Sdp,
        selected: &[Option<Selected>],
    ) -> Result<(Vec<Leg>, Vec<u16>), ApiError> {
        let mut accepted: Vec<(usize, MediaKind, Remote, &Selected)> = Vec::new();
        for (i, sel) in selected.iter().enumerate() {
            if let (Some(s), Some(m)) = (sel, offer.media.get(i))
                && let Some(kind) = dp_kind(&s.kind)
            {
                accepted.push((i, kind, remote_of(offer, m), s));
            }
        }
        let specs: Vec<(MediaKind, Remote)> = accepted.iter().map(|a| (a.1, a.2)).collect();
        let infos = self.open_legs(group, &specs)?;
        let mut ports = vec![0; offer.media.len()];
        let legs = accepted
            .into_iter()
            .zip(infos)
            .map(|((mline, kind, remote, s), info)| {
                ports[mline] = info.rtp_port;
                Leg {
                    info,
                    kind,
                    transport: Transport::Plain,
                    mline,
                    codec: s.codec.clone(),
                    dtmf: s.dtmf.clone(),
                    remote,
                    latched: None,
                    offered: None,
                    ssrc: None,
                    accepted: true,
                }
            })
            .collect();
        Ok((legs, ports))
    }

    /// Closes legs opened for a session that could not be completed.
    pub(super) fn abandon_legs(&mut self, legs: &[Leg]) {
        for l in legs {
            self.close_leg(l.info.id);
        }
    }

    fn create_echo(&mut self, conn: ConnId, c: &CreateSession) -> Outcome {
        let offer = peer_sdp(c.offer.as_ref())?;
        let selected = sdp::select_codecs(&offer, &Forced::default()).map_err(negotiation_error)?;
        let group = self.new_group();
        let (legs, ports) = self.open_answer_legs(group, &offer, &selected)?;
        for l in &legs {
            let cmd = Command::Connect {
                from: l.info.id,
                to: l.info.id,
                kind: l.kind,
                rewrite: Rewrite::default(),
            };
            if let Err(e) = self.send(cmd) {
                self.abandon_legs(&legs);
                return Err(e);
            }
        }
        let local = self.local_transport(ports);
        let answer = SdpText::rtp(&sdp::build_answer(&offer, &selected, &local));
        let id = new_id();
        let mut s = NewSession::from_create(conn, c).build(
            id.clone(),
            Kind::Echo,
            group,
            client_sdp(c.offer.as_ref()),
            legs,
        );
        s.answer = Some(answer.clone());
        s.peer_offer = Some(offer);
        s.selected = selected;
        self.insert_session(s, c.subscribe);
        Ok(json!({ "session_id": id, "answer": answer.to_json() }))
    }

    fn create_master(&mut self, conn: ConnId, c: &CreateSession) -> Outcome {
        require_rtp(c.sdp_type.unwrap_or_default())?;
        let offer = peer_sdp(c.offer.as_ref())?;
        let selected = sdp::select_codecs(&offer, &Forced::default()).map_err(negotiation_error)?;
        let group = self.new_group();
        let (legs, _ports) = self.open_answer_legs(group, &offer, &selected)?;
        let id = new_id();
        let kind = Kind::ProxyMaster { slave: None };
        let mut s = NewSession::from_create(conn, c).build(
            id.clone(),
            kind,
            group,
            client_sdp(c.offer.as_ref()),
            legs,
        );
        s.peer_offer = Some(offer);
        s.selected = selected;
        self.insert_session(s, c.subscribe);
        Ok(json!({ "session_id": id }))
    }

    pub(super) fn get_proxy_offer(&mut self, conn: ConnId, master: &str) -> Outcome {
        let m = self.session(master)?;
        match &m.kind {
            Kind::ProxyMaster { slave: Some(s) } => {
                let s = self.session(s)?;
                Ok(json!({ "session_id": s.id, "offer": s.offer.to_json() }))
            }
            Kind::ProxyMaster { slave: None } => {
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
    fn create_slave(&mut self, master: &str, sdp_type: SdpType, opts: NewSession) -> Outcome {
        let m = self.session(master)?;
        let Kind::ProxyMaster { slave: None } = &m.kind else {
            return Err(ApiError::invalid(format!(
                "session {master} is not a proxy master without slave"
            )));
        };
        require_rtp(sdp_type)?;
        let group = m.group;
        let offered: Vec<OfferMedia> = m
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
                }
            })
            .collect();
        let specs: Vec<(MediaKind, Remote)> =
            m.legs.iter().map(|l| (l.kind, Remote::default())).collect();
        let infos = self.open_legs(group, &specs)?;
        let ports = infos.iter().map(|i| i.rtp_port).collect();
        let local = self.local_transport(ports);
        let offer = SdpText::rtp(&sdp::build_offer(&offered, &local));
        let legs = offered
            .into_iter()
            .zip(infos)
            .enumerate()
            .map(|(i, (om, info))| Leg {
                info,
                kind: dp_kind(&om.kind).unwrap_or(MediaKind::Audio),
                transport: Transport::Plain,
                mline: i,
                codec: om.codec.clone(),
                dtmf: om.dtmf.clone(),
                remote: Remote::default(),
                latched: None,
                offered: Some(om),
                ssrc: None,
                accepted: false,
            })
            .collect();
        let id = new_id();
        let kind = Kind::ProxySlave {
            master: master.to_owned(),
        };
        let subscribe = opts.subscribe;
        let s = opts.build(id.clone(), kind, group, offer.clone(), legs);
        if let Some(m) = self.sessions.get_mut(master) {
            m.kind = Kind::ProxyMaster {
                slave: Some(id.clone()),
            };
        }
        self.insert_session(s, subscribe);
        Ok(json!({ "session_id": id, "offer": offer.to_json() }))
    }

    pub(super) fn set_answer(&mut self, id: &str, answer: &SdpObject) -> Outcome {
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
        let sdp = peer_sdp(Some(answer))?;
        self.apply_answer(id, &sdp)?;
        if let Kind::ProxySlave { master } = &kind {
            self.connect_proxy(master, id)?;
        }
        let text = SdpText {
            sdp: answer.sdp.clone().unwrap_or_default(),
            sdp_type: SdpType::Rtp,
        };
        self.mark_ready(id, text, false);
        Ok(json!({}))
    }

    /// Matches the peer's answer to what we offered on each leg and points the legs at it.
    fn apply_answer(&mut self, id: &str, answer: &Sdp) -> Result<(), ApiError> {
        let s = self.session(id)?;
        let mut updates = Vec::with_capacity(s.legs.len());
        for leg in &s.legs {
            let m = answer.media.get(leg.mline);
            let chosen = match (m, leg.offered.as_ref()) {
                (Some(m), Some(ours)) => sdp::answered_codec(m, ours).map(|c| (c, m)),
                _ => None,
            };
            updates.push(chosen.map(|(codec, m)| {
                let dtmf = answered_dtmf(m, codec.clock_rate);
                (codec, dtmf, remote_of(answer, m))
            }));
        }
        if updates.iter().all(Option::is_none) {
            return Err(ApiError::invalid(
                "the answer accepts none of the offered media (no matching codec)",
            ));
        }
        let mut commands = Vec::new();
        if let Some(s) = self.sessions.get_mut(id) {
            for (leg, update) in s.legs.iter_mut().zip(updates) {
                if let Some((codec, dtmf, remote)) = update {
                    leg.codec = codec;
                    leg.dtmf = dtmf;
                    leg.remote = remote;
                    leg.accepted = true;
                    commands.push(Command::SetRemote {
                        leg: leg.info.id,
                        remote,
                    });
                }
            }
        }
        for cmd in commands {
            self.send(cmd)?;
        }
        Ok(())
    }

    /// Connects master and slave legs both ways and makes the master's answer.
    fn connect_proxy(&mut self, master: &str, slave: &str) -> Result<(), ApiError> {
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
                    ssrc: None,
                },
            });
            commands.push(Command::Connect {
                from: sl.info.id,
                to: ml.info.id,
                kind: ml.kind,
                rewrite: Rewrite {
                    pt_map: back,
                    ssrc: None,
                },
            });
        }
        let Some(peer_offer) = m.peer_offer.clone() else {
            return Err(ApiError::new(
                ErrorCode::InternalError,
                "proxy master without offer",
            ));
        };
        for cmd in commands {
            self.send(cmd)?;
        }
        let local = self.local_transport(ports);
        let answer = SdpText::rtp(&sdp::build_answer(&peer_offer, &selected, &local));
        self.mark_ready(master, answer, true);
        Ok(())
    }

    /// The session has its answer: wake `get_answer` waiters, tell subscribers (`emit`), and
    /// switch from the wait timeout to the ready timeout.
    pub(super) fn mark_ready(&mut self, id: &str, answer: SdpText, emit: bool) {
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.answer = Some(answer.clone());
        s.timer_gen += 1;
        let generation = s.timer_gen;
        let after = s.ready_timeout;
        let reply = json!({ "answer": answer.to_json() });
        for w in s.answer_waiters.drain(..) {
            let _ = w.send(Ok(reply.clone()));
        }
        if emit {
            self.emit_session(id, "answer", super::answer_body(&answer));
        }
        self.schedule(
            after,
            super::Timer::Ready {
                session: id.to_owned(),
                generation,
            },
        );
    }
}

/// The `created` event body.
pub(super) fn created_body(s: &Session) -> Value {
    json!({ "type": s.kind.session_type().as_str() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pt_pairs_include_dtmf_only_when_both_sides_have_it() {
        let opus = Codec::new(111, "opus", 48000, Some(2));
        let opus2 = Codec::new(109, "opus", 48000, Some(2));
        let te = Codec::new(126, "telephone-event", 48000, None);
        let te2 = Codec::new(101, "telephone-event", 48000, None);
        assert_eq!(
            pt_pairs((&opus, None), (&opus2, Some(&te2))),
            vec![(Pt(111), Pt(109))]
        );
        assert_eq!(
            pt_pairs((&opus, Some(&te)), (&opus2, Some(&te2))),
            vec![(Pt(111), Pt(109)), (Pt(126), Pt(101))]
        );
    }

    #[test]
    fn server_generated_webrtc_is_refused() {
        assert_eq!(
            require_rtp(SdpType::Webrtc).unwrap_err().message,
            WEBRTC_UNAVAILABLE
        );
        assert!(require_rtp(SdpType::Rtp).is_ok());
    }

    #[test]
    fn answered_dtmf_matches_clock_rate() {
        let text = "v=0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 3000 RTP/AVP 0 101 102\r\n\
            a=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\n";
        let sdp = Sdp::parse(text).expect("valid");
        assert_eq!(answered_dtmf(&sdp.media[0], 48000).map(|c| c.pt), Some(102));
        assert_eq!(answered_dtmf(&sdp.media[0], 16000), None);
    }
}
