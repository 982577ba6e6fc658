//! A WebRTC peer for the end-to-end scenarios, built on str0m (an independent WebRTC stack from
//! crates.io) so that the tests play the browser: full ICE (controlling against an ICE-lite
//! server), DTLS-SRTP, BUNDLE and rtcp-mux over one UDP socket on 127.0.0.1.
//!
//! Blocking and single-threaded: str0m is sans-IO, and [`WebrtcPeer::run_until`] drives its loop
//! (`poll_output` → transmit / event / timeout, then `handle_input` with one datagram or the
//! timeout). The socket read timeout is str0m's own next timeout, capped at [`STEP`], so nothing
//! sleeps to synchronise and every wait is bounded by the caller's deadline. Several peers in one
//! test thread are driven together with [`run_all`].
//!
//! Media is written and read at str0m's frame level (`Writer::write`, `Event::MediaData`): an
//! audio frame is one RTP packet, a video frame is one VP8 frame (split into RTP packets and
//! reassembled by str0m). What arrives in [`WebrtcPeer::received`] is the decrypted frame, so
//! "intact" is a byte comparison with what was sent.
//!
//! Typical use against the server:
//! ```ignore
//! let mut p = WebrtcPeer::new();
//! let offer = p.offer(true, true);
//! let reply = c.session("create", json!({"type": "echo", "offer": {"sdp": offer}}))?;
//! p.accept_answer(&sdp_in(&reply, "answer"))?;
//! assert!(p.run_until(WAIT, |p| p.connected()), "{}", p.describe());
//! p.send_audio(b"hello");
//! let frame = p.send_video(b"world", true);
//! assert!(p.run_until(WAIT, |p| p.received().len() == 2));
//! ```

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub use str0m;
pub use str0m::IceConnectionState;
pub use str0m::media::{Direction, MediaKind, Mid};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaTime, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

pub use str0m::channel::ChannelId;

/// Longest single socket wait inside the loop. Short enough that several peers driven in turn
/// (see [`run_all`]) keep each other's handshakes moving.
pub const STEP: Duration = Duration::from_millis(5);

/// One media frame that arrived, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Payload type as negotiated (the RTP header's PT).
    pub pt: u8,
    /// The frame: for audio the RTP payload, for VP8 the reassembled frame (payload descriptors
    /// removed, VP8 payload header kept). Compare with what `send_audio`/`send_video` returned.
    pub data: Vec<u8>,
    /// Extended RTP timestamp, in the codec's clock rate.
    pub rtp_time: u64,
    /// Extended sequence numbers of the first and last RTP packet of this frame.
    pub seq: (u64, u64),
    /// VP8 key frame (P bit clear).
    pub keyframe: bool,
    /// str0m saw no gap before this frame.
    pub contiguous: bool,
}

impl Received {
    /// The payload as given to `send_audio`/`send_video`: for video the VP8 header that
    /// `send_video` prepends is stripped again.
    pub fn body(&self) -> &[u8] {
        if self.kind == MediaKind::Video && !self.data.is_empty() {
            let skip = if self.data[0] & 1 == 0 {
                VP8_KEY_HEADER.len()
            } else {
                VP8_DELTA_HEADER.len()
            };
            &self.data[skip.min(self.data.len())..]
        } else {
            &self.data
        }
    }
}

/// One data-channel message that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage {
    pub id: ChannelId,
    /// Sent as binary (PPID 53/57) rather than text (51/56).
    pub binary: bool,
    pub data: Vec<u8>,
}

/// One media section as this peer knows it (its own offer or the remote offer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaInfo {
    pub mid: Mid,
    pub kind: MediaKind,
    /// Our direction for this media.
    pub direction: Direction,
}

/// A VP8 key frame header (RFC 6386 §9.1): P=0, version 0, show_frame, first partition size 0,
/// start code, 16x16. Plausible enough for any depacketizer or keyframe detector.
const VP8_KEY_HEADER: [u8; 10] = [0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x10, 0x00, 0x10, 0x00];
/// A VP8 inter frame header: P=1, show_frame.
const VP8_DELTA_HEADER: [u8; 3] = [0x11, 0x00, 0x00];

/// Audio frames are 20 ms apart, video frames 1/30 s.
const AUDIO_FRAMES_PER_SEC: u64 = 50;
const VIDEO_FRAMES_PER_SEC: u64 = 30;
/// First RTP time of each stream: fixed, so runs are reproducible.
const FIRST_RTP_TIME: u64 = 10_000;

