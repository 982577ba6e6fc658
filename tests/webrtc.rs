//! WebRTC end to end: a str0m peer (playing the browser) against the real server through the
//! WebSocket API, on both I/O backends — echo, publish/listen, the WebRTC⇄SIP gateway both
//! ways, WebRTC↔WebRTC proxy, trickle ICE, and the failures (wrong ICE password, wrong DTLS
//! fingerprint). Every wait is bounded; payloads come from a fixed-seed generator.

use serde_json::{Value, json};
use sluice_tests::webrtc_peer::*;
use sluice_tests::*;

fn connect(p: &mut WebrtcPeer) {
    assert!(p.run_until(WAIT, |p| p.connected()), "{}", p.describe());
}

/// A WebRTC echo session for `p`'s offer; returns the session id once DTLS is up.
fn echo(c: &mut Client, p: &mut WebrtcPeer, offer: Value) -> String {
    let reply = c
        .session("create", json!({"type": "echo", "offer": offer}))
        .expect("create echo");
    assert_eq!(reply["answer"]["sdp_type"], "webrtc");
    let answer = sdp_in(&reply, "answer");
    for want in [
        "a=ice-lite",
        "a=setup:passive",
        "a=fingerprint:sha-256 ",
        "a=end-of-candidates",
        "a=group:BUNDLE",
        "a=rtcp-mux",
        " cname:",
        "a=msid:",
    ] {
        assert!(answer.contains(want), "{want} missing in {answer}");
    }
    p.accept_answer(&answer).expect("str0m accepts the answer");
    let id = str_of(&reply, "session_id");
    connect(p);
    expect_up(c, &id);
    id
}

fn echo_audio_and_video_come_back_intact(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let offer = p.offer(true, true);
    let id = echo(&mut c, &mut p, json!({"sdp": offer}));
    let mut payloads = Payloads(0x5eed_0001);
    let audio: Vec<Vec<u8>> = (0..20).map(|i| payloads.next(60 + i)).collect();
    let mut video = Vec::new();
    for i in 0..10 {
        // Frame 3 spans several RTP packets.
        let payload = payloads.next(if i == 3 { 3000 } else { 200 + 10 * i });
        p.send_video(&payload, i == 0);
        video.push(payload);
        p.send_audio(&audio[2 * i]);
        p.send_audio(&audio[2 * i + 1]);
    }
    let done = p.run_until(WAIT, |p| {
        p.received_of(MediaKind::Audio).count() >= 20
            && p.received_of(MediaKind::Video).count() >= 10
    });
    assert!(done, "echo incomplete: {}", p.describe());
    let got: Vec<&[u8]> = p
        .received_of(MediaKind::Audio)
        .map(|r| r.data.as_slice())
        .collect();
    assert_eq!(
        got,
        audio.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        "audio intact"
    );
    let got: Vec<&[u8]> = p
        .received_of(MediaKind::Video)
        .map(Received::body)
        .collect();
    assert_eq!(
        got,
        video.iter().map(Vec::as_slice).collect::<Vec<_>>(),
        "video intact"
    );
    assert!(
        p.received_of(MediaKind::Video)
            .next()
            .is_some_and(|r| r.keyframe)
    );
    let info = c.info(&id);
    assert_eq!(info["webrtc"]["state"], "up", "{info}");
    assert_eq!(info["webrtc"]["dtls_role"], "server");
    // One bundled port for both m-lines, SRTP both ways.
    assert_eq!(info["media"][0]["rtp_port"], info["media"][1]["rtp_port"]);
}
both_backends!(echo_audio_and_video_come_back_intact);

