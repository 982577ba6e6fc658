//! The WebRTC transport of a session: one bundled, secure data-plane leg driven by an ICE-lite
//! agent and a DTLS-SRTP endpoint on the slow path.
//!
//! Life of a transport:
//! - created with the session: answering a WebRTC offer ([`WebrtcTransport::answering`]: our
//!   `a=setup:passive`, we are the DTLS server unless the offer said `passive`) or offering one
//!   ([`WebrtcTransport::offering`]: `actpass`, role and peer fingerprint from the answer,
//!   [`WebrtcTransport::apply_answer`]);
//! - STUN and DTLS datagrams the data plane hands over (`Event::SlowPath`) go to
//!   [`WebrtcTransport::handle_datagram`]; a valid check answers with `Command::Transmit`, and
//!   the first (or a nominated) address becomes the leg's remote (`Command::SetRemote`, muxed);
//! - a DTLS client starts its handshake once the role is known and ICE has an address; DTLS
//!   records go to the ICE-selected address; on completion the keys go to the data plane
//!   (`Command::SetSrtp`, *before* the last flight is sent, so that the peer's first SRTP is
//!   already decryptable) and the session reports `status {class:"webrtc", status:"up"}`;
//! - a failed handshake (fingerprint mismatch, protocol error) reports `status webrtc failed`
//!   with the reason. The session is kept (documented choice): its owner sees the event and
//!   destroys it, else the wait/ready timeouts do. Nothing is sent on the leg without keys;
//! - the manager's periodic tick ([`WebrtcTransport::tick`]) drives DTLS retransmissions,
//!   SCTP timers and ICE consent: 30 s without a valid check (RFC 7675) clears the leg's
//!   remote (we stop sending) and reports `status webrtc down`;
//! - data channels, when the session accepted a data m-line ([`WebrtcTransport::enable_data`]):
//!   once DTLS is up, application-data records are SCTP packets for the session's
//!   [`SctpAssociation`] (the DTLS client sends INIT, like str0m), its packets leave as
//!   DTLS records, a peer's channel is acknowledged and reported (`Effect::Data`,
//!   `status {class:"datachannel"}`), and [`WebrtcTransport::send_data`] answers on it.
//!
//! Everything here is sans-IO: methods take `now` and push [`Effect`]s that the manager applies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{Value, json};
use sluice_dataplane::api::{Command, LegId, Remote};

use crate::errors::ApiError;
use crate::webrtc::cert::{Certificate, Fingerprint};
use crate::webrtc::data_limits::DataLimits;
use crate::webrtc::dtls::{DtlsEndpoint, DtlsEvent, DtlsRole};
use crate::webrtc::ice::{IceCredentials, IceEvent, IceLite, IceOutput};
use crate::webrtc::sctp::{SctpAssociation, SctpEvent, SctpRole};
use crate::webrtc::sdp::{RemoteIce, Setup, WebrtcLocal};

/// DTLS datagrams kept while our role or the peer's fingerprint is still unknown (a browser
/// answering `active` may send its ClientHello before its answer reaches us).
const MAX_EARLY_DTLS: usize = 8;
/// Longest `candidate` value accepted by `set_candidate`.
const MAX_CANDIDATE_LEN: usize = 512;

/// What a transport asks of the manager.
#[derive(Debug)]
pub enum Effect {
    Send(Command),
    /// A `status` event body for the session.
    Status(Value),
    /// What the data channels report: a channel opened or closed, a message arrived.
    Data(SctpEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// ICE and/or DTLS in progress.
    Connecting,
    /// DTLS done, SRTP keys in the data plane.
    Up,
    /// The handshake failed: final.
    Failed,
    /// Consent expired: final.
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Up => "up",
            State::Failed => "failed",
            State::Down => "down",
        }
    }
}

pub struct WebrtcTransport {
    /// The bundled data-plane leg.
    pub leg: LegId,
    /// That leg's local port (what our SDP announces), once known.
    pub port: u16,
    ice: IceLite,
    /// Our `a=setup`.
    setup: Setup,
    role: Option<DtlsRole>,
    remote_fingerprint: Option<Fingerprint>,
    dtls: Option<DtlsEndpoint>,
    early: Vec<(SocketAddr, Vec<u8>)>,
    /// Where DTLS records go: the ICE-selected address, else where the last record came from.
    dtls_peer: Option<SocketAddr>,
    state: State,
    /// Data channels were negotiated: the peer's `a=max-message-size` (`None` = absent).
    data: Option<Option<u32>>,
    /// The association, from the end of the DTLS handshake.
    sctp: Option<SctpAssociation>,
    data_stats: DataStats,
    /// Ours: advertised in SDP and applied to the association.
    data_limits: DataLimits,
    /// A listener's mirrors: the publisher's stream id → ours.
    mirrors: BTreeMap<u16, u16>,
}

