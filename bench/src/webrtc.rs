//! `srtp-echo`: loadgen as a WebRTC peer, no browser. Per session, over one UDP socket:
//! a full-ICE controlling agent's Binding request with USE-CANDIDATE to the server's host
//! candidate (RFC 8445 §7.2; the server is ICE-lite), a DTLS 1.2 handshake in the client role
//! (the server answers `a=setup:passive`) whose exported keys become SRTP contexts, then
//! SRTP media ([`SrtpStreams`], a [`Transform`] for the load loop) and consent checks
//! (RFC 7675) while the load runs.
//!
//! The protocol pieces are the server's own sans-IO ones (`sluice_control::webrtc`: STUN,
//! the dimpl DTLS wrapper, the certificate; `sluice_dataplane::srtp`): they are checked
//! against str0m in the server's tests, and here they only need to be driven over a socket.

use std::hash::{BuildHasher, RandomState};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_control::sdp::Sdp;
use sluice_control::webrtc::cert::Certificate;
use sluice_control::webrtc::dtls::{DtlsEndpoint, DtlsEvent, DtlsRole};
use sluice_control::webrtc::ice::IceCredentials;
use sluice_control::webrtc::sdp::{RemoteIce, Setup};
use sluice_control::webrtc::stun::{
    self, Class, MessageWriter, Method, StunMessage, TransactionId,
};
use sluice_dataplane::srtp::{Profile, SessionKeys, SrtpContext};

use crate::sdp;
use crate::traffic::{Transform, Unprotected};

/// RFC 8445 §5.1.2.1 for a peer-reflexive candidate (type preference 110), as a full agent
/// puts in PRIORITY.
pub const PRFLX_PRIORITY: u32 = (110 << 24) | (65_535 << 8) | 255;
/// First STUN retransmission timeout; doubled up to `MAX_RTO`.
const FIRST_RTO: Duration = Duration::from_millis(100);
const MAX_RTO: Duration = Duration::from_millis(800);
/// As the DTLS server: how often the nominating check is repeated until the ClientHello.
const RECHECK: Duration = Duration::from_millis(50);
/// Longest single wait on the socket, so deadlines are checked.
const POLL: Duration = Duration::from_millis(20);
/// Largest datagram the handshake reads.
const RECV_BUF: usize = 2048;

/// The server's side of one session, from its answer.
#[derive(Clone, Debug)]
pub struct ServerTransport {
    pub ice: RemoteIce,
    /// Its host candidate: where STUN, DTLS and media go.
    pub addr: SocketAddr,
}

impl ServerTransport {
    /// Reads the server's WebRTC answer. We offer `actpass` and play the DTLS client only,
    /// so the answer must say `passive`.
    pub fn from_answer(answer: &str) -> anyhow::Result<ServerTransport> {
        let parsed = Sdp::parse(answer).map_err(|e| anyhow::anyhow!("answer SDP: {e}"))?;
        let ice = RemoteIce::from_sdp(&parsed).context("answer ICE/DTLS parameters")?;
        if ice.setup != Setup::Passive {
            bail!(
                "the answer has a=setup:{}; loadgen only plays the DTLS client (passive answer)",
                ice.setup.as_str()
            );
        }
        let addr = sdp::host_candidate(ice.candidates.iter().map(String::as_str))
            .map_or_else(|| sdp::audio_addr(answer), Ok)
            .context("no host candidate or audio address in the answer")?;
        Ok(ServerTransport { ice, addr })
    }
}

impl ServerTransport {
    /// Reads the server's WebRTC SDP (an answer or an offer) whatever its `a=setup`, and
    /// says which DTLS role that leaves us: the server `active` makes us the DTLS server;
    /// `passive` or `actpass` (an offer we answer `active`) the client.
    pub fn from_sdp(sdp_text: &str) -> anyhow::Result<(ServerTransport, DtlsRole)> {
        let parsed = Sdp::parse(sdp_text).map_err(|e| anyhow::anyhow!("SDP: {e}"))?;
        let ice = RemoteIce::from_sdp(&parsed).context("SDP ICE/DTLS parameters")?;
        let role = match ice.setup {
            Setup::Active => DtlsRole::Server,
            Setup::Passive | Setup::ActPass => DtlsRole::Client,
            Setup::HoldConn => bail!("the server's SDP has a=setup:holdconn"),
        };
        let addr = sdp::host_candidate(ice.candidates.iter().map(String::as_str))
            .map_or_else(|| sdp::audio_addr(sdp_text), Ok)
            .context("no host candidate or audio address in the SDP")?;
        Ok((ServerTransport { ice, addr }, role))
    }
}

