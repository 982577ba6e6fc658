//! How sessions end: linked destruction, timeouts, vanished clients, ports coming back.

use serde_json::json;
use sluice_dataplane::api::IoMode;
use sluice_tests::*;

fn proxy_legs_stop_together(server: &Server) {
    let mut c = server.client();
    let a = Peer::new();
    for stop_master in [true, false] {
        let m = c
            .session(
                "create",
                json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": phone_sdp(a.port())}}),
            )
            .expect("master");
        let master = str_of(&m, "session_id");
        let slave = str_of(
            &c.session("get_proxy_offer", json!({"session_id": master}))
                .expect("slave"),
            "session_id",
        );
        let (stopped, other) = if stop_master {
            (&master, &slave)
        } else {
            (&slave, &master)
        };
        c.session("destroy", json!({"session_id": stopped}))
            .expect("destroy");
        assert_eq!(
            c.wait_event(stopped, "destroyed")["body"]["reason"],
            "user_stop"
        );
        assert_eq!(
            c.wait_event(other, "destroyed")["body"]["reason"],
            "peer_stopped"
        );
        assert_eq!(
            c.session("get_info", json!({"session_id": other}))
                .unwrap_err()
                .code,
            100062
        );
    }
}
both_backends!(proxy_legs_stop_together);

fn publisher_stop_ends_its_listeners_and_room_destroy_ends_all(server: &Server) {
    let mut c = server.client();
    let p = Peer::new();
    let room = c
        .room("create", json!({"room_id": "lobby", "audio_codec": "pcmu"}))
        .expect("room");
    assert_eq!(room["room_id"], "lobby");
    let dup = c.room("create", json!({"room_id": "lobby"})).unwrap_err();
    assert_eq!(dup.code, 304002, "room_already_exists: {dup:?}");
    let publ = |c: &mut Client| {
        let r = c
            .session("create", json!({"type": "publish", "room_id": "lobby", "offer": {"sdp": phone_sdp(p.port())}}))
            .expect("publish");
        str_of(&r, "session_id")
    };
    let pub1 = publ(&mut c);
    let l1 = str_of(
        &c.session(
            "create",
            json!({"type": "listen", "publisher_id": pub1, "sdp_type": "rtp"}),
        )
        .expect("l1"),
        "session_id",
    );
    let l2 = str_of(
        &c.session(
            "create",
            json!({"type": "listen", "publisher": pub1, "sdp_type": "rtp"}),
        )
        .expect("l2"),
        "session_id",
    );
    c.session("destroy", json!({"session_id": pub1}))
        .expect("destroy publisher");
    for l in [&l1, &l2] {
        assert_eq!(
            c.wait_event(l, "destroyed")["body"]["reason"],
            "publisher_stop"
        );
    }
    // The room was created explicitly, so it outlives its members.
    let pub2 = publ(&mut c);
    let l3 = str_of(
        &c.session(
            "create",
            json!({"type": "listen", "publisher_id": pub2, "sdp_type": "rtp"}),
        )
        .expect("l3"),
        "session_id",
    );
    c.room("destroy", json!({"room_id": "lobby"}))
        .expect("room destroy");
    for s in [&pub2, &l3] {
        assert_eq!(
            c.wait_event(s, "destroyed")["body"]["reason"],
            "room_destroyed"
        );
    }
    assert!(c.room("get_info", json!({"room_id": "lobby"})).is_err());
}
both_backends!(publisher_stop_ends_its_listeners_and_room_destroy_ends_all);

fn wait_and_ready_timeouts_destroy_sessions(server: &Server) {
    let mut c = server.client();
    let a = Peer::new();
    // A proxy master never answered: wait_timeout.
    let m = c
        .session("create", json!({"type": "proxy", "sdp_type": "rtp", "wait_timeout": 0.3, "offer": {"sdp": phone_sdp(a.port())}}))
        .expect("master");
    let master = str_of(&m, "session_id");
    assert_eq!(
        c.wait_event(&master, "destroyed")["body"]["reason"],
        "session_timeout"
    );
    // An echo is ready at once: ready_timeout.
    let e = c
        .session(
            "create",
            json!({"type": "echo", "ready_timeout": 0.3, "offer": {"sdp": phone_sdp(a.port())}}),
        )
        .expect("echo");
    let echo = str_of(&e, "session_id");
    assert_eq!(
        c.wait_event(&echo, "destroyed")["body"]["reason"],
        "session_timeout"
    );
}
both_backends!(wait_and_ready_timeouts_destroy_sessions);

fn vanished_client_sessions_are_destroyed_after_grace(server: &Server) {
    let mut watcher = server.client();
    watcher
        .request(
            "core",
            "event",
            "subscribe",
            json!({"class": "media", "subclass": "session", "type": "destroyed"}),
        )
        .expect("subscribe");
    let mut c = server.client();
    let a = Peer::new();
    let e = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone_sdp(a.port())}}),
        )
        .expect("echo");
    let id = str_of(&e, "session_id");
    c.close();
    let ev = watcher.wait_event(&id, "destroyed");
    assert_eq!(ev["body"]["reason"], "registered_down");
}
both_backends!(vanished_client_sessions_are_destroyed_after_grace);

#[test]
fn ports_are_reused_after_destroy() {
    // Two RTP/RTCP pairs in all: a third session only fits once one is gone.
    let server =
        Server::start_with(IoMode::Mmsg, |c| c.rtp_ports = (39000, 39003)).expect("server");
    let mut c = server.client();
    let a = Peer::new();
    let create = |c: &mut Client| {
        c.session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone_sdp(a.port())}}),
        )
    };
    let s1 = str_of(&create(&mut c).expect("first"), "session_id");
    let s2 = str_of(&create(&mut c).expect("second"), "session_id");
    assert!(create(&mut c).is_err(), "range exhausted");
    c.session("destroy", json!({"session_id": s1}))
        .expect("destroy");
    let s3 = create(&mut c).expect("the freed pair is reused");
    let sent = blast(&a, server_addr(&sdp_in(&s3, "answer"), 0), 0, 3, 0, 3);
    assert_eq!(a.recv_n(3), sent, "the reused port forwards");
    c.session("destroy", json!({"session_id": s2}))
        .expect("destroy");
    c.session("destroy", json!({"session_id": str_of(&s3, "session_id")}))
        .expect("destroy");
    // Many cycles later nothing has leaked.
    for _ in 0..50 {
        let x = str_of(&create(&mut c).expect("create"), "session_id");
        let y = str_of(&create(&mut c).expect("create"), "session_id");
        c.session("destroy", json!({"session_id": x}))
            .expect("destroy");
        c.session("destroy", json!({"session_id": y}))
            .expect("destroy");
    }
}
