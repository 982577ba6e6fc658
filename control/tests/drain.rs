//! Graceful drain of a real `sluice` process: SIGTERM with `--drain-timeout`, the timeout
//! path, a second signal, and the `media/node/drain` command behind the API secret.
//!
//! Each test starts its own child process (the binary cargo built for this package), reads
//! its ready line for the API address, drives it over a WebSocket and plain-RTP sockets, and
//! waits, always within a bound, for it to exit. Nothing sleeps to synchronise: `/ready` is
//! polled until it answers 503, events and exits are waited for with deadlines.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// Upper bound of any wait.
const WAIT: Duration = Duration::from_secs(20);

static NEXT_RANGE: AtomicU16 = AtomicU16::new(0);

/// A running `sluice` child, killed if the test ends before it exits.
struct Sluice {
    pid: u32,
    api: SocketAddr,
    exited: mpsc::Receiver<ExitStatus>,
    log: PathBuf,
    done: bool,
}

impl Sluice {
    fn start(args: &[&str]) -> Sluice {
        let n = NEXT_RANGE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sluice-drain-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("stderr.log");
        let lo = 31500 + n * 100;
        let ports = format!("{lo}-{}", lo + 99);
        let mut child: Child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--api", "127.0.0.1:0", "--media-ip", "127.0.0.1"])
            .args(["--rtp-ports", &ports, "--workers", "1", "--io", "mmsg"])
            .args(["--steer", "off", "--raw-send", "off"])
            .arg("--record-dir")
            .arg(dir.join("rec"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start sluice");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the ready line");
        let api = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api=ws://"))
            .and_then(|a| a.strip_suffix("/api/ws"))
            .unwrap_or_else(|| panic!("no ready line ({line:?}); see {}", log.display()))
            .parse()
            .expect("API address");
        let pid = child.id();
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(status);
            }
        });
        Sluice {
            pid,
            api,
            exited,
            log,
            done: false,
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} {}", self.pid);
    }

    /// Waits (bounded) for the process to exit; asserts it exited 0.
    fn exits_cleanly(&mut self) {
        let status = self
            .exited
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("sluice did not exit in time; see {}", self.log.display()));
        self.done = true;
        assert!(status.success(), "{status}; see {}", self.log.display());
    }

    fn http_status(&self, path: &str) -> u16 {
        let mut s = TcpStream::connect(self.api).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.api
        )
        .expect("send");
        // Read until the server closes; a reset after the response (a server in shutdown
        // may close before reading our FIN) still leaves the status line read.
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) if !bytes.is_empty() => break,
                Err(e) => panic!("no response to GET {path}: {e}"),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad response {text:?}"))
    }

    /// Polls `/ready` until it answers `status` (a bounded number of requests).
    fn ready_becomes(&self, status: u16) {
        let deadline = Instant::now() + WAIT;
        while self.http_status("/ready") != status {
            assert!(Instant::now() < deadline, "/ready never answered {status}");
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if !self.done {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
    }
}

/// A WebSocket API client keeping events aside.
struct Client {
    ws: WebSocket<TcpStream>,
    tid: u64,
    events: Vec<Value>,
}

impl Client {
    fn connect(api: SocketAddr) -> Client {
        let stream = TcpStream::connect(api).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let (ws, _) = tungstenite::client(format!("ws://{api}/api/ws"), stream).expect("upgrade");
        Client {
            ws,
            tid: 0,
            events: Vec::new(),
        }
    }

    fn frame(&mut self) -> Value {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).expect("JSON"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) => panic!("read a frame: {e}"),
            }
        }
    }

    /// Sends a request; its reply's `Ok(data)` or `Err(code)`.
    fn call(&mut self, class: &str, subclass: &str, cmd: &str, data: Value) -> Result<Value, i64> {
        self.tid += 1;
        let req = json!({"class": class, "subclass": subclass, "cmd": cmd, "data": data,
            "tid": self.tid});
        self.ws.send(Message::text(req.to_string())).expect("send");
        loop {
            let f = self.frame();
            if f["cmd"] == "event" {
                self.events.push(f["data"].clone());
            } else if f["tid"] == json!(self.tid) && f.get("result").is_some() {
                return match f["result"].as_str() {
                    Some("ok") => Ok(f["data"].clone()),
                    _ => Err(f["data"]["code"].as_i64().unwrap_or(-1)),
                };
            }
        }
    }

    fn session(&mut self, cmd: &str, data: Value) -> Result<Value, i64> {
        self.call("media", "session", cmd, data)
    }

    /// The `destroyed` event of `id` (bounded by the socket's read timeout).
    fn destroyed(&mut self, id: &str) -> Value {
        loop {
            if let Some(e) = self
                .events
                .iter()
                .find(|e| e["obj_id"] == id && e["type"] == "destroyed")
            {
                return e["body"].clone();
            }
            let f = self.frame();
            if f["cmd"] == "event" {
                self.events.push(f["data"].clone());
            }
        }
    }
}

