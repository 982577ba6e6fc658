//! Media quality end to end, on both I/O backends: bitrate caps (policing on plain legs, RTCP
//! REMB towards a WebRTC sender), `media` up/down status events, a listener switch that
//! holds video until the new publisher's keyframe, and `slow_link` for a listener that asks
//! for many retransmissions. (Loss recovery itself, NACK and RTX with str0m, is `nack.rs`.)
//!
//! Every wait is bounded; nothing sleeps to synchronise. Policing is time-based (a token
//! bucket), so the assertions are about counts that hold whatever the timing: a burst far
//! above the allowance loses packets, an uncapped one loses none.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::*;

/// 200 packets of 1000 bytes: 1.6 Mbit, far above what 64 kbit/s (plus its burst allowance)
/// admits in the time it takes to send them, however slow the machine.
const BURST: u16 = 200;
const BIG: usize = 1000;

/// Sends `count` RTP packets with `BIG`-byte payloads and 20 ms timestamps; returns nothing
/// (the echo is read separately).
fn blast_big(peer: &Peer, to: SocketAddr, pt: u8, ssrc: u32, seq0: u16, count: u16) {
    for i in 0..count {
        let seq = seq0.wrapping_add(i);
        let mut payload = vec![0u8; BIG];
        payload[..2].copy_from_slice(&seq.to_be_bytes());
        let p = Rtp::new(pt, seq, u32::from(seq) * 160, ssrc, &payload);
        peer.send(to, &p.to_bytes());
    }
}

fn count(info: &Value, leg: usize, key: &str) -> u64 {
    info["media"][leg][key].as_u64().unwrap_or(0)
}

fn policed(info: &Value, leg: usize) -> u64 {
    info["media"][leg]["drops"]["policed"].as_u64().unwrap_or(0)
}

fn plain_echo_bitrate_cap_polices_until_lifted(server: &Server) {
    let mut c = server.client();
    let peer = Peer::new();
    let r = c
        .session(
            "create",
            json!({"type": "echo", "bitrate": 64000,
                   "offer": {"sdp": phone_sdp(peer.port()), "sdp_type": "rtp"}}),
        )
        .expect("capped echo");
    let id = str_of(&r, "session_id");
    let to = server_addr(&sdp_in(&r, "answer"), 0);
    assert_eq!(c.info(&id)["bitrate"], 64000);

    blast_big(&peer, to, 0, 0x64, 0, BURST);
    // Policed packets are not received media: received + policed accounts for every packet.
    let total = u64::from(BURST);
    let info = c.info_until(&id, |i| count(i, 0, "rx_packets") + policed(i, 0) == total);
    let (passed, dropped) = (count(&info, 0, "rx_packets"), policed(&info, 0));
    assert!(dropped > 0, "a burst far above the cap is policed: {info}");
    assert!(passed < total, "{info}");
    assert_eq!(info["media"][0]["drops_total"], dropped, "{info}");
    // What passed comes back, and only that.
    let back = peer.recv_n(passed as usize);
    assert!(back.iter().all(|p| p.payload.len() == BIG));

    c.session("update_media", json!({"session_id": id, "bitrate": 0}))
        .expect("lift the cap");
    assert_eq!(c.info(&id)["bitrate"], 0);
    // Fewer than the socket buffers hold, all of which must come back now.
    let n = 50;
    blast_big(&peer, to, 0, 0x64, BURST, n);
    let got = peer.recv_n(usize::from(n));
    assert_eq!(got[0].payload[..2], BURST.to_be_bytes());
    assert_contiguous(&got);
    let info = c.info(&id);
    assert_eq!(
        policed(&info, 0),
        dropped,
        "nothing policed once lifted: {info}"
    );
}
both_backends!(plain_echo_bitrate_cap_polices_until_lifted);

