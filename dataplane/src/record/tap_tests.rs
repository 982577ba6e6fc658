//! The forwarder's recording taps, without sockets or files: what lands in a leg's ring.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::spool::Spool;
use super::{RecordingStats, Tap};
use crate::api::{Command, LegId, MediaKind, Pt, Remote, Rewrite, Ssrc};
use crate::batch::TxBatch;
use crate::forwarder::{Forwarder, Slot, SocketRef};
use crate::packet::RtpHeader;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn rtp(pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    RtpHeader {
        pt,
        seq,
        ts: u32::from(seq) * 160,
        ssrc,
    }
    .write(&mut p);
    p.extend_from_slice(format!("payload-{seq}").as_bytes());
    p
}

struct Bench {
    fwd: Forwarder,
    tx: TxBatch,
}

impl Bench {
    fn new() -> Self {
        Bench {
            fwd: Forwarder::new(),
            tx: TxBatch::new(64),
        }
    }

    fn leg(&mut self, n: u64, kind: MediaKind, port: u16) -> (LegId, Slot) {
        let id = LegId::new(0, n);
        let remote = Remote {
            rtp: Some(addr(port)),
            rtcp: Some(addr(port + 1)),
            rtcp_mux: false,
        };
        (id, self.fwd.add_leg(id, kind, remote, Arc::default()))
    }

    fn cmd(&mut self, cmd: Command) {
        self.fwd
            .handle_command(cmd, &mut self.tx)
            .expect("command applies");
    }

    fn recv(&mut self, slot: Slot, from: u16, packet: &[u8]) -> usize {
        self.tx.clear();
        let at = SocketRef { slot, rtcp: false };
        self.fwd
            .handle_datagram(at, addr(from), &mut packet.to_vec(), &mut self.tx);
        self.tx.len()
    }
}

/// Everything queued in the ring: (arrival, bytes).
fn drain(spool: &Spool) -> Vec<(Option<Instant>, Vec<u8>)> {
    let mut out = Vec::new();
    spool.drain(|s| out.push((s.at, s.bytes().to_vec())));
    out
}

#[test]
fn received_tap_records_every_packet_of_the_codec_even_without_route() {
    let mut b = Bench::new();
    let (a, sa) = b.leg(1, MediaKind::Audio, 4000);
    let (spool, sink) = Spool::new(8, Tap::Received, Some(0), Arc::default());
    b.cmd(Command::Record {
        leg: a,
        kind: MediaKind::Audio,
        sink: Some(sink),
    });
    let t0 = Instant::now();
    b.fwd.set_now(t0);
    assert_eq!(
        b.recv(sa, 5000, &rtp(0, 1, 9)),
        0,
        "a publisher alone: no route"
    );
    b.fwd.set_now(t0 + Duration::from_millis(20));
    b.recv(sa, 5000, &rtp(0, 2, 9));
    // telephone-event is not the recorded codec.
    b.recv(sa, 5000, &rtp(101, 3, 9));
    b.cmd(Command::SetMute {
        leg: a,
        kind: None,
        mute_in: true,
        mute_out: false,
    });
    b.recv(sa, 5000, &rtp(0, 4, 9));
    let got = drain(&spool);
    assert_eq!(
        got,
        vec![
            (Some(t0), rtp(0, 1, 9)),
            (Some(t0 + Duration::from_millis(20)), rtp(0, 2, 9)),
        ]
    );
    assert!(!spool.is_closed());
    b.cmd(Command::Record {
        leg: a,
        kind: MediaKind::Audio,
        sink: None,
    });
    assert!(spool.is_closed(), "stop drops the sink");
}

#[test]
fn sent_tap_records_a_listener_stream_as_rewritten() {
    let mut b = Bench::new();
    let (publ, sp) = b.leg(1, MediaKind::Video, 4000);
    let (lis, _) = b.leg(2, MediaKind::Video, 6000);
    b.cmd(Command::Connect {
        from: publ,
        to: lis,
        kind: MediaKind::Video,
        rewrite: Rewrite {
            pt_map: vec![(Pt(96), Pt(100))],
            ssrc: Some(Ssrc(77)),
        },
    });
    let stats = Arc::new(RecordingStats::default());
    let (spool, sink) = Spool::new(8, Tap::Sent, Some(100), Arc::clone(&stats));
    b.cmd(Command::Record {
        leg: lis,
        kind: MediaKind::Video,
        sink: Some(sink),
    });
    b.fwd.set_now(Instant::now());
    for seq in 10..13 {
        assert_eq!(b.recv(sp, 4000, &rtp(96, seq, 1)), 1);
    }
    let got = drain(&spool);
    assert_eq!(got.len(), 3);
    for (i, (_, bytes)) in got.iter().enumerate() {
        let h = RtpHeader::read(bytes).expect("rtp");
        assert_eq!((h.pt, h.ssrc, h.seq), (100, 77, 10 + i as u16));
        assert_eq!(&bytes[12..], format!("payload-{}", 10 + i).as_bytes());
    }
    // Ring of 8: the 9th and 10th packets are counted drops, forwarding goes on.
    for seq in 13..23 {
        assert_eq!(b.recv(sp, 4000, &rtp(96, seq, 1)), 1);
    }
    assert_eq!(stats.snapshot().dropped, 2);
    // Closing the leg closes the recording.
    b.fwd.remove_leg(lis);
    assert!(spool.is_closed());
}
