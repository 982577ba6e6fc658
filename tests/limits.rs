//! The doors of the API, with a real WebSocket client: failed logins, oversized frames,
//! connections that never log in, the per-connection request rate, and (`--max-bitrate`)
//! admission by estimated ingress.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_dataplane::api::IoMode;
use sluice_tests::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// What the server sent next.
#[derive(Debug, PartialEq)]
enum Got {
    Json(Value),
    /// A close frame, with its code.
    Closed(Option<u16>),
}

/// A bare WebSocket client that reports close frames (the harness's `Client` panics on them).
struct Raw {
    ws: WebSocket<TcpStream>,
}

impl Raw {
    fn connect(api: SocketAddr) -> Raw {
        let stream = TcpStream::connect(api).expect("connect to the API port");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let (ws, _) =
            tungstenite::client(format!("ws://{api}/api/ws"), stream).expect("WebSocket handshake");
        Raw { ws }
    }

    fn send(&mut self, v: &Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    fn next(&mut self) -> Got {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Got::Json(serde_json::from_str(t.as_str()).expect("JSON"));
                }
                Ok(Message::Close(c)) => return Got::Closed(c.map(|c| u16::from(c.code))),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) => panic!("read within the deadline: {e}"),
            }
        }
    }

    /// The reply to a request (events are skipped).
    fn call(&mut self, cmd: (&str, &str, &str), data: Value, tid: u64) -> Value {
        self.send(
            &json!({"class": cmd.0, "subclass": cmd.1, "cmd": cmd.2, "data": data, "tid": tid}),
        );
        loop {
            match self.next() {
                Got::Json(v) if v["tid"] == json!(tid) && v.get("result").is_some() => return v,
                Got::Json(_) => continue,
                Got::Closed(c) => panic!("closed ({c:?}) before the reply to {tid}"),
            }
        }
    }

    /// After the server's close frame: the client answers it and the server ends the TCP
    /// connection.
    fn finish_close(mut self) {
        loop {
            match self.ws.read() {
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => return,
                Err(e) => panic!("a clean close: {e}"),
            }
        }
    }
}

const LOGIN: (&str, &str, &str) = ("core", "user", "login");
const GET_LIST: (&str, &str, &str) = ("media", "session", "get_list");

fn code_of(reply: &Value) -> i64 {
    reply["data"]["code"].as_i64().unwrap_or(0)
}

#[test]
fn repeated_failed_logins_close_the_connection() {
    let server = Server::start_with(IoMode::Mmsg, |c| {
        c.api_secret = Some("s3".into());
        c.max_login_failures = 3;
    })
    .expect("server");

    // Two failures, then a success: the count starts again.
    let mut ok = Raw::connect(server.api);
    for tid in 1..=2 {
        let r = ok.call(LOGIN, json!({"user": "u", "password": "nope"}), tid);
        assert_eq!(code_of(&r), 100030);
    }
    let r = ok.call(LOGIN, json!({"user": "u", "password": "s3"}), 3);
    assert_eq!(r["result"], "ok");
    for tid in 4..=5 {
        let r = ok.call(LOGIN, json!({"user": "u", "password": "s33"}), tid);
        assert_eq!(code_of(&r), 100030);
    }
    let r = ok.call(GET_LIST, json!({}), 6);
    assert_eq!(r["result"], "ok", "still open and logged in: {r}");

    // Three in a row: the third gets its reply, then the close.
    let mut bad = Raw::connect(server.api);
    for tid in 1..=3 {
        let r = bad.call(
            LOGIN,
            json!({"user": "u", "password": format!("guess{tid}")}),
            tid,
        );
        assert_eq!(code_of(&r), 100030);
    }
    assert_eq!(bad.next(), Got::Closed(Some(1008)));
    bad.finish_close();
    let auth = [("Authorization", "Bearer s3")];
    assert_eq!(limited(&server, "login_failures", &auth), 1.0);

    let r = ok.call(GET_LIST, json!({}), 7);
    assert_eq!(r["result"], "ok", "other connections are unaffected");
}

#[test]
fn an_oversized_frame_is_answered_then_closed_with_1009() {
    let server = Server::start_with(IoMode::Mmsg, |c| c.max_frame_bytes = 1024).expect("server");
    let mut c = Raw::connect(server.api);
    // Within the limit: served.
    let r = c.call(GET_LIST, json!({"pad": "x".repeat(900)}), 1);
    assert_eq!(r["result"], "ok", "{r}");

    c.send(
        &json!({"class": "media", "subclass": "session", "cmd": "get_list", "tid": 2,
                   "data": {"pad": "x".repeat(4000)}}),
    );
    let Got::Json(r) = c.next() else {
        panic!("an error reply comes before the close");
    };
    assert_eq!(r["tid"], 2);
    assert_eq!(code_of(&r), 100041);
    let text = r["data"]["error"].as_str().unwrap_or_default();
    assert!(text.contains("--max-frame-bytes"), "{text}");
    assert_eq!(c.next(), Got::Closed(Some(u16::from(CloseCode::Size))));
    c.finish_close();
    assert_eq!(limited(&server, "frame_too_large", &[]), 1.0);

    let mut fresh = Raw::connect(server.api);
    assert_eq!(fresh.call(GET_LIST, json!({}), 1)["result"], "ok");
}

