//! Any datagram on a secure leg: RFC 7983 demultiplexing, then SRTP or SRTCP unprotect with a
//! fixed key (the first byte picks the profile). Never a panic; and the same bytes as a
//! plaintext packet protect and unprotect back to themselves, and fail once tampered with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::packet::{Class, classify};
use sluice_dataplane::srtp::{MasterKey, Profile, SessionKeys, SrtpContext, SrtpError};

const PROFILES: [Profile; 3] = [
    Profile::AeadAes128Gcm,
    Profile::AeadAes256Gcm,
    Profile::AesCm128HmacSha1_80,
];

/// Fixed keying material: `local` protects what the server sends, `remote` unprotects what
/// the peer sends.
fn keys(profile: Profile) -> SessionKeys {
    let material: Vec<u8> = (0..SessionKeys::keying_material_len(profile))
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
        .collect();
    SessionKeys::from_keying_material(profile, &material, false).expect("the profile's length")
}

fn context(key: &MasterKey) -> SrtpContext {
    SrtpContext::new(key).expect("a valid key")
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else {
        return;
    };
    let profile = PROFILES[usize::from(pick) % PROFILES.len()];
    let keys = keys(profile);
    let class = classify(datagram);
    let rtcp = match class {
        Class::Rtp => false,
        Class::Rtcp => true,
        _ => return,
    };
    // As received from the peer.
    let mut rx = context(&keys.remote);
    let mut buf = datagram.to_vec();
    let got = if rtcp {
        rx.unprotect_rtcp(&mut buf)
    } else {
        rx.unprotect_rtp(&mut buf)
    };
    if let Ok(len) = got {
        let overhead = if rtcp {
            profile.rtcp_overhead()
        } else {
            profile.rtp_overhead()
        };
        assert_eq!(len + overhead, datagram.len());
    }
    // As a plaintext the server protects, and a receiver of its keys unprotects.
    let mut tx = context(&keys.local);
    let mut buf = datagram.to_vec();
    buf.resize(datagram.len() + profile.rtcp_overhead(), 0);
    let protected = if rtcp {
        tx.protect_rtcp(&mut buf, datagram.len())
    } else {
        tx.protect_rtp(&mut buf, datagram.len())
    };
    let Ok(n) = protected else {
        return;
    };
    let mut tampered = buf[..n].to_vec();
    tampered[n - 1] ^= 1;
    let mut rx = context(&keys.local);
    let unprotect = |rx: &mut SrtpContext, b: &mut [u8]| {
        if rtcp {
            rx.unprotect_rtcp(b)
        } else {
            rx.unprotect_rtp(b)
        }
    };
    assert!(
        unprotect(&mut rx, &mut tampered).is_err(),
        "a flipped tag bit"
    );
    let mut replay = buf[..n].to_vec();
    let len = unprotect(&mut rx, &mut buf[..n]).expect("what we protected unprotects");
    assert_eq!(&buf[..len], datagram);
    assert_eq!(unprotect(&mut rx, &mut replay), Err(SrtpError::Replayed));
});
