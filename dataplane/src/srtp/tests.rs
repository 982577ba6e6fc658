//! RFC 3711 Appendix B, RFC 7714 §16-17 and libsrtp reference vectors, then behaviour.

use aws_lc_rs::cipher::{AES_128, EncryptingKey, UnboundCipherKey};

use super::kdf::{self, Derived, Label};
use super::transform::{AesCm, Session};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex length");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

fn derived(key: &str, salt: &str, auth: &str) -> Derived {
    let mut d = Derived {
        key: [0; super::MAX_KEY],
        auth: [0; 20],
        salt: [0; MAX_SALT],
    };
    let key = hex(key);
    d.key[..key.len()].copy_from_slice(&key);
    let auth = hex(auth);
    d.auth[..auth.len()].copy_from_slice(&auth);
    let salt = hex(salt);
    d.salt[..salt.len()].copy_from_slice(&salt);
    d
}

/// A context over session keys given directly (same keys for SRTP and SRTCP).
fn direct(profile: Profile, key: &str, salt: &str) -> SrtpContext {
    let d = derived(key, salt, "");
    let session = || Session::from_derived(profile, &d).expect("session");
    SrtpContext::from_sessions(profile, session(), session())
}

/// Runs `protect` on `plain` in a buffer with room for the trailer.
fn protected(
    plain: &[u8],
    protect: impl FnOnce(&mut [u8], usize) -> Result<usize, SrtpError>,
) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 32, 0);
    let len = protect(&mut buf, plain.len()).expect("protect");
    buf.truncate(len);
    buf
}

// RFC 3711 Appendix B.2: AES-CM keystream for session key 2B7E..., salt F0F1...FD, SSRC 0,
// index 0. The counter blocks FEFF..FF01 are reached by running 0xFF02 blocks.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let cm = AesCm::new(&derived(
        "2B7E151628AED2A6ABF7158809CF4F3C",
        "F0F1F2F3F4F5F6F7F8F9FAFBFCFD",
        "",
    ))
    .expect("cipher");
    let mut stream = vec![0u8; 0xff02 * 16];
    cm.apply_keystream(&mut stream, 0, 0).expect("ctr");
    let block = |i: usize| &stream[i * 16..(i + 1) * 16];
    assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
    assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
    assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
    assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
    assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
    assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
}

// The same keystream through the packet path: a zero payload encrypts to the keystream.
#[test]
fn rfc3711_b2_keystream_through_protect_rtp() {
    let mut ctx = direct(
        Profile::AesCm128HmacSha1_80,
        "2B7E151628AED2A6ABF7158809CF4F3C",
        "F0F1F2F3F4F5F6F7F8F9FAFBFCFD",
    );
    let mut plain = vec![0u8; 12 + 48];
    plain[0] = 0x80;
    let out = protected(&plain, |b, l| ctx.protect_rtp(b, l));
    assert_eq!(out.len(), 12 + 48 + 10);
    assert_eq!(
        &out[12..60],
        hex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )
    );
}

// RFC 3711 Appendix B.3: key derivation.
#[test]
fn rfc3711_b3_key_derivation() {
    let master = MasterKey::new(
        Profile::AesCm128HmacSha1_80,
        &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
        &hex("0EC675AD498AFEEBB6960B3AABE6"),
    )
    .expect("master");
    let d = kdf::derive(&master, false).expect("derive");
    assert_eq!(
        d.key[..16].to_vec(),
        hex("C61E7A93744F39EE10734AFE3FF7A087")
    );
    assert_eq!(d.salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    assert_eq!(
        d.auth.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );

    // B.3 lists 94 bytes of the auth-key PRF output; check all of them.
    let prf = EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &master.key[..16]).expect("key"))
        .expect("ctr");
    let mut long = [0u8; 94];
    kdf::prf_block(&prf, &master.salt, Label::RtpAuth, &mut long).expect("prf");
    assert_eq!(
        long.to_vec(),
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2"
        )
    );
}

