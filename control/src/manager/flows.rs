//! Session creation and offer/answer for echo and proxy sessions, and `set_answer` for every
//! session whose offer the server made (proxy slaves, listeners).

use serde_json::{Value, json};
use sluice_dataplane::api::{Command, Feedback, GroupId, LegInfo, MediaKind, Pt, Remote, Rewrite};
use sluice_dataplane::srtp::{Profile, SessionKeys};

use super::session::{ConnId, Kind, MediaLine, MediaSettings, SdpText, Session, Transport};
use super::webrtc_flows::cname_for;
use super::{Manager, Outcome, SessionId, dp_kind, peer_sdp, random_ssrc, remote_of};
use crate::errors::ApiError;
use crate::request::{CreateSession, SdpObject, SdpType, SessionType};
use crate::sdp::sdes::{self, SdesKey};
use crate::sdp::{self, Codec, Forced, NegotiationError, OfferMedia, Proto, Sdp, Selected};
use crate::webrtc::sdp::{DataOffer, data_offer};
use crate::webrtc::transport::WebrtcTransport;

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
        id: SessionId,
        kind: Kind,
        group: GroupId,
        offer: SdpText,
        legs: Vec<MediaLine>,
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
            media: self.media,
            stop_after_peer: self.stop_after_peer,
            wait_timeout: self.wait_timeout,
            ready_timeout: self.ready_timeout,
            timer_gen: 0,
            answer_waiters: Vec::new(),
            recording: None,
            webrtc: None,
            bitrate_sent: 0,
            rx: super::quality::watches_for(&legs),
            legs,
        }
    }
}

pub(super) fn negotiation_error(e: NegotiationError) -> ApiError {
    ApiError::invalid(e.to_string())
}

/// The codec of each offered m-line (`sdp::select_codecs`), where a WebRTC offer of data
/// channels alone is usable too: every audio/video m-line rejected, the data line answered.
pub(super) fn select_media(
    offer: &Sdp,
    forced: &Forced,
) -> Result<Vec<Option<Selected>>, ApiError> {
    match sdp::select_codecs(offer, forced) {
        Err(NegotiationError::NoUsableMedia)
            if offer.is_webrtc() && data_offer(offer).is_some() =>
        {
            Ok(vec![None; offer.media.len()])
        }
        r => r.map_err(negotiation_error),
    }
}

/// The peer's SDP as the client sent it, kept verbatim for `get_offer`/`get_answer`.
pub(super) fn client_sdp(obj: Option<&SdpObject>, parsed: &Sdp) -> SdpText {
    SdpText {
        sdp: obj.and_then(|o| o.sdp.clone()).unwrap_or_default(),
        sdp_type: SdpType::of(parsed),
    }
}

/// Legs the server's side of a session opened: one per accepted m-line, sharing one bundled
/// leg and its transport for a WebRTC peer.
pub(super) struct Opened {
    pub legs: Vec<MediaLine>,
    /// RTP port per m-line of the peer's SDP (0 = rejected).
    pub ports: Vec<u16>,
    pub webrtc: Option<Box<WebrtcTransport>>,
    /// The WebRTC transport's port (every m-line bundled on it, data included).
    pub bundle_port: Option<u16>,
    /// The data-channel m-line the answer accepts (echo sessions over WebRTC).
    pub data: Option<DataOffer>,
    /// SDES-secured m-lines (RFC 4568): the key this side sends with, per m-line index.
    pub sdes: Vec<(usize, SdesKey)>,
}

/// `telephone-event` at `rate` in an answered m-line (RFC 4733 §7.1.1).
pub(super) fn answered_dtmf(m: &sdp::Media, rate: u32) -> Option<Codec> {
    m.codecs
        .iter()
        .find(|c| c.is_telephone_event() && c.clock_rate == rate)
        .cloned()
}

