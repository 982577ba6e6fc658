//! Echo over plain RTP: what the caller sends comes back to it, intact.

use serde_json::json;
use sluice_tests::*;

fn echo_returns_payload_intact(server: &Server) {
    let mut c = server.client();
    let peer = Peer::new();
    let reply = c
        .session("create", json!({"type": "echo", "sdp_type": "rtp", "offer": {"sdp": phone_sdp(peer.port()), "sdp_type": "rtp"}}))
        .expect("create echo");
    let id = str_of(&reply, "session_id");
    let answer = sdp_in(&reply, "answer");
    assert_eq!(reply["answer"]["sdp_type"], "rtp");
    let media = media_of(&answer);
    assert_eq!(media.len(), 1);
    assert_eq!(media[0].2, 0, "answer keeps the offer's first codec (PCMU)");
    assert!(answer.contains("RTP/AVP"), "plain answer: {answer}");
    let port = media[0].1;
    assert!(
        (server.rtp_ports.0..=server.rtp_ports.1).contains(&port),
        "port {port} outside the configured range"
    );

    let to = server_addr(&answer, 0);
    let sent = blast(&peer, to, 0, 0xdead_beef, 1000, 50);
    let got = peer.recv_n(50);
    assert_eq!(got, sent, "echoed packets must be identical");

    // get_answer returns the same answer; get_info shows the counters.
    let again = c
        .session("get_answer", json!({"session_id": id}))
        .expect("get_answer");
    assert_eq!(sdp_in(&again, "answer"), answer);
    let info = c.info(&id);
    assert_eq!(info["type"], "echo");
    let m = &info["media"][0];
    assert_eq!(m["kind"], "audio");
    assert_eq!(m["rx_packets"], 50);
    assert_eq!(m["tx_packets"], 50);
    assert_eq!(m["drops_total"], 0);

    c.session("destroy", json!({"session_id": id}))
        .expect("destroy");
    let ev = c.wait_event(&id, "destroyed");
    assert_eq!(ev["body"]["reason"], "user_stop");
    assert_eq!(
        c.session("get_info", json!({"session_id": id}))
            .unwrap_err()
            .code,
        100062
    );
}
both_backends!(echo_returns_payload_intact);

fn echo_with_audio_and_video_keeps_streams_apart(server: &Server) {
    let mut c = server.client();
    let (a, v) = (Peer::new(), Peer::new());
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": av_sdp(a.port(), v.port()), "sdp_type": "rtp"}}))
        .expect("create echo");
    let answer = sdp_in(&reply, "answer");
    let media = media_of(&answer);
    assert_eq!(
        media
            .iter()
            .map(|m| (m.0.as_str(), m.2))
            .collect::<Vec<_>>(),
        vec![("audio", 111), ("video", 96)]
    );
    let sent_a = blast(&a, server_addr(&answer, 0), 111, 1, 1, 20);
    let sent_v = blast(&v, server_addr(&answer, 1), 96, 2, 500, 20);
    assert_eq!(a.recv_n(20), sent_a);
    assert_eq!(v.recv_n(20), sent_v);
    let id = str_of(&reply, "session_id");
    let info = c.info(&id);
    assert_eq!(info["media"].as_array().map(Vec::len), Some(2));
}
both_backends!(echo_with_audio_and_video_keeps_streams_apart);

fn echo_latches_to_the_real_source(server: &Server) {
    // The SDP names a port nobody listens on; the server must answer where packets come from.
    let mut c = server.client();
    let peer = Peer::new();
    let reply = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone_sdp(9), "sdp_type": "rtp"}}),
        )
        .expect("create echo");
    let answer = sdp_in(&reply, "answer");
    let sent = blast(&peer, server_addr(&answer, 0), 0, 77, 1, 10);
    assert_eq!(peer.recv_n(10), sent);
}
both_backends!(echo_latches_to_the_real_source);