impl std::fmt::Debug for WebrtcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebrtcTransport")
            .field("leg", &self.leg)
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn status(state: &str) -> Value {
    json!({ "class": "webrtc", "status": state })
}

impl WebrtcTransport {
    fn new(leg: LegId, setup: Setup, data_limits: DataLimits) -> WebrtcTransport {
        WebrtcTransport {
            leg,
            port: 0,
            ice: IceLite::new(IceCredentials::random()),
            setup,
            role: None,
            remote_fingerprint: None,
            dtls: None,
            early: Vec::new(),
            dtls_peer: None,
            state: State::Connecting,
            data: None,
            sctp: None,
            data_stats: DataStats::default(),
            data_limits,
            mirrors: BTreeMap::new(),
        }
    }

    /// Answering the peer's WebRTC offer (RFC 8842 §5.3: `passive` unless the offer is).
    pub fn answering(leg: LegId, remote: &RemoteIce, data_limits: DataLimits) -> WebrtcTransport {
        let (role, setup) = DtlsRole::answering(remote.setup);
        let mut t = WebrtcTransport::new(leg, setup, data_limits);
        t.role = Some(role);
        t.set_remote(remote);
        t
    }

    /// Offering (`actpass`): role and fingerprint come with the answer.
    pub fn offering(leg: LegId, data_limits: DataLimits) -> WebrtcTransport {
        WebrtcTransport::new(leg, Setup::ActPass, data_limits)
    }

    fn set_remote(&mut self, remote: &RemoteIce) {
        self.ice.set_remote(&remote.ufrag, &remote.pwd);
        for c in &remote.candidates {
            self.ice.add_remote_candidate(c);
        }
        if remote.end_of_candidates {
            self.ice.end_of_candidates();
        }
        self.remote_fingerprint = Some(remote.fingerprint.clone());
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Our side for the SDP writer.
    pub fn local(&self, ip: std::net::IpAddr, port: u16, cert: &Certificate) -> WebrtcLocal {
        WebrtcLocal {
            ip,
            port,
            ice_ufrag: self.ice.local().ufrag.clone(),
            ice_pwd: self.ice.local().pwd.clone(),
            fingerprint: cert.fingerprint_sha256().to_owned(),
            setup: self.setup,
            session_id: 0,
            session_version: 0,
            max_message_size: self.data_limits.max_message_size,
        }
    }

    /// The peer's answer to our `actpass` offer: `active` makes us the DTLS server, `passive`
    /// the client (RFC 8842 §5.3).
    pub fn apply_answer(
        &mut self,
        remote: &RemoteIce,
        cert: &Certificate,
        now: Instant,
        out: &mut Vec<Effect>,
    ) -> Result<(), ApiError> {
        let role = DtlsRole::offered(remote.setup).ok_or_else(|| {
            ApiError::invalid(format!(
                "the answer's a=setup:{} must be active or passive",
                remote.setup.as_str()
            ))
        })?;
        self.role = Some(role);
        self.set_remote(remote);
        self.maybe_start_dtls(cert, now, out);
        Ok(())
    }

    /// `set_candidate`: validated and kept (an ICE-lite agent sends no checks, so trickled
    /// candidates are informational).
    pub fn add_candidate(&mut self, candidate: &str) -> Result<(), ApiError> {
        let c = candidate.trim();
        let c = c.strip_prefix("a=").unwrap_or(c);
        let c = c.strip_prefix("candidate:").unwrap_or(c);
        if c.len() > MAX_CANDIDATE_LEN || !valid_candidate(c) {
            return Err(ApiError::invalid(format!(
                "invalid ICE candidate {:?} (expected \"candidate:<foundation> <component> \
                 <transport> <priority> <address> <port> typ <type> ...\")",
                candidate.chars().take(80).collect::<String>()
            )));
        }
        self.ice.add_remote_candidate(c);
        Ok(())
    }

    pub fn end_of_candidates(&mut self) {
        self.ice.end_of_candidates();
    }

    /// One STUN or DTLS datagram from the leg (RFC 7983: 0..=3 STUN, 20..=63 DTLS).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
        cert: &Certificate,
        out: &mut Vec<Effect>,
    ) {
        match data.first() {
            Some(0..=3) => {
                let reply = match self.ice.handle_stun(now, from, data) {
                    IceOutput::Reply(r) => Some(r),
                    IceOutput::Dropped { reason, reply } => {
                        tracing::debug!(leg = ?self.leg, %from, ?reason, "STUN dropped");
                        reply
                    }
                };
                if let Some(r) = reply {
                    out.push(Effect::Send(Command::Transmit {
                        leg: self.leg,
                        to: r.to,
                        data: r.bytes().to_vec(),
                    }));
                }
                self.ice_events(cert, now, out);
            }
            Some(20..=63) => {
                if self.state == State::Failed {
                    return;
                }
                if self.ice.selected().is_none() {
                    self.dtls_peer = Some(from);
                }
                match self.dtls.as_mut() {
                    Some(d) => {
                        d.handle_datagram(now, data);
                        self.dtls_output(now, out);
                    }
                    None if self.early.len() < MAX_EARLY_DTLS => {
                        self.early.push((from, data.to_vec()));
                    }
                    None => {}
                }
            }
            _ => {}
        }
    }