#[test]
fn a_connection_that_never_logs_in_is_closed() {
    let server = Server::start_with(IoMode::Mmsg, |c| {
        c.api_secret = Some("s3".into());
        c.login_timeout = Duration::from_millis(300);
    })
    .expect("server");
    // `early` logs in, then `idle` connects: its deadline is the later one, so once `idle`
    // has been closed, `early`'s deadline has passed too.
    let mut early = Raw::connect(server.api);
    let r = early.call(LOGIN, json!({"user": "u", "password": "s3"}), 1);
    assert_eq!(r["result"], "ok");
    let mut idle = Raw::connect(server.api);
    assert_eq!(idle.next(), Got::Closed(Some(1008)));
    idle.finish_close();
    let auth = [("Authorization", "Bearer s3")];
    assert_eq!(limited(&server, "login_timeout", &auth), 1.0);
    let r = early.call(GET_LIST, json!({}), 2);
    assert_eq!(r["result"], "ok", "a logged-in connection stays: {r}");
}

#[test]
fn requests_beyond_the_rate_are_refused_and_reach_nothing() {
    let server = Server::start_with(IoMode::Mmsg, |c| {
        c.api_rate = 0.001;
        c.api_burst = 3;
    })
    .expect("server");
    let mut c = server.client();
    let peer = Peer::new();
    // Three requests (the `created` event the client acks costs nothing).
    let (id, _) = echo_session(&mut c, &phone_sdp(peer.port()));
    c.session("get_list", json!({})).expect("2nd");
    c.info(&id);
    let extra = Peer::new();
    let e = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": phone_sdp(extra.port()), "sdp_type": "rtp"}}),
        )
        .expect_err("the 4th request");
    assert_eq!(e.code, 100429, "{e:?}");
    assert!(e.error.starts_with("too_many_requests"), "{}", e.error);
    // The connection stays open (and still limited); another has its own budget.
    let e = c.session("get_list", json!({})).expect_err("still limited");
    assert_eq!(e.code, 100429);
    let mut other = server.client();
    let list = other.session("get_list", json!({})).expect("own budget");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the refused create made nothing"
    );
    assert_eq!(limited(&server, "rate_limited", &[]), 2.0);
}

/// `GET /metrics`, the value of one series (`name` or `name{labels}`, as exported).
fn gauge(server: &Server, metric: &str) -> f64 {
    scraped(server, metric, &[])
}

fn limited(server: &Server, reason: &str, headers: &[(&str, &str)]) -> f64 {
    let series = format!("sluice_api_limited_total{{reason=\"{reason}\"}}");
    scraped(server, &series, headers)
}

fn scraped(server: &Server, metric: &str, headers: &[(&str, &str)]) -> f64 {
    let r = http_get(server.api, "/metrics", headers);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("UTF-8");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(metric)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{metric} in {text}"))
}

#[test]
fn max_bitrate_refuses_what_would_exceed_it_and_allocates_nothing() {
    // Room for three uncapped audio sessions (64 kbit/s each), not four.
    let server = Server::start_with(IoMode::Mmsg, |c| c.max_bitrate = 200_000).expect("server");
    let mut c = server.client();
    let peers: Vec<Peer> = (0..3).map(|_| Peer::new()).collect();
    let ids: Vec<String> = peers
        .iter()
        .map(|p| echo_session(&mut c, &phone_sdp(p.port())).0)
        .collect();
    assert_eq!(
        gauge(&server, "sluice_ingress_estimate_bits_per_second"),
        192_000.0
    );
    let legs = gauge(&server, "sluice_media_legs");

    let extra = Peer::new();
    let offer = json!({"sdp": phone_sdp(extra.port()), "sdp_type": "rtp"});
    let e = c
        .session("create", json!({"type": "echo", "offer": offer}))
        .expect_err("a 4th uncapped session");
    assert_eq!(e.code, 300001);
    assert!(
        e.error.starts_with("no_mediaserver: bitrate limit reached"),
        "{}",
        e.error
    );
    assert!(e.error.contains("--max-bitrate"), "{}", e.error);
    // A publisher (audio + video: 2.064 Mbit/s) that would make its room: no room either.
    let (a, v) = (Peer::new(), Peer::new());
    let e = c
        .session(
            "create",
            json!({"type": "publish", "room_audio_codec": "opus",
                   "offer": {"sdp": av_sdp(a.port(), v.port()), "sdp_type": "rtp"}}),
        )
        .expect_err("a publisher over the limit");
    assert_eq!(e.code, 300001);
    assert_eq!(gauge(&server, "sluice_media_legs"), legs, "no leg opened");
    assert_eq!(gauge(&server, "sluice_rooms"), 0.0, "no room made");
    let list = c.session("get_list", json!({})).expect("get_list");
    assert_eq!(list.as_array().map(Vec::len), Some(3));

    // A session capped low enough fits: its cap is what it counts.
    let r = c
        .session(
            "create",
            json!({"type": "echo", "offer": offer, "bitrate": 8000}),
        )
        .expect("a capped session fits");
    assert_eq!(
        gauge(&server, "sluice_ingress_estimate_bits_per_second"),
        200_000.0
    );
    c.session("destroy", json!({"session_id": r["session_id"]}))
        .expect("destroy");
    // After a destroy, an uncapped one fits again and carries media.
    c.session("destroy", json!({"session_id": ids[0]}))
        .expect("destroy");
    let (_, to) = echo_session(&mut c, &phone_sdp(extra.port()));
    let sent = blast(&extra, to, 0, 9, 1, 5);
    assert_eq!(extra.recv_n(5), sent);
}