// The GCM KDF zero-pads the 96-bit salt to 112 bits (label on byte 7), as libsrtp and
// webrtc-srtp do; RFC 7714 gives no KDF vector, so this is the value those derive.
#[test]
fn gcm_kdf_pads_salt_like_libsrtp() {
    let key: Vec<u8> = (0..16).collect();
    let salt: Vec<u8> = (0x40..0x4c).collect();
    let master = MasterKey::new(Profile::AeadAes128Gcm, &key, &salt).expect("master");
    let d = kdf::derive(&master, false).expect("derive");
    assert_eq!(d.salt[..12].to_vec(), hex("1fcd5d561e66dc49ec1c3ccb"));
    assert_eq!(d.salt[12..], [0, 0]);
}

/// libsrtp `srtp_driver` reference packet: master key and salt of RFC 3711 B.3, SSRC
/// 0xcafebabe, seq 0x1234.
fn libsrtp_master() -> MasterKey {
    MasterKey::new(
        Profile::AesCm128HmacSha1_80,
        &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
        &hex("0EC675AD498AFEEBB6960B3AABE6"),
    )
    .expect("master")
}

#[test]
fn libsrtp_reference_aes_cm_rtp_packet() {
    let plain = hex("800f1234decafbadcafebabe abababababababababababababababab");
    let want = hex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402
                    b78d6acc99ea179b8dbb");
    let mut tx = SrtpContext::new(&libsrtp_master()).expect("ctx");
    assert_eq!(protected(&plain, |b, l| tx.protect_rtp(b, l)), want);

    let mut rx = SrtpContext::new(&libsrtp_master()).expect("ctx");
    let mut wire = want.clone();
    let len = rx.unprotect_rtp(&mut wire).expect("unprotect");
    assert_eq!(&wire[..len], plain);
}

