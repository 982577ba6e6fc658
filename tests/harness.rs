//! Shared harness for the end-to-end scenarios: a real sluice (control + data plane) started
//! in-process on loopback, a real WebSocket client speaking the NkMedia API, and plain-RTP peers
//! on real UDP sockets.
//!
//! Every wait is bounded (socket read timeouts, deadlines); nothing sleeps to synchronise, and
//! nothing asserts an absence by waiting: what did not arrive is read from the server's
//! counters (`get_info`: `tx_packets`, `drops`).

pub mod webrtc_peer;

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_control::{Config, Running};
use sluice_dataplane::api::IoMode;
use tungstenite::{Message, WebSocket};

/// Upper bound for any single wait in a scenario.
pub const WAIT: Duration = Duration::from_secs(10);

/// Port ranges handed to servers of this test process, so parallel tests never collide.
static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

/// A running sluice, stopped when dropped.
pub struct Server {
    running: Option<Running>,
    pub api: SocketAddr,
    pub rtp_ports: (u16, u16),
}

impl Server {
    /// Starts a server on `io`, or returns `None` (after saying why) when the kernel refuses
    /// that backend, as io_uring is refused in many containers.
    pub fn start(io: IoMode) -> Option<Server> {
        Self::start_with(io, |_| {})
    }

    pub fn start_with(io: IoMode, tweak: impl FnOnce(&mut Config)) -> Option<Server> {
        let n = NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
        // Each test binary runs alone; ranges of 200 ports per server within it.
        let lo = 30000 + n * 200;
        let mut config = Config {
            api: "127.0.0.1:0".parse().expect("literal address"),
            rtp_ports: (lo, lo + 199),
            workers: 2,
            io,
            pin_workers: false,
            disconnect_grace: Duration::from_millis(200),
            ..Config::default()
        };
        tweak(&mut config);
        let rtp_ports = config.rtp_ports;
        match sluice_control::spawn(config) {
            Ok(running) => Some(Server {
                api: running.api_addr,
                running: Some(running),
                rtp_ports,
            }),
            Err(e) if io == IoMode::Uring => {
                eprintln!("SKIPPED: io_uring backend unavailable here: {e}");
                None
            }
            Err(e) => panic!("sluice failed to start: {e}"),
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.api)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// Runs `scenario` on the mmsg backend and, where the kernel allows it, on io_uring.
#[macro_export]
macro_rules! both_backends {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn mmsg() {
                if let Some(server) = $crate::Server::start(sluice_dataplane::api::IoMode::Mmsg) {
                    super::$scenario(&server);
                }
            }

            #[test]
            fn uring() {
                if let Some(server) = $crate::Server::start(sluice_dataplane::api::IoMode::Uring) {
                    super::$scenario(&server);
                }
            }
        }
    };
}

/// An API error reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: i64,
    pub error: String,
}

/// A WebSocket API client that keeps server events aside while waiting for replies.
pub struct Client {
    ws: WebSocket<TcpStream>,
    next_tid: u64,
    events: VecDeque<Value>,
}

impl Client {
    pub fn connect(api: SocketAddr) -> Client {
        let stream = TcpStream::connect(api).expect("connect to the API port");
        stream
            .set_read_timeout(Some(WAIT))
            .expect("set read timeout");
        let (ws, _) =
            tungstenite::client(format!("ws://{api}/api/ws"), stream).expect("WebSocket handshake");
        Client {
            ws,
            next_tid: 1,
            events: VecDeque::new(),
        }
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send frame");
    }

