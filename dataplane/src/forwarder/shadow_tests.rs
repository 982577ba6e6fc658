//! Rooms across workers without threads or sockets: two forwarders (workers 0 and 1) joined
//! by the rings and peer messages their drivers would carry, moved here by hand.

use super::*;
use crate::api::{Pt, Rewrite, Ssrc};
use crate::mirror::{Consumer, ring};
use crate::packet::RtpHeader;
use std::net::SocketAddr;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn video(seq: u16, ssrc: u32, keyframe: bool) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    RtpHeader {
        pt: 96,
        seq,
        ts: u32::from(seq) * 3000,
        ssrc,
    }
    .write(&mut p);
    // A VP8 payload descriptor (S=1, partition 0) and the first payload byte: bit 0 clear
    // is a keyframe.
    p.extend_from_slice(&[0x10, if keyframe { 0x00 } else { 0x01 }, 1, 2, 3]);
    p
}

type Sent = Vec<(Slot, SocketAddr, Vec<u8>)>;

/// A listener's generic NACK naming `seq` of its stream `media`.
fn nack_of(media: u32, seq: u16) -> Vec<u8> {
    let mut buf = [0u8; super::nack::NACK_MAX];
    let n = super::nack::nack(media, &[seq], &mut buf);
    buf[..n].to_vec()
}

/// Two workers' forwarders and what runs between them.
struct Workers {
    fwd: [Forwarder; 2],
    /// `inbound[w]`: the ring from the other worker into `w`.
    inbound: [Consumer; 2],
    tx: TxBatch,
    next: u64,
}

impl Workers {
    fn new(entries: usize) -> Self {
        let (p01, c01) = ring(entries);
        let (p10, c10) = ring(entries);
        let mut fwd = [Forwarder::new(), Forwarder::new()];
        fwd[0].set_peers(0, vec![None, Some(p01)]);
        fwd[1].set_peers(1, vec![Some(p10), None]);
        Workers {
            fwd,
            inbound: [c10, c01],
            tx: TxBatch::new(64),
            next: 1,
        }
    }

    fn leg(&mut self, w: usize, port: u16) -> (LegId, Slot) {
        let id = LegId::new(w, self.next);
        self.next += 1;
        let remote = Remote {
            rtp: Some(addr(port)),
            rtcp: Some(addr(port + 1)),
            rtcp_mux: false,
        };
        let slot = self.fwd[w].add_leg(id, MediaKind::Video, remote, Arc::default());
        (id, slot)
    }

