//! Mute and unmute, at create and at any time, without sequence gaps for receivers.

use serde_json::json;
use sluice_tests::*;

fn mute_and_unmute_keep_sequence_contiguous(server: &Server) {
    let mut c = server.client();
    let peer = Peer::new();
    let r = c
        .session(
            "create",
            json!({"type": "echo", "mute_audio": true, "offer": {"sdp": phone_sdp(peer.port())}}),
        )
        .expect("echo muted at create");
    let id = str_of(&r, "session_id");
    let to = server_addr(&sdp_in(&r, "answer"), 0);

    // Muted from the start: a first burst is dropped (and counted).
    blast(&peer, to, 0, 9, 0, 10);
    let info = c.info_until(&id, |i| i["media"][0]["drops"]["muted"] == 10);
    assert_eq!(info["mute_audio"], true);
    assert_eq!(info["media"][0]["tx_packets"], 0);

    c.session(
        "update_media",
        json!({"session_id": id, "mute_audio": false}),
    )
    .expect("unmute");
    blast(&peer, to, 0, 9, 10, 10);
    let first = peer.recv_n(10);

    c.session(
        "update_media",
        json!({"session_id": id, "mute_audio": true}),
    )
    .expect("mute");
    blast(&peer, to, 0, 9, 20, 10);
    // Unmute only once the worker has seen the muted burst (it runs concurrently with the API).
    c.info_until(&id, |i| i["media"][0]["drops"]["muted"] == 20);
    c.session(
        "update_media",
        json!({"session_id": id, "mute_audio": false}),
    )
    .expect("unmute");
    blast(&peer, to, 0, 9, 30, 10);
    let second = peer.recv_n(10);

    let all: Vec<Rtp> = first.into_iter().chain(second).collect();
    assert_contiguous(&all);
    assert_eq!(
        all[10].payload,
        b"pkt-9-30".to_vec(),
        "muted packets never arrive"
    );
}
both_backends!(mute_and_unmute_keep_sequence_contiguous);

fn muting_one_kind_leaves_the_other(server: &Server) {
    let mut c = server.client();
    let (a, v) = (Peer::new(), Peer::new());
    let r = c
        .session("create", json!({"type": "echo", "mute_video": true, "offer": {"sdp": av_sdp(a.port(), v.port())}}))
        .expect("echo");
    let id = str_of(&r, "session_id");
    let answer = sdp_in(&r, "answer");
    blast(&v, server_addr(&answer, 1), 96, 2, 0, 5);
    let sent = blast(&a, server_addr(&answer, 0), 111, 1, 0, 5);
    assert_eq!(a.recv_n(5), sent);
    // Every video packet was dropped as muted and none sent back; every audio one came back.
    let info = c.info_until(&id, |i| i["media"][1]["drops"]["muted"] == 5);
    let (audio, video) = (&info["media"][0], &info["media"][1]);
    assert_eq!(video["kind"], "video", "{info}");
    assert_eq!(video["rx_packets"], 5, "{info}");
    assert_eq!(video["tx_packets"], 0, "{info}");
    assert_eq!(video["drops_total"], 5, "{info}");
    assert_eq!(audio["tx_packets"], 5, "{info}");
    assert_eq!(audio["drops_total"], 0, "{info}");
}
both_backends!(muting_one_kind_leaves_the_other);

fn proxy_leg_mute_drops_only_that_direction(server: &Server) {
    let mut c = server.client();
    let (a, b) = (Peer::new(), Peer::new());
    let m = c
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": phone_sdp(a.port())}}),
        )
        .expect("master");
    let master = str_of(&m, "session_id");
    let p = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("slave");
    let slave = str_of(&p, "session_id");
    let to_slave = server_addr(&sdp_in(&p, "offer"), 0);
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": phone_sdp(b.port())}}),
    )
    .expect("answer");
    let to_master = server_addr(
        &sdp_in(
            &c.session("get_answer", json!({"session_id": master}))
                .expect("ans"),
            "answer",
        ),
        0,
    );

    c.session(
        "update_media",
        json!({"session_id": master, "mute_audio": true}),
    )
    .expect("mute master");
    blast(&a, to_master, 0, 1, 0, 5);
    let back = blast(&b, to_slave, 0, 2, 0, 5);
    assert_eq!(a.recv_n(5), back, "B→A still flows");
    // Unmute only once the worker has dropped A's burst (its sockets and the API race).
    c.info_until(&master, |i| i["media"][0]["drops"]["muted"] == 5);
    assert_eq!(
        c.info(&slave)["media"][0]["tx_packets"],
        0,
        "nothing went to B"
    );
    c.session(
        "update_media",
        json!({"session_id": master, "mute_audio": false}),
    )
    .expect("unmute");
    blast(&a, to_master, 0, 1, 5, 5);
    let got = b.recv_n(5);
    assert_eq!(got[0].payload, b"pkt-1-5".to_vec());
    assert_eq!(got[0].seq, 0, "no gap for the receiver");
}
both_backends!(proxy_leg_mute_drops_only_that_direction);
