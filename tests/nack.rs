//! Loss recovery end to end, on both I/O backends: a str0m listener (an independent WebRTC
//! stack) gets VP8 from a plain publisher through the server, across a small UDP relay that
//! drops chosen packets on their way to the listener. str0m notices the gaps and NACKs them;
//! the server answers from its retransmission cache, as RTX (RFC 4588) because the listener
//! negotiated it, and asks the publisher for the one packet it never got itself. The
//! listener must end up with every frame, in order. A second scenario drops a str0m
//! publisher's packets before the server: str0m repairs them on its RTX stream, which the
//! server unwraps for the listener.
//!
//! The relay is honest about ICE: the server is ICE-lite, so it answers checks wherever they
//! come from, and str0m is only told the relay's address as the server's candidate. The test
//! runs every socket from one thread (str0m's loop, the relay, the publisher) with bounded
//! loops and deadlines; nothing sleeps and no timing is asserted.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use serde_json::{Value, json};
use sluice_tests::webrtc_peer::{Direction, MediaKind, STEP, WebrtcPeer};
use sluice_tests::*;

/// Frames the publisher sends (one RTP packet each), and which are lost where.
const FRAMES: u16 = 40;
const FIRST_SEQ: u16 = 1000;
/// Never reaches the server at first: the server must ask the publisher for it.
const LOST_UPSTREAM: u16 = FIRST_SEQ + 20;
/// Dropped once by the relay (offsets from the listener's first video packet): the
/// server's cache must serve them. Two in a row, and none among the first packets: str0m
/// 0.25 was seen to give up on a loss at offset 5 although its repair arrived (its NACK
/// window is still settling then), which is not what this test is about.
const LOST_DOWNSTREAM: [u16; 3] = [9, 10, 15];

/// A UDP relay between str0m (`front`) and the server (`back`) that drops chosen RTP
/// packets once, towards str0m or (`upstream`) towards the server. SRTP leaves the RTP
/// header in the clear, so it can tell media from RTX by payload type.
struct Relay {
    upstream: bool,
    front: UdpSocket,
    back: UdpSocket,
    server: SocketAddr,
    client: Option<SocketAddr>,
    video_pt: u8,
    rtx_pt: u8,
    first_seq: Option<u16>,
    dropped: Vec<u16>,
    rtx_passed: usize,
}

impl Relay {
    fn new(server: SocketAddr, video_pt: u8, rtx_pt: u8, upstream: bool) -> Relay {
        let bind = || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind relay socket");
            s.set_nonblocking(true).expect("non-blocking");
            s
        };
        Relay {
            upstream,
            front: bind(),
            back: bind(),
            server,
            client: None,
            video_pt,
            rtx_pt,
            first_seq: None,
            dropped: Vec::new(),
            rtx_passed: 0,
        }
    }

    fn front_addr(&self) -> SocketAddr {
        self.front.local_addr().expect("bound")
    }

    /// Moves every datagram waiting on either side; returns how many.
    fn pump(&mut self) -> usize {
        let mut moved = 0;
        let mut buf = [0u8; 2048];
        while let Some((n, from)) = recv_now(&self.front, &mut buf) {
            self.client = Some(from);
            moved += 1;
            if self.upstream && self.drops(&buf[..n]) {
                continue;
            }
            self.back
                .send_to(&buf[..n], self.server)
                .expect("to server");
        }
        while let Some((n, _)) = recv_now(&self.back, &mut buf) {
            moved += 1;
            let Some(client) = self.client else { continue };
            if !self.upstream && self.drops(&buf[..n]) {
                continue;
            }
            self.front.send_to(&buf[..n], client).expect("to str0m");
        }
        moved
    }

    /// RTP (not RTCP, RFC 5761 §4) of the video stream at a chosen offset, the first time.
    fn drops(&mut self, p: &[u8]) -> bool {
        if p.len() < 12 || p[0] >> 6 != 2 || (192..=223).contains(&p[1]) {
            return false;
        }
        let pt = p[1] & 0x7f;
        if pt == self.rtx_pt {
            self.rtx_passed += 1;
        }
        if pt != self.video_pt {
            return false;
        }
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let first = *self.first_seq.get_or_insert(seq);
        let offset = seq.wrapping_sub(first);
        if LOST_DOWNSTREAM.contains(&offset) && !self.dropped.contains(&offset) {
            self.dropped.push(offset);
            return true;
        }
        false
    }
}

