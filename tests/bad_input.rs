//! Bad requests and bad datagrams get documented errors or counted drops; the server keeps
//! serving everyone.

use serde_json::{Value, json};
use sluice_tests::*;

fn error_of(frame: &Value) -> (i64, String) {
    assert_eq!(frame["result"], "error", "{frame}");
    (
        frame["data"]["code"].as_i64().expect("numeric code"),
        frame["data"]["error"]
            .as_str()
            .expect("error name")
            .to_string(),
    )
}

fn bad_requests_get_documented_errors(server: &Server) {
    let mut c = server.client();

    c.send_text("{not json");
    let (code, _) = error_of(&c.read_frame());
    assert_eq!(code, 100044, "syntax_error");

    let cases: Vec<(Value, i64)> = vec![
        (json!({"class": "nope", "cmd": "create", "tid": 1}), 100042),
        (
            json!({"class": "media", "subclass": "session", "cmd": "fly", "tid": 2}),
            100042,
        ),
        (
            json!({"class": "media", "subclass": "session", "tid": 3}),
            100045,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "create", "data": {}, "tid": 4}),
            100045,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "destroy", "data": {}, "tid": 5}),
            100045,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "get_info", "data": {"session_id": "nope"}, "tid": 6}),
            100062,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "create", "data": {"type": "echo", "offer": {"sdp": "v=0\r\nthis is not sdp"}}, "tid": 7}),
            100041,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "create", "data": {"type": "echo", "offer": {"sdp": "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio notaport RTP/AVP 0\r\n"}}, "tid": 8}),
            100041,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "create", "data": {"type": "echo", "offer": {}}, "tid": 9}),
            300015,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "create", "data": {"type": "teleport", "offer": {"sdp": phone_sdp(4000)}}, "tid": 10}),
            100041,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "create", "data": {"type": 7}, "tid": 11}),
            100041,
        ),
        (
            json!({"class": "media", "subclass": "session", "cmd": "set_answer", "data": {"session_id": "nope", "answer": {"sdp": "v=0"}}, "tid": 12}),
            100062,
        ),
    ];
    for (req, want) in cases {
        c.send_text(&req.to_string());
        let frame = c.read_frame();
        assert_eq!(frame["tid"], req["tid"], "reply carries the tid");
        let (code, name) = error_of(&frame);
        assert_eq!(code, want, "for {req}: got {name}");
        assert!(!name.is_empty());
    }

    // A 2 MiB frame gets an error or a closed connection, never a dead server.
    let huge = format!(
        "{{\"class\":\"media\",\"subclass\":\"session\",\"cmd\":\"get_list\",\"tid\":99,\"data\":{{\"x\":\"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    let mut big = server.client();
    big.send_text(&huge);

    // The first connection (and new ones) keep working.
    let peer = Peer::new();
    let r = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone_sdp(peer.port())}}),
        )
        .expect("still serving");
    let sent = blast(&peer, server_addr(&sdp_in(&r, "answer"), 0), 0, 1, 0, 3);
    assert_eq!(peer.recv_n(3), sent);
    let mut fresh = server.client();
    fresh
        .session("get_list", json!({}))
        .expect("new connection served");
}
both_backends!(bad_requests_get_documented_errors);

fn garbage_datagrams_are_counted_drops(server: &Server) {
    let mut c = server.client();
    let peer = Peer::new();
    let r = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone_sdp(peer.port())}}),
        )
        .expect("echo");
    let id = str_of(&r, "session_id");
    let to = server_addr(&sdp_in(&r, "answer"), 0);
    let junk: [&[u8]; 6] = [
        b"",
        &[0xff; 100],
        &[0x80],
        &[0x40; 30],
        &[0x00, 0x01, 0x00, 0x00],
        &[23; 50],
    ];
    for j in junk {
        peer.send(to, j);
    }
    // RTCP port too.
    peer.send(
        std::net::SocketAddr::new(to.ip(), to.port() + 1),
        &[0xee; 64],
    );
    // A real packet after the junk still comes back: the worker is alive.
    let sent = blast(&peer, to, 0, 1, 0, 1);
    assert_eq!(peer.recv_n(1), sent);
    let info = c.info_until(&id, |i| i["media"][0]["drops_total"].as_u64() >= Some(7));
    let m = &info["media"][0];
    assert_eq!(m["drops_total"], 7, "{m}");
    assert_eq!(m["drops"]["unclassified"], 3, "{m}");
    assert_eq!(m["drops"]["malformed"], 2, "{m}");
    assert_eq!(m["drops"]["stun"], 1, "{m}");
    assert_eq!(m["drops"]["dtls"], 1, "{m}");
    assert_eq!(m["rx_packets"], 1);
}
both_backends!(garbage_datagrams_are_counted_drops);