    /// Next JSON frame from the server (events included), within `WAIT`.
    pub fn read_frame(&mut self) -> Value {
        loop {
            let msg = match self.ws.read() {
                Ok(msg) => msg,
                // A read with a timeout reports EINTR instead of restarting; the WebSocket
                // state survives it.
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) => panic!("read a frame within the deadline: {e}"),
            };
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(t.as_str()).expect("server sent JSON");
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(_) => panic!("server sent a binary frame"),
                Message::Close(c) => panic!("server closed the connection: {c:?}"),
            }
        }
    }

    /// Reads until the reply for `tid` arrives, answering server events on the way.
    pub fn reply_for(&mut self, tid: &Value) -> Result<Value, ApiError> {
        loop {
            let frame = self.read_frame();
            if frame.get("cmd").and_then(Value::as_str) == Some("event") {
                let ack = json!({"result": "ok", "tid": frame["tid"].clone()});
                self.send_text(&ack.to_string());
                self.events.push_back(frame["data"].clone());
                continue;
            }
            if frame.get("ack").is_some() {
                continue;
            }
            if &frame["tid"] != tid {
                continue;
            }
            return match frame["result"].as_str() {
                Some("ok") => Ok(frame.get("data").cloned().unwrap_or(Value::Null)),
                Some("error") => Err(ApiError {
                    code: frame["data"]["code"].as_i64().unwrap_or(-1),
                    error: frame["data"]["error"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                }),
                _ => panic!("reply without result: {frame}"),
            };
        }
    }

    pub fn request(
        &mut self,
        class: &str,
        subclass: &str,
        cmd: &str,
        data: Value,
    ) -> Result<Value, ApiError> {
        let tid = json!(self.next_tid);
        self.next_tid += 1;
        let req =
            json!({"class": class, "subclass": subclass, "cmd": cmd, "data": data, "tid": tid});
        self.send_text(&req.to_string());
        self.reply_for(&tid)
    }

    /// A `media/session` command.
    pub fn session(&mut self, cmd: &str, data: Value) -> Result<Value, ApiError> {
        self.request("media", "session", cmd, data)
    }

    pub fn room(&mut self, cmd: &str, data: Value) -> Result<Value, ApiError> {
        self.request("media", "room", cmd, data)
    }

    /// Waits for a session event of `kind` about `obj_id`; other events are kept.
    pub fn wait_event(&mut self, obj_id: &str, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e["obj_id"] == obj_id && e["type"] == kind)
            {
                return self.events.remove(i).expect("index just found");
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} event for {obj_id}; have {:?}",
                self.events
            );
            let frame = self.read_frame();
            if frame.get("cmd").and_then(Value::as_str) == Some("event") {
                let ack = json!({"result": "ok", "tid": frame["tid"].clone()});
                self.send_text(&ack.to_string());
                self.events.push_back(frame["data"].clone());
            }
        }
    }

    /// `get_info` of a session, panicking on error.
    pub fn info(&mut self, session_id: &str) -> Value {
        self.session("get_info", json!({"session_id": session_id}))
            .expect("get_info")
    }

    /// Polls `get_info` (a bounded number of times) until `done` holds for it; returns it.
    /// Counters are updated by the data plane concurrently with the API, so a scenario that
    /// counts datagrams on two sockets waits for the count rather than assuming an order.
    pub fn info_until(&mut self, session_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut info = self.info(session_id);
        for _ in 0..1000 {
            if done(&info) {
                return info;
            }
            info = self.info(session_id);
        }
        panic!("condition never held; last get_info: {info}");
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// A plain-RTP endpoint (a SIP phone stand-in): an RTP socket and the RTCP socket above it.
pub struct Peer {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

impl Default for Peer {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer {
    pub fn new() -> Peer {
        // Find an even/odd pair the OS lets us have.
        for _ in 0..200 {
            let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
            let port = rtp.local_addr().expect("bound").port();
            if !port.is_multiple_of(2) || port == u16::MAX {
                continue;
            }
            if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
                rtp.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                rtcp.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                return Peer { rtp, rtcp };
            }
        }
        panic!("no free even/odd UDP port pair on loopback");
    }

    pub fn port(&self) -> u16 {
        self.rtp.local_addr().expect("bound").port()
    }

    pub fn send(&self, to: SocketAddr, packet: &[u8]) {
        self.rtp.send_to(packet, to).expect("send RTP");
    }

    /// Next datagram on the RTP socket, or `None` when nothing comes within the read timeout.
    pub fn recv(&self) -> Option<(Vec<u8>, SocketAddr)> {
        let mut buf = [0u8; 2048];
        loop {
            match self.rtp.recv_from(&mut buf) {
                Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
                // A read with a timeout reports EINTR instead of restarting: retry.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Receives exactly `n` RTP packets (panics if they do not all arrive).
    pub fn recv_n(&self, n: usize) -> Vec<Rtp> {
        (0..n)
            .map(|i| {
                let (data, _) = self
                    .recv()
                    .unwrap_or_else(|| panic!("packet {i} of {n} did not arrive"));
                Rtp::parse(&data).expect("an RTP packet")
            })
            .collect()
    }
}

/// A parsed RTP packet (RFC 3550 §5.1 fixed header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtp {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

impl Rtp {
    pub fn new(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Rtp {
        Rtp {
            marker: false,
            pt,
            seq,
            ts,
            ssrc,
            payload: payload.to_vec(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut p = vec![0x80, (u8::from(self.marker) << 7) | self.pt];
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(&self.payload);
        p
    }

    pub fn parse(p: &[u8]) -> Option<Rtp> {
        if p.len() < 12 || p[0] >> 6 != 2 {
            return None;
        }
        Some(Rtp {
            marker: p[1] & 0x80 != 0,
            pt: p[1] & 0x7f,
            seq: u16::from_be_bytes([p[2], p[3]]),
            ts: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload: p[12..].to_vec(),
        })
    }
}

/// A SIP-phone-like plain RTP offer/answer: `media` lists (kind, format line, attribute lines).
pub fn plain_sdp(port_of: &[(&str, u16, &str, &[&str])]) -> String {
    let mut s = String::from(
        "v=0\r\no=phone 1234 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
    );
    for (kind, port, formats, attrs) in port_of {
        s.push_str(&format!("m={kind} {port} RTP/AVP {formats}\r\n"));
        for a in *attrs {
            s.push_str(&format!("a={a}\r\n"));
        }
    }
    s
}

/// Plain audio SDP offering PCMU and telephone-event 101, like a desk phone.
pub fn phone_sdp(port: u16) -> String {
    plain_sdp(&[(
        "audio",
        port,
        "0 101",
        &[
            "rtpmap:0 PCMU/8000",
            "rtpmap:101 telephone-event/8000",
            "fmtp:101 0-15",
            "sendrecv",
        ],
    )])
}

/// Plain SDP with opus audio and VP8 video, as a publisher in a room would send.
pub fn av_sdp(audio_port: u16, video_port: u16) -> String {
    plain_sdp(&[
        (
            "audio",
            audio_port,
            "111",
            &["rtpmap:111 opus/48000/2", "sendrecv"],
        ),
        (
            "video",
            video_port,
            "96",
            &["rtpmap:96 VP8/90000", "sendrecv"],
        ),
    ])
}

/// Media sections of an SDP: (kind, port, first payload type), plus the session address.
pub fn media_of(sdp: &str) -> Vec<(String, u16, u8)> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("m="))
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().expect("m= port"),
                f.get(3).and_then(|p| p.parse().ok()).unwrap_or(0),
            )
        })
        .collect()
}

/// The connection address of an SDP (first `c=` line).
pub fn addr_of(sdp: &str, port: u16) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim();
    format!("{ip}:{port}").parse().expect("address in SDP")
}

/// Where to send to reach the server for media section `index` of its SDP.
pub fn server_addr(sdp: &str, index: usize) -> SocketAddr {
    let media = media_of(sdp);
    addr_of(sdp, media[index].1)
}

/// A session's `answer.sdp` / `offer.sdp` from a reply or event body.
pub fn sdp_in(v: &Value, key: &str) -> String {
    v[key]["sdp"]
        .as_str()
        .unwrap_or_else(|| panic!("no {key}.sdp in {v}"))
        .to_string()
}

pub fn str_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_string()
}

/// Sends `count` packets from `peer` to `to` and returns them as sent.
pub fn blast(peer: &Peer, to: SocketAddr, pt: u8, ssrc: u32, seq0: u16, count: u16) -> Vec<Rtp> {
    (0..count)
        .map(|i| {
            let seq = seq0.wrapping_add(i);
            let payload = format!("pkt-{ssrc}-{seq}").into_bytes();
            let p = Rtp::new(pt, seq, u32::from(seq) * 160, ssrc, &payload);
            peer.send(to, &p.to_bytes());
            p
        })
        .collect()
}

/// Asserts sequence numbers increase by exactly one.
pub fn assert_contiguous(packets: &[Rtp]) {
    for w in packets.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "sequence gap between {:?} and {:?}",
            w[0],
            w[1]
        );
    }
}

