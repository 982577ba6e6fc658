use std::time::Instant;

use super::*;
use crate::sdp::{Direction, Forced, select_codecs};
use sluice_dataplane::api::{Pt, Ssrc};

const CHROME_OFFER: &str = include_str!("../../../tests/data/chrome_offer.sdp");
const FIREFOX_OFFER: &str = include_str!("../../../tests/data/firefox_offer.sdp");
const FP: &str = "11:8F:98:37:73:B7:7B:57:51:DD:B7:48:45:3A:12:73:1A:26:34:1C:CB:EF:9C:0D:E2:91:7A:C7:21:1E:3F:7F";

fn local(setup: Setup) -> WebrtcLocal {
    WebrtcLocal {
        ip: "203.0.113.5".parse().expect("valid"),
        port: 20000,
        ice_ufrag: "SlUi".into(),
        ice_pwd: "abcdefghijklmnopqrstuvwx".into(),
        fingerprint: FP.into(),
        setup,
        session_id: 42,
        session_version: 1,
        max_message_size: 65_536,
    }
}

fn answer_to(text: &str) -> Sdp {
    let offer = Sdp::parse(text).expect("sample parses");
    let selected = select_codecs(&offer, &Forced::default()).expect("usable");
    webrtc_answer(&offer, &selected, &local(Setup::Passive))
}

#[test]
fn chrome_answer_bundles_audio_and_video_and_rejects_data() {
    let answer = answer_to(CHROME_OFFER);
    let text = answer.to_string();
    let parsed = Sdp::parse(&text).expect("our answer parses");
    assert_eq!(parsed, answer, "written answer reads back the same");
    assert!(parsed.ice_lite);
    assert!(text.contains("a=ice-lite\r\n"));
    assert_eq!(parsed.bundle, ["0", "1"]);
    assert!(text.contains("a=group:BUNDLE 0 1\r\n"));
    let [audio, video, data] = &parsed.media[..] else {
        panic!("three m-lines expected");
    };
    for m in [audio, video] {
        assert_eq!((m.port, &m.proto), (20000, &Proto::UdpTlsRtpSavpf));
        assert!(m.rtcp_mux);
        assert_eq!(m.rtcp, Some((20000, None)));
        assert_eq!(m.setup.as_deref(), Some("passive"));
        assert_eq!(
            m.fingerprint.as_deref(),
            Some(format!("sha-256 {FP}").as_str())
        );
        assert_eq!(m.ice_ufrag.as_deref(), Some("SlUi"));
        assert_eq!(
            m.candidates,
            ["1 1 udp 2130706431 203.0.113.5 20000 typ host"]
        );
        assert!(m.end_of_candidates);
        assert!(m.extmaps.is_empty());
    }
    assert_eq!(audio.codecs[0].name, "opus");
    assert!(audio.codecs[0].rtcp_fb.is_empty(), "transport-cc dropped");
    assert_eq!(video.codecs[0].name, "VP8");
    assert_eq!(
        video.codecs[0].rtcp_fb,
        ["goog-remb", "ccm fir", "nack", "nack pli"]
    );
    assert_eq!((data.port, &data.proto), (0, &Proto::UdpDtlsSctp));
    assert_eq!(data.formats, ["webrtc-datachannel"]);
    assert_eq!(data.mid.as_deref(), Some("2"));
    assert!(data.candidates.is_empty());
}

#[test]
fn firefox_answer_parses_and_is_bundled() {
    let answer = answer_to(FIREFOX_OFFER);
    let parsed = Sdp::parse(&answer.to_string()).expect("parses");
    assert!(!parsed.bundle.is_empty());
    assert!(
        parsed
            .media
            .iter()
            .filter(|m| m.port != 0)
            .all(|m| m.port == 20000)
    );
}