/// An echo `create` for a plain-RTP phone (PCMU) at `port`.
fn echo_create(port: u16) -> Value {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    );
    json!({"type": "echo", "offer": {"sdp": sdp, "sdp_type": "rtp"}})
}

/// A plain-RTP phone with an echo session on the server.
struct Echo {
    id: String,
    sock: UdpSocket,
    to: SocketAddr,
    seq: u16,
}

impl Echo {
    fn create(c: &mut Client) -> Echo {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        let port = sock.local_addr().expect("bound").port();
        let r = c.session("create", echo_create(port)).expect("create echo");
        let answer = r["answer"]["sdp"].as_str().expect("answer");
        let port: u16 = answer
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|m| m.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("answer port");
        Echo {
            id: r["session_id"].as_str().expect("id").to_owned(),
            sock,
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            seq: 0,
        }
    }

    /// Sends `n` RTP packets and asserts each comes back intact.
    fn echoes(&mut self, n: usize) {
        let mut buf = [0u8; 1500];
        for _ in 0..n {
            self.seq += 1;
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0, 0, 0, 42];
            p[2..4].copy_from_slice(&self.seq.to_be_bytes());
            p.extend_from_slice(b"drain payload");
            self.sock.send_to(&p, self.to).expect("send RTP");
            let got = loop {
                match self.sock.recv(&mut buf) {
                    Ok(len) => break len,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => panic!("packet {} not echoed: {e}", self.seq),
                }
            };
            assert_eq!(&buf[..got], &p[..], "echoed intact");
        }
    }
}

#[test]
fn sigterm_drains_until_the_last_session_ends() {
    let mut sluice = Sluice::start(&["--drain-timeout", "300"]);
    let mut c = Client::connect(sluice.api);
    let mut echo = Echo::create(&mut c);
    echo.echoes(3);
    assert_eq!(sluice.http_status("/ready"), 200);

    sluice.signal("TERM");
    sluice.ready_becomes(503);
    assert_eq!(sluice.http_status("/health"), 200, "still serving");
    let refused = c.session("create", echo_create(4000));
    assert_eq!(refused, Err(300001), "no new session while draining");
    echo.echoes(5);

    c.session("destroy", json!({"session_id": echo.id}))
        .expect("destroy");
    sluice.exits_cleanly();
}

#[test]
fn drain_timeout_destroys_what_is_left() {
    let mut sluice = Sluice::start(&["--drain-timeout", "0.5"]);
    let mut c = Client::connect(sluice.api);
    let mut echo = Echo::create(&mut c);
    echo.echoes(1);
    sluice.signal("TERM");
    let body = c.destroyed(&echo.id);
    assert_eq!(body["reason"], "process_down");
    sluice.exits_cleanly();
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut sluice = Sluice::start(&["--drain-timeout", "3600"]);
    let mut c = Client::connect(sluice.api);
    let echo = Echo::create(&mut c);
    sluice.signal("TERM");
    sluice.ready_becomes(503);
    sluice.signal("INT");
    let body = c.destroyed(&echo.id);
    assert_eq!(body["reason"], "process_down");
    sluice.exits_cleanly();
}

#[test]
fn drain_command_needs_the_secret_and_ends_with_the_last_session() {
    let mut sluice = Sluice::start(&["--api-secret", "s3"]);
    let mut c = Client::connect(sluice.api);
    assert_eq!(
        c.call("media", "node", "drain", json!({})),
        Err(100031),
        "not logged in"
    );
    c.call(
        "core",
        "user",
        "login",
        json!({"user": "ops", "password": "s3"}),
    )
    .expect("login");
    let mut echo = Echo::create(&mut c);
    let r = c.call("media", "node", "drain", json!({})).expect("drain");
    assert_eq!(r["sessions"], 1);
    assert_eq!(sluice.http_status("/ready"), 503);
    echo.echoes(2);
    let again = c.session("create", echo_create(4000));
    assert_eq!(again, Err(300001));
    c.session("destroy", json!({"session_id": echo.id}))
        .expect("destroy");
    sluice.exits_cleanly();
}
