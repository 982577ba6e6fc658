//! Janus's post-processor converts our recordings: `janus-pp-rec` turns an Opus recording into
//! `.opus` and a VP8 one into `.webm`, whose durations (from RTP timestamps) `ffprobe` checks.
//! Debian's `janus-tools` and `ffmpeg` are installed once where missing and allowed; otherwise
//! the tests say `SKIPPED` and pass.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use sluice_dataplane::api::IoMode;
use sluice_tests::*;

/// True if `cmd` is on the PATH.
fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// `janus-pp-rec` and `ffprobe`, installed from Debian (`janus-tools`, `ffmpeg`) once if
/// missing, when running as root and `SLUICE_TEST_NO_APT` is unset. `Err` says why not.
fn janus_tools() -> Result<(), String> {
    static TRIED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    TRIED
        .get_or_init(|| {
            let have = || on_path("janus-pp-rec") && on_path("ffprobe");
            if have() {
                return Ok(());
            }
            if std::env::var_os("SLUICE_TEST_NO_APT").is_some() {
                return Err("missing, and SLUICE_TEST_NO_APT forbids installing".into());
            }
            let root = Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
            if !root || !on_path("apt-get") {
                return Err("missing, and apt-get is unavailable (not root?)".into());
            }
            let install = || {
                Command::new("timeout")
                    .args(["600", "apt-get", "install", "-y", "--no-install-recommends"])
                    .args(["janus-tools", "ffmpeg"])
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if !install() {
                let _ = Command::new("timeout")
                    .args(["300", "apt-get", "update"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                install();
            }
            if have() {
                Ok(())
            } else {
                Err("apt-get install janus-tools ffmpeg failed".into())
            }
        })
        .clone()
}

#[test]
fn janus_pp_rec_converts_an_opus_recording() {
    if let Err(why) = janus_tools() {
        eprintln!("SKIPPED: janus-pp-rec not available: {why}");
        return;
    }
    let dir = temp_dir("rec-pp");
    let server = recording_server(IoMode::Mmsg, &dir).expect("server");
    let mut c = server.client();
    let peer = Peer::new();
    let sdp = plain_sdp(&[(
        "audio",
        peer.port(),
        "111",
        &["rtpmap:111 opus/48000/2", "sendrecv"],
    )]);
    let (id, to) = echo_session(&mut c, &sdp);
    recorder_action(
        &mut c,
        &id,
        json!({"action": "start", "uri": "file://opus"}),
    )
    .expect("start");
    // 5 s of 20 ms Opus silence frames (TOC 0xf8: CELT FB 20 ms), sent as fast as possible:
    // the converted duration comes from RTP timestamps, not from wall time.
    const PACKETS: u32 = 250;
    for i in 0..PACKETS {
        let p = Rtp::new(111, i as u16, i * 960, 0x0bad_cafe, &[0xf8, 0xff, 0xfe]);
        peer.send(to, &p.to_bytes());
        if i % 50 == 49 {
            peer.recv_n(50);
        }
    }
    recorder_action(&mut c, &id, json!({"action": "stop"})).expect("stop");
    let mjr_path = dir.join("opus-audio.mjr");
    let out = dir.join("opus.opus");
    let conv = Command::new("timeout")
        .args(["60", "janus-pp-rec"])
        .arg(&mjr_path)
        .arg(&out)
        .output()
        .expect("run janus-pp-rec");
    assert!(
        conv.status.success() && out.exists(),
        "janus-pp-rec failed: {}{}",
        String::from_utf8_lossy(&conv.stdout),
        String::from_utf8_lossy(&conv.stderr)
    );
    let duration = probe_duration(&out);
    let expected = f64::from(PACKETS) * 0.020;
    assert!(
        (duration - expected).abs() <= expected * 0.05,
        "converted duration {duration} s, sent {expected} s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn janus_pp_rec_converts_a_vp8_recording() {
    if let Err(why) = janus_tools() {
        eprintln!("SKIPPED: janus-pp-rec not available: {why}");
        return;
    }
    if !on_path("ffmpeg") {
        eprintln!("SKIPPED: ffmpeg (the VP8 packetizer of this test) not available");
        return;
    }
    // ffmpeg encodes 2 s of VP8 (50 frames at 25 fps) into RTP towards a socket of ours.
    let capture = Peer::new();
    let ffmpeg = Command::new("timeout")
        .args([
            "60",
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            "testsrc=size=160x120:rate=25",
            "-frames:v",
            "50",
            "-c:v",
            "libvpx",
        ])
        .args([
            "-deadline",
            "realtime",
            "-b:v",
            "200k",
            "-payload_type",
            "96",
            "-f",
            "rtp",
        ])
        .arg(format!("rtp://127.0.0.1:{}", capture.port()))
        .stdout(Stdio::null())
        .output()
        .expect("run ffmpeg");
    assert!(
        ffmpeg.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&ffmpeg.stderr)
    );
    // ffmpeg has exited: everything it sent is queued on the socket.
    capture
        .rtp
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let packets: Vec<Vec<u8>> = std::iter::from_fn(|| capture.recv().map(|(p, _)| p)).collect();
    assert!(
        packets.len() >= 50,
        "one packet per frame at least: {}",
        packets.len()
    );

    let dir = temp_dir("rec-pp-vp8");
    let server = recording_server(IoMode::Mmsg, &dir).expect("server");
    let mut c = server.client();
    let peer = Peer::new();
    let sdp = plain_sdp(&[(
        "video",
        peer.port(),
        "96",
        &["rtpmap:96 VP8/90000", "sendrecv"],
    )]);
    let (id, to) = echo_session(&mut c, &sdp);
    recorder_action(&mut c, &id, json!({"action": "start", "uri": "file://vp8"})).expect("start");
    for chunk in packets.chunks(50) {
        for p in chunk {
            peer.send(to, p);
        }
        peer.recv_n(chunk.len());
    }
    recorder_action(&mut c, &id, json!({"action": "stop"})).expect("stop");
    let out = dir.join("vp8.webm");
    let conv = Command::new("timeout")
        .args(["60", "janus-pp-rec"])
        .arg(dir.join("vp8-video.mjr"))
        .arg(&out)
        .output()
        .expect("run janus-pp-rec");
    assert!(
        conv.status.success() && out.exists(),
        "janus-pp-rec failed: {}{}",
        String::from_utf8_lossy(&conv.stdout),
        String::from_utf8_lossy(&conv.stderr)
    );
    let duration = probe_duration(&out);
    assert!(
        (duration - 2.0).abs() <= 2.0 * 0.05,
        "converted duration {duration} s, sent 2 s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The container duration `ffprobe` reports, in seconds.
fn probe_duration(path: &Path) -> f64 {
    let probe = Command::new("timeout")
        .args([
            "60",
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("ffprobe said {text:?} about {}", path.display()))
}