fn recv_now(s: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    loop {
        match s.recv_from(buf) {
            Ok(r) => return Some(r),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // WouldBlock, or an ICMP error from an earlier send: nothing to move now.
            Err(_) => return None,
        }
    }
}

/// One single-packet VP8 frame (RFC 7741): descriptor with S=1, then a key or inter frame
/// header and a tag naming the frame; marker set (last packet of the frame).
fn frame(i: u16) -> (Vec<u8>, Vec<u8>) {
    let tag = format!("frame-{i:03}").into_bytes();
    let mut payload = vec![0x10];
    if i == 0 {
        payload.extend_from_slice(&[0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x10, 0x00, 0x10, 0x00]);
    } else {
        payload.extend_from_slice(&[0x11, 0x00, 0x00]);
    }
    payload.extend_from_slice(&tag);
    let seq = FIRST_SEQ + i;
    let mut rtp = Rtp::new(96, seq, 90_000 + u32::from(i) * 3000, 0x5eed, &payload);
    rtp.marker = true;
    (rtp.to_bytes(), tag)
}

/// The sequence numbers named by the generic NACKs (RFC 4585 §6.2.1) in a compound packet.
fn nacked(mut p: &[u8]) -> Vec<u16> {
    let mut seqs = Vec::new();
    while p.len() >= 4 {
        let len = (usize::from(u16::from_be_bytes([p[2], p[3]])) + 1) * 4;
        if len > p.len() {
            break;
        }
        if p[1] == 205 && p[0] & 0x1f == 1 {
            for fci in p[12..len].chunks_exact(4) {
                let pid = u16::from_be_bytes([fci[0], fci[1]]);
                let blp = u16::from_be_bytes([fci[2], fci[3]]);
                seqs.push(pid);
                seqs.extend((0..16).filter(|b| blp & (1 << b) != 0).map(|b| pid + b + 1));
            }
        }
        p = &p[len..];
    }
    seqs
}

/// The value of the first `a=<name>:<value>` line of `sdp` that `pick` accepts.
fn attribute<T>(sdp: &str, name: &str, pick: impl Fn(&str) -> Option<T>) -> Option<T> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=")?.strip_prefix(name))
        .find_map(pick)
}

fn count(info: &Value, key: &str) -> u64 {
    info["media"][0][key].as_u64().unwrap_or(0)
}

