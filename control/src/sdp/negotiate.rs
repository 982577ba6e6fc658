//! Offer/answer (RFC 3264) for a server that forwards media and never transcodes: it picks
//! one codec per m-line among those it can forward, and keeps the peer's payload types.

use sluice_dataplane::api::{Pt, Ssrc};
use std::fmt;
use std::net::IpAddr;

use super::model::{Codec, Direction, Media, MediaKind, Origin, Proto, Sdp};

/// A codec the server can forward (and that the API can force with `room_audio_codec` /
/// `room_video_codec`). `telephone-event` is forwarded too, beside the chosen audio codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecName {
    Opus,
    Isac32,
    Isac16,
    Pcmu,
    Pcma,
    G722,
    G729,
    Vp8,
    Vp9,
    H264,
    Av1,
}

impl CodecName {
    pub const ALL: [CodecName; 11] = [
        CodecName::Opus,
        CodecName::Isac32,
        CodecName::Isac16,
        CodecName::Pcmu,
        CodecName::Pcma,
        CodecName::G722,
        CodecName::G729,
        CodecName::Vp8,
        CodecName::Vp9,
        CodecName::H264,
        CodecName::Av1,
    ];

    /// From an API name (`opus|isac32|isac16|pcmu|pcma|g722|g729|vp8|vp9|h264|av1`),
    /// case-insensitive.
    pub fn parse(name: &str) -> Option<Self> {
        CodecName::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            CodecName::Opus => "opus",
            CodecName::Isac32 => "isac32",
            CodecName::Isac16 => "isac16",
            CodecName::Pcmu => "pcmu",
            CodecName::Pcma => "pcma",
            CodecName::G722 => "g722",
            CodecName::G729 => "g729",
            CodecName::Vp8 => "vp8",
            CodecName::Vp9 => "vp9",
            CodecName::H264 => "h264",
            CodecName::Av1 => "av1",
        }
    }

    pub fn kind(self) -> MediaKind {
        match self {
            CodecName::Vp8 | CodecName::Vp9 | CodecName::H264 | CodecName::Av1 => MediaKind::Video,
            _ => MediaKind::Audio,
        }
    }

    /// Encoding name and clock rate as registered for RTP (RFC 3551 §6, RFC 7587, RFC 7741,
    /// RFC 6184, draft-ietf-payload-vp9, AV1 RTP spec). G722 uses 8000 by RFC 3551's erratum.
    fn encoding(self) -> (&'static str, u32) {
        match self {
            CodecName::Opus => ("opus", 48000),
            CodecName::Isac32 => ("ISAC", 32000),
            CodecName::Isac16 => ("ISAC", 16000),
            CodecName::Pcmu => ("PCMU", 8000),
            CodecName::Pcma => ("PCMA", 8000),
            CodecName::G722 => ("G722", 8000),
            CodecName::G729 => ("G729", 8000),
            CodecName::Vp8 => ("VP8", 90000),
            CodecName::Vp9 => ("VP9", 90000),
            CodecName::H264 => ("H264", 90000),
            CodecName::Av1 => ("AV1", 90000),
        }
    }

    /// True if `codec` is this encoding, whatever its payload type.
    pub fn matches(self, codec: &Codec) -> bool {
        let (name, rate) = self.encoding();
        codec.name.eq_ignore_ascii_case(name) && codec.clock_rate == rate
    }

    /// The supported codec `codec` is, if any.
    pub fn of(codec: &Codec) -> Option<Self> {
        CodecName::ALL.into_iter().find(|n| n.matches(codec))
    }
}

impl fmt::Display for CodecName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Codecs the API forces per kind; `None` means "first supported codec of the offer".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forced {
    pub audio: Option<CodecName>,
    pub video: Option<CodecName>,
}

/// What the server accepts of one offered m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub kind: MediaKind,
    pub mid: Option<String>,
    /// The chosen codec, with the offer's payload type and fmtp.
    pub codec: Codec,
    /// `telephone-event` at the codec's clock rate, if offered (RFC 4733 §7.1.1).
    pub dtmf: Option<Codec>,
    /// RTX for the codec, if offered (RFC 4588 §8.1: `apt` names the codec's payload type).
    pub rtx: Option<Codec>,
    /// The direction of the answer: the offer's, reversed (RFC 3264 §6.1). A session may
    /// narrow it further (e.g. `recvonly` for a publisher) before building the answer.
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("offer has no {codec} for {kind}")]
    CodecNotOffered { kind: MediaKind, codec: CodecName },
    #[error(
        "offer has no usable media: no audio or video m-line with a supported codec \
         (opus, isac32, isac16, pcmu, pcma, g722, g729, vp8, vp9, h264, av1)"
    )]
    NoUsableMedia,
}

