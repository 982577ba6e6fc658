//! WebRTC data channels end to end: a str0m peer (an independent WebRTC stack playing the
//! browser) opens a channel on an echo session next to audio and video; text, binary and a
//! 60 KiB message come back identical, in order, on the same channel; `mute_data` drops
//! (counted) while the channel stays open, and unmuting resumes; with small `--data-*` limits a
//! message too large and a burst beyond the rate are dropped and counted, and a listener that
//! stops reading loses messages without stalling anyone. Both I/O backends; every wait is
//! bounded; payloads come from a fixed-seed generator.

use std::time::Instant;

use serde_json::{Value, json};
use sluice_tests::webrtc_peer::*;
use sluice_tests::*;

/// Drives the peer while polling `get_info` until `done` holds.
fn info_while_driving(
    c: &mut Client,
    p: &mut WebrtcPeer,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        p.step(STEP);
        let info = c.info(id);
        if done(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "never held: {info}");
    }
}

/// An echo session with audio, video and one channel "chat"; returns its id, the channel
/// once open, and the server's answer.
fn open_echo(c: &mut Client, p: &mut WebrtcPeer) -> (String, ChannelId, String) {
    let (offer, ch) =
        p.offer_with_channel(Some(Direction::SendRecv), Some(Direction::SendRecv), "chat");
    assert!(offer.contains("m=application"), "{offer}");
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": offer}}))
        .expect("create echo");
    let answer = sdp_in(&reply, "answer");
    p.accept_answer(&answer).expect("str0m accepts the answer");
    let id = str_of(&reply, "session_id");
    assert!(p.run_until(WAIT, |p| p.connected()), "{}", p.describe());
    expect_up(c, &id);
    assert!(
        p.run_until(WAIT, |p| p.channel_open(ch)),
        "channel never opened: {}",
        p.describe()
    );
    (id, ch, answer)
}

fn echo_returns_text_binary_and_large_messages(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let (id, ch, answer) = open_echo(&mut c, &mut p);
    for want in [
        "m=application ",
        " UDP/DTLS/SCTP webrtc-datachannel",
        "a=sctp-port:5000",
        "a=max-message-size:65536",
    ] {
        assert!(answer.contains(want), "{want} missing in {answer}");
    }
    let bundle = answer
        .lines()
        .find(|l| l.starts_with("a=group:BUNDLE"))
        .expect("a BUNDLE group");
    assert_eq!(
        bundle.split(' ').count(),
        4,
        "audio, video and data: {bundle}"
    );

    let mut payloads = Payloads(0xda7a_0001);
    let sent: Vec<(bool, Vec<u8>)> = vec![
        (false, "héllo, data".as_bytes().to_vec()),
        (true, vec![0, 255, 1, 254, 0, 0, 7]),
        (true, payloads.next(60 * 1024)),
        (false, "x".repeat(3000).into_bytes()),
        (true, payloads.next(1)),
    ];
    for (binary, data) in &sent {
        assert!(p.channel_write(ch, *binary, data), "str0m buffer full");
    }
    // Audio alongside: it still comes back.
    p.send_audio(b"audio next to data");
    let done = p.run_until(WAIT, |p| {
        p.channel_messages().len() >= sent.len() && p.received_of(MediaKind::Audio).count() >= 1
    });
    assert!(done, "echo incomplete: {}", p.describe());
    let got: Vec<(bool, Vec<u8>)> = p
        .channel_messages()
        .iter()
        .map(|m| {
            assert_eq!(m.id, ch, "same channel");
            (m.binary, m.data.clone())
        })
        .collect();
    assert_eq!(got, sent, "same kind, same bytes, same order");

    let info = c.info(&id);
    let data = &info["webrtc"]["data"];
    assert_eq!(data["sctp"], "up", "{info}");
    assert_eq!(data["channels"][0]["label"], "chat", "{info}");
    assert_eq!(data["messages_in"], sent.len(), "{info}");
    assert_eq!(data["messages_out"], sent.len(), "{info}");
    let open = c.wait_event(&id, "status");
    assert_eq!(open["body"]["class"], "datachannel", "{open}");
    assert_eq!(open["body"]["label"], "chat", "{open}");

    // /metrics counts the messages, and keeps them once the session is gone.
    let data_messages = |server: &Server| {
        let text = String::from_utf8(http_get(server.api, "/metrics", &[]).body).expect("text");
        ["in", "out"].map(|d| {
            let series = format!("sluice_data_messages_total{{direction=\"{d}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {series} in /metrics"))
        })
    };
    let n = sent.len() as u64;
    assert_eq!(data_messages(server), [n, n]);
    c.session("destroy", json!({"session_id": id}))
        .expect("destroy");
    assert_eq!(data_messages(server), [n, n], "counters never go down");
}

both_backends!(echo_returns_text_binary_and_large_messages);