struct Clock {
    mid: Mid,
    next: u64,
}

/// A str0m `Rtc` and its UDP socket on 127.0.0.1.
pub struct WebrtcPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    candidate: String,
    pending: Option<SdpPendingOffer>,
    media: Vec<MediaInfo>,
    next_timeout: Instant,
    connected: bool,
    ice_state: IceConnectionState,
    failure: Option<String>,
    received: Vec<Received>,
    keyframe_requests: Vec<(Mid, KeyframeRequestKind)>,
    /// Data channels: opened (with their label), messages received, closed.
    channels_open: Vec<(ChannelId, String)>,
    channel_messages: Vec<ChannelMessage>,
    channels_closed: Vec<ChannelId>,
    clocks: Vec<Clock>,
    datagrams_in: u64,
    datagrams_out: u64,
    /// STUN binding requests received and success responses sent (ICE connectivity checks).
    checks_in: u64,
    checks_passed: u64,
    buf: Vec<u8>,
}

impl Default for WebrtcPeer {
    fn default() -> Self {
        Self::new()
    }
}

impl WebrtcPeer {
    /// Opus, PCMU and PCMA for audio (in that order of preference), VP8 for video: what the
    /// server forwards without transcoding, and what a SIP phone on the other leg can take.
    pub fn new() -> WebrtcPeer {
        Self::with_config(|c| c)
    }

    /// As [`WebrtcPeer::new`], with the str0m configuration adjusted by `tweak` (other codecs,
    /// RTCP intervals...).
    pub fn with_config(tweak: impl FnOnce(RtcConfig) -> RtcConfig) -> WebrtcPeer {
        let config = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .enable_vp8(true);
        let mut rtc = tweak(config).build(Instant::now());
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
        let local = socket.local_addr().expect("local address");
        let host = Candidate::host(local, "udp").expect("host candidate");
        let candidate = rtc
            .add_local_candidate(host)
            .expect("str0m accepts the loopback host candidate")
            .to_sdp_string();
        let mut peer = WebrtcPeer {
            rtc,
            socket,
            local,
            candidate,
            pending: None,
            media: Vec::new(),
            next_timeout: Instant::now(),
            connected: false,
            ice_state: IceConnectionState::New,
            failure: None,
            received: Vec::new(),
            keyframe_requests: Vec::new(),
            channels_open: Vec::new(),
            channel_messages: Vec::new(),
            channels_closed: Vec::new(),
            clocks: Vec::new(),
            datagrams_in: 0,
            datagrams_out: 0,
            checks_in: 0,
            checks_passed: 0,
            buf: vec![0; 2000],
        };
        peer.drain();
        peer
    }

    /// The UDP address of this peer (its only ICE candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Our host candidate as an SDP attribute value (`candidate:...`), for `set_candidate`.
    pub fn candidate(&self) -> &str {
        &self.candidate
    }

    /// An offer with sendrecv audio and/or video (audio first), kept pending for
    /// [`WebrtcPeer::accept_answer`].
    pub fn offer(&mut self, audio: bool, video: bool) -> String {
        self.offer_with(
            audio.then_some(Direction::SendRecv),
            video.then_some(Direction::SendRecv),
        )
    }

    /// An offer with the given directions (`None`: no such m-line), e.g. `SendOnly` for a
    /// publisher. Audio comes first. Panics when both are `None`.
    pub fn offer_with(&mut self, audio: Option<Direction>, video: Option<Direction>) -> String {
        assert!(
            audio.is_some() || video.is_some(),
            "an offer needs at least one m-line"
        );
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        for (kind, dir) in [(MediaKind::Audio, audio), (MediaKind::Video, video)] {
            if let Some(direction) = dir {
                let mid = api.add_media(kind, direction, None, None, None);
                added.push(MediaInfo {
                    mid,
                    kind,
                    direction,
                });
            }
        }
        let (offer, pending) = api.apply().expect("changes to apply");
        self.media.extend(added);
        self.pending = Some(pending);
        self.drain();
        offer.to_sdp_string()
    }