// libsrtp numbers its first SRTCP packet 1; we start at 0 (RFC 3711 §3.3.2), so the
// vector is our second packet.
#[test]
fn libsrtp_reference_aes_cm_rtcp_packet() {
    let plain = hex("81c8000bcafebabe abababababababababababababababab");
    let want = hex("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001
                    993e08cd54d6c1230798");
    let mut tx = SrtpContext::new(&libsrtp_master()).expect("ctx");
    let first = protected(&plain, |b, l| tx.protect_rtcp(b, l));
    assert_eq!(first[first.len() - 14..first.len() - 10], [0x80, 0, 0, 0]);
    assert_eq!(protected(&plain, |b, l| tx.protect_rtcp(b, l)), want);

    let mut rx = SrtpContext::new(&libsrtp_master()).expect("ctx");
    let mut wire = want.clone();
    let len = rx.unprotect_rtcp(&mut wire).expect("unprotect");
    assert_eq!(&wire[..len], plain);
}

const GCM_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const GCM_SALT: &str = "517569642070726f2071756f";
const GCM_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                       20646976 69736120 696e2070 61727465 73207472 6573";
const GCM_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

fn gcm_direct() -> SrtpContext {
    direct(Profile::AeadAes128Gcm, GCM_KEY, GCM_SALT)
}

// RFC 7714 §16.1.1 (encryption) and §16.1.2 (verification and decryption).
#[test]
fn rfc7714_16_aead_aes_128_gcm_rtp() {
    let want = hex(
        "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca
                    be633bd5 0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1
                    6a9152cf 765ee439 0cce",
    );
    let mut tx = gcm_direct();
    assert_eq!(protected(&hex(GCM_RTP), |b, l| tx.protect_rtp(b, l)), want);

    let mut rx = gcm_direct();
    let mut wire = want.clone();
    let len = rx.unprotect_rtp(&mut wire).expect("unprotect");
    assert_eq!(&wire[..len], hex(GCM_RTP));
}

// RFC 7714 §17.1.1 and §17.1.2: SRTCP with E=1, index 0x5d4.
#[test]
fn rfc7714_17_aead_aes_128_gcm_rtcp() {
    let want = hex(
        "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7
                    6c06f32d c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458
                    96cf4d2f c5abf872 45d9eade 800005d4",
    );
    let mut tx = gcm_direct();
    tx.set_srtcp_index(0x4d61_7273, 0x5d4);
    assert_eq!(
        protected(&hex(GCM_RTCP), |b, l| tx.protect_rtcp(b, l)),
        want
    );

    let mut rx = gcm_direct();
    let mut wire = want.clone();
    let len = rx.unprotect_rtcp(&mut wire).expect("unprotect");
    assert_eq!(&wire[..len], hex(GCM_RTCP));
}

// RFC 7714 §17.1.3 and §17.1.4: SRTCP authenticated only (E=0).
#[test]
fn rfc7714_17_aead_aes_128_gcm_rtcp_unencrypted() {
    let mut wire = hex(
        "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                        4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968
                        3dd78ec9 2ae58790 125f62b3 000005d4",
    );
    let len = gcm_direct().unprotect_rtcp(&mut wire).expect("unprotect");
    assert_eq!(&wire[..len], hex(GCM_RTCP));

    let mut forged = hex(
        "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                          4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeee 841dd968
                          3dd78ec9 2ae58790 125f62b3 000005d4",
    );
    let err = gcm_direct().unprotect_rtcp(&mut forged);
    assert_eq!(err, Err(SrtpError::AuthFailed));
}

#[test]
fn dtls_profile_ids() {
    assert_eq!(Profile::from_dtls_id(0x0007), Some(Profile::AeadAes128Gcm));
    assert_eq!(
        Profile::from_dtls_id(0x0001),
        Some(Profile::AesCm128HmacSha1_80)
    );
    assert_eq!(Profile::from_dtls_id(0x0002), None);
    assert_eq!(Profile::from_dtls_id(0x0008), Some(Profile::AeadAes256Gcm));
    for p in PROFILES {
        assert_eq!(Profile::from_dtls_id(p.dtls_id()), Some(p));
    }
}

// RFC 5764 §4.2: client key, server key, client salt, server salt.
#[test]
fn keying_material_splits_by_dtls_role() {
    for profile in PROFILES {
        let (k, s) = (profile.key_len(), profile.salt_len());
        let material: Vec<u8> = (0..SessionKeys::keying_material_len(profile) as u8).collect();
        let client_key = MasterKey::new(profile, &material[..k], &material[2 * k..2 * k + s]);
        let server_key = MasterKey::new(profile, &material[k..2 * k], &material[2 * k + s..]);
        let client = SessionKeys::from_keying_material(profile, &material, true).expect("split");
        let server = SessionKeys::from_keying_material(profile, &material, false).expect("split");
        assert_eq!(Ok(client.local.clone()), client_key);
        assert_eq!(Ok(client.remote.clone()), server_key);
        assert_eq!(client.local, server.remote);
        assert_eq!(client.remote, server.local);
        assert_eq!(
            SessionKeys::from_keying_material(profile, &material[1..], true),
            Err(SrtpError::KeyLength)
        );
    }
}

#[test]
fn master_key_debug_hides_key() {
    let shown = format!("{:?}", libsrtp_master());
    assert!(!shown.to_lowercase().contains("e1"), "{shown}");
}

/// A leg's two ends: what one protects with `local`, the other unprotects with `remote`.
fn pair(profile: Profile) -> (SrtpContext, SrtpContext) {
    let material: Vec<u8> = (0..SessionKeys::keying_material_len(profile))
        .map(|i| (i * 7 + 3) as u8)
        .collect();
    let client = SessionKeys::from_keying_material(profile, &material, true).expect("split");
    let server = SessionKeys::from_keying_material(profile, &material, false).expect("split");
    (
        SrtpContext::new(&client.local).expect("ctx"),
        SrtpContext::new(&server.remote).expect("ctx"),
    )
}

/// V=2, X=1, CC=2, PT 111, two CSRCs, a one-byte-header extension of 2 words, then payload.
fn rtp_with_csrcs_and_extension(ssrc: u32, seq: u16, payload: usize) -> Vec<u8> {
    let mut p = vec![0x92, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&0x1111_1111u32.to_be_bytes());
    p.extend_from_slice(&0x2222_2222u32.to_be_bytes());
    p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0xff, 0x22, 0xaa, 0xbb, 0, 0, 0]);
    p.extend((0..payload).map(|i| i as u8));
    p
}