fn publish_reaches_two_webrtc_listeners(server: &Server) {
    let mut c = server.client();
    let mut publisher = WebrtcPeer::new();
    let offer = publisher.offer_with(Some(Direction::SendOnly), Some(Direction::SendOnly));
    let reply = c
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": offer}}),
        )
        .expect("publish");
    let pub_id = str_of(&reply, "session_id");
    publisher
        .accept_answer(&sdp_in(&reply, "answer"))
        .expect("accept the publisher answer");
    connect(&mut publisher);
    expect_up(&mut c, &pub_id);

    let mut listeners = [WebrtcPeer::new(), WebrtcPeer::new()];
    let mut ids = Vec::new();
    for l in &mut listeners {
        let r = c
            .session("create", json!({"type": "listen", "publisher_id": pub_id}))
            .expect("listen");
        assert_eq!(r["offer"]["sdp_type"], "webrtc");
        let offer = sdp_in(&r, "offer");
        assert!(
            offer.contains("a=setup:actpass") && offer.contains(" cname:"),
            "{offer}"
        );
        let answer = l.answer(&offer).expect("the listener answers");
        let id = str_of(&r, "session_id");
        c.session(
            "set_answer",
            json!({"session_id": id, "answer": {"sdp": answer}}),
        )
        .expect("set_answer");
        ids.push(id);
    }
    // The room spreads over both workers: the listeners are served apart, one of them
    // through the ring from the publisher's worker.
    let workers: std::collections::BTreeSet<u64> = ids
        .iter()
        .map(|id| c.info(id)["media"][0]["worker"].as_u64().expect("worker"))
        .collect();
    assert_eq!(workers.len(), 2, "one listener per worker: {workers:?}");
    let [l1, l2] = &mut listeners;
    let up = run_all(&mut [&mut publisher, l1, l2], WAIT, |p| {
        p.iter().all(|p| p.connected())
    });
    assert!(up, "{}\n{}", l1.describe(), l2.describe());
    for id in &ids {
        expect_up(&mut c, id);
        assert_eq!(
            c.info(id)["webrtc"]["dtls_role"],
            "client",
            "str0m answers passive"
        );
    }

    let mut payloads = Payloads(0x5eed_0002);
    let audio: Vec<Vec<u8>> = (0..10).map(|i| payloads.next(80 + i)).collect();
    let video: Vec<Vec<u8>> = (0..5).map(|i| payloads.next(300 + i)).collect();
    for (i, v) in video.iter().enumerate() {
        publisher.send_video(v, i == 0);
    }
    for a in &audio {
        publisher.send_audio(a);
    }
    let done = run_all(&mut [&mut publisher, l1, l2], WAIT, |p| {
        p[1..].iter().all(|l| {
            l.received_of(MediaKind::Audio).count() >= 10
                && l.received_of(MediaKind::Video).count() >= 5
        })
    });
    assert!(done, "{}\n{}", l1.describe(), l2.describe());
    for l in [&*l1, &*l2] {
        let got: Vec<&[u8]> = l
            .received_of(MediaKind::Audio)
            .map(|r| r.data.as_slice())
            .collect();
        assert_eq!(got, audio.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let got: Vec<&[u8]> = l
            .received_of(MediaKind::Video)
            .map(Received::body)
            .collect();
        assert_eq!(got, video.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }
}
both_backends!(publish_reaches_two_webrtc_listeners);

/// Plain opus answer from a SIP-like party at `port`.
fn opus_answer(port: u16) -> String {
    plain_sdp(&[(
        "audio",
        port,
        "111",
        &["rtpmap:111 opus/48000/2", "sendrecv"],
    )])
}

fn webrtc_master_to_plain_slave(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let b = Peer::new();
    let offer = p.offer(true, false);
    let m = c
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": offer}}),
        )
        .expect("WebRTC master");
    let master = str_of(&m, "session_id");
    let slave_offer = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("slave offer");
    assert_eq!(slave_offer["offer"]["sdp_type"], "rtp");
    let slave = str_of(&slave_offer, "session_id");
    let plain = sdp_in(&slave_offer, "offer");
    assert!(
        plain.contains("RTP/AVP") && plain.contains("opus/48000"),
        "{plain}"
    );
    let to_slave = server_addr(&plain, 0);
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": opus_answer(b.port())}}),
    )
    .expect("set_answer");
    let ev = c.wait_event(&master, "answer");
    assert_eq!(ev["body"]["answer"]["sdp_type"], "webrtc");
    p.accept_answer(&sdp_in(&ev["body"], "answer"))
        .expect("accept the master answer");
    connect(&mut p);
    expect_up(&mut c, &master);

    // Browser → SIP: decrypted, payload intact.
    let mut payloads = Payloads(0x5eed_0003);
    let audio: Vec<Vec<u8>> = (0..10).map(|i| payloads.next(50 + i)).collect();
    for a in &audio {
        p.send_audio(a);
    }
    let got = drive_until_plain_receives(&mut p, &b, audio.len());
    for (r, a) in got.iter().zip(&audio) {
        assert_eq!(r.pt, 111);
        assert_eq!(&r.payload, a, "browser → plain payload");
    }
    assert_contiguous(&got);
    // SIP → browser: encrypted with the SSRC the master's answer announced.
    let sent = blast(&b, to_slave, 111, 0x51b, 500, 10);
    assert!(
        p.run_until(WAIT, |p| p.received().len() >= 10),
        "{}",
        p.describe()
    );
    for (r, s) in p.received().iter().zip(&sent) {
        assert_eq!(r.data, s.payload, "plain → browser payload");
        assert_eq!(r.kind, MediaKind::Audio);
    }
}
both_backends!(webrtc_master_to_plain_slave);