/// Chooses one codec per offered m-line (index-aligned with `offer.media`); `None` rejects
/// the m-line (RFC 3264 §6: port 0 in the answer).
pub fn select_codecs(
    offer: &Sdp,
    forced: &Forced,
) -> Result<Vec<Option<Selected>>, NegotiationError> {
    let mut selected = Vec::with_capacity(offer.media.len());
    for m in &offer.media {
        selected.push(select_one(m, forced)?);
    }
    if selected.iter().all(Option::is_none) {
        return Err(NegotiationError::NoUsableMedia);
    }
    Ok(selected)
}

fn select_one(m: &Media, forced: &Forced) -> Result<Option<Selected>, NegotiationError> {
    let forced = match m.kind {
        MediaKind::Audio => forced.audio,
        MediaKind::Video => forced.video,
        _ => return Ok(None),
    };
    if m.port == 0 || !m.proto.is_rtp() {
        return Ok(None);
    }
    // SDES-secured media without a key we can use cannot be answered (not in the clear).
    if super::sdes::is_sdes_proto(&m.proto) && super::sdes::keys(m).is_empty() {
        return Ok(None);
    }
    // RFC 3264 §6.1: formats are listed in order of preference; the first one we forward.
    let codec = match forced {
        Some(name) => m.codecs.iter().find(|c| name.matches(c)).ok_or_else(|| {
            NegotiationError::CodecNotOffered {
                kind: m.kind.clone(),
                codec: name,
            }
        })?,
        None => {
            let supported = |c: &&Codec| CodecName::of(c).is_some_and(|n| n.kind() == m.kind);
            match m.codecs.iter().find(supported) {
                Some(c) => c,
                None => return Ok(None),
            }
        }
    };
    let dtmf = m
        .codecs
        .iter()
        .find(|c| c.is_telephone_event() && c.clock_rate == codec.clock_rate);
    let rtx = m.codecs.iter().find(|c| c.apt() == Some(codec.pt));
    Ok(Some(Selected {
        kind: m.kind.clone(),
        mid: m.mid.clone(),
        codec: codec.clone(),
        dtmf: dtmf.cloned(),
        rtx: rtx.cloned(),
        direction: m.direction.reversed(),
    }))
}

/// The server's side of the media: one address, one RTP port per m-line (RTCP on port + 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTransport {
    pub ip: IpAddr,
    /// RTP port per m-line index; RTCP is port + 1. A missing entry rejects the m-line.
    pub ports: Vec<u16>,
    pub session_id: u64,
    pub session_version: u64,
}

impl LocalTransport {
    fn port(&self, index: usize) -> u16 {
        self.ports.get(index).copied().unwrap_or(0)
    }

    fn session(&self) -> Sdp {
        Sdp {
            origin: Origin {
                username: "-".to_owned(),
                session_id: self.session_id,
                session_version: self.session_version,
                addr: self.ip.to_string(),
            },
            session_name: "-".to_owned(),
            connection: Some(self.ip),
            attributes: Vec::new(),
            media: Vec::new(),
            ..Default::default()
        }
    }
}

/// A plain RTP answer to `offer` (RFC 3264 §6): one m-line per offered one, in order; the
/// payload types are the offer's, so packets are forwarded without rewriting the PT.
pub fn build_answer(offer: &Sdp, selected: &[Option<Selected>], local: &LocalTransport) -> Sdp {
    let mut answer = local.session();
    for (i, offered) in offer.media.iter().enumerate() {
        let port = local.port(i);
        let m = match selected.get(i).and_then(Option::as_ref) {
            Some(s) if port != 0 => {
                // Answer in the offer's plain profile; anything secure or ICE-based is
                // answered as RTP/AVP (the WebRTC path builds its own answer).
                let proto = match offered.proto {
                    Proto::RtpAvp | Proto::RtpAvpf => offered.proto.clone(),
                    _ => Proto::RtpAvp,
                };
                let mut m = plain_media(s.kind.clone(), port, proto, &s.codec, s.dtmf.as_ref());
                // RFC 5761 §5.1.1: rtcp-mux only if the offerer asked for it. Then RTCP is on
                // the RTP port and port + 1 is not even bound: no a=rtcp pointing there.
                m.rtcp_mux = offered.rtcp_mux;
                if m.rtcp_mux {
                    m.rtcp = None;
                }
                m.mid = offered.mid.clone();
                m.direction = s.direction;
                m
            }
            _ => rejected(offered),
        };
        answer.media.push(m);
    }
    answer
}