    /// Carries peer messages both ways until none is left.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for w in 0..2 {
                while let Some((to, msg)) = self.fwd[w].poll_peer_msg() {
                    assert_eq!(to, 1 - w);
                    self.tx.clear();
                    self.fwd[to].handle_peer(msg, &mut self.tx);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// A command for worker `w`, then the peer messages it caused.
    fn command(&mut self, w: usize, cmd: Command) {
        self.tx.clear();
        self.fwd[w].handle_command(cmd, &mut self.tx).unwrap();
        self.settle();
    }

    /// Connects a listener as `Dataplane::send` does: a source on another worker counts
    /// the listener first, then the listener's worker connects it to its shadow.
    fn listen(&mut self, publisher: LegId, (to, w): (LegId, usize), ssrc: u32) {
        let rewrite = Rewrite {
            pt_map: vec![(Pt(96), Pt(100))],
            ssrc: Some(Ssrc(ssrc)),
        };
        let cmd = Command::Connect {
            from: publisher,
            to,
            kind: MediaKind::Video,
            rewrite,
        };
        let owner = publisher.worker();
        if owner == w {
            return self.command(w, cmd);
        }
        self.tx.clear();
        let add = PeerMsg::MirrorAdd {
            leg: publisher,
            k: 1,
            worker: w as u16,
        };
        self.fwd[owner].handle_peer(add, &mut self.tx);
        let slot = self.fwd[owner].slot(publisher);
        let stats = slot
            .and_then(|s| self.fwd[owner].legs[s as usize].as_ref())
            .map_or_else(Arc::default, |l| Arc::clone(&l.stats));
        self.tx.clear();
        self.fwd[w]
            .connect_remote(cmd, stats, &mut self.tx)
            .unwrap();
        self.settle();
    }

    /// A datagram on worker `w`'s leg `slot`: what that worker sends, then what the other
    /// sends of what was mirrored to it.
    fn recv(&mut self, w: usize, slot: Slot, data: &[u8]) -> (Sent, Sent) {
        self.tx.clear();
        self.fwd[w].handle_datagram(
            SocketRef { slot, rtcp: false },
            addr(40_000),
            &mut data.to_vec(),
            &mut self.tx,
        );
        let here = self.sent();
        self.settle();
        (here, self.drain(1 - w))
    }

    /// RTCP (plaintext) from the peer of worker `w`'s leg `slot`, on its RTCP socket: what
    /// that worker sends is left in `tx`.
    fn rtcp_in(&mut self, w: usize, slot: Slot, data: &[u8]) {
        self.tx.clear();
        let at = SocketRef { slot, rtcp: true };
        let mut data = data.to_vec();
        self.fwd[w].handle_datagram(at, addr(6001), &mut data, &mut self.tx);
    }

    /// Worker `w` forwards what its ring holds.
    fn drain(&mut self, w: usize) -> Sent {
        self.tx.clear();
        let ring = &mut self.inbound[w];
        while let Some(m) = ring.peek() {
            if let Some(slot) = self.fwd[w].shadow_slot(m.leg) {
                self.fwd[w].handle_mirrored(slot, m, &mut self.tx);
            }
            ring.advance();
        }
        self.sent()
    }

    fn sent(&self) -> Sent {
        self.tx
            .iter()
            .map(|(s, a, d)| (s.slot, a, d.to_vec()))
            .collect()
    }

    /// A listener on worker 1 that negotiated NACK, of `publisher` on worker 0 (port 6000).
    fn nack_listener(&mut self, publisher: LegId, ssrc: u32) -> Slot {
        let (l1, s1) = self.leg(1, 6000);
        let feedback = crate::api::Feedback {
            nack: true,
            ..Default::default()
        };
        self.command(
            1,
            Command::SetFeedback {
                leg: l1,
                kind: MediaKind::Video,
                feedback,
            },
        );
        self.listen(publisher, (l1, 1), ssrc);
        s1
    }

    fn stats(&self, w: usize, slot: Slot) -> crate::api::StatsSnapshot {
        self.fwd[w].legs[slot as usize]
            .as_ref()
            .unwrap()
            .stats
            .snapshot()
    }

    fn shadows(&self, w: usize) -> usize {
        (0..self.fwd[w].legs.len())
            .filter(|&s| self.fwd[w].is_shadow(s as Slot))
            .count()
    }
}

fn seq_ssrc(data: &[u8]) -> (u16, u32, u8) {
    let h = RtpHeader::read(data).unwrap();
    (h.seq, h.ssrc, h.pt)
}

#[test]
fn listeners_on_two_workers_get_every_packet_once_in_order() {
    let mut ws = Workers::new(64);
    let (publ, sp) = ws.leg(0, 4000);
    let (l0, s0) = ws.leg(0, 5000);
    let (l1, s1) = ws.leg(1, 6000);
    let (l2, s2) = ws.leg(1, 6100);
    ws.listen(publ, (l0, 0), 100);
    ws.listen(publ, (l1, 1), 101);
    ws.listen(publ, (l2, 1), 102);
    assert_eq!(ws.shadows(1), 1, "one shadow per publisher and worker");
    assert_eq!(ws.shadows(0), 0);
    for seq in 10..60u16 {
        let (here, there) = ws.recv(0, sp, &video(seq, 7, false));
        assert_eq!(here.len(), 1);
        assert_eq!((here[0].0, here[0].1), (s0, addr(5000)));
        assert_eq!(seq_ssrc(&here[0].2), (seq, 100, 100));
        assert_eq!(there.len(), 2, "each remote listener once");
        assert_eq!((there[0].0, there[0].1), (s1, addr(6000)));
        assert_eq!((there[1].0, there[1].1), (s2, addr(6100)));
        assert_eq!(seq_ssrc(&there[0].2), (seq, 101, 100));
        assert_eq!(seq_ssrc(&there[1].2), (seq, 102, 100));
        assert_eq!(&there[0].2[12..], &video(seq, 7, false)[12..]);
    }
    assert_eq!(ws.stats(1, s1).tx_packets, 50);
    assert_eq!(ws.stats(0, sp).drops_total(), 0);
}

#[test]
fn a_publisher_with_only_remote_listeners_is_routed_not_dropped() {
    let mut ws = Workers::new(64);
    let (publ, sp) = ws.leg(0, 4000);
    let (l1, _) = ws.leg(1, 6000);
    ws.listen(publ, (l1, 1), 101);
    let (here, there) = ws.recv(0, sp, &video(1, 7, false));
    assert!(here.is_empty());
    assert_eq!(there.len(), 1);
    assert_eq!(ws.stats(0, sp).drop_count(DropReason::NoRoute), 0);
}

#[test]
fn a_switch_across_workers_keeps_sequence_numbers_continuous() {
    let mut ws = Workers::new(64);
    let (p0, sp0) = ws.leg(0, 4000);
    let (p1, sp1) = ws.leg(1, 4100);
    let (l1, _) = ws.leg(1, 6000);
    ws.listen(p0, (l1, 1), 101);
    let mut got = Vec::new();
    for seq in 100..110u16 {
        got.extend(ws.recv(0, sp0, &video(seq, 7, false)).1);
    }
    // To the local publisher: the shadow goes, the remote worker stops mirroring.
    ws.listen(p1, (l1, 1), 101);
    assert_eq!(ws.shadows(1), 0);
    assert!(
        ws.fwd[0].legs[sp0 as usize].as_ref().unwrap().streams[1]
            .mirrors
            .is_empty()
    );
    for seq in 5000..5010u16 {
        got.extend(ws.recv(1, sp1, &video(seq, 9, false)).0);
    }
    // And back to the remote one.
    ws.listen(p0, (l1, 1), 101);
    for seq in 110..120u16 {
        got.extend(ws.recv(0, sp0, &video(seq, 7, false)).1);
    }
    assert_eq!(got.len(), 30);
    let seqs: Vec<u16> = got.iter().map(|p| seq_ssrc(&p.2).0).collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "continuous: {seqs:?}");
    }
    assert!(got.iter().all(|p| seq_ssrc(&p.2).1 == 101));
}