#[test]
fn remote_ice_reads_media_level_attributes() {
    let offer = Sdp::parse(CHROME_OFFER).expect("parses");
    let remote = RemoteIce::from_sdp(&offer).expect("complete");
    assert_eq!(remote.ufrag, "Qm7x");
    assert_eq!(remote.pwd, "Vb3kJ8n2Lr5tYw0pZc4eHs9A");
    assert_eq!(remote.fingerprint.to_string(), format!("sha-256 {FP}"));
    assert_eq!(remote.setup, Setup::ActPass);
    assert!(!remote.ice_lite);
    assert!(remote.candidates.is_empty());
}

#[test]
fn remote_ice_reads_our_own_session_and_candidates() {
    let ours = answer_to(CHROME_OFFER);
    let remote = RemoteIce::from_sdp(&ours).expect("complete");
    assert_eq!(
        (remote.ufrag.as_str(), remote.setup),
        ("SlUi", Setup::Passive)
    );
    assert!(remote.ice_lite && remote.end_of_candidates);
    assert_eq!(remote.candidates.len(), 1, "deduplicated across m-lines");
}

#[test]
fn remote_ice_falls_back_to_session_level() {
    let text = format!(
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:sess\r\n\
         a=ice-pwd:sessionpasswordsessionpw\r\na=fingerprint:sha-256 {FP}\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    );
    let remote = RemoteIce::from_sdp(&Sdp::parse(&text).expect("parses")).expect("complete");
    assert_eq!(remote.ufrag, "sess");
    assert_eq!(remote.setup, Setup::Active, "RFC 4145 default");
}

#[test]
fn remote_ice_without_fingerprint_is_an_error() {
    let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n";
    let err = RemoteIce::from_sdp(&Sdp::parse(text).expect("parses")).unwrap_err();
    assert_eq!(err, WebrtcSdpError::MissingFingerprint);
}

fn offer_media() -> Vec<OfferMedia> {
    vec![
        OfferMedia {
            kind: MediaKind::Audio,
            mid: None,
            codec: Codec::new(Pt(111), "opus", 48000, Some(2)),
            dtmf: Some(Codec::new(Pt(126), "telephone-event", 8000, None)),
            direction: Direction::SendOnly,
            ssrc: Some(Ssrc(1111)),
            cname: Some("pub1".into()),
            rtx: None,
            rtx_ssrc: None,
        },
        OfferMedia {
            kind: MediaKind::Video,
            mid: None,
            codec: Codec::new(Pt(96), "VP8", 90000, None),
            dtmf: None,
            direction: Direction::SendOnly,
            ssrc: Some(Ssrc(2222)),
            cname: Some("pub1".into()),
            rtx: None,
            rtx_ssrc: None,
        },
    ]
}

#[test]
fn offer_is_bundled_actpass_with_ssrc_and_msid() {
    let offer = webrtc_offer(&offer_media(), &local(Setup::ActPass));
    let text = offer.to_string();
    let parsed = Sdp::parse(&text).expect("parses");
    assert_eq!(parsed, offer);
    assert_eq!(parsed.bundle, ["0", "1"]);
    assert!(parsed.ice_lite);
    let video = &parsed.media[1];
    assert_eq!(video.setup.as_deref(), Some("actpass"));
    assert_eq!(
        video.ssrcs,
        ["2222 cname:pub1", "2222 msid:pub1 video-2222"]
    );
    assert!(text.contains("a=msid:pub1 video-2222\r\n"));
    assert_eq!(video.codecs[0].rtcp_fb.len(), 4);
    assert!(parsed.media[0].codecs.iter().all(|c| c.rtcp_fb.is_empty()));
    assert_eq!(parsed.media[0].direction, Direction::SendOnly);
}