    /// An offer with the given audio/video (either may be `None`, both too) and one data
    /// channel `label` (ordered, reliable, opened in-band with DCEP once SCTP is up).
    pub fn offer_with_channel(
        &mut self,
        audio: Option<Direction>,
        video: Option<Direction>,
        label: &str,
    ) -> (String, ChannelId) {
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        for (kind, dir) in [(MediaKind::Audio, audio), (MediaKind::Video, video)] {
            if let Some(direction) = dir {
                let mid = api.add_media(kind, direction, None, None, None);
                added.push(MediaInfo {
                    mid,
                    kind,
                    direction,
                });
            }
        }
        let channel = api.add_channel(label.to_owned());
        let (offer, pending) = api.apply().expect("changes to apply");
        self.media.extend(added);
        self.pending = Some(pending);
        self.drain();
        (offer.to_sdp_string(), channel)
    }

    /// Data channels open so far (str0m's `ChannelOpen`: our DCEP OPEN was acknowledged).
    pub fn channels_open(&self) -> &[(ChannelId, String)] {
        &self.channels_open
    }

    pub fn channel_open(&self, id: ChannelId) -> bool {
        self.channels_open.iter().any(|(c, _)| *c == id) && !self.channels_closed.contains(&id)
    }

    pub fn channels_closed(&self) -> &[ChannelId] {
        &self.channels_closed
    }

    /// Writes one message on an open channel; false when str0m's send buffer has no room
    /// (see `RtcConfig::set_sctp_max_buffered_amount`). str0m 0.25 mishandles an empty write
    /// (it advances the stream sequence and sends nothing), so an empty `data` panics here.
    pub fn channel_write(&mut self, id: ChannelId, binary: bool, data: &[u8]) -> bool {
        assert!(!data.is_empty(), "str0m 0.25 cannot send an empty message");
        let describe = self.describe();
        let mut channel = self
            .rtc
            .channel(id)
            .unwrap_or_else(|| panic!("no channel {id:?}: {describe}"));
        let written = channel
            .write(binary, data)
            .unwrap_or_else(|e| panic!("channel write: {e}"));
        self.drain();
        written
    }

    /// Opens a data channel in-band (DCEP) on an association that is already up, as a
    /// browser's `createDataChannel` after the first negotiation: no new offer.
    pub fn open_channel(&mut self, label: &str, protocol: &str) -> ChannelId {
        let id = self
            .rtc
            .direct_api()
            .create_data_channel(str0m::channel::ChannelConfig {
                label: label.to_owned(),
                protocol: protocol.to_owned(),
                ..Default::default()
            });
        self.drain();
        id
    }

    /// Closes a data channel (an SCTP stream reset, RFC 8831 §6.7).
    pub fn channel_close(&mut self, id: ChannelId) {
        self.rtc.direct_api().close_data_channel(id);
        self.drain();
    }

    /// Data-channel messages received so far, in arrival order.
    pub fn channel_messages(&self) -> &[ChannelMessage] {
        &self.channel_messages
    }

    /// Trickle ICE: an offer as [`WebrtcPeer::offer_with`] but without `a=candidate` lines, and
    /// the candidates (`candidate:...`) to send separately, all for the first m-line (BUNDLE).
    pub fn trickle_offer(
        &mut self,
        audio: Option<Direction>,
        video: Option<Direction>,
    ) -> (String, Vec<String>) {
        let offer = self.offer_with(audio, video);
        strip_candidates(&offer)
    }

