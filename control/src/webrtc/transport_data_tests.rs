//! The whole transport (ICE-lite, DTLS, SCTP, DCEP) against str0m opening a data channel, in
//! memory and in simulated time; the test plays the manager's echo.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice_dataplane::api::{Command, LegId};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::sdp::{Forced, Sdp, select_codecs};
use crate::webrtc::cert::Certificate;
use crate::webrtc::sctp::{MessageKind, SctpEvent};
use crate::webrtc::sdp::{RemoteIce, data_offer, webrtc_answer_with_data};
use crate::webrtc::transport::{Effect, WebrtcTransport};

const PEER: &str = "192.0.2.10:5000";
const SERVER: &str = "203.0.113.5:20000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid test address")
}

struct Echo {
    rtc: Rtc,
    t: WebrtcTransport,
    cert: Certificate,
    now: Instant,
    events: Vec<Event>,
    /// Largest datagram the transport sent.
    largest: usize,
}

impl Echo {
    fn new() -> Echo {
        let now = Instant::now();
        let mut rtc = Rtc::new(now);
        rtc.add_local_candidate(Candidate::host(addr(PEER), "udp").expect("candidate"));
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        api.add_channel("chat".into());
        let (offer, pending) = api.apply().expect("offer");
        let offer = Sdp::parse(&offer.to_sdp_string()).expect("we parse str0m's offer");
        let remote = RemoteIce::from_sdp(&offer).expect("ICE/DTLS");
        let mut t = WebrtcTransport::answering(LegId(1), &remote, Default::default());
        let data = data_offer(&offer).expect("a data m-line");
        t.enable_data(data.max_message_size);
        let cert = Certificate::generate().expect("cert");
        let server = addr(SERVER);
        let local = t.local(server.ip(), server.port(), &cert);
        let selected = select_codecs(&offer, &Forced::default()).expect("usable");
        let answer = webrtc_answer_with_data(&offer, &selected, Some(&data), &local);
        let answer = SdpAnswer::from_sdp_string(&answer.to_string()).expect("str0m parses");
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .expect("str0m accepts our answer");
        Echo {
            rtc,
            t,
            cert,
            now,
            events: Vec::new(),
            largest: 0,
        }
    }

    /// Applies the transport's effects: datagrams to str0m, messages echoed.
    fn apply(&mut self, out: Vec<Effect>) {
        let mut queue = VecDeque::from(out);
        while let Some(e) = queue.pop_front() {
            match e {
                Effect::Send(Command::Transmit { data, .. }) => {
                    self.largest = self.largest.max(data.len());
                    let input = Input::Receive(
                        self.now,
                        Receive {
                            proto: Protocol::Udp,
                            source: addr(SERVER),
                            destination: addr(PEER),
                            contents: data.as_slice().try_into().expect("str0m datagram"),
                        },
                    );
                    self.rtc.handle_input(input).expect("str0m takes it");
                }
                Effect::Data(SctpEvent::Message { sid, kind, data }) => {
                    let mut more = Vec::new();
                    self.t
                        .send_data(self.now, sid, kind, &data, &mut more)
                        .expect("echo");
                    queue.extend(more);
                }
                _ => {}
            }
        }
    }

    /// Runs both sides in simulated time until `done` holds on str0m's events.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&[Event]) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(&self.events) {
                return true;
            }
            let wake = loop {
                match self.rtc.poll_output().expect("str0m runs") {
                    Output::Timeout(t) => break t,
                    Output::Event(e) => self.events.push(e),
                    Output::Transmit(tx) => {
                        let mut out = Vec::new();
                        let cert = &self.cert;
                        self.t
                            .handle_datagram(self.now, tx.source, &tx.contents, cert, &mut out);
                        self.apply(out);
                    }
                }
            };
            // The manager's tick is 50 ms.
            self.now = wake
                .min(self.now + Duration::from_millis(50))
                .max(self.now + Duration::from_millis(1));
            let mut out = Vec::new();
            let cert = &self.cert;
            self.t.tick(self.now, cert, &mut out);
            self.apply(out);
            self.rtc
                .handle_input(Input::Timeout(self.now))
                .expect("str0m runs");
        }
        done(&self.events)
    }
}

fn channel_data(events: &[Event]) -> Vec<(bool, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChannelData(d) => Some((d.binary, d.data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn str0m_channel_is_echoed_through_the_transport() {
    let mut e = Echo::new();
    let open = e.run_until(Duration::from_secs(10), |ev| {
        ev.iter()
            .any(|e| matches!(e, Event::ChannelOpen(_, l) if l == "chat"))
    });
    assert!(open, "no channel: {:?}", e.t);
    let id = e
        .events
        .iter()
        .find_map(|e| match e {
            Event::ChannelOpen(id, _) => Some(*id),
            _ => None,
        })
        .expect("channel id");
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
    let sent = vec![
        (false, b"hello".to_vec()),
        (true, vec![0, 1, 2, 255]),
        (true, big),
    ];
    for (binary, data) in &sent {
        let mut ch = e.rtc.channel(id).expect("open channel");
        assert!(ch.write(*binary, data).expect("write"));
    }
    let n = sent.len();
    let back = e.run_until(Duration::from_secs(10), |ev| channel_data(ev).len() == n);
    assert!(back, "echo incomplete: {:?}", channel_data(&e.events).len());
    assert_eq!(channel_data(&e.events), sent);
    assert!(e.largest <= 1200, "a datagram of {} bytes", e.largest);
    // Empty messages (PPID 56/57 with one zero byte) as an independent stack reads them;
    // str0m 0.25 cannot send one itself.
    let (sid, _) = e.t.data_channels()[0].clone();
    let mut out = Vec::new();
    for kind in [MessageKind::Text, MessageKind::Binary] {
        let now = e.now;
        e.t.send_data(now, sid, kind, &[], &mut out)
            .expect("send empty");
    }
    e.apply(out);
    let empties = e.run_until(Duration::from_secs(5), |ev| channel_data(ev).len() == n + 2);
    assert!(empties, "empty messages missing");
    assert_eq!(
        channel_data(&e.events)[n..],
        [(false, Vec::new()), (true, Vec::new())]
    );
    let info = e.t.info();
    assert_eq!(info["data"]["messages_in"], 3, "{info}");
    assert_eq!(info["data"]["channels"][0]["label"], "chat", "{info}");
}
