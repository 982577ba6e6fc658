//! Just enough SDP (RFC 8866) for plain-RTP load: a PCMU offer from a local port, an answer to
//! the server's offer, and where the server's audio stream lives; and the WebRTC offer of
//! `srtp-echo` ([`webrtc_offer`]).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};

/// Static payload type of PCMU (RFC 3551 §6).
pub const PCMU: u8 = 0;

fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    sdp.lines().map(str::trim_end).filter(|l| !l.is_empty())
}

fn header(addr: SocketAddr, id: u64) -> String {
    let family = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = addr.ip();
    format!(
        "v=0\r\no=loadgen {id} 1 IN {family} {ip}\r\ns=loadgen\r\nc=IN {family} {ip}\r\nt=0 0\r\n"
    )
}

/// A plain RTP/AVP offer: PCMU audio from `addr`, RTCP on the next port.
pub fn offer(addr: SocketAddr, id: u64) -> String {
    offer_with(addr, id, false)
}

/// [`offer`], with `a=rtcp-mux` (RFC 5761: RTCP on the RTP port) when `rtcp_mux`.
pub fn offer_with(addr: SocketAddr, id: u64, rtcp_mux: bool) -> String {
    let mut s = header(addr, id);
    let _ = write!(
        s,
        "m=audio {} RTP/AVP {PCMU}\r\na=rtpmap:{PCMU} PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        addr.port()
    );
    if rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    s
}

/// Opus's dynamic payload type, as browsers number it.
pub const OPUS: u8 = 111;
/// RFC 8445 §5.1.2.1: host type preference 126, local preference 65535, component 1.
pub const HOST_PRIORITY: u32 = 2_130_706_431;

/// What a WebRTC offer announces about our side.
#[derive(Clone, Debug)]
pub struct WebrtcOffer<'a> {
    /// The one socket of the session: RTP, RTCP (muxed), STUN and DTLS.
    pub addr: SocketAddr,
    pub id: u64,
    pub ice_ufrag: &'a str,
    pub ice_pwd: &'a str,
    /// SHA-256 of our DTLS certificate, `AB:CD:…`.
    pub fingerprint: &'a str,
    pub ssrc: u32,
}

/// A browser-like WebRTC offer (JSEP, RFC 8829): one bundled audio m-line, Opus,
/// `UDP/TLS/RTP/SAVPF`, rtcp-mux, full ICE (no `a=ice-lite`) with one host candidate,
/// `a=setup:actpass` (RFC 8842: the answerer picks the DTLS role).
pub fn webrtc_offer(o: &WebrtcOffer<'_>) -> String {
    let mut s = header(o.addr, o.id);
    let (ip, port) = (o.addr.ip(), o.addr.port());
    let family = if o.addr.is_ipv4() { "IP4" } else { "IP6" };
    let _ = write!(
        s,
        "a=group:BUNDLE 0\r\n\
         m=audio {port} UDP/TLS/RTP/SAVPF {OPUS}\r\n\
         a=rtcp:{port} IN {family} {ip}\r\n\
         a=ice-ufrag:{ufrag}\r\n\
         a=ice-pwd:{pwd}\r\n\
         a=fingerprint:sha-256 {fp}\r\n\
         a=setup:actpass\r\n\
         a=mid:0\r\n\
         a=sendrecv\r\n\
         a=rtcp-mux\r\n\
         a=rtpmap:{OPUS} opus/48000/2\r\n\
         a=fmtp:{OPUS} minptime=10;useinbandfec=1\r\n\
         a=ssrc:{ssrc} cname:loadgen\r\n\
         a=candidate:1 1 udp {HOST_PRIORITY} {ip} {port} typ host\r\n\
         a=end-of-candidates\r\n",
        ufrag = o.ice_ufrag,
        pwd = o.ice_pwd,
        fp = o.fingerprint,
        ssrc = o.ssrc,
    );
    s
}

/// The address of the first UDP host candidate among `candidates` (`a=candidate` values
/// without the `candidate:` prefix: `foundation component udp priority ip port typ host`).
pub fn host_candidate<'a>(candidates: impl IntoIterator<Item = &'a str>) -> Option<SocketAddr> {
    candidates.into_iter().find_map(|c| {
        let f: Vec<&str> = c.split_whitespace().collect();
        let udp = f.get(2)?.eq_ignore_ascii_case("udp");
        let host = f.get(6..8)? == ["typ", "host"];
        let ip: IpAddr = f.get(4)?.parse().ok()?;
        let port: u16 = f.get(5)?.parse().ok()?;
        (udp && host && f[1] == "1").then_some(SocketAddr::new(ip, port))
    })
}

