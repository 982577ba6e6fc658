//! Data channels with a real browser: headless Chromium (its own SCTP stack, dcSCTP) opens a
//! channel on an echo session through the WebSocket API, from a script run in the demo page's
//! origin, and gets back text, binary, empty text, empty binary and a 60 KiB message with the
//! same kind and bytes. Needs Debian's `chromium` (`.ci/prepare` installs it); where it is
//! missing the test prints `SKIPPED: ...` and passes. Every wait is bounded (the script has its
//! own deadline; the DevTools socket a read timeout).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_dataplane::api::IoMode;
use sluice_tests::*;
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSER_WAIT: Duration = Duration::from_secs(40);

/// Creates an echo session with one audio transceiver and channel "chat", sends five
/// messages once the channel is open, and resolves with what came back (or why not).
const SCRIPT: &str = r#"
(async () => {
  const deadline = new Promise((_, no) => setTimeout(() => no(new Error("timeout")), 25000));
  const run = (async () => {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("audio", { direction: "sendrecv" });
    const dc = pc.createDataChannel("chat");
    dc.binaryType = "arraybuffer";
    await pc.setLocalDescription(await pc.createOffer());
    const ws = new WebSocket(`ws://${location.host}/api/ws`);
    await new Promise((ok, no) => {
      ws.onopen = ok;
      ws.onerror = () => no(new Error("the API WebSocket did not open"));
    });
    const reply = new Promise((ok) => ws.onmessage = (m) => {
      const v = JSON.parse(m.data);
      if (v.tid === 1 && v.result) ok(v);
    });
    ws.send(JSON.stringify({ class: "media", subclass: "session", cmd: "create", tid: 1,
      data: { type: "echo", offer: { sdp: pc.localDescription.sdp, sdp_type: "webrtc" } } }));
    const r = await reply;
    if (r.result !== "ok") throw new Error(JSON.stringify(r));
    await pc.setRemoteDescription({ type: "answer", sdp: r.data.answer.sdp });
    if (dc.readyState !== "open") await new Promise((ok) => dc.onopen = ok);
    const big = new Uint8Array(60 * 1024).map((_, i) => (i * 7) % 251);
    const sent = ["héllo", new Uint8Array([0, 255, 1]).buffer, "", new ArrayBuffer(0), big.buffer];
    const got = [];
    const all = new Promise((ok) => dc.onmessage = (m) => {
      got.push(typeof m.data === "string"
        ? { text: m.data }
        : { binary: Array.from(new Uint8Array(m.data)) });
      if (got.length === sent.length) ok();
    });
    for (const m of sent) dc.send(m);
    await all;
    return { got, label: dc.label, maxMessageSize: pc.sctp.maxMessageSize };
  })();
  try { return await Promise.race([run, deadline]); } catch (e) { return { error: String(e) }; }
})()
"#;

#[test]
fn chromium_channel_is_echoed() {
    if !std::path::Path::new(CHROMIUM).is_file() {
        eprintln!("SKIPPED: {CHROMIUM} is missing (apt-get install chromium, as .ci/prepare does)");
        return;
    }
    let server = Server::start(IoMode::Mmsg).expect("the mmsg backend always starts");
    let url = format!("http://{}/", server.api);
    let browser = Browser::launch(&url);
    let mut page = browser.page(&url);
    // The script's own WebSocket to the API has failed to open once in a loaded full run
    // (never alone): one more try, then the failure stands.
    let mut result = page.evaluate(SCRIPT);
    if result["error"]
        .as_str()
        .is_some_and(|e| e.contains("did not open"))
    {
        eprintln!("first try: {result}; trying once more");
        result = page.evaluate(SCRIPT);
    }
    assert!(result.get("error").is_none(), "{result}");
    assert_eq!(result["label"], "chat");
    assert_eq!(result["maxMessageSize"], 65536, "our a=max-message-size");
    let big: Vec<u8> = (0..60 * 1024).map(|i| ((i * 7) % 251) as u8).collect();
    let want = json!([
        {"text": "héllo"},
        {"binary": [0, 255, 1]},
        {"text": ""},
        {"binary": []},
        {"binary": big},
    ]);
    assert_eq!(result["got"], want, "same kind, same bytes, same order");
}

/// A headless Chromium, killed (and its profile removed) when dropped, also on panic.
struct Browser {
    child: Child,
    profile: PathBuf,
    devtools: String,
}

impl Browser {
    fn launch(url: &str) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("sluice-dc-chromium-{}", std::process::id()));
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                // The server announces a loopback candidate in the tests.
                "--allow-loopback-in-peer-connection",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Drains stderr for the browser's whole life (a full pipe would stall it).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
                }
            }
        });
        let devtools = rx
            .recv_timeout(BROWSER_WAIT)
            .expect("chromium prints its DevTools address");
        Browser {
            child,
            profile,
            devtools,
        }
    }

    /// The DevTools session of the page at `url`, once it has loaded.
    fn page(&self, url: &str) -> Cdp {
        let deadline = std::time::Instant::now() + BROWSER_WAIT;
        loop {
            let targets = devtools_list(&self.devtools);
            let ws = targets.as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["type"] == "page" && t["url"].as_str() == Some(url))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(ws) = ws {
                let mut page = Cdp::connect(&ws);
                while page.evaluate("document.readyState") != json!("complete") {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the page did not load"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
                return page;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no page target: {targets}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET /json/list` on Chromium's DevTools endpoint (which keeps the connection open: the
/// body is read by its `Content-Length`).
fn devtools_list(hostport: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(hostport).expect("connect to DevTools");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "GET /json/list HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut reader = BufReader::new(s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("read the body");
    serde_json::from_slice(&body).expect("DevTools JSON")
}

/// A DevTools protocol session with one page.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let hostport = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .expect("a ws:// DevTools URL");
        let stream = TcpStream::connect(hostport).expect("connect to the page's DevTools");
        stream
            .set_read_timeout(Some(BROWSER_WAIT))
            .expect("timeout");
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools WebSocket handshake");
        Cdp { ws, next_id: 1 }
    }

    /// Evaluates `expression` (awaiting a promise) and returns its value. A DevTools error
    /// (say, the page's context was replaced while the script ran) is retried a couple of
    /// times, then fails the test with its text.
    fn evaluate(&mut self, expression: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..3 {
            match self.evaluate_once(expression) {
                Ok(v) => return v,
                Err(e) => last = e,
            }
        }
        panic!("DevTools refused to evaluate the script: {last}");
    }

    fn evaluate_once(&mut self, expression: &str) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": "Runtime.evaluate", "params": {
            "expression": expression, "returnByValue": true, "awaitPromise": true}});
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send a DevTools command");
        loop {
            let Message::Text(t) = self.ws.read().expect("DevTools reply") else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] != id {
                continue;
            }
            if let Some(e) = v.get("error") {
                return Err(e.clone());
            }
            let r = &v["result"];
            assert!(r.get("exceptionDetails").is_none(), "script threw: {v}");
            return Ok(r["result"]["value"].clone());
        }
    }
}
