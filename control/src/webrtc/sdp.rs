//! WebRTC SDP (JSEP, RFC 8829) on top of [`crate::sdp`]: the server's answers and offers,
//! and the peer's ICE/DTLS parameters.
//!
//! The server's side is always one bundled transport (RFC 8843): every accepted m-line
//! carries the same port, `a=rtcp-mux`, the same ICE credentials, fingerprint and setup, one
//! host candidate and `a=end-of-candidates` (the server never trickles). It is an ICE-lite
//! agent (`a=ice-lite`, RFC 8445 §2.5). No header extensions are negotiated: the data plane
//! forwards packets between peers whose extension ids differ, and an echoed `sdes:mid`
//! would mislabel forwarded packets; BUNDLE demultiplexing then falls back to SSRC and
//! payload type, which every browser supports.

use sluice_dataplane::api::Ssrc;
use std::net::IpAddr;

use crate::sdp::{
    Attribute, Codec, Media, MediaKind, OfferMedia, Origin, Proto, Sdp, Selected, rejected,
};

use super::cert::{CertError, Fingerprint};
use super::sctp::SCTP_PORT;

/// RTCP feedback the forwarder honours or generates (RFC 4585 NACK/PLI, RFC 5104 FIR,
/// draft-alvestrand-rmcat-remb). `transport-cc` is not: there is no TWCC feedback.
const RTCP_FB: [&str; 4] = ["nack", "nack pli", "ccm fir", "goog-remb"];

/// Host candidate priority: type preference 126, local preference 65535, component 1
/// (RFC 8445 §5.1.2.1).
const HOST_PRIORITY: u32 = 2_130_706_431;

/// `a=setup` (RFC 4145 §4, RFC 8842 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

impl Setup {
    pub fn parse(value: &str) -> Option<Setup> {
        match value.trim() {
            "active" => Some(Setup::Active),
            "passive" => Some(Setup::Passive),
            "actpass" => Some(Setup::ActPass),
            "holdconn" => Some(Setup::HoldConn),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Active => "active",
            Setup::Passive => "passive",
            Setup::ActPass => "actpass",
            Setup::HoldConn => "holdconn",
        }
    }
}

/// The server's side of one WebRTC session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcLocal {
    /// Announced address (`--public-ip`).
    pub ip: IpAddr,
    /// The one bundled UDP port (RTP, RTCP, STUN and DTLS).
    pub port: u16,
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// SHA-256 fingerprint of our certificate, `AB:CD:…` (without the hash name).
    pub fingerprint: String,
    /// `Passive` when answering, `ActPass` when offering (RFC 8842 §5.2).
    pub setup: Setup,
    pub session_id: u64,
    pub session_version: u64,
    /// Our `a=max-message-size` on a data m-line (`--data-max-message-size`).
    pub max_message_size: u32,
}

impl WebrtcLocal {
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
            bundle: Vec::new(),
            ice_lite: true,
            ice_ufrag: None,
            ice_pwd: None,
            fingerprint: None,
            setup: None,
            attributes: Vec::new(),
            media: Vec::new(),
        }
    }

    /// Transport attributes shared by every accepted m-line.
    fn transport(&self, m: &mut Media) {
        m.rtcp = Some((self.port, None));
        m.rtcp_mux = true;
        m.ice_ufrag = Some(self.ice_ufrag.clone());
        m.ice_pwd = Some(self.ice_pwd.clone());
        m.fingerprint = Some(format!("sha-256 {}", self.fingerprint));
        m.setup = Some(self.setup.as_str().to_owned());
        m.candidates = vec![format!(
            "1 1 udp {HOST_PRIORITY} {} {} typ host",
            self.ip, self.port
        )];
        m.end_of_candidates = true;
    }
}

/// The data-channel m-line of a WebRTC offer (RFC 8841): `m=application <port>
/// UDP/DTLS/SCTP webrtc-datachannel`, or the legacy form of older browsers
/// (draft-ietf-mmusic-sctp-sdp-05): `m=application <port> DTLS/SCTP 5000` with
/// `a=sctpmap:5000 webrtc-datachannel 1024`; not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOffer {
    /// Index of the m-line in the offer.
    pub mline: usize,
    /// The offerer's `a=max-message-size` (RFC 8841 §6): `None` when absent (64 KiB),
    /// 0 for "any size".
    pub max_message_size: Option<u32>,
    /// The offerer's `a=sctp-port` (RFC 8841 §5; 5000 when absent), or the legacy form's
    /// port (its format).
    pub sctp_port: u16,
    /// The legacy form: answered in kind (`DTLS/SCTP 5000` and `a=sctpmap`).
    pub legacy: bool,
}

