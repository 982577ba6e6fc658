//! Tests over the sample descriptions in `tests/data/` and generated ones: parsing, codec
//! selection, and the round trip `parse(write(x)) == x`.

use std::net::{IpAddr, SocketAddr};

use sluice_dataplane::api::Pt;

use super::*;

const SIP_PHONE_PCMU: &str = include_str!("../../../tests/data/sip_phone_pcmu.sdp");
const SIP_PHONE_G722: &str = include_str!("../../../tests/data/sip_phone_g722.sdp");
const SIP_VIDEO: &str = include_str!("../../../tests/data/sip_video.sdp");
const CHROME_OFFER: &str = include_str!("../../../tests/data/chrome_offer.sdp");
const FIREFOX_OFFER: &str = include_str!("../../../tests/data/firefox_offer.sdp");
const BROKEN_NO_MEDIA: &str = include_str!("../../../tests/data/broken_no_media.sdp");
const BROKEN_BAD_MLINE: &str = include_str!("../../../tests/data/broken_bad_mline.sdp");

const VALID: [(&str, &str); 5] = [
    ("sip_phone_pcmu", SIP_PHONE_PCMU),
    ("sip_phone_g722", SIP_PHONE_G722),
    ("sip_video", SIP_VIDEO),
    ("chrome_offer", CHROME_OFFER),
    ("firefox_offer", FIREFOX_OFFER),
];