    /// Applies the answer to the pending offer.
    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), String> {
        let pending = self
            .pending
            .take()
            .ok_or("accept_answer without a pending offer")?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| format!("answer SDP: {e}"))?;
        let result = self.rtc.sdp_api().accept_answer(pending, answer);
        self.drain();
        result.map_err(|e| format!("accept_answer: {e}"))
    }

    /// Answers a remote offer (the server offering to a listener or a proxy slave).
    pub fn answer(&mut self, offer_sdp: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(offer_sdp).map_err(|e| format!("offer SDP: {e}"))?;
        let result = self.rtc.sdp_api().accept_offer(offer);
        self.drain();
        let answer = result.map_err(|e| format!("accept_offer: {e}"))?;
        // str0m 0.25 leaves its timers unarmed after accepting an offer of data channels
        // alone (no media change wakes it): its next timeout is "never", so ICE would never
        // start. A timeout now wakes it, as a browser's event loop would.
        self.next_timeout = Instant::now();
        // str0m 0.25 emits `MediaAdded` only on a later poll (after the next input), so the
        // media list is taken from the offer's mids here; our direction is what we answered.
        for mid in offer_sdp.lines().filter_map(|l| l.strip_prefix("a=mid:")) {
            let mid = Mid::from(mid.trim());
            let Some(media) = self.rtc.media(mid) else {
                continue;
            };
            let info = MediaInfo {
                mid,
                kind: media.kind(),
                direction: media.direction(),
            };
            match self.media.iter_mut().find(|m| m.mid == mid) {
                Some(m) => *m = info,
                None => self.media.push(info),
            }
        }
        Ok(answer.to_sdp_string())
    }

    /// A remote candidate learnt out of band (trickle), as `candidate:...` or `a=candidate:...`.
    pub fn add_remote_candidate(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim().trim_start_matches("a=");
        let c = Candidate::from_sdp_string(line).map_err(|e| format!("candidate {line:?}: {e}"))?;
        self.rtc.add_remote_candidate(c);
        self.drain();
        Ok(())
    }

    /// Drives the peer until `done` holds (true) or `within` has passed (false). Once str0m has
    /// failed (see [`WebrtcPeer::failure`]) it returns false at once.
    pub fn run_until<F: FnMut(&Self) -> bool>(&mut self, within: Duration, mut done: F) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            if self.failure.is_some() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.step(deadline - now);
        }
    }

    /// One turn of the loop: waits at most `max_wait` (and at most [`STEP`], and no longer
    /// than str0m's next timeout) for one datagram, feeds it or the timeout, drains the output.
    pub fn step(&mut self, max_wait: Duration) {
        if self.failure.is_some() {
            return;
        }
        let now = Instant::now();
        if self.next_timeout <= now {
            self.input(Input::Timeout(now));
            return;
        }
        let wait = (self.next_timeout - now).min(max_wait).min(STEP);
        // A zero read timeout is an error for std sockets.
        let wait = wait.max(Duration::from_micros(100));
        self.socket
            .set_read_timeout(Some(wait))
            .expect("set read timeout");
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, source)) => {
                self.datagrams_in += 1;
                if stun_type(&self.buf[..n]) == Some(STUN_BINDING_REQUEST) {
                    self.checks_in += 1;
                }
                let at = Instant::now();
                let contents = &self.buf[..n];
                // Anything that is not STUN, DTLS, RTP or RTCP is ignored.
                let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, contents) else {
                    return;
                };
                let result = self.rtc.handle_input(Input::Receive(at, receive));
                self.after_input(result);
            }
            Err(e) => match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted => {
                    if self.next_timeout <= Instant::now() {
                        self.input(Input::Timeout(Instant::now()));
                    }
                }
                // An ICMP port unreachable from an earlier send: not ours to handle.
                ErrorKind::ConnectionRefused => {}
                _ => panic!("UDP receive: {e}"),
            },
        }
    }

    fn input(&mut self, input: Input) {
        let result = self.rtc.handle_input(input);
        self.after_input(result);
    }

    fn after_input(&mut self, result: Result<(), str0m::RtcError>) {
        match result {
            Ok(()) => self.drain(),
            Err(e) => self.fail(format!("handle_input: {e}")),
        }
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    /// Polls str0m until it asks for a timeout: the "every mutation is followed by a full
    /// drain" rule of its run loop.
    fn drain(&mut self) {
        if self.failure.is_some() {
            return;
        }
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.datagrams_out += 1;
                    if stun_type(&t.contents) == Some(STUN_BINDING_SUCCESS) {
                        self.checks_passed += 1;
                    }
                    // Loopback sends do not fail for lack of a listener; a failure here is
                    // the test's environment, not the peer's behaviour.
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination) {
                        panic!("UDP send to {}: {e}", t.destination);
                    }
                }
                Ok(Output::Event(e)) => self.event(e),
                Err(e) => {
                    self.fail(format!("poll_output: {e}"));
                    return;
                }
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::IceConnectionStateChange(s) => self.ice_state = s,
            // Media added by a later remote offer (the first one is listed by `answer`).
            Event::MediaAdded(m) if !self.media.iter().any(|x| x.mid == m.mid) => {
                self.media.push(MediaInfo {
                    mid: m.mid,
                    kind: m.kind,
                    direction: m.direction,
                });
            }
            Event::MediaChanged(m) => {
                if let Some(x) = self.media.iter_mut().find(|x| x.mid == m.mid) {
                    x.direction = m.direction;
                }
            }
            Event::MediaData(d) => {
                let kind = self
                    .media
                    .iter()
                    .find(|x| x.mid == d.mid)
                    .map(|x| x.kind)
                    .unwrap_or(if d.params.spec().codec.is_audio() {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    });
                let keyframe = d.is_keyframe();
                self.received.push(Received {
                    mid: d.mid,
                    kind,
                    pt: *d.pt,
                    data: d.data.to_vec(),
                    rtp_time: d.time.numer(),
                    seq: (**d.seq_range.start(), **d.seq_range.end()),
                    keyframe,
                    contiguous: d.contiguous,
                });
            }
            Event::KeyframeRequest(r) => self.keyframe_requests.push((r.mid, r.kind)),
            Event::ChannelOpen(id, label) => self.channels_open.push((id, label)),
            Event::ChannelData(d) => self.channel_messages.push(ChannelMessage {
                id: d.id,
                binary: d.binary,
                data: d.data,
            }),
            Event::ChannelClose(id) => self.channels_closed.push(id),
            _ => {}
        }
    }

    /// ICE and DTLS are up (str0m's `Event::Connected`); SRTP keys are in place.
    pub fn connected(&self) -> bool {
        self.connected
    }

    pub fn ice_state(&self) -> IceConnectionState {
        self.ice_state
    }

    /// The first error str0m returned (a DTLS fingerprint mismatch shows up here as
    /// "remote fingerprint no match"). After it, the peer is no longer driven.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// ICE connectivity checks (STUN binding requests) that reached this peer.
    pub fn checks_received(&self) -> u64 {
        self.checks_in
    }

    /// Connectivity checks this peer accepted: the binding success responses it sent. str0m
    /// answers a check as it handles it, and drops one that fails its integrity check.
    pub fn checks_accepted(&self) -> u64 {
        self.checks_passed
    }

    /// Media sections, ours and the remote's, in SDP order.
    pub fn media(&self) -> &[MediaInfo] {
        &self.media
    }

    pub fn mid_of(&self, kind: MediaKind) -> Option<Mid> {
        self.media.iter().find(|m| m.kind == kind).map(|m| m.mid)
    }

    /// The payload type we send for `kind`: the remote's preferred one among those negotiated.
    pub fn pt_of(&self, kind: MediaKind) -> Option<u8> {
        let media = self.rtc.media(self.mid_of(kind)?)?;
        media
            .remote_pts()
            .iter()
            .find(|pt| {
                self.rtc
                    .codec_config()
                    .params()
                    .iter()
                    .any(|p| p.pt() == **pt && codec_ok(p.spec().codec, kind))
            })
            .map(|pt| **pt)
    }

    /// Sends one 20 ms audio frame (one RTP packet) with the negotiated payload type; the RTP
    /// time advances by 20 ms of the codec's clock. Panics unless connected: str0m silently
    /// drops media written before that.
    pub fn send_audio(&mut self, payload: &[u8]) {
        self.write(MediaKind::Audio, payload.to_vec(), AUDIO_FRAMES_PER_SEC);
    }

    /// Sends one VP8 frame (1/30 s after the previous one): `payload` behind a key frame or
    /// inter frame header. Returns the frame as written, which is what the receiver's
    /// [`Received::data`] holds ([`Received::body`] gives `payload` back). Frames larger than
    /// the MTU go out as several RTP packets.
    pub fn send_video(&mut self, payload: &[u8], keyframe: bool) -> Vec<u8> {
        let header: &[u8] = if keyframe {
            &VP8_KEY_HEADER
        } else {
            &VP8_DELTA_HEADER
        };
        let frame = [header, payload].concat();
        self.write(MediaKind::Video, frame.clone(), VIDEO_FRAMES_PER_SEC);
        frame
    }

    fn write(&mut self, kind: MediaKind, frame: Vec<u8>, frames_per_sec: u64) {
        assert!(
            self.connected,
            "send {kind:?} before connected: str0m would drop it ({})",
            self.describe()
        );
        let mid = self
            .mid_of(kind)
            .unwrap_or_else(|| panic!("no {kind:?} media: {}", self.describe()));
        let pt = self
            .pt_of(kind)
            .unwrap_or_else(|| panic!("no {kind:?} payload type negotiated"));
        let clock_rate = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.pt() == Pt::from(pt))
            .map(|p| p.spec().clock_rate)
            .expect("negotiated PT is configured");
        let step = u64::from(clock_rate.get()) / frames_per_sec;
        let rtp_time = match self.clocks.iter_mut().find(|c| c.mid == mid) {
            Some(c) => {
                c.next += step;
                c.next
            }
            None => {
                self.clocks.push(Clock {
                    mid,
                    next: FIRST_RTP_TIME,
                });
                FIRST_RTP_TIME
            }
        };
        let writer = self
            .rtc
            .writer(mid)
            .unwrap_or_else(|| panic!("no writer for {kind:?} mid {mid}"));
        let result = writer.write(
            pt.into(),
            Instant::now(),
            MediaTime::new(rtp_time, clock_rate),
            frame,
        );
        if let Err(e) = result {
            panic!("write {kind:?}: {e}");
        }
        self.drain();
    }

    /// RTP time of the next frame `send_audio`/`send_video` writes for `kind`.
    pub fn next_rtp_time(&self, kind: MediaKind) -> Option<u64> {
        let mid = self.mid_of(kind)?;
        Some(match self.clocks.iter().find(|c| c.mid == mid) {
            None => FIRST_RTP_TIME,
            Some(c) => {
                let rate = if kind == MediaKind::Audio {
                    AUDIO_FRAMES_PER_SEC
                } else {
                    VIDEO_FRAMES_PER_SEC
                };
                let pt = Pt::from(self.pt_of(kind)?);
                let params = self
                    .rtc
                    .codec_config()
                    .params()
                    .iter()
                    .find(|p| p.pt() == pt)?;
                c.next + u64::from(params.spec().clock_rate.get()) / rate
            }
        })
    }

    /// Asks the sender of our incoming video for a key frame (RTCP PLI).
    pub fn request_keyframe(&mut self) -> Result<(), String> {
        let mid = self.mid_of(MediaKind::Video).ok_or("no video media")?;
        let mut writer = self.rtc.writer(mid).ok_or("no writer for video")?;
        let result = writer.request_keyframe(None, KeyframeRequestKind::Pli);
        self.drain();
        result.map_err(|e| format!("request_keyframe: {e}"))
    }

    /// Media frames received so far, in arrival order.
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    pub fn received_of(&self, kind: MediaKind) -> impl Iterator<Item = &Received> {
        self.received.iter().filter(move |r| r.kind == kind)
    }

    pub fn clear_received(&mut self) {
        self.received.clear();
    }

    /// Key frame requests (PLI/FIR) the remote sent for media we send.
    pub fn keyframe_requests(&self) -> &[(Mid, KeyframeRequestKind)] {
        &self.keyframe_requests
    }

    /// One line of state, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "peer {} connected={} ice={:?} failure={:?} media={:?} received={} datagrams in/out={}/{} \
             checks in/accepted={}/{}",
            self.local,
            self.connected,
            self.ice_state,
            self.failure,
            self.media
                .iter()
                .map(|m| format!("{}:{:?}:{:?}", m.mid, m.kind, m.direction))
                .collect::<Vec<_>>(),
            self.received.len(),
            self.datagrams_in,
            self.datagrams_out,
            self.checks_in,
            self.checks_passed,
        )
    }
}