#[test]
fn mutes_skip_without_a_gap_across_workers() {
    let mut ws = Workers::new(64);
    let (publ, sp) = ws.leg(0, 4000);
    let (l1, s1) = ws.leg(1, 6000);
    let (l2, s2) = ws.leg(1, 6100);
    ws.listen(publ, (l1, 1), 101);
    ws.listen(publ, (l2, 1), 102);
    let mute = |leg, mute_in, mute_out| Command::SetMute {
        leg,
        kind: None,
        mute_in,
        mute_out,
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let take = |there: Sent, a: &mut Vec<u16>, b: &mut Vec<u16>| {
        for (slot, _, data) in there {
            let seq = seq_ssrc(&data).0;
            match slot {
                s if s == s1 => a.push(seq),
                s if s == s2 => b.push(seq),
                other => panic!("sent through slot {other}"),
            }
        }
    };
    for seq in 0..5u16 {
        take(ws.recv(0, sp, &video(seq, 7, false)).1, &mut a, &mut b);
    }
    // The publisher muted (on its worker): nothing reaches either listener.
    ws.command(0, mute(publ, true, false));
    for seq in 5..10u16 {
        take(ws.recv(0, sp, &video(seq, 7, false)).1, &mut a, &mut b);
    }
    ws.command(0, mute(publ, false, false));
    // One listener muted (on its own worker).
    ws.command(1, mute(l2, false, true));
    for seq in 10..15u16 {
        take(ws.recv(0, sp, &video(seq, 7, false)).1, &mut a, &mut b);
    }
    assert_eq!(a, (0..10).collect::<Vec<u16>>(), "no gap for l1");
    assert_eq!(b, (0..5).collect::<Vec<u16>>());
    assert_eq!(
        ws.stats(0, sp).drop_count(DropReason::Muted),
        15,
        "muted packets are the publisher's drops, wherever they were skipped"
    );
}

#[test]
fn a_full_ring_is_a_counted_drop_on_the_publisher() {
    let mut ws = Workers::new(4);
    let (publ, sp) = ws.leg(0, 4000);
    let (l1, _) = ws.leg(1, 6000);
    ws.listen(publ, (l1, 1), 101);
    for seq in 0..10u16 {
        ws.tx.clear();
        ws.fwd[0].handle_datagram(
            SocketRef {
                slot: sp,
                rtcp: false,
            },
            addr(40_000),
            &mut video(seq, 7, false),
            &mut ws.tx,
        );
    }
    assert_eq!(ws.stats(0, sp).drop_count(DropReason::WorkerRing), 6);
    let seqs: Vec<u16> = ws.drain(1).iter().map(|p| seq_ssrc(&p.2).0).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
}

#[test]
fn a_closed_publisher_ends_its_shadows_and_late_requests_are_refused() {
    let mut ws = Workers::new(64);
    let (publ, sp) = ws.leg(0, 4000);
    let (l1, s1) = ws.leg(1, 6000);
    ws.listen(publ, (l1, 1), 101);
    ws.recv(0, sp, &video(1, 7, false));
    ws.fwd[0].remove_leg(publ).unwrap();
    ws.settle();
    assert_eq!(ws.shadows(1), 0);
    assert_eq!(
        ws.fwd[1].legs[s1 as usize].as_ref().unwrap().streams[1].source,
        None
    );
    // A listener connected to it after it closed: the shadow made for it goes again.
    let (l2, _) = ws.leg(1, 6100);
    ws.listen(publ, (l2, 1), 102);
    assert_eq!(ws.shadows(1), 0);
}

#[test]
fn a_remote_listeners_keyframe_request_reaches_the_publisher_coalesced() {
    let mut ws = Workers::new(64);
    let (publ, sp) = ws.leg(0, 4000);
    let (l1, s1) = ws.leg(1, 6000);
    let (l2, s2) = ws.leg(1, 6100);
    ws.listen(publ, (l1, 1), 101);
    ws.listen(publ, (l2, 1), 102);
    let now = Instant::now();
    ws.fwd[0].set_now(now);
    ws.fwd[1].set_now(now);
    ws.recv(0, sp, &video(1, 7, true));
    let pli = |media: u32| {
        let mut p = vec![0x81, 206, 0, 2, 0, 0, 0, 1];
        p.extend_from_slice(&media.to_be_bytes());
        p
    };
    let mut plis_at_publisher = 0;
    for (slot, ssrc) in [(s1, 101), (s2, 102), (s1, 101)] {
        ws.rtcp_in(1, slot, &pli(ssrc));
        assert!(ws.tx.is_empty(), "nothing leaves the listeners' worker");
        while let Some((to, msg)) = ws.fwd[1].poll_peer_msg() {
            assert_eq!(to, 0);
            ws.tx.clear();
            ws.fwd[0].handle_peer(msg, &mut ws.tx);
            for (via, dest, data) in ws.tx.iter() {
                assert_eq!((via.slot, dest), (sp, addr(4001)));
                assert_eq!(data[1], 206, "a PLI");
                assert_eq!(
                    &data[8..12],
                    &7u32.to_be_bytes(),
                    "naming the publisher's SSRC"
                );
                plis_at_publisher += 1;
            }
        }
    }
    assert_eq!(
        plis_at_publisher, 1,
        "three requests within the interval make one PLI"
    );
}

#[test]
fn remote_listeners_nacks_are_served_from_their_workers_cache() {
    let mut ws = Workers::new(64);
    let (publ, sp) = ws.leg(0, 4000);
    let s1 = ws.nack_listener(publ, 101);
    let mut sent = Vec::new();
    for seq in 1..6u16 {
        sent.extend(ws.recv(0, sp, &video(seq, 7, false)).1);
    }
    assert_eq!(sent.len(), 5);
    ws.rtcp_in(1, s1, &nack_of(101, 3));
    let resent = ws.sent();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].2, sent[2].2, "the very packet sent before");
    assert_eq!(ws.stats(1, s1).retransmitted, 1);
}

