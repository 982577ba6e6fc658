//! Proxy over plain RTP: master leg from caller A, slave leg to callee B, media both ways.

use serde_json::json;
use sluice_tests::*;

struct Call {
    master: String,
    slave: String,
    to_master: std::net::SocketAddr,
    to_slave: std::net::SocketAddr,
}

/// A offers PCMU + telephone-event 101; B answers PCMU + telephone-event *100*.
fn setup(c: &mut Client, a: &Peer, b: &Peer) -> Call {
    let m = c
        .session("create", json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": phone_sdp(a.port()), "sdp_type": "rtp"}}))
        .expect("create proxy master");
    let master = str_of(&m, "session_id");
    let p = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("get_proxy_offer");
    let slave = str_of(&p, "session_id");
    let offer = sdp_in(&p, "offer");
    assert_eq!(p["offer"]["sdp_type"], "rtp");
    assert!(
        offer.contains("RTP/AVP") && offer.contains("PCMU/8000"),
        "slave offer: {offer}"
    );
    // Asking again returns the same slave.
    let again = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("again");
    assert_eq!(str_of(&again, "session_id"), slave);

    let b_answer = plain_sdp(&[(
        "audio",
        b.port(),
        "0 100",
        &[
            "rtpmap:0 PCMU/8000",
            "rtpmap:100 telephone-event/8000",
            "sendrecv",
        ],
    )]);
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": b_answer, "sdp_type": "rtp"}}),
    )
    .expect("set_answer on slave");
    let ev = c.wait_event(&master, "answer");
    let master_answer = sdp_in(&ev["body"], "answer");
    let got = c
        .session("get_answer", json!({"session_id": master}))
        .expect("get_answer master");
    assert_eq!(sdp_in(&got, "answer"), master_answer);
    Call {
        to_master: server_addr(&master_answer, 0),
        to_slave: server_addr(&offer, 0),
        master,
        slave,
    }
}

fn proxy_carries_media_both_ways(server: &Server) {
    let mut c = server.client();
    let (a, b) = (Peer::new(), Peer::new());
    let call = setup(&mut c, &a, &b);

    let a_to_b = blast(&a, call.to_master, 0, 11, 100, 30);
    let got_b = b.recv_n(30);
    assert_eq!(got_b, a_to_b, "A→B intact");
    let b_to_a = blast(&b, call.to_slave, 0, 22, 9000, 30);
    let got_a = a.recv_n(30);
    assert_eq!(got_a, b_to_a, "B→A intact");

    // Payload types are mapped between legs: A's telephone-event 101 arrives at B as 100.
    let dtmf = Rtp::new(101, 130, 0, 11, b"dtmf");
    a.send(call.to_master, &dtmf.to_bytes());
    assert_eq!(b.recv_n(1)[0].pt, 100);
    let dtmf_back = Rtp::new(100, 9030, 0, 22, b"dtmf");
    b.send(call.to_slave, &dtmf_back.to_bytes());
    assert_eq!(a.recv_n(1)[0].pt, 101);

    let info = c.info(&call.master);
    assert_eq!(info["type"], "proxy");
    assert_eq!(info["slave_id"], call.slave.as_str());
    assert_eq!(info["media"][0]["rx_packets"], 31);
}
both_backends!(proxy_carries_media_both_ways);

fn proxy_slave_created_with_master_id(server: &Server) {
    let mut c = server.client();
    let (a, b) = (Peer::new(), Peer::new());
    let m = c
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": phone_sdp(a.port())}}),
        )
        .expect("master");
    let master = str_of(&m, "session_id");
    let s = c
        .session(
            "create",
            json!({"type": "proxy", "master_id": master, "sdp_type": "rtp"}),
        )
        .expect("slave via master_id");
    let slave = str_of(&s, "session_id");
    let offer = sdp_in(&s, "offer");
    let p = c
        .session("get_proxy_offer", json!({"session_id": master}))
        .expect("get_proxy_offer");
    assert_eq!(str_of(&p, "session_id"), slave);
    c.session(
        "set_answer",
        json!({"session_id": slave, "answer": {"sdp": phone_sdp(b.port())}}),
    )
    .expect("answer");
    let ans = c
        .session("get_answer", json!({"session_id": master}))
        .expect("master answer");
    let sent = blast(&a, server_addr(&sdp_in(&ans, "answer"), 0), 0, 5, 1, 10);
    assert_eq!(b.recv_n(10), sent);
    let back = blast(&b, server_addr(&offer, 0), 0, 6, 1, 10);
    assert_eq!(a.recv_n(10), back);
}
both_backends!(proxy_slave_created_with_master_id);

fn answer_is_set_once(server: &Server) {
    let mut c = server.client();
    let (a, b) = (Peer::new(), Peer::new());
    let call = setup(&mut c, &a, &b);
    let err = c
        .session(
            "set_answer",
            json!({"session_id": call.slave, "answer": {"sdp": phone_sdp(b.port())}}),
        )
        .unwrap_err();
    assert_eq!(err.code, 300013, "answer_already_set: {err:?}");
}
both_backends!(answer_is_set_once);
