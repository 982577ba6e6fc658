//! An ICE-lite agent (RFC 8445 §2.5), answering side only, with consent freshness (RFC 7675).
//!
//! A lite agent has only host candidates, is always controlled and never sends checks: it
//! answers the full agent's Binding requests. A request is valid when USERNAME is
//! `<our ufrag>:<their ufrag>` and MESSAGE-INTEGRITY verifies with our password (RFC 8445
//! §7.3); its source address then becomes a valid pair and the request is answered with
//! XOR-MAPPED-ADDRESS = that source. Anything else is dropped and counted.
//!
//! Nomination (the address media goes to), documented choice: the first valid check selects
//! its source at once and reports [`IceEvent::Nominated`], because a full agent only checks
//! pairs it can use and peers with aggressive nomination (or none at all, e.g. some gateways)
//! would otherwise never get media; a check carrying USE-CANDIDATE (RFC 8445 §7.3.1.5)
//! selects its source, reporting `Nominated` again if it changed, and from then on only
//! another USE-CANDIDATE moves the selection.
//!
//! Consent (RFC 7675 §5.1): the timer starts with the first valid check; 30 s without one
//! fires [`IceEvent::ConsentExpired`] once, and the agent stays expired (the session should
//! stop sending and end; a new ICE session means new credentials).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stun::{self, StunMessage};

/// RFC 7675 §5.1: consent expires 30 s after the last valid check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Valid pairs remembered per agent: a browser checks a handful of addresses.
const MAX_PAIRS: usize = 16;
/// Trickled remote candidates kept (ICE-lite does not use them).
const MAX_REMOTE_CANDIDATES: usize = 64;

/// RFC 8445 §5.3: `ice-char = ALPHA / DIGIT / "+" / "/"`, exactly 64 of them.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const UFRAG_LEN: usize = 8;
const PWD_LEN: usize = 24;

/// One side's ICE short-term credentials (`a=ice-ufrag`, `a=ice-pwd`).
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

impl IceCredentials {
    /// Fresh random credentials: an 8-character ufrag (≥ 4, RFC 8839 §5.4) and a
    /// 24-character password (≥ 22), 6 bits of entropy per character.
    pub fn random() -> IceCredentials {
        let mut seed = [0u8; UFRAG_LEN + PWD_LEN];
        // The system RNG failing is not recoverable for a server that needs secrets.
        aws_lc_rs::rand::fill(&mut seed).expect("system random generator works");
        IceCredentials::from_random_bytes(&seed)
    }

    /// Credentials from caller-supplied random bytes (fixed seeds in tests).
    pub fn from_random_bytes(bytes: &[u8; UFRAG_LEN + PWD_LEN]) -> IceCredentials {
        let text = |b: &[u8]| {
            b.iter()
                .map(|&x| char::from(ICE_CHARS[usize::from(x & 63)]))
                .collect::<String>()
        };
        IceCredentials {
            ufrag: text(&bytes[..UFRAG_LEN]),
            pwd: text(&bytes[UFRAG_LEN..]),
        }
    }
}

/// The password never reaches logs.
impl std::fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceCredentials")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

/// A STUN response to send back to where the request came from.
#[derive(Clone)]
pub struct Reply {
    pub to: SocketAddr,
    len: usize,
    data: [u8; stun::MAX_RESPONSE_LEN],
}

impl Reply {
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reply({} bytes to {})", self.len, self.to)
    }
}

/// Why a datagram handed to the agent was not answered with a success response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceDrop {
    /// Not STUN, or malformed STUN.
    Malformed,
    /// STUN, but not a Binding request (responses, indications: a lite agent sends no
    /// requests, so it expects no responses).
    NotRequest,
    /// No USERNAME or no MESSAGE-INTEGRITY (answered with 400 if error replies are on).
    Unauthenticated,
    /// USERNAME names other credentials or MESSAGE-INTEGRITY fails (401 if replies are on).
    WrongCredentials,
    /// Consent already expired: the agent is finished.
    Expired,
}

