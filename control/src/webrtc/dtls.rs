//! DTLS-SRTP (RFC 5764, RFC 8842) over `dimpl`, sans-IO, in either role.
//!
//! [`DtlsEndpoint`] wraps one `dimpl::Dtls` (DTLS 1.2): datagrams in with
//! [`handle_datagram`](DtlsEndpoint::handle_datagram), records out with
//! [`poll_transmit`](DtlsEndpoint::poll_transmit), retransmissions driven by
//! [`poll_timeout`](DtlsEndpoint::poll_timeout) / [`handle_timeout`](DtlsEndpoint::handle_timeout).
//! dimpl does no PKI: the peer's certificate is accepted only if it hashes to the SDP
//! `a=fingerprint` (RFC 8842 §5), checked here. On success the exported keying material
//! (`EXTRACTOR-dtls_srtp`, RFC 5764 §4.2) becomes [`SessionKeys`] for the data plane.
//! Application data (data channels' SCTP, RFC 8261) goes both ways once connected:
//! [`poll_app_data`](DtlsEndpoint::poll_app_data) and
//! [`send_app_data`](DtlsEndpoint::send_app_data).
//!
//! dimpl facts this relies on (0.9): every error it returns is fatal to the connection; a
//! client sends its ClientHello from `handle_timeout`, not at construction; the SRTP profile
//! cannot be configured — a dimpl client offers AEAD_AES_256_GCM, AEAD_AES_128_GCM and
//! AES128_CM_SHA1_80, and a dimpl server picks the first of those the client offers. A profile
//! the data plane's SRTP lacks ends the handshake with [`DtlsError::UnsupportedSrtpProfile`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use sluice_dataplane::srtp::{Profile, SessionKeys, SrtpError};

use super::cert::{Certificate, Fingerprint};
use super::sdp::Setup;

/// Our DTLS role, from the SDP `a=setup` exchange (RFC 8842 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// `a=setup:active`: we send the ClientHello.
    Client,
    /// `a=setup:passive`: we wait for it.
    Server,
}

impl DtlsRole {
    /// Answering an offer whose setup is `offered`: our role and the setup to answer with.
    /// RFC 8842 §5.3: an `actpass` offer is answered `passive` here (the peer, a browser,
    /// then sends the ClientHello right after ICE); `passive` forces us active.
    pub fn answering(offered: Setup) -> (DtlsRole, Setup) {
        match offered {
            Setup::Passive => (DtlsRole::Client, Setup::Active),
            Setup::Active | Setup::ActPass | Setup::HoldConn => (DtlsRole::Server, Setup::Passive),
        }
    }

    /// Our role after offering `actpass` and receiving `answered`; `None` when the answer's
    /// setup is not `active` or `passive` (RFC 8842 §5.3).
    pub fn offered(answered: Setup) -> Option<DtlsRole> {
        match answered {
            Setup::Active => Some(DtlsRole::Server),
            Setup::Passive => Some(DtlsRole::Client),
            Setup::ActPass | Setup::HoldConn => None,
        }
    }
}

/// Why a handshake ended without keys. Every one is final for the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtlsError {
    #[error("peer certificate does not match the SDP fingerprint")]
    FingerprintMismatch,
    #[error("handshake completed without a peer certificate")]
    NoPeerCertificate,
    #[error("no SRTP profile negotiated (use_srtp missing)")]
    NoSrtpProfile,
    #[error("negotiated SRTP profile {0:#06x} is not supported by the data plane")]
    UnsupportedSrtpProfile(u16),
    #[error("SRTP keying material: {0}")]
    Keying(SrtpError),
    #[error("DTLS: {0}")]
    Protocol(String),
    #[error("peer closed the DTLS connection")]
    Closed,
}

/// What the endpoint reports through [`DtlsEndpoint::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// Handshake done, peer verified: hand the keys to the data plane.
    Connected {
        profile: Profile,
        keys: SessionKeys,
    },
    Failed(DtlsError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshaking,
    Connected,
    Failed,
}

/// One DTLS-SRTP association.
pub struct DtlsEndpoint {
    dtls: dimpl::Dtls,
    role: DtlsRole,
    remote_fingerprint: Fingerprint,
    state: State,
    peer_verified: bool,
    handshake_done: bool,
    keys: Option<(Profile, SessionKeys)>,
    timeout: Option<Instant>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<DtlsEvent>,
    /// Application data received and not yet taken (bounded by [`MAX_APP_DATA`]).
    app_data: VecDeque<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// dimpl's default MTU (1150) keeps records under any path MTU a WebRTC peer uses.
const POLL_BUF: usize = 2048;
/// Application-data records kept between two drains by the transport; one datagram holds a
/// few at most, so more means nobody drains them.
const MAX_APP_DATA: usize = 256;

impl DtlsEndpoint {
    /// A new endpoint; a client has its ClientHello ready in [`DtlsEndpoint::poll_transmit`].
    pub fn new(
        cert: &Certificate,
        role: DtlsRole,
        remote_fingerprint: Fingerprint,
        now: Instant,
    ) -> Result<DtlsEndpoint, DtlsError> {
        DtlsEndpoint::with_config(cert, role, remote_fingerprint, now, None)
    }

