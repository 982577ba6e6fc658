//! SFU over plain RTP: one publisher, several listeners, listeners switching publishers.

use serde_json::{Value, json};
use sluice_tests::*;

struct Publisher {
    id: String,
    room: String,
    audio: Peer,
    video: Peer,
    to_audio: std::net::SocketAddr,
    to_video: std::net::SocketAddr,
}

fn publish(c: &mut Client, room: Option<&str>) -> Publisher {
    let (audio, video) = (Peer::new(), Peer::new());
    let mut data = json!({"type": "publish", "offer": {"sdp": av_sdp(audio.port(), video.port()), "sdp_type": "rtp"},
        "room_audio_codec": "opus", "room_video_codec": "vp8"});
    if let Some(room) = room {
        data["room_id"] = json!(room);
    }
    let r = c.session("create", data).expect("publish");
    let answer = sdp_in(&r, "answer");
    assert_eq!(r["room"], r["room_id"]);
    Publisher {
        id: str_of(&r, "session_id"),
        room: str_of(&r, "room_id"),
        to_audio: server_addr(&answer, 0),
        to_video: server_addr(&answer, 1),
        audio,
        video,
    }
}

/// A listener whose offer must carry audio and video, sendonly.
fn listen(c: &mut Client, publisher: &str) -> PlainListener {
    let l = listen_plain(c, publisher);
    let media = media_of(&l.offer);
    assert_eq!(
        media.iter().map(|m| m.0.as_str()).collect::<Vec<_>>(),
        vec!["audio", "video"]
    );
    assert!(
        l.offer.contains("a=sendonly"),
        "listener offer is sendonly: {}",
        l.offer
    );
    l
}

fn publish_reaches_three_listeners(server: &Server) {
    let mut c = server.client();
    let p = publish(&mut c, None);
    let listeners: Vec<PlainListener> = (0..3).map(|_| listen(&mut c, &p.id)).collect();

    let sent_a = blast(&p.audio, p.to_audio, 111, 0xa0, 10, 20);
    let sent_v = blast(&p.video, p.to_video, 96, 0xb0, 20, 20);
    let mut ssrcs = vec![];
    for l in &listeners {
        let a = l.audio.recv_n(20);
        let v = l.video.recv_n(20);
        for (got, sent) in a.iter().zip(&sent_a).chain(v.iter().zip(&sent_v)) {
            assert_eq!(got.payload, sent.payload);
            assert_eq!(got.pt, sent.pt);
        }
        assert_contiguous(&a);
        assert_contiguous(&v);
        // Each listener sees the SSRC its offer announced.
        assert!(
            l.offer.contains(&format!("a=ssrc:{} ", a[0].ssrc)),
            "ssrc {} not in {}",
            a[0].ssrc,
            l.offer
        );
        ssrcs.push(a[0].ssrc);
    }
    let info = c
        .room("get_info", json!({"room_id": p.room}))
        .expect("room info");
    let listed: Vec<&Value> = info["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .collect();
    assert_eq!(listed.len(), 3);
    assert_eq!(info["publishers"][0], p.id.as_str());
    let pinfo = c.info(&p.id);
    assert_eq!(pinfo["media"][0]["rx_packets"], 20);
}
both_backends!(publish_reaches_three_listeners);

fn listener_switch_keeps_one_continuous_stream(server: &Server) {
    let mut c = server.client();
    let p1 = publish(&mut c, None);
    let p2 = publish(&mut c, Some(&p1.room));
    assert_eq!(p2.room, p1.room);
    let l = listen(&mut c, &p1.id);

    let before = blast(&p1.video, p1.to_video, 96, 1, 100, 15);
    let got1 = l.video.recv_n(15);
    assert_eq!(
        got1.iter().map(|r| &r.payload).collect::<Vec<_>>(),
        before.iter().map(|r| &r.payload).collect::<Vec<_>>()
    );

    c.session(
        "set_type",
        json!({"session_id": l.id, "type": "listen", "publisher_id": p2.id}),
    )
    .expect("switch");
    let ev = c.wait_event(&l.id, "type");
    assert_eq!(ev["body"]["publisher_id"], p2.id.as_str());
    // The old publisher no longer reaches this listener.
    blast(&p1.video, p1.to_video, 96, 1, 115, 5);
    // Video from the new publisher is held until its keyframe (VP8 descriptor S=1 PID 0,
    // payload header P=0): send one first.
    let key = Rtp::new(96, 39999, 39999 * 160, 2, &[0x10, 0x00, 0x00, 0x00]);
    p2.video.send(p2.to_video, &key.to_bytes());
    let key_got = l.video.recv_n(1);
    assert_eq!(key_got[0].payload, key.payload);
    let after = blast(&p2.video, p2.to_video, 96, 2, 40000, 15);
    let got2 = l.video.recv_n(15);
    assert_eq!(
        got2.iter().map(|r| &r.payload).collect::<Vec<_>>(),
        after.iter().map(|r| &r.payload).collect::<Vec<_>>()
    );

    let all: Vec<Rtp> = got1.into_iter().chain(key_got).chain(got2).collect();
    assert_contiguous(&all);
    assert!(
        all.iter().all(|r| r.ssrc == all[0].ssrc),
        "one SSRC across the switch"
    );
    for w in all.windows(2) {
        assert!(
            w[1].ts.wrapping_sub(w[0].ts) < 0x8000_0000,
            "timestamps move forward"
        );
    }
    // Switching to a publisher of another room is refused.
    let other = publish(&mut c, None);
    let err = c
        .session(
            "set_type",
            json!({"session_id": l.id, "type": "listen", "publisher_id": other.id}),
        )
        .unwrap_err();
    assert_eq!(err.code, 100041, "{err:?}");
}
both_backends!(listener_switch_keeps_one_continuous_stream);

fn room_codecs_are_enforced(server: &Server) {
    let mut c = server.client();
    let peer = Peer::new();
    // A PCMU-only phone cannot publish into an opus room.
    let err = c
        .session("create", json!({"type": "publish", "offer": {"sdp": phone_sdp(peer.port())}, "room_audio_codec": "opus"}))
        .unwrap_err();
    assert_eq!(err.code, 100041);
    assert!(
        err.error.to_lowercase().contains("opus"),
        "error names the codec: {err:?}"
    );
    // But it can publish into a PCMU room, and the answer carries only PCMU.
    let r = c
        .session("create", json!({"type": "publish", "offer": {"sdp": phone_sdp(peer.port())}, "room_audio_codec": "pcmu"}))
        .expect("pcmu room");
    let answer = sdp_in(&r, "answer");
    assert!(
        answer.contains("PCMU") && !answer.contains("opus"),
        "{answer}"
    );
    // Room commands see it.
    let rooms = c.room("get_list", json!({})).expect("rooms");
    let room = str_of(&r, "room_id");
    assert!(rooms.to_string().contains(&room), "{rooms}");
}
both_backends!(room_codecs_are_enforced);
