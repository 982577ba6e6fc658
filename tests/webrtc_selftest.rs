//! The str0m-based WebRTC test peer against itself: two peers on loopback connect (full ICE,
//! DTLS-SRTP, BUNDLE), media crosses intact both ways, trickle ICE works, and a mangled
//! fingerprint or ICE password keeps them apart. Proves the peer before the server scenarios
//! rely on it.

use sluice_tests::WAIT;
use sluice_tests::webrtc_peer::*;

/// Deterministic payloads (xorshift, fixed seed).
struct Payloads(u64);

impl Payloads {
    fn new(seed: u64) -> Payloads {
        Payloads(seed)
    }

    fn next(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

/// `a` offers what `offer` builds, `b` answers, `a` accepts.
fn negotiate(
    a: &mut WebrtcPeer,
    b: &mut WebrtcPeer,
    offer: impl FnOnce(&mut WebrtcPeer) -> String,
) -> (String, String) {
    let offer = offer(a);
    let answer = b.answer(&offer).expect("b answers");
    a.accept_answer(&answer).expect("a accepts the answer");
    (offer, answer)
}

fn connect(a: &mut WebrtcPeer, b: &mut WebrtcPeer) {
    let up = run_all(&mut [a, b], WAIT, |p| p.iter().all(|p| p.connected()));
    assert!(up, "not connected:\n{}\n{}", a.describe(), b.describe());
}

fn run_until_received(a: &mut WebrtcPeer, b: &mut WebrtcPeer, a_n: usize, b_n: usize) {
    let ok = run_all(&mut [a, b], WAIT, |p| {
        p[0].received().len() >= a_n && p[1].received().len() >= b_n
    });
    assert!(
        ok,
        "media missing (want {a_n}/{b_n}):\n{}\n{}",
        a.describe(),
        b.describe()
    );
}

#[test]
fn offer_answer_connects_and_media_arrives_intact_both_ways() {
    let (mut a, mut b) = (WebrtcPeer::new(), WebrtcPeer::new());
    let (offer, answer) = negotiate(&mut a, &mut b, |a| a.offer(true, true));
    for sdp in [&offer, &answer] {
        assert!(sdp.contains("UDP/TLS/RTP/SAVPF"), "{sdp}");
        assert!(sdp.contains("a=group:BUNDLE"), "{sdp}");
        assert!(sdp.contains("a=rtcp-mux"), "{sdp}");
        assert!(sdp.contains("a=fingerprint:sha-256 "), "{sdp}");
    }
    assert!(offer.contains("a=setup:actpass"), "{offer}");
    assert!(offer.contains(&format!("a={}", a.candidate())), "{offer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert_eq!(a.media().len(), 2);
    assert_eq!(b.media().len(), 2, "{}", b.describe());
    connect(&mut a, &mut b);

    let (a_audio, a_video) = (a.pt_of(MediaKind::Audio), a.pt_of(MediaKind::Video));
    assert!(a_audio.is_some() && a_video.is_some(), "{}", a.describe());
    assert_eq!(
        a_audio,
        b.pt_of(MediaKind::Audio),
        "both sides agree on the PT"
    );
    assert_eq!(a_video, b.pt_of(MediaKind::Video));

    // a → b: 20 audio frames, 10 video frames (key frame first, one of ~3 RTP packets).
    let mut payloads = Payloads::new(0x5eed_0001);
    let t0 = (
        a.next_rtp_time(MediaKind::Audio).unwrap(),
        a.next_rtp_time(MediaKind::Video).unwrap(),
    );
    let audio: Vec<Vec<u8>> = (0..20).map(|i| payloads.next(60 + i)).collect();
    let mut video = Vec::new();
    for i in 0..10 {
        let len = if i == 3 { 3000 } else { 200 + i * 10 };
        let payload = payloads.next(len);
        video.push((payload.clone(), a.send_video(&payload, i == 0)));
        a.send_audio(&audio[2 * i]);
        a.send_audio(&audio[2 * i + 1]);
    }
    // b → a at the same time: 5 audio frames.
    let back: Vec<Vec<u8>> = (0..5).map(|i| payloads.next(100 + i)).collect();
    for p in &back {
        b.send_audio(p);
    }
    run_until_received(&mut a, &mut b, 5, 30);

    let got_audio: Vec<&Received> = b.received_of(MediaKind::Audio).collect();
    assert_eq!(got_audio.len(), 20);
    assert_eq!(got_audio[0].rtp_time, t0.0, "RTP time as written");
    for (i, r) in got_audio.iter().enumerate() {
        assert_eq!(r.data, audio[i], "audio frame {i}");
        assert_eq!(Some(r.pt), a_audio);
        assert_eq!(Some(r.mid), a.mid_of(MediaKind::Audio));
        if i > 0 {
            assert_eq!(
                r.rtp_time - got_audio[i - 1].rtp_time,
                960,
                "20 ms at 48 kHz"
            );
            assert_eq!(r.seq.0, got_audio[i - 1].seq.1 + 1, "no sequence gap");
        }
    }
    let got_video: Vec<&Received> = b.received_of(MediaKind::Video).collect();
    assert_eq!(got_video.len(), 10);
    assert_eq!(got_video[0].rtp_time, t0.1, "RTP time as written");
    for (i, r) in got_video.iter().enumerate() {
        assert_eq!(r.data, video[i].1, "video frame {i}");
        assert_eq!(r.body(), &video[i].0[..]);
        assert_eq!(r.keyframe, i == 0, "frame {i}");
        assert_eq!(Some(r.pt), a_video);
        if i > 0 {
            assert_eq!(
                r.rtp_time - got_video[i - 1].rtp_time,
                3000,
                "1/30 s at 90 kHz"
            );
        }
    }
    assert!(
        got_video[3].seq.1 - got_video[3].seq.0 >= 2,
        "the 3000-byte frame spans several packets: {:?}",
        got_video[3].seq
    );
    let got_back: Vec<&[u8]> = a.received().iter().map(|r| &r.data[..]).collect();
    assert_eq!(got_back, back.iter().map(Vec::as_slice).collect::<Vec<_>>());
    assert!(a.failure().is_none() && b.failure().is_none());
}

#[test]
fn sendonly_offer_gets_a_recvonly_answer_and_keyframe_requests_flow_back() {
    let (mut a, mut b) = (WebrtcPeer::new(), WebrtcPeer::new());
    let (_, answer) = negotiate(&mut a, &mut b, |a| {
        a.offer_with(Some(Direction::SendOnly), Some(Direction::SendOnly))
    });
    assert_eq!(answer.matches("a=recvonly").count(), 2, "{answer}");
    assert!(
        b.media().iter().all(|m| m.direction == Direction::RecvOnly),
        "{}",
        b.describe()
    );
    connect(&mut a, &mut b);

    let key = a.send_video(b"first", true);
    a.send_audio(b"one");
    run_until_received(&mut a, &mut b, 0, 2);
    assert_eq!(
        b.received_of(MediaKind::Video).next().map(|r| &r.data),
        Some(&key)
    );

    b.request_keyframe().expect("receiver asks for a key frame");
    let asked = run_all(&mut [&mut a, &mut b], WAIT, |p| {
        !p[0].keyframe_requests().is_empty()
    });
    assert!(asked, "PLI not seen: {}", a.describe());
    assert_eq!(
        a.keyframe_requests()[0].0,
        a.mid_of(MediaKind::Video).unwrap()
    );
}

#[test]
fn audio_only_and_the_answering_side_can_send() {
    // The shape of a server offer to a listener: the peer answers and then sends/receives.
    let (mut a, mut b) = (WebrtcPeer::new(), WebrtcPeer::new());
    negotiate(&mut a, &mut b, |a| a.offer(true, false));
    assert_eq!(b.media().len(), 1);
    assert_eq!(b.mid_of(MediaKind::Video), None);
    connect(&mut a, &mut b);
    b.send_audio(b"from the answerer");
    run_until_received(&mut a, &mut b, 1, 0);
    assert_eq!(a.received()[0].body(), b"from the answerer");
    assert_eq!(a.received()[0].kind, MediaKind::Audio);
}

#[test]
fn trickled_candidates_connect() {
    let (mut a, mut b) = (WebrtcPeer::new(), WebrtcPeer::new());
    let (offer, candidates) = a.trickle_offer(Some(Direction::SendRecv), None);
    assert!(!offer.contains("a=candidate"), "{offer}");
    assert_eq!(candidates, vec![a.candidate().to_string()]);
    let answer = b.answer(&offer).expect("answer to a candidate-less offer");
    a.accept_answer(&answer).expect("accept");
    for c in &candidates {
        b.add_remote_candidate(c).expect("trickled candidate");
    }
    connect(&mut a, &mut b);
    a.send_audio(b"trickled");
    run_until_received(&mut a, &mut b, 0, 1);
    assert_eq!(b.received()[0].data, b"trickled");
}

/// Drives both peers until `checker`, the one that checks the mangled fingerprint, has refused
/// the handshake, and asserts that neither connected.
fn assert_refused_by(checker: &mut WebrtcPeer, other: &mut WebrtcPeer) {
    let refused = run_all(&mut [checker, other], WAIT, |p| p[0].failure().is_some());
    assert!(
        refused,
        "no refusal:\n{}\n{}",
        checker.describe(),
        other.describe()
    );
    assert!(
        !checker.connected() && !other.connected(),
        "connected anyway:\n{}\n{}",
        checker.describe(),
        other.describe()
    );
}

#[test]
fn a_mangled_fingerprint_in_the_offer_fails_the_handshake() {
    let (mut a, mut b) = (WebrtcPeer::new(), WebrtcPeer::new());
    let offer = a.offer(true, true);
    let mangled = mangle_fingerprint(&offer);
    assert_ne!(mangled, offer);
    assert_eq!(mangled.len(), offer.len());
    let answer = b.answer(&mangled).expect("the SDP itself is fine");
    a.accept_answer(&answer).expect("accept");
    // b (DTLS server) checks a's certificate against the mangled fingerprint.
    assert_refused_by(&mut b, &mut a);
    let why = b.failure().unwrap_or_default();
    assert!(why.contains("fingerprint"), "{}", b.describe());
}

#[test]
fn a_mangled_fingerprint_in_the_answer_fails_the_handshake() {
    let (mut a, mut b) = (WebrtcPeer::new(), WebrtcPeer::new());
    let offer = a.offer(true, false);
    let answer = b.answer(&offer).expect("answer");
    a.accept_answer(&mangle_fingerprint(&answer))
        .expect("the SDP itself is fine");
    assert_refused_by(&mut a, &mut b);
    let why = a.failure().unwrap_or_default();
    assert!(why.contains("fingerprint"), "{}", a.describe());
}

#[test]
fn a_wrong_ice_password_fails_to_connect() {
    let (mut a, mut b) = (WebrtcPeer::new(), WebrtcPeer::new());
    let offer = a.offer(true, false);
    let answer = b.answer(&offer).expect("answer");
    let mangled = mangle_ice_pwd(&answer);
    assert_ne!(mangled, answer);
    a.accept_answer(&mangled).expect("the SDP itself is fine");
    // a signs its checks with the wrong password: b drops every one (str0m answers a check
    // as it handles it), while a answers b's, so only a's own checks could nominate a pair.
    let judged = run_all(&mut [&mut a, &mut b], WAIT, |p| p[1].checks_received() >= 3);
    assert!(judged, "{}\n{}", a.describe(), b.describe());
    assert_eq!(b.checks_accepted(), 0, "{}", b.describe());
    assert!(!a.connected() && !b.connected());
    assert_ne!(a.ice_state(), IceConnectionState::Connected);
}

#[test]
fn sdp_helpers() {
    let sdp = "v=0\r\na=fingerprint:sha-256 AB:CD\r\na=ice-pwd:az9Z\r\na=candidate:1 1 udp 5 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n";
    assert!(mangle_fingerprint(sdp).contains("a=fingerprint:sha-256 54:CD\r\n"));
    assert!(mangle_ice_pwd(sdp).contains("a=ice-pwd:ba0A\r\n"));
    let (stripped, c) = strip_candidates(sdp);
    assert_eq!(c, vec!["candidate:1 1 udp 5 127.0.0.1 9 typ host"]);
    assert!(!stripped.contains("candidate"));
}
