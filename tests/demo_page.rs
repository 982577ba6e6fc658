//! The demo page: `GET /` serves it, and in headless Chromium with fake camera and microphone its
//! echo test plays the video that came back through the server (and its room publishes and
//! listens).
//!
//! The browser tests need Debian's `chromium` (`/usr/bin/chromium`, which `.ci/prepare`
//! installs); where it is missing they print `SKIPPED: ...` and pass. Chromium is driven over the DevTools protocol (`Runtime.evaluate` on the page reading
//! the page's `window.sluice` test hooks). Every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_dataplane::api::IoMode;
use sluice_tests::*;
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page may take to reach a state (getUserMedia, ICE, DTLS, first frames).
const PAGE_WAIT: Duration = Duration::from_secs(30);
/// Pause between two polls of the page's state.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Video packets the echo test has received back, as the page's statistics count them.
const ECHO_VIDEO_PACKETS: &str = "window.sluice.stats().then(s => (s.echo || []).filter(e => \
    e.type === 'inbound-rtp' && e.kind === 'video').reduce((n, e) => n + e.packetsReceived, 0))";
/// Video frames the echo test has decoded.
const ECHO_FRAMES_DECODED: &str = "window.sluice.stats().then(s => (s.echo || []).filter(e => \
    e.type === 'inbound-rtp' && e.kind === 'video').reduce((n, e) => n + (e.framesDecoded || 0), 0))";

/// Video frames the room listener has decoded.
const LISTEN_FRAMES_DECODED: &str = "window.sluice.stats().then(s => (s.listen || []).filter(e => \
    e.type === 'inbound-rtp' && e.kind === 'video').reduce((n, e) => n + (e.framesDecoded || 0), 0))";

/// One browser at a time: two cores, and each Chromium is several processes.
static BROWSER: Mutex<()> = Mutex::new(());

#[test]
fn index_and_assets_are_served() {
    let server = Server::start(IoMode::Mmsg).expect("the mmsg backend always starts");
    let page = http_get(server.api, "/", &[]);
    assert_eq!(page.status, 200);
    let ctype = page.header("content-type").unwrap_or_default();
    assert!(ctype.starts_with("text/html"), "content-type {ctype}");
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("Sluice"), "{html}");
    assert!(html.contains("/demo/app.js"), "the page loads its script");
    // Nothing from outside: the machine may have no internet.
    assert!(!html.contains("http://") && !html.contains("https://"));

    let js = http_get(server.api, "/demo/app.js", &[]);
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap_or_default()
            .contains("javascript")
    );
    let js = String::from_utf8_lossy(&js.body);
    assert!(js.contains("window.sluice") && js.contains("/api/ws"));

    let css = http_get(server.api, "/demo/style.css", &[]);
    assert_eq!(css.status, 200);
    assert!(
        css.header("content-type")
            .unwrap_or_default()
            .starts_with("text/css")
    );
    assert_eq!(http_get(server.api, "/demo/nope.js", &[]).status, 404);
}

/// A Chromium showing the demo page with its echo test playing, and the echo session's id.
struct EchoPage {
    browser: Browser,
    page: Cdp,
    id: String,
}

fn echo_page(chromium: &Path, server: &Server) -> EchoPage {
    let browser = Browser::launch(chromium, &format!("http://{}/?autostart=echo", server.api));
    let mut page = browser.page();
    let status = page.wait_status("status", PAGE_WAIT);
    if status != "playing" {
        browser.fail(
            &mut page,
            &format!("echo status is {status:?}, not \"playing\""),
        );
    }
    let id = page
        .eval("window.sluice.echoSession")
        .as_str()
        .expect("the page's echo session id")
        .to_string();
    EchoPage { browser, page, id }
}

