//! Recording through the API: echo and SFU sessions into Janus `.mjr` files, the naming rules,
//! the HTTP listing and download, and a `kill -9` mid-recording. Conversion by `janus-pp-rec`
//! is in `recording_pp.rs`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_dataplane::api::IoMode;
use sluice_dataplane::record::mjr::{self, MjrFrame};
use sluice_tests::*;

/// Runs `scenario(server, record_dir)` on mmsg and, where the kernel allows it, io_uring.
macro_rules! both_backends_recording {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;

            #[test]
            fn mmsg() {
                let dir = temp_dir(concat!(stringify!($scenario), "-mmsg"));
                if let Some(server) = recording_server(IoMode::Mmsg, &dir) {
                    super::$scenario(&server, &dir);
                }
                let _ = std::fs::remove_dir_all(&dir);
            }

            #[test]
            fn uring() {
                let dir = temp_dir(concat!(stringify!($scenario), "-uring"));
                if let Some(server) = recording_server(IoMode::Uring, &dir) {
                    super::$scenario(&server, &dir);
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    };
}

fn assert_janus_header(info: &Value, kind: &str, codec: &str) {
    assert_eq!(info["t"], kind, "{info}");
    assert_eq!(info["c"], codec, "{info}");
    let (s, u) = (info["s"].as_u64(), info["u"].as_u64());
    assert!(
        s.is_some() && u.is_some() && s <= u,
        "s and u are integers, s <= u: {info}"
    );
}

fn assert_offsets_non_decreasing(frames: &[MjrFrame]) {
    for w in frames.windows(2) {
        assert!(w[0].offset_ms <= w[1].offset_ms, "offsets go back: {w:?}");
    }
}

fn echo_session_is_recorded(server: &Server, dir: &Path) {
    let mut c = server.client();
    let peer = Peer::new();
    let (id, to) = echo_session(&mut c, &phone_sdp(peer.port()));
    let actions = recorder_action(&mut c, &id, json!({"action": "get_actions"})).expect("actions");
    assert_eq!(actions["actions"], json!(["start", "stop", "get_actions"]));
    let started = recorder_action(&mut c, &id, json!({"action": "start"})).expect("start");
    let uri = str_of(&started, "uri");
    assert!(uri.starts_with("file:///"), "{uri}");
    let ev = c.wait_event(&id, "record");
    assert_eq!(ev["body"], json!({"uri": uri, "status": "started"}));
    let file = started["files"][0]
        .as_str()
        .expect("a file name")
        .to_string();
    assert!(file.ends_with("-audio.mjr"), "{file}");

    let sent = blast(&peer, to, 0, 0x1234_5678, 100, 50);
    assert_eq!(peer.recv_n(50), sent);
    // DTMF is forwarded but is not the recorded codec.
    let dtmf = Rtp::new(101, 150, 150 * 160, 0x1234_5678, &[1, 0, 0, 160]);
    peer.send(to, &dtmf.to_bytes());
    assert_eq!(peer.recv_n(1), vec![dtmf]);
    assert_eq!(c.info(&id)["recording"]["state"], "recording");

    let stopped = recorder_action(&mut c, &id, json!({"action": "stop"})).expect("stop");
    assert_eq!(stopped["closed"], true, "{stopped}");
    assert_eq!(stopped["dropped"], 0);
    let ev = c.wait_event(&id, "record");
    assert_eq!(ev["body"]["status"], "stopped");
    assert_eq!(ev["body"]["uri"], uri);

    let path = dir.join(&file);
    assert!(
        !dir.join(format!("{file}.tmp")).exists(),
        "renamed on close"
    );
    let (info, frames) = read_mjr(&path);
    assert_janus_header(&info, "a", "pcmu");
    assert_eq!(frames.len(), 50);
    for (f, p) in frames.iter().zip(&sent) {
        assert_eq!(f.rtp, p.to_bytes());
    }
    assert_offsets_non_decreasing(&frames);
    let rec = &c.info(&id)["recording"];
    assert_eq!(rec["state"], "stopped");
    assert_eq!(rec["files"][0]["packets"], 50);
    assert_eq!(rec["files"][0]["state"], "done");
    let err = recorder_action(&mut c, &id, json!({"action": "stop"})).unwrap_err();
    assert_eq!(err.code, 300030, "no_active_recorder: {err:?}");

    // A second recording gets a new default name; destroying the session closes it.
    let again = recorder_action(&mut c, &id, json!({"action": "start"})).expect("restart");
    assert_ne!(again["uri"], json!(uri));
    assert_eq!(c.wait_event(&id, "record")["body"]["status"], "started");
    let second = dir.join(again["files"][0].as_str().expect("name"));
    blast(&peer, to, 0, 0x1234_5678, 200, 5);
    peer.recv_n(5);
    c.session("destroy", json!({"session_id": id}))
        .expect("destroy");
    assert_eq!(c.wait_event(&id, "record")["body"]["status"], "stopped");
    c.wait_event(&id, "destroyed");
    let deadline = Instant::now() + WAIT;
    while !second.exists() {
        assert!(
            Instant::now() < deadline,
            "session end must close {second:?}"
        );
        std::thread::yield_now();
    }
    assert_eq!(read_mjr(&second).1.len(), 5);
}
both_backends_recording!(echo_session_is_recorded);

fn sfu_publisher_and_listener_are_recorded(server: &Server, dir: &Path) {
    let mut c = server.client();
    let (pa, pv) = (Peer::new(), Peer::new());
    let r = c
        .session("create", json!({"type": "publish", "offer": {"sdp": av_sdp(pa.port(), pv.port()), "sdp_type": "rtp"},
            "room_audio_codec": "opus", "room_video_codec": "vp8"}))
        .expect("publish");
    let publisher = str_of(&r, "session_id");
    let answer = sdp_in(&r, "answer");
    let (to_a, to_v) = (server_addr(&answer, 0), server_addr(&answer, 1));

    let l = c
        .session(
            "create",
            json!({"type": "listen", "publisher_id": publisher, "sdp_type": "rtp"}),
        )
        .expect("listen");
    let listener = str_of(&l, "session_id");
    let (la, lv) = (Peer::new(), Peer::new());
    let listen_answer = plain_sdp(&[
        (
            "audio",
            la.port(),
            "111",
            &["rtpmap:111 opus/48000/2", "recvonly"],
        ),
        (
            "video",
            lv.port(),
            "96",
            &["rtpmap:96 VP8/90000", "recvonly"],
        ),
    ]);
    c.session(
        "set_answer",
        json!({"session_id": listener, "answer": {"sdp": listen_answer, "sdp_type": "rtp"}}),
    )
    .expect("set_answer");

    let p = recorder_action(
        &mut c,
        &publisher,
        json!({"action": "start", "uri": "file://pub"}),
    )
    .expect("record publisher");
    assert_eq!(p["files"], json!(["pub-audio.mjr", "pub-video.mjr"]));
    let canonical = dir.canonicalize().expect("record dir");
    assert_eq!(
        p["uri"],
        format!("file://{}", canonical.join("pub").display())
    );
    recorder_action(
        &mut c,
        &listener,
        json!({"action": "start", "uri": "file://lis.mjr"}),
    )
    .expect("record listener");

    let sent_a = blast(&pa, to_a, 111, 11, 1, 30);
    let sent_v = blast(&pv, to_v, 96, 22, 500, 30);
    let got_a = la.recv_n(30);
    let got_v = lv.recv_n(30);
    for id in [&publisher, &listener] {
        recorder_action(&mut c, id, json!({"action": "stop"})).expect("stop");
    }

    let (info, frames) = read_mjr(&dir.join("pub-audio.mjr"));
    assert_janus_header(&info, "a", "opus");
    assert_eq!(
        frames.iter().map(|f| f.rtp.clone()).collect::<Vec<_>>(),
        sent_a.iter().map(Rtp::to_bytes).collect::<Vec<_>>()
    );
    assert_offsets_non_decreasing(&frames);
    let (info, frames) = read_mjr(&dir.join("pub-video.mjr"));
    assert_janus_header(&info, "v", "vp8");
    assert_eq!(frames.len(), 30);
    assert_eq!(Rtp::parse(&frames[0].rtp), Some(sent_v[0].clone()));

    // The listener's files hold what it was sent: its own SSRC and sequence numbers.
    for (kind, got) in [("audio", &got_a), ("video", &got_v)] {
        let (info, frames) = read_mjr(&dir.join(format!("lis-{kind}.mjr")));
        assert_eq!(info["t"], &kind[..1]);
        let recorded: Vec<Rtp> = frames
            .iter()
            .map(|f| Rtp::parse(&f.rtp).expect("rtp"))
            .collect();
        assert_eq!(&recorded, got, "{kind}");
        assert_offsets_non_decreasing(&frames);
    }
}
both_backends_recording!(sfu_publisher_and_listener_are_recorded);

#[test]
fn recording_paths_stay_inside_the_record_dir() {
    let dir = temp_dir("rec-paths");
    let server = recording_server(IoMode::Mmsg, &dir).expect("server");
    let mut c = server.client();
    let peer = Peer::new();
    let (id, _) = echo_session(&mut c, &phone_sdp(peer.port()));
    let outside = dir.parent().expect("temp dir has a parent").to_owned();
    for uri in [
        "file://../escape".to_string(),
        format!("file://{}/escape", outside.display()),
        format!("file://{}/../escape", dir.display()),
        "file:///etc/sluice-escape".to_string(),
        "file://sub/escape".to_string(),
        "file://.hidden".to_string(),
        "ftp://host/escape".to_string(),
        "escape".to_string(),
    ] {
        let err = recorder_action(&mut c, &id, json!({"action": "start", "uri": uri})).unwrap_err();
        assert_eq!(err.code, 100041, "{uri}: {err:?}");
    }
    assert!(!outside.join("escape-audio.mjr.tmp").exists());
    assert!(
        std::fs::read_dir(&dir).expect("dir").next().is_none(),
        "nothing created"
    );

    let inside = format!("file://{}/inside", dir.display());
    let ok =
        recorder_action(&mut c, &id, json!({"action": "start", "uri": inside})).expect("inside");
    assert!(
        ok["uri"].as_str().is_some_and(|u| u.ends_with("/inside")),
        "{ok}"
    );
    let err = recorder_action(&mut c, &id, json!({"action": "start"})).unwrap_err();
    assert_eq!(err.code, 100040, "already recording: {err:?}");
    recorder_action(&mut c, &id, json!({"action": "stop"})).expect("stop");
    let err = recorder_action(
        &mut c,
        &id,
        json!({"action": "start", "uri": "file://inside"}),
    )
    .unwrap_err();
    assert_eq!(
        err.code, 100041,
        "an existing name is not replaced: {err:?}"
    );
    let err = recorder_action(&mut c, &id, json!({"action": "rewind"})).unwrap_err();
    assert_eq!(err.code, 100041);
    let err = recorder_action(&mut c, &id, json!({})).unwrap_err();
    assert_eq!(err.code, 100045, "missing action");
    let err = recorder_action(&mut c, "no-such-session", json!({"action": "start"})).unwrap_err();
    assert_eq!(err.code, 100062);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recordings_are_listed_and_downloaded_over_http() {
    let dir = temp_dir("rec-http");
    let dir2 = dir.clone();
    let server = Server::start_with(IoMode::Mmsg, move |c| {
        c.record_dir = dir2;
        c.api_secret = Some("s3cret".into());
    })
    .expect("server");
    let mut c = server.client();
    c.request(
        "core",
        "user",
        "login",
        json!({"user": "u", "password": "s3cret"}),
    )
    .expect("login");
    let peer = Peer::new();
    let (id, to) = echo_session(&mut c, &phone_sdp(peer.port()));
    recorder_action(
        &mut c,
        &id,
        json!({"action": "start", "uri": "file://call"}),
    )
    .expect("start");
    let sent = blast(&peer, to, 0, 5, 1, 20);
    peer.recv_n(20);
    let auth = [("Authorization", "Bearer s3cret")];

    // While recording: listed as such, and downloadable up to the last flush.
    let mut listed = Value::Null;
    let deadline = Instant::now() + WAIT;
    while listed["bytes"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "never flushed: {listed}");
        let list = http_get(server.api, "/recordings", &auth).json();
        listed = list[0].clone();
    }
    assert_eq!(listed["name"], "call-audio.mjr");
    assert_eq!(listed["state"], "recording");
    let partial = http_get(server.api, "/recordings/call-audio.mjr", &auth);
    assert_eq!(partial.status, 200);
    assert!(partial.body.starts_with(b"MJR00002"));

    recorder_action(&mut c, &id, json!({"action": "stop"})).expect("stop");
    let on_disk = std::fs::read(dir.join("call-audio.mjr")).expect("file");

    for bad in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Basic s3cret")],
    ] {
        assert_eq!(http_get(server.api, "/recordings", &bad).status, 401);
        assert_eq!(
            http_get(server.api, "/recordings/call-audio.mjr", &bad).status,
            401
        );
    }
    let list = http_get(server.api, "/recordings", &auth);
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let e = &list[0];
    assert_eq!(e["name"], "call-audio.mjr");
    assert_eq!(e["session"], json!(id));
    assert_eq!(
        (e["kind"].as_str(), e["codec"].as_str()),
        (Some("audio"), Some("pcmu"))
    );
    assert_eq!(e["bytes"], on_disk.len());
    assert_eq!(e["state"], "done");
    assert!(e["duration"].as_f64().is_some(), "{e}");

    let full = http_get(server.api, "/recordings/call-audio.mjr", &auth);
    assert_eq!(full.status, 200);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(full.body, on_disk);
    assert_eq!(
        mjr::parse(&full.body).expect("mjr").frames.len(),
        sent.len()
    );

    let len = on_disk.len();
    let part = http_get(
        server.api,
        "/recordings/call-audio.mjr",
        &[auth[0], ("Range", "bytes=0-9")],
    );
    assert_eq!(part.status, 206);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 0-9/{len}").as_str())
    );
    assert_eq!(part.body, &on_disk[..10]);
    let tail = http_get(
        server.api,
        "/recordings/call-audio.mjr",
        &[auth[0], ("Range", "bytes=-5")],
    );
    assert_eq!(
        (tail.status, tail.body.as_slice()),
        (206, &on_disk[len - 5..])
    );
    let from = http_get(
        server.api,
        "/recordings/call-audio.mjr",
        &[auth[0], ("Range", "bytes=10-")],
    );
    assert_eq!(from.body, &on_disk[10..]);
    let beyond = format!("bytes={len}-");
    let none = http_get(
        server.api,
        "/recordings/call-audio.mjr",
        &[auth[0], ("Range", beyond.as_str())],
    );
    assert_eq!(none.status, 416);

    assert_eq!(
        http_get(server.api, "/recordings/other.mjr", &auth).status,
        404
    );
    for bad in [
        "/recordings/..",
        "/recordings/../../etc/passwd",
        "/recordings/a/b.mjr",
        "/recordings/..%2F..%2Fetc%2Fpasswd",
        "/recordings/call%2Daudio.mjr%2F",
    ] {
        assert_eq!(http_get(server.api, bad, &auth).status, 400, "{bad}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Set in the child process of `recording_survives_kill_9`: its record dir.
const CRASH_CHILD: &str = "SLUICE_TEST_RECORDING_CRASH_DIR";
const FLUSHED: &str = "SLUICE-RECORDING-FLUSHED";

/// The child of `recording_survives_kill_9` (a no-op in a normal run): records an echo call,
/// waits until the first packets are on disk, says so, then waits to be killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_CHILD).map(PathBuf::from) else {
        return;
    };
    // Its own port range: the parent's servers use the harness's.
    let server = Server::start_with(IoMode::Mmsg, |c| {
        c.record_dir = dir.clone();
        c.rtp_ports = (46000, 46199);
    })
    .expect("server");
    let mut c = server.client();
    let peer = Peer::new();
    let (id, to) = echo_session(&mut c, &phone_sdp(peer.port()));
    recorder_action(
        &mut c,
        &id,
        json!({"action": "start", "uri": "file://crash"}),
    )
    .expect("start");
    blast(&peer, to, 0, 9, 1, 40);
    peer.recv_n(40);
    let tmp = dir.join("crash-audio.mjr.tmp");
    let deadline = Instant::now() + WAIT;
    loop {
        let frames = std::fs::read(&tmp)
            .ok()
            .and_then(|b| mjr::parse(&b).ok())
            .map_or(0, |f| f.frames.len());
        if frames >= 40 {
            break;
        }
        assert!(Instant::now() < deadline, "the writer never flushed");
        std::thread::yield_now();
    }
    // More packets, likely in the ring or half-written when the kill comes.
    blast(&peer, to, 0, 9, 41, 200);
    println!("{FLUSHED}");
    // Killed here; returns only if the parent went away (stdin closed).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn recording_survives_kill_9() {
    let dir = temp_dir("rec-crash");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(FLUSHED) {
                let _ = tx.send(());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(60));
    // SIGKILL, whatever happened: nothing in the child gets to finish the file.
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("reap the child");
    ready.expect("the child recorded and flushed");
    assert!(!status.success());

    assert!(!dir.join("crash-audio.mjr").exists(), "never closed");
    let bytes = std::fs::read(dir.join("crash-audio.mjr.tmp")).expect("the .tmp survives");
    let file = mjr::parse(&bytes).expect("readable up to the last flush");
    let info: Value = serde_json::from_str(&file.info_json).expect("info");
    assert_janus_header(&info, "a", "pcmu");
    assert!(
        file.frames.len() >= 40,
        "at least what was flushed: {}",
        file.frames.len()
    );
    for (i, f) in file.frames.iter().enumerate() {
        let p = Rtp::parse(&f.rtp).expect("whole RTP packets");
        let seq = 1 + i as u16;
        assert_eq!(
            (p.seq, p.payload.clone()),
            (seq, format!("pkt-9-{seq}").into_bytes())
        );
    }
    assert_offsets_non_decreasing(&file.frames);
    let _ = std::fs::remove_dir_all(&dir);
}