fn parse(text: &str) -> Sdp {
    Sdp::parse(text).unwrap_or_else(|e| panic!("sample must parse: {e}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address is valid")
}

/// `(pt, name)` of the selected codec and of the DTMF codec, per m-line.
fn selection(sdp: &Sdp, forced: &Forced) -> Vec<Option<(u8, String, Option<u8>)>> {
    select_codecs(sdp, forced)
        .expect("sample has usable media")
        .into_iter()
        .map(|s| s.map(|s| (s.codec.pt.0, s.codec.name, s.dtmf.map(|d| d.pt.0))))
        .collect()
}

fn sel(pt: u8, name: &str, dtmf: Option<u8>) -> Option<(u8, String, Option<u8>)> {
    Some((pt, name.to_owned(), dtmf))
}

#[test]
fn every_sample_round_trips() {
    for (name, text) in VALID {
        let sdp = parse(text);
        let written = sdp.to_string();
        assert!(
            written.ends_with("\r\n") && !written.contains("\r\r"),
            "{name}"
        );
        assert_eq!(
            Sdp::parse(&written).as_ref(),
            Ok(&sdp),
            "{name}:\n{written}"
        );
        // Writing is stable: a second trip gives the same text.
        assert_eq!(parse(&written).to_string(), written, "{name}");
    }
}

#[test]
fn sip_phone_offer_selects_pcmu_and_telephone_event() {
    let sdp = parse(SIP_PHONE_PCMU);
    assert!(!sdp.is_webrtc());
    let m = &sdp.media[0];
    let pts: Vec<u8> = m.codecs.iter().map(|c| c.pt.0).collect();
    assert_eq!(pts, [0, 8, 18, 101]);
    assert_eq!(m.codecs[2].fmtp.as_deref(), Some("annexb=no"));
    assert!(!m.rtcp_mux);
    assert_eq!(m.rtp_addr(&sdp), Some(addr("192.168.10.41:11780")));
    assert_eq!(m.rtcp_addr(&sdp), Some(addr("192.168.10.41:11781")));
    assert_eq!(m.attributes, [Attribute::new("ptime", Some("20"))]);
    assert_eq!(
        selection(&sdp, &Forced::default()),
        [sel(0, "PCMU", Some(101))]
    );
    let forced = Forced {
        audio: Some(CodecName::Pcma),
        video: None,
    };
    assert_eq!(selection(&sdp, &forced), [sel(8, "PCMA", Some(101))]);
}

#[test]
fn sip_phone_answer_is_plain_rtp_with_offer_pts() {
    let sdp = parse(SIP_PHONE_PCMU);
    let selected = select_codecs(&sdp, &Forced::default()).expect("usable");
    let local = LocalTransport {
        ip: "203.0.113.5".parse().expect("valid"),
        ports: vec![30000],
        session_id: 1,
        session_version: 1,
    };
    let answer = build_answer(&sdp, &selected, &local);
    let text = answer.to_string();
    assert!(text.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{text}");
    assert!(text.contains("a=rtcp:30001\r\n"), "{text}");
    assert!(!text.contains("rtcp-mux"), "{text}");
    assert!(text.contains("a=fmtp:101 0-15\r\n"), "{text}");
}

#[test]
fn g722_phone_selects_g722_with_explicit_rtcp() {
    let sdp = parse(SIP_PHONE_G722);
    let m = &sdp.media[0];
    assert_eq!(
        m.rtcp,
        Some((2227, Some("10.20.0.17".parse().expect("valid"))))
    );
    assert_eq!(m.rtcp_addr(&sdp), Some(addr("10.20.0.17:2227")));
    assert_eq!(
        selection(&sdp, &Forced::default()),
        [sel(9, "G722", Some(101))]
    );
}

#[test]
fn sip_video_selects_g722_and_h264() {
    let sdp = parse(SIP_VIDEO);
    assert_eq!(sdp.origin.username, "room-system");
    assert_eq!(sdp.media[1].proto, Proto::RtpAvp);
    assert_eq!(sdp.media[1].codecs[1].name, "H263");
    assert_eq!(
        selection(&sdp, &Forced::default()),
        [sel(9, "G722", Some(101)), sel(109, "H264", None)]
    );
    let forced = Forced {
        audio: None,
        video: Some(CodecName::Vp8),
    };
    assert_eq!(
        select_codecs(&sdp, &forced),
        Err(NegotiationError::CodecNotOffered {
            kind: MediaKind::Video,
            codec: CodecName::Vp8
        })
    );
}

#[test]
fn chrome_offer_is_parsed_into_typed_fields() {
    let sdp = parse(CHROME_OFFER);
    assert!(sdp.is_webrtc());
    assert_eq!(sdp.bundle, ["0", "1", "2"]);
    assert_eq!(sdp.origin.session_id, 4611731400430051336);
    assert_eq!(sdp.media.len(), 3);
    let audio = &sdp.media[0];
    assert_eq!(audio.proto, Proto::UdpTlsRtpSavpf);
    assert_eq!(audio.mid.as_deref(), Some("0"));
    assert!(audio.rtcp_mux);
    assert_eq!(audio.setup.as_deref(), Some("actpass"));
    assert!(
        audio
            .fingerprint
            .as_deref()
            .is_some_and(|f| f.starts_with("sha-256 "))
    );
    assert_eq!(audio.ice_ufrag.as_deref(), Some("Qm7x"));
    assert_eq!(audio.extmaps.len(), 4);
    assert_eq!(audio.ssrcs.len(), 2);
    assert_eq!(audio.codecs.len(), 8);
    assert_eq!(audio.codecs[0].rtcp_fb, ["transport-cc"]);
    assert_eq!(audio.rtp_addr(&sdp), None, "0.0.0.0 means no address yet");
    let video = &sdp.media[1];
    assert_eq!(video.codecs[0].rtcp_fb.len(), 5);
    assert_eq!(video.codecs[1].fmtp.as_deref(), Some("apt=96"));
    assert!(
        video
            .attributes
            .contains(&Attribute::new("x-google-flag", Some("conference")))
    );
    assert!(video.attributes.contains(&Attribute::new(
        "ssrc-group",
        Some("FID 1519738227 3068297613")
    )));
    let data = &sdp.media[2];
    assert_eq!(data.kind, MediaKind::Application);
    assert_eq!(data.proto, Proto::UdpDtlsSctp);
    assert_eq!(data.formats, ["webrtc-datachannel"]);
    assert!(data.codecs.is_empty());
}

#[test]
fn chrome_offer_selects_opus_and_vp8_and_rejects_data() {
    let sdp = parse(CHROME_OFFER);
    assert_eq!(
        selection(&sdp, &Forced::default()),
        [sel(111, "opus", Some(110)), sel(96, "VP8", None), None]
    );
}

#[test]
fn chrome_offer_honours_forced_codecs_it_offers() {
    let sdp = parse(CHROME_OFFER);
    let forced = Forced {
        audio: Some(CodecName::Pcma),
        video: Some(CodecName::H264),
    };
    assert_eq!(
        selection(&sdp, &forced),
        [sel(8, "PCMA", Some(126)), sel(102, "H264", None), None]
    );
    let forced = Forced {
        audio: None,
        video: Some(CodecName::Av1),
    };
    assert_eq!(selection(&sdp, &forced)[1], sel(45, "AV1", None));
}

#[test]
fn chrome_offer_without_isac_refuses_forced_isac() {
    let sdp = parse(CHROME_OFFER);
    let forced = Forced {
        audio: CodecName::parse("ISAC32"),
        video: None,
    };
    let err = select_codecs(&sdp, &forced).unwrap_err();
    assert_eq!(err.to_string(), "offer has no isac32 for audio");
}

#[test]
fn firefox_offer_has_candidates_and_session_defaults() {
    let sdp = parse(FIREFOX_OFFER);
    assert!(sdp.is_webrtc());
    assert_eq!(sdp.origin.username, "mozilla...THIS_IS_SDPARTA-128.0");
    assert!(sdp.fingerprint.is_some());
    assert_eq!(sdp.bundle, ["0", "1"]);
    let audio = &sdp.media[0];
    assert_eq!(audio.candidates.len(), 3);
    assert!(audio.candidates[0].starts_with("0 1 UDP 2122252543 192.168.1.34"));
    assert!(audio.end_of_candidates);
    assert_eq!(audio.rtp_addr(&sdp), Some(addr("198.51.100.23:50432")));
    assert_eq!(
        audio.rtcp_addr(&sdp),
        Some(addr("198.51.100.23:50432")),
        "rtcp-mux wins over a=rtcp"
    );
    // Firefox writes fmtp before rtpmap; both still land on the codec.
    assert_eq!(
        audio.codecs[0].fmtp.as_deref(),
        Some("maxplaybackrate=48000;stereo=1;useinbandfec=1")
    );
    assert_eq!(audio.codecs[1].channels, Some(1));
    let video = &sdp.media[1];
    assert_eq!(video.codecs.len(), 8);
    assert_eq!(video.codecs[0].rtcp_fb.len(), 5);
    assert!(video.end_of_candidates);
}

#[test]
fn firefox_offer_selects_opus_without_8k_dtmf() {
    let sdp = parse(FIREFOX_OFFER);
    // telephone-event/8000 cannot ride beside opus/48000 (RFC 4733 §2.1: same clock).
    assert_eq!(
        selection(&sdp, &Forced::default()),
        [sel(109, "opus", None), sel(120, "VP8", None)]
    );
    let forced = Forced {
        audio: Some(CodecName::Pcmu),
        video: Some(CodecName::Vp9),
    };
    assert_eq!(
        selection(&sdp, &forced),
        [sel(0, "PCMU", Some(101)), sel(121, "VP9", None)]
    );
}

#[test]
fn broken_samples_give_clear_errors() {
    assert_eq!(Sdp::parse(BROKEN_NO_MEDIA), Err(SdpError::NoMedia));
    let err = Sdp::parse(BROKEN_BAD_MLINE).unwrap_err();
    assert!(
        matches!(err, SdpError::MalformedMedia { line: 6, .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "line 6: malformed m= line: port \"4917O\" is not a number from 0 to 65535"
    );
}

/// xorshift64*: a fixed-seed generator, so that a failing case is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self) -> bool {
        self.below(2) == 0
    }

    fn token(&mut self) -> String {
        const ALPHABET: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/-.";
        let len = 1 + self.below(12) as usize;
        (0..len)
            .map(|_| char::from(ALPHABET[self.below(ALPHABET.len() as u64) as usize]))
            .collect()
    }

    fn maybe_token(&mut self) -> Option<String> {
        self.chance().then(|| self.token())
    }

    fn ip(&mut self) -> IpAddr {
        if self.chance() {
            IpAddr::from((self.next() as u32).to_be_bytes())
        } else {
            IpAddr::from(u128::from(self.next()).to_be_bytes())
        }
    }

    fn direction(&mut self) -> Direction {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ][self.below(4) as usize]
    }
}

/// Attribute names that no typed field claims.
const FREE_NAMES: [&str; 5] = ["msid", "rtcp-rsize", "x-google-flag", "ssrc-group", "label"];

fn gen_attributes(rng: &mut Rng) -> Vec<Attribute> {
    (0..rng.below(3))
        .map(|_| Attribute {
            name: FREE_NAMES[rng.below(FREE_NAMES.len() as u64) as usize].to_owned(),
            value: rng.maybe_token(),
        })
        .collect()
}

fn gen_media(rng: &mut Rng) -> Media {
    let (kind, proto) = match rng.below(4) {
        0 => (MediaKind::Audio, Proto::RtpAvp),
        1 => (MediaKind::Video, Proto::UdpTlsRtpSavpf),
        2 => (
            MediaKind::Other("text".into()),
            Proto::Other("RTP/AVP/TCP".into()),
        ),
        _ => (MediaKind::Application, Proto::UdpDtlsSctp),
    };
    let mut m = Media::new(kind, rng.below(65536) as u16, proto);
    if m.proto.is_rtp() {
        let mut pt = rng.below(20) as u8;
        for _ in 0..1 + rng.below(4) {
            pt += 1 + rng.below(30) as u8;
            let mut c = Codec::from_static(Pt(pt)).unwrap_or_else(|| {
                let channels = rng.chance().then(|| 1 + rng.below(8) as u8);
                Codec::new(
                    Pt(pt),
                    &rng.token().replace('/', "x"),
                    rng.next() as u32,
                    channels,
                )
            });
            c.fmtp = rng.maybe_token();
            c.rtcp_fb = (0..rng.below(3)).map(|_| rng.token()).collect();
            m.formats.push(pt.to_string());
            m.codecs.push(c);
        }
    } else {
        m.formats.push("webrtc-datachannel".into());
    }
    m.connection = rng.chance().then(|| rng.ip());
    m.rtcp = rng
        .chance()
        .then(|| (rng.below(65536) as u16, rng.chance().then(|| rng.ip())));
    m.rtcp_mux = rng.chance();
    m.direction = rng.direction();
    m.mid = rng.maybe_token();
    m.ice_ufrag = rng.maybe_token();
    m.ice_pwd = rng.maybe_token();
    m.fingerprint = rng.chance().then(|| format!("sha-256 {}", rng.token()));
    m.setup = rng.maybe_token();
    m.candidates = (0..rng.below(3))
        .map(|i| format!("{i} 1 udp {} {} 9 typ host", rng.next() >> 33, rng.ip()))
        .collect();
    m.end_of_candidates = rng.chance();
    m.ssrcs = (0..rng.below(3))
        .map(|_| format!("{} cname:{}", rng.next() as u32, rng.token()))
        .collect();
    m.extmaps = (0..rng.below(3))
        .map(|i| format!("{} urn:{}", i + 1, rng.token()))
        .collect();
    m.attributes = gen_attributes(rng);
    m
}

fn gen_sdp(rng: &mut Rng) -> Sdp {
    Sdp {
        origin: Origin {
            username: rng.token(),
            session_id: rng.next(),
            session_version: rng.next(),
            addr: rng.ip().to_string(),
        },
        session_name: if rng.chance() {
            String::new()
        } else {
            format!("{} {}", rng.token(), rng.token())
        },
        connection: rng.chance().then(|| rng.ip()),
        bundle: (0..rng.below(3)).map(|_| rng.token()).collect(),
        ice_lite: rng.chance(),
        ice_ufrag: rng.maybe_token(),
        ice_pwd: rng.maybe_token(),
        fingerprint: rng.maybe_token(),
        setup: rng.maybe_token(),
        attributes: gen_attributes(rng),
        media: (0..1 + rng.below(4)).map(|_| gen_media(rng)).collect(),
    }
}

#[test]
fn generated_descriptions_round_trip() {
    let mut rng = Rng(0x5D9_8866);
    for case in 0..500 {
        let sdp = gen_sdp(&mut rng);
        let text = sdp.to_string();
        assert_eq!(Sdp::parse(&text).as_ref(), Ok(&sdp), "case {case}:\n{text}");
    }
}