/// PT translation from a leg with `(codec, dtmf)` to one with `(to, to_dtmf)`.
pub(super) fn pt_pairs(
    from: (&Codec, Option<&Codec>),
    to: (&Codec, Option<&Codec>),
) -> Vec<(Pt, Pt)> {
    let mut map = vec![(from.0.pt, to.0.pt)];
    if let (Some(a), Some(b)) = (from.1, to.1) {
        map.push((a.pt, b.pt));
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

    /// Opens the legs for the accepted m-lines of a peer's offer: plain legs, or one bundled
    /// secure leg for a WebRTC offer (each accepted m-line gets a fixed SSRC the answer
    /// announces).
    pub(super) fn open_answer_legs(
        &mut self,
        group: GroupId,
        offer: &Sdp,
        selected: &[Option<Selected>],
    ) -> Result<Opened, ApiError> {
        let mut accepted: Vec<(usize, MediaKind, Remote, &Selected)> = Vec::new();
        for (i, sel) in selected.iter().enumerate() {
            if let (Some(s), Some(m)) = (sel, offer.media.get(i))
                && let Some(kind) = dp_kind(&s.kind)
            {
                accepted.push((i, kind, remote_of(offer, m), s));
            }
        }
        let webrtc = offer.is_webrtc();
        let mut sdes_keys = Vec::new();
        let (infos, transport, bundle_port): (Vec<LegInfo>, _, _) = if webrtc {
            let (info, t) = self.open_answer_bundle(group, offer, selected)?;
            let port = info.rtp_port;
            (vec![info; accepted.len()], Some(Box::new(t)), Some(port))
        } else {
            // SDES: an RTP/SAVP(F) m-line (selected only with a key we can use) gets a secure
            // leg keyed at once (ours fresh, of the same suite).
            let secured: Vec<Option<(SdesKey, SdesKey)>> = accepted
                .iter()
                .map(|a| {
                    let m = &offer.media[a.0];
                    if !sdes::is_sdes_proto(&m.proto) {
                        return None;
                    }
                    let theirs = sdes::keys(m).into_iter().next()?;
                    let len = theirs.profile.key_len() + theirs.profile.salt_len();
                    let ours = SdesKey {
                        tag: theirs.tag,
                        profile: theirs.profile,
                        key_salt: super::ids::random_vec(len),
                    };
                    Some((theirs, ours))
                })
                .collect();
            let specs: Vec<(MediaKind, Remote, bool)> = accepted
                .iter()
                .zip(&secured)
                .map(|(a, k)| (a.1, a.2, k.is_some()))
                .collect();
            let infos = self.open_legs_secured(group, &specs)?;
            for ((a, k), info) in accepted.iter().zip(&secured).zip(&infos) {
                if let Some((theirs, ours)) = k {
                    let keys = match (ours.master(), theirs.master()) {
                        (Some(local), Some(remote)) => SessionKeys { local, remote },
                        _ => continue,
                    };
                    self.send(Command::SetSrtp {
                        leg: info.id,
                        keys: Box::new(keys),
                    })?;
                    sdes_keys.push((a.0, ours.clone()));
                }
            }
            (infos, None, None)
        };
        let mut ports = vec![0; offer.media.len()];
        let legs = accepted
            .into_iter()
            .zip(infos)
            .map(|((mline, kind, remote, s), info)| {
                ports[mline] = info.rtp_port;
                // NACK where the answer keeps the offer's `rtcp-fb nack` (WebRTC, RTP/AVPF);
                // RTX where a WebRTC offer has it for the codec.
                let avpf = offer
                    .media
                    .get(mline)
                    .is_some_and(|m| m.proto == Proto::RtpAvpf);
                let rtx = s.rtx.as_ref().filter(|_| webrtc);
                let rtx_ssrc = rtx.map(|_| random_ssrc());
                let feedback = Feedback {
                    clock_rate: s.codec.clock_rate,
                    nack: s.codec.has_nack() && (webrtc || avpf),
                    rtx_pts: rtx.map_or(Vec::new(), |r| vec![(s.codec.pt, r.pt)]),
                    rtx_ssrc,
                };
                MediaLine {
                    info,
                    kind,
                    transport: if webrtc {
                        Transport::Webrtc
                    } else {
                        Transport::Plain
                    },
                    mline,
                    codec: s.codec.clone(),
                    dtmf: s.dtmf.clone(),
                    remote: if webrtc { Remote::default() } else { remote },
                    latched: None,
                    offered: None,
                    ssrc: webrtc.then(random_ssrc),
                    rtx_ssrc,
                    feedback,
                    accepted: true,
                    sdes: Vec::new(),
                }
            })
            .collect::<Vec<_>>();
        if let Err(e) = self.send_feedback(&legs) {
            self.abandon_legs(&legs);
            return Err(e);
        }
        Ok(Opened {
            legs,
            ports,
            webrtc: transport,
            bundle_port,
            data: None,
            sdes: sdes_keys,
        })
    }

    /// Tells the data plane what each leg's peer negotiated (clock rate, NACK, RTX), where it
    /// is more than nothing.
    pub(super) fn send_feedback(&mut self, legs: &[MediaLine]) -> Result<(), ApiError> {
        for l in legs.iter().filter(|l| l.feedback != Feedback::default()) {
            self.send(Command::SetFeedback {
                leg: l.info.id,
                kind: l.kind,
                feedback: l.feedback.clone(),
            })?;
        }
        Ok(())
    }

    /// The server's answer to a peer's offer: WebRTC for a WebRTC offer, plain RTP otherwise.
    pub(super) fn answer_sdp(
        &mut self,
        id: &SessionId,
        offer: &Sdp,
        selected: &[Option<Selected>],
        opened: &Opened,
    ) -> SdpText {
        let port = opened
            .legs
            .first()
            .map(|l| l.info.rtp_port)
            .or(opened.bundle_port);
        match (&opened.webrtc, port) {
            (Some(t), Some(port)) => {
                let sdp = self.webrtc_answer_sdp(
                    t,
                    port,
                    (offer, selected, opened.data.as_ref()),
                    &opened.legs,
                    &cname_for(id),
                );
                SdpText::of(&sdp)
            }
            _ => {
                let local = self.local_transport(opened.ports.clone());
                let mut answer = sdp::build_answer(offer, selected, &local);
                for (mline, key) in &opened.sdes {
                    if let (Some(m), Some(offered)) =
                        (answer.media.get_mut(*mline), offer.media.get(*mline))
                    {
                        m.proto = offered.proto.clone();
                        m.attributes.push(key.attribute());
                    }
                }
                SdpText::rtp(&answer)
            }
        }
    }

    /// Opens the legs of an offer the server makes (`webrtc`: one bundled leg) and writes it,
    /// with a data-channel m-line in a WebRTC offer when `data` (a listener of a publisher,
    /// the slave of a master, that has data channels). Each WebRTC entry gets a fixed SSRC
    /// and `cname` (announced in the offer).
    pub(super) fn open_offer_legs(
        &mut self,
        group: GroupId,
        offered: &mut [OfferMedia],
        sdp_type: SdpType,
        cname: &str,
        data: bool,
    ) -> Result<(Opened, SdpText), ApiError> {
        if sdp_type == SdpType::Webrtc {
            let mut used: Vec<Pt> = offered
                .iter()
                .flat_map(|om| std::iter::once(om.codec.pt).chain(om.dtmf.as_ref().map(|d| d.pt)))
                .collect();
            for om in offered.iter_mut() {
                om.ssrc.get_or_insert_with(random_ssrc);
                om.cname.get_or_insert_with(|| cname.to_owned());
                // Video is offered with RTX (RFC 4588) on a payload type of its own.
                if om.kind == sdp::MediaKind::Video
                    && om.rtx.is_none()
                    && let Some(pt) = (96..=127).map(Pt).find(|pt| !used.contains(pt))
                {
                    used.push(pt);
                    om.rtx = Some(Codec::rtx(pt, om.codec.pt, om.codec.clock_rate));
                    om.rtx_ssrc = Some(random_ssrc());
                }
            }
            let (info, t) = self.open_offer_bundle(group, offered)?;
            let sdp = self.webrtc_offer_sdp(&t, info.rtp_port, offered, data);
            let bundle_port = Some(info.rtp_port);
            let opened = Opened {
                legs: offer_legs(offered, vec![info; offered.len()], Transport::Webrtc),
                ports: vec![sdp.media.first().map_or(0, |m| m.port); offered.len()],
                webrtc: Some(Box::new(t)),
                bundle_port,
                data: None,
                sdes: Vec::new(),
            };
            return Ok((opened, SdpText::of(&sdp)));
        }
        let secure = sdp_type == SdpType::Srtp;
        let specs: Vec<(MediaKind, Remote, bool)> = offered
            .iter()
            .map(|om| {
                (
                    dp_kind(&om.kind).unwrap_or(MediaKind::Audio),
                    Remote::default(),
                    secure,
                )
            })
            .collect();
        let infos = self.open_legs_secured(group, &specs)?;
        let ports: Vec<u16> = infos.iter().map(|i| i.rtp_port).collect();
        let local = self.local_transport(ports.clone());
        let mut sdp = sdp::build_offer(offered, &local);
        let mut legs = offer_legs(offered, infos, Transport::Plain);
        if secure {
            // SDES: each m-line offers a fresh key per suite, GCM first; the answer's tag
            // says which one the server sends with (keys are set on the answer).
            for (m, leg) in sdp.media.iter_mut().zip(&mut legs) {
                m.proto = Proto::RtpSavp;
                for (tag, profile) in [
                    (1, Profile::AeadAes128Gcm),
                    (2, Profile::AesCm128HmacSha1_80),
                ] {
                    let key = SdesKey {
                        tag,
                        profile,
                        key_salt: super::ids::random_vec(profile.key_len() + profile.salt_len()),
                    };
                    m.attributes.push(key.attribute());
                    leg.sdes.push(key);
                }
            }
        }
        let offer = SdpText::rtp(&sdp);
        let opened = Opened {
            legs,
            ports,
            webrtc: None,
            bundle_port: None,
            data: None,
            sdes: Vec::new(),
        };
        Ok((opened, offer))
    }

    /// Closes the data-plane legs of `legs` (a bundled leg once).
    pub(super) fn close_legs(&mut self, legs: &[MediaLine]) {
        let mut closed: Vec<sluice_dataplane::api::LegId> = Vec::with_capacity(legs.len());
        for l in legs {
            if !closed.contains(&l.info.id) {
                closed.push(l.info.id);
                self.close_leg(l.info.id);
            }
        }
    }

    /// Closes legs opened for a session that could not be completed.
    pub(super) fn abandon_legs(&mut self, legs: &[MediaLine]) {
        self.close_legs(legs);
    }

    fn create_echo(&mut self, conn: ConnId, c: &CreateSession) -> Outcome {
        let offer = peer_sdp(c.offer.as_ref())?;
        let selected = select_media(&offer, &Forced::default())?;
        let group = self.new_group();
        let mut opened = self.open_answer_legs(group, &offer, &selected)?;
        // Data channels come back too.
        accept_data(&mut opened, &offer);
        for l in &opened.legs {
            // Towards a WebRTC peer the echo goes out with the SSRC the answer announces.
            let cmd = Command::Connect {
                from: l.info.id,
                to: l.info.id,
                kind: l.kind,
                rewrite: Rewrite {
                    pt_map: Vec::new(),
                    ssrc: l.ssrc,
                },
            };
            if let Err(e) = self.send(cmd) {
                self.abandon_legs(&opened.legs);
                return Err(e);
            }
        }
        let id = SessionId::random();
        let answer = self.answer_sdp(&id, &offer, &selected, &opened);
        let mut s = NewSession::from_create(conn, c).build(
            id.clone(),
            Kind::Echo,
            group,
            client_sdp(c.offer.as_ref(), &offer),
            opened.legs,
        );
        s.sdp_type = answer.sdp_type;
        s.webrtc = opened.webrtc;
        s.answer = Some(answer.clone());
        s.peer_offer = Some(offer);
        s.selected = selected;
        self.insert_session(s, c.subscribe);
        Ok(json!({ "session_id": id, "answer": answer.to_json() }))
    }

    /// The session has its answer: wake `get_answer` waiters, tell subscribers (`emit`), and
    /// switch from the wait timeout to the ready timeout.
    pub(super) fn mark_ready(&mut self, id: &SessionId, answer: SdpText, emit: bool) {
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
                session: id.clone(),
                generation,
            },
        );
    }
}

