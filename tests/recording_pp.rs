//! Janus's post-processor converts our recordings: `janus-pp-rec` turns an Opus recording into
//! `.opus` and a VP8 one into `.webm`, whose durations (from RTP timestamps) `ffprobe` checks.
//! They need Debian's `janus-tools` and `ffmpeg` (`.ci/prepare` installs them); where those are
//! missing the tests say `SKIPPED` and pass.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use sluice_dataplane::api::IoMode;
use sluice_tests::*;

/// True if `cmd` is on the PATH.
fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// `janus-pp-rec` and `ffprobe` (Debian's `janus-tools` and `ffmpeg`, which `.ci/prepare`
/// installs); `Err` says what is missing.
fn janus_tools() -> Result<(), String> {
    let missing: Vec<&str> = ["janus-pp-rec", "ffprobe"]
        .into_iter()
        .filter(|cmd| !on_path(cmd))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} not on the PATH (apt-get install janus-tools ffmpeg, as .ci/prepare does)",
            missing.join(" and ")
        ))
    }
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
    const FRAMES: usize = 50;
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
            &FRAMES.to_string(),
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
    // ffmpeg has exited, so everything it sent is on its way to the socket: read up to the
    // end of the 50th frame (the RTP marker closes a VP8 frame, RFC 7741 §4.1).
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut frames = 0;
    while frames < FRAMES {
        let (p, _) = capture.recv().unwrap_or_else(|| {
            panic!(
                "{frames} of {FRAMES} frames arrived from ffmpeg ({} packets)",
                packets.len()
            )
        });
        if Rtp::parse(&p).is_some_and(|rtp| rtp.marker) {
            frames += 1;
        }
        packets.push(p);
    }

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