/// A connectivity check from us (controlling) to the server.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    pub server_ufrag: &'a str,
    pub server_pwd: &'a str,
    pub our_ufrag: &'a str,
    pub tie_breaker: u64,
    /// USE-CANDIDATE: nominate this pair (the first check); consent checks go without.
    pub nominate: bool,
}

/// Writes a Binding request (RFC 8445 §7.2.2): USERNAME `server:ours`, PRIORITY,
/// ICE-CONTROLLING, USE-CANDIDATE if nominating, MESSAGE-INTEGRITY with the server's
/// password, FINGERPRINT. Returns its length.
pub fn binding_request(
    buf: &mut [u8],
    tid: &TransactionId,
    check: &Check<'_>,
) -> anyhow::Result<usize> {
    let mut w = MessageWriter::new(buf, Class::Request, Method::Binding, tid)?;
    w.username(&format!("{}:{}", check.server_ufrag, check.our_ufrag))?;
    w.priority(PRFLX_PRIORITY)?;
    w.ice_controlling(check.tie_breaker)?;
    if check.nominate {
        w.use_candidate()?;
    }
    w.message_integrity(check.server_pwd.as_bytes())?;
    w.fingerprint()?;
    Ok(w.finish())
}

/// Whether `datagram` is the success response to our request `tid`, authenticated with the
/// server's password (RFC 8445 §7.2.5.2).
pub fn is_binding_success(datagram: &[u8], tid: &TransactionId, server_pwd: &str) -> bool {
    StunMessage::parse(datagram).is_ok_and(|m| {
        m.class == Class::Success
            && m.method == Method::Binding
            && m.transaction_id == *tid
            && m.verify_integrity(server_pwd.as_bytes())
    })
}

/// A random u64 from the standard library's per-process keys (unique ids, not secrets).
pub fn random_u64() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

pub fn transaction_id() -> TransactionId {
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&random_u64().to_be_bytes());
    tid[8..].copy_from_slice(&random_u64().to_be_bytes()[..4]);
    tid
}

/// What one handshake produced.
#[derive(Debug)]
pub struct Connected {
    pub profile: Profile,
    pub keys: SessionKeys,
    /// Binding request sent → success received.
    pub ice: Duration,
    /// ClientHello → keys.
    pub dtls: Duration,
}

/// Our side of one session.
pub struct Peer<'a> {
    pub sock: &'a UdpSocket,
    pub cert: &'a Certificate,
    pub creds: &'a IceCredentials,
    pub tie_breaker: u64,
}

