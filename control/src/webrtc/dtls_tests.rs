use std::time::{Duration, Instant};

use super::*;
use crate::webrtc::cert::HashFunction;

fn fingerprint(cert: &Certificate) -> Fingerprint {
    Fingerprint::of(HashFunction::Sha256, cert.der())
}

struct Pair {
    client: DtlsEndpoint,
    server: DtlsEndpoint,
    now: Instant,
    client_events: Vec<DtlsEvent>,
    server_events: Vec<DtlsEvent>,
    /// Datagrams sent by each side, in order (client, server).
    sent: (usize, usize),
}

impl Pair {
    /// Two endpoints; `client_expects` / `server_expects` are the fingerprints each side
    /// was told (by SDP) the other one has.
    fn new(wrong_client_fp: bool, wrong_server_fp: bool) -> Pair {
        let now = Instant::now();
        let client_cert = Certificate::generate().expect("cert");
        let server_cert = Certificate::generate().expect("cert");
        let other = Certificate::generate().expect("cert");
        let for_client = if wrong_client_fp {
            &other
        } else {
            &server_cert
        };
        let for_server = if wrong_server_fp {
            &other
        } else {
            &client_cert
        };
        let client = DtlsEndpoint::with_config(
            &client_cert,
            DtlsRole::Client,
            fingerprint(for_client),
            now,
            Some(1),
        )
        .expect("client");
        let server = DtlsEndpoint::with_config(
            &server_cert,
            DtlsRole::Server,
            fingerprint(for_server),
            now,
            Some(2),
        )
        .expect("server");
        Pair {
            client,
            server,
            now,
            client_events: Vec::new(),
            server_events: Vec::new(),
            sent: (0, 0),
        }
    }

    fn done(&self) -> bool {
        let finished = |e: &DtlsEndpoint| e.is_connected() || e.is_failed();
        finished(&self.client) && finished(&self.server)
    }

    /// Runs the exchange; `lose(from_client, index)` drops a datagram. Time only moves to
    /// the next retransmission deadline when nothing is in flight.
    fn run(&mut self, mut lose: impl FnMut(bool, usize) -> bool) {
        for _ in 0..200 {
            let mut moved = false;
            while let Some(d) = self.client.poll_transmit() {
                moved = true;
                self.sent.0 += 1;
                if !lose(true, self.sent.0 - 1) {
                    self.server.handle_datagram(self.now, &d);
                }
            }
            while let Some(d) = self.server.poll_transmit() {
                moved = true;
                self.sent.1 += 1;
                if !lose(false, self.sent.1 - 1) {
                    self.client.handle_datagram(self.now, &d);
                }
            }
            self.client_events
                .extend(std::iter::from_fn(|| self.client.poll_event()));
            self.server_events
                .extend(std::iter::from_fn(|| self.server.poll_event()));
            if self.done() {
                return;
            }
            if !moved {
                let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next else { return };
                self.now = next.max(self.now + Duration::from_millis(1));
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
            }
        }
    }
}

fn connected(events: &[DtlsEvent]) -> Option<(Profile, &SessionKeys)> {
    events.iter().find_map(|e| match e {
        DtlsEvent::Connected { profile, keys } => Some((*profile, keys)),
        DtlsEvent::Failed(_) => None,
    })
}

fn failure(events: &[DtlsEvent]) -> Option<&DtlsError> {
    events.iter().find_map(|e| match e {
        DtlsEvent::Failed(err) => Some(err),
        DtlsEvent::Connected { .. } => None,
    })
}

/// Both sides end with the same profile and mirrored keys. dimpl's server picks
/// AEAD_AES_256_GCM whenever the client offers it, and a dimpl client always does: until the
/// data plane's SRTP has that profile, the server must refuse cleanly instead.
fn assert_handshake_outcome(pair: &Pair) {
    match Profile::from_dtls_id(0x0008) {
        Some(_) => {
            let (cp, ck) = connected(&pair.client_events).expect("client connected");
            let (sp, sk) = connected(&pair.server_events).expect("server connected");
            assert_eq!(cp, sp);
            assert_eq!(ck.local, sk.remote, "client writes what the server reads");
            assert_eq!(ck.remote, sk.local, "server writes what the client reads");
            assert_ne!(ck.local, ck.remote);
        }
        None => {
            assert_eq!(
                failure(&pair.server_events),
                Some(&DtlsError::UnsupportedSrtpProfile(0x0008))
            );
            assert!(connected(&pair.server_events).is_none());
        }
    }
}

