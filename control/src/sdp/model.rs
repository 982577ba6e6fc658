//! The typed SDP model: what `parse` produces and `Display` writes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use sluice_dataplane::api::Pt;

/// A session description (RFC 8866 §5). Fields the server acts on are typed; every other
/// attribute is kept verbatim so that nothing a peer sent is silently lost.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sdp {
    pub origin: Origin,
    pub session_name: String,
    /// Session-level `c=`; media-level `c=` overrides it (RFC 8866 §5.7).
    pub connection: Option<IpAddr>,
    /// Mids of `a=group:BUNDLE` (RFC 8843 §7.1).
    pub bundle: Vec<String>,
    pub ice_lite: bool,
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    pub fingerprint: Option<String>,
    pub setup: Option<String>,
    /// Other session-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    pub media: Vec<Media>,
}

/// `o=<username> <sess-id> <sess-version> IN <addrtype> <unicast-address>` (RFC 8866 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    pub session_version: u64,
    /// The unicast address as written (an IP address or a host name).
    pub addr: String,
}

impl Default for Origin {
    fn default() -> Self {
        Origin {
            username: "-".to_owned(),
            session_id: 0,
            session_version: 0,
            addr: "0.0.0.0".to_owned(),
        }
    }
}

/// An `a=name` or `a=name:value` line kept as written (RFC 8866 §5.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

impl Attribute {
    pub fn new(name: &str, value: Option<&str>) -> Self {
        Attribute {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        }
    }
}

/// One media description: an `m=` line and the lines that follow it (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub kind: MediaKind,
    pub port: u16,
    pub proto: Proto,
    pub formats: Vec<String>,
    pub connection: Option<IpAddr>,
    /// `a=rtcp:PORT [IN IP4 addr]` (RFC 3605).
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    /// `a=rtcp-mux` (RFC 5761).
    pub rtcp_mux: bool,
    pub direction: Direction,
    pub mid: Option<String>,
    /// One entry per RTP payload type of `formats`, in the same order.
    pub codecs: Vec<Codec>,
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    pub fingerprint: Option<String>,
    pub setup: Option<String>,
    /// Values of `a=candidate:` lines, without the `candidate:` prefix.
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
    /// Values of `a=ssrc:` lines, e.g. `1234 cname:abc`.
    pub ssrcs: Vec<String>,
    /// Values of `a=extmap:` lines, e.g. `1 urn:ietf:params:rtp-hdrext:ssrc-audio-level`.
    pub extmaps: Vec<String>,
    /// Other media-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
}

impl Media {
    /// An empty media description; the caller fills in codecs and attributes.
    pub fn new(kind: MediaKind, port: u16, proto: Proto) -> Self {
        Media {
            kind,
            port,
            proto,
            formats: Vec::new(),
            connection: None,
            rtcp: None,
            rtcp_mux: false,
            direction: Direction::SendRecv,
            mid: None,
            codecs: Vec::new(),
            ice_ufrag: None,
            ice_pwd: None,
            fingerprint: None,
            setup: None,
            candidates: Vec::new(),
            end_of_candidates: false,
            ssrcs: Vec::new(),
            extmaps: Vec::new(),
            attributes: Vec::new(),
        }
    }

    /// Where the peer receives RTP: media `c=`, else session `c=` (RFC 8866 §5.7).
    /// `None` for a rejected stream (port 0, RFC 3264 §6) or an unspecified address
    /// (`0.0.0.0`, the old hold convention of RFC 3264 §8.4).
    pub fn rtp_addr(&self, sdp: &Sdp) -> Option<SocketAddr> {
        if self.port == 0 {
            return None;
        }
        let ip = self.connection.or(sdp.connection)?;
        if ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, self.port))
    }

    /// Where the peer receives RTCP: the RTP address with rtcp-mux (RFC 5761), the
    /// `a=rtcp` port and address (RFC 3605), else RTP port + 1 (RFC 3550 §11).
    pub fn rtcp_addr(&self, sdp: &Sdp) -> Option<SocketAddr> {
        let rtp = self.rtp_addr(sdp)?;
        if self.rtcp_mux {
            return Some(rtp);
        }
        match self.rtcp {
            Some((port, addr)) => Some(SocketAddr::new(addr.unwrap_or(rtp.ip()), port)),
            None => Some(SocketAddr::new(rtp.ip(), rtp.port().checked_add(1)?)),
        }
    }

    /// The codec with payload type `pt`, if this media description has one.
    pub fn codec(&self, pt: Pt) -> Option<&Codec> {
        self.codecs.iter().find(|c| c.pt == pt)
    }
}

impl Sdp {
    /// True for a WebRTC description: DTLS-SRTP profile or ICE/DTLS attributes anywhere.
    pub fn is_webrtc(&self) -> bool {
        self.fingerprint.is_some()
            || self.ice_ufrag.is_some()
            || self.media.iter().any(|m| {
                m.proto == Proto::UdpTlsRtpSavpf || m.fingerprint.is_some() || m.ice_ufrag.is_some()
            })
    }
}

