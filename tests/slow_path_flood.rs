//! A STUN flood at one WebRTC session's port: the leg hands the control plane at most a
//! burst plus a rate of datagrams and counts the rest as `slow_path_limit` drops, while
//! another session's ICE + DTLS handshake and media, and the API, carry on.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use serde_json::json;
use sluice_tests::webrtc_peer::*;
use sluice_tests::*;

/// What one leg may hand the slow path: `SlowPathBudget`'s STUN burst and rate.
const STUN_BURST: u64 = 50;
const STUN_RATE: u64 = 20;

/// A STUN binding request (RFC 5389 §6) with no attributes: the flood needs no credentials.
fn binding_request(n: u64) -> [u8; 20] {
    let mut p = [0u8; 20];
    p[1] = 0x01;
    p[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    p[8..16].copy_from_slice(&n.to_be_bytes());
    p
}

fn flood_spares_the_api_and_other_handshakes(server: &Server) {
    let mut c = server.client();
    let started = Instant::now();
    // The flooded session: a WebRTC echo whose peer never answers.
    let mut quiet = WebrtcPeer::new();
    let offer = quiet.offer(true, false);
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": offer}}))
        .expect("create the flooded echo");
    let flooded = str_of(&reply, "session_id");
    let target = server_addr(&sdp_in(&reply, "answer"), 0);

    // The flood runs, bounded in count, while the rest of the test goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("loopback");
            for n in 0..200_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if s.send_to(&binding_request(n), target).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Meanwhile another session connects and echoes, and the API answers.
    let mut p = WebrtcPeer::new();
    let offer = p.offer(true, false);
    let reply = c
        .session("create", json!({"type": "echo", "offer": {"sdp": offer}}))
        .expect("create during the flood");
    p.accept_answer(&sdp_in(&reply, "answer"))
        .expect("str0m accepts the answer");
    let id = str_of(&reply, "session_id");
    assert!(p.run_until(WAIT, |p| p.connected()), "{}", p.describe());
    expect_up(&mut c, &id);
    let mut payloads = Payloads(0x5eed_f100d);
    let audio: Vec<Vec<u8>> = (0..10).map(|i| payloads.next(40 + i)).collect();
    for a in &audio {
        p.send_audio(a);
    }
    assert!(
        p.run_until(WAIT, |p| p.received_of(MediaKind::Audio).count() >= 10),
        "echo during the flood: {}",
        p.describe()
    );
    // The flooded leg has seen (and refused) part of the flood by the time it reports so.
    let info = c.info_until(&flooded, |i| {
        i["media"][0]["drops"]["slow_path_limit"].as_u64() > Some(1000)
    });
    stop.store(true, Ordering::Relaxed);
    flooder.join().expect("the flooder ends");
    let elapsed = started.elapsed().as_secs() + 1;
    let leg = &info["media"][0];
    let handed = leg["slow_path_packets"].as_u64().expect("a count");
    assert!(
        handed <= STUN_BURST + STUN_RATE * elapsed,
        "{handed} slow-path datagrams in {elapsed} s of a flood of {}",
        sent.load(Ordering::Relaxed)
    );
    c.session("destroy", json!({"session_id": id}))
        .expect("destroy the echo");
    c.session("destroy", json!({"session_id": flooded}))
        .expect("destroy the flooded session");
}
both_backends!(flood_spares_the_api_and_other_handshakes);