#[test]
fn handshake_in_memory_reaches_srtp_keys() {
    let mut pair = Pair::new(false, false);
    pair.run(|_, _| false);
    assert_handshake_outcome(&pair);
    assert!(failure(&pair.client_events) != Some(&DtlsError::FingerprintMismatch));
}

#[test]
fn server_refuses_client_with_wrong_fingerprint() {
    let mut pair = Pair::new(false, true);
    pair.run(|_, _| false);
    assert_eq!(
        failure(&pair.server_events),
        Some(&DtlsError::FingerprintMismatch)
    );
    assert!(connected(&pair.server_events).is_none());
    assert!(connected(&pair.client_events).is_none());
}

#[test]
fn client_refuses_server_with_wrong_fingerprint() {
    let mut pair = Pair::new(true, false);
    pair.run(|_, _| false);
    assert_eq!(
        failure(&pair.client_events),
        Some(&DtlsError::FingerprintMismatch)
    );
    assert!(connected(&pair.client_events).is_none());
    assert_eq!(
        pair.client.poll_timeout(),
        None,
        "a failed endpoint is finished"
    );
}

#[test]
fn lost_flights_are_retransmitted_on_timeout() {
    let mut pair = Pair::new(false, false);
    let start = pair.now;
    // Lose the first ClientHello and the server's first flight.
    pair.run(|from_client, i| i == 0 || (!from_client && i == 1));
    assert!(pair.now > start, "progress needed handle_timeout");
    assert!(pair.sent.0 >= 2, "ClientHello was sent again");
    assert_handshake_outcome(&pair);
}

#[test]
fn client_sends_client_hello_at_once_and_server_waits() {
    let pair = Pair::new(false, false);
    let mut client = pair.client;
    let mut server = pair.server;
    let hello = client.poll_transmit().expect("ClientHello queued");
    assert_eq!(hello[0], 22, "a handshake record (RFC 7983 DTLS range)");
    assert!(server.poll_transmit().is_none());
    assert!(client.poll_timeout().is_some(), "retransmission armed");
}

#[test]
fn garbage_datagrams_do_not_break_the_handshake() {
    let mut pair = Pair::new(false, false);
    let now = pair.now;
    pair.server.handle_datagram(now, &[23, 0xfe, 0xfd, 0, 0, 0]);
    pair.server.handle_datagram(now, &[0xff; 40]);
    assert!(!pair.server.is_failed());
    pair.run(|_, _| false);
    assert_handshake_outcome(&pair);
}

#[test]
fn roles_follow_sdp_setup() {
    assert_eq!(
        DtlsRole::answering(Setup::ActPass),
        (DtlsRole::Server, Setup::Passive)
    );
    assert_eq!(
        DtlsRole::answering(Setup::Active),
        (DtlsRole::Server, Setup::Passive)
    );
    assert_eq!(
        DtlsRole::answering(Setup::Passive),
        (DtlsRole::Client, Setup::Active)
    );
    assert_eq!(DtlsRole::offered(Setup::Active), Some(DtlsRole::Server));
    assert_eq!(DtlsRole::offered(Setup::Passive), Some(DtlsRole::Client));
    assert_eq!(DtlsRole::offered(Setup::ActPass), None);
}

#[test]
fn keying_material_is_split_by_role() {
    let material: Vec<u8> = (0u8..56).collect();
    let profile = dimpl::SrtpProfile::AEAD_AES_128_GCM;
    let (p, client) = keys(profile, &material, true).expect("valid length");
    let (_, server) = keys(profile, &material, false).expect("valid length");
    assert_eq!(p, Profile::AeadAes128Gcm);
    assert_eq!(client.local, server.remote);
    assert_eq!(client.remote, server.local);
    let (p, _) = keys(dimpl::SrtpProfile::AES128_CM_SHA1_80, &[0; 60], true).expect("valid");
    assert_eq!(p, Profile::AesCm128HmacSha1_80);
    assert_eq!(
        keys(profile, &material[..10], true).unwrap_err(),
        DtlsError::Keying(SrtpError::KeyLength)
    );
}
