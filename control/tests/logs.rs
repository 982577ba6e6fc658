//! `--log-format json` on a real `sluice` process: every line on stderr is one JSON object,
//! and a line about a session carries its `session_id` (the manager's request span).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(20);

fn call(ws: &mut WebSocket<TcpStream>, cmd: &str, data: Value, tid: u64) -> Value {
    let req =
        json!({"class": "media", "subclass": "session", "cmd": cmd, "data": data, "tid": tid});
    ws.send(Message::text(req.to_string())).expect("send");
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            Err(e) => panic!("read: {e}"),
        };
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v["tid"] == json!(tid) && v.get("result").is_some() {
                assert_eq!(v["result"], "ok", "{v}");
                return v["data"].clone();
            }
        }
    }
}

#[test]
fn json_logs_carry_the_session_id() {
    let dir = std::env::temp_dir().join(format!("sluice-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--api", "127.0.0.1:0", "--media-ip", "127.0.0.1"])
        .args([
            "--rtp-ports",
            "32600-32699",
            "--workers",
            "1",
            "--io",
            "mmsg",
        ])
        .args([
            "--steer",
            "off",
            "--raw-send",
            "off",
            "--log-format",
            "json",
        ])
        .arg("--record-dir")
        .arg(dir.join("rec"))
        .env("RUST_LOG", "info,sluice_control=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start sluice");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("the ready line");
    let api: SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api=ws://"))
        .and_then(|a| a.strip_suffix("/api/ws"))
        .unwrap_or_else(|| panic!("no ready line: {line:?}"))
        .parse()
        .expect("API address");
    let (tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });

    let stream = TcpStream::connect(api).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let (mut ws, _) = tungstenite::client(format!("ws://{api}/api/ws"), stream).expect("WebSocket");
    let phone = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = phone.local_addr().expect("bound").port();
    let sdp = format!(
        "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    let r = call(
        &mut ws,
        "create",
        json!({"type": "echo", "offer": {"sdp": sdp, "sdp_type": "rtp"}}),
        1,
    );
    let id = r["session_id"].as_str().expect("session_id").to_owned();
    call(&mut ws, "destroy", json!({"session_id": id}), 2);

    let ok = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -INT {pid}");
    let status = exited
        .recv_timeout(WAIT)
        .expect("sluice exits")
        .expect("wait");
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log).expect("the log");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("sluice ready"))
    }));
    let about: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["session_id"] == json!(id))
        .collect();
    assert!(
        about
            .iter()
            .any(|l| l["fields"]["message"] == "destroying session"),
        "no line about {id} with its session_id: {text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
