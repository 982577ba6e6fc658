//! The sans-IO forwarding core alone: no sockets, no clock, one worker's table.
//!
//! `fanout/N`: one publisher leg connected to N listener legs (SSRC rewritten, as in a room);
//! one 172-byte RTP packet in, N datagrams queued in a `TxBatch`. Throughput is counted in
//! egress packets, so the per-element time is the forwarder's cost per datagram it emits.
//! `echo`: one leg connected to itself. `classify`: the RFC 7983 demultiplexer alone.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_dataplane::api::{Command, LegId, MediaKind, Remote, Rewrite, Ssrc};
use sluice_dataplane::batch::TxBatch;
use sluice_dataplane::forwarder::{Forwarder, Slot, SocketRef};
use sluice_dataplane::packet::{RtpHeader, classify};

/// 12-byte header + 160 bytes of G.711 (20 ms at 8 kHz).
const PACKET_LEN: usize = 172;
const FANOUTS: [usize; 3] = [1, 8, 64];

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

criterion_group!(benches, fanout, echo, classify_bench);
criterion_main!(benches);