/// STUN message types (RFC 5389 §6, §7.3.1).
const STUN_BINDING_REQUEST: u16 = 0x0001;
const STUN_BINDING_SUCCESS: u16 = 0x0101;

/// The message type of a STUN datagram (RFC 5389 §6: two zero bits, magic cookie), else `None`.
fn stun_type(datagram: &[u8]) -> Option<u16> {
    let header = datagram.get(..8)?;
    let cookie = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    (header[0] < 0x40 && cookie == 0x2112_A442).then(|| u16::from_be_bytes([header[0], header[1]]))
}

fn codec_ok(codec: Codec, kind: MediaKind) -> bool {
    match kind {
        MediaKind::Audio => codec.is_audio() && codec != Codec::Rtx,
        MediaKind::Video => codec.is_video(),
    }
}

/// Drives several peers in turn (each waits at most [`STEP`] per turn) until `done` holds
/// (true) or `within` has passed (false). Peers that failed are skipped.
pub fn run_all(
    peers: &mut [&mut WebrtcPeer],
    within: Duration,
    mut done: impl FnMut(&[&mut WebrtcPeer]) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done(peers) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline || peers.iter().all(|p| p.failure.is_some()) {
            return false;
        }
        // Shorter turns with more peers, so one idle peer does not starve the others.
        let turn = STEP / peers.len().max(1) as u32;
        for p in peers.iter_mut() {
            p.step(turn.min(deadline.saturating_duration_since(Instant::now())));
        }
    }
}

