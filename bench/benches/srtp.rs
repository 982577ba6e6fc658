//! SRTP per packet (RFC 3711, RFC 7714), in place, as the data plane does it, next to the raw
//! cipher cost from aws-lc-rs.
//!
//! `protect/<profile>/<payload>` and `unprotect/<profile>/<payload>`: one RTP packet of a
//! 12-byte header plus 160 (G.711 20 ms) or 1200 (a video packet) payload bytes through
//! `SrtpContext`. Each group is measured twice: `Throughput::Elements(1)` (time per packet)
//! and `Throughput::Bytes` (payload bytes; criterion prints GiB/s), under `…/elements/…` and
//! `…/bytes/…`. Protect advances the sequence number every iteration (the context refuses to
//! encrypt an index twice); unprotect walks a ring of packets pre-protected with increasing
//! sequence numbers through a fresh context per pass (the replay window refuses repeats), so
//! one iteration is one copy of the packet plus one unprotect.
//!
//! `raw/<aead>/<payload>`: `LessSafeKey::seal_in_place_separate_tag` over the same payload
//! with the 12-byte header as AAD: what the GCM profiles cannot go below. `raw/aes128-ctr+
//! hmac-sha1-80` does AES-128-CTR and HMAC-SHA1 over header and payload the same way.

use std::hint::black_box;

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_dataplane::srtp::{MasterKey, Profile, SrtpContext};

const HEADER: usize = 12;
const PAYLOADS: [usize; 2] = [160, 1200];
const PROFILES: [(Profile, &str); 3] = [
    (Profile::AeadAes128Gcm, "aes128gcm"),
    (Profile::AeadAes256Gcm, "aes256gcm"),
    (Profile::AesCm128HmacSha1_80, "aes128cm-sha1-80"),
];
/// Packets pre-protected for the unprotect benches: a ring walked over and over.
const RING: usize = 4096;
/// Largest tag any profile appends.
const MAX_TAG: usize = 16;
const SSRC: u32 = 0x1234_5678;

/// The two ways each group is reported.
#[derive(Clone, Copy)]
enum Unit {
    Elements,
    Bytes,
}

impl Unit {
    const ALL: [Unit; 2] = [Unit::Elements, Unit::Bytes];

    fn name(self) -> &'static str {
        match self {
            Unit::Elements => "elements",
            Unit::Bytes => "bytes",
        }
    }

    fn throughput(self, payload: usize) -> Throughput {
        match self {
            Unit::Elements => Throughput::Elements(1),
            Unit::Bytes => Throughput::Bytes(payload as u64),
        }
    }
}

fn master(profile: Profile) -> MasterKey {
    let key: Vec<u8> = (0..profile.key_len() as u8).collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8).map(|b| b ^ 0xa5).collect();
    MasterKey::new(profile, &key, &salt).expect("lengths come from the profile")
}

/// An RTP packet of `payload` bytes with room for the tag after it.
fn rtp_packet(payload: usize) -> Vec<u8> {
    let mut p = vec![0xd5u8; HEADER + payload + MAX_TAG];
    p[..HEADER].fill(0);
    p[0] = 0x80;
    p[1] = 111;
    p[8..12].copy_from_slice(&SSRC.to_be_bytes());
    p
}

fn set_seq(p: &mut [u8], seq: u16) {
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
}

fn protect(c: &mut Criterion) {
    for unit in Unit::ALL {
        let mut group = c.benchmark_group(format!("protect/{}", unit.name()));
        for (profile, name) in PROFILES {
            for payload in PAYLOADS {
                group.throughput(unit.throughput(payload));
                let mut ctx = SrtpContext::new(&master(profile)).expect("valid key");
                let mut pkt = rtp_packet(payload);
                let len = HEADER + payload;
                // The sequence number wraps; the rollover counter follows in-order packets.
                let mut seq = 0u16;
                group.bench_function(BenchmarkId::new(name, payload), |b| {
                    b.iter(|| {
                        seq = seq.wrapping_add(1);
                        set_seq(&mut pkt, seq);
                        let out = ctx.protect_rtp(black_box(&mut pkt), len);
                        black_box(out.expect("in-order packets always protect"))
                    })
                });
            }
        }
        group.finish();
    }
}