/// str0m (a browser-grade WebRTC stack) accepts our answer to its own offer.
#[test]
fn str0m_accepts_our_answer_to_its_offer() {
    use str0m::change::SdpAnswer;
    use str0m::media::{Direction as SDir, MediaKind as SKind};

    let mut rtc = str0m::Rtc::new(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(SKind::Audio, SDir::SendRecv, None, None, None);
    api.add_media(SKind::Video, SDir::SendRecv, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let offer_text = offer.to_sdp_string();

    let answer = answer_to(&offer_text);
    assert_eq!(answer.bundle.len(), 2, "both str0m m-lines accepted");
    let answer = SdpAnswer::from_sdp_string(&answer.to_string()).expect("str0m parses it");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("str0m accepts it");
}

/// str0m accepts our offer and its answer reads back through our parser.
#[test]
fn str0m_accepts_our_offer() {
    use str0m::change::SdpOffer;

    let ours = webrtc_offer(&offer_media(), &local(Setup::ActPass)).to_string();
    let mut rtc = str0m::Rtc::new(Instant::now());
    let offer = SdpOffer::from_sdp_string(&ours).expect("str0m parses it");
    let answer = rtc.sdp_api().accept_offer(offer).expect("str0m accepts it");
    let answer = Sdp::parse(&answer.to_sdp_string()).expect("we parse str0m's answer");
    assert_eq!(answer.media.len(), 2);
    assert!(answer.media.iter().all(|m| m.port != 0));
    let remote = RemoteIce::from_sdp(&answer).expect("complete");
    // RFC 8842 §5.3 lets the answerer pick either role; str0m answers passive, so the
    // server is then the DTLS client.
    assert!(matches!(remote.setup, Setup::Active | Setup::Passive));
}

#[test]
fn rtx_is_answered_for_the_chosen_codec_and_offered_with_an_fid_group() {
    // Chrome offers VP8 96 with RTX 97 (apt=96): the answer keeps exactly that pair.
    let answer = answer_to(CHROME_OFFER);
    let video = &answer.media[1];
    let rtx: Vec<_> = video.codecs.iter().filter_map(|c| c.apt()).collect();
    assert_eq!(rtx, [Pt(96)]);
    assert!(video.formats.contains(&"97".to_owned()));
    assert!(
        video
            .codecs
            .iter()
            .all(|c| c.apt().is_none() || c.rtcp_fb.is_empty())
    );

    // Our own offer: the RTX format, and its SSRC grouped with the media one (RFC 4588 §8).
    let mut media = offer_media();
    media[1].rtx = Some(Codec::rtx(Pt(97), Pt(96), 90000));
    media[1].rtx_ssrc = Some(Ssrc(3333));
    let text = webrtc_offer(&media, &local(Setup::ActPass)).to_string();
    for line in [
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=ssrc-group:FID 2222 3333",
        "a=ssrc:3333 cname:pub1",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(
        !text.contains("a=rtcp-fb:97"),
        "no feedback on RTX:\n{text}"
    );
}

const FIREFOX_DATA_OFFER: &str = include_str!("../../../tests/data/firefox_offer_datachannel.sdp");
const CHROME_DATA_ONLY_OFFER: &str =
    include_str!("../../../tests/data/chrome_offer_datachannel_only.sdp");

/// The answer to `text` accepting its data m-line (`selected` may be all `None`).
fn data_answer_to(text: &str) -> (Sdp, DataOffer) {
    let offer = Sdp::parse(text).expect("sample parses");
    let selected =
        select_codecs(&offer, &Forced::default()).unwrap_or_else(|_| vec![None; offer.media.len()]);
    let data = data_offer(&offer).expect("a data m-line");
    let answer = webrtc_answer_with_data(&offer, &selected, Some(&data), &local(Setup::Passive));
    (answer, data)
}

fn assert_data_line(m: &Media) {
    assert_eq!((m.port, &m.proto), (20000, &Proto::UdpDtlsSctp));
    assert_eq!(m.formats, ["webrtc-datachannel"]);
    let attr = |name: &str| {
        m.attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.clone())
    };
    assert_eq!(attr("sctp-port").as_deref(), Some("5000"));
    assert_eq!(attr("max-message-size").as_deref(), Some("65536"));
    assert!(!m.rtcp_mux && m.rtcp.is_none() && m.codecs.is_empty());
    assert_eq!(m.setup.as_deref(), Some("passive"));
    assert_eq!(m.ice_ufrag.as_deref(), Some("SlUi"));
    assert!(m.end_of_candidates && m.candidates.len() == 1);
}

#[test]
fn chrome_data_line_is_answered_in_the_bundle() {
    let (answer, data) = data_answer_to(CHROME_OFFER);
    assert_eq!(
        data,
        DataOffer {
            mline: 2,
            max_message_size: Some(262_144),
            sctp_port: 5000,
            legacy: false,
        }
    );
    let text = answer.to_string();
    assert!(text.contains("a=group:BUNDLE 0 1 2\r\n"), "{text}");
    assert!(text.contains("m=application 20000 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
    let parsed = Sdp::parse(&text).expect("our answer parses");
    assert_eq!(parsed, answer);
    assert_data_line(&parsed.media[2]);
    assert_eq!(parsed.media[2].mid.as_deref(), Some("2"));
    assert_eq!(parsed.media[0].port, 20000, "audio still accepted");
}

#[test]
fn firefox_data_line_is_answered_in_the_bundle() {
    let (answer, data) = data_answer_to(FIREFOX_DATA_OFFER);
    assert_eq!(data.mline, 2);
    assert_eq!(data.max_message_size, Some(1_073_741_823));
    assert_eq!(answer.bundle, ["0", "1", "2"]);
    assert_data_line(&answer.media[2]);
}

#[test]
fn a_data_only_offer_is_answered_alone() {
    let offer = Sdp::parse(CHROME_DATA_ONLY_OFFER).expect("parses");
    assert!(offer.is_webrtc());
    let (answer, data) = data_answer_to(CHROME_DATA_ONLY_OFFER);
    assert_eq!(data.mline, 0);
    assert_eq!(answer.bundle, ["0"]);
    assert_eq!(answer.media.len(), 1);
    assert_data_line(&answer.media[0]);
    let remote = RemoteIce::from_sdp(&offer).expect("ICE from the data m-line");
    assert_eq!(remote.ufrag, "Qm7x");
}

#[test]
fn max_message_size_absent_or_zero_and_rejected_lines() {
    let base = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    let offer = |m: &str| Sdp::parse(&format!("{base}{m}")).expect("parses");
    let d = data_offer(&offer(
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
    ))
    .expect("data");
    assert_eq!((d.max_message_size, d.sctp_port), (None, 5000));
    let d = data_offer(&offer(
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=max-message-size:0\r\n\
         a=sctp-port:5001\r\n",
    ))
    .expect("data");
    assert_eq!((d.max_message_size, d.sctp_port), (Some(0), 5001));
    // Rejected by the offerer, or a legacy line without its sctpmap: no data line.
    assert_eq!(
        data_offer(&offer(
            "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        )),
        None
    );
    assert_eq!(
        data_offer(&offer("m=application 9 DTLS/SCTP 5000\r\n")),
        None
    );
    assert_eq!(
        data_offer(&offer(
            "m=application 9 DTLS/SCTP 5000\r\na=sctpmap:5000 bfcp 1024\r\n"
        )),
        None
    );
    let d = data_offer(&offer(
        "m=application 9 DTLS/SCTP 5001\r\na=sctpmap:5001 webrtc-datachannel 1024\r\n",
    ))
    .expect("the legacy form");
    assert_eq!(
        (d.max_message_size, d.sctp_port, d.legacy),
        (None, 5001, true)
    );
}

/// An offer in the legacy form (`DTLS/SCTP 5000` + `a=sctpmap`, as Chrome sent before RFC
/// 8841) is answered in kind: same proto, `a=sctpmap`, no `a=sctp-port`.
#[test]
fn legacy_data_line_is_answered_in_kind() {
    let legacy = CHROME_DATA_ONLY_OFFER
        .replace(
            "UDP/DTLS/SCTP webrtc-datachannel",
            "DTLS/SCTP 5000\r\na=sctpmap:5000 webrtc-datachannel 1024",
        )
        .replace("a=sctp-port:5000\r\n", "")
        .replace("a=max-message-size:262144\r\n", "");
    assert!(
        legacy.contains("m=application 9 DTLS/SCTP 5000\r\n"),
        "{legacy}"
    );
    assert!(!legacy.contains("sctp-port"), "{legacy}");
    let (answer, data) = data_answer_to(&legacy);
    assert_eq!(
        (
            data.mline,
            data.sctp_port,
            data.legacy,
            data.max_message_size
        ),
        (0, 5000, true, None)
    );
    let text = answer.to_string();
    assert!(
        text.contains("m=application 20000 DTLS/SCTP 5000\r\n"),
        "{text}"
    );
    assert!(
        text.contains("a=sctpmap:5000 webrtc-datachannel 1024\r\n"),
        "{text}"
    );
    assert!(!text.contains("sctp-port"), "{text}");
    assert!(text.contains("a=max-message-size:65536\r\n"), "{text}");
    assert_eq!(answer.bundle, ["0"]);
    let parsed = Sdp::parse(&text).expect("our answer parses");
    assert_eq!(parsed, answer);
    // Parsed back, our answer is a legacy data line too.
    assert!(data_offer(&parsed).is_some_and(|d| d.legacy));
}

/// Without a data offer the data line is still rejected as before.
#[test]
fn the_plain_answer_still_rejects_data() {
    let answer = answer_to(FIREFOX_DATA_OFFER);
    assert_eq!(answer.media[2].port, 0);
    assert_eq!(answer.bundle, ["0", "1"]);
}

/// str0m accepts our answer with the data m-line to its offer with a channel.
#[test]
fn str0m_accepts_our_data_answer() {
    use str0m::change::SdpAnswer;
    use str0m::media::{Direction as SDir, MediaKind as SKind};

    let mut rtc = str0m::Rtc::new(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(SKind::Audio, SDir::SendRecv, None, None, None);
    api.add_channel("chat".into());
    let (offer, pending) = api.apply().expect("offer");
    let (answer, _) = data_answer_to(&offer.to_sdp_string());
    assert_eq!(answer.bundle.len(), 2, "audio and data accepted");
    let answer = SdpAnswer::from_sdp_string(&answer.to_string()).expect("str0m parses it");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("str0m accepts it");
}

/// Our offer with a data m-line: bundled, and str0m (answering) accepts it with its own.
#[test]
fn offer_with_data_is_bundled_and_str0m_answers_it() {
    use str0m::change::SdpOffer;

    let offer = webrtc_offer_with_data(&offer_media(), true, &local(Setup::ActPass));
    let n = offer.media.len();
    assert_data_line_offered(&offer.media[n - 1]);
    assert_eq!(offer.bundle.len(), n);
    let mut rtc = str0m::Rtc::new(Instant::now());
    let sdp = SdpOffer::from_sdp_string(&offer.to_string()).expect("str0m parses it");
    let answer = rtc.sdp_api().accept_offer(sdp).expect("str0m accepts it");
    let answer = Sdp::parse(&answer.to_sdp_string()).expect("we parse str0m's answer");
    let data = data_offer(&answer).expect("str0m accepted the data m-line");
    assert_eq!(data.mline, n - 1);
}

fn assert_data_line_offered(m: &Media) {
    assert_eq!(m.kind, MediaKind::Application);
    assert_eq!((m.port, &m.proto), (20000, &Proto::UdpDtlsSctp));
    assert_eq!(m.setup.as_deref(), Some("actpass"));
    assert!(m.attributes.iter().any(|a| a.name == "sctp-port"));
}