fn mute_data_drops_and_unmute_resumes(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let (id, ch, _) = open_echo(&mut c, &mut p);

    assert!(p.channel_write(ch, false, b"before"));
    assert!(p.run_until(WAIT, |p| p.channel_messages().len() == 1));

    c.session("update_media", json!({"session_id": id, "mute_data": true}))
        .expect("mute data");
    for i in 0..3 {
        assert!(p.channel_write(ch, false, format!("muted {i}").as_bytes()));
    }
    let info = info_while_driving(&mut c, &mut p, &id, |i| {
        i["webrtc"]["data"]["dropped_muted"] == 3
    });
    assert_eq!(info["mute_data"], true);
    assert_eq!(info["webrtc"]["data"]["messages_out"], 1, "{info}");

    c.session(
        "update_media",
        json!({"session_id": id, "mute_data": false}),
    )
    .expect("unmute data");
    assert!(p.channel_write(ch, true, b"after"));
    assert!(
        p.run_until(WAIT, |p| p.channel_messages().len() == 2),
        "{}",
        p.describe()
    );
    let got: Vec<&[u8]> = p
        .channel_messages()
        .iter()
        .map(|m| m.data.as_slice())
        .collect();
    assert_eq!(got, [&b"before"[..], &b"after"[..]], "muted ones dropped");
    assert!(p.channel_open(ch), "the channel stayed open");
    assert!(p.channels_closed().is_empty());
}

both_backends!(mute_data_drops_and_unmute_resumes);

/// A publisher's channel is mirrored to a listener that joins later (same label); 100
/// messages arrive in order; what the listener sends reaches nobody (counted); `mute_data` on
/// the listener drops what goes to it, and unmuting resumes on the same channel.
fn publisher_channels_are_mirrored_to_listeners(server: &Server) {
    let mut c = server.client();
    let mut publ = WebrtcPeer::new();
    let (offer, ch) = publ.offer_with_channel(Some(Direction::SendOnly), None, "chat");
    let r = c
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": offer}}),
        )
        .expect("publish");
    let answer = sdp_in(&r, "answer");
    assert!(answer.contains("a=sctp-port:5000"), "{answer}");
    publ.accept_answer(&answer)
        .expect("str0m accepts the answer");
    let pub_id = str_of(&r, "session_id");
    assert!(
        publ.run_until(WAIT, |p| p.channel_open(ch)),
        "{}",
        publ.describe()
    );
    expect_up(&mut c, &pub_id);

    let mut l = WebrtcPeer::new();
    let r = c
        .session("create", json!({"type": "listen", "publisher_id": pub_id}))
        .expect("listen");
    let offer = sdp_in(&r, "offer");
    assert!(offer.contains("webrtc-datachannel"), "{offer}");
    let answer = l.answer(&offer).expect("the listener answers");
    let lid = str_of(&r, "session_id");
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let up = run_all(&mut [&mut publ, &mut l], WAIT, |p| {
        p[1].connected() && p[1].channels_open().len() == 1
    });
    assert!(up, "mirror never opened: {}", l.describe());
    let (lch, label) = l.channels_open()[0].clone();
    assert_eq!(label, "chat");

    let sent: Vec<Vec<u8>> = (0..100).map(|i| format!("m{i:03}").into_bytes()).collect();
    for m in &sent {
        assert!(publ.channel_write(ch, false, m));
    }
    let got = run_all(&mut [&mut publ, &mut l], WAIT, |p| {
        p[1].channel_messages().len() == sent.len()
    });
    assert!(got, "{}", l.describe());
    let data: Vec<&Vec<u8>> = l.channel_messages().iter().map(|m| &m.data).collect();
    assert_eq!(data, sent.iter().collect::<Vec<_>>(), "in order");
    assert!(
        l.channel_messages()
            .iter()
            .all(|m| m.id == lch && !m.binary)
    );

    // The listener's own message goes nowhere.
    assert!(l.channel_write(lch, false, b"to nobody"));
    info_while_driving(&mut c, &mut l, &lid, |i| {
        i["webrtc"]["data"]["dropped_unrelayed"] == 1
    });
    assert!(publ.channel_messages().is_empty());

    c.session(
        "update_media",
        json!({"session_id": lid, "mute_data": true}),
    )
    .expect("mute listener data");
    assert!(publ.channel_write(ch, true, b"hidden"));
    info_while_driving(&mut c, &mut publ, &lid, |i| {
        i["webrtc"]["data"]["dropped_muted"] == 1
    });
    c.session(
        "update_media",
        json!({"session_id": lid, "mute_data": false}),
    )
    .expect("unmute listener data");
    assert!(publ.channel_write(ch, true, b"shown"));
    let got = run_all(&mut [&mut publ, &mut l], WAIT, |p| {
        p[1].channel_messages().len() == sent.len() + 1
    });
    assert!(got, "{}", l.describe());
    let last = l.channel_messages().last().expect("a message");
    assert_eq!((last.binary, last.data.as_slice()), (true, &b"shown"[..]));
    assert_eq!(l.channels_open().len(), 1, "no new channel");
}