/// A plain publisher (opus + VP8) into `room` (`None`: a new room) with extra `create` fields.
fn publish_plain(
    c: &mut Client,
    room: Option<&str>,
    extra: Value,
) -> (String, String, Peer, Peer, SocketAddr, SocketAddr) {
    let (audio, video) = (Peer::new(), Peer::new());
    let mut data = json!({"type": "publish",
        "offer": {"sdp": av_sdp(audio.port(), video.port()), "sdp_type": "rtp"},
        "room_audio_codec": "opus", "room_video_codec": "vp8"});
    if let Some(room) = room {
        data["room_id"] = json!(room);
    }
    if let (Some(d), Value::Object(extra)) = (data.as_object_mut(), extra) {
        d.extend(extra);
    }
    let r = c.session("create", data).expect("publish");
    let answer = sdp_in(&r, "answer");
    (
        str_of(&r, "session_id"),
        str_of(&r, "room_id"),
        audio,
        video,
        server_addr(&answer, 0),
        server_addr(&answer, 1),
    )
}

fn room_bitrate_caps_every_publisher(server: &Server) {
    let mut c = server.client();
    // 64 kbit/s for the room (kbps, as NkMedia's room_bitrate).
    let (p1, room, _a1, v1, _, to_v1) = publish_plain(&mut c, None, json!({"room_bitrate": 64}));
    let info = c.info(&p1);
    assert_eq!(
        (info["bitrate"].clone(), info["room_bitrate"].clone()),
        (json!(64000), json!(64))
    );
    let rinfo = c
        .room("get_info", json!({"room_id": room}))
        .expect("room info");
    assert_eq!(rinfo["bitrate"], 64);
    // A second publisher's own, lower cap wins; a higher one does not lift the room's.
    let (p2, ..) = publish_plain(&mut c, Some(&room), json!({"bitrate": 32000}));
    assert_eq!(c.info(&p2)["bitrate"], 32000);
    let (p3, ..) = publish_plain(&mut c, Some(&room), json!({"bitrate": 500000}));
    assert_eq!(c.info(&p3)["bitrate"], 64000);
    c.session("update_media", json!({"session_id": p3, "bitrate": 0}))
        .expect("update");
    assert_eq!(c.info(&p3)["bitrate"], 64000, "the room's cap stays");

    blast_big(&v1, to_v1, 96, 0x77, 0, BURST);
    let total = u64::from(BURST);
    let info = c.info_until(&p1, |i| count(i, 1, "rx_packets") + policed(i, 1) == total);
    assert!(policed(&info, 1) > 0, "{info}");
}
both_backends!(room_bitrate_caps_every_publisher);

/// Waits for the next `status {class:"media"}` event of `id` and returns (media, status).
fn next_media_status(c: &mut Client, id: &str) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = c.wait_event(id, "status");
        let b = &ev["body"];
        if b["class"] == "media" {
            return (str_of(b, "media"), str_of(b, "status"));
        }
        assert!(Instant::now() < deadline, "no media status for {id}");
    }
}

fn media_goes_down_when_the_peer_stops_and_up_when_it_resumes(server: &Server) {
    let mut c = server.client();
    let peer = Peer::new();
    let (id, to) = echo_session(&mut c, &phone_sdp(peer.port()));
    blast(&peer, to, 0, 5, 0, 5);
    peer.recv_n(5);
    assert_eq!(
        next_media_status(&mut c, &id),
        ("audio".into(), "up".into())
    );
    // The peer goes quiet: after 2 s without packets (bounded by the event wait) the stream
    // is down, reported once, and not preceded by a second `up`.
    assert_eq!(
        next_media_status(&mut c, &id),
        ("audio".into(), "down".into())
    );
    blast(&peer, to, 0, 5, 5, 5);
    peer.recv_n(5);
    assert_eq!(
        next_media_status(&mut c, &id),
        ("audio".into(), "up".into())
    );
    assert_eq!(
        next_media_status(&mut c, &id),
        ("audio".into(), "down".into())
    );
}
both_backends!(media_goes_down_when_the_peer_stops_and_up_when_it_resumes);

/// A VP8 RTP packet (RFC 7741): payload descriptor S=1, PID 0, then the VP8 payload header
/// whose P bit is 0 for a key frame; `tag` follows, to recognise the packet.
fn vp8(seq: u16, ssrc: u32, key: bool, tag: &[u8]) -> Rtp {
    let mut payload = vec![0x10, if key { 0x10 } else { 0x11 }, 0x00, 0x00];
    payload.extend_from_slice(tag);
    Rtp::new(96, seq, u32::from(seq) * 3000, ssrc, &payload)
}