/// A fresh, empty folder under the system temp dir, unique to this process and call.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// An HTTP/1.1 response as read by [`http_get`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// `GET path` over a plain TCP connection (`Connection: close`), with extra headers.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).expect("connect to the API port");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

/// A server on `io` writing recordings into `dir`.
pub fn recording_server(io: IoMode, dir: &std::path::Path) -> Option<Server> {
    let dir = dir.to_owned();
    Server::start_with(io, move |c| c.record_dir = dir)
}

/// `recorder_action` on session `id` with `data` (`action`, `uri`).
pub fn recorder_action(c: &mut Client, id: &str, mut data: Value) -> Result<Value, ApiError> {
    data["session_id"] = json!(id);
    c.session("recorder_action", data)
}

/// Creates a plain echo session for `sdp`; returns its id and where to send media.
pub fn echo_session(c: &mut Client, sdp: &str) -> (String, SocketAddr) {
    let r = c
        .session(
            "create",
            json!({"type": "echo", "offer": {"sdp": sdp, "sdp_type": "rtp"}}),
        )
        .expect("create echo");
    (
        str_of(&r, "session_id"),
        server_addr(&sdp_in(&r, "answer"), 0),
    )
}

/// The info header (as JSON) and the frames of an `.mjr` recording.
pub fn read_mjr(path: &std::path::Path) -> (Value, Vec<sluice_dataplane::record::mjr::MjrFrame>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = sluice_dataplane::record::mjr::parse(&bytes).expect("an MJR00002 file");
    let info: Value = serde_json::from_str(&file.info_json).expect("JSON info header");
    (info, file.frames)
}