both_backends!(publisher_channels_are_mirrored_to_listeners);

/// A publish session with one channel "chat" open; returns the session id and the channel.
fn publish_with_chat(
    c: &mut Client,
    p: &mut WebrtcPeer,
    room: Option<&str>,
) -> (String, ChannelId) {
    let (offer, ch) = p.offer_with_channel(Some(Direction::SendOnly), None, "chat");
    let mut req = json!({"type": "publish", "offer": {"sdp": offer}});
    if let Some(room) = room {
        req["room_id"] = json!(room);
    }
    let r = c.session("create", req).expect("publish");
    p.accept_answer(&sdp_in(&r, "answer"))
        .expect("str0m accepts the answer");
    let id = str_of(&r, "session_id");
    assert!(
        p.run_until(WAIT, |p| p.channel_open(ch)),
        "{}",
        p.describe()
    );
    expect_up(c, &id);
    (id, ch)
}

/// `set_type` re-points the listener's mirror to the new publisher's channel of the same
/// label (no new channel); a publisher closing its channel closes the mirror.
fn set_type_repoints_mirrors_and_closes_follow(server: &Server) {
    let mut c = server.client();
    let mut pub1 = WebrtcPeer::new();
    let mut pub2 = WebrtcPeer::new();
    let (id1, ch1) = publish_with_chat(&mut c, &mut pub1, None);
    let room = str_of(&c.info(&id1), "room_id");
    let (id2, ch2) = publish_with_chat(&mut c, &mut pub2, Some(&room));

    let mut l = WebrtcPeer::new();
    let r = c
        .session("create", json!({"type": "listen", "publisher_id": id1}))
        .expect("listen");
    let answer = l
        .answer(&sdp_in(&r, "offer"))
        .expect("the listener answers");
    let lid = str_of(&r, "session_id");
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let up = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        p[2].channels_open().len() == 1
    });
    assert!(up, "{}", l.describe());
    let lch = l.channels_open()[0].0;

    assert!(pub1.channel_write(ch1, false, b"from one"));
    let got = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        p[2].channel_messages().len() == 1
    });
    assert!(got, "{}", l.describe());

    c.session(
        "set_type",
        json!({"session_id": lid, "type": "listen", "publisher_id": id2}),
    )
    .expect("set_type");
    assert!(pub1.channel_write(ch1, false, b"old publisher"));
    assert!(pub2.channel_write(ch2, false, b"from two"));
    let got = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        p[2].channel_messages().len() == 2
    });
    assert!(got, "{}", l.describe());
    let last = l.channel_messages().last().expect("a message");
    assert_eq!((last.id, last.data.as_slice()), (lch, &b"from two"[..]));
    assert_eq!(l.channels_open().len(), 1, "the same channel goes on");

    pub2.channel_close(ch2);
    let closed = run_all(&mut [&mut pub1, &mut pub2, &mut l], WAIT, |p| {
        p[2].channels_closed().contains(&lch)
    });
    assert!(closed, "mirror not closed: {}", l.describe());
}

both_backends!(set_type_repoints_mirrors_and_closes_follow);

/// A WebRTC↔WebRTC proxy relays channels both ways: the caller's channel appears at the
/// callee (same label); messages cross it in order each way.
fn webrtc_proxy_relays_channels_both_ways(server: &Server) {
    let mut c = server.client();
    let (mut caller, mut callee) = (WebrtcPeer::new(), WebrtcPeer::new());
    let (offer, ch) = caller.offer_with_channel(Some(Direction::SendRecv), None, "calls");
    let m = c
        .session("create", json!({"type": "proxy", "offer": {"sdp": offer}}))
        .expect("master");
    let master = str_of(&m, "session_id");
    let s = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("slave offer");
    let slave = str_of(&s, "session_id");
    let slave_offer = sdp_in(&s, "offer");
    assert!(slave_offer.contains("webrtc-datachannel"), "{slave_offer}");
    let answer = callee.answer(&slave_offer).expect("callee answers");
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let ev = c.wait_event(&master, "answer");
    let master_answer = sdp_in(&ev["body"], "answer");
    assert!(
        master_answer.contains("a=sctp-port:5000"),
        "{master_answer}"
    );
    caller
        .accept_answer(&master_answer)
        .expect("caller accepts");
    let up = run_all(&mut [&mut caller, &mut callee], WAIT, |p| {
        p[0].channel_open(ch) && p[1].channels_open().len() == 1
    });
    assert!(up, "{}\n{}", caller.describe(), callee.describe());
    let (at_callee, label) = callee.channels_open()[0].clone();
    assert_eq!(label, "calls");

    for i in 0..20 {
        assert!(caller.channel_write(ch, false, format!("there {i}").as_bytes()));
    }
    assert!(callee.channel_write(at_callee, true, b"back on the same channel"));
    let done = run_all(&mut [&mut caller, &mut callee], WAIT, |p| {
        p[1].channel_messages().len() == 20 && p[0].channel_messages().len() == 1
    });
    assert!(done, "{}\n{}", caller.describe(), callee.describe());
    let there: Vec<String> = callee
        .channel_messages()
        .iter()
        .map(|m| String::from_utf8_lossy(&m.data).into_owned())
        .collect();
    assert_eq!(
        there,
        (0..20).map(|i| format!("there {i}")).collect::<Vec<_>>()
    );
    let back = &caller.channel_messages()[0];
    assert_eq!((back.id, back.binary), (ch, true));
    assert_eq!(back.data, b"back on the same channel");
}