impl Peer<'_> {
    fn check<'s>(&'s self, server: &'s ServerTransport, nominate: bool) -> Check<'s> {
        Check {
            server_ufrag: &server.ice.ufrag,
            server_pwd: &server.ice.pwd,
            our_ufrag: &self.creds.ufrag,
            tie_breaker: self.tie_breaker,
            nominate,
        }
    }

    /// Receives one datagram from `from` within `wait` (at least 1 ms); `None` on timeout.
    fn recv_from_server<'b>(
        &self,
        buf: &'b mut [u8],
        from: SocketAddr,
        wait: Duration,
    ) -> anyhow::Result<Option<&'b [u8]>> {
        self.sock
            .set_read_timeout(Some(wait.clamp(Duration::from_millis(1), POLL)))?;
        match self.sock.recv_from(buf) {
            // An answered check of the server's comes back empty.
            Ok((n, src)) if src == from && self.answered_check(&buf[..n], src)? => Ok(Some(&[])),
            Ok((n, src)) if src == from => Ok(Some(&buf[..n])),
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("receiving during the handshake"),
        }
    }

    /// Answers the server's own connectivity check (a full agent's, or libnice's triggered
    /// check even in Janus's ICE-lite mode, which nominates only on its response) as a
    /// browser does; `false` when `datagram` is not a Binding request for us.
    fn answered_check(&self, datagram: &[u8], from: SocketAddr) -> anyhow::Result<bool> {
        if !matches!(datagram.first(), Some(0..=3)) {
            return Ok(false);
        }
        let Ok(msg) = StunMessage::parse(datagram) else {
            return Ok(false);
        };
        if !msg.is_binding_request() || !msg.verify_integrity(self.creds.pwd.as_bytes()) {
            return Ok(false);
        }
        let mut out = [0u8; stun::MAX_RESPONSE_LEN];
        let len = stun::binding_success(&mut out, &msg.transaction_id, from, &self.creds.pwd)?;
        self.sock.send_to(&out[..len], from)?;
        Ok(true)
    }

    /// ICE (one nominating check, retransmitted until answered), then DTLS as the client,
    /// until SRTP keys or `timeout`.
    pub fn connect(
        &self,
        server: &ServerTransport,
        timeout: Duration,
    ) -> anyhow::Result<Connected> {
        self.connect_as(server, DtlsRole::Client, timeout)
    }

    /// [`connect`](Self::connect) in either DTLS role (the server waits for our
    /// ClientHello, or sends its own once ICE is up).
    pub fn connect_as(
        &self,
        server: &ServerTransport,
        role: DtlsRole,
        timeout: Duration,
    ) -> anyhow::Result<Connected> {
        let deadline = Instant::now() + timeout;
        let ice = self.ice(server, deadline)?;
        let (profile, keys, dtls) = self.dtls(server, role, deadline)?;
        Ok(Connected {
            profile,
            keys,
            ice,
            dtls,
        })
    }

    fn ice(&self, server: &ServerTransport, deadline: Instant) -> anyhow::Result<Duration> {
        let tid = transaction_id();
        let mut req = [0u8; 256];
        let len = binding_request(&mut req, &tid, &self.check(server, true))?;
        let mut buf = [0u8; RECV_BUF];
        let start = Instant::now();
        let mut rto = FIRST_RTO;
        loop {
            self.sock.send_to(&req[..len], server.addr)?;
            let resend = Instant::now() + rto;
            rto = (rto * 2).min(MAX_RTO);
            while Instant::now() < resend {
                if Instant::now() >= deadline {
                    bail!("no STUN success response from {}", server.addr);
                }
                let wait = resend.min(deadline) - Instant::now();
                if let Some(d) = self.recv_from_server(&mut buf, server.addr, wait)?
                    && is_binding_success(d, &tid, &server.ice.pwd)
                {
                    return Ok(start.elapsed());
                }
            }
        }
    }

    fn dtls(
        &self,
        server: &ServerTransport,
        role: DtlsRole,
        deadline: Instant,
    ) -> anyhow::Result<(Profile, SessionKeys, Duration)> {
        let start = Instant::now();
        let mut dtls = DtlsEndpoint::new(self.cert, role, server.ice.fingerprint.clone(), start)
            .map_err(|e| anyhow::anyhow!("DTLS: {e}"))?;
        let mut buf = [0u8; RECV_BUF];
        let mut heard = false;
        let mut first_flight: Vec<Vec<u8>> = Vec::new();
        let mut recheck = start + RECHECK;
        loop {
            while let Some(d) = dtls.poll_transmit() {
                self.sock.send_to(&d, server.addr)?;
                if !heard {
                    first_flight.push(d.to_vec());
                }
            }
            if let Some(ev) = dtls.poll_event() {
                match ev {
                    DtlsEvent::Connected { profile, keys } => {
                        return Ok((profile, keys, start.elapsed()));
                    }
                    DtlsEvent::Failed(e) => {
                        bail!("DTLS handshake with {} failed: {e}", server.addr)
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("DTLS handshake with {} timed out", server.addr);
            }
            // As the DTLS server we wait for the peer's ClientHello, which a full or lite
            // agent such as libnice (Janus) sends only once its own ICE state is connected:
            // keep checking, as a browser does, until the handshake starts.
            if role == DtlsRole::Server && !heard && now >= recheck {
                self.nominate(server)?;
                recheck = now + RECHECK;
            }
            let mut wake = dtls.poll_timeout().unwrap_or(deadline).min(deadline);
            if role == DtlsRole::Server && !heard {
                wake = wake.min(recheck);
            }
            if now >= wake {
                dtls.handle_timeout(now);
                continue;
            }
            match self.recv_from_server(&mut buf, server.addr, wake - now)? {
                Some(d) if matches!(d.first(), Some(20..=63)) => {
                    heard = true;
                    dtls.handle_datagram(Instant::now(), d);
                }
                // The server checked us: an agent that drops DTLS until its own check is
                // answered (libnice, in Janus) has it now, without waiting for our
                // retransmission timer.
                Some(d) if d.is_empty() && role == DtlsRole::Client && !heard => {
                    for d in &first_flight {
                        self.sock.send_to(d, server.addr)?;
                    }
                }
                _ => {}
            }
        }
    }

    /// Another nominating check (its response is not waited for).
    fn nominate(&self, server: &ServerTransport) -> anyhow::Result<()> {
        let mut req = [0u8; 256];
        let len = binding_request(&mut req, &transaction_id(), &self.check(server, true))?;
        self.sock.send_to(&req[..len], server.addr)?;
        Ok(())
    }

    /// A consent check (RFC 7675): a Binding request without USE-CANDIDATE; the response
    /// arrives in the load loop and is counted as stray there.
    pub fn consent_check(&self, server: &ServerTransport) -> anyhow::Result<()> {
        let mut req = [0u8; 256];
        let len = binding_request(&mut req, &transaction_id(), &self.check(server, false))?;
        self.sock.send_to(&req[..len], server.addr)?;
        Ok(())
    }
}

/// SRTP for the load loop: stream `i` is protected with session `i`'s local keys, and what
/// arrives on socket `i` is unprotected with its remote keys (one socket per session).
/// Packets go out as Opus (payload type 111), as offered.
pub struct SrtpStreams {
    tx: Vec<SrtpContext>,
    rx: Vec<SrtpContext>,
    /// Next RTP sequence number per stream, kept across runs (replay protection).
    seq: Vec<u16>,
    overhead: usize,
}

impl SrtpStreams {
    pub fn new<'k>(keys: impl IntoIterator<Item = &'k SessionKeys>) -> anyhow::Result<Self> {
        let mut s = SrtpStreams {
            tx: Vec::new(),
            rx: Vec::new(),
            seq: Vec::new(),
            overhead: 0,
        };
        for k in keys {
            s.tx.push(SrtpContext::new(&k.local).context("SRTP context")?);
            s.rx.push(SrtpContext::new(&k.remote).context("SRTP context")?);
            s.seq.push(1);
            s.overhead = s.overhead.max(k.local.profile().rtp_overhead());
        }
        Ok(s)
    }
}