/// One `m=` section of a parsed SDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    pub kind: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<u8>,
    pub addr: Option<IpAddr>,
    pub direction: Option<String>,
    /// `a=rtpmap:` lines, without the `a=` prefix.
    pub rtpmaps: Vec<String>,
    pub rtcp_mux: bool,
}

const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

fn parse_c(value: &str) -> anyhow::Result<IpAddr> {
    // c=IN IP4 203.0.113.1[/ttl]
    let addr = value
        .split_whitespace()
        .nth(2)
        .context("c= line without address")?;
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse()
        .with_context(|| format!("bad c= address {addr:?}"))
}

/// The media sections, each with its effective connection address and direction (the media
/// level overrides the session level).
pub fn media(sdp: &str) -> anyhow::Result<Vec<Media>> {
    let mut session_addr = None;
    let mut session_dir = None;
    let mut out: Vec<Media> = Vec::new();
    for line in lines(sdp) {
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("bad SDP line {line:?}"))?;
        match (key, out.last_mut()) {
            ("m", _) => {
                let mut f = value.split_whitespace();
                let kind = f.next().context("empty m= line")?.to_string();
                let port = f.next().context("m= line without port")?;
                let port = port.split('/').next().unwrap_or(port);
                let port = port
                    .parse()
                    .with_context(|| format!("bad m= port {port:?}"))?;
                let proto = f.next().context("m= line without protocol")?.to_string();
                let formats = f.filter_map(|p| p.parse().ok()).collect();
                out.push(Media {
                    kind,
                    port,
                    proto,
                    formats,
                    addr: session_addr,
                    direction: session_dir.clone(),
                    rtpmaps: Vec::new(),
                    rtcp_mux: false,
                });
            }
            ("c", None) => session_addr = Some(parse_c(value)?),
            ("c", Some(m)) => m.addr = Some(parse_c(value)?),
            ("a", m) if DIRECTIONS.contains(&value) => match m {
                None => session_dir = Some(value.to_string()),
                Some(m) => m.direction = Some(value.to_string()),
            },
            ("a", Some(m)) if value.starts_with("rtpmap:") => m.rtpmaps.push(value.to_string()),
            ("a", Some(m)) if value == "rtcp-mux" => m.rtcp_mux = true,
            _ => {}
        }
    }
    Ok(out)
}

/// Where the first audio stream of `sdp` goes: `c=` address and `m=audio` port.
pub fn audio_addr(sdp: &str) -> anyhow::Result<SocketAddr> {
    let audio = media(sdp)?
        .into_iter()
        .find(|m| m.kind == "audio")
        .context("no m=audio in SDP")?;
    let ip = audio.addr.context("no c= line for the audio stream")?;
    if audio.port == 0 {
        bail!("audio stream rejected (port 0)");
    }
    Ok(SocketAddr::new(ip, audio.port))
}