    /// Timers: DTLS retransmissions, SCTP timers and ICE consent.
    pub fn tick(&mut self, now: Instant, cert: &Certificate, out: &mut Vec<Effect>) {
        if self.ice.poll_timeout().is_some_and(|t| t <= now) {
            self.ice.handle_timeout(now);
            self.ice_events(cert, now, out);
        }
        if let Some(d) = self.dtls.as_mut()
            && d.poll_timeout().is_some_and(|t| t <= now)
        {
            d.handle_timeout(now);
            self.dtls_output(now, out);
        }
        if let Some(s) = self.sctp.as_mut()
            && s.poll_timeout().is_some_and(|t| t <= now)
        {
            s.handle_timeout(now);
            self.sctp_output(out);
            self.dtls_transmit(out);
        }
    }

    fn ice_events(&mut self, cert: &Certificate, now: Instant, out: &mut Vec<Effect>) {
        while let Some(ev) = self.ice.poll_event() {
            match ev {
                IceEvent::Nominated(addr) => {
                    tracing::debug!(leg = ?self.leg, %addr, "ICE selected");
                    self.dtls_peer = Some(addr);
                    out.push(Effect::Send(Command::SetRemote {
                        leg: self.leg,
                        remote: Remote {
                            rtp: Some(addr),
                            rtcp: Some(addr),
                            rtcp_mux: true,
                        },
                    }));
                    self.maybe_start_dtls(cert, now, out);
                }
                IceEvent::ConsentExpired => {
                    out.push(Effect::Send(Command::SetRemote {
                        leg: self.leg,
                        remote: Remote {
                            rtp: None,
                            rtcp: None,
                            rtcp_mux: true,
                        },
                    }));
                    if self.state != State::Failed {
                        self.state = State::Down;
                        let mut body = status("down");
                        body["reason"] = json!("ICE consent expired");
                        out.push(Effect::Status(body));
                    }
                }
            }
        }
    }

    /// Creates the DTLS endpoint once the role and the peer's fingerprint are known, and, for
    /// a client, once ICE has an address to send the ClientHello to.
    fn maybe_start_dtls(&mut self, cert: &Certificate, now: Instant, out: &mut Vec<Effect>) {
        if self.dtls.is_some() || self.state != State::Connecting {
            return;
        }
        let (Some(role), Some(fp)) = (self.role, self.remote_fingerprint.clone()) else {
            return;
        };
        if role == DtlsRole::Client && self.ice.selected().is_none() {
            return;
        }
        match DtlsEndpoint::new(cert, role, fp, now) {
            Ok(d) => self.dtls = Some(d),
            Err(e) => {
                self.fail(&e.to_string(), out);
                return;
            }
        }
        for (from, data) in std::mem::take(&mut self.early) {
            if self.ice.selected().is_none() {
                self.dtls_peer = Some(from);
            }
            if let Some(d) = self.dtls.as_mut() {
                d.handle_datagram(now, &data);
            }
        }
        self.dtls_output(now, out);
    }