/// RFC 5761 §4: with rtcp-mux, a second byte of 192..=223 (RTCP packet types 192..=223,
/// i.e. RTP payload types 64..=95 with or without the marker bit) is RTCP.
/// A datagram received on a socket whose SRTP context is `rx`: RTP is unprotected in place
/// (counted as failed when it does not authenticate), anything else (RTCP, STUN, DTLS) left
/// as it is.
pub fn unprotect_media(rx: Option<&mut SrtpContext>, buf: &mut [u8]) -> Unprotected {
    let media = matches!(buf.first(), Some(128..=191)) && !is_rtcp(buf);
    match rx {
        Some(ctx) if media => ctx
            .unprotect_rtp(buf)
            .map_or(Unprotected::Failed, Unprotected::Media),
        _ => Unprotected::Other,
    }
}

/// RFC 5761 §4: with rtcp-mux, a second byte of 192..=223 is RTCP.
fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

impl Transform for SrtpStreams {
    fn overhead(&self) -> usize {
        self.overhead
    }

    fn protect(&mut self, stream: usize, buf: &mut [u8], len: usize) -> Option<usize> {
        let seq = self.seq.get_mut(stream)?;
        // The offer's codec: the server drops payload types it did not negotiate.
        buf[1] = (buf[1] & 0x80) | sdp::OPUS;
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        *seq = seq.wrapping_add(1);
        self.tx[stream].protect_rtp(buf, len).ok()
    }