/// Splits an SDP into the SDP without `a=candidate` / `a=end-of-candidates` lines and the
/// candidates (`candidate:...`), for trickle ICE.
pub fn strip_candidates(sdp: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(sdp.len());
    let mut candidates = Vec::new();
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("a=candidate:") {
            candidates.push(format!("candidate:{c}"));
        } else if line != "a=end-of-candidates" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    (out, candidates)
}

/// Flips the first byte of every `a=fingerprint` in `sdp`: the DTLS peer certificate then no
/// longer matches, so the side that verifies against this SDP must refuse the handshake.
/// Mangle our offer to test the server's check; mangle the server's answer to test str0m's.
pub fn mangle_fingerprint(sdp: &str) -> String {
    map_attribute(sdp, "a=fingerprint:", |value| {
        // "sha-256 AB:CD:...": invert the first hex byte.
        let (hash, hex) = value.split_once(' ').expect("a=fingerprint:<hash> <hex>");
        let byte = u8::from_str_radix(&hex[..2], 16).expect("fingerprint hex");
        format!("{hash} {:02X}{}", !byte, &hex[2..])
    })
}

/// Replaces every `a=ice-pwd` in `sdp` by a different password of the same length. Against an
/// ICE-lite server, mangle the server's *answer* before [`WebrtcPeer::accept_answer`]: str0m
/// then signs its connectivity checks with the wrong password and the server must drop them
/// (the password in our own offer is never used by a lite agent, which sends no checks).
pub fn mangle_ice_pwd(sdp: &str) -> String {
    map_attribute(sdp, "a=ice-pwd:", |value| {
        value
            .chars()
            .map(|c| match c {
                'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
                'z' => 'a',
                'Z' => 'A',
                '9' => '0',
                _ => 'x',
            })
            .collect()
    })
}