/// A plain-RTP listener: its session, its audio and video peers, and the server's offer.
pub struct PlainListener {
    pub id: String,
    pub audio: Peer,
    pub video: Peer,
    pub offer: String,
}

/// Creates a `listen` session with `sdp_type:"rtp"` and answers the server's offer with an
/// opus + VP8 `recvonly` answer from two fresh peers.
pub fn listen_plain(c: &mut Client, publisher: &str) -> PlainListener {
    let r = c
        .session(
            "create",
            json!({"type": "listen", "publisher_id": publisher, "sdp_type": "rtp"}),
        )
        .expect("listen");
    let id = str_of(&r, "session_id");
    let offer = sdp_in(&r, "offer");
    let (audio, video) = (Peer::new(), Peer::new());
    let answer = plain_sdp(&[
        (
            "audio",
            audio.port(),
            "111",
            &["rtpmap:111 opus/48000/2", "recvonly"],
        ),
        (
            "video",
            video.port(),
            "96",
            &["rtpmap:96 VP8/90000", "recvonly"],
        ),
    ]);
    c.session(
        "set_answer",
        json!({"session_id": id, "answer": {"sdp": answer, "sdp_type": "rtp"}}),
    )
    .expect("listener set_answer");
    PlainListener {
        id,
        audio,
        video,
        offer,
    }
}