    fn unprotect(&mut self, socket: usize, buf: &mut [u8]) -> Unprotected {
        unprotect_media(self.rx.get_mut(socket), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{self, Load, Target};
    use sluice_control::webrtc::cert::Fingerprint;
    use sluice_control::webrtc::ice::{IceLite, IceOutput};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn creds(seed: u8) -> IceCredentials {
        IceCredentials::from_random_bytes(&[seed; 32])
    }

    #[test]
    fn binding_request_is_accepted_by_the_ice_lite_agent() {
        let (server, ours) = (creds(1), creds(2));
        let check = Check {
            server_ufrag: &server.ufrag,
            server_pwd: &server.pwd,
            our_ufrag: &ours.ufrag,
            tie_breaker: 7,
            nominate: true,
        };
        let tid = transaction_id();
        let mut buf = [0u8; 256];
        let len = binding_request(&mut buf, &tid, &check).unwrap();
        let msg = StunMessage::parse(&buf[..len]).unwrap();
        assert!(msg.is_binding_request() && msg.use_candidate && msg.has_fingerprint);
        assert_eq!(
            msg.username,
            Some(&*format!("{}:{}", server.ufrag, ours.ufrag))
        );
        assert_eq!(
            (msg.priority, msg.ice_controlling),
            (Some(PRFLX_PRIORITY), Some(7))
        );
        assert!(msg.verify_integrity(server.pwd.as_bytes()));

        let mut agent = IceLite::new(server.clone());
        agent.set_remote(&ours.ufrag, &ours.pwd);
        let from: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let IceOutput::Reply(reply) = agent.handle_stun(Instant::now(), from, &buf[..len]) else {
            panic!("the agent refused our check");
        };
        assert!(is_binding_success(reply.bytes(), &tid, &server.pwd));
        assert!(!is_binding_success(reply.bytes(), &tid, &ours.pwd));
        assert!(!is_binding_success(reply.bytes(), &[0; 12], &server.pwd));
        assert_eq!(agent.selected(), Some(from));

        // A consent check: no USE-CANDIDATE, still valid.
        let consent = Check {
            nominate: false,
            ..check
        };
        let len = binding_request(&mut buf, &transaction_id(), &consent).unwrap();
        assert!(!StunMessage::parse(&buf[..len]).unwrap().use_candidate);
        assert!(matches!(
            agent.handle_stun(Instant::now(), from, &buf[..len]),
            IceOutput::Reply(_)
        ));
    }

    /// An in-process stand-in for the server: ICE-lite, DTLS server, SRTP echo.
    fn fake_server(
        sock: &UdpSocket,
        creds: IceCredentials,
        cert: &Certificate,
        peer: Fingerprint,
        stop: &AtomicBool,
    ) {
        let mut ice = IceLite::new(creds);
        let mut dtls = DtlsEndpoint::new(cert, DtlsRole::Server, peer, Instant::now()).unwrap();
        let mut srtp: Option<(SrtpContext, SrtpContext)> = None;
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let mut buf = [0u8; RECV_BUF];
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                match buf[0] {
                    0..=3 => {
                        if let IceOutput::Reply(r) = ice.handle_stun(now, from, &buf[..n]) {
                            sock.send_to(r.bytes(), r.to).unwrap();
                        }
                    }
                    20..=63 => dtls.handle_datagram(now, &buf[..n]),
                    _ => {
                        let (rx, tx) = srtp.as_mut().expect("media only after DTLS");
                        let len = rx.unprotect_rtp(&mut buf[..n]).expect("our SRTP is valid");
                        let len = tx.protect_rtp(&mut buf, len).unwrap();
                        sock.send_to(&buf[..len], from).unwrap();
                    }
                }
            }
            if dtls.poll_timeout().is_some_and(|t| t <= now) {
                dtls.handle_timeout(now);
            }
            while let Some(d) = dtls.poll_transmit() {
                sock.send_to(&d, ice.selected().expect("DTLS after ICE"))
                    .unwrap();
            }
            if let Some(DtlsEvent::Connected { keys, .. }) = dtls.poll_event() {
                let rx = SrtpContext::new(&keys.remote).unwrap();
                srtp = Some((rx, SrtpContext::new(&keys.local).unwrap()));
            }
        }
    }

