//! The manager driven directly (no WebSocket): requests in, replies and events out, over a real
//! data plane on loopback (mmsg backend, a private port range per test).

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_dataplane::Dataplane;
use sluice_dataplane::api::Event;
use sluice_dataplane::api::{Config, IoMode};
use tokio::sync::{mpsc, oneshot};

use super::session::ConnId;
use super::{Manager, Outcome, Outgoing, Reply, SessionId, Timer};
use crate::errors::ErrorCode;
use crate::request::{Frame, Request, parse_frame};

static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

struct Harness {
    m: Manager,
    events: mpsc::Receiver<Outgoing>,
    /// The data plane's events, handed to the actor as its forwarding thread would.
    dp_events: crossbeam_channel::Receiver<Event>,
    dp: Dataplane,
}

const CONN: ConnId = ConnId(1);

impl Harness {
    fn new() -> Harness {
        let lo = 41000 + NEXT_RANGE.fetch_add(1, Ordering::Relaxed) * 100;
        let config = Config {
            media_ip: "127.0.0.1".parse().expect("literal"),
            port_lo: lo,
            port_hi: lo + 99,
            workers: 1,
            io: IoMode::Mmsg,
            pin: false,
            batch_wait: std::time::Duration::ZERO,
            steer: false,
            raw_send: false,
        };
        let (dp, dp_events) = Dataplane::start(config).expect("data plane on loopback");
        let mut m = Manager::new(
            dp.clone(),
            "127.0.0.1".parse().expect("literal"),
            Duration::ZERO,
        );
        let (out_tx, events) = mpsc::channel(256);
        m.conns.insert(CONN, super::Conn::new(out_tx));
        Harness {
            m,
            events,
            dp_events,
            dp,
        }
    }

    fn call(&mut self, cmd: &str, subclass: &str, data: Value) -> Result<Value, ErrorCode> {
        let frame =
            json!({"class": "media", "subclass": subclass, "cmd": cmd, "data": data, "tid": 1});
        let Ok(Frame::Request { request, .. }) = parse_frame(&frame.to_string()) else {
            panic!("bad request in test: {frame}");
        };
        self.request(request)
    }

    fn request(&mut self, request: Request) -> Result<Value, ErrorCode> {
        match self.m.handle(CONN, request) {
            Reply::Done(r) => r.map_err(|e| e.code),
            // A destroy answers once its ports are closed: the data plane's events finish it.
            Reply::Wait(later) => self.finish(later).map_err(|e| e.code),
        }
    }

    /// Hands the actor the data plane's events until `later` is answered.
    fn finish(&mut self, mut later: oneshot::Receiver<Outcome>) -> Outcome {
        loop {
            match later.try_recv() {
                Ok(r) => return r,
                Err(oneshot::error::TryRecvError::Closed) => panic!("reply dropped"),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // A bound on a broken test, not a synchronisation device.
            let ev = self
                .dp_events
                .recv_timeout(Duration::from_secs(10))
                .expect("the data plane reports the closing");
            self.m.dataplane_event(ev);
        }
    }

    fn session(&mut self, cmd: &str, data: Value) -> Result<Value, ErrorCode> {
        self.call(cmd, "session", data)
    }

    /// Drains the events queued so far as `(obj_id, type, body)`.
    fn events(&mut self) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Event(e)) = self.events.try_recv() {
            out.push((
                e["obj_id"].as_str().unwrap_or_default().to_owned(),
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["body"].clone(),
            ));
        }
        out
    }

    fn destroyed_reason(&mut self, id: &SessionId) -> Option<String> {
        self.events()
            .into_iter()
            .find(|(o, t, _)| *id == o.as_str() && t == "destroyed")
            .and_then(|(_, _, b)| b["reason"].as_str().map(str::to_owned))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.m.shutdown();
        self.dp.shutdown();
    }
}