#[test]
fn echo_plays_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = Server::start(IoMode::Mmsg).expect("the mmsg backend always starts");
    let EchoPage {
        browser,
        mut page,
        id,
    } = echo_page(&chromium, &server);
    let shot = page.screenshot("echo");
    eprintln!("screenshot of the playing echo test: {}", shot.display());

    // The page's session is the server's echo session, and media flowed both ways through it.
    let mut c = server.client();
    let list = c.session("get_list", json!({})).expect("get_list");
    let echo = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["type"] == "echo")
        .unwrap_or_else(|| panic!("no echo session in {list}"));
    assert_eq!(
        echo["session_id"],
        id.as_str(),
        "the page's session is the echo session"
    );
    let info = c.info_until(&id, |i| {
        packets(i, "rx_packets") > 0 && packets(i, "tx_packets") > 0
    });
    assert_eq!(info["type"], "echo");
    assert_eq!(info["state"], "ready", "{info}");

    // The chat box: a message on the page's data channel comes back.
    if !page.wait_true("window.sluice.sendEchoChat('hello, echo')", PAGE_WAIT) {
        browser.fail(&mut page, "the echo chat channel never opened");
    }
    if !page.wait_true("window.sluice.echoChat.includes('hello, echo')", PAGE_WAIT) {
        browser.fail(&mut page, "the chat message did not come back");
    }

    // Mute video (update_media): the server drops the page's video; unmute: it comes back.
    page.eval_async("window.sluice.muteVideo(true).then(() => 'ok')");
    assert_eq!(c.info(&id)["mute_video"], true);
    expect_video_muted(&mut c, &id);
    let frozen = page.eval_async(ECHO_VIDEO_PACKETS).as_u64().unwrap_or(0);
    page.eval_async("window.sluice.muteVideo(false).then(() => 'ok')");
    assert_eq!(c.info(&id)["mute_video"], false);
    if !page.wait_above(ECHO_VIDEO_PACKETS, frozen, PAGE_WAIT) {
        browser.fail(&mut page, "echoed video did not resume after unmute");
    }

    // Stop: the page destroys its session.
    let status = page.eval_async("window.sluice.stopEcho().then(() => window.sluice.status)");
    assert_eq!(status, "idle");
    let gone = c.session("get_info", json!({"session_id": id}));
    assert_eq!(
        gone.map_err(|e| e.code),
        Err(100062),
        "session gone after stop"
    );
}

/// The same echo test on the io_uring backend (skipped where the kernel refuses io_uring).
#[test]
fn echo_plays_in_chromium_on_io_uring() {
    let Some(chromium) = chromium() else { return };
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let Some(server) = Server::start(IoMode::Uring) else {
        return;
    };
    let EchoPage {
        browser: _browser,
        page: _page,
        id,
    } = echo_page(&chromium, &server);
    let mut c = server.client();
    let info = c.info_until(&id, |i| {
        packets(i, "rx_packets") > 0 && packets(i, "tx_packets") > 0
    });
    assert_eq!(info["state"], "ready", "{info}");
}

/// Unmuting video asks the sender for a keyframe (RTCP PLI), so the picture moves again at once
/// rather than staying frozen on a broken reference.
#[test]
fn echo_video_decodes_again_after_unmute_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = Server::start(IoMode::Mmsg).expect("the mmsg backend always starts");
    let EchoPage {
        browser,
        mut page,
        id,
    } = echo_page(&chromium, &server);
    page.eval_async("window.sluice.muteVideo(true).then(() => 'ok')");
    expect_video_muted(&mut server.client(), &id);
    let decoded = page.eval_async(ECHO_FRAMES_DECODED).as_u64().unwrap_or(0);
    page.eval_async("window.sluice.muteVideo(false).then(() => 'ok')");
    // The fake camera sends about 30 frames a second: two seconds' worth.
    if !page.wait_above(ECHO_FRAMES_DECODED, decoded + 60, PAGE_WAIT) {
        browser.fail(
            &mut page,
            "no frames decoded after unmute (no keyframe requested?)",
        );
    }
}

/// `update_media {bitrate}` reaches the browser's encoder (RTCP REMB).
#[test]
fn echo_bitrate_cap_reaches_chromium() {
    let Some(chromium) = chromium() else { return };
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = Server::start(IoMode::Mmsg).expect("the mmsg backend always starts");
    let EchoPage {
        browser,
        mut page,
        id,
    } = echo_page(&chromium, &server);
    page.eval_async("window.sluice.setBitrate(200000).then(() => 'ok')");
    assert_eq!(server.client().info(&id)["bitrate"], 200000);
    let capped = page.wait_true(
        "window.sluice.stats().then(s => (s.echo || []).some(e => e.type === 'outbound-rtp' \
         && e.kind === 'video' && e.targetBitrate > 0 && e.targetBitrate <= 200000))",
        PAGE_WAIT,
    );
    if !capped {
        browser.fail(
            &mut page,
            "the sender's target bitrate stayed above 200 kbit/s",
        );
    }
}