/// What to do with one datagram.
#[derive(Debug, Clone)]
pub enum IceOutput {
    /// A valid check: send the success response.
    Reply(Reply),
    /// Dropped; `reply` is a 400/401 error response when the agent sends them.
    Dropped {
        reason: IceDrop,
        reply: Option<Reply>,
    },
}

/// What the agent reports through [`IceLite::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// Media should go to this address from now on.
    Nominated(SocketAddr),
    /// No valid check for [`CONSENT_TIMEOUT`]: stop sending (RFC 7675 §5.1).
    ConsentExpired,
}

/// Counters for `get_info` and debugging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IceStats {
    pub valid_checks: u64,
    pub malformed: u64,
    pub not_request: u64,
    pub unauthenticated: u64,
    pub wrong_credentials: u64,
}

/// The ICE-lite agent of one bundled transport.
#[derive(Debug)]
pub struct IceLite {
    local: IceCredentials,
    remote: Option<IceCredentials>,
    /// Addresses that sent a valid check, oldest first.
    valid: Vec<SocketAddr>,
    selected: Option<SocketAddr>,
    /// Whether `selected` came from USE-CANDIDATE.
    nominated_by_peer: bool,
    last_valid: Option<Instant>,
    expired: bool,
    error_replies: bool,
    remote_candidates: Vec<String>,
    end_of_candidates: bool,
    events: VecDeque<IceEvent>,
    stats: IceStats,
}

impl IceLite {
    pub fn new(local: IceCredentials) -> IceLite {
        IceLite {
            local,
            remote: None,
            valid: Vec::new(),
            selected: None,
            nominated_by_peer: false,
            last_valid: None,
            expired: false,
            error_replies: false,
            remote_candidates: Vec::new(),
            end_of_candidates: false,
            events: VecDeque::new(),
            stats: IceStats::default(),
        }
    }

    /// Answer bad requests with 400/401 error responses instead of dropping them silently.
    /// Off by default: silence gives a scanner nothing (RFC 8445 §7.3 allows either).
    pub fn set_error_replies(&mut self, on: bool) {
        self.error_replies = on;
    }

    pub fn local(&self) -> &IceCredentials {
        &self.local
    }

    /// The peer's credentials, from its SDP. Until set, checks are authenticated with our
    /// password and our ufrag alone (RFC 8445 §7.3: a check may arrive before the answer).
    pub fn set_remote(&mut self, ufrag: &str, pwd: &str) {
        self.remote = Some(IceCredentials {
            ufrag: ufrag.to_owned(),
            pwd: pwd.to_owned(),
        });
    }

    /// A trickled remote candidate (RFC 8838). A lite agent sends no checks, so it only
    /// keeps it (bounded) for information.
    pub fn add_remote_candidate(&mut self, candidate: &str) {
        if self.remote_candidates.len() < MAX_REMOTE_CANDIDATES {
            self.remote_candidates.push(candidate.to_owned());
        }
    }

    /// The peer's `end-of-candidates` (RFC 8838 §13).
    pub fn end_of_candidates(&mut self) {
        self.end_of_candidates = true;
    }

    pub fn remote_candidates(&self) -> &[String] {
        &self.remote_candidates
    }

    pub fn remote_end_of_candidates(&self) -> bool {
        self.end_of_candidates
    }

    /// Where media goes, once a valid check selected an address.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// True while consent holds for the selected address.
    pub fn is_connected(&self) -> bool {
        self.selected.is_some() && !self.expired
    }

    /// Addresses that passed a check, oldest first (a data plane may accept media from them).
    pub fn valid_addresses(&self) -> &[SocketAddr] {
        &self.valid
    }

    pub fn stats(&self) -> IceStats {
        self.stats
    }