fn phone(port: u16) -> String {
    format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

fn av(port: u16) -> String {
    format!(
        "v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n\
         m=video {} RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
        port + 2
    )
}

fn id(v: &Value) -> SessionId {
    v["session_id"].as_str().expect("session_id").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_is_ready_at_once_and_destroy_reports_user_stop() {
    let mut h = Harness::new();
    let r = h
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone(5000)}}),
        )
        .expect("echo");
    let s = id(&r);
    assert_eq!(r["answer"]["sdp_type"], "rtp");
    let info = h
        .session("get_info", json!({"session_id": s}))
        .expect("info");
    assert_eq!(
        (info["state"].as_str(), info["type"].as_str()),
        (Some("ready"), Some("echo"))
    );
    assert_eq!(info["media"][0]["codec"], "PCMU/8000");
    assert_eq!(h.events()[0].1, "created");
    h.session("destroy", json!({"session_id": s}))
        .expect("destroy");
    assert_eq!(h.destroyed_reason(&s).as_deref(), Some("user_stop"));
    assert_eq!(
        h.session("get_info", json!({"session_id": s})),
        Err(ErrorCode::SessionNotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answer_flows_from_slave_to_master_and_peers_stop_together() {
    let mut h = Harness::new();
    let m = id(&h
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": phone(5000)}}),
        )
        .expect("master"));
    assert_eq!(
        h.session(
            "set_answer",
            json!({"session_id": m, "answer": {"sdp": phone(5002)}})
        ),
        Err(ErrorCode::InvalidParameters)
    );
    let p = h
        .session("get_proxy_offer", json!({"session_id": m}))
        .expect("slave");
    let s = id(&p);
    assert!(
        p["offer"]["sdp"]
            .as_str()
            .is_some_and(|o| o.contains("PCMU/8000"))
    );
    assert!(matches!(
        h.m.handle(
            CONN,
            Request::GetAnswer {
                session_id: m.clone()
            }
        ),
        Reply::Wait(_)
    ));
    h.session(
        "set_answer",
        json!({"session_id": s, "answer": {"sdp": phone(5002)}}),
    )
    .expect("answer");
    assert!(
        h.events()
            .iter()
            .any(|(o, t, _)| m == o.as_str() && t == "answer")
    );
    let a = h
        .session("get_answer", json!({"session_id": m}))
        .expect("master answer");
    assert!(
        a["answer"]["sdp"]
            .as_str()
            .is_some_and(|x| x.contains("RTP/AVP 0 101"))
    );
    assert_eq!(
        h.session(
            "set_answer",
            json!({"session_id": s, "answer": {"sdp": phone(5002)}})
        ),
        Err(ErrorCode::AnswerAlreadySet)
    );
    h.session("destroy", json!({"session_id": s}))
        .expect("destroy slave");
    assert_eq!(h.destroyed_reason(&m).as_deref(), Some("peer_stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_generated_sdp_is_webrtc_by_default() {
    let mut h = Harness::new();
    let m = id(&h
        .session(
            "create",
            json!({"type": "proxy", "offer": {"sdp": phone(5000)}}),
        )
        .expect("plain master"));
    let slave = h
        .session("get_proxy_offer", json!({"session_id": m}))
        .expect("slave offer");
    assert_eq!(slave["offer"]["sdp_type"], "webrtc");
    let offer = slave["offer"]["sdp"].as_str().expect("sdp");
    for want in [
        "UDP/TLS/RTP/SAVPF",
        "a=setup:actpass",
        "a=ice-lite",
        "a=fingerprint:sha-256 ",
        "a=end-of-candidates",
        "a=rtcp-mux",
        "a=group:BUNDLE",
        " cname:",
    ] {
        assert!(offer.contains(want), "{want} missing in {offer}");
    }
    let p = id(&h
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": av(5000)}}),
        )
        .expect("publish"));
    let l = h
        .session("create", json!({"type": "listen", "publisher_id": p}))
        .expect("listen");
    assert_eq!(l["offer"]["sdp_type"], "webrtc");
    // One bundled transport: both m-lines on the same port.
    let sdp = crate::sdp::Sdp::parse(l["offer"]["sdp"].as_str().expect("sdp")).expect("parses");
    assert_eq!(sdp.media.len(), 2);
    assert_eq!(sdp.media[0].port, sdp.media[1].port);
    let info = h
        .session("get_info", json!({"session_id": id(&l)}))
        .expect("info");
    assert_eq!(info["webrtc"]["state"], "connecting");
    // A plain answer to a WebRTC offer does not fit.
    let err = h.session(
        "set_answer",
        json!({"session_id": id(&l), "answer": {"sdp": av(6000)}}),
    );
    assert_eq!(err, Err(ErrorCode::InvalidParameters));
    // Candidates: validated, and only for WebRTC sessions.
    let cand = "candidate:1 1 udp 2130706431 127.0.0.1 6000 typ host";
    h.session(
        "set_candidate",
        json!({"session_id": id(&l), "sdpMid": "0", "sdpMLineIndex": 0, "candidate": cand}),
    )
    .expect("candidate");
    let err = h.session(
        "set_candidate",
        json!({"session_id": id(&l), "sdpMLineIndex": 0, "candidate": "candidate:junk"}),
    );
    assert_eq!(err, Err(ErrorCode::InvalidParameters));
    h.session("set_candidate_end", json!({"session_id": id(&l)}))
        .expect("end");
    let err = h.session(
        "set_candidate",
        json!({"session_id": p, "sdpMLineIndex": 0, "candidate": cand}),
    );
    assert_eq!(err, Err(ErrorCode::InvalidParameters));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_auto_create_and_listeners_follow_their_publisher() {
    let mut h = Harness::new();
    let p = h
        .session(
            "create",
            json!({"type": "publish", "room_id": "r1", "offer": {"sdp": av(5000)}}),
        )
        .expect("publish");
    assert_eq!(
        (p["room"].as_str(), p["room_id"].as_str()),
        (Some("r1"), Some("r1"))
    );
    let p = id(&p);
    let l = h
        .session(
            "create",
            json!({"type": "listen", "publisher": p, "sdp_type": "rtp"}),
        )
        .expect("listen");
    assert!(
        l["offer"]["sdp"]
            .as_str()
            .is_some_and(|o| o.contains("a=sendonly") && o.contains("a=ssrc:"))
    );
    let l = id(&l);
    let info = h
        .call("get_info", "room", json!({"room_id": "r1"}))
        .expect("room");
    assert_eq!(info["listeners"], json!([l]));
    // A publisher in another room cannot be switched to.
    let other = id(&h
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": av(5004)}}),
        )
        .expect("other"));
    let err = h.session(
        "set_type",
        json!({"session_id": l, "type": "listen", "publisher_id": other}),
    );
    assert_eq!(err, Err(ErrorCode::InvalidParameters));
    h.session("destroy", json!({"session_id": p}))
        .expect("destroy publisher");
    assert_eq!(h.destroyed_reason(&l).as_deref(), Some("publisher_stop"));
    // The auto-created room went with its last member.
    assert_eq!(
        h.call("get_info", "room", json!({"room_id": "r1"})),
        Err(ErrorCode::RoomNotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_rooms_enforce_codecs_and_refuse_duplicates() {
    let mut h = Harness::new();
    h.call(
        "create",
        "room",
        json!({"room_id": "lobby", "audio_codec": "pcmu"}),
    )
    .expect("room");
    assert_eq!(
        h.call("create", "room", json!({"room_id": "lobby"})),
        Err(ErrorCode::RoomAlreadyExists)
    );
    let err = h.session(
        "create",
        json!({"type": "publish", "room_id": "lobby", "offer": {"sdp": av(5000)}}),
    );
    assert_eq!(err, Err(ErrorCode::InvalidParameters));
    let p = id(&h
        .session(
            "create",
            json!({"type": "publish", "room_id": "lobby", "offer": {"sdp": phone(5000)}}),
        )
        .expect("pcmu publisher"));
    h.call("destroy", "room", json!({"room_id": "lobby"}))
        .expect("room destroy");
    assert_eq!(h.destroyed_reason(&p).as_deref(), Some("room_destroyed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_timers_are_ignored_and_current_ones_destroy() {
    let mut h = Harness::new();
    let m = id(&h
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "offer": {"sdp": phone(5000)}}),
        )
        .expect("master"));
    h.m.timer(Timer::Wait {
        session: m.clone(),
        generation: 7,
    });
    assert!(h.m.sessions.contains_key(&m), "a stale timer does nothing");
    h.m.timer(Timer::Wait {
        session: m.clone(),
        generation: 0,
    });
    assert_eq!(h.destroyed_reason(&m).as_deref(), Some("session_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connection_takes_its_sessions_after_grace() {
    let mut h = Harness::new();
    let s = id(&h
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone(5000)}}),
        )
        .expect("echo"));
    let (watch_tx, mut watch) = mpsc::channel(16);
    let watcher = ConnId(2);
    h.m.conns.insert(watcher, super::Conn::new(watch_tx));
    let sub = json!({"class": "core", "subclass": "event", "cmd": "subscribe", "data": {"type": "destroyed"}, "tid": 1});
    let Ok(Frame::Request { request, .. }) = parse_frame(&sub.to_string()) else {
        panic!("subscribe")
    };
    assert!(matches!(h.m.handle(watcher, request), Reply::Done(Ok(_))));
    // Grace is zero in the harness: closing destroys at once.
    h.m.connection_closed(CONN);
    let Ok(Outgoing::Event(e)) = watch.try_recv() else {
        panic!("watcher got no event")
    };
    assert_eq!(
        (e["obj_id"].as_str(), e["body"]["reason"].as_str()),
        (Some(s.as_str()), Some("registered_down"))
    );
}

/// The WebRTC tick visits the sessions with a WebRTC transport and no others: a plain
/// publisher or proxy master never joins the set, a listener and a proxy's WebRTC slave do
/// (whichever flow made them), and a destroyed session leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_webrtc_sessions_are_ticked() {
    let mut h = Harness::new();
    let p = id(&h
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": av(5000)}}),
        )
        .expect("plain publisher"));
    let l = id(&h
        .session("create", json!({"type": "listen", "publisher_id": p}))
        .expect("WebRTC listener"));
    let m = id(&h
        .session(
            "create",
            json!({"type": "proxy", "offer": {"sdp": phone(5100)}}),
        )
        .expect("plain master"));
    let slave = id(&h
        .session("get_proxy_offer", json!({"session_id": m}))
        .expect("WebRTC slave"));
    let ticked = |h: &Harness| h.m.webrtc_sessions.iter().cloned().collect::<Vec<_>>();
    let mut want = vec![l.clone(), slave.clone()];
    want.sort();
    assert_eq!(ticked(&h), want);
    h.m.webrtc_tick();
    assert_eq!(ticked(&h), want, "a tick keeps live transports");
    h.session("destroy", json!({"session_id": l}))
        .expect("destroy the listener");
    assert_eq!(ticked(&h), vec![slave]);
    h.m.webrtc_tick();
}