fn map_attribute(sdp: &str, prefix: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(sdp.len());
    let mut found = false;
    for line in sdp.lines() {
        match line.strip_prefix(prefix) {
            Some(value) => {
                found = true;
                out.push_str(prefix);
                out.push_str(&f(value));
            }
            None => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    assert!(found, "no {prefix} line in SDP:\n{sdp}");
    out
}

// ----- Helpers for scenarios against the server (tests/webrtc.rs) -----

use crate::{Client, Peer, Rtp, WAIT};
use serde_json::Value;

/// Deterministic payloads (xorshift, fixed seed).
pub struct Payloads(pub u64);

impl Payloads {
    pub fn next(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

/// Waits for the session's `status {class:"webrtc"}` event and returns its body.
pub fn webrtc_status(c: &mut Client, id: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let ev = c.wait_event(id, "status");
        if ev["body"]["class"] == "webrtc" {
            return ev["body"].clone();
        }
        assert!(Instant::now() < deadline, "no webrtc status for {id}");
    }
}

pub fn expect_up(c: &mut Client, id: &str) {
    let body = webrtc_status(c, id);
    assert_eq!(body["status"], "up", "session {id}: {body}");
}

/// An RTP packet with its payload after any CSRCs and header extension (str0m sends an
/// empty one-byte-header extension block, RFC 8285, which the server forwards untouched).
pub fn parse_rtp(data: &[u8]) -> Rtp {
    let mut rtp = Rtp::parse(data).expect("an RTP packet");
    let mut start = 12 + 4 * usize::from(data[0] & 0x0f);
    if data[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([data[start + 2], data[start + 3]]);
        start += 4 + 4 * usize::from(words);
    }
    rtp.payload = data[start..].to_vec();
    rtp
}

/// Drives `p` (str0m sends what was written from its loop) until the plain peer `b` has
/// received `n` RTP packets.
pub fn drive_until_plain_receives(p: &mut WebrtcPeer, b: &Peer, n: usize) -> Vec<Rtp> {
    b.rtp
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        p.step(STEP);
        while got.len() < n
            && let Some((data, _)) = b.recv()
        {
            got.push(parse_rtp(&data));
        }
    }
    b.rtp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    assert_eq!(got.len(), n, "plain peer got {got:?}; {}", p.describe());
    got
}