const PROFILES: [Profile; 3] = [
    Profile::AeadAes128Gcm,
    Profile::AeadAes256Gcm,
    Profile::AesCm128HmacSha1_80,
];

#[test]
fn rtp_round_trip_keeps_csrcs_and_extension_in_clear() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        for payload in [0, 1, 160, 1200] {
            let plain = rtp_with_csrcs_and_extension(0xdead_beef, 7 + payload as u16, payload);
            let header = 12 + 8 + 12;
            let mut wire = protected(&plain, |b, l| tx.protect_rtp(b, l));
            assert_eq!(wire.len(), plain.len() + profile.rtp_overhead());
            assert_eq!(wire[..header], plain[..header], "{profile:?}");
            if payload > 1 {
                assert_ne!(wire[header..plain.len()], plain[header..], "{profile:?}");
            }
            let len = rx.unprotect_rtp(&mut wire).expect("unprotect");
            assert_eq!(&wire[..len], plain, "{profile:?} {payload}");
        }
    }
}

#[test]
fn replayed_rtp_is_rejected() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let wire = protected(&rtp_with_csrcs_and_extension(1, 10, 50), |b, l| {
            tx.protect_rtp(b, l)
        });
        assert!(rx.unprotect_rtp(&mut wire.clone()).is_ok());
        assert_eq!(
            rx.unprotect_rtp(&mut wire.clone()),
            Err(SrtpError::Replayed)
        );
    }
}

#[test]
fn roc_rolls_over_across_seq_wrap_with_reordering() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let seqs: Vec<u16> = (65530..=65535).chain(0..6).collect();
        let wires: Vec<Vec<u8>> = seqs
            .iter()
            .map(|&s| {
                protected(&rtp_with_csrcs_and_extension(9, s, 40), |b, l| {
                    tx.protect_rtp(b, l)
                })
            })
            .collect();
        // Deliver with 65535 and 0 swapped, so one packet crosses the wrap late.
        let mut order: Vec<usize> = (0..wires.len()).collect();
        order.swap(5, 6);
        for i in order {
            let mut wire = wires[i].clone();
            let len = rx.unprotect_rtp(&mut wire).expect("unprotect across wrap");
            assert_eq!(wire[..len], rtp_with_csrcs_and_extension(9, seqs[i], 40));
        }
        assert_eq!(tx.rtp_highest(9), Some(0x1_0005));
        assert_eq!(rx.rtp_highest(9), Some(0x1_0005));
    }
}

#[test]
fn tampered_rtp_fails_authentication_and_creates_no_state() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let wire = protected(&rtp_with_csrcs_and_extension(5, 100, 80), |b, l| {
            tx.protect_rtp(b, l)
        });
        // A header bit, a CSRC bit, an extension bit, a payload bit, a tag bit.
        for at in [1, 13, 27, 40, wire.len() - 1] {
            let mut forged = wire.clone();
            forged[at] ^= 0x01;
            assert_eq!(
                rx.unprotect_rtp(&mut forged),
                Err(SrtpError::AuthFailed),
                "{profile:?} byte {at}"
            );
        }
        assert_eq!(rx.rtp_highest(5), None);
        // The genuine packet still goes through afterwards.
        assert!(rx.unprotect_rtp(&mut wire.clone()).is_ok());
    }
}