fn switch_holds_video_until_the_new_publishers_keyframe(server: &Server) {
    let mut c = server.client();
    let (p1, room, _a1, v1, _, to_v1) = publish_plain(&mut c, None, json!({}));
    let (p2, _, a2, v2, to_a2, to_v2) = publish_plain(&mut c, Some(&room), json!({}));
    let PlainListener {
        id: lid,
        audio: la,
        video: lv,
        ..
    } = listen_plain(&mut c, &p1);

    let send = |peer: &Peer, to: SocketAddr, p: &Rtp| peer.send(to, &p.to_bytes());
    for seq in 0..3 {
        send(&v1, to_v1, &vp8(seq, 1, seq == 0, b"one"));
    }
    let mut got = lv.recv_n(3);
    assert!(got.iter().all(|p| p.payload.ends_with(b"one")));

    c.session(
        "set_type",
        json!({"session_id": lid, "type": "listen", "publisher_id": p2}),
    )
    .expect("switch");
    // Inter frames from the new publisher are held...
    for seq in 0..5 {
        send(&v2, to_v2, &vp8(5000 + seq, 2, false, b"delta"));
    }
    c.info_until(&p2, |i| i["media"][1]["drops"]["waiting_keyframe"] == 5);
    // ...audio is not...
    let audio = Rtp::new(111, 7, 960, 3, b"audio two");
    send(&a2, to_a2, &audio);
    assert_eq!(la.recv_n(1)[0].payload, audio.payload);
    // ...and the keyframe releases video: the listener's next packet is that keyframe.
    send(&v2, to_v2, &vp8(5005, 2, true, b"key"));
    send(&v2, to_v2, &vp8(5006, 2, false, b"after"));
    let after = lv.recv_n(2);
    assert!(after[0].payload.ends_with(b"key"), "{:?}", after[0]);
    assert!(after[1].payload.ends_with(b"after"), "{:?}", after[1]);
    got.extend(after);
    assert_contiguous(&got);
    assert!(
        got.iter().all(|p| p.ssrc == got[0].ssrc),
        "one SSRC across the switch"
    );
}
both_backends!(switch_holds_video_until_the_new_publishers_keyframe);

// ----- WebRTC: REMB towards a str0m publisher -----

mod remb {
    //! A minimal str0m publisher that records the REMB estimates it is sent (the shared
    //! `WebrtcPeer` does not surface `Event::EgressBitrateEstimate`).

    use std::io::ErrorKind;
    use std::net::{SocketAddr, UdpSocket};
    use std::time::{Duration, Instant};

    use sluice_tests::webrtc_peer::str0m;
    use str0m::bwe::BweKind;
    use str0m::change::{SdpAnswer, SdpPendingOffer};
    use str0m::format::Codec;
    use str0m::media::{Direction, MediaKind, MediaTime, Mid};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    pub struct Publisher {
        rtc: Rtc,
        socket: UdpSocket,
        local: SocketAddr,
        pending: Option<SdpPendingOffer>,
        video: Option<Mid>,
        next_timeout: Instant,
        pub connected: bool,
        pub failure: Option<String>,
        /// REMB estimates received, in bits per second.
        pub rembs: Vec<u64>,
        rtp_time: u64,
        buf: Vec<u8>,
    }

    impl Publisher {
        pub fn new() -> Publisher {
            let mut rtc = Rtc::builder()
                .clear_codecs()
                .enable_opus(true, false)
                .enable_vp8(true)
                .build(Instant::now());
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let local = socket.local_addr().expect("local address");
            let host = Candidate::host(local, "udp").expect("host candidate");
            rtc.add_local_candidate(host).expect("candidate");
            Publisher {
                rtc,
                socket,
                local,
                pending: None,
                video: None,
                next_timeout: Instant::now(),
                connected: false,
                failure: None,
                rembs: Vec::new(),
                rtp_time: 10_000,
                buf: vec![0; 2000],
            }
        }

        /// A sendonly video offer.
        pub fn offer(&mut self) -> String {
            let mut api = self.rtc.sdp_api();
            self.video =
                Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
            let (offer, pending) = api.apply().expect("changes");
            self.pending = Some(pending);
            self.drain();
            offer.to_sdp_string()
        }