both_backends!(webrtc_proxy_relays_channels_both_ways);

/// The WebRTC→SIP gateway: the SIP side gets no data m-line, and the browser's is answered
/// with port 0 (nothing to relay to).
fn gateway_to_sip_rejects_the_data_line(server: &Server) {
    let mut c = server.client();
    let mut caller = WebrtcPeer::new();
    let (offer, _) = caller.offer_with_channel(Some(Direction::SendRecv), None, "chat");
    let m = c
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": offer}}),
        )
        .expect("WebRTC master");
    let master = str_of(&m, "session_id");
    let s = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("slave offer");
    let plain = sdp_in(&s, "offer");
    assert!(!plain.contains("m=application"), "{plain}");
    let b = Peer::new();
    let answer = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n",
        b.port()
    );
    c.session(
        "set_answer",
        json!({"session_id": str_of(&s, "session_id"), "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let ev = c.wait_event(&master, "answer");
    let master_answer = sdp_in(&ev["body"], "answer");
    assert!(
        master_answer.contains("m=application 0 UDP/DTLS/SCTP"),
        "{master_answer}"
    );
    caller
        .accept_answer(&master_answer)
        .expect("str0m accepts a rejected data line");
}

both_backends!(gateway_to_sip_rejects_the_data_line);

/// An offer of data channels alone (no audio, no video): the echo session answers just the
/// data line, ICE and DTLS come up on its transport, messages come back, and destroying the
/// session frees its port.
fn data_only_echo_comes_back(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let (offer, ch) = p.offer_with_channel(None, None, "only");
    assert!(
        !offer.contains("m=audio") && !offer.contains("m=video"),
        "{offer}"
    );
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": offer}}))
        .expect("create a data-only echo");
    let answer = sdp_in(&reply, "answer");
    assert!(answer.contains("m=application "), "{answer}");
    assert!(
        !answer.contains("m=audio") && !answer.contains("m=video"),
        "{answer}"
    );
    p.accept_answer(&answer)
        .unwrap_or_else(|e| panic!("str0m refuses {answer}: {e}"));
    let id = str_of(&reply, "session_id");
    assert!(p.run_until(WAIT, |p| p.connected()), "{}", p.describe());
    assert!(
        p.run_until(WAIT, |p| p.channel_open(ch)),
        "channel never opened: {}",
        p.describe()
    );
    let sent = vec![(false, b"just data".to_vec()), (true, vec![1, 2, 3])];
    for (binary, data) in &sent {
        assert!(p.channel_write(ch, *binary, data), "str0m buffer full");
    }
    assert!(
        p.run_until(WAIT, |p| p.channel_messages().len() >= sent.len()),
        "echo incomplete: {}",
        p.describe()
    );
    let got: Vec<(bool, Vec<u8>)> = p
        .channel_messages()
        .iter()
        .map(|m| (m.binary, m.data.clone()))
        .collect();
    assert_eq!(got, sent);
    let port = server_addr(&answer, 0).port();
    c.session("destroy", json!({"session_id": id}))
        .expect("destroy");
    // The port pair is free again once destroy answers: a socket can bind it.
    std::net::UdpSocket::bind(("127.0.0.1", port)).expect("the session's port is free");
}
both_backends!(data_only_echo_comes_back);

/// An offer in the legacy form (`DTLS/SCTP 5000` + `a=sctpmap`, hand-edited from str0m's) is
/// answered in kind, and str0m's channel echoes over it.
fn legacy_sctpmap_offer_is_answered_in_kind(server: &Server) {
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let (offer, ch) = p.offer_with_channel(Some(Direction::SendRecv), None, "legacy");
    let legacy: String = offer
        .split("\r\n")
        .filter(|l| !l.starts_with("a=sctp-port") && !l.starts_with("a=max-message-size"))
        .map(
            |l| match l.strip_suffix(" UDP/DTLS/SCTP webrtc-datachannel") {
                Some(m) => format!("{m} DTLS/SCTP 5000\r\na=sctpmap:5000 webrtc-datachannel 1024"),
                None => l.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\r\n");
    assert!(legacy.contains(" DTLS/SCTP 5000\r\n"), "{legacy}");
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": legacy}}))
        .expect("create echo");
    let answer = sdp_in(&reply, "answer");
    let data_line = answer
        .lines()
        .find(|l| l.starts_with("m=application"))
        .expect("a data line");
    assert!(
        data_line.ends_with(" DTLS/SCTP 5000") && !data_line.starts_with("m=application 0 "),
        "{answer}"
    );
    assert!(
        answer.contains("a=sctpmap:5000 webrtc-datachannel 1024\r\n"),
        "{answer}"
    );
    assert!(!answer.contains("a=sctp-port"), "{answer}");
    p.accept_answer(&answer)
        .unwrap_or_else(|e| panic!("str0m refuses {answer}: {e}"));
    assert!(p.run_until(WAIT, |p| p.connected()), "{}", p.describe());
    assert!(
        p.run_until(WAIT, |p| p.channel_open(ch)),
        "channel never opened: {}",
        p.describe()
    );
    assert!(p.channel_write(ch, false, b"old style"));
    assert!(
        p.run_until(WAIT, |p| p.channel_messages().len() == 1),
        "{}",
        p.describe()
    );
    assert_eq!(p.channel_messages()[0].data, b"old style");
}
both_backends!(legacy_sctpmap_offer_is_answered_in_kind);

/// A publisher of data channels alone (a chat with no audio or video): answered with the
/// data line alone on its WebRTC transport; its channel opens and what it sends reaches the
/// server; a listener is offered the data line alone, connects, gets the mirror and what the
/// publisher sends next.
fn data_only_publisher_is_answered(server: &Server) {
    let mut c = server.client();
    let mut publ = WebrtcPeer::new();
    let (offer, ch) = publ.offer_with_channel(None, None, "chat");
    let r = c
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": offer}}),
        )
        .expect("a data-only publisher");
    let answer = sdp_in(&r, "answer");
    assert!(
        !answer.contains("m=audio") && !answer.contains("m=video"),
        "{answer}"
    );
    publ.accept_answer(&answer)
        .expect("str0m accepts the answer");
    let pub_id = str_of(&r, "session_id");
    assert!(
        publ.run_until(WAIT, |p| p.channel_open(ch)),
        "{}",
        publ.describe()
    );
    assert!(publ.channel_write(ch, false, b"hello room"));
    info_while_driving(&mut c, &mut publ, &pub_id, |i| {
        i["webrtc"]["data"]["messages_in"] == 1
    });
    let r = c
        .session("create", json!({"type": "listen", "publisher_id": pub_id}))
        .expect("listen");
    let offer = sdp_in(&r, "offer");
    assert!(offer.contains("webrtc-datachannel"), "{offer}");
    assert!(
        !offer.contains("m=audio") && !offer.contains("m=video"),
        "{offer}"
    );
    let lid = str_of(&r, "session_id");
    let mut l = WebrtcPeer::new();
    let answer = l.answer(&offer).expect("the listener answers");
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let up = run_all(&mut [&mut publ, &mut l], WAIT, |p| {
        p[1].connected() && p[1].channels_open().len() == 1
    });
    assert!(up, "the data-only listener: {}", l.describe());
    assert_eq!(l.channels_open()[0].1, "chat");
    assert!(publ.channel_write(ch, false, b"to the listener"));
    let got = run_all(&mut [&mut publ, &mut l], WAIT, |p| {
        p[1].channel_messages().len() == 1
    });
    assert!(got, "{}", l.describe());
    assert_eq!(l.channel_messages()[0].data, b"to the listener");
}
both_backends!(data_only_publisher_is_answered);

/// A WebRTC proxy whose master offers data channels alone: the slave is offered the data
/// line alone, both legs connect, and channels are relayed both ways. Towards a plain RTP
/// slave there is nothing to relay: refused.
fn data_only_webrtc_proxy_relays_both_ways(server: &Server) {
    let mut c = server.client();
    let (mut caller, mut callee) = (WebrtcPeer::new(), WebrtcPeer::new());
    let (offer, ch) = caller.offer_with_channel(None, None, "only data");
    let refused = c.session(
        "create",
        json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": offer}}),
    );
    let e = refused.expect_err("a plain slave has no data");
    assert_eq!(e.code, 100041, "invalid_parameters: {e:?}");
    let m = c
        .session("create", json!({"type": "proxy", "offer": {"sdp": offer}}))
        .expect("a data-only master");
    let master = str_of(&m, "session_id");
    let s = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("slave offer");
    let slave = str_of(&s, "session_id");
    let slave_offer = sdp_in(&s, "offer");
    assert!(slave_offer.contains("webrtc-datachannel"), "{slave_offer}");
    assert!(
        !slave_offer.contains("m=audio") && !slave_offer.contains("m=video"),
        "{slave_offer}"
    );
    let answer = callee.answer(&slave_offer).expect("callee answers");
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let ev = c.wait_event(&master, "answer");
    let master_answer = sdp_in(&ev["body"], "answer");
    assert!(
        master_answer.contains("a=sctp-port:5000") && !master_answer.contains("m=application 0 "),
        "{master_answer}"
    );
    caller
        .accept_answer(&master_answer)
        .expect("caller accepts");
    let up = run_all(&mut [&mut caller, &mut callee], WAIT, |p| {
        p[0].channel_open(ch) && p[1].channels_open().len() == 1
    });
    assert!(up, "{}\n{}", caller.describe(), callee.describe());
    let (at_callee, label) = callee.channels_open()[0].clone();
    assert_eq!(label, "only data");
    assert!(caller.channel_write(ch, false, b"there"));
    assert!(callee.channel_write(at_callee, true, b"and back"));
    let done = run_all(&mut [&mut caller, &mut callee], WAIT, |p| {
        p[0].channel_messages().len() == 1 && p[1].channel_messages().len() == 1
    });
    assert!(done, "{}\n{}", caller.describe(), callee.describe());
    assert_eq!(callee.channel_messages()[0].data, b"there");
    let back = &caller.channel_messages()[0];
    assert_eq!(
        (back.id, back.binary, back.data.as_slice()),
        (ch, true, &b"and back"[..])
    );
}
both_backends!(data_only_webrtc_proxy_relays_both_ways);

/// A server with small data limits: its answer advertises the smaller `a=max-message-size`; a
/// peer that ignores it has its larger message dropped (counted) and the association goes
/// on; a burst beyond `--data-burst` with a tiny `--data-rate` loses exactly the excess
/// (counted), and what passed comes back in order.
fn limits_drop_and_count(io: sluice_dataplane::api::IoMode) {
    let Some(server) = Server::start_with(io, |c| {
        c.data_limits.max_message_size = 1024;
        c.data_limits.rate = 0.001;
        c.data_limits.burst = 5;
    }) else {
        return;
    };
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let (offer, ch) = p.offer_with_channel(None, None, "chat");
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": offer}}))
        .expect("create echo");
    let answer = sdp_in(&reply, "answer");
    assert!(answer.contains("a=max-message-size:1024\r\n"), "{answer}");
    // A peer that sends more than we advertise.
    let answer = answer.replace("a=max-message-size:1024", "a=max-message-size:65536");
    p.accept_answer(&answer).expect("str0m accepts the answer");
    let id = str_of(&reply, "session_id");
    assert!(
        p.run_until(WAIT, |p| p.channel_open(ch)),
        "channel never opened: {}",
        p.describe()
    );

    assert!(p.channel_write(ch, true, &Payloads(0xda7a_0002).next(2000)));
    let sent: Vec<Vec<u8>> = (0..8).map(|i| format!("m{i}").into_bytes()).collect();
    for m in &sent {
        assert!(p.channel_write(ch, false, m));
    }
    let info = info_while_driving(&mut c, &mut p, &id, |i| {
        let d = &i["webrtc"]["data"];
        d["dropped_too_large"] == 1 && d["dropped_rate"] == 3
    });
    let data = &info["webrtc"]["data"];
    assert_eq!(data["messages_in"], 5, "{info}");
    assert_eq!(data["dropped_bytes_rate"], 0, "{info}");
    assert!(
        p.run_until(WAIT, |p| p.channel_messages().len() == 5),
        "{}",
        p.describe()
    );
    let got: Vec<&Vec<u8>> = p.channel_messages().iter().map(|m| &m.data).collect();
    assert_eq!(
        got,
        sent[..5].iter().collect::<Vec<_>>(),
        "the first five, in order"
    );
    assert!(p.channel_open(ch), "the channel stayed open");
}

#[test]
fn limits_drop_and_count_mmsg() {
    limits_drop_and_count(sluice_dataplane::api::IoMode::Mmsg);
}

#[test]
fn limits_drop_and_count_uring() {
    limits_drop_and_count(sluice_dataplane::api::IoMode::Uring);
}

/// A listener that stops reading (acknowledges nothing) loses what goes beyond
/// `--data-max-buffered` (counted on its session); the publisher and the other listener get
/// everything, in order.
#[test]
fn a_slow_listener_loses_messages_and_stalls_nobody() {
    let Some(server) = Server::start_with(sluice_dataplane::api::IoMode::Mmsg, |c| {
        c.data_limits.max_buffered = 4096;
    }) else {
        return;
    };
    let mut c = server.client();
    let mut publ = WebrtcPeer::new();
    let (pub_id, ch) = publish_with_chat(&mut c, &mut publ, None);
    let mut listeners = Vec::new();
    for _ in 0..2 {
        let mut l = WebrtcPeer::new();
        let r = c
            .session("create", json!({"type": "listen", "publisher_id": pub_id}))
            .expect("listen");
        let answer = l
            .answer(&sdp_in(&r, "offer"))
            .expect("the listener answers");
        let lid = str_of(&r, "session_id");
        c.session(
            "set_answer",
            json!({"session_id": lid, "answer": {"sdp": answer}}),
        )
        .expect("set_answer");
        listeners.push((lid, l));
    }
    let [(fast_id, fast), (slow_id, slow)] = &mut listeners[..] else {
        unreachable!("two listeners");
    };
    let up = run_all(&mut [&mut publ, fast, slow], WAIT, |p| {
        p[1].channels_open().len() == 1 && p[2].channels_open().len() == 1
    });
    assert!(up, "{}\n{}", fast.describe(), slow.describe());

    // From now on the slow listener reads nothing. Each message reaches the fast one and is
    // acknowledged (nothing waits towards it) before the next.
    let sent: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
    for (i, m) in sent.iter().enumerate() {
        assert!(publ.channel_write(ch, true, m));
        let deadline = Instant::now() + WAIT;
        loop {
            publ.step(STEP);
            fast.step(STEP);
            if fast.channel_messages().len() == i + 1
                && c.info(fast_id)["webrtc"]["data"]["buffered"] == 0
            {
                break;
            }
            assert!(Instant::now() < deadline, "{}", fast.describe());
        }
    }
    let data: Vec<&Vec<u8>> = fast.channel_messages().iter().map(|m| &m.data).collect();
    assert_eq!(
        data,
        sent.iter().collect::<Vec<_>>(),
        "all of them, in order"
    );

    let info = c.info(slow_id);
    let d = &info["webrtc"]["data"];
    let (out, full) = (
        d["messages_out"].as_u64().expect("a count"),
        d["dropped_buffer_full"].as_u64().expect("a count"),
    );
    // 4096 bytes hold four messages (and the few bytes of the mirror's DCEP OPEN).
    assert_eq!((out, full), (4, 16), "{info}");
    assert!(d["buffered"].as_u64().expect("bytes") > 4000, "{info}");
    let fast_info = c.info(fast_id);
    assert_eq!(fast_info["webrtc"]["data"]["dropped_buffer_full"], 0);
    assert_eq!(c.info(&pub_id)["webrtc"]["data"]["messages_in"], sent.len());
}

/// True if `cmd` is on the PATH.
fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// A recorded echo session with a data channel: `BASE-data.mjr` is Janus's data format (info
/// `t: d`, codec `text`, each message a frame after its 8-byte time) holding what the peer
/// sent, in order, except what `mute_data` dropped; a listener's recording holds what it was
/// sent. `janus-pp-rec` (Debian's `janus-tools`; the test says SKIPPED without it) turns the
/// echo's file into a `.srt` text file with every message.
fn recorded_data_converts_with_janus_pp_rec(io: sluice_dataplane::api::IoMode) {
    let dir = temp_dir(&format!("dc-rec-{io:?}"));
    let Some(server) = recording_server(io, &dir) else {
        return;
    };
    let mut c = server.client();
    let mut p = WebrtcPeer::new();
    let (id, ch, _) = open_echo(&mut c, &mut p);
    let started = recorder_action(
        &mut c,
        &id,
        json!({"action": "start", "uri": "file://chat"}),
    )
    .expect("start");
    assert_eq!(
        started["files"],
        json!(["chat-audio.mjr", "chat-video.mjr", "chat-data.mjr"]),
        "{started}"
    );
    let recorded: Vec<(bool, Vec<u8>)> = vec![
        (false, b"first line".to_vec()),
        (false, "second, h\u{e9}llo".as_bytes().to_vec()),
        (true, b"binary bytes".to_vec()),
    ];
    for (binary, m) in &recorded[..2] {
        assert!(p.channel_write(ch, *binary, m));
    }
    assert!(p.run_until(WAIT, |p| p.channel_messages().len() == 2));
    c.session("update_media", json!({"session_id": id, "mute_data": true}))
        .expect("mute data");
    assert!(p.channel_write(ch, false, b"muted, not recorded"));
    info_while_driving(&mut c, &mut p, &id, |i| {
        i["webrtc"]["data"]["dropped_muted"] == 1
    });
    c.session(
        "update_media",
        json!({"session_id": id, "mute_data": false}),
    )
    .expect("unmute data");
    assert!(p.channel_write(ch, true, &recorded[2].1));
    assert!(p.run_until(WAIT, |p| p.channel_messages().len() == 3));
    let info = c.info(&id);
    let files = info["recording"]["files"].as_array().expect("files");
    let data_file = files
        .iter()
        .find(|f| f["kind"] == "data")
        .expect("a data file");
    assert_eq!(data_file["name"], "chat-data.mjr", "{info}");
    assert_eq!(data_file["codec"], "text", "{info}");
    let stopped = recorder_action(&mut c, &id, json!({"action": "stop"})).expect("stop");
    assert_eq!(stopped["closed"], true, "{stopped}");
    assert_eq!(stopped["dropped"], 0, "{stopped}");
    assert!(
        stopped["files"]
            .as_array()
            .expect("files")
            .contains(&json!("chat-data.mjr")),
        "{stopped}"
    );

    let path = dir.join("chat-data.mjr");
    let (header, frames) = read_mjr(&path);
    assert_eq!((&header["t"], &header["c"]), (&json!("d"), &json!("text")));
    let created = header["s"].as_u64().expect("s");
    let messages: Vec<&[u8]> = frames.iter().map(|f| &f.rtp[8..]).collect();
    let want: Vec<&[u8]> = recorded.iter().map(|(_, m)| m.as_slice()).collect();
    assert_eq!(
        messages, want,
        "what the peer sent, in order, not the muted one"
    );
    for f in &frames {
        let at = u64::from_be_bytes(f.rtp[..8].try_into().expect("8 bytes"));
        assert!(
            at >= created && at - created < 120_000_000,
            "the wall-clock time before each message: {at} (created {created})"
        );
    }
    let listing = http_get(server.api, "/recordings", &[]);
    let listing: Value = serde_json::from_slice(&listing.body).expect("JSON");
    let entry = listing
        .as_array()
        .expect("a list")
        .iter()
        .find(|e| e["name"] == "chat-data.mjr")
        .unwrap_or_else(|| panic!("not listed: {listing}"));
    assert_eq!(
        (&entry["kind"], &entry["state"]),
        (&json!("data"), &json!("done"))
    );

    // A listener records what it is sent.
    let mut publ = WebrtcPeer::new();
    let (pub_id, pch) = publish_with_chat(&mut c, &mut publ, None);
    let mut l = WebrtcPeer::new();
    let r = c
        .session("create", json!({"type": "listen", "publisher_id": pub_id}))
        .expect("listen");
    let lid = str_of(&r, "session_id");
    let answer = l
        .answer(&sdp_in(&r, "offer"))
        .expect("the listener answers");
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");
    let up = run_all(&mut [&mut publ, &mut l], WAIT, |p| {
        p[1].channels_open().len() == 1
    });
    assert!(up, "{}", l.describe());
    recorder_action(
        &mut c,
        &lid,
        json!({"action": "start", "uri": "file://heard"}),
    )
    .expect("start the listener's recording");
    assert!(publ.channel_write(pch, false, b"to the room"));
    let got = run_all(&mut [&mut publ, &mut l], WAIT, |p| {
        p[1].channel_messages().len() == 1
    });
    assert!(got, "{}", l.describe());
    recorder_action(&mut c, &lid, json!({"action": "stop"})).expect("stop");
    let (_, frames) = read_mjr(&dir.join("heard-data.mjr"));
    let heard: Vec<&[u8]> = frames.iter().map(|f| &f.rtp[8..]).collect();
    assert_eq!(heard, [&b"to the room"[..]]);

    if !on_path("janus-pp-rec") {
        eprintln!(
            "SKIPPED: janus-pp-rec not on the PATH (apt-get install janus-tools, as .ci/prepare \
             does): the data file was checked, not its conversion"
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let out = dir.join("chat.srt");
    let conv = std::process::Command::new("timeout")
        .args(["60", "janus-pp-rec"])
        .arg(&path)
        .arg(&out)
        .output()
        .expect("run janus-pp-rec");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        conv.status.success(),
        "janus-pp-rec failed: {}{}",
        String::from_utf8_lossy(&conv.stdout),
        String::from_utf8_lossy(&conv.stderr)
    );
    // One cue per message: number, times, the message, a blank line.
    let cues: Vec<&str> = text
        .split("\n\n")
        .filter(|c| !c.trim().is_empty())
        .collect();
    assert_eq!(cues.len(), recorded.len(), "{text}");
    for (i, (cue, (_, m))) in cues.iter().zip(&recorded).enumerate() {
        let mut lines = cue.lines();
        assert_eq!(lines.next(), Some((i + 1).to_string().as_str()), "{text}");
        assert!(lines.next().is_some_and(|l| l.contains(" --> ")), "{text}");
        assert_eq!(
            lines.collect::<Vec<_>>().join("\n").as_bytes(),
            m.as_slice(),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recorded_data_converts_with_janus_pp_rec_mmsg() {
    recorded_data_converts_with_janus_pp_rec(sluice_dataplane::api::IoMode::Mmsg);
}

#[test]
fn recorded_data_converts_with_janus_pp_rec_uring() {
    recorded_data_converts_with_janus_pp_rec(sluice_dataplane::api::IoMode::Uring);
}