/// Keys the data plane refuses fail the session's WebRTC transport as a failed handshake
/// does: `status {class:"webrtc", status:"failed", reason}`, and `get_info` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_srtp_keys_fail_the_webrtc_transport() {
    use sluice_dataplane::api::Event;
    use sluice_dataplane::srtp::SrtpError;
    let mut h = Harness::new();
    let p = id(&h
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": av(5000)}}),
        )
        .expect("plain publisher"));
    let l = id(&h
        .session("create", json!({"type": "listen", "publisher_id": p}))
        .expect("WebRTC listener"));
    h.events();
    let leg = h.m.sessions[&l].legs[0].info.id;
    h.m.dataplane_event(Event::SrtpRefused {
        leg,
        error: SrtpError::ProfileMismatch,
    });
    let failed: Vec<Value> = h
        .events()
        .into_iter()
        .filter(|(o, t, b)| l == o.as_str() && t == "status" && b["class"] == "webrtc")
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["status"], "failed");
    let reason = failed[0]["reason"].as_str().expect("a reason");
    assert!(reason.contains("SRTP keys refused"), "{reason}");
    let info = h
        .session("get_info", json!({"session_id": l}))
        .expect("info");
    assert_eq!(info["webrtc"]["state"], "failed", "{info}");
}

/// The actor never waits on the data plane: with the worker stalled, a `destroy` is
/// pending (its ports are not free yet) while other requests are answered at once; when
/// the worker comes back its `LegClosed` finishes the reply, and the ports are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_waits_for_its_ports_without_holding_up_the_actor() {
    let mut h = Harness::new();
    let a = id(&h
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone(5000)}}),
        )
        .expect("echo a"));
    let b = id(&h
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone(5100)}}),
        )
        .expect("echo b"));
    let port_of = |h: &Harness, id: &SessionId| h.m.sessions[id].legs[0].info.rtp_port;
    let a_port = port_of(&h, &a);
    let stall = h.dp.stall_worker(0).expect("worker runs");
    let destroy = json!({"class": "media", "subclass": "session", "cmd": "destroy",
        "data": {"session_id": a}, "tid": 1});
    let Ok(Frame::Request { request, .. }) = parse_frame(&destroy.to_string()) else {
        panic!("destroy")
    };
    let Reply::Wait(mut pending) = h.m.handle(CONN, request) else {
        panic!("destroy answers once the ports are free")
    };
    // Meanwhile: answered at once, by the actor alone.
    assert!(h.session("get_info", json!({"session_id": b})).is_ok());
    assert!(h.call("get_list", "session", json!({})).is_ok());
    assert!(
        h.session("update_media", json!({"session_id": b, "mute_audio": true}))
            .is_ok()
    );
    assert!(matches!(
        pending.try_recv(),
        Err(oneshot::error::TryRecvError::Empty)
    ));
    assert_eq!(h.m.closings.pending(), 1);
    drop(stall);
    assert!(h.finish(pending).is_ok());
    assert_eq!(h.m.closings.pending(), 0);
    // The promise kept: a's port pair is back in the pool (and the pool hands out the
    // longest free first, so take them all until a's comes back).
    let mut ports = Vec::new();
    for i in 0..49 {
        match h.session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone(6000 + 2 * i)}}),
        ) {
            Ok(r) => ports.push(port_of(&h, &id(&r))),
            Err(_) => break,
        }
    }
    assert!(ports.contains(&a_port), "{a_port} not reused: {ports:?}");
}

/// Session timeouts are deadlines the actor owns: nothing fires before its time, and
/// firing the timers at a simulated instant destroys what expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_timeout_is_a_deadline_the_actor_owns() {
    let mut h = Harness::new();
    let m = id(&h
        .session(
            "create",
            json!({"type": "proxy", "sdp_type": "rtp", "wait_timeout": 30,
                "offer": {"sdp": phone(5000)}}),
        )
        .expect("master"));
    let now = std::time::Instant::now();
    h.m.fire_timers(now + Duration::from_secs(29));
    assert!(h.m.sessions.contains_key(&m), "not yet");
    h.m.fire_timers(now + Duration::from_secs(31));
    assert_eq!(h.destroyed_reason(&m).as_deref(), Some("session_timeout"));
}