fn plain_master_to_webrtc_slave(server: &Server) {
    let mut c = server.client();
    let a = Peer::new();
    let mut p = WebrtcPeer::new();
    let m = c
        .session(
            "create",
            json!({"type": "proxy", "offer": {"sdp": phone_sdp(a.port()), "sdp_type": "rtp"}}),
        )
        .expect("plain master");
    let master = str_of(&m, "session_id");
    let s = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("slave offer");
    assert_eq!(s["offer"]["sdp_type"], "webrtc");
    let slave = str_of(&s, "session_id");
    let answer = p.answer(&sdp_in(&s, "offer")).expect("str0m answers");
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let ev = c.wait_event(&master, "answer");
    let master_answer = sdp_in(&ev["body"], "answer");
    assert!(master_answer.contains("RTP/AVP"), "{master_answer}");
    let to_master = server_addr(&master_answer, 0);
    connect(&mut p);
    expect_up(&mut c, &slave);

    // SIP → browser.
    let sent = blast(&a, to_master, 0, 0xa11ce, 100, 10);
    assert!(
        p.run_until(WAIT, |p| p.received().len() >= 10),
        "{}",
        p.describe()
    );
    for (r, s) in p.received().iter().zip(&sent) {
        assert_eq!(r.data, s.payload, "plain → browser payload");
        assert_eq!(r.pt, 0);
    }
    // Browser → SIP.
    let mut payloads = Payloads(0x5eed_0004);
    let audio: Vec<Vec<u8>> = (0..10).map(|i| payloads.next(160 + i)).collect();
    for x in &audio {
        p.send_audio(x);
    }
    let got = drive_until_plain_receives(&mut p, &a, audio.len());
    for (r, x) in got.iter().zip(&audio) {
        assert_eq!(r.pt, 0);
        assert_eq!(&r.payload, x, "browser → plain payload");
    }
}
both_backends!(plain_master_to_webrtc_slave);

fn webrtc_to_webrtc_proxy(server: &Server) {
    let mut c = server.client();
    let (mut caller, mut callee) = (WebrtcPeer::new(), WebrtcPeer::new());
    let offer = caller.offer(true, true);
    let m = c
        .session("create", json!({"type": "proxy", "offer": {"sdp": offer}}))
        .expect("master");
    let master = str_of(&m, "session_id");
    let s = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("slave offer");
    let slave = str_of(&s, "session_id");
    let answer = callee.answer(&sdp_in(&s, "offer")).expect("callee answers");
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let ev = c.wait_event(&master, "answer");
    caller
        .accept_answer(&sdp_in(&ev["body"], "answer"))
        .expect("caller accepts");
    let up = run_all(&mut [&mut caller, &mut callee], WAIT, |p| {
        p.iter().all(|p| p.connected())
    });
    assert!(up, "{}\n{}", caller.describe(), callee.describe());
    expect_up(&mut c, &master);
    expect_up(&mut c, &slave);

    let mut payloads = Payloads(0x5eed_0005);
    let there: Vec<Vec<u8>> = (0..5).map(|i| payloads.next(90 + i)).collect();
    let back: Vec<Vec<u8>> = (0..5).map(|i| payloads.next(400 + i)).collect();
    for x in &there {
        caller.send_audio(x);
    }
    for (i, x) in back.iter().enumerate() {
        callee.send_video(x, i == 0);
    }
    let done = run_all(&mut [&mut caller, &mut callee], WAIT, |p| {
        p[1].received_of(MediaKind::Audio).count() >= 5
            && p[0].received_of(MediaKind::Video).count() >= 5
    });
    assert!(done, "{}\n{}", caller.describe(), callee.describe());
    let got: Vec<&[u8]> = callee
        .received_of(MediaKind::Audio)
        .map(|r| r.data.as_slice())
        .collect();
    assert_eq!(got, there.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let got: Vec<&[u8]> = caller
        .received_of(MediaKind::Video)
        .map(Received::body)
        .collect();
    assert_eq!(got, back.iter().map(Vec::as_slice).collect::<Vec<_>>());
}
both_backends!(webrtc_to_webrtc_proxy);

fn trickle_ice_connects(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let (offer, candidates) = p.trickle_offer(Some(Direction::SendRecv), None);
    assert!(!offer.contains("a=candidate") && !candidates.is_empty());
    let reply = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": offer, "trickle_ice": true}}),
        )
        .expect("echo without candidates");
    let id = str_of(&reply, "session_id");
    p.accept_answer(&sdp_in(&reply, "answer")).expect("accept");
    let mid = p.mid_of(MediaKind::Audio).expect("audio mid").to_string();
    for cand in &candidates {
        c.session(
            "set_candidate",
            json!({"session_id": id, "sdpMid": mid, "sdpMLineIndex": 0, "candidate": cand}),
        )
        .expect("set_candidate");
    }
    let bad = c.session(
        "set_candidate",
        json!({"session_id": id, "sdpMid": mid, "sdpMLineIndex": 0, "candidate": "candidate:x"}),
    );
    assert_eq!(
        bad.map_err(|e| e.code),
        Err(100041),
        "malformed candidate refused"
    );
    c.session("set_candidate_end", json!({"session_id": id}))
        .expect("set_candidate_end");
    connect(&mut p);
    expect_up(&mut c, &id);
    p.send_audio(b"trickled");
    assert!(
        p.run_until(WAIT, |p| !p.received().is_empty()),
        "{}",
        p.describe()
    );
    assert_eq!(p.received()[0].data, b"trickled");
    let info = c.info(&id);
    assert_eq!(info["webrtc"]["remote_candidates"], candidates.len());
    assert_eq!(info["webrtc"]["remote_end_of_candidates"], true);
}
both_backends!(trickle_ice_connects);