        pub fn accept_answer(&mut self, sdp: &str) {
            let answer = SdpAnswer::from_sdp_string(sdp).expect("answer SDP");
            let pending = self.pending.take().expect("pending offer");
            self.rtc
                .sdp_api()
                .accept_answer(pending, answer)
                .expect("accept answer");
            self.drain();
        }

        /// One small VP8 key frame.
        pub fn send_video(&mut self) {
            let mid = self.video.expect("video offered");
            let pt = self
                .rtc
                .codec_config()
                .params()
                .iter()
                .find(|p| p.spec().codec == Codec::Vp8)
                .map(|p| p.pt())
                .expect("VP8 configured");
            self.rtp_time += 3000;
            let frame = vec![
                0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x10, 0x00, 0x10, 0x00, 7, 7,
            ];
            let time = MediaTime::from_90khz(self.rtp_time);
            let w = self.rtc.writer(mid).expect("writer");
            w.write(pt, Instant::now(), time, frame).expect("write");
            self.drain();
        }

        /// Drives the loop until `done` holds or `within` has passed; `tick` runs every
        /// `every` meanwhile (e.g. to keep media flowing).
        pub fn run_until(
            &mut self,
            within: Duration,
            every: Duration,
            mut tick: impl FnMut(&mut Self),
            done: impl Fn(&Self) -> bool,
        ) -> bool {
            let deadline = Instant::now() + within;
            let mut next_tick = Instant::now();
            while !done(self) {
                if self.failure.is_some() || Instant::now() >= deadline {
                    return false;
                }
                if Instant::now() >= next_tick {
                    next_tick = Instant::now() + every;
                    tick(self);
                }
                self.step();
            }
            true
        }

        fn step(&mut self) {
            let now = Instant::now();
            if self.next_timeout <= now {
                self.input(Input::Timeout(now));
                return;
            }
            let wait = (self.next_timeout - now)
                .min(Duration::from_millis(5))
                .max(Duration::from_micros(100));
            self.socket.set_read_timeout(Some(wait)).expect("timeout");
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    let data = self.buf[..n].to_vec();
                    if let Ok(r) = Receive::new(Protocol::Udp, source, self.local, &data) {
                        self.input(Input::Receive(Instant::now(), r));
                    }
                }
                Err(e) => match e.kind() {
                    ErrorKind::WouldBlock
                    | ErrorKind::TimedOut
                    | ErrorKind::Interrupted
                    | ErrorKind::ConnectionRefused => {}
                    _ => panic!("UDP receive: {e}"),
                },
            }
        }

        fn input(&mut self, input: Input) {
            match self.rtc.handle_input(input) {
                Ok(()) => self.drain(),
                Err(e) => self.failure = Some(format!("handle_input: {e}")),
            }
        }

        fn drain(&mut self) {
            loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        self.next_timeout = t;
                        return;
                    }
                    Ok(Output::Transmit(t)) => {
                        self.socket
                            .send_to(&t.contents, t.destination)
                            .expect("UDP send");
                    }
                    Ok(Output::Event(Event::Connected)) => self.connected = true,
                    Ok(Output::Event(Event::EgressBitrateEstimate(BweKind::Remb {
                        estimate,
                        ..
                    }))) => self.rembs.push(estimate.as_u64()),
                    Ok(Output::Event(_)) => {}
                    Err(e) => {
                        self.failure = Some(format!("poll_output: {e}"));
                        return;
                    }
                }
            }
        }
    }
}