/// Accepts the data-channel m-line of a WebRTC offer on the session's bundled transport
/// (echo and publish sessions): the answer then carries it, and SCTP starts with DTLS.
pub(super) fn accept_data(opened: &mut Opened, offer: &Sdp) {
    if let Some(t) = opened.webrtc.as_mut()
        && let Some(data) = data_offer(offer)
    {
        t.enable_data(data.max_message_size);
        opened.data = Some(data);
    }
}

/// Legs for the m-lines of an offer the server makes, on `infos` (one each, or a shared
/// bundled leg repeated).
fn offer_legs(offered: &[OfferMedia], infos: Vec<LegInfo>, transport: Transport) -> Vec<MediaLine> {
    offered
        .iter()
        .zip(infos)
        .enumerate()
        .map(|(i, (om, info))| MediaLine {
            info,
            kind: dp_kind(&om.kind).unwrap_or(MediaKind::Audio),
            transport,
            mline: i,
            codec: om.codec.clone(),
            dtmf: om.dtmf.clone(),
            remote: Remote::default(),
            latched: None,
            offered: Some(om.clone()),
            ssrc: om.ssrc,
            rtx_ssrc: om.rtx_ssrc.filter(|_| om.rtx.is_some()),
            // Until the answer says what the peer kept: the offered codec's clock.
            feedback: Feedback {
                clock_rate: om.codec.clock_rate,
                ..Feedback::default()
            },
            accepted: false,
            sdes: Vec::new(),
        })
        .collect()
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
        let opus = Codec::new(Pt(111), "opus", 48000, Some(2));
        let opus2 = Codec::new(Pt(109), "opus", 48000, Some(2));
        let te = Codec::new(Pt(126), "telephone-event", 48000, None);
        let te2 = Codec::new(Pt(101), "telephone-event", 48000, None);
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
    fn answered_dtmf_matches_clock_rate() {
        let text = "v=0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 3000 RTP/AVP 0 101 102\r\n\
            a=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\n";
        let sdp = Sdp::parse(text).expect("valid");
        assert_eq!(
            answered_dtmf(&sdp.media[0], 48000).map(|c| c.pt),
            Some(Pt(102))
        );
        assert_eq!(answered_dtmf(&sdp.media[0], 16000), None);
    }
}
