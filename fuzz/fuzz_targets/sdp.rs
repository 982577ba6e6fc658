//! Any text as an SDP offer (RFC 8866): a parse error, or a value that writes and parses back
//! the same; then the negotiation a client's offer reaches: codec selection, the plain and the
//! WebRTC answers (which parse back the same and have one m-line per offered one) and the
//! peer's ICE/DTLS parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_control::sdp::{Forced, LocalTransport, Sdp, build_answer, select_codecs};
use sluice_control::webrtc::sdp::{RemoteIce, Setup, WebrtcLocal, webrtc_answer};

/// Our own output parses back to the same value.
fn reparses(sdp: &Sdp) {
    let written = sdp.to_string();
    let again = Sdp::parse(&written).expect("our own output parses");
    assert_eq!(&again, sdp);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = Sdp::parse(text) else {
        return;
    };
    reparses(&offer);
    let _ = RemoteIce::from_sdp(&offer);
    let Ok(selected) = select_codecs(&offer, &Forced::default()) else {
        return;
    };
    assert_eq!(selected.len(), offer.media.len());
    let ip = "203.0.113.5".parse().expect("a literal address");
    let local = LocalTransport {
        ip,
        ports: (0..offer.media.len() as u16)
            .map(|i| 20_000 + 2 * i)
            .collect(),
        session_id: 42,
        session_version: 1,
    };
    let answer = build_answer(&offer, &selected, &local);
    assert_eq!(answer.media.len(), offer.media.len());
    reparses(&answer);
    let local = WebrtcLocal {
        ip,
        port: 20_000,
        ice_ufrag: "SlUi".into(),
        ice_pwd: "abcdefghijklmnopqrstuvwx".into(),
        fingerprint: ["AB"; 32].join(":"),
        setup: Setup::Passive,
        session_id: 42,
        session_version: 1,
        max_message_size: 65_536,
    };
    let answer = webrtc_answer(&offer, &selected, &local);
    assert_eq!(answer.media.len(), offer.media.len());
    reparses(&answer);
});