fn wrong_ice_password_never_connects(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let offer = p.offer(true, false);
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": offer}}))
        .expect("echo");
    let id = str_of(&reply, "session_id");
    p.accept_answer(&mangle_ice_pwd(&sdp_in(&reply, "answer")))
        .expect("the SDP itself is fine");
    // The peer's checks reach the server, which refuses them: an ICE-lite server sends no
    // checks of its own, so nothing else could connect them.
    let refused = |info: &Value| info["webrtc"]["ice_wrong_credentials"].as_u64() > Some(0);
    assert!(
        p.run_until(WAIT, |_| refused(&c.info(&id))),
        "{}",
        p.describe()
    );
    let info = c.info(&id);
    assert_eq!(info["webrtc"]["state"], "connecting", "{info}");
    assert_eq!(info["webrtc"]["ice_valid_checks"], 0, "{info}");
    assert!(!p.connected(), "{}", p.describe());
}
both_backends!(wrong_ice_password_never_connects);

fn wrong_dtls_fingerprint_fails(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let offer = mangle_fingerprint(&p.offer(true, false));
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": offer}}))
        .expect("echo");
    let id = str_of(&reply, "session_id");
    p.accept_answer(&sdp_in(&reply, "answer")).expect("accept");
    // The server checks the peer's certificate against the mangled fingerprint and gives up.
    assert!(
        p.run_until(WAIT, |_| c.info(&id)["webrtc"]["state"] == "failed"),
        "{}",
        p.describe()
    );
    assert!(!p.connected(), "{}", p.describe());
    let body = webrtc_status(&mut c, &id);
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("fingerprint"),
        "{body}"
    );
    assert_eq!(c.info(&id)["webrtc"]["state"], "failed");
}
both_backends!(wrong_dtls_fingerprint_fails);

/// A WebRTC publisher (sendonly audio+video) in `room` (`None`: a new room); returns its
/// session id once DTLS is up.
fn publish(c: &mut Client, p: &mut WebrtcPeer, room: Option<&str>) -> (String, String) {
    let offer = p.offer_with(Some(Direction::SendOnly), Some(Direction::SendOnly));
    let mut data = json!({"type": "publish", "offer": {"sdp": offer}});
    if let Some(room) = room {
        data["room_id"] = json!(room);
    }
    let reply = c.session("create", data).expect("publish");
    p.accept_answer(&sdp_in(&reply, "answer"))
        .expect("accept the publisher answer");
    connect(p);
    let id = str_of(&reply, "session_id");
    expect_up(c, &id);
    (id, str_of(&reply, "room_id"))
}

