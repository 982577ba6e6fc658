//! str0m, an independent WebRTC stack (full ICE agent, DTLS client), against our SDP,
//! ICE-lite agent and DTLS endpoint, in memory and in simulated time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::cert::Certificate;
use super::dtls::{DtlsEndpoint, DtlsError, DtlsEvent, DtlsRole};
use super::ice::{IceCredentials, IceLite, IceOutput};
use super::sdp::{RemoteIce, WebrtcLocal, webrtc_answer};
use crate::sdp::{Forced, Sdp, select_codecs};

const PEER: &str = "192.0.2.10:5000";
const SERVER: &str = "203.0.113.5:20000";

struct Server {
    cert: Certificate,
    ice: IceLite,
    dtls: DtlsEndpoint,
    dtls_events: Vec<DtlsEvent>,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid test address")
}

/// Offer from str0m, answer from us, both sides configured from the SDP.
fn negotiate(now: Instant, wrong_pwd: bool) -> (Rtc, Server) {
    let mut rtc = Rtc::new(now);
    let host = Candidate::host(addr(PEER), "udp").expect("host candidate");
    rtc.add_local_candidate(host);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    let (offer, pending) = api.apply().expect("offer");

    let offer = Sdp::parse(&offer.to_sdp_string()).expect("we parse str0m's offer");
    let remote = RemoteIce::from_sdp(&offer).expect("str0m's offer has ICE/DTLS");
    let (role, setup) = DtlsRole::answering(remote.setup);
    let cert = Certificate::generate().expect("cert");
    let creds = IceCredentials::from_random_bytes(&[7; 32]);
    let server = addr(SERVER);
    let local = WebrtcLocal {
        ip: server.ip(),
        port: server.port(),
        ice_ufrag: creds.ufrag.clone(),
        ice_pwd: if wrong_pwd {
            "notthepasswordweverify1".into()
        } else {
            creds.pwd.clone()
        },
        fingerprint: cert.fingerprint_sha256().to_owned(),
        setup,
        session_id: 1,
        session_version: 1,
        max_message_size: 65_536,
    };
    let selected = select_codecs(&offer, &Forced::default()).expect("usable");
    let answer = webrtc_answer(&offer, &selected, &local).to_string();
    let answer = str0m::change::SdpAnswer::from_sdp_string(&answer).expect("str0m parses");
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .expect("str0m accepts our answer");

    let mut ice = IceLite::new(creds);
    ice.set_remote(&remote.ufrag, &remote.pwd);
    let dtls = DtlsEndpoint::new(&cert, role, remote.fingerprint, now).expect("dtls");
    let server = Server {
        cert,
        ice,
        dtls,
        dtls_events: Vec::new(),
    };
    (rtc, server)
}

fn deliver(rtc: &mut Rtc, now: Instant, bytes: &[u8]) {
    let input = Input::Receive(
        now,
        Receive {
            proto: Protocol::Udp,
            source: addr(SERVER),
            destination: addr(PEER),
            contents: bytes.try_into().expect("str0m recognises the datagram"),
        },
    );
    rtc.handle_input(input).expect("str0m takes our datagram");
}

/// Runs both sides for up to `limit` of simulated time; returns str0m's events.
fn run(rtc: &mut Rtc, server: &mut Server, start: Instant, limit: Duration) -> Vec<Event> {
    let mut now = start;
    let mut events = Vec::new();
    while now < start + limit {
        let wake = loop {
            match rtc.poll_output().expect("str0m runs") {
                Output::Timeout(t) => break t,
                Output::Event(e) => events.push(e),
                Output::Transmit(t) => match t.contents[0] {
                    // RFC 7983: 0..=3 STUN, 20..=63 DTLS.
                    0..=3 => {
                        if let IceOutput::Reply(r) =
                            server.ice.handle_stun(now, t.source, &t.contents)
                        {
                            deliver(rtc, now, r.bytes());
                        }
                    }
                    20..=63 => server.dtls.handle_datagram(now, &t.contents),
                    _ => {}
                },
            }
        };
        while let Some(d) = server.dtls.poll_transmit() {
            deliver(rtc, now, &d);
        }
        server
            .dtls_events
            .extend(std::iter::from_fn(|| server.dtls.poll_event()));
        let next = [Some(wake), server.dtls.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now);
        now = next.max(now + Duration::from_millis(1));
        server.dtls.handle_timeout(now);
        rtc.handle_input(Input::Timeout(now)).expect("str0m runs");
    }
    events
}

#[test]
fn str0m_connects_through_our_ice_lite_and_dtls() {
    let now = Instant::now();
    let (mut rtc, mut server) = negotiate(now, false);
    assert_eq!(server.dtls.role(), DtlsRole::Server, "str0m offers actpass");
    let events = run(&mut rtc, &mut server, now, Duration::from_secs(5));

    let ice_up = |s| events.contains(&Event::IceConnectionStateChange(s));
    assert!(
        ice_up(IceConnectionState::Connected) || ice_up(IceConnectionState::Completed),
        "str0m's ICE accepted our responses: {events:?}"
    );
    assert_eq!(server.ice.selected(), Some(addr(PEER)));
    assert!(server.ice.stats().valid_checks > 0);
    assert_eq!(server.ice.stats().wrong_credentials, 0);

    // dimpl (under str0m too) negotiates AEAD_AES_256_GCM; until the data plane's SRTP has
    // it, the handshake ends there. Either way str0m's certificate passed our check.
    match server.dtls_events.first() {
        Some(DtlsEvent::Connected { .. }) => {
            assert!(
                // str0m's `PartialEq for Event` is false for `Connected` (only some
                // variants compare), hence `matches!`.
                events.iter().any(|e| matches!(e, Event::Connected)),
                "str0m finished DTLS too: {events:?}"
            );
        }
        Some(DtlsEvent::Failed(DtlsError::UnsupportedSrtpProfile(0x0008))) => {}
        other => panic!("unexpected DTLS outcome {other:?}"),
    }
}

#[test]
fn str0m_cannot_connect_with_a_wrong_ice_password() {
    let now = Instant::now();
    let (mut rtc, mut server) = negotiate(now, true);
    let events = run(&mut rtc, &mut server, now, Duration::from_secs(5));
    let ice_up = |s| events.contains(&Event::IceConnectionStateChange(s));
    assert!(!ice_up(IceConnectionState::Connected) && !ice_up(IceConnectionState::Completed));
    assert_eq!(server.ice.selected(), None);
    assert!(server.ice.stats().wrong_credentials > 0);
    assert_eq!(server.ice.stats().valid_checks, 0);
    assert!(server.dtls_events.is_empty());
}

#[test]
fn our_fingerprint_check_rejects_a_substituted_peer_certificate() {
    let now = Instant::now();
    let (mut rtc, mut server) = negotiate(now, false);
    // As if the SDP had been tampered with: we expect another certificate than str0m's.
    let other = Certificate::generate().expect("cert");
    let fp = super::cert::Fingerprint::parse(&other.sdp_fingerprint()).expect("valid");
    server.dtls = DtlsEndpoint::new(&server.cert, DtlsRole::Server, fp, now).expect("dtls");
    run(&mut rtc, &mut server, now, Duration::from_secs(5));
    assert_eq!(
        server.dtls_events.first(),
        Some(&DtlsEvent::Failed(DtlsError::FingerprintMismatch))
    );
}