#[test]
fn what_a_remote_listeners_worker_never_got_is_asked_of_the_publisher() {
    let mut ws = Workers::new(64);
    let (publ, sp) = ws.leg(0, 4000);
    let s1 = ws.nack_listener(publ, 101);
    let now = Instant::now();
    ws.fwd[0].set_now(now);
    ws.fwd[1].set_now(now);
    // Sequence number 3 never reaches the server.
    for seq in [1u16, 2, 4, 5] {
        ws.recv(0, sp, &video(seq, 7, false));
    }
    ws.rtcp_in(1, s1, &nack_of(101, 3));
    assert!(
        ws.tx.is_empty(),
        "nothing to resend, nothing to send from here"
    );
    let (to, msg) = ws.fwd[1]
        .poll_peer_msg()
        .expect("a request for the publisher");
    assert_eq!(to, 0);
    ws.tx.clear();
    ws.fwd[0].handle_peer(msg, &mut ws.tx);
    let sent = ws.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].0, sent[0].1), (sp, addr(4001)));
    let mut named = [(0u32, 0u16); 4];
    let n = super::nack::nacked(&sent[0].2, &mut named);
    assert_eq!(
        &named[..n],
        &[(7, 3)],
        "the publisher's own SSRC and number"
    );
    assert_eq!(ws.stats(1, s1).nack_forwarded, 1);
}