    /// As [`DtlsEndpoint::new`], with dimpl's RNG seeded (deterministic tests).
    fn with_config(
        cert: &Certificate,
        role: DtlsRole,
        remote_fingerprint: Fingerprint,
        now: Instant,
        seed: Option<u64>,
    ) -> Result<DtlsEndpoint, DtlsError> {
        // ICE has already proven the peer's address (RFC 8445 §7.3), so the HelloVerifyRequest
        // cookie round trip buys nothing (str0m makes the same choice).
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(seed) = seed {
            builder = builder.dangerously_set_rng_seed(seed);
        }
        let config = builder
            .build()
            .map_err(|e| DtlsError::Protocol(e.to_string()))?;
        let mut dtls = dimpl::Dtls::new_12(Arc::new(config), cert.dimpl(), now);
        if role == DtlsRole::Client {
            dtls.set_active(true);
        }
        let mut endpoint = DtlsEndpoint {
            dtls,
            role,
            remote_fingerprint,
            state: State::Handshaking,
            peer_verified: false,
            handshake_done: false,
            keys: None,
            timeout: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            app_data: VecDeque::new(),
            buf: vec![0; POLL_BUF],
        };
        // A dimpl client sends its first flight from handle_timeout.
        endpoint.handle_timeout(now);
        Ok(endpoint)
    }

    pub fn role(&self) -> DtlsRole {
        self.role
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn is_failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Feeds one received DTLS datagram (RFC 7983: first byte 20..=63).
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Failed {
            return;
        }
        // dimpl keeps its clock from handle_timeout; give it `now` before the packet.
        let result = self
            .dtls
            .handle_timeout(now)
            .and_then(|()| self.dtls.handle_packet(bytes));
        match result {
            Ok(()) => self.drain(),
            Err(e) => self.fail(DtlsError::Protocol(e.to_string())),
        }
    }

    /// When [`DtlsEndpoint::handle_timeout`] must run next (retransmission, handshake timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Failed => None,
            _ => self.timeout,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Failed {
            return;
        }
        match self.dtls.handle_timeout(now) {
            Ok(()) => self.drain(),
            Err(e) => self.fail(DtlsError::Protocol(e.to_string())),
        }
    }

    /// The next datagram to send to the peer (the ICE-selected address).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// The plaintext of the next application-data record received (an SCTP packet).
    pub fn poll_app_data(&mut self) -> Option<Vec<u8>> {
        self.app_data.pop_front()
    }

    /// Sends `data` (an SCTP packet) as one application-data record; its datagram is then in
    /// [`DtlsEndpoint::poll_transmit`]. Only once connected: before that, nothing is sent.
    pub fn send_app_data(&mut self, data: &[u8]) {
        if self.state != State::Connected {
            return;
        }
        match self.dtls.send_application_data(data) {
            Ok(_) => self.drain(),
            Err(e) => self.fail(DtlsError::Protocol(e.to_string())),
        }
    }

    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Drains dimpl's outputs until it asks to wait.
    fn drain(&mut self) {
        loop {
            if self.state == State::Failed {
                return;
            }
            match self.dtls.poll_output(&mut self.buf) {
                dimpl::Output::Packet(p) => self.transmit.push_back(p.to_vec()),
                dimpl::Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                dimpl::Output::Timeout(at) => {
                    self.timeout = Some(at);
                    break;
                }
                dimpl::Output::PeerCert(der) => {
                    if self.remote_fingerprint.matches(der) {
                        self.peer_verified = true;
                    } else {
                        self.fail(DtlsError::FingerprintMismatch);
                    }
                }
                dimpl::Output::KeyingMaterial(material, profile) => {
                    match keys(profile, &material, self.role == DtlsRole::Client) {
                        Ok(k) => self.keys = Some(k),
                        Err(e) => self.fail(e),
                    }
                }
                dimpl::Output::Connected => self.handshake_done = true,
                dimpl::Output::CloseNotify => self.fail(DtlsError::Closed),
                // Data channels: SCTP packets (RFC 8261). dimpl delivers only authenticated
                // records, and buffers those that arrive before its handshake completes.
                dimpl::Output::ApplicationData(data) if self.app_data.len() < MAX_APP_DATA => {
                    self.app_data.push_back(data.to_vec());
                }
                _ => {}
            }
        }
        self.maybe_connected();
    }

    fn maybe_connected(&mut self) {
        if self.state != State::Handshaking || !self.handshake_done {
            return;
        }
        if !self.peer_verified {
            return self.fail(DtlsError::NoPeerCertificate);
        }
        match self.keys.take() {
            Some((profile, keys)) => {
                self.state = State::Connected;
                self.events
                    .push_back(DtlsEvent::Connected { profile, keys });
            }
            None => self.fail(DtlsError::NoSrtpProfile),
        }
    }

    fn fail(&mut self, error: DtlsError) {
        if self.state != State::Failed {
            self.state = State::Failed;
            self.keys = None;
            self.events.push_back(DtlsEvent::Failed(error));
        }
    }
}

/// RFC 5764 §4.1.2 / RFC 7714 §14.2 ids of dimpl's profiles; 0 for one a later dimpl adds
/// (its enum is non-exhaustive), which no data plane supports.
fn profile_id(profile: dimpl::SrtpProfile) -> u16 {
    match profile {
        dimpl::SrtpProfile::AES128_CM_SHA1_80 => 0x0001,
        dimpl::SrtpProfile::AEAD_AES_128_GCM => 0x0007,
        dimpl::SrtpProfile::AEAD_AES_256_GCM => 0x0008,
        _ => 0,
    }
}

fn keys(
    profile: dimpl::SrtpProfile,
    material: &[u8],
    we_are_client: bool,
) -> Result<(Profile, SessionKeys), DtlsError> {
    let id = profile_id(profile);
    let profile = Profile::from_dtls_id(id).ok_or(DtlsError::UnsupportedSrtpProfile(id))?;
    let keys = SessionKeys::from_keying_material(profile, material, we_are_client)
        .map_err(DtlsError::Keying)?;
    Ok((profile, keys))
}

#[cfg(test)]
#[path = "dtls_tests.rs"]
mod tests;