    /// DTLS events first (keys reach the data plane before our last flight leaves), then SCTP
    /// (application data in, its packets out as records), then the records to send.
    fn dtls_output(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let Some(d) = self.dtls.as_mut() else {
            return;
        };
        let mut failed = None;
        while let Some(ev) = d.poll_event() {
            match ev {
                DtlsEvent::Connected { profile, keys } => {
                    tracing::debug!(leg = ?self.leg, ?profile, "DTLS-SRTP up");
                    out.push(Effect::Send(Command::SetSrtp {
                        leg: self.leg,
                        keys: Box::new(keys),
                    }));
                    if self.state == State::Connecting {
                        self.state = State::Up;
                        out.push(Effect::Status(status("up")));
                    }
                    // The DTLS client sends INIT (str0m does exactly that; browsers and
                    // aiortc answering our `passive` send it too), so as DTLS server we wait.
                    if let Some(remote_max) = self.data
                        && self.sctp.is_none()
                    {
                        let role = match self.role {
                            Some(DtlsRole::Client) => SctpRole::Client,
                            _ => SctpRole::Server,
                        };
                        self.sctp = Some(SctpAssociation::new(
                            role,
                            now,
                            remote_max,
                            self.data_limits,
                        ));
                    }
                }
                DtlsEvent::Failed(e) => failed = Some(e.to_string()),
            }
        }
        self.sctp_input(now);
        self.sctp_output(out);
        self.dtls_transmit(out);
        if let Some(reason) = failed {
            self.fail(&reason, out);
        }
    }

    /// The DTLS records waiting to go to the peer.
    fn dtls_transmit(&mut self, out: &mut Vec<Effect>) {
        let Some(d) = self.dtls.as_mut() else {
            return;
        };
        match self.dtls_peer {
            Some(to) => {
                while let Some(data) = d.poll_transmit() {
                    out.push(Effect::Send(Command::Transmit {
                        leg: self.leg,
                        to,
                        data,
                    }));
                }
            }
            // Nowhere to send yet: retransmissions will carry the flight later.
            None => while d.poll_transmit().is_some() {},
        }
    }

    /// The data plane refused the keys this handshake gave (`Event::SrtpRefused`): media
    /// cannot flow, so the transport has failed as if the handshake had.
    pub fn srtp_refused(&mut self, error: &str, out: &mut Vec<Effect>) {
        self.fail(&format!("SRTP keys refused: {error}"), out);
    }

    fn fail(&mut self, reason: &str, out: &mut Vec<Effect>) {
        tracing::info!(leg = ?self.leg, reason, "WebRTC transport failed");
        if matches!(self.state, State::Connecting | State::Up) {
            self.state = State::Failed;
            let mut body = status("failed");
            body["reason"] = json!(reason);
            out.push(Effect::Status(body));
        }
    }

    /// For `get_info`.
    pub fn info(&self) -> Value {
        let s = self.ice.stats();
        json!({
            "state": self.state.as_str(),
            "dtls_role": self.role.map(|r| match r {
                DtlsRole::Client => "client",
                DtlsRole::Server => "server",
            }),
            "ice_selected": self.ice.selected().map(|a| a.to_string()),
            "ice_valid_checks": s.valid_checks,
            "ice_wrong_credentials": s.wrong_credentials,
            "remote_candidates": self.ice.remote_candidates().len(),
            "remote_end_of_candidates": self.ice.remote_end_of_candidates(),
            "data": self.data.map(|_| self.data_info()),
        })
    }
}

#[path = "transport_data.rs"]
mod data;
use data::DataStats;