/// The `<media>` field of `m=` (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
    Application,
    Other(String),
}

impl MediaKind {
    pub fn parse(text: &str) -> Self {
        match text {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "application" => MediaKind::Application,
            other => MediaKind::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Application => "application",
            MediaKind::Other(s) => s,
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `<proto>` field of `m=` (RFC 8866 §5.14, RFC 5764, RFC 8841).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Proto {
    RtpAvp,
    RtpAvpf,
    RtpSavp,
    RtpSavpf,
    UdpTlsRtpSavpf,
    UdpDtlsSctp,
    Other(String),
}

impl Proto {
    pub fn parse(text: &str) -> Self {
        match text {
            "RTP/AVP" => Proto::RtpAvp,
            "RTP/AVPF" => Proto::RtpAvpf,
            "RTP/SAVP" => Proto::RtpSavp,
            "RTP/SAVPF" => Proto::RtpSavpf,
            "UDP/TLS/RTP/SAVPF" => Proto::UdpTlsRtpSavpf,
            "UDP/DTLS/SCTP" => Proto::UdpDtlsSctp,
            other => Proto::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            Proto::UdpDtlsSctp => "UDP/DTLS/SCTP",
            Proto::Other(s) => s,
        }
    }

    /// Formats are RTP payload types only for RTP profiles (RFC 8866 §5.14).
    pub fn is_rtp(&self) -> bool {
        match self {
            Proto::UdpDtlsSctp => false,
            Proto::Other(s) => s.split('/').any(|part| part == "RTP"),
            _ => true,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Media direction attributes (RFC 8866 §6.7; RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answerer states for an offered one (RFC 3264 §6.1).
    pub fn reversed(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One RTP payload format: `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` for a payload type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub pt: Pt,
    /// Encoding name as written, e.g. `opus`, `PCMU`, `telephone-event`.
    pub name: String,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    /// The `a=fmtp` parameters, e.g. `minptime=10;useinbandfec=1`.
    pub fmtp: Option<String>,
    /// Values of `a=rtcp-fb` lines for this payload type, e.g. `nack pli`.
    pub rtcp_fb: Vec<String>,
}

impl Codec {
    pub fn new(pt: Pt, name: &str, clock_rate: u32, channels: Option<u8>) -> Self {
        Codec {
            pt,
            name: name.to_owned(),
            clock_rate,
            channels,
            fmtp: None,
            rtcp_fb: Vec::new(),
        }
    }

    /// The codec a static payload type stands for without an `a=rtpmap` (RFC 3551 §6).
    pub fn from_static(pt: Pt) -> Option<Self> {
        let (name, clock_rate, channels) = match pt.0 {
            0 => ("PCMU", 8000, None),
            3 => ("GSM", 8000, None),
            4 => ("G723", 8000, None),
            5 => ("DVI4", 8000, None),
            6 => ("DVI4", 16000, None),
            7 => ("LPC", 8000, None),
            8 => ("PCMA", 8000, None),
            9 => ("G722", 8000, None),
            10 => ("L16", 44100, Some(2)),
            11 => ("L16", 44100, None),
            12 => ("QCELP", 8000, None),
            13 => ("CN", 8000, None),
            14 => ("MPA", 90000, None),
            15 => ("G728", 8000, None),
            16 => ("DVI4", 11025, None),
            17 => ("DVI4", 22050, None),
            18 => ("G729", 8000, None),
            25 => ("CelB", 90000, None),
            26 => ("JPEG", 90000, None),
            28 => ("nv", 90000, None),
            31 => ("H261", 90000, None),
            32 => ("MPV", 90000, None),
            33 => ("MP2T", 90000, None),
            34 => ("H263", 90000, None),
            _ => return None,
        };
        Some(Codec::new(pt, name, clock_rate, channels))
    }

    /// Same encoding, whatever the payload type: names compare case-insensitively
    /// (RFC 4855 §3) and a missing channel count means one (RFC 8866 §6.6).
    pub fn same_encoding(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels.unwrap_or(1) == other.channels.unwrap_or(1)
    }

    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    /// An RTX payload format (RFC 4588 §8.1): `rtx/RATE` with `a=fmtp:PT apt=MEDIA`.
    pub fn rtx(pt: Pt, apt: Pt, clock_rate: u32) -> Self {
        let mut c = Codec::new(pt, "rtx", clock_rate, None);
        c.fmtp = Some(format!("apt={}", apt.0));
        c
    }

    /// The payload type this RTX format repairs (`apt=`), if it is one.
    pub fn apt(&self) -> Option<Pt> {
        if !self.name.eq_ignore_ascii_case("rtx") {
            return None;
        }
        self.fmtp
            .as_deref()?
            .split(';')
            .find_map(|p| p.trim().strip_prefix("apt="))?
            .trim()
            .parse()
            .ok()
            .map(Pt)
    }

    /// Generic NACK among this format's `a=rtcp-fb` values (RFC 4585 §4.2).
    pub fn has_nack(&self) -> bool {
        self.rtcp_fb.iter().any(|fb| fb == "nack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp_with(connection: Option<IpAddr>, media: Media) -> Sdp {
        Sdp {
            origin: Origin::default(),
            session_name: "-".to_owned(),
            connection,
            attributes: Vec::new(),
            media: vec![media],
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address is valid")
    }

    #[test]
    fn media_connection_overrides_session_connection() {
        let mut m = Media::new(MediaKind::Audio, 4000, Proto::RtpAvp);
        m.connection = Some(ip("192.0.2.7"));
        let sdp = sdp_with(Some(ip("192.0.2.1")), m);
        assert_eq!(
            sdp.media[0].rtp_addr(&sdp),
            Some("192.0.2.7:4000".parse().expect("valid"))
        );
    }

    #[test]
    fn rejected_or_unspecified_media_has_no_address() {
        let m = Media::new(MediaKind::Audio, 0, Proto::RtpAvp);
        let sdp = sdp_with(Some(ip("192.0.2.1")), m);
        assert_eq!(sdp.media[0].rtp_addr(&sdp), None);
        let m = Media::new(MediaKind::Audio, 4000, Proto::RtpAvp);
        let sdp = sdp_with(Some(ip("0.0.0.0")), m);
        assert_eq!(sdp.media[0].rtp_addr(&sdp), None);
        assert_eq!(sdp.media[0].rtcp_addr(&sdp), None);
    }

    #[test]
    fn rtcp_addr_follows_mux_then_attribute_then_port_plus_one() {
        let m = Media::new(MediaKind::Audio, 4000, Proto::RtpAvp);
        let mut sdp = sdp_with(Some(ip("192.0.2.1")), m);
        assert_eq!(
            sdp.media[0].rtcp_addr(&sdp),
            Some("192.0.2.1:4001".parse().expect("valid"))
        );
        sdp.media[0].rtcp = Some((5005, Some(ip("192.0.2.9"))));
        assert_eq!(
            sdp.media[0].rtcp_addr(&sdp),
            Some("192.0.2.9:5005".parse().expect("valid"))
        );
        sdp.media[0].rtcp = Some((5005, None));
        assert_eq!(
            sdp.media[0].rtcp_addr(&sdp),
            Some("192.0.2.1:5005".parse().expect("valid"))
        );
        sdp.media[0].rtcp_mux = true;
        assert_eq!(
            sdp.media[0].rtcp_addr(&sdp),
            Some("192.0.2.1:4000".parse().expect("valid"))
        );
    }

    #[test]
    fn rtcp_port_plus_one_does_not_overflow() {
        let m = Media::new(MediaKind::Audio, u16::MAX, Proto::RtpAvp);
        let sdp = sdp_with(Some(ip("192.0.2.1")), m);
        assert_eq!(sdp.media[0].rtcp_addr(&sdp), None);
    }

    #[test]
    fn webrtc_is_detected_by_profile_or_ice_attributes() {
        let m = Media::new(MediaKind::Audio, 9, Proto::UdpTlsRtpSavpf);
        assert!(sdp_with(None, m).is_webrtc());
        let mut m = Media::new(MediaKind::Audio, 9, Proto::RtpSavpf);
        assert!(!sdp_with(None, m.clone()).is_webrtc());
        m.ice_ufrag = Some("abcd".to_owned());
        assert!(sdp_with(None, m).is_webrtc());
        let mut sdp = sdp_with(None, Media::new(MediaKind::Audio, 9, Proto::RtpAvp));
        assert!(!sdp.is_webrtc());
        sdp.fingerprint = Some("sha-256 00".to_owned());
        assert!(sdp.is_webrtc());
    }

    #[test]
    fn static_payload_types_have_codecs() {
        let pcmu = Codec::from_static(Pt(0)).expect("PCMU is static");
        assert_eq!((pcmu.name.as_str(), pcmu.clock_rate), ("PCMU", 8000));
        assert_eq!(
            Codec::from_static(Pt(18)).map(|c| c.name),
            Some("G729".into())
        );
        assert_eq!(Codec::from_static(Pt(96)), None);
    }

    #[test]
    fn same_encoding_ignores_pt_and_case() {
        let a = Codec::new(Pt(0), "PCMU", 8000, None);
        let b = Codec::new(Pt(99), "pcmu", 8000, Some(1));
        assert!(a.same_encoding(&b));
        assert!(!a.same_encoding(&Codec::new(Pt(0), "PCMU", 16000, None)));
    }

    #[test]
    fn answer_direction_is_reversed_offer_direction() {
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.reversed(), Direction::SendRecv);
    }
}