#[test]
fn srtcp_round_trip_replay_and_tamper() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let plain = hex(GCM_RTCP);
        for _ in 0..3 {
            let wire = protected(&plain, |b, l| tx.protect_rtcp(b, l));
            assert_eq!(wire.len(), plain.len() + profile.rtcp_overhead());
            assert_eq!(wire[..8], plain[..8]);
            assert_ne!(wire[8..plain.len()], plain[8..]);

            let mut forged = wire.clone();
            forged[10] ^= 0x80;
            assert_eq!(rx.unprotect_rtcp(&mut forged), Err(SrtpError::AuthFailed));

            let mut copy = wire.clone();
            let len = rx.unprotect_rtcp(&mut copy).expect("unprotect");
            assert_eq!(copy[..len], plain);
            assert_eq!(
                rx.unprotect_rtcp(&mut wire.clone()),
                Err(SrtpError::Replayed)
            );
        }
    }
}

#[test]
fn sender_refuses_to_reuse_an_index_unless_allowed() {
    for profile in PROFILES {
        let (mut tx, _) = pair(profile);
        let plain = rtp_with_csrcs_and_extension(3, 500, 20);
        let first = protected(&plain, |b, l| tx.protect_rtp(b, l));
        let mut buf = plain.clone();
        buf.resize(plain.len() + 32, 0);
        assert_eq!(
            tx.protect_rtp(&mut buf, plain.len()),
            Err(SrtpError::Replayed)
        );
        tx.set_allow_repeat_tx(true);
        assert_eq!(protected(&plain, |b, l| tx.protect_rtp(b, l)), first);
    }
}

#[test]
fn malformed_and_short_packets_are_refused() {
    for profile in PROFILES {
        let (mut tx, mut rx) = pair(profile);
        let mut buf = [0u8; 64];
        assert_eq!(tx.protect_rtp(&mut buf, 11), Err(SrtpError::TooShort));
        assert_eq!(tx.protect_rtp(&mut buf, 20), Err(SrtpError::Malformed)); // version 0
        buf[0] = 0x90; // X=1 with an extension claiming 255 words
        buf[12..16].copy_from_slice(&[0xbe, 0xde, 0, 0xff]);
        assert_eq!(tx.protect_rtp(&mut buf, 40), Err(SrtpError::Malformed));
        buf[0] = 0x80;
        assert_eq!(tx.protect_rtp(&mut buf, 60), Err(SrtpError::BufferTooSmall));
        assert_eq!(tx.protect_rtp(&mut buf, 65), Err(SrtpError::BufferTooSmall));
        assert_eq!(rx.unprotect_rtp(&mut buf[..12]), Err(SrtpError::TooShort));
        assert_eq!(rx.unprotect_rtcp(&mut buf[..20]), Err(SrtpError::TooShort));
        assert_eq!(
            tx.protect_rtcp(&mut buf, 64 - profile.rtcp_overhead() + 1),
            Err(SrtpError::BufferTooSmall)
        );
    }
}

#[test]
fn ssrc_table_is_capped() {
    let (mut tx, _) = pair(Profile::AeadAes128Gcm);
    for ssrc in 0..MAX_STREAMS as u32 {
        protected(&rtp_with_csrcs_and_extension(ssrc, 1, 4), |b, l| {
            tx.protect_rtp(b, l)
        });
    }
    let mut buf = rtp_with_csrcs_and_extension(MAX_STREAMS as u32, 1, 4);
    let len = buf.len();
    buf.resize(len + 32, 0);
    assert_eq!(
        tx.protect_rtp(&mut buf, len),
        Err(SrtpError::TooManyStreams)
    );
}

#[test]
fn contexts_can_move_to_worker_threads() {
    fn send<T: Send>() {}
    send::<SrtpContext>();
    send::<SessionKeys>();
}