fn listener_switches_publisher_and_asks_for_keyframes(server: &Server) {
    let mut c = server.client();
    let (mut pub1, mut pub2, mut l) = (WebrtcPeer::new(), WebrtcPeer::new(), WebrtcPeer::new());
    let (id1, room) = publish(&mut c, &mut pub1, None);
    let (id2, _) = publish(&mut c, &mut pub2, Some(&room));
    // The server asks for keyframes naming the SSRC it last received: let it hear both.
    pub1.send_video(b"before the listener", true);
    pub2.send_video(b"before the switch", true);
    let heard = |c: &mut Client, id: &str| c.info(id)["media"][1]["rx_packets"].as_u64() >= Some(1);
    let both = run_all(&mut [&mut pub1, &mut pub2], WAIT, |_| {
        heard(&mut c, &id1) && heard(&mut c, &id2)
    });
    assert!(both, "the publishers' first frames reach the server");
    let r = c
        .session("create", json!({"type": "listen", "publisher_id": id1}))
        .expect("listen");
    let lid = str_of(&r, "session_id");
    let answer = l.answer(&sdp_in(&r, "offer")).expect("answer");
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let up = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        p[2].connected() && !p[0].keyframe_requests().is_empty()
    });
    assert!(
        up,
        "listener up, PLI to its publisher: {}\n{}",
        l.describe(),
        pub1.describe()
    );
    expect_up(&mut c, &lid);

    pub1.send_video(b"from publisher one", true);
    let got = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        p[2].received().len() == 1
    });
    assert!(got, "{}", l.describe());
    c.session(
        "set_type",
        json!({"session_id": lid, "type": "listen", "publisher_id": id2}),
    )
    .expect("set_type");
    let asked = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        !p[1].keyframe_requests().is_empty()
    });
    assert!(
        asked,
        "the new publisher is asked for a keyframe: {}",
        pub2.describe()
    );
    pub2.send_video(b"from publisher two", true);
    pub2.send_audio(b"audio two");
    let done = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        p[2].received().len() >= 3
    });
    assert!(done, "{}", l.describe());
    let video: Vec<&[u8]> = l
        .received_of(MediaKind::Video)
        .map(Received::body)
        .collect();
    assert_eq!(video, [&b"from publisher one"[..], b"from publisher two"]);
    let audio: Vec<&[u8]> = l
        .received_of(MediaKind::Audio)
        .map(|r| r.data.as_slice())
        .collect();
    assert_eq!(audio, [&b"audio two"[..]]);
}
both_backends!(listener_switches_publisher_and_asks_for_keyframes);

fn mute_works_per_kind_on_a_bundled_leg(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let offer = p.offer(true, true);
    let id = echo(&mut c, &mut p, json!({"sdp": offer}));
    c.session(
        "update_media",
        json!({"session_id": id, "mute_video": true}),
    )
    .expect("mute video");
    for i in 0..5u8 {
        p.send_video(&[i; 100], i == 0);
        p.send_audio(&[i; 40]);
    }
    assert!(
        p.run_until(WAIT, |p| p.received_of(MediaKind::Audio).count() == 5),
        "audio still flows: {}",
        p.describe()
    );
    // The video leg of the session (same port as audio) counts the muted packets.
    let video_leg = |i: &Value| {
        i["media"]
            .as_array()
            .and_then(|m| m.iter().find(|l| l["kind"] == "video"))
            .cloned()
            .unwrap_or_default()
    };
    c.info_until(&id, |i| video_leg(i)["drops"]["muted"].as_u64() >= Some(5));
    assert_eq!(
        p.received_of(MediaKind::Video).count(),
        0,
        "{}",
        p.describe()
    );
    // Unmuting asks the sender (here the echo's own peer) for a keyframe.
    c.session(
        "update_media",
        json!({"session_id": id, "mute_video": false}),
    )
    .expect("unmute video");
    assert!(
        p.run_until(WAIT, |p| !p.keyframe_requests().is_empty()),
        "{}",
        p.describe()
    );
    p.send_video(b"unmuted", true);
    assert!(
        p.run_until(WAIT, |p| p.received_of(MediaKind::Video).count() == 1),
        "{}",
        p.describe()
    );
    // Media events work for the bundled leg's two kinds.
    let mut up = Vec::new();
    while up.len() < 2 {
        let ev = c.wait_event(&id, "status");
        if ev["body"]["class"] == "media" && ev["body"]["status"] == "up" {
            up.push(ev["body"]["media"].as_str().unwrap_or_default().to_string());
        }
    }
    up.sort();
    assert_eq!(up, ["audio", "video"]);
}
both_backends!(mute_works_per_kind_on_a_bundled_leg);