fn webrtc_publisher_receives_remb_at_the_cap(server: &Server) {
    const CAP: u64 = 150_000;
    let mut c = server.client();
    let mut p = remb::Publisher::new();
    let offer = p.offer();
    let r = c
        .session(
            "create",
            json!({"type": "publish", "bitrate": CAP, "offer": {"sdp": offer}}),
        )
        .expect("publish");
    let id = str_of(&r, "session_id");
    p.accept_answer(&sdp_in(&r, "answer"));
    let up = p.run_until(WAIT, Duration::from_secs(1), |_| {}, |p| p.connected);
    assert!(up, "publisher connects: {:?}", p.failure);
    // The REMB names the SSRCs the server heard: keep video flowing until one arrives (the
    // server repeats it every second).
    let got = p.run_until(
        WAIT,
        Duration::from_millis(100),
        remb::Publisher::send_video,
        |p| !p.rembs.is_empty(),
    );
    assert!(
        got,
        "no REMB within {WAIT:?}: {:?}; {}",
        p.failure,
        c.info(&id)
    );
    assert_eq!(p.rembs[0], CAP, "REMB at the configured cap: {:?}", p.rembs);
    // A new cap goes out at once.
    c.session("update_media", json!({"session_id": id, "bitrate": 80_000}))
        .expect("update");
    let changed = p.run_until(
        WAIT,
        Duration::from_millis(100),
        remb::Publisher::send_video,
        |p| p.rembs.contains(&80_000),
    );
    assert!(changed, "the new cap reaches the sender: {:?}", p.rembs);
    assert_eq!(c.info(&id)["bitrate"], 80_000);
}
both_backends!(webrtc_publisher_receives_remb_at_the_cap);

/// The RTCP port of a plain (non-muxed) leg whose RTP port is `rtp`.
fn rtcp_of(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port() + 1)
}

/// A generic NACK (RFC 4585 §6.2.1) for `seqs` of `media`: one FCI entry per number.
fn generic_nack(media: u32, seqs: &[u16]) -> Vec<u8> {
    let mut p = vec![0x81, 205];
    p.extend_from_slice(&(2 + seqs.len() as u16).to_be_bytes());
    p.extend_from_slice(&0x1111_2222u32.to_be_bytes());
    p.extend_from_slice(&media.to_be_bytes());
    for s in seqs {
        p.extend_from_slice(&s.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    }
    p
}

/// A plain listener on a bad link NACKs everything it gets. It did not negotiate NACK (an
/// RTP/AVP answer), so nothing is resent and no cache is kept for it, but its NACK rate is
/// what `slow_link` reports: far above 5 % of what it is sent, every second.
fn plain_listener_nacking_much_gets_a_slow_link_status(server: &Server) {
    let mut c = server.client();
    let (p1, _room, _a1, v1, _, to_v1) = publish_plain(&mut c, None, json!({}));
    let PlainListener {
        id: lid,
        video: lv,
        offer,
        ..
    } = listen_plain(&mut c, &p1);
    let l_rtcp = rtcp_of(server_addr(&offer, 1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    // Media and NACKs flow from another thread while this one waits for the event; both
    // are bounded by `WAIT`.
    let load = std::thread::spawn(move || {
        lv.rtp
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let deadline = Instant::now() + WAIT;
        let mut seq = 0u16;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
            for _ in 0..10 {
                v1.send(to_v1, &vp8(seq, 7, seq == 0, b"lossy").to_bytes());
                seq = seq.wrapping_add(1);
            }
            let mut got = Vec::new();
            while got.len() < 10
                && let Some((d, _)) = lv.recv()
            {
                got.extend(Rtp::parse(&d).filter(|_| !matches!(d[1], 200 | 201)));
            }
            if let Some(first) = got.first() {
                let seqs: Vec<u16> = got.iter().map(|p| p.seq).collect();
                lv.send(l_rtcp, &generic_nack(first.ssrc, &seqs));
            }
        }
    });
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let ev = c.wait_event(&lid, "status");
        if ev["body"]["class"] == "slow_link" {
            break ev["body"].clone();
        }
        assert!(Instant::now() < deadline, "no slow_link for {lid}");
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("load thread");
    assert_eq!(body["media"], json!(["video"]), "{body}");
    let (nacks, packets) = (body["nacks"].as_u64(), body["packets"].as_u64());
    assert!(
        matches!((nacks, packets), (Some(n), Some(p)) if p >= 20 && n * 20 > p),
        "{body}"
    );
    let info = c.info(&lid);
    assert!(count(&info, 1, "nack_received") > 0, "{info}");
    assert_eq!(
        count(&info, 1, "retransmitted"),
        0,
        "not negotiated: {info}"
    );
}
both_backends!(plain_listener_nacking_much_gets_a_slow_link_status);