    #[test]
    fn connects_and_echoes_srtp_through_a_fake_server() {
        let (server_creds, ours) = (creds(3), creds(4));
        let (server_cert, our_cert) = (
            Certificate::generate().unwrap(),
            Certificate::generate().unwrap(),
        );
        let server_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = crate::sys::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let server = ServerTransport {
            ice: RemoteIce {
                ufrag: server_creds.ufrag.clone(),
                pwd: server_creds.pwd.clone(),
                fingerprint: Fingerprint::parse(&server_cert.sdp_fingerprint()).unwrap(),
                setup: Setup::Passive,
                ice_lite: true,
                candidates: Vec::new(),
                end_of_candidates: true,
            },
            addr: server_sock.local_addr().unwrap(),
        };
        let our_fp = Fingerprint::parse(&our_cert.sdp_fingerprint()).unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                fake_server(
                    &server_sock,
                    server_creds.clone(),
                    &server_cert,
                    our_fp,
                    &stop,
                )
            });
            let peer = Peer {
                sock: &client,
                cert: &our_cert,
                creds: &ours,
                tie_breaker: 1,
            };
            let c = peer.connect(&server, Duration::from_secs(10));
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    panic!("{e:#}");
                }
            };
            let mut streams = SrtpStreams::new([&c.keys]).unwrap();
            let targets = [Target {
                dest: server.addr,
                socket: 0,
            }];
            let load = Load {
                rate: 2_000,
                size: 172,
                duration: Duration::from_millis(100),
                drain: Duration::from_millis(500),
                copies: 1,
                cpu: None,
            };
            let socks = std::slice::from_ref(&client);
            // Two runs: sequence numbers must keep increasing across them.
            for _ in 0..2 {
                let out = traffic::run_with(socks, socks, &targets, &load, Some(&mut streams));
                assert_eq!(
                    (out.sent, out.protect_failed, out.unprotect_failed),
                    (200, 0, 0)
                );
                assert_eq!(out.received, out.sent);
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    #[test]
    fn answers_that_are_not_passive_are_refused() {
        let answer = |setup: &str| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 a=ice-lite\r\nm=audio 40002 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
                 a=ice-ufrag:SeRv\r\na=ice-pwd:0123456789abcdefghijklmn\r\n\
                 a=fingerprint:sha-256 {fp}\r\na=setup:{setup}\r\na=rtcp-mux\r\n\
                 a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n",
                fp = ["AB"; 32].join(":")
            )
        };
        let t = ServerTransport::from_answer(&answer("passive")).unwrap();
        assert_eq!(t.addr, "127.0.0.1:40000".parse().unwrap());
        assert_eq!((t.ice.ufrag.as_str(), t.ice.ice_lite), ("SeRv", true));
        assert!(ServerTransport::from_answer(&answer("active")).is_err());
    }

    #[test]
    fn rtcp_and_non_media_are_not_unprotected() {
        assert!(is_rtcp(&[0x81, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 206, 0, 2]));
        assert!(!is_rtcp(&[0x80, 111, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0xef, 0, 1])); // marker + pt 111
        let mut s = SrtpStreams::new([]).unwrap();
        assert_eq!(s.unprotect(0, &mut [0u8, 1, 0, 0]), Unprotected::Other);
        assert_eq!(s.unprotect(0, &mut [0x80u8, 111, 0, 0]), Unprotected::Other);
    }
}