/// Two pages publish into one room; the first listens to the second, switches (`set_type`) to
/// itself, and keeps playing after the second stops publishing.
#[test]
fn room_publish_listen_and_switch_in_chromium() {
    let Some(chromium) = chromium() else { return };
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = Server::start(IoMode::Mmsg).expect("the mmsg backend always starts");
    let url = format!("http://{}/", server.api);
    let browser = Browser::launch(&chromium, &url);
    let mut alice = browser.page();
    let mut bob = browser.open(&url);

    let publish = |page: &mut Cdp| {
        let id = page.eval_async("window.sluice.publish('demo-room')");
        let status = page.wait_status("publishStatus", PAGE_WAIT);
        if status != "playing" {
            browser.fail(page, &format!("publish status is {status:?}"));
        }
        id.as_str().expect("a publisher id").to_string()
    };
    let pub_alice = publish(&mut alice);
    let pub_bob = publish(&mut bob);
    let listed = alice.eval_async("window.sluice.listPublishers('demo-room')");
    assert_eq!(listed, json!([pub_alice, pub_bob]));

    // Alice listens to Bob.
    let listener = alice.eval_async(&format!("window.sluice.listen('{pub_bob}')"));
    let listener = listener.as_str().expect("a listener id").to_string();
    let status = alice.wait_status("listenStatus", PAGE_WAIT);
    if status != "playing" {
        browser.fail(&mut alice, &format!("listen status is {status:?}"));
    }
    let mut c = server.client();
    assert_eq!(c.info(&listener)["publisher_id"], pub_bob.as_str());

    // Bob's chat reaches Alice, his listener, through the mirrored channel.
    if !bob.wait_true("window.sluice.sendRoomChat('hello from bob')", PAGE_WAIT) {
        browser.fail(&mut bob, "the publisher's chat channel never opened");
    }
    if !alice.wait_true(
        "window.sluice.roomChat.includes('hello from bob')",
        PAGE_WAIT,
    ) {
        browser.fail(&mut alice, "the listener did not get the publisher's chat");
    }

    // Switch to Alice's own stream, without renegotiation.
    alice.eval_async(&format!(
        "window.sluice.switchTo('{pub_alice}').then(() => 'ok')"
    ));
    assert_eq!(c.info(&listener)["publisher_id"], pub_alice.as_str());
    // Bob leaves: the listener, now on Alice, stays and keeps decoding.
    let left = bob.eval_async("window.sluice.unpublish().then(() => window.sluice.publishStatus)");
    assert_eq!(left, "idle");
    let decoded = alice
        .eval_async(LISTEN_FRAMES_DECODED)
        .as_u64()
        .unwrap_or(0);
    if !alice.wait_above(LISTEN_FRAMES_DECODED, decoded + 60, PAGE_WAIT) {
        browser.fail(&mut alice, "the listener stopped decoding after the switch");
    }
    assert_eq!(alice.eval("window.sluice.listenStatus"), "playing");
    assert_eq!(c.info(&listener)["publisher_id"], pub_alice.as_str());
    let shot = alice.screenshot("room");
    eprintln!("screenshot of the room: {}", shot.display());
}

/// Video packets of about a second from the fake camera (30 frames a second, one packet or more
/// each).
const VIDEO_SECOND: u64 = 30;