    /// Handles one STUN datagram from `from`.
    pub fn handle_stun(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> IceOutput {
        let msg = match StunMessage::parse(bytes) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                return self.drop(IceDrop::Malformed, None, from);
            }
        };
        if !msg.is_binding_request() {
            self.stats.not_request += 1;
            return self.drop(IceDrop::NotRequest, None, from);
        }
        let tid = msg.transaction_id;
        if self.expired {
            return self.drop(IceDrop::Expired, None, from);
        }
        // RFC 8489 §9.1.3: without USERNAME or MESSAGE-INTEGRITY → 400.
        let Some(username) = msg.username.filter(|_| msg.has_integrity()) else {
            self.stats.unauthenticated += 1;
            return self.drop(IceDrop::Unauthenticated, Some((tid, 400)), from);
        };
        // RFC 8445 §7.3: USERNAME is "<our ufrag>:<their ufrag>"; checked before the MAC so
        // that a wrong-credentials request costs no HMAC beyond this compare.
        if !self.username_matches(username) || !msg.verify_integrity(self.local.pwd.as_bytes()) {
            self.stats.wrong_credentials += 1;
            return self.drop(IceDrop::WrongCredentials, Some((tid, 401)), from);
        }
        self.stats.valid_checks += 1;
        self.valid_check(now, from, msg.use_candidate);
        let mut reply = Reply {
            to: from,
            len: 0,
            data: [0; stun::MAX_RESPONSE_LEN],
        };
        // MAX_RESPONSE_LEN fits the largest success response (IPv6, integrity, fingerprint).
        reply.len = stun::binding_success(&mut reply.data, &tid, from, &self.local.pwd)
            .expect("a success response fits MAX_RESPONSE_LEN");
        IceOutput::Reply(reply)
    }

    fn username_matches(&self, username: &str) -> bool {
        let Some((ours, theirs)) = username.split_once(':') else {
            return false;
        };
        ours == self.local.ufrag && self.remote.as_ref().is_none_or(|r| r.ufrag == theirs)
    }

    fn valid_check(&mut self, now: Instant, from: SocketAddr, use_candidate: bool) {
        self.last_valid = Some(now);
        if !self.valid.contains(&from) {
            if self.valid.len() == MAX_PAIRS {
                self.valid.remove(0);
            }
            self.valid.push(from);
        }
        let select = match (self.selected, use_candidate) {
            (None, _) => true,
            (Some(current), true) => current != from || !self.nominated_by_peer,
            (Some(_), false) => false,
        };
        if use_candidate {
            self.nominated_by_peer = true;
        }
        if select && self.selected != Some(from) {
            self.selected = Some(from);
            self.events.push_back(IceEvent::Nominated(from));
        }
    }

    fn drop(
        &mut self,
        reason: IceDrop,
        error: Option<(stun::TransactionId, u16)>,
        from: SocketAddr,
    ) -> IceOutput {
        let reply = error.filter(|_| self.error_replies).map(|(tid, code)| {
            let mut reply = Reply {
                to: from,
                len: 0,
                data: [0; stun::MAX_RESPONSE_LEN],
            };
            // An error response with a fixed short reason fits MAX_RESPONSE_LEN.
            reply.len = stun::binding_error(&mut reply.data, &tid, code)
                .expect("an error response fits MAX_RESPONSE_LEN");
            reply
        });
        IceOutput::Dropped { reason, reply }
    }

    /// When [`IceLite::handle_timeout`] must run next: the consent deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.expired {
            return None;
        }
        self.last_valid.map(|t| t + CONSENT_TIMEOUT)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout()
            && now >= deadline
        {
            self.expired = true;
            self.events.push_back(IceEvent::ConsentExpired);
        }
    }

    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::super::stun::{Class, MessageWriter, Method};
    use super::*;

    const TID: stun::TransactionId = [7; 12];

    fn agent() -> IceLite {
        let mut a = IceLite::new(IceCredentials {
            ufrag: "locl".into(),
            pwd: "localpasswordlocalpassword".into(),
        });
        a.set_remote("rmte", "remotepasswordremotepass");
        a
    }

    fn check(username: &str, pwd: &str, use_candidate: bool) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut w =
            MessageWriter::new(&mut buf, Class::Request, Method::Binding, &TID).expect("room");
        w.username(username).expect("room");
        w.priority(1_845_501_695).expect("room");
        w.ice_controlling(42).expect("room");
        if use_candidate {
            w.use_candidate().expect("room");
        }
        w.message_integrity(pwd.as_bytes()).expect("room");
        w.fingerprint().expect("room");
        let n = w.finish();
        buf[..n].to_vec()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("valid test address")
    }

    #[test]
    fn random_credentials_use_ice_chars_and_rfc_lengths() {
        let c = IceCredentials::from_random_bytes(&[0xA5; 32]);
        assert_eq!((c.ufrag.len(), c.pwd.len()), (8, 24));
        let all: String = (0u8..=255)
            .collect::<Vec<_>>()
            .chunks(32)
            .map(|chunk| {
                let c = IceCredentials::from_random_bytes(chunk.try_into().expect("32 bytes"));
                c.ufrag + &c.pwd
            })
            .collect();
        assert!(all.bytes().all(|b| ICE_CHARS.contains(&b)));
        let r = IceCredentials::random();
        assert_ne!(r, IceCredentials::random());
        assert!(!format!("{r:?}").contains(&r.pwd));
    }

    #[test]
    fn valid_check_is_answered_with_mapped_address_and_integrity() {
        let mut a = agent();
        let from = addr("192.0.2.10:54321");
        let out = a.handle_stun(
            Instant::now(),
            from,
            &check("locl:rmte", &a.local.pwd, false),
        );
        let IceOutput::Reply(reply) = out else {
            panic!("expected a reply, got {out:?}");
        };
        assert_eq!(reply.to, from);
        let m = StunMessage::parse(reply.bytes()).expect("reply parses");
        assert_eq!((m.class, m.transaction_id), (Class::Success, TID));
        assert_eq!(m.xor_mapped_address, Some(from));
        assert!(m.verify_integrity(b"localpasswordlocalpassword"));
        assert_eq!(a.valid_addresses(), &[from]);
        assert_eq!(a.stats().valid_checks, 1);
    }

    #[test]
    fn first_valid_address_is_selected_before_any_nomination() {
        let mut a = agent();
        let from = addr("192.0.2.10:5000");
        a.handle_stun(
            Instant::now(),
            from,
            &check("locl:rmte", &a.local.pwd, false),
        );
        assert_eq!(a.poll_event(), Some(IceEvent::Nominated(from)));
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.selected(), Some(from));
        assert!(a.is_connected());
    }

    #[test]
    fn use_candidate_moves_selection_and_then_pins_it() {
        let mut a = agent();
        let now = Instant::now();
        let first = addr("192.0.2.10:5000");
        let relay = addr("198.51.100.1:6000");
        let pwd = a.local.pwd.clone();
        a.handle_stun(now, first, &check("locl:rmte", &pwd, false));
        a.handle_stun(now, relay, &check("locl:rmte", &pwd, true));
        assert_eq!(a.poll_event(), Some(IceEvent::Nominated(first)));
        assert_eq!(a.poll_event(), Some(IceEvent::Nominated(relay)));
        // A later plain check from the first address does not steal the nomination.
        a.handle_stun(now, first, &check("locl:rmte", &pwd, false));
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.selected(), Some(relay));
        // Renominating the same address reports nothing new.
        a.handle_stun(now, relay, &check("locl:rmte", &pwd, true));
        assert_eq!(a.poll_event(), None);
    }

    #[test]
    fn wrong_password_is_dropped_and_counted() {
        let mut a = agent();
        let from = addr("192.0.2.10:5000");
        let out = a.handle_stun(
            Instant::now(),
            from,
            &check("locl:rmte", "wrongpassword", true),
        );
        assert!(matches!(
            out,
            IceOutput::Dropped {
                reason: IceDrop::WrongCredentials,
                reply: None
            }
        ));
        assert_eq!(a.stats().wrong_credentials, 1);
        assert_eq!(a.selected(), None);
        assert_eq!(a.poll_event(), None);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn wrong_username_is_dropped_even_with_right_password() {
        let mut a = agent();
        let pwd = a.local.pwd.clone();
        for user in ["other:rmte", "locl:other", "locl", "rmte:locl"] {
            let out = a.handle_stun(
                Instant::now(),
                addr("192.0.2.1:1"),
                &check(user, &pwd, false),
            );
            assert!(
                matches!(
                    out,
                    IceOutput::Dropped {
                        reason: IceDrop::WrongCredentials,
                        ..
                    }
                ),
                "{user}"
            );
        }
        assert_eq!(a.stats().wrong_credentials, 4);
    }

    #[test]
    fn check_before_remote_credentials_is_accepted_on_our_half() {
        let mut a = IceLite::new(IceCredentials {
            ufrag: "locl".into(),
            pwd: "localpasswordlocalpassword".into(),
        });
        let out = a.handle_stun(
            Instant::now(),
            addr("192.0.2.1:1"),
            &check("locl:anything", "localpasswordlocalpassword", false),
        );
        assert!(matches!(out, IceOutput::Reply(_)));
    }

    #[test]
    fn error_replies_are_401_for_bad_credentials_and_400_without_integrity() {
        let mut a = agent();
        a.set_error_replies(true);
        let from = addr("192.0.2.10:5000");
        let IceOutput::Dropped { reply: Some(r), .. } =
            a.handle_stun(Instant::now(), from, &check("locl:rmte", "nope", false))
        else {
            panic!("expected an error reply");
        };
        let m = StunMessage::parse(r.bytes()).expect("parses");
        assert_eq!(m.error_code.map(|e| e.0), Some(401));

        let mut buf = [0u8; 64];
        let mut w =
            MessageWriter::new(&mut buf, Class::Request, Method::Binding, &TID).expect("room");
        w.fingerprint().expect("room");
        let n = w.finish();
        let IceOutput::Dropped {
            reason,
            reply: Some(r),
        } = a.handle_stun(Instant::now(), from, &buf[..n])
        else {
            panic!("expected an error reply");
        };
        assert_eq!(reason, IceDrop::Unauthenticated);
        let m = StunMessage::parse(r.bytes()).expect("parses");
        assert_eq!(m.error_code.map(|e| e.0), Some(400));
    }

    #[test]
    fn garbage_and_responses_are_dropped() {
        let mut a = agent();
        let from = addr("192.0.2.10:5000");
        let out = a.handle_stun(Instant::now(), from, b"\x16\xfe\xfd garbage");
        assert!(matches!(
            out,
            IceOutput::Dropped {
                reason: IceDrop::Malformed,
                ..
            }
        ));
        let mut buf = [0u8; stun::MAX_RESPONSE_LEN];
        let n = stun::binding_success(&mut buf, &TID, from, "x").expect("room");
        let out = a.handle_stun(Instant::now(), from, &buf[..n]);
        assert!(matches!(
            out,
            IceOutput::Dropped {
                reason: IceDrop::NotRequest,
                ..
            }
        ));
        assert_eq!((a.stats().malformed, a.stats().not_request), (1, 1));
    }

    #[test]
    fn consent_expires_30s_after_last_valid_check() {
        let mut a = agent();
        let t0 = Instant::now();
        let from = addr("192.0.2.10:5000");
        let pwd = a.local.pwd.clone();
        assert_eq!(a.poll_timeout(), None, "no timer before the first check");
        a.handle_stun(t0, from, &check("locl:rmte", &pwd, true));
        a.poll_event();
        let t1 = t0 + Duration::from_secs(20);
        a.handle_stun(t1, from, &check("locl:rmte", &pwd, false));
        assert_eq!(a.poll_timeout(), Some(t1 + CONSENT_TIMEOUT));
        a.handle_timeout(t0 + CONSENT_TIMEOUT);
        assert_eq!(a.poll_event(), None, "refreshed at t1");
        a.handle_timeout(t1 + CONSENT_TIMEOUT);
        assert_eq!(a.poll_event(), Some(IceEvent::ConsentExpired));
        assert!(!a.is_connected());
        assert_eq!(a.poll_timeout(), None);
        // Expiry is final.
        let out = a.handle_stun(t1 + CONSENT_TIMEOUT, from, &check("locl:rmte", &pwd, false));
        assert!(matches!(
            out,
            IceOutput::Dropped {
                reason: IceDrop::Expired,
                ..
            }
        ));
    }

    #[test]
    fn trickled_candidates_are_accepted() {
        let mut a = agent();
        a.add_remote_candidate("1 1 udp 2122260223 192.0.2.10 5000 typ host");
        a.end_of_candidates();
        assert_eq!(a.remote_candidates().len(), 1);
        assert!(a.remote_end_of_candidates());
    }
}