/// RFC 8839 §5.1 `candidate-attribute` (after `candidate:`): foundation, component id,
/// transport, priority, address, port, `typ`, type, then extensions.
fn valid_candidate(c: &str) -> bool {
    let f: Vec<&str> = c.split_whitespace().collect();
    if f.len() < 8 {
        return false;
    }
    let ice_chars = |s: &str| {
        !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    ice_chars(f[0])
        && f[1].parse::<u8>().is_ok_and(|n| n >= 1)
        && !f[2].is_empty()
        && f[3].parse::<u32>().is_ok()
        && !f[4].is_empty()
        && f[5].parse::<u16>().is_ok()
        && f[6] == "typ"
        && matches!(f[7], "host" | "srflx" | "prflx" | "relay")
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn candidates_are_validated() {
        assert!(valid_candidate(
            "1 1 udp 2130706431 127.0.0.1 5000 typ host"
        ));
        assert!(valid_candidate(
            "842163049 1 udp 1677729535 192.0.2.3 61665 typ srflx raddr 10.0.0.1 rport 5000 generation 0"
        ));
        assert!(!valid_candidate("1 1 udp 1 127.0.0.1 5000 typ bogus"));
        assert!(!valid_candidate("1 1 udp x 127.0.0.1 5000 typ host"));
        assert!(!valid_candidate("garbage"));
        let mut t = WebrtcTransport::offering(LegId(1), DataLimits::default());
        assert!(
            t.add_candidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host")
                .is_ok()
        );
        assert!(t.add_candidate("candidate:nonsense").is_err());
        assert_eq!(t.ice.remote_candidates().len(), 1);
    }

    fn remote(cert: &Certificate, setup: Setup) -> RemoteIce {
        RemoteIce {
            ufrag: "rmte".into(),
            pwd: "remotepasswordremotepass".into(),
            fingerprint: Fingerprint::parse(&cert.sdp_fingerprint()).expect("fp"),
            setup,
            ice_lite: false,
            candidates: Vec::new(),
            end_of_candidates: false,
        }
    }

    /// A valid connectivity check for `t`.
    fn check(t: &WebrtcTransport) -> Vec<u8> {
        use crate::webrtc::stun::{Class, MessageWriter, Method};
        let mut buf = [0u8; 256];
        let mut w =
            MessageWriter::new(&mut buf, Class::Request, Method::Binding, &[9; 12]).expect("room");
        w.username(&format!("{}:rmte", t.ice.local().ufrag))
            .expect("room");
        w.priority(1).expect("room");
        w.ice_controlling(1).expect("room");
        w.message_integrity(t.ice.local().pwd.as_bytes())
            .expect("room");
        w.fingerprint().expect("room");
        let n = w.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn a_valid_check_is_answered_and_selects_the_remote_until_consent_expires() {
        let cert = Certificate::generate().expect("cert");
        let mut t = WebrtcTransport::answering(
            LegId(7),
            &remote(&cert, Setup::ActPass),
            DataLimits::default(),
        );
        assert_eq!(t.role, Some(DtlsRole::Server));
        let peer: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let t0 = Instant::now();
        let mut out = Vec::new();
        t.handle_datagram(t0, peer, &check(&t), &cert, &mut out);
        assert!(
            matches!(
                &out[..],
                [
                    Effect::Send(Command::Transmit { to, .. }),
                    Effect::Send(Command::SetRemote { remote: Remote { rtp: Some(r), rtcp_mux: true, .. }, .. }),
                ] if *to == peer && *r == peer
            ),
            "{out:?}"
        );
        // The DTLS server waits for the ClientHello: nothing to send yet.
        assert!(t.dtls.is_some());
        out.clear();
        t.tick(t0 + Duration::from_secs(29), &cert, &mut out);
        assert!(out.is_empty(), "{out:?}");
        t.tick(t0 + Duration::from_secs(31), &cert, &mut out);
        assert!(
            matches!(
                &out[..],
                [
                    Effect::Send(Command::SetRemote { remote: Remote { rtp: None, .. }, .. }),
                    Effect::Status(body),
                ] if body["status"] == "down"
            ),
            "{out:?}"
        );
        assert_eq!(t.state(), State::Down);
    }

    #[test]
    fn a_wrong_password_is_dropped_silently() {
        let cert = Certificate::generate().expect("cert");
        let mut t = WebrtcTransport::answering(
            LegId(7),
            &remote(&cert, Setup::ActPass),
            DataLimits::default(),
        );
        let mut other = WebrtcTransport::answering(
            LegId(8),
            &remote(&cert, Setup::ActPass),
            DataLimits::default(),
        );
        other.ice = IceLite::new(IceCredentials {
            ufrag: t.ice.local().ufrag.clone(),
            pwd: "notthepasswordnotthepass".into(),
        });
        let mut out = Vec::new();
        let peer: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        t.handle_datagram(Instant::now(), peer, &check(&other), &cert, &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(t.ice.stats().wrong_credentials, 1);
    }

    #[test]
    fn offering_waits_for_the_answer_before_dtls() {
        let cert = Certificate::generate().expect("cert");
        let mut t = WebrtcTransport::offering(LegId(1), DataLimits::default());
        let mut out = Vec::new();
        t.maybe_start_dtls(&cert, Instant::now(), &mut out);
        assert!(t.dtls.is_none() && out.is_empty());
        let remote = RemoteIce {
            ufrag: "abcd".into(),
            pwd: "0123456789012345678901".into(),
            fingerprint: Fingerprint::parse(&cert.sdp_fingerprint()).expect("fp"),
            setup: Setup::ActPass,
            ice_lite: false,
            candidates: Vec::new(),
            end_of_candidates: false,
        };
        assert!(
            t.apply_answer(&remote, &cert, Instant::now(), &mut out)
                .is_err()
        );
        let remote = RemoteIce {
            setup: Setup::Passive,
            ..remote
        };
        t.apply_answer(&remote, &cert, Instant::now(), &mut out)
            .expect("passive answer");
        // We are the client, but ICE has no address yet: no ClientHello.
        assert_eq!(t.role, Some(DtlsRole::Client));
        assert!(t.dtls.is_none());
    }
}