/// Waits until the server has dropped a second's worth of the echo session's video as muted:
/// [`VIDEO_SECOND`] more `drops.muted` on its video leg than when mute took effect. (Audio and
/// video share one bundled leg whose `tx_packets` counts both, so `get_info` cannot show that no
/// video went back; `tests/webrtc.rs` checks that with a str0m peer.)
/// With an API secret, the page asks for it at the first refused request, logs in and goes
/// on; the browser's dialog is replaced by one answering at once (what a user would type).
#[test]
fn the_page_asks_for_the_secret() {
    let Some(chromium) = chromium() else { return };
    let _one = BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let server = Server::start_with(IoMode::Mmsg, |c| c.api_secret = Some("s3cret".into()))
        .expect("the mmsg backend always starts");
    let browser = Browser::launch(&chromium, &format!("http://{}/", server.api));
    let mut page = browser.page();
    page.eval(
        "window.asked = 0; window.prompt = () => { window.asked += 1; return 's3cret'; }; true",
    );
    let r = page.eval_async(
        "window.sluice.api.request('session', 'get_list', {}) \
           .then((list) => ({ ok: Array.isArray(list), asked: window.asked }))",
    );
    assert_eq!(
        r,
        json!({"ok": true, "asked": 1}),
        "asked once, then served"
    );
    let again = page.eval_async(
        "window.sluice.api.request('session', 'get_list', {}).then(() => window.asked)",
    );
    assert_eq!(again, json!(1), "logged in: not asked again");
}

fn expect_video_muted(c: &mut Client, id: &str) {
    let muted = |info: &Value| {
        info["media"]
            .as_array()
            .and_then(|m| m.iter().find(|l| l["kind"] == "video"))
            .unwrap_or_else(|| panic!("no video leg: {info}"))["drops"]["muted"]
            .as_u64()
            .unwrap_or(0)
    };
    let first = muted(&info_polled(c, id, |i| muted(i) > 0));
    info_polled(c, id, |i| muted(i) >= first + VIDEO_SECOND);
}

/// Polls `get_info` every [`POLL_EVERY`] until `done` holds for it (the browser's media comes
/// at its own pace), at most [`PAGE_WAIT`].
fn info_polled(c: &mut Client, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let info = c.info(id);
        if done(&info) {
            return info;
        }
        assert!(Instant::now() < deadline, "condition never held: {info}");
        std::thread::sleep(POLL_EVERY);
    }
}

/// Sum of a counter over a session's media.
fn packets(info: &Value, key: &str) -> u64 {
    info["media"]
        .as_array()
        .map(|m| m.iter().filter_map(|l| l[key].as_u64()).sum())
        .unwrap_or(0)
}

/// Debian's Chromium (`.ci/prepare` installs it), or `None` after saying why the test skips.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from(CHROMIUM);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {CHROMIUM} is missing (apt-get install chromium, as .ci/prepare does)");
        None
    }
}