/// RFC 3264 §6 (and RFC 8843 §7.3.3 for bundled WebRTC answers): a rejected stream keeps
/// its media type, transport and mid, with port 0 and at least one format (with its rtpmap
/// on RTP transports).
pub(crate) fn rejected(offered: &Media) -> Media {
    let mut m = Media::new(offered.kind.clone(), 0, offered.proto.clone());
    if let Some(format) = offered.formats.first() {
        m.formats.push(format.clone());
        let codec = format.parse().ok().and_then(|pt| offered.codec(Pt(pt)));
        if let Some(c) = codec.filter(|_| offered.proto.is_rtp()) {
            m.codecs
                .push(Codec::new(c.pt, &c.name, c.clock_rate, c.channels));
        }
    }
    m.mid = offered.mid.clone();
    m.direction = Direction::Inactive;
    m
}

/// One m-line of an offer the server makes (e.g. towards a SIP party for a proxy session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferMedia {
    pub kind: MediaKind,
    pub mid: Option<String>,
    pub codec: Codec,
    pub dtmf: Option<Codec>,
    pub direction: Direction,
    pub ssrc: Option<Ssrc>,
    pub cname: Option<String>,
    /// RTX for the codec (WebRTC video), with the SSRC it is sent from (`a=ssrc-group:FID`).
    pub rtx: Option<Codec>,
    pub rtx_ssrc: Option<Ssrc>,
}

/// A plain `RTP/AVP` offer (RFC 3264 §5), one m-line per entry of `media`.
pub fn build_offer(media: &[OfferMedia], local: &LocalTransport) -> Sdp {
    let mut offer = local.session();
    for (i, om) in media.iter().enumerate() {
        let port = local.port(i);
        let mut m = plain_media(
            om.kind.clone(),
            port,
            Proto::RtpAvp,
            &om.codec,
            om.dtmf.as_ref(),
        );
        // RFC 5761 §5.1.1: offer rtcp-mux, with a=rtcp for peers that do not mux.
        m.rtcp_mux = true;
        m.mid = om.mid.clone();
        m.direction = om.direction;
        // RFC 5576 §4.1: an ssrc line needs one attribute; cname is the mandatory one.
        if let Some(ssrc) = om.ssrc {
            let cname = om.cname.as_deref().unwrap_or("sluice");
            m.ssrcs.push(format!("{ssrc} cname:{cname}"));
        }
        offer.media.push(m);
    }
    offer
}

/// An RTP m-line with one codec (+ DTMF) and `a=rtcp:PORT+1` (RFC 3605).
fn plain_media(
    kind: MediaKind,
    port: u16,
    proto: Proto,
    codec: &Codec,
    dtmf: Option<&Codec>,
) -> Media {
    let mut m = Media::new(kind, port, proto);
    for c in std::iter::once(codec).chain(dtmf) {
        let mut c = c.clone();
        // RFC 4585 §4.2: rtcp-fb is meaningless in the AVP profile.
        if m.proto == Proto::RtpAvp {
            c.rtcp_fb.clear();
        }
        m.formats.push(c.pt.0.to_string());
        m.codecs.push(c);
    }
    m.rtcp = port.checked_add(1).filter(|_| port != 0).map(|p| (p, None));
    m
}

/// `(offered PT, answered PT)` when both are the same encoding.
pub fn pt_map(offered: &Codec, answered: &Codec) -> Option<(Pt, Pt)> {
    offered
        .same_encoding(answered)
        .then_some((offered.pt, answered.pt))
}