/// `RING` SRTP packets with sequence numbers 1..=RING, each exactly its wire length.
fn protected_ring(profile: Profile, payload: usize) -> Vec<Vec<u8>> {
    let mut ctx = SrtpContext::new(&master(profile)).expect("valid key");
    (1..=RING as u16)
        .map(|seq| {
            let mut p = rtp_packet(payload);
            set_seq(&mut p, seq);
            let n = ctx
                .protect_rtp(&mut p, HEADER + payload)
                .expect("in-order packets protect");
            p.truncate(n);
            p
        })
        .collect()
}

fn unprotect(c: &mut Criterion) {
    for unit in Unit::ALL {
        let mut group = c.benchmark_group(format!("unprotect/{}", unit.name()));
        for (profile, name) in PROFILES {
            let key = master(profile);
            for payload in PAYLOADS {
                group.throughput(unit.throughput(payload));
                let ring = protected_ring(profile, payload);
                let mut ctx = SrtpContext::new(&key).expect("valid key");
                let mut buf = vec![0u8; ring[0].len()];
                let mut i = 0;
                group.bench_function(BenchmarkId::new(name, payload), |b| {
                    b.iter(|| {
                        if i == RING {
                            // The whole ring was accepted; a fresh context accepts it again.
                            // One key derivation per RING packets: noise.
                            ctx = SrtpContext::new(&key).expect("valid key");
                            i = 0;
                        }
                        buf.copy_from_slice(&ring[i]);
                        i += 1;
                        let out = ctx.unprotect_rtp(black_box(&mut buf));
                        black_box(out.expect("every ring packet authenticates once"))
                    })
                });
            }
        }
        group.finish();
    }
}

/// The SRTP GCM nonce layout does not matter for cost: any unique 96-bit nonce will do.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn raw(c: &mut Criterion) {
    let aeads: [(&Algorithm, &str, usize); 2] = [
        (&AES_128_GCM, "aes128gcm", 16),
        (&AES_256_GCM, "aes256gcm", 32),
    ];
    for unit in Unit::ALL {
        let mut group = c.benchmark_group(format!("raw/{}", unit.name()));
        for (alg, name, key_len) in aeads {
            let key_bytes: Vec<u8> = (0..key_len as u8).collect();
            let key = LessSafeKey::new(UnboundKey::new(alg, &key_bytes).expect("key length"));
            for payload in PAYLOADS {
                group.throughput(unit.throughput(payload));
                let pkt = rtp_packet(payload);
                let header: [u8; HEADER] = pkt[..HEADER].try_into().expect("12 bytes");
                let mut body = pkt[HEADER..HEADER + payload].to_vec();
                let mut counter = 0u64;
                group.bench_function(BenchmarkId::new(name, payload), |b| {
                    b.iter(|| {
                        counter += 1;
                        let tag = key.seal_in_place_separate_tag(
                            nonce(counter),
                            Aad::from(&header),
                            black_box(&mut body),
                        );
                        black_box(tag.expect("sealing never fails here"))
                    })
                });
            }
        }
        // AES_CM_128_HMAC_SHA1_80 from its parts: AES-128-CTR over the payload, HMAC-SHA1
        // over header, payload and the 4-byte rollover counter, truncated to 80 bits.
        let cipher = EncryptingKey::ctr(UnboundCipherKey::new(&AES_128, &[7u8; 16]).expect("key"))
            .expect("CTR key");
        let auth = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[9u8; 20]);
        for payload in PAYLOADS {
            group.throughput(unit.throughput(payload));
            let mut pkt = rtp_packet(payload);
            let len = HEADER + payload;
            let mut counter = 0u128;
            group.bench_function(BenchmarkId::new("aes128-ctr+hmac-sha1-80", payload), |b| {
                b.iter(|| {
                    counter += 1;
                    let iv = EncryptionContext::Iv128(FixedLength::from(counter.to_be_bytes()));
                    cipher
                        .less_safe_encrypt(black_box(&mut pkt[HEADER..len]), iv)
                        .expect("CTR encrypts any length");
                    let mut mac = hmac::Context::with_key(&auth);
                    mac.update(&pkt[..len]);
                    mac.update(&[0, 0, 0, 0]);
                    let tag = mac.sign();
                    pkt[len..len + 10].copy_from_slice(&tag.as_ref()[..10]);
                    black_box(&pkt[len..len + 10]);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, protect, unprotect, raw);
criterion_main!(benches);