/// A headless Chromium, killed (and its profile removed) when dropped, also on panic.
struct Browser {
    child: Child,
    profile: PathBuf,
    devtools: SocketAddr,
    page_url: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    fn launch(chromium: &Path, url: &str) -> Browser {
        let profile = temp_dir("chromium-profile");
        let mut child = Command::new(chromium)
            .args([
                // How Chromium runs on this machine (closed network, root, no GPU).
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,1100",
                // Fake camera and microphone, granted without a prompt.
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                // The server announces loopback candidates in the tests.
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
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = Arc::clone(&lines);
        // Drains stderr for the browser's whole life (a full pipe would stall it).
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("DevTools listening on ws://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
                }
                keep.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut browser = Browser {
            child,
            profile,
            devtools: "127.0.0.1:0".parse().expect("literal"),
            page_url: url.to_string(),
            stderr: lines,
        };
        match rx.recv_timeout(PAGE_WAIT) {
            Ok(addr) => browser.devtools = addr.parse().expect("DevTools host:port"),
            Err(_) => panic!(
                "chromium did not print its DevTools address; stderr:\n{}",
                browser.stderr_text()
            ),
        }
        browser
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// The DevTools session of the page opened at launch.
    fn page(&self) -> Cdp {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let targets = devtools_get(self.devtools, "/json/list");
            let found = targets.as_array().and_then(|t| {
                t.iter().find(|t| {
                    t["type"] == "page"
                        && t["url"]
                            .as_str()
                            .is_some_and(|u| u.starts_with(&self.page_url))
                })
            });
            if let Some(ws) = found.and_then(|t| t["webSocketDebuggerUrl"].as_str()) {
                let mut page = Cdp::connect(ws);
                page.wait_ready(deadline);
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "no page target for {}: {targets}",
                self.page_url
            );
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Opens `url` in a new tab and returns its DevTools session once the page has loaded.
    fn open(&self, url: &str) -> Cdp {
        let target = devtools_http(self.devtools, "PUT", &format!("/json/new?{url}"));
        let ws = target["webSocketDebuggerUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("no DevTools URL for the new tab: {target}"));
        let mut page = Cdp::connect(ws);
        page.wait_ready(Instant::now() + PAGE_WAIT);
        page
    }

    /// Panics with everything that helps: the page's log, a screenshot, Chromium's stderr.
    fn fail(&self, page: &mut Cdp, what: &str) -> ! {
        let log = page.eval("window.sluice ? window.sluice.log.join('\\n') : 'no window.sluice'");
        let stats = page.eval_async("window.sluice.stats()");
        let shot = page.screenshot("failure");
        panic!(
            "{what}\npage log:\n{}\nRTP stats: {stats}\nscreenshot: {}\nchromium stderr:\n{}",
            log.as_str().unwrap_or_default(),
            shot.display(),
            self.stderr_text()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET path` on Chromium's DevTools HTTP endpoint (it keeps connections open, so the body is
/// read by its `Content-Length`).
fn devtools_get(addr: SocketAddr, path: &str) -> Value {
    devtools_http(addr, "GET", path)
}

/// An HTTP request to Chromium's DevTools endpoint, returning its JSON body.
fn devtools_http(addr: SocketAddr, method: &str, path: &str) -> Value {
    let mut stream = TcpStream::connect(addr).expect("connect to DevTools");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut reader = BufReader::new(stream);
    let mut length = None;
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
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length.expect("DevTools replies carry a Content-Length")];
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
        stream.set_read_timeout(Some(PAGE_WAIT)).expect("timeout");
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools WebSocket handshake");
        Cdp { ws, next_id: 1 }
    }

    /// Sends a command and returns its `result` (events in between are ignored).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send a DevTools command");
        loop {
            let msg = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) => panic!("DevTools reply to {method}: {e}"),
            };
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] != id {
                continue;
            }
            if let Some(e) = v.get("error") {
                panic!("DevTools {method} failed: {e}");
            }
            return v["result"].clone();
        }
    }

    fn evaluate(&mut self, expression: &str, await_promise: bool) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": await_promise}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    fn eval(&mut self, expression: &str) -> Value {
        self.evaluate(expression, false)
    }

    /// Evaluates an expression that gives a promise and returns what it resolves to.
    fn eval_async(&mut self, expression: &str) -> Value {
        self.evaluate(expression, true)
    }

    /// Polls until the page has loaded and its script has run.
    fn wait_ready(&mut self, deadline: Instant) {
        let ready = "document.readyState === 'complete' && typeof window.sluice === 'object'";
        while self.eval(ready) != json!(true) {
            assert!(Instant::now() < deadline, "the demo page did not load");
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Polls a (promise of a) boolean expression until it is true, at most `within`.
    fn wait_true(&mut self, expression: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.eval_async(expression) == json!(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Polls a (promise of a) counter until it exceeds `floor`, at most `within`.
    fn wait_above(&mut self, counter: &str, floor: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.eval_async(counter).as_u64().is_some_and(|n| n > floor) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Polls `window.sluice[field]` until it is "playing" or an error, or `within` passes;
    /// returns the last value.
    fn wait_status(&mut self, field: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let expr = format!("window.sluice ? window.sluice.{field} : 'no window.sluice'");
        loop {
            let status = self.eval(&expr).as_str().unwrap_or_default().to_string();
            if status == "playing" || status.starts_with("error") || Instant::now() >= deadline {
                return status;
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    /// Saves a PNG of the page under the temp dir and returns its path.
    fn screenshot(&mut self, tag: &str) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        let path = std::env::temp_dir().join(format!("sluice-demo-{tag}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

/// Standard base64 (with padding), as DevTools sends binary data.
fn base64_decode(text: &str) -> Vec<u8> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("U2x1aWNl"), b"Sluice");
    assert_eq!(base64_decode("U2x1aWNlIQ=="), b"Sluice!");
    assert_eq!(base64_decode("U2x1aWNlIT8="), b"Sluice!?");
}
