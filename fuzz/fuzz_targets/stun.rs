//! Any datagram as STUN (RFC 8489): parsed, written back from what was read and parsed again
//! to the same fields; and handed to the ICE-lite agent, which counts it exactly once and
//! answers only with messages it can parse itself.
#![no_main]

use std::net::SocketAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sluice_control::webrtc::ice::{IceCredentials, IceLite, IceOutput};
use sluice_control::webrtc::stun::{Class, MessageWriter, StunError, StunMessage};

/// RFC 5769's password, so its sample request (in the corpus) authenticates.
const PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// `msg` written anew: its attributes, then MESSAGE-INTEGRITY (keyed with `PWD`) and
/// FINGERPRINT if it had them.
fn rewrite(msg: &StunMessage<'_>, buf: &mut [u8]) -> Result<usize, StunError> {
    let mut w = MessageWriter::new(buf, msg.class, msg.method, &msg.transaction_id)?;
    if let Some(u) = msg.username {
        w.username(u)?;
    }
    if let Some(s) = msg.software {
        w.software(s)?;
    }
    if let Some(p) = msg.priority {
        w.priority(p)?;
    }
    if msg.use_candidate {
        w.use_candidate()?;
    }
    if let Some(t) = msg.ice_controlling {
        w.ice_controlling(t)?;
    }
    if let Some(t) = msg.ice_controlled {
        w.ice_controlled(t)?;
    }
    if let Some(a) = msg.xor_mapped_address {
        w.xor_mapped_address(a)?;
    }
    if let Some((code, reason)) = msg.error_code {
        w.error_code(code, reason)?;
    }
    if msg.has_integrity() {
        w.message_integrity(PWD.as_bytes())?;
    }
    if msg.has_fingerprint {
        w.fingerprint()?;
    }
    Ok(w.finish())
}

fn round_trip(data: &[u8]) {
    let Ok(msg) = StunMessage::parse(data) else {
        return;
    };
    msg.verify_integrity(PWD.as_bytes());
    // Same attributes, same padding: never longer than the input plus a FINGERPRINT.
    let mut buf = vec![0u8; data.len() + 64];
    let len = rewrite(&msg, &mut buf).expect("room for what was read");
    let again = StunMessage::parse(&buf[..len]).expect("our own output parses");
    assert_eq!(
        (again.class, again.method, again.transaction_id),
        (msg.class, msg.method, msg.transaction_id)
    );
    assert_eq!(
        (again.username, again.software),
        (msg.username, msg.software)
    );
    assert_eq!(
        (again.priority, again.use_candidate),
        (msg.priority, msg.use_candidate)
    );
    assert_eq!(
        (again.ice_controlling, again.ice_controlled),
        (msg.ice_controlling, msg.ice_controlled)
    );
    assert_eq!(again.xor_mapped_address, msg.xor_mapped_address);
    assert_eq!(
        (again.has_integrity(), again.has_fingerprint),
        (msg.has_integrity(), msg.has_fingerprint)
    );
    if msg.has_integrity() {
        assert!(again.verify_integrity(PWD.as_bytes()));
    }
    if let (Some((code, reason)), Some((code2, reason2))) = (msg.error_code, again.error_code) {
        // The class field has 3 bits and the number 8: codes of 800 and up do not survive.
        if code < 800 {
            assert_eq!(code2, code);
        }
        // A reason is cut to 128 bytes, at a character boundary (RFC 8489 §14.8: UTF-8).
        let mut end = reason.len().min(128);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        assert_eq!(reason2, &reason[..end]);
    } else {
        assert_eq!(again.error_code.is_some(), msg.error_code.is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    let mut ice = IceLite::new(IceCredentials {
        ufrag: "evtj".into(),
        pwd: PWD.into(),
    });
    ice.set_remote("h6vY", "remote-password-unused");
    ice.set_error_replies(true);
    let from: SocketAddr = "192.0.2.1:32853".parse().expect("a literal address");
    let out = ice.handle_stun(Instant::now(), from, data);
    let s = ice.stats();
    let counted =
        s.valid_checks + s.malformed + s.not_request + s.unauthenticated + s.wrong_credentials;
    assert_eq!(counted, 1, "every datagram is counted once");
    let reply = match out {
        IceOutput::Reply(r) => Some(r),
        IceOutput::Dropped { reply, .. } => reply,
    };
    if let Some(r) = reply {
        let m = StunMessage::parse(r.bytes()).expect("our reply parses");
        assert!(m.has_fingerprint && matches!(m.class, Class::Success | Class::Error));
        if m.class == Class::Success {
            assert!(m.verify_integrity(PWD.as_bytes()));
            assert_eq!(m.xor_mapped_address, Some(from));
        }
    }
});
