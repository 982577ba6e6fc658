//! Operations end to end: `/metrics` read by a real Prometheus text parser, `/health` and
//! `/ready`, the API secret on `/metrics`, and admission (`--max-sessions`) allocating nothing
//! when it refuses. (Draining with a real child process and signals: control/tests/drain.rs.)

use std::net::UdpSocket;

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;
use sluice_dataplane::api::IoMode;
use sluice_tests::*;

/// `GET /metrics` (with `Bearer token` when given), parsed.
fn scrape(server: &Server, token: Option<&str>) -> Scrape {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let r = http_get(server.api, "/metrics", &headers);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(r.body).expect("UTF-8 exposition");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// The value of the one sample of `metric` with exactly these labels.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
            ref other => panic!("{metric}: unexpected {other:?}"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    found[0]
}

fn is_counter(s: &Scrape, metric: &str) -> bool {
    s.samples
        .iter()
        .any(|x| x.metric == metric && matches!(x.value, Sample::Counter(_)))
}

const CREATE: &str = "media/session/create";

fn metrics_follow_sessions_traffic_and_drops(server: &Server) {
    let before = scrape(server, None);
    for family in [
        "sluice_packets_received_total",
        "sluice_packets_sent_total",
        "sluice_bytes_received_total",
        "sluice_bytes_sent_total",
        "sluice_packets_dropped_total",
        "sluice_api_requests_total",
    ] {
        assert!(is_counter(&before, family), "{family} is a counter");
    }
    for family in [
        "sluice_sessions",
        "sluice_rooms",
        "sluice_recordings_active",
    ] {
        assert!(
            before.samples.iter().any(|x| x.metric == family),
            "{family} present"
        );
    }
    for t in ["echo", "proxy", "publish", "listen"] {
        assert_eq!(value(&before, "sluice_sessions", &[("type", t)]), 0.0);
    }
    // The harness runs two workers: each has its busy share, a ratio.
    for w in ["0", "1"] {
        let busy = value(&before, "sluice_worker_busy_ratio", &[("worker", w)]);
        assert!((0.0..=1.0).contains(&busy), "worker {w} busy {busy}");
    }
    assert_eq!(value(&before, "sluice_packets_received_total", &[]), 0.0);

    let mut c = server.client();
    let peer = Peer::new();
    let (id, to) = echo_session(&mut c, &phone_sdp(peer.port()));
    let e = c
        .session("create", json!({"type": "nope"}))
        .expect_err("bad type");
    assert_eq!(e.code, 100041);
    let master = c
        .session(
            "create",
            json!({"type": "proxy", "offer": {"sdp": phone_sdp(Peer::new().port()), "sdp_type": "rtp"}}),
        )
        .expect("proxy master");
    c.room("create", json!({"room_id": "ops-room"}))
        .expect("room");

    let sent = blast(&peer, to, 0, 7, 100, 20);
    assert_eq!(peer.recv_n(20), sent);
    let bytes: usize = sent.iter().map(|p| p.to_bytes().len()).sum();
    // Garbage: a byte outside every RFC 7983 range, STUN on a plain leg, a cut RTP header.
    peer.send(to, &[0xff; 20]);
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[7; 12]);
    peer.send(to, &stun);
    peer.send(to, &[0x80, 0x00, 0x01]);
    c.info_until(&id, |i| i["media"][0]["drops_total"] == 3);

    let during = scrape(server, None);
    assert_eq!(value(&during, "sluice_sessions", &[("type", "echo")]), 1.0);
    assert_eq!(value(&during, "sluice_sessions", &[("type", "proxy")]), 1.0);
    assert_eq!(value(&during, "sluice_rooms", &[]), 1.0);
    assert_eq!(value(&during, "sluice_packets_received_total", &[]), 20.0);
    assert_eq!(value(&during, "sluice_packets_sent_total", &[]), 20.0);
    assert_eq!(
        value(&during, "sluice_bytes_received_total", &[]),
        bytes as f64
    );
    assert_eq!(value(&during, "sluice_bytes_sent_total", &[]), bytes as f64);
    for reason in ["unclassified", "stun", "malformed"] {
        assert_eq!(
            value(
                &during,
                "sluice_packets_dropped_total",
                &[("reason", reason)]
            ),
            1.0,
            "{reason}"
        );
    }
    assert_eq!(
        value(
            &during,
            "sluice_packets_dropped_total",
            &[("reason", "muted")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &during,
            "sluice_api_requests_total",
            &[("cmd", CREATE), ("result", "ok")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &during,
            "sluice_api_requests_total",
            &[("cmd", CREATE), ("result", "error")]
        ),
        1.0
    );

    // Closed legs keep what they counted: counters never go down.
    c.session("destroy", json!({"session_id": id}))
        .expect("destroy");
    c.session("destroy", json!({"session_id": master["session_id"]}))
        .expect("destroy master");
    let after = scrape(server, None);
    assert_eq!(value(&after, "sluice_sessions", &[("type", "echo")]), 0.0);
    assert_eq!(value(&after, "sluice_media_legs", &[]), 0.0);
    assert_eq!(value(&after, "sluice_packets_received_total", &[]), 20.0);
    assert_eq!(value(&after, "sluice_bytes_sent_total", &[]), bytes as f64);
    assert_eq!(
        value(
            &after,
            "sluice_packets_dropped_total",
            &[("reason", "stun")]
        ),
        1.0
    );
}
both_backends!(metrics_follow_sessions_traffic_and_drops);

#[test]
fn metrics_need_the_secret_health_and_ready_never_do() {
    let Some(server) = Server::start_with(IoMode::Mmsg, |c| c.api_secret = Some("s3".into()))
    else {
        return;
    };
    for headers in [vec![], vec![("Authorization", "Bearer nope")]] {
        let r = http_get(server.api, "/metrics", &headers);
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let s = scrape(&server, Some("s3"));
    assert_eq!(value(&s, "sluice_draining", &[]), 0.0);
    assert_eq!(http_get(server.api, "/health", &[]).status, 200);
    assert_eq!(http_get(server.api, "/ready", &[]).status, 200);
}

/// UDP ports of `range` that something holds (cannot be bound).
fn ports_held(range: (u16, u16)) -> usize {
    (range.0..=range.1)
        .filter(|&p| UdpSocket::bind(("127.0.0.1", p)).is_err())
        .count()
}

fn max_sessions_refuses_and_allocates_nothing(io: IoMode) {
    let Some(server) = Server::start_with(io, |c| c.max_sessions = 3) else {
        return;
    };
    let mut c = server.client();
    let peers: Vec<Peer> = (0..3).map(|_| Peer::new()).collect();
    let ids: Vec<String> = peers
        .iter()
        .map(|p| echo_session(&mut c, &phone_sdp(p.port())).0)
        .collect();
    let held = ports_held(server.rtp_ports);
    assert!(held >= 3, "three legs hold ports ({held})");
    let legs = value(&scrape(&server, None), "sluice_media_legs", &[]);

    let extra = Peer::new();
    let offer = json!({"sdp": phone_sdp(extra.port()), "sdp_type": "rtp"});
    let e = c
        .session("create", json!({"type": "echo", "offer": offer}))
        .expect_err("a 4th session");
    assert_eq!(e.code, 300001);
    assert!(
        e.error.starts_with("no_mediaserver: session limit reached"),
        "{}",
        e.error
    );
    // A publisher that would make its room is refused before the room exists.
    let e = c
        .session(
            "create",
            json!({"type": "publish", "offer": offer, "room_audio_codec": "pcmu"}),
        )
        .expect_err("a 4th session");
    assert_eq!(e.code, 300001);
    assert_eq!(ports_held(server.rtp_ports), held, "no port taken");
    let s = scrape(&server, None);
    assert_eq!(value(&s, "sluice_media_legs", &[]), legs, "no leg opened");
    assert_eq!(value(&s, "sluice_rooms", &[]), 0.0, "no room made");
    assert_eq!(value(&s, "sluice_sessions", &[("type", "echo")]), 3.0);
    let list = c.session("get_list", json!({})).expect("get_list");
    assert_eq!(list.as_array().map(Vec::len), Some(3));

    c.session("destroy", json!({"session_id": ids[0]}))
        .expect("destroy");
    let (id, to) = echo_session(&mut c, &phone_sdp(extra.port()));
    let sent = blast(&extra, to, 0, 9, 1, 5);
    assert_eq!(extra.recv_n(5), sent, "the new session carries media");
    assert!(!id.is_empty());
}

#[test]
fn max_sessions_mmsg() {
    max_sessions_refuses_and_allocates_nothing(IoMode::Mmsg);
}

#[test]
fn max_sessions_uring() {
    max_sessions_refuses_and_allocates_nothing(IoMode::Uring);
}