/// The codec the answerer chose for one of our offered m-lines: the same encoding name and
/// clock rate, with whatever payload type it answered (RFC 3264 §6.1 lets it differ).
/// `None` if the m-line was rejected (port 0) or the encoding is absent.
pub fn answered_codec(answer_media: &Media, ours: &OfferMedia) -> Option<Codec> {
    if answer_media.port == 0 {
        return None;
    }
    answer_media
        .codecs
        .iter()
        .find(|c| c.same_encoding(&ours.codec))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 10 1 IN IP4 192.0.2.10\r\ns=call\r\n\
        c=IN IP4 192.0.2.10\r\nt=0 0\r\n\
        m=audio 49170 RTP/AVP 18 0 98 100\r\na=rtpmap:98 telephone-event/8000\r\n\
        a=rtpmap:100 telephone-event/16000\r\na=sendonly\r\na=mid:a\r\n\
        m=video 51372 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n\
        a=fmtp:97 profile-level-id=42e01f;packetization-mode=1\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    fn local() -> LocalTransport {
        LocalTransport {
            ip: "203.0.113.5".parse().expect("valid"),
            ports: vec![20000, 20002, 20004],
            session_id: 42,
            session_version: 1,
        }
    }

    fn offer() -> Sdp {
        Sdp::parse(OFFER).expect("valid")
    }

    #[test]
    fn codec_names_parse_case_insensitively() {
        assert_eq!(CodecName::parse("OPUS"), Some(CodecName::Opus));
        assert_eq!(CodecName::parse("isac16"), Some(CodecName::Isac16));
        assert_eq!(CodecName::parse("H264"), Some(CodecName::H264));
        assert_eq!(CodecName::parse("speex"), None);
        for c in CodecName::ALL {
            assert_eq!(CodecName::parse(c.as_str()), Some(c));
        }
    }

    #[test]
    fn isac_matches_by_clock_rate() {
        let isac16 = Codec::new(Pt(103), "ISAC", 16000, None);
        assert_eq!(CodecName::of(&isac16), Some(CodecName::Isac16));
        assert!(!CodecName::Isac32.matches(&isac16));
    }

    #[test]
    fn first_supported_codec_wins_in_offer_order() {
        let sel = select_codecs(&offer(), &Forced::default()).expect("usable");
        let audio = sel[0].as_ref().expect("audio accepted");
        assert_eq!(
            (audio.codec.pt, audio.codec.name.as_str()),
            (Pt(18), "G729")
        );
        assert_eq!(audio.dtmf.as_ref().map(|c| c.pt), Some(Pt(98)));
        assert_eq!(audio.direction, Direction::RecvOnly);
        assert_eq!(audio.mid.as_deref(), Some("a"));
        let video = sel[1].as_ref().expect("video accepted");
        assert_eq!(video.codec.pt, Pt(97));
        assert!(sel[2].is_none(), "data channel is rejected");
    }

    #[test]
    fn forced_codec_is_selected_when_offered() {
        let forced = Forced {
            audio: Some(CodecName::Pcmu),
            video: None,
        };
        let sel = select_codecs(&offer(), &forced).expect("usable");
        assert_eq!(sel[0].as_ref().map(|s| s.codec.pt), Some(Pt(0)));
    }

    #[test]
    fn forced_codec_missing_from_offer_is_a_clear_error() {
        let forced = Forced {
            audio: Some(CodecName::Opus),
            video: None,
        };
        let err = select_codecs(&offer(), &forced).unwrap_err();
        assert_eq!(
            err,
            NegotiationError::CodecNotOffered {
                kind: MediaKind::Audio,
                codec: CodecName::Opus
            }
        );
        assert_eq!(err.to_string(), "offer has no opus for audio");
    }

    #[test]
    fn offer_without_supported_codec_has_no_usable_media() {
        let text = "v=0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 1000 RTP/AVP 3\r\n\
            m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        let sdp = Sdp::parse(text).expect("valid");
        assert_eq!(
            select_codecs(&sdp, &Forced::default()),
            Err(NegotiationError::NoUsableMedia)
        );
    }

    #[test]
    fn answer_keeps_offer_payload_types() {
        let offer = offer();
        let sel = select_codecs(&offer, &Forced::default()).expect("usable");
        let answer = build_answer(&offer, &sel, &local());
        assert_eq!(answer.media.len(), 3);
        let audio = &answer.media[0];
        assert_eq!(audio.formats, ["18", "98"]);
        assert_eq!(audio.codecs[1].name, "telephone-event");
        assert_eq!(audio.port, 20000);
        assert_eq!(audio.rtcp, Some((20001, None)));
        assert!(!audio.rtcp_mux);
        assert_eq!(audio.direction, Direction::RecvOnly);
        assert_eq!(audio.mid.as_deref(), Some("a"));
        let video = &answer.media[1];
        assert_eq!(video.formats, ["97"]);
        assert_eq!(
            video.codecs[0].fmtp.as_deref(),
            Some("profile-level-id=42e01f;packetization-mode=1")
        );
        assert_eq!(answer.connection, Some(local().ip));
        assert_eq!(answer.origin.session_id, 42);
    }

    #[test]
    fn answer_rejects_with_port_zero_and_same_transport() {
        let offer = offer();
        let sel = select_codecs(&offer, &Forced::default()).expect("usable");
        let answer = build_answer(&offer, &sel, &local());
        let data = &answer.media[2];
        assert_eq!(data.port, 0);
        assert_eq!(data.kind, MediaKind::Application);
        assert_eq!(data.proto, Proto::UdpDtlsSctp);
        assert_eq!(data.formats, ["webrtc-datachannel"]);
        assert_eq!(data.rtcp, None);
    }

    #[test]
    fn answer_direction_reverses_offer_direction() {
        let mut offer = offer();
        for (d, expected) in [
            (Direction::SendOnly, Direction::RecvOnly),
            (Direction::RecvOnly, Direction::SendOnly),
            (Direction::Inactive, Direction::Inactive),
            (Direction::SendRecv, Direction::SendRecv),
        ] {
            offer.media[0].direction = d;
            let sel = select_codecs(&offer, &Forced::default()).expect("usable");
            let answer = build_answer(&offer, &sel, &local());
            assert_eq!(answer.media[0].direction, expected);
        }
    }

    #[test]
    fn answer_to_webrtc_offer_is_plain_and_unbundled() {
        let text = "v=0\r\ns=-\r\na=group:BUNDLE 0\r\na=ice-ufrag:abcd\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\n\
            a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n";
        let offer = Sdp::parse(text).expect("valid");
        let sel = select_codecs(&offer, &Forced::default()).expect("usable");
        let answer = build_answer(&offer, &sel, &local());
        assert!(answer.bundle.is_empty());
        assert!(!answer.is_webrtc());
        let m = &answer.media[0];
        assert_eq!(m.proto, Proto::RtpAvp);
        assert!(m.rtcp_mux);
        assert_eq!(m.rtcp, None, "muxed: no a=rtcp naming the unbound port + 1");
        assert!(m.codecs[0].rtcp_fb.is_empty());
        assert_eq!(m.codecs[0].channels, Some(2));
    }

    #[test]
    fn answer_parses_back_to_itself() {
        let offer = offer();
        let sel = select_codecs(&offer, &Forced::default()).expect("usable");
        let answer = build_answer(&offer, &sel, &local());
        assert_eq!(Sdp::parse(&answer.to_string()), Ok(answer));
    }

    fn offer_media() -> Vec<OfferMedia> {
        vec![
            OfferMedia {
                kind: MediaKind::Audio,
                mid: Some("audio".into()),
                codec: Codec::new(Pt(111), "opus", 48000, Some(2)),
                dtmf: Some(Codec::new(Pt(126), "telephone-event", 48000, None)),
                direction: Direction::SendRecv,
                ssrc: Some(Ssrc(1234)),
                cname: Some("leg-1".into()),
                rtx: None,
                rtx_ssrc: None,
            },
            OfferMedia {
                kind: MediaKind::Video,
                mid: None,
                codec: Codec::new(Pt(96), "VP8", 90000, None),
                dtmf: None,
                direction: Direction::SendOnly,
                ssrc: Some(Ssrc(5678)),
                cname: None,
                rtx: None,
                rtx_ssrc: None,
            },
        ]
    }

    #[test]
    fn offer_is_plain_rtp_with_rtcp_port_and_ssrc() {
        let offer = build_offer(&offer_media(), &local());
        assert!(!offer.is_webrtc());
        let audio = &offer.media[0];
        assert_eq!(audio.proto, Proto::RtpAvp);
        assert_eq!(audio.formats, ["111", "126"]);
        assert_eq!(audio.rtcp, Some((20001, None)));
        assert!(audio.rtcp_mux);
        assert_eq!(audio.ssrcs, ["1234 cname:leg-1"]);
        assert_eq!(audio.mid.as_deref(), Some("audio"));
        let video = &offer.media[1];
        assert_eq!(video.direction, Direction::SendOnly);
        assert_eq!(video.ssrcs, ["5678 cname:sluice"]);
        assert_eq!(Sdp::parse(&offer.to_string()), Ok(offer));
    }

    #[test]
    fn answered_codec_matches_by_encoding_not_pt() {
        let ours = &offer_media()[0];
        let text = "v=0\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nm=audio 3000 RTP/AVP 109 101\r\n\
            a=rtpmap:109 OPUS/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n";
        let answer = Sdp::parse(text).expect("valid");
        let chosen = answered_codec(&answer.media[0], ours).expect("opus answered");
        assert_eq!(chosen.pt, Pt(109));
        assert_eq!(pt_map(&ours.codec, &chosen), Some((Pt(111), Pt(109))));
        let mut rejected = answer.media[0].clone();
        rejected.port = 0;
        assert_eq!(answered_codec(&rejected, ours), None);
    }

    #[test]
    fn pt_map_refuses_different_encodings() {
        let opus = Codec::new(Pt(111), "opus", 48000, Some(2));
        assert_eq!(pt_map(&opus, &Codec::new(Pt(0), "PCMU", 8000, None)), None);
    }
}