/// The first usable data-channel m-line of `offer`, if any, in the RFC 8841 form or the
/// legacy one (`DTLS/SCTP <port>` whose `a=sctpmap:<port>` names `webrtc-datachannel`).
pub fn data_offer(offer: &Sdp) -> Option<DataOffer> {
    let attr = |m: &Media, name: &str| {
        m.attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    offer.media.iter().enumerate().find_map(|(i, m)| {
        if m.kind != MediaKind::Application || m.port == 0 {
            return None;
        }
        let max_message_size = attr(m, "max-message-size");
        if m.proto == Proto::UdpDtlsSctp && m.formats.iter().any(|f| f == "webrtc-datachannel") {
            return Some(DataOffer {
                mline: i,
                max_message_size,
                sctp_port: attr(m, "sctp-port")
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(SCTP_PORT),
                legacy: false,
            });
        }
        if !matches!(&m.proto, Proto::Other(p) if p == LEGACY_PROTO) {
            return None;
        }
        m.formats.iter().find_map(|f| {
            let port = f.parse::<u16>().ok()?;
            let mapped = m.attributes.iter().any(|a| {
                a.name == "sctpmap"
                    && a.value.as_deref().is_some_and(|v| {
                        let mut w = v.split_whitespace();
                        w.next() == Some(f.as_str()) && w.next() == Some("webrtc-datachannel")
                    })
            });
            mapped.then_some(DataOffer {
                mline: i,
                max_message_size,
                sctp_port: port,
                legacy: true,
            })
        })
    })
}

/// The transport of the legacy data m-line.
const LEGACY_PROTO: &str = "DTLS/SCTP";
/// The stream count our legacy `a=sctpmap` announces (what browsers put there).
const LEGACY_STREAMS: u16 = 1024;

/// A WebRTC answer to `offer` (RFC 8829 §5.3): one m-line per offered one; those with a
/// selected codec accepted on the bundled transport, the others (data channels included)
/// rejected with port 0 and left out of the BUNDLE group (RFC 8843 §7.3.3).
pub fn webrtc_answer(offer: &Sdp, selected: &[Option<Selected>], local: &WebrtcLocal) -> Sdp {
    webrtc_answer_with_data(offer, selected, None, local)
}

/// As [`webrtc_answer`], accepting the data-channel m-line `data` too: same bundled
/// transport, `a=sctp-port:5000` and `a=max-message-size` (RFC 8841 §5, §6).
pub fn webrtc_answer_with_data(
    offer: &Sdp,
    selected: &[Option<Selected>],
    data: Option<&DataOffer>,
    local: &WebrtcLocal,
) -> Sdp {
    let mut answer = local.session();
    for (i, offered) in offer.media.iter().enumerate() {
        if data.is_some_and(|d| d.mline == i) {
            let legacy = data.is_some_and(|d| d.legacy);
            let m = data_media(offered.mid.clone(), local, legacy);
            if let Some(mid) = &m.mid {
                answer.bundle.push(mid.clone());
            }
            answer.media.push(m);
            continue;
        }
        let m = match selected.get(i).and_then(Option::as_ref) {
            Some(s) if offered.port != 0 => {
                let proto = match &offered.proto {
                    Proto::Other(p) if p.contains("TLS/RTP") => offered.proto.clone(),
                    _ => Proto::UdpTlsRtpSavpf,
                };
                let mut m = Media::new(s.kind.clone(), local.port, proto);
                let fb = |c: &Codec| {
                    c.rtcp_fb
                        .iter()
                        .filter(|fb| RTCP_FB.contains(&fb.as_str()))
                        .cloned()
                        .collect()
                };
                add_codecs(&mut m, &s.codec, s.dtmf.as_ref(), fb);
                // RTX as offered (RFC 4588 §8.1): the forwarder unwraps and sends it.
                if let Some(rtx) = &s.rtx {
                    add_rtx(&mut m, rtx);
                }
                m.mid = offered.mid.clone();
                m.direction = s.direction;
                local.transport(&mut m);
                if let Some(mid) = &m.mid {
                    answer.bundle.push(mid.clone());
                }
                m
            }
            _ => rejected(offered),
        };
        answer.media.push(m);
    }
    answer
}

/// Our data-channel m-line on the bundled transport (RFC 8841): no RTCP, no codecs. The
/// `legacy` form answers an offer in that form: `DTLS/SCTP 5000` and
/// `a=sctpmap:5000 webrtc-datachannel 1024` instead of `a=sctp-port`.
fn data_media(mid: Option<String>, local: &WebrtcLocal, legacy: bool) -> Media {
    let proto = match legacy {
        true => Proto::Other(LEGACY_PROTO.to_owned()),
        false => Proto::UdpDtlsSctp,
    };
    let mut m = Media::new(MediaKind::Application, local.port, proto);
    m.mid = mid;
    local.transport(&mut m);
    m.rtcp = None;
    m.rtcp_mux = false;
    if legacy {
        m.formats.push(SCTP_PORT.to_string());
        m.attributes.push(Attribute::new(
            "sctpmap",
            Some(&format!("{SCTP_PORT} webrtc-datachannel {LEGACY_STREAMS}")),
        ));
    } else {
        m.formats.push("webrtc-datachannel".to_owned());
        m.attributes
            .push(Attribute::new("sctp-port", Some(&SCTP_PORT.to_string())));
    }
    m.attributes.push(Attribute::new(
        "max-message-size",
        Some(&local.max_message_size.to_string()),
    ));
    m
}

fn add_codecs(
    m: &mut Media,
    codec: &Codec,
    dtmf: Option<&Codec>,
    rtcp_fb: impl Fn(&Codec) -> Vec<String>,
) {
    for c in std::iter::once(codec).chain(dtmf) {
        let mut c = c.clone();
        c.rtcp_fb = rtcp_fb(&c);
        m.formats.push(c.pt.0.to_string());
        m.codecs.push(c);
    }
}

fn add_rtx(m: &mut Media, rtx: &Codec) {
    let mut rtx = rtx.clone();
    rtx.rtcp_fb.clear();
    m.formats.push(rtx.pt.0.to_string());
    m.codecs.push(rtx);
}

/// Announces a stream the server sends on `m` (RFC 8830 `msid`, RFC 5576 `a=ssrc`), and its
/// RTX stream as `a=ssrc-group:FID MEDIA RTX` (RFC 4588 §8.3).
pub fn announce_ssrc(m: &mut Media, ssrc: Ssrc, rtx_ssrc: Option<Ssrc>, cname: &str) {
    let msid = format!("{cname} {}-{ssrc}", m.kind.as_str());
    if let Some(rtx) = rtx_ssrc {
        m.attributes.push(Attribute::new(
            "ssrc-group",
            Some(&format!("FID {ssrc} {rtx}")),
        ));
    }
    for s in std::iter::once(ssrc).chain(rtx_ssrc) {
        m.ssrcs.push(format!("{s} cname:{cname}"));
        m.ssrcs.push(format!("{s} msid:{msid}"));
    }
    m.attributes.push(Attribute::new("msid", Some(&msid)));
}

/// A WebRTC offer (RFC 8829 §5.2), e.g. to a listener or the WebRTC leg of a proxy: one
/// bundled m-line per entry, `a=setup` from `local` (normally `actpass`), and for each
/// stream with an SSRC `a=ssrc:N cname:…`, `a=ssrc:N msid:…` and `a=msid` (RFC 8830).
pub fn webrtc_offer(media: &[OfferMedia], local: &WebrtcLocal) -> Sdp {
    webrtc_offer_with_data(media, false, local)
}

/// As [`webrtc_offer`], with a data-channel m-line last when `data` (RFC 8841), in the BUNDLE.
pub fn webrtc_offer_with_data(media: &[OfferMedia], data: bool, local: &WebrtcLocal) -> Sdp {
    let mut offer = local.session();
    for (i, om) in media.iter().enumerate() {
        let mut m = Media::new(om.kind.clone(), local.port, Proto::UdpTlsRtpSavpf);
        let video = om.kind == MediaKind::Video;
        // Our own offer announces all the feedback we handle on video, none on audio.
        let fb = |c: &Codec| {
            if video && !c.is_telephone_event() {
                RTCP_FB.iter().map(|s| (*s).to_owned()).collect()
            } else {
                Vec::new()
            }
        };
        add_codecs(&mut m, &om.codec, om.dtmf.as_ref(), fb);
        if let Some(rtx) = &om.rtx {
            add_rtx(&mut m, rtx);
        }
        let mid = om.mid.clone().unwrap_or_else(|| i.to_string());
        offer.bundle.push(mid.clone());
        m.mid = Some(mid);
        m.direction = om.direction;
        local.transport(&mut m);
        if let Some(ssrc) = om.ssrc {
            let cname = om.cname.as_deref().unwrap_or("sluice");
            announce_ssrc(
                &mut m,
                ssrc,
                om.rtx_ssrc.filter(|_| om.rtx.is_some()),
                cname,
            );
        }
        offer.media.push(m);
    }
    if data {
        let mut mid = offer.media.len().to_string();
        while offer.bundle.contains(&mid) {
            mid.push('d');
        }
        offer.bundle.push(mid.clone());
        offer.media.push(data_media(Some(mid), local, false));
    }
    offer
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebrtcSdpError {
    #[error("WebRTC SDP has no a=ice-ufrag")]
    MissingIceUfrag,
    #[error("WebRTC SDP has no a=ice-pwd")]
    MissingIcePwd,
    #[error("WebRTC SDP has no a=fingerprint")]
    MissingFingerprint,
    #[error("WebRTC SDP has an invalid a=setup {0:?}")]
    BadSetup(String),
    #[error(transparent)]
    Fingerprint(#[from] CertError),
}

/// The peer's transport parameters, from the bundled m-line (the first accepted one, RFC
/// 8843 §7.1.3: the BUNDLE tag) or the session level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteIce {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprint: Fingerprint,
    /// `a=setup`; RFC 4145 §4: `active` when absent.
    pub setup: Setup,
    pub ice_lite: bool,
    /// `a=candidate` values of every m-line, without the `candidate:` prefix, deduplicated.
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

impl RemoteIce {
    pub fn from_sdp(sdp: &Sdp) -> Result<RemoteIce, WebrtcSdpError> {
        let tagged = sdp
            .bundle
            .first()
            .and_then(|tag| sdp.media.iter().find(|m| m.mid.as_ref() == Some(tag)));
        let lead = tagged.or_else(|| sdp.media.iter().find(|m| m.port != 0));
        let pick =
            |media: Option<&String>, session: &Option<String>| media.or(session.as_ref()).cloned();
        let ufrag = pick(lead.and_then(|m| m.ice_ufrag.as_ref()), &sdp.ice_ufrag)
            .ok_or(WebrtcSdpError::MissingIceUfrag)?;
        let pwd = pick(lead.and_then(|m| m.ice_pwd.as_ref()), &sdp.ice_pwd)
            .ok_or(WebrtcSdpError::MissingIcePwd)?;
        let fingerprint = pick(lead.and_then(|m| m.fingerprint.as_ref()), &sdp.fingerprint)
            .ok_or(WebrtcSdpError::MissingFingerprint)?;
        let fingerprint = Fingerprint::parse(&fingerprint)?;
        let setup = match pick(lead.and_then(|m| m.setup.as_ref()), &sdp.setup) {
            None => Setup::Active,
            Some(s) => Setup::parse(&s).ok_or(WebrtcSdpError::BadSetup(s))?,
        };
        let mut candidates: Vec<String> = Vec::new();
        for c in sdp.media.iter().flat_map(|m| &m.candidates) {
            if !candidates.contains(c) {
                candidates.push(c.clone());
            }
        }
        Ok(RemoteIce {
            ufrag,
            pwd,
            fingerprint,
            setup,
            ice_lite: sdp.ice_lite,
            candidates,
            end_of_candidates: sdp.media.iter().any(|m| m.end_of_candidates),
        })
    }
}

#[cfg(test)]
#[path = "sdp_tests.rs"]
mod tests;
