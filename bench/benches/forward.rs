//! The sans-IO forwarding core alone: no sockets, no clock, one worker's table.
//!
//! `fanout/N`: one publisher leg connected to N listener legs (SSRC rewritten, as in a room);
//! one 172-byte RTP packet in, N datagrams queued in a `TxBatch`. Throughput is counted in
//! egress packets, so the per-element time is the forwarder's cost per datagram it emits.
//! `echo`: one leg connected to itself. `classify`: the RFC 7983 demultiplexer alone.
//! `parse` / `rewrite`: the RTP fixed header read, and one destination's `Egress` rewrite
//! (sequence and timestamp offsets, fixed SSRC, payload type map) written back, alone.
//! `lookup/N`: N legs in N/2 proxy pairs, one packet at a time to a leg picked in a fixed
//! pseudo-random order that visits every leg once per round, so the legs' state comes from
//! wherever it is in the cache hierarchy; the time per packet should not grow with N.
//! `fanout_srtp/N`: a secure publisher (SRTP unprotected once) fanned out to N secure
//! listeners (each protected with its own key); packets are SRTP-protected outside the
//! timed loop, so one element is one egress packet's share of unprotect + N protects.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use sluice_dataplane::api::{Command, LegId, MediaKind, Pt, Remote, Rewrite, Ssrc};
use sluice_dataplane::batch::TxBatch;
use sluice_dataplane::egress::{Egress, Verdict};
use sluice_dataplane::forwarder::{Forwarder, PREFETCH_DEPTH, Slot, SocketRef, Upcoming};
use sluice_dataplane::packet::{RtpHeader, classify};
use sluice_dataplane::srtp::{MasterKey, Profile, SessionKeys, SrtpContext};

/// 12-byte header + 160 bytes of G.711 (20 ms at 8 kHz).
const PACKET_LEN: usize = 172;
const FANOUTS: [usize; 4] = [1, 8, 64, 256];
const SRTP_FANOUTS: [usize; 4] = [1, 8, 64, 1000];
/// Legs in the table for `lookup/N`.
const TABLE_SIZES: [usize; 2] = [1_000, 100_000];
/// What DTLS stacks (dimpl, browsers) negotiate first, so what WebRTC legs run.
const SRTP_PROFILE: Profile = Profile::AeadAes256Gcm;
/// Packets SRTP-protected ahead of each timed run of `fanout_srtp`.
const SRTP_RING: usize = 1024;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn remote(port: u16) -> Remote {
    Remote {
        rtp: Some(addr(port)),
        rtcp: Some(addr(port + 1)),
        rtcp_mux: false,
    }
}

fn rtp_packet() -> Vec<u8> {
    let mut p = vec![0u8; PACKET_LEN];
    p[0] = 0x80;
    RtpHeader {
        pt: 0,
        seq: 1,
        ts: 160,
        ssrc: 0x1234_5678,
    }
    .write(&mut p);
    p
}

/// Advances seq and timestamp so the egress sees a live stream, not one replayed packet.
fn next_packet(p: &mut [u8], n: u16) {
    p[2..4].copy_from_slice(&n.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(n) * 160).to_be_bytes());
}

/// A forwarder with one publisher feeding `listeners` legs; returns it and the publisher's slot.
fn room(listeners: usize) -> (Forwarder, Slot) {
    let mut fwd = Forwarder::new();
    let mut scratch = TxBatch::new(1);
    let publisher = LegId(1);
    let slot = fwd.add_leg(publisher, MediaKind::Audio, remote(10_000), Arc::default());
    for i in 0..listeners {
        let id = LegId(100 + i as u64);
        fwd.add_leg(
            id,
            MediaKind::Audio,
            remote(20_000 + 2 * i as u16),
            Arc::default(),
        );
        let rewrite = Rewrite {
            ssrc: Some(Ssrc(0xAB00 + i as u32)),
            pt_map: vec![],
        };
        let connect = Command::Connect {
            from: publisher,
            to: id,
            kind: MediaKind::Audio,
            rewrite,
        };
        fwd.handle_command(connect, &mut scratch)
            .expect("both legs were just added");
    }
    (fwd, slot)
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    let src = addr(10_000);
    for n in FANOUTS {
        let (mut fwd, slot) = room(n);
        let mut tx = TxBatch::new(n);
        let mut pkt = rtp_packet();
        let at = SocketRef { slot, rtcp: false };
        let mut seq = 0u16;
        fwd.handle_datagram(at, src, &mut pkt, &mut tx);
        assert_eq!(tx.len(), n, "every listener gets the packet");
        tx.clear();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                next_packet(&mut pkt, seq);
                fwd.handle_datagram(at, src, black_box(&mut pkt), &mut tx);
                black_box(tx.len());
                tx.clear();
            })
        });
        while fwd.poll_event().is_some() {}
    }
    group.finish();
}

fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    let mut fwd = Forwarder::new();
    let leg = LegId(1);
    let slot = fwd.add_leg(leg, MediaKind::Audio, remote(10_000), Arc::default());
    let mut tx = TxBatch::new(1);
    let connect = Command::Connect {
        from: leg,
        to: leg,
        kind: MediaKind::Audio,
        rewrite: Rewrite::default(),
    };
    fwd.handle_command(connect, &mut tx)
        .expect("the leg was just added");
    tx.clear(); // whatever connecting queued (e.g. a keyframe request)
    let mut pkt = rtp_packet();
    let at = SocketRef { slot, rtcp: false };
    let src = addr(30_000);
    let mut seq = 0u16;
    fwd.handle_datagram(at, src, &mut pkt, &mut tx);
    assert_eq!(tx.len(), 1, "the packet comes back");
    tx.clear();
    group.throughput(Throughput::Elements(1));
    group.bench_function("rtp", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            next_packet(&mut pkt, seq);
            fwd.handle_datagram(at, src, black_box(&mut pkt), &mut tx);
            black_box(tx.len());
            tx.clear();
        })
    });
    group.finish();
}

fn classify_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    let rtp = rtp_packet();
    let rtcp = [0x80u8, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
    let stun = [0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    let dtls = [22u8, 254, 253, 0, 0, 0, 0, 0];
    let inputs: [(&str, &[u8]); 4] = [
        ("rtp", &rtp),
        ("rtcp", &rtcp),
        ("stun", &stun),
        ("dtls", &dtls),
    ];
    group.throughput(Throughput::Elements(1));
    for (name, data) in inputs {
        group.bench_with_input(BenchmarkId::from_parameter(name), data, |b, d| {
            b.iter(|| classify(black_box(d)))
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let pkt = rtp_packet();
    group.throughput(Throughput::Elements(1));
    group.bench_function("rtp", |b| b.iter(|| RtpHeader::read(black_box(&pkt))));
    group.finish();
}

fn rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("rewrite");
    group.throughput(Throughput::Elements(1));
    let rewrites = [
        (
            "ssrc",
            Rewrite {
                ssrc: Some(Ssrc(0xAB00)),
                pt_map: vec![],
            },
        ),
        (
            "ssrc+pt",
            Rewrite {
                ssrc: Some(Ssrc(0xAB00)),
                pt_map: vec![(Pt(0), Pt(8))],
            },
        ),
    ];
    for (name, rw) in rewrites {
        let mut egress = Egress::new(&rw, 8000);
        let mut pkt = rtp_packet();
        let mut header = RtpHeader::read(&pkt).expect("a valid header");
        group.bench_function(name, |b| {
            b.iter(|| {
                header.seq = header.seq.wrapping_add(1);
                header.ts = header.ts.wrapping_add(160);
                if let Verdict::Send(out) = egress.forward(black_box(&header)) {
                    out.write(black_box(&mut pkt));
                }
            })
        });
    }
    group.finish();
}

/// Fixed-seed xorshift64: the same "random" order on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Peer address of leg `i`: distinct for every leg, as real callers are.
fn peer(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::from(0x0a00_0000 + i as u32);
    SocketAddr::from((ip, 4000))
}

/// `legs` legs in pairs forwarding to each other (a proxy call each); the order in which
/// packets visit them: every slot once, shuffled (Fisher-Yates, fixed seed).
fn table(legs: usize) -> (Forwarder, Vec<Slot>) {
    let mut fwd = Forwarder::new();
    let mut scratch = TxBatch::new(1);
    let mut slots = Vec::with_capacity(legs);
    for i in 0..legs {
        let remote = Remote {
            rtp: Some(peer(i)),
            rtcp: None,
            rtcp_mux: false,
        };
        let id = LegId(i as u64 + 1);
        slots.push(fwd.add_leg(id, MediaKind::Audio, remote, Arc::default()));
        if i % 2 == 1 {
            for (from, to) in [(id.0 - 1, id.0), (id.0, id.0 - 1)] {
                let connect = Command::Connect {
                    from: LegId(from),
                    to: LegId(to),
                    kind: MediaKind::Audio,
                    rewrite: Rewrite::default(),
                };
                fwd.handle_command(connect, &mut scratch)
                    .expect("both legs were just added");
            }
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in (1..slots.len()).rev() {
        slots.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    (fwd, slots)
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group.throughput(Throughput::Elements(1));
    for legs in TABLE_SIZES {
        let (mut fwd, order) = table(legs);
        let mut tx = TxBatch::new(1);
        let mut pkt = rtp_packet();
        // Round r is sequence number r on every leg: each leg sees a continuous stream.
        let mut round = 1u16;
        let mut at = 0usize;
        let step = |fwd: &mut Forwarder, tx: &mut TxBatch| {
            let slot = order[at];
            next_packet(&mut pkt, round);
            let sock = SocketRef { slot, rtcp: false };
            fwd.handle_datagram(sock, peer(slot as usize), black_box(&mut pkt), tx);
            black_box(tx.len());
            tx.clear();
            at += 1;
            if at == order.len() {
                at = 0;
                round = round.wrapping_add(1);
            }
        };
        bench_warm(&mut group, legs, legs, &mut fwd, &mut tx, step);
    }
    group.finish();
}

/// Runs `step` `warm` times first (one full round: every leg latches its peer and reports
/// media up), drops the events, then measures it as benchmark `legs` of `group`.
fn bench_warm(
    group: &mut BenchmarkGroup<'_, WallTime>,
    legs: usize,
    warm: usize,
    fwd: &mut Forwarder,
    tx: &mut TxBatch,
    mut step: impl FnMut(&mut Forwarder, &mut TxBatch),
) {
    for _ in 0..warm {
        step(fwd, tx);
    }
    while fwd.poll_event().is_some() {}
    group.bench_function(BenchmarkId::from_parameter(legs), |b| {
        b.iter(|| step(fwd, tx))
    });
    while fwd.poll_event().is_some() {}
}

/// `lookup/N` as a driver runs it: rounds of `ROUND` datagrams, each round's legs noted
/// first and prefetched a few datagrams ahead of the one being handled
/// (`Forwarder::prefetch_ahead`); elements = packets.
fn lookup_prefetched(c: &mut Criterion) {
    const ROUND: usize = 32;
    let mut group = c.benchmark_group("lookup_prefetched");
    group.throughput(Throughput::Elements(ROUND as u64));
    for legs in TABLE_SIZES {
        let (mut fwd, order) = table(legs);
        let mut tx = TxBatch::new(ROUND);
        let mut pkt = rtp_packet();
        let mut ahead = Vec::with_capacity(ROUND);
        let mut round = 1u16;
        let mut at = 0usize;
        let step = |fwd: &mut Forwarder, tx: &mut TxBatch| {
            ahead.clear();
            for i in 0..ROUND {
                let slot = order[(at + i) % order.len()];
                ahead.push(Upcoming::new(SocketRef { slot, rtcp: false }, &pkt));
            }
            for i in -(PREFETCH_DEPTH as isize)..0 {
                fwd.prefetch_ahead(&ahead, i);
            }
            for (i, u) in ahead.iter().enumerate() {
                fwd.prefetch_ahead(&ahead, i as isize);
                next_packet(&mut pkt, round);
                let sock = u.socket().expect("a leg of the table");
                fwd.handle_datagram(sock, peer(sock.slot as usize), black_box(&mut pkt), tx);
                at += 1;
                if at == order.len() {
                    at = 0;
                    round = round.wrapping_add(1);
                }
            }
            black_box(tx.len());
            tx.clear();
        };
        let warm = legs.div_ceil(ROUND);
        bench_warm(&mut group, legs, warm, &mut fwd, &mut tx, step);
    }
    group.finish();
}

fn master_key(seed: u8) -> MasterKey {
    let key: Vec<u8> = (0..SRTP_PROFILE.key_len() as u8)
        .map(|b| b.wrapping_mul(7) ^ seed)
        .collect();
    let salt: Vec<u8> = (0..SRTP_PROFILE.salt_len() as u8)
        .map(|b| b ^ seed ^ 0xa5)
        .collect();
    MasterKey::new(SRTP_PROFILE, &key, &salt).expect("lengths come from the profile")
}

fn secure_leg(fwd: &mut Forwarder, id: LegId, port: u16, keys: SessionKeys) -> Slot {
    let slot = fwd.add_leg(id, MediaKind::Audio, remote(port), Arc::default());
    fwd.set_transport(slot, true, &[]);
    let cmd = Command::SetSrtp {
        leg: id,
        keys: Box::new(keys),
    };
    fwd.handle_command(cmd, &mut TxBatch::new(1))
        .expect("the leg was just added");
    slot
}

/// A secure publisher feeding `listeners` secure legs, each with its own keys; returns the
/// forwarder, the publisher's slot and the context the publisher's peer protects with.
fn secure_room(listeners: usize) -> (Forwarder, Slot, SrtpContext) {
    let mut fwd = Forwarder::new();
    let publisher = LegId(1);
    let peer_key = master_key(0);
    let keys = SessionKeys {
        local: master_key(1),
        remote: peer_key.clone(),
    };
    let slot = secure_leg(&mut fwd, publisher, 10_000, keys);
    let mut scratch = TxBatch::new(1);
    for i in 0..listeners {
        let id = LegId(100 + i as u64);
        let keys = SessionKeys {
            local: master_key(2 + (i % 250) as u8),
            remote: master_key(200),
        };
        secure_leg(&mut fwd, id, 20_000 + 2 * i as u16, keys);
        let connect = Command::Connect {
            from: publisher,
            to: id,
            kind: MediaKind::Audio,
            rewrite: Rewrite {
                ssrc: Some(Ssrc(0xAB00 + i as u32)),
                pt_map: vec![],
            },
        };
        fwd.handle_command(connect, &mut scratch)
            .expect("both legs were just added");
    }
    let sender = SrtpContext::new(&peer_key).expect("a valid key");
    (fwd, slot, sender)
}

fn fanout_srtp(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_srtp");
    let src = addr(10_000);
    let tag = SRTP_PROFILE.rtp_overhead();
    for n in SRTP_FANOUTS {
        let (mut fwd, slot, mut sender) = secure_room(n);
        let at = SocketRef { slot, rtcp: false };
        let mut tx = TxBatch::new(n);
        let mut ring: Vec<Vec<u8>> = vec![vec![0u8; PACKET_LEN + tag]; SRTP_RING];
        let mut seq = 0u16;
        // Protects the next `count` packets of the publisher's stream into the ring.
        let mut refill = |ring: &mut [Vec<u8>], count: usize| {
            for p in &mut ring[..count] {
                seq = seq.wrapping_add(1);
                let mut plain = rtp_packet();
                next_packet(&mut plain, seq);
                p[..PACKET_LEN].copy_from_slice(&plain);
                let len = sender
                    .protect_rtp(p, PACKET_LEN)
                    .expect("room for the tag, increasing sequence numbers");
                assert_eq!(len, p.len());
            }
        };
        refill(&mut ring, 1);
        fwd.handle_datagram(at, src, &mut ring[0], &mut tx);
        assert_eq!(tx.len(), n, "every listener gets the packet");
        tx.clear();
        while fwd.poll_event().is_some() {}
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(SRTP_RING as u64) as usize;
                    refill(&mut ring, chunk);
                    let start = Instant::now();
                    for p in &mut ring[..chunk] {
                        fwd.handle_datagram(at, src, black_box(p), &mut tx);
                        black_box(tx.len());
                        tx.clear();
                    }
                    timed += start.elapsed();
                    left -= chunk as u64;
                }
                timed
            })
        });
        // Still forwarding to everyone after the run (no replay or authentication drops).
        refill(&mut ring, 1);
        fwd.handle_datagram(at, src, &mut ring[0], &mut tx);
        assert_eq!(tx.len(), n, "every listener still gets the packet");
        tx.clear();
    }
    group.finish();
}

criterion_group!(
    benches,
    fanout,
    fanout_srtp,
    echo,
    classify_bench,
    parse,
    rewrite,
    lookup,
    lookup_prefetched
);
criterion_main!(benches);