/// A plain answer to `offer`: the first audio stream received on `addr` with the offer's first
/// payload type, every other stream rejected (port 0).
pub fn answer(offer: &str, addr: SocketAddr, id: u64) -> anyhow::Result<String> {
    let sections = media(offer)?;
    let mut s = header(addr, id);
    let mut audio_done = false;
    for m in &sections {
        let first = m.formats.first().copied().unwrap_or(PCMU);
        if m.kind != "audio" || audio_done || m.port == 0 {
            let _ = write!(s, "m={} 0 {} {first}\r\n", m.kind, m.proto);
            continue;
        }
        audio_done = true;
        let _ = write!(s, "m=audio {} {} {first}\r\n", addr.port(), m.proto);
        let prefix = format!("rtpmap:{first} ");
        match m.rtpmaps.iter().find(|r| r.starts_with(&prefix)) {
            Some(r) => {
                let _ = write!(s, "a={r}\r\n");
            }
            None if first == PCMU => s.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            None => {}
        }
        let dir = match m.direction.as_deref() {
            Some("sendonly") => "recvonly",
            Some("recvonly") => "sendonly",
            Some("inactive") => "inactive",
            _ => "sendrecv",
        };
        let _ = write!(s, "a={dir}\r\n");
        // Like a current phone: RTCP muxed whenever the offer proposes it.
        if m.rtcp_mux {
            s.push_str("a=rtcp-mux\r\n");
        }
    }
    if !audio_done {
        bail!("the offer has no audio stream to answer");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_offer_parses_back() {
        let o = offer(a("127.0.0.1:40000"), 7);
        assert_eq!(audio_addr(&o).unwrap(), a("127.0.0.1:40000"));
        let m = &media(&o).unwrap()[0];
        assert_eq!(
            (m.proto.as_str(), m.formats.as_slice()),
            ("RTP/AVP", &[0u8][..])
        );
        assert!(o.ends_with("\r\n") && o.contains("c=IN IP4 127.0.0.1\r\n"));
    }

    #[test]
    fn media_level_connection_overrides_session_level() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.3\r\n\
                   m=audio 4000/2 RTP/AVP 8 0\r\nc=IN IP4 10.0.0.2/127\r\na=sendonly\r\n";
        assert_eq!(audio_addr(sdp).unwrap(), a("10.0.0.2:4000"));
        let m = media(sdp).unwrap();
        assert_eq!(m[0].addr, Some("10.0.0.3".parse().unwrap()));
        assert_eq!(m[1].formats, vec![8, 0]);
    }

    #[test]
    fn answer_takes_first_audio_format_and_rejects_the_rest() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=sendonly\r\n\
                   m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
                   m=video 20002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n";
        let ans = answer(sdp, a("127.0.0.1:41000"), 1).unwrap();
        let m = media(&ans).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].port, m[0].formats.as_slice()), (41000, &[0u8][..]));
        assert_eq!(m[0].direction.as_deref(), Some("recvonly"));
        assert_eq!(m[0].rtpmaps, vec!["rtpmap:0 PCMU/8000".to_string()]);
        assert_eq!((m[1].kind.as_str(), m[1].port), ("video", 0));
        assert_eq!(audio_addr(&ans).unwrap(), a("127.0.0.1:41000"));
        assert!(!m[0].rtcp_mux, "not offered, not answered");
    }

    #[test]
    fn rtcp_mux_is_offered_on_request_and_answered_when_offered() {
        let plain = offer(a("127.0.0.1:4000"), 1);
        assert!(!media(&plain).unwrap()[0].rtcp_mux);
        let muxed = offer_with(a("127.0.0.1:4000"), 1, true);
        assert!(media(&muxed).unwrap()[0].rtcp_mux);
        let ans = answer(&muxed, a("127.0.0.1:41000"), 2).unwrap();
        assert!(media(&ans).unwrap()[0].rtcp_mux);
    }

    #[test]
    fn webrtc_offer_parses_as_webrtc() {
        let o = WebrtcOffer {
            addr: a("127.0.0.1:41234"),
            id: 3,
            ice_ufrag: "uFrG",
            ice_pwd: "0123456789abcdefghijkl",
            fingerprint: "AB:CD",
            ssrc: 0x5100_0001,
        };
        let text = webrtc_offer(&o);
        let m = &media(&text).unwrap()[0];
        assert_eq!(
            (m.proto.as_str(), m.formats.as_slice()),
            ("UDP/TLS/RTP/SAVPF", &[OPUS][..])
        );
        assert_eq!(audio_addr(&text).unwrap(), o.addr);
        for want in [
            "a=ice-ufrag:uFrG\r\n",
            "a=ice-pwd:0123456789abcdefghijkl\r\n",
            "a=fingerprint:sha-256 AB:CD\r\n",
            "a=setup:actpass\r\n",
            "a=rtcp-mux\r\n",
            "a=rtpmap:111 opus/48000/2\r\n",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 41234 typ host\r\n",
        ] {
            assert!(text.contains(want), "{want:?} missing in {text}");
        }
        assert!(!text.contains("ice-lite"), "we are a full ICE agent");
    }

    #[test]
    fn host_candidate_skips_other_types_and_components() {
        let cands = [
            "2 1 udp 1694498815 198.51.100.1 5000 typ srflx raddr 0.0.0.0 rport 0",
            "1 2 udp 2130706430 127.0.0.1 5001 typ host",
            "1 1 tcp 2130706431 127.0.0.1 5002 typ host tcptype passive",
            "1 1 UDP 2130706431 127.0.0.1 5003 typ host",
        ];
        assert_eq!(host_candidate(cands), Some(a("127.0.0.1:5003")));
        assert_eq!(host_candidate(["garbage"]), None);
    }

    #[test]
    fn missing_pieces_are_errors() {
        assert!(audio_addr("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").is_err());
        assert!(audio_addr("v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 4000 RTP/AVP 96\r\n").is_err());
        assert!(audio_addr("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n").is_err());
        assert!(answer("v=0\r\nm=video 1 RTP/AVP 96\r\n", a("127.0.0.1:1"), 1).is_err());
        assert!(media("garbage").is_err());
    }
}