fn listener_recovers_dropped_packets_through_nack_and_rtx(server: &Server) {
    let mut c = server.client();
    let publisher = Peer::new();
    publisher
        .rtcp
        .set_nonblocking(true)
        .expect("non-blocking RTCP");
    let sdp = plain_sdp(&[(
        "video",
        publisher.port(),
        "96",
        &["rtpmap:96 VP8/90000", "sendonly"],
    )]);
    let r = c
        .session(
            "create",
            json!({"type": "publish", "room_video_codec": "vp8",
                   "offer": {"sdp": sdp, "sdp_type": "rtp"}}),
        )
        .expect("publish");
    let pid = str_of(&r, "session_id");
    let to_server = server_addr(&sdp_in(&r, "answer"), 0);

    let r = c
        .session("create", json!({"type": "listen", "publisher_id": pid}))
        .expect("listen");
    let lid = str_of(&r, "session_id");
    let offer = sdp_in(&r, "offer");
    // The server offers RTX for VP8, with its RTX SSRC in an FID group.
    let rtx_pt = attribute(&offer, "fmtp:", |v| {
        let (pt, params) = v.split_once(' ')?;
        (params.trim() == "apt=96").then(|| pt.parse::<u8>().ok())?
    })
    .unwrap_or_else(|| panic!("no RTX for VP8 in the offer:\n{offer}"));
    assert!(offer.contains("a=ssrc-group:FID "), "{offer}");
    let candidate = attribute(&offer, "candidate:", |v| {
        let f: Vec<&str> = v.split_whitespace().collect();
        format!("{}:{}", f.get(4)?, f.get(5)?)
            .parse::<SocketAddr>()
            .ok()
    })
    .expect("server candidate");

    let mut relay = Relay::new(candidate, 96, rtx_pt, false);
    let front = relay.front_addr();
    let relayed = offer.replace(
        &format!("{} {} typ host", candidate.ip(), candidate.port()),
        &format!("{} {} typ host", front.ip(), front.port()),
    );
    let mut peer = WebrtcPeer::new();
    let answer = peer.answer(&relayed).expect("str0m answers");
    assert!(answer.contains("apt=96"), "str0m takes RTX:\n{answer}");
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");

    // Both ends up: str0m connected, and the server's keys in place (its `webrtc` state
    // is "up" once the data plane has them, before any later packet is forwarded).
    let deadline = Instant::now() + WAIT;
    let mut up = false;
    while !up && peer.failure().is_none() && Instant::now() < deadline {
        relay.pump();
        peer.step(STEP);
        up = peer.connected() && c.info(&lid)["webrtc"]["state"] == "up";
    }
    assert!(up, "{}; {}", peer.describe(), c.info(&lid));

    // Every frame but the one lost upstream goes out at once.
    let frames: Vec<(Vec<u8>, Vec<u8>)> = (0..FRAMES).map(frame).collect();
    for (i, (bytes, _)) in frames.iter().enumerate() {
        if FIRST_SEQ + i as u16 != LOST_UPSTREAM {
            publisher.send(to_server, bytes);
        }
    }
    let have_all = |p: &WebrtcPeer| p.received_of(MediaKind::Video).count() >= frames.len();
    let mut asked_upstream = Vec::new();
    let mut buf = [0u8; 2048];
    while !have_all(&peer) && peer.failure().is_none() && Instant::now() < deadline {
        relay.pump();
        peer.step(STEP);
        relay.pump();
        // The publisher answers the server's NACKs: what it "lost" is sent again.
        while let Some((n, _)) = recv_now(&publisher.rtcp, &mut buf) {
            for seq in nacked(&buf[..n]) {
                asked_upstream.push(seq);
                if let Some((bytes, _)) = frames.get(usize::from(seq.wrapping_sub(FIRST_SEQ))) {
                    publisher.send(to_server, bytes);
                }
            }
        }
    }

    let got: Vec<_> = peer.received_of(MediaKind::Video).collect();
    let tags: Vec<&[u8]> = got.iter().map(|r| r.body()).collect();
    let want: Vec<&[u8]> = frames.iter().map(|(_, t)| &t[..]).collect();
    let diag = format!(
        "relay dropped {:?}, RTX passed {}, asked upstream {asked_upstream:?}; {}; \
         listener {}; publisher {}",
        relay.dropped,
        relay.rtx_passed,
        peer.describe(),
        c.info(&lid)["media"],
        c.info(&pid)["media"],
    );
    assert_eq!(
        relay.dropped.len(),
        LOST_DOWNSTREAM.len(),
        "the relay dropped: {diag}"
    );
    assert!(
        tags.iter().zip(&want).all(|(a, b)| a.ends_with(b)) && tags.len() == want.len(),
        "every frame, in order: got {:?}; {diag}",
        tags.iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(got.iter().all(|r| r.contiguous), "no gap left: {diag}");
    assert!(
        asked_upstream.contains(&LOST_UPSTREAM),
        "the server asked the publisher for what it lacked: {diag}"
    );
    assert!(
        relay.rtx_passed >= LOST_DOWNSTREAM.len(),
        "repairs went out as RTX: {diag}"
    );
    // What the listener asked for was served from the cache, the rest asked upstream.
    let info = c.info_until(&lid, |i| {
        count(i, "retransmitted") >= LOST_DOWNSTREAM.len() as u64 && count(i, "nack_forwarded") >= 1
    });
    assert!(
        count(&info, "nack_received") > LOST_DOWNSTREAM.len() as u64,
        "{info}"
    );
}
both_backends!(listener_recovers_dropped_packets_through_nack_and_rtx);

/// `(PT, RTX PT)` of VP8 in an SDP (`a=rtpmap:N VP8/90000`, `a=fmtp:M apt=N`).
fn vp8_pts(sdp: &str) -> (u8, u8) {
    let vp8: u8 = attribute(sdp, "rtpmap:", |v| {
        let (pt, codec) = v.split_once(' ')?;
        (codec == "VP8/90000").then(|| pt.parse().ok())?
    })
    .unwrap_or_else(|| panic!("no VP8 in\n{sdp}"));
    let rtx = attribute(sdp, "fmtp:", |v| {
        let (pt, params) = v.split_once(' ')?;
        (params.trim() == format!("apt={vp8}")).then(|| pt.parse().ok())?
    })
    .unwrap_or_else(|| panic!("no RTX for VP8 in\n{sdp}"));
    (vp8, rtx)
}

/// Where an SDP's first host candidate points.
fn candidate_of(sdp: &str) -> SocketAddr {
    attribute(sdp, "candidate:", |v| {
        let f: Vec<&str> = v.split_whitespace().collect();
        format!("{}:{}", f.get(4)?, f.get(5)?).parse().ok()
    })
    .expect("a host candidate")
}

/// The same loss, upstream: a str0m publisher's packets are dropped on their way to the
/// server, whose cache therefore lacks them when the (str0m) listener NACKs. The server asks
/// the publisher, str0m resends on its RTX stream, and the server unwraps that to the
/// original packet for the listener.
fn publisher_rtx_repairs_what_the_server_lost(server: &Server) {
    let mut c = server.client();
    let mut publisher = WebrtcPeer::new();
    let offer = publisher.offer_with(None, Some(Direction::SendOnly));
    let r = c
        .session(
            "create",
            json!({"type": "publish", "offer": {"sdp": offer}}),
        )
        .expect("publish");
    let pid = str_of(&r, "session_id");
    let answer = sdp_in(&r, "answer");
    let (vp8, rtx) = vp8_pts(&answer);
    let at = candidate_of(&answer);
    let mut relay = Relay::new(at, vp8, rtx, true);
    let front = relay.front_addr();
    let relayed = answer.replace(
        &format!("{} {} typ host", at.ip(), at.port()),
        &format!("{} {} typ host", front.ip(), front.port()),
    );
    publisher.accept_answer(&relayed).expect("str0m accepts");

    let r = c
        .session("create", json!({"type": "listen", "publisher_id": pid}))
        .expect("listen");
    let lid = str_of(&r, "session_id");
    let mut listener = WebrtcPeer::new();
    let answer = listener
        .answer(&sdp_in(&r, "offer"))
        .expect("str0m answers");
    c.session(
        "set_answer",
        json!({"session_id": lid, "answer": {"sdp": answer}}),
    )
    .expect("set_answer");

    let deadline = Instant::now() + WAIT;
    let mut up = false;
    while !up && Instant::now() < deadline {
        relay.pump();
        publisher.step(STEP / 2);
        relay.pump();
        listener.step(STEP / 2);
        up = publisher.connected()
            && listener.connected()
            && c.info(&pid)["webrtc"]["state"] == "up"
            && c.info(&lid)["webrtc"]["state"] == "up";
    }
    assert!(
        up,
        "{}; {}; {}",
        publisher.describe(),
        listener.describe(),
        c.info(&lid)
    );

    let mut sent = Vec::new();
    for i in 0..FRAMES {
        let tag = format!("frame-{i:03}").into_bytes();
        publisher.send_video(&tag, i == 0);
        sent.push(tag);
        relay.pump();
    }
    let have_all = |p: &WebrtcPeer| p.received_of(MediaKind::Video).count() >= sent.len();
    while !have_all(&listener) && Instant::now() < deadline {
        relay.pump();
        publisher.step(STEP / 2);
        relay.pump();
        listener.step(STEP / 2);
    }
    let got: Vec<&[u8]> = listener
        .received_of(MediaKind::Video)
        .map(|r| r.body())
        .collect();
    let diag = format!(
        "relay dropped {:?}, RTX passed {}; {}; {}; listener {}; publisher {}",
        relay.dropped,
        relay.rtx_passed,
        publisher.describe(),
        listener.describe(),
        c.info(&lid)["media"],
        c.info(&pid)["media"],
    );
    assert_eq!(relay.dropped.len(), LOST_DOWNSTREAM.len(), "{diag}");
    assert_eq!(got, sent, "every frame, in order: {diag}");
    assert!(
        relay.rtx_passed >= LOST_DOWNSTREAM.len(),
        "str0m repaired with RTX: {diag}"
    );
    let info = c.info_until(&lid, |i| {
        count(i, "nack_forwarded") >= LOST_DOWNSTREAM.len() as u64
    });
    assert_eq!(
        count(&info, "retransmitted"),
        0,
        "nothing was cached: {info}"
    );
}
both_backends!(publisher_rtx_repairs_what_the_server_lost);
