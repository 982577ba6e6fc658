//! Forwarding decisions without sockets: legs, routes, rewriting, drops.
use super::*;
use crate::api::{Feedback, Pt, Rewrite, Ssrc};
use crate::packet::RtpHeader;
use std::net::SocketAddr;

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
    p.extend_from_slice(b"payload");
    p
}

struct Pair {
    fwd: Forwarder,
    tx: TxBatch,
}

impl Pair {
    fn new() -> Self {
        Pair {
            fwd: Forwarder::new(),
            tx: TxBatch::new(64),
        }
    }

    fn leg(&mut self, n: u64, kind: MediaKind, remote_port: u16) -> (LegId, Slot) {
        let id = LegId::new(0, n);
        let remote = Remote {
            rtp: Some(addr(remote_port)),
            rtcp: Some(addr(remote_port + 1)),
            rtcp_mux: false,
        };
        (id, self.fwd.add_leg(id, kind, remote, Arc::default()))
    }

    fn handle(&mut self, cmd: Command) -> Result<(), crate::api::Error> {
        self.fwd.handle_command(cmd, &mut self.tx)
    }

    fn recv(
        &mut self,
        slot: Slot,
        from: u16,
        data: &[u8],
    ) -> Vec<(SocketRef, SocketAddr, Vec<u8>)> {
        self.tx.clear();
        self.fwd.handle_datagram(
            SocketRef { slot, rtcp: false },
            addr(from),
            &mut data.to_vec(),
            &mut self.tx,
        );
        self.tx.iter().map(|(s, a, d)| (s, a, d.to_vec())).collect()
    }

    fn stats(&self, slot: Slot) -> crate::api::StatsSnapshot {
        self.fwd.legs[slot as usize]
            .as_ref()
            .unwrap()
            .stats
            .snapshot()
    }
}

#[test]
fn echo_returns_payload_to_latched_source() {
    let mut p = Pair::new();
    let (a, sa) = p.leg(1, MediaKind::Audio, 4000);
    p.handle(Command::Connect {
        from: a,
        to: a,
        kind: MediaKind::Audio,
        rewrite: Rewrite::default(),
    })
    .unwrap();
    let pkt = rtp(0, 1, 9);
    let out = p.recv(sa, 5555, &pkt);
    assert_eq!(
        out,
        vec![(
            SocketRef {
                slot: sa,
                rtcp: false
            },
            addr(5555),
            pkt
        )]
    );
    assert!(p.fwd.poll_event().is_some());
}

#[test]
fn fanout_reaches_every_listener_with_own_ssrc() {
    let mut p = Pair::new();
    let (publ, sp) = p.leg(1, MediaKind::Video, 4000);
    let mut slots = vec![];
    for i in 0..3 {
        let (l, sl) = p.leg(10 + i, MediaKind::Video, 5000 + 10 * i as u16);
        let rewrite = Rewrite {
            pt_map: vec![(Pt(96), Pt(100))],
            ssrc: Some(Ssrc(1000 + i as u32)),
        };
        p.handle(Command::Connect {
            from: publ,
            to: l,
            kind: MediaKind::Video,
            rewrite,
        })
        .unwrap();
        slots.push(sl);
    }
    let out = p.recv(sp, 4000, &rtp(96, 7, 1));
    assert_eq!(out.len(), 3);
    for (i, (via, dest, data)) in out.iter().enumerate() {
        assert_eq!(via.slot, slots[i]);
        assert_eq!(*dest, addr(5000 + 10 * i as u16));
        let h = RtpHeader::read(data).unwrap();
        assert_eq!((h.pt, h.ssrc, h.seq), (100, 1000 + i as u32, 7));
        assert_eq!(&data[12..], b"payload");
    }
}

#[test]
fn prefetching_ahead_changes_nothing_whatever_the_batch_names() {
    let mut p = Pair::new();
    let (publ, sp) = p.leg(1, MediaKind::Video, 4000);
    let (gone, sg) = p.leg(2, MediaKind::Video, 4100);
    for i in 0..6u16 {
        let (l, _) = p.leg(10 + u64::from(i), MediaKind::Video, 5000 + 10 * i);
        p.handle(Command::Connect {
            from: publ,
            to: l,
            kind: MediaKind::Video,
            rewrite: Rewrite::default(),
        })
        .unwrap();
    }
    p.fwd.remove_leg(gone).unwrap();
    let at = |slot| SocketRef { slot, rtcp: false };
    let packet = rtp(96, 7, 1);
    let batch = [
        Upcoming::new(at(sp), &packet),
        Upcoming::NONE,
        Upcoming::new(at(sg), &packet),
        Upcoming::new(at(9_999), &packet),
        Upcoming::new(at(sp), &rtp(13, 1, 1)),
        Upcoming::new(at(sp), &[]),
        Upcoming::new(at(sp), &packet),
    ];
    let before = p.stats(sp);
    let len = batch.len() as isize;
    for next in -(PREFETCH_DEPTH as isize)..len + 2 {
        p.fwd.prefetch_ahead(&batch, next);
    }
    assert_eq!(p.stats(sp), before, "a prefetch counts nothing");
    assert!(p.fwd.poll_event().is_none(), "nor raises events");
    assert_eq!(p.recv(sp, 4000, &packet).len(), 6);
    // What the address arithmetic assumes: a table entry is the leg itself, tag in a niche.
    assert_eq!(size_of::<Option<Leg>>(), size_of::<Leg>());
}

#[test]
fn garbage_is_a_counted_drop() {
    let mut p = Pair::new();
    let (_, s) = p.leg(1, MediaKind::Audio, 4000);
    for junk in [
        &[][..],
        &[0xff; 40],
        &[0x80, 0],
        &[0, 1, 0, 0],
        &[23; 30],
        &[0x40; 20],
    ] {
        assert!(p.recv(s, 1, junk).is_empty());
    }
    let st = p.stats(s);
    assert_eq!(st.drops_total(), 6);
    assert_eq!(st.drop_count(DropReason::Unclassified), 2);
    assert_eq!(st.drop_count(DropReason::Malformed), 2);
    assert_eq!(st.rx_packets, 0);
}

#[test]
fn mute_in_drops_without_gap_and_counts() {
    let mut p = Pair::new();
    let (a, sa) = p.leg(1, MediaKind::Audio, 4000);
    let (b, _) = p.leg(2, MediaKind::Audio, 6000);
    p.handle(Command::Connect {
        from: a,
        to: b,
        kind: MediaKind::Audio,
        rewrite: Rewrite::default(),
    })
    .unwrap();
    let mut seqs = vec![];
    for seq in 0..30u16 {
        let mute = (10..20).contains(&seq);
        p.handle(Command::SetMute {
            leg: a,
            kind: None,
            mute_in: mute,
            mute_out: false,
        })
        .unwrap();
        for (_, _, d) in p.recv(sa, 4000, &rtp(0, seq, 5)) {
            seqs.push(RtpHeader::read(&d).unwrap().seq);
        }
    }
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
    assert_eq!(p.stats(sa).drop_count(DropReason::Muted), 10);
}

#[test]
fn removed_leg_leaves_no_dangling_route() {
    let mut p = Pair::new();
    let (a, sa) = p.leg(1, MediaKind::Audio, 4000);
    let (b, _) = p.leg(2, MediaKind::Audio, 6000);
    p.handle(Command::Connect {
        from: a,
        to: b,
        kind: MediaKind::Audio,
        rewrite: Rewrite::default(),
    })
    .unwrap();
    p.fwd.remove_leg(b).unwrap();
    assert!(p.recv(sa, 4000, &rtp(0, 1, 1)).is_empty());
    assert_eq!(p.stats(sa).drop_count(DropReason::NoRoute), 1);
    let (_, sc) = p.leg(3, MediaKind::Audio, 7000);
    assert_eq!(sc, 1, "slot is reused");
}

#[test]
fn rtcp_passes_between_proxy_legs_but_not_to_listeners() {
    let mut p = Pair::new();
    let (a, sa) = p.leg(1, MediaKind::Audio, 4000);
    let (b, sb) = p.leg(2, MediaKind::Audio, 6000);
    let (c, _) = p.leg(3, MediaKind::Audio, 8000);
    p.handle(Command::Connect {
        from: a,
        to: b,
        kind: MediaKind::Audio,
        rewrite: Rewrite::default(),
    })
    .unwrap();
    let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
    p.tx.clear();
    p.fwd.handle_datagram(
        SocketRef {
            slot: sa,
            rtcp: true,
        },
        addr(4001),
        &mut rr.clone(),
        &mut p.tx,
    );
    let out: Vec<_> = p.tx.iter().map(|(s, a, _)| (s, a)).collect();
    assert_eq!(
        out,
        vec![(
            SocketRef {
                slot: sb,
                rtcp: true
            },
            addr(6001)
        )]
    );
    let rewrite = Rewrite {
        pt_map: vec![],
        ssrc: Some(Ssrc(5)),
    };
    p.handle(Command::Connect {
        from: a,
        to: c,
        kind: MediaKind::Audio,
        rewrite,
    })
    .unwrap();
    p.handle(Command::Disconnect { to: b }).unwrap();
    p.tx.clear();
    p.fwd.handle_datagram(
        SocketRef {
            slot: sa,
            rtcp: true,
        },
        addr(4001),
        &mut rr.clone(),
        &mut p.tx,
    );
    assert_eq!(p.tx.len(), 0);
}

mod secure {
    use super::*;
    use crate::srtp::{Profile, SessionKeys, SrtpContext};

    fn keys() -> SessionKeys {
        let len = SessionKeys::keying_material_len(Profile::AeadAes128Gcm);
        let material: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7)).collect();
        SessionKeys::from_keying_material(Profile::AeadAes128Gcm, &material, false).unwrap()
    }

    /// A bundled WebRTC-style leg: opus 111 and VP8 96 on one transport, echoing both.
    fn bundled_echo(p: &mut Pair) -> (LegId, Slot) {
        let (id, slot) = p.leg(1, MediaKind::Audio, 4000);
        p.fwd.set_transport(
            slot,
            true,
            &[(Pt(111), MediaKind::Audio), (Pt(96), MediaKind::Video)],
        );
        for kind in [MediaKind::Audio, MediaKind::Video] {
            p.handle(Command::Connect {
                from: id,
                to: id,
                kind,
                rewrite: Rewrite::default(),
            })
            .unwrap();
        }
        (id, slot)
    }

    #[test]
    fn secure_leg_sends_stun_and_dtls_to_the_slow_path() {
        let mut p = Pair::new();
        let (id, slot) = bundled_echo(&mut p);
        let stun = [
            0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        assert!(p.recv(slot, 5000, &stun).is_empty());
        assert!(p.recv(slot, 5000, &[22, 254, 253, 0, 0]).is_empty());
        let mut seen = vec![];
        while let Some(ev) = p.fwd.poll_event() {
            if let Event::SlowPath { leg, from, data } = ev {
                assert_eq!((leg, from), (id, addr(5000)));
                seen.push(data);
            }
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(p.stats(slot).slow_path_packets, 2);
        // And the answer goes out through the leg's socket.
        p.tx.clear();
        p.handle(Command::Transmit {
            leg: id,
            to: addr(5000),
            data: b"response".to_vec(),
        })
        .unwrap();
        let out: Vec<_> =
            p.tx.iter()
                .map(|(s, a, d)| (s.slot, a, d.to_vec()))
                .collect();
        assert_eq!(out, vec![(slot, addr(5000), b"response".to_vec())]);
    }

    #[test]
    fn rtp_before_keys_is_not_forwarded() {
        let mut p = Pair::new();
        let (_, slot) = bundled_echo(&mut p);
        assert!(p.recv(slot, 5000, &rtp(111, 1, 7)).is_empty());
        assert_eq!(p.stats(slot).drop_count(DropReason::NotSecured), 1);
    }

    #[test]
    fn srtp_echo_decrypts_and_reencrypts_both_kinds() {
        let mut p = Pair::new();
        let (id, slot) = bundled_echo(&mut p);
        p.handle(Command::SetSrtp {
            leg: id,
            keys: Box::new(keys()),
        })
        .unwrap();
        // The peer sends with what the server calls `remote` and receives with `local`.
        let peer_keys = keys();
        let mut peer_tx = SrtpContext::new(&peer_keys.remote).unwrap();
        let mut peer_rx = SrtpContext::new(&peer_keys.local).unwrap();
        for (pt, seq) in [(111u8, 1u16), (96, 2), (111, 3)] {
            let plain = rtp(pt, seq, 0x1234);
            let mut buf = plain.clone();
            buf.resize(plain.len() + 64, 0);
            let len = peer_tx.protect_rtp(&mut buf, plain.len()).unwrap();
            let out = p.recv(slot, 5000, &buf[..len]);
            assert_eq!(out.len(), 1, "pt {pt} echoed");
            let mut back = out[0].2.clone();
            assert_ne!(back, plain, "sent encrypted");
            let n = peer_rx.unprotect_rtp(&mut back).unwrap();
            assert_eq!(&back[..n], &plain[..], "decrypts to what was sent");
        }
        // Tampering is a counted drop, an unknown payload type too.
        let mut bad = rtp(111, 9, 0x1234);
        bad.resize(bad.len() + 16, 0);
        assert!(p.recv(slot, 5000, &bad).is_empty());
        assert_eq!(p.stats(slot).drop_count(DropReason::SrtpAuth), 1);
        let plain = rtp(100, 10, 0x1234);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 64, 0);
        let len = peer_tx.protect_rtp(&mut buf, plain.len()).unwrap();
        assert!(p.recv(slot, 5000, &buf[..len]).is_empty());
        assert_eq!(p.stats(slot).drop_count(DropReason::UnknownPt), 1);
    }

    #[test]
    fn bundled_leg_feeds_plain_legs_by_kind() {
        let mut p = Pair::new();
        let (web, ws) = p.leg(1, MediaKind::Audio, 4000);
        p.fwd.set_transport(
            ws,
            false,
            &[(Pt(111), MediaKind::Audio), (Pt(96), MediaKind::Video)],
        );
        let (a, _) = p.leg(2, MediaKind::Audio, 6000);
        let (v, _) = p.leg(3, MediaKind::Video, 7000);
        p.handle(Command::Connect {
            from: web,
            to: a,
            kind: MediaKind::Audio,
            rewrite: Rewrite::default(),
        })
        .unwrap();
        p.handle(Command::Connect {
            from: web,
            to: v,
            kind: MediaKind::Video,
            rewrite: Rewrite::default(),
        })
        .unwrap();
        let to_audio = p.recv(ws, 5000, &rtp(111, 1, 1));
        let to_video = p.recv(ws, 5000, &rtp(96, 1, 2));
        assert_eq!(to_audio[0].1, addr(6000));
        assert_eq!(to_video[0].1, addr(7000));
    }
}

#[test]
fn keyframe_request_is_a_pli_for_the_last_ssrc() {
    let mut p = Pair::new();
    let (id, slot) = p.leg(1, MediaKind::Video, 4000);
    p.tx.clear();
    p.handle(Command::RequestKeyframe {
        leg: id,
        kind: MediaKind::Video,
    })
    .unwrap();
    assert!(p.tx.is_empty(), "nothing heard yet: nobody to ask");
    p.recv(slot, 4000, &rtp(96, 1, 0xfeed));
    p.tx.clear();
    p.handle(Command::RequestKeyframe {
        leg: id,
        kind: MediaKind::Video,
    })
    .unwrap();
    let out: Vec<_> = p.tx.iter().map(|(s, a, d)| (s, a, d.to_vec())).collect();
    assert_eq!(out.len(), 1);
    let (via, dest, pli) = &out[0];
    assert_eq!((*via, *dest), (SocketRef { slot, rtcp: true }, addr(4001)));
    assert_eq!(crate::packet::classify(pli), crate::packet::Class::Rtcp);
    assert_eq!(&pli[..4], &[0x81, 206, 0, 2]);
    assert_eq!(&pli[8..12], &0xfeedu32.to_be_bytes());
}

mod quality {
    use super::*;
    use crate::api::VideoCodec;
    use std::time::{Duration, Instant};

    fn big(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = rtp(96, seq, ssrc);
        p.resize(1000, 0xab);
        p
    }

    #[test]
    fn bitrate_cap_polices_a_burst_and_sends_remb() {
        let mut p = Pair::new();
        let (a, sa) = p.leg(1, MediaKind::Video, 4000);
        p.handle(Command::Connect {
            from: a,
            to: a,
            kind: MediaKind::Video,
            rewrite: Rewrite::default(),
        })
        .unwrap();
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        p.recv(sa, 4000, &big(0, 0x77));
        p.tx.clear();
        p.handle(Command::SetBitrate {
            leg: a,
            bps: 64_000,
        })
        .unwrap();
        let remb: Vec<_> = p.tx.iter().map(|(s, a, d)| (s, a, d.to_vec())).collect();
        assert_eq!(remb.len(), 1, "a REMB at once");
        let (via, dest, pkt) = &remb[0];
        assert_eq!(
            (*via, *dest),
            (
                SocketRef {
                    slot: sa,
                    rtcp: true
                },
                addr(4001)
            )
        );
        assert_eq!(&pkt[12..16], b"REMB");
        assert_eq!(&pkt[20..24], &0x77u32.to_be_bytes());
        // 100 kB in one instant: only the burst allowance (64 kbit = 8 packets) passes.
        let passed: usize = (1..=100)
            .map(|i| p.recv(sa, 4000, &big(i, 0x77)).len())
            .sum();
        assert_eq!(passed, 8);
        assert_eq!(p.stats(sa).drop_count(DropReason::Policed), 92);
        // A second later, another second's worth passes.
        p.fwd.set_now(t0 + Duration::from_secs(1));
        let passed: usize = (101..=200)
            .map(|i| p.recv(sa, 4000, &big(i, 0x77)).len())
            .sum();
        assert_eq!(passed, 8);
        // Lifted: everything passes.
        p.handle(Command::SetBitrate { leg: a, bps: 0 }).unwrap();
        let passed: usize = (201..=300)
            .map(|i| p.recv(sa, 4000, &big(i, 0x77)).len())
            .sum();
        assert_eq!(passed, 100);
    }

    #[test]
    fn switched_listener_waits_for_a_keyframe_without_seq_gap() {
        let mut p = Pair::new();
        let (p1, s1) = p.leg(1, MediaKind::Video, 4000);
        let (p2, s2) = p.leg(2, MediaKind::Video, 5000);
        let (l, _) = p.leg(3, MediaKind::Video, 6000);
        let rw = Rewrite {
            pt_map: vec![],
            ssrc: Some(Ssrc(42)),
        };
        p.handle(Command::Connect {
            from: p1,
            to: l,
            kind: MediaKind::Video,
            rewrite: rw.clone(),
        })
        .unwrap();
        let mut seqs = vec![];
        let vp8 = |seq: u16, ssrc: u32, key: bool| {
            let mut pkt = rtp(96, seq, ssrc);
            pkt.truncate(12);
            pkt.extend_from_slice(&[0x10, if key { 0x00 } else { 0x01 }, 0, 0]);
            pkt
        };
        for seq in 0..5 {
            for (_, _, d) in p.recv(s1, 4000, &vp8(seq, 1, false)) {
                seqs.push(RtpHeader::read(&d).unwrap().seq);
            }
        }
        p.handle(Command::Connect {
            from: p2,
            to: l,
            kind: MediaKind::Video,
            rewrite: rw,
        })
        .unwrap();
        p.handle(Command::HoldForKeyframe {
            to: l,
            codec: VideoCodec::Vp8,
        })
        .unwrap();
        let mut after = 0;
        for (i, key) in [false, false, false, true, false].into_iter().enumerate() {
            for (_, _, d) in p.recv(s2, 5000, &vp8(900 + i as u16, 2, key)) {
                seqs.push(RtpHeader::read(&d).unwrap().seq);
                after += 1;
            }
        }
        assert_eq!(after, 2, "held until the keyframe");
        assert_eq!(seqs, (0..7).collect::<Vec<_>>());
        assert_eq!(p.stats(s2).drop_count(DropReason::WaitingKeyframe), 3);
    }

    #[test]
    fn listener_plis_reach_the_publisher_coalesced() {
        let mut p = Pair::new();
        let (publ, sp) = p.leg(1, MediaKind::Video, 4000);
        let mut listeners = vec![];
        for i in 0..3u64 {
            let (l, sl) = p.leg(10 + i, MediaKind::Video, 6000 + 10 * i as u16);
            let rewrite = Rewrite {
                pt_map: vec![],
                ssrc: Some(Ssrc(100 + i as u32)),
            };
            p.handle(Command::Connect {
                from: publ,
                to: l,
                kind: MediaKind::Video,
                rewrite,
            })
            .unwrap();
            listeners.push(sl);
        }
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        p.recv(sp, 4000, &rtp(96, 1, 0xabc));
        let pli_from_listener = rtcp::pli(100);
        let mut plis = 0;
        for (n, &sl) in listeners.iter().enumerate() {
            p.fwd.set_now(t0 + Duration::from_millis(10 * n as u64));
            p.tx.clear();
            p.fwd.handle_datagram(
                SocketRef {
                    slot: sl,
                    rtcp: true,
                },
                addr(6001),
                &mut pli_from_listener.to_vec(),
                &mut p.tx,
            );
            for (via, dest, d) in p.tx.iter() {
                assert_eq!((via.slot, dest), (sp, addr(4001)));
                assert_eq!(
                    &d[8..12],
                    &0xabcu32.to_be_bytes(),
                    "names the publisher's SSRC"
                );
                plis += 1;
            }
        }
        assert_eq!(plis, 1, "three listeners, one request");
        p.fwd.set_now(t0 + Duration::from_millis(600));
        p.tx.clear();
        p.fwd.handle_datagram(
            SocketRef {
                slot: listeners[0],
                rtcp: true,
            },
            addr(6001),
            &mut pli_from_listener.to_vec(),
            &mut p.tx,
        );
        assert_eq!(p.tx.len(), 1, "a new request after the coalescing window");
    }
}

/// NACKs answered from the cache, asked upstream, and the reports of the data plane's tick.
mod feedback {
    use super::*;
    use crate::srtp::{Profile, SessionKeys, SrtpContext};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    type Sent = Vec<(SocketRef, SocketAddr, Vec<u8>)>;

    fn rtcp_in(p: &mut Pair, slot: Slot, from: u16, data: &[u8]) -> Sent {
        p.tx.clear();
        p.fwd.handle_datagram(
            SocketRef { slot, rtcp: true },
            addr(from),
            &mut data.to_vec(),
            &mut p.tx,
        );
        p.tx.iter().map(|(s, a, d)| (s, a, d.to_vec())).collect()
    }

    fn nack_for(media: u32, seqs: &[u16]) -> Vec<u8> {
        let mut buf = [0u8; nack::NACK_MAX];
        let n = nack::nack(media, seqs, &mut buf);
        buf[..n].to_vec()
    }

    fn video_rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = rtp(96, seq, ssrc);
        RtpHeader {
            pt: 96,
            seq,
            ts,
            ssrc,
        }
        .write(&mut p);
        p.extend_from_slice(&seq.to_be_bytes());
        p
    }

    fn listener_rewrite() -> Rewrite {
        Rewrite {
            pt_map: vec![],
            ssrc: Some(Ssrc(42)),
        }
    }

    /// Publisher p0 (seq 1000..1004), then publisher p1 (seq 10..20 without 16): the
    /// listener's numbers differ from p1's. Returns (p1 slot, listener id, listener slot,
    /// what the listener got from p1, keyed by p1's seq).
    fn switched_listener(p: &mut Pair, secure: bool) -> (Slot, LegId, Slot, Vec<(u16, Vec<u8>)>) {
        let (p0, s0) = p.leg(1, MediaKind::Video, 3000);
        let (p1, s1) = p.leg(2, MediaKind::Video, 4000);
        let (l, sl) = p.leg(3, MediaKind::Video, 6000);
        p.handle(Command::SetFeedback {
            leg: l,
            kind: MediaKind::Video,
            feedback: Feedback {
                nack: true,
                ..Feedback::default()
            },
        })
        .unwrap();
        if secure {
            p.fwd.set_transport(sl, true, &[]);
            p.handle(Command::SetSrtp {
                leg: l,
                keys: Box::new(keys()),
            })
            .unwrap();
        }
        for (from, slot, seqs) in [(p0, s0, 1000..1005u16), (p1, s1, 10..21)] {
            p.handle(Command::Connect {
                from,
                to: l,
                kind: MediaKind::Video,
                rewrite: listener_rewrite(),
            })
            .unwrap();
            let mut got = vec![];
            for seq in seqs.filter(|&s| s != 16) {
                let out = p.recv(
                    slot,
                    if slot == s0 { 3000 } else { 4000 },
                    &video_rtp(seq, u32::from(seq) * 3000, slot + 100),
                );
                assert_eq!(out.len(), 1);
                got.push((seq, out[0].2.clone()));
            }
            if slot == s1 {
                return (s1, l, sl, got);
            }
        }
        unreachable!()
    }

    fn keys() -> SessionKeys {
        let len = SessionKeys::keying_material_len(Profile::AeadAes128Gcm);
        let material: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(5)).collect();
        SessionKeys::from_keying_material(Profile::AeadAes128Gcm, &material, false).unwrap()
    }

    #[test]
    fn plain_listener_nack_gets_an_identical_retransmission() {
        let mut p = Pair::new();
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        let (_, _, sl, got) = switched_listener(&mut p, false);
        // p1's seq 12 reached the listener as its own number 1005 + 2.
        let (_, original) = &got[2];
        let out_seq = RtpHeader::read(original).unwrap().seq;
        assert_eq!(out_seq, 1007);
        let sent = rtcp_in(&mut p, sl, 6001, &nack_for(42, &[out_seq]));
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            sent[0].0,
            SocketRef {
                slot: sl,
                rtcp: false
            }
        );
        assert_eq!(sent[0].1, addr(6000));
        assert_eq!(&sent[0].2, original, "byte-identical retransmission");
        let st = p.stats(sl);
        assert_eq!(
            (st.nack_received, st.retransmitted, st.nack_forwarded),
            (1, 1, 0)
        );
        // A NACK for another SSRC, or for numbers from before the switch, is not served.
        assert!(rtcp_in(&mut p, sl, 6001, &nack_for(43, &[out_seq])).is_empty());
        assert!(rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1003])).is_empty());
        // Nor once the cached packet is older than the cache keeps packets.
        p.fwd.set_now(t0 + nack::MAX_AGE + Duration::from_millis(1));
        let late = rtcp_in(&mut p, sl, 6001, &nack_for(42, &[out_seq]));
        assert!(
            late.iter().all(|(via, _, _)| via.slot != sl),
            "not resent: {late:?}"
        );
    }

    #[test]
    fn srtp_listener_nack_gets_an_identical_retransmission() {
        let mut p = Pair::new();
        p.fwd.set_now(Instant::now());
        let (s1, _, sl, got) = switched_listener(&mut p, true);
        let peer = keys();
        let mut peer_tx = SrtpContext::new(&peer.remote).unwrap();
        let mut peer_rx = SrtpContext::new(&peer.local).unwrap();
        let (_, original) = &got[4];
        // The listener can read what it got...
        let mut copy = original.clone();
        let n = peer_rx.unprotect_rtp(&mut copy).unwrap();
        let out_seq = RtpHeader::read(&copy[..n]).unwrap().seq;
        // ...and asks for it again over SRTCP.
        let mut nack = nack_for(42, &[out_seq]);
        let len = nack.len();
        nack.resize(len + 64, 0);
        let len = peer_tx.protect_rtcp(&mut nack, len).unwrap();
        let sent = rtcp_in(&mut p, sl, 6000, &nack[..len]);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(&sent[0].2, original, "same index, same bytes");
        assert_eq!(p.stats(sl).retransmitted, 1);
        // Forwarding still refuses a repeated index with other contents: a publisher's
        // conflicting duplicate of seq 14 is not sent, and poisons the cache entry.
        let out = p.recv(s1, 4000, &{
            let mut d = video_rtp(14, 14 * 3000, s1 + 100);
            d.push(0xee);
            d
        });
        assert!(out.is_empty(), "replayed index refused");
        let again = rtcp_in(&mut p, sl, 6000, &{
            let mut nack = nack_for(42, &[out_seq]);
            let len = nack.len();
            nack.resize(len + 64, 0);
            let len = peer_tx.protect_rtcp(&mut nack, len).unwrap();
            nack.truncate(len);
            nack
        });
        assert!(again.iter().all(|(via, _, _)| via.slot != sl), "{again:?}");
    }

    #[test]
    fn uncached_numbers_are_asked_upstream_translated() {
        let mut p = Pair::new();
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        let (s1, _, sl, _) = switched_listener(&mut p, false);
        // p1 never sent 16: the listener's 1011 maps to it; 1007 (p1's 12) is cached.
        let sent = rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1007, 1011]));
        assert_eq!(sent.len(), 2, "{sent:?}");
        let upstream: Vec<_> = sent.iter().filter(|(via, _, _)| via.slot == s1).collect();
        assert_eq!(upstream.len(), 1);
        let (via, dest, pkt) = upstream[0];
        assert_eq!(
            (*via, *dest),
            (
                SocketRef {
                    slot: s1,
                    rtcp: true
                },
                addr(4001)
            )
        );
        let mut named = [(0, 0); 4];
        assert_eq!(nack::nacked(pkt, &mut named), 1);
        assert_eq!(named[0], (s1 + 100, 16), "the publisher's SSRC and number");
        let st = p.stats(sl);
        assert_eq!(
            (st.nack_received, st.retransmitted, st.nack_forwarded),
            (2, 1, 1)
        );
        // A second listener missing it within 100 ms does not ask again.
        let sent = rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1011]));
        assert!(sent.is_empty(), "coalesced: {sent:?}");
        p.fwd.set_now(t0 + Duration::from_millis(150));
        assert_eq!(rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1011])).len(), 1);
    }

    fn has_cache(p: &Pair, slot: Slot, k: usize) -> bool {
        p.fwd.legs[slot as usize].as_ref().unwrap().streams[k]
            .rtx
            .is_some()
    }

    #[test]
    fn only_streams_feeding_a_nack_capable_leg_keep_a_cache() {
        let mut p = Pair::new();
        // A plain echo and a plain proxy pair: nobody negotiated NACK, nothing is cached.
        let (e, se) = p.leg(1, MediaKind::Audio, 3000);
        let (a, sa) = p.leg(2, MediaKind::Video, 4000);
        let (b, sb) = p.leg(3, MediaKind::Video, 5000);
        for (from, to, kind) in [
            (e, e, MediaKind::Audio),
            (a, b, MediaKind::Video),
            (b, a, MediaKind::Video),
        ] {
            let rewrite = Rewrite::default();
            p.handle(Command::Connect {
                from,
                to,
                kind,
                rewrite,
            })
            .unwrap();
        }
        assert_eq!(p.recv(se, 3000, &rtp(0, 1, 7)).len(), 1);
        assert_eq!(p.recv(sa, 4000, &video_rtp(1, 0, 8)).len(), 1);
        assert!(!has_cache(&p, se, 0) && !has_cache(&p, sa, 1) && !has_cache(&p, sb, 1));
        // What a plain leg costs the data plane: the leg with its two streams and counters.
        let plain = std::mem::size_of::<Leg>() + std::mem::size_of::<LegStats>();
        assert!(plain < 2048, "a plain leg takes {plain} bytes");

        // b's peer negotiates NACK: a's video is cached from now on, until b leaves.
        let nack = Feedback {
            nack: true,
            ..Feedback::default()
        };
        p.handle(Command::SetFeedback {
            leg: b,
            kind: MediaKind::Video,
            feedback: nack,
        })
        .unwrap();
        assert!(has_cache(&p, sa, 1) && !has_cache(&p, sb, 1));
        p.handle(Command::Disconnect { to: b }).unwrap();
        assert!(
            !has_cache(&p, sa, 1),
            "freed with its last NACK-capable output"
        );
    }

    #[test]
    fn nack_from_a_leg_without_nack_is_counted_not_served() {
        let mut p = Pair::new();
        let (pb, sp) = p.leg(1, MediaKind::Video, 3000);
        let (l, sl) = p.leg(2, MediaKind::Video, 6000);
        p.handle(Command::Connect {
            from: pb,
            to: l,
            kind: MediaKind::Video,
            rewrite: listener_rewrite(),
        })
        .unwrap();
        let got = p.recv(sp, 3000, &video_rtp(5, 0, 9));
        let out_seq = RtpHeader::read(&got[0].2).unwrap().seq;
        assert!(rtcp_in(&mut p, sl, 6001, &nack_for(42, &[out_seq])).is_empty());
        let st = p.stats(sl);
        assert_eq!((st.nack_received, st.retransmitted), (1, 0));
    }

    #[test]
    fn rtx_listener_gets_retransmissions_as_rtx() {
        let mut p = Pair::new();
        p.fwd.set_now(Instant::now());
        let (_, l, sl, got) = switched_listener(&mut p, false);
        p.handle(Command::SetFeedback {
            leg: l,
            kind: MediaKind::Video,
            feedback: Feedback {
                nack: true,
                rtx_pts: vec![(Pt(96), Pt(97))],
                rtx_ssrc: Some(Ssrc(0x4242)),
                ..Feedback::default()
            },
        })
        .unwrap();
        let (_, original) = &got[2];
        let out_seq = RtpHeader::read(original).unwrap().seq;
        let mut rtx_seqs = vec![];
        for _ in 0..2 {
            let sent = rtcp_in(&mut p, sl, 6001, &nack_for(42, &[out_seq]));
            assert_eq!(sent.len(), 1, "{sent:?}");
            let rtx = &sent[0].2;
            let h = RtpHeader::read(rtx).unwrap();
            assert_eq!((h.pt, h.ssrc), (97, 0x4242), "RTX payload type and SSRC");
            assert_eq!(h.ts, RtpHeader::read(original).unwrap().ts);
            assert_eq!(
                &rtx[12..14],
                &out_seq.to_be_bytes(),
                "OSN: the listener's number"
            );
            assert_eq!(&rtx[14..], &original[12..], "original payload");
            rtx_seqs.push(h.seq);
        }
        assert_eq!(rtx_seqs[1], rtx_seqs[0].wrapping_add(1), "own RTX sequence");
        assert_eq!(p.stats(sl).retransmitted, 2);
    }

    #[test]
    fn publisher_rtx_is_unwrapped_forwarded_and_cached() {
        let mut p = Pair::new();
        p.fwd.set_now(Instant::now());
        let (s1, _, sl, _) = switched_listener(&mut p, false);
        let publisher = p.fwd.legs[s1 as usize].as_ref().unwrap().id;
        p.handle(Command::SetFeedback {
            leg: publisher,
            kind: MediaKind::Video,
            feedback: Feedback {
                nack: true,
                rtx_pts: vec![(Pt(96), Pt(97))],
                rtx_ssrc: None,
                ..Feedback::default()
            },
        })
        .unwrap();
        // p1 never sent its 16 (the listener's 1011): asked upstream...
        let sent = rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1011]));
        assert!(sent.iter().any(|(via, _, _)| via.slot == s1), "{sent:?}");
        // ...and it answers on its RTX stream: OSN 16, RTX PT, SSRC and numbering.
        let original = video_rtp(16, 16 * 3000, s1 + 100);
        let mut rtx = original.clone();
        rtx.resize(original.len() + 2, 0);
        let len = rtx::wrap(&mut rtx, original.len(), (97, 0x9999, 3)).unwrap();
        rtx.truncate(len);
        let out = p.recv(s1, 4000, &rtx);
        assert_eq!(out.len(), 1, "forwarded as the original packet");
        let h = RtpHeader::read(&out[0].2).unwrap();
        assert_eq!((h.pt, h.seq, h.ssrc), (96, 1011, 42));
        assert_eq!(&out[0].2[12..], &original[12..]);
        // The cache has it now: the next NACK for it is served locally.
        let again = rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1011]));
        assert_eq!(again.len(), 1, "{again:?}");
        assert_eq!(again[0].2, out[0].2);
        // Padding-only RTX (a bandwidth probe) carries nothing to forward.
        let mut probe = rtp(97, 4, 0x9999);
        probe.truncate(12);
        probe[0] |= 0x20;
        probe.extend_from_slice(&[0, 0, 0, 4]);
        assert!(p.recv(s1, 4000, &probe).is_empty());
        assert_eq!(p.stats(s1).drop_count(DropReason::RtxPadding), 1);
    }

    fn ntp_of(t: SystemTime) -> u64 {
        reports::ntp(t)
    }

    fn sr(ssrc: u32, ntp: u64, rtp: u32) -> Vec<u8> {
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&ntp.to_be_bytes());
        p.extend_from_slice(&rtp.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p
    }

    fn tick(p: &mut Pair, now: Instant, wall: SystemTime) -> Sent {
        p.fwd.set_now(now);
        p.tx.clear();
        p.fwd.rtcp_tick(wall, &mut p.tx);
        p.tx.iter().map(|(s, a, d)| (s, a, d.to_vec())).collect()
    }

    /// The (NTP, RTP) of the sender report sent to `dest`.
    fn sr_to(sent: &Sent, dest: SocketAddr) -> (u32, u64, u32) {
        let (_, _, d) = sent
            .iter()
            .find(|(_, a, d)| *a == dest && d[1] == 200)
            .unwrap_or_else(|| panic!("no SR to {dest}: {sent:?}"));
        let w = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        (w(4), (u64::from(w(8)) << 32) | u64::from(w(12)), w(16))
    }

    #[test]
    fn listener_sender_reports_stay_monotonic_across_a_switch() {
        let mut p = Pair::new();
        let (p1, s1) = p.leg(1, MediaKind::Video, 4000);
        let (p2, s2) = p.leg(2, MediaKind::Video, 5000);
        let (l, _) = p.leg(3, MediaKind::Video, 6000);
        let t0 = Instant::now();
        let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let wall = |ms: u64| wall0 + Duration::from_millis(ms);
        let connect = |p: &mut Pair, from| {
            p.handle(Command::Connect {
                from,
                to: l,
                kind: MediaKind::Video,
                rewrite: listener_rewrite(),
            })
            .unwrap()
        };
        connect(&mut p, p1);
        for i in 0..5u16 {
            p.fwd.set_now(at(33 * u64::from(i)));
            p.recv(s1, 4000, &video_rtp(i, 1000 + u32::from(i) * 3000, 1));
        }
        // p1's clock is 5 s ahead of the server's.
        p.fwd.set_now(at(100));
        rtcp_in(&mut p, s1, 4001, &sr(1, ntp_of(wall(5_100)), 10_000));
        let first = tick(&mut p, at(200), wall(200));
        let (ssrc, ntp1, rtp1) = sr_to(&first, addr(6001));
        assert_eq!(ssrc, 42, "the listener's SSRC");
        assert_eq!(ntp1, ntp_of(wall(200)), "server time");
        assert!(
            rtp1.abs_diff(19_000) <= 1,
            "p1's RTP clock at that time: {rtp1}"
        );
        // Switch to p2, whose NTP clock is 1000 s behind and RTP clock elsewhere.
        connect(&mut p, p2);
        for i in 0..3u16 {
            p.fwd.set_now(at(300 + 33 * u64::from(i)));
            p.recv(
                s2,
                5000,
                &video_rtp(100 + i, 500_000 + u32::from(i) * 3000, 2),
            );
        }
        p.fwd.set_now(at(400));
        rtcp_in(
            &mut p,
            s2,
            5001,
            &sr(2, ntp_of(wall(400)) - (1000 << 32), 509_000),
        );
        let second = tick(&mut p, at(1_200), wall(1_200));
        let (ssrc, ntp2, rtp2) = sr_to(&second, addr(6001));
        assert_eq!(ssrc, 42);
        assert!(ntp2 > ntp1);
        // The listener's p2 timestamps continue after p1's last (13000) + 1800.
        let expected = 14_800 + (581_000 - 500_000);
        assert!(rtp2.abs_diff(expected) <= 1, "{rtp2} vs {expected}");
        assert!((rtp2.wrapping_sub(rtp1) as i32) > 0, "RTP time goes on");
        // A report from p2 that would put the listener back in time is clamped.
        p.fwd.set_now(at(1_300));
        rtcp_in(
            &mut p,
            s2,
            5001,
            &sr(2, ntp_of(wall(1_300)) - (1000 << 32), 0),
        );
        let third = tick(&mut p, at(2_200), wall(2_200));
        let (_, ntp3, rtp3) = sr_to(&third, addr(6001));
        assert!(ntp3 > ntp2);
        assert!(
            rtp3.wrapping_sub(rtp2).abs_diff(90_000) <= 1,
            "{rtp3} after {rtp2}"
        );
    }

    #[test]
    fn publishers_get_receiver_reports_of_what_arrived() {
        let mut p = Pair::new();
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        let (s1, _, _, _) = switched_listener(&mut p, false);
        let sr_ntp = 0x1234_5678_9abc_def0u64;
        rtcp_in(&mut p, s1, 4001, &sr(s1 + 100, sr_ntp, 0));
        let sent = tick(
            &mut p,
            t0 + Duration::from_millis(500),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let (_, _, rr) = sent
            .iter()
            .find(|(via, a, d)| via.slot == s1 && *a == addr(4001) && d[1] == 201)
            .expect("an RR to p1");
        assert_eq!(rr.len(), 32);
        assert_eq!(&rr[4..8], &rtcp::SERVER_SSRC.to_be_bytes());
        let w = |i: usize| u32::from_be_bytes([rr[i], rr[i + 1], rr[i + 2], rr[i + 3]]);
        assert_eq!(w(8), s1 + 100, "about p1's stream");
        assert_eq!(rr[12], (256 / 11) as u8, "1 of 11 lost");
        assert_eq!(w(12) & 0xff_ffff, 1, "cumulative");
        assert_eq!(w(16), 20, "extended highest sequence number");
        assert_eq!(w(24), (sr_ntp >> 16) as u32, "LSR");
        assert_eq!(w(28), 65_536 / 2, "DLSR: half a second");
        // A fraction of 0 next time: nothing new was lost.
        let sent = tick(
            &mut p,
            t0 + Duration::from_millis(1500),
            UNIX_EPOCH + Duration::from_secs(1_700_000_001),
        );
        let (_, _, rr) = sent
            .iter()
            .find(|(via, _, d)| via.slot == s1 && d[1] == 201)
            .unwrap();
        assert_eq!(rr[12], 0);
    }

    /// A tick walks the legs in steps that fit the transmit batch, never all at once: each
    /// publisher gets its receiver report exactly once, however many legs there are.
    #[test]
    fn a_tick_over_many_legs_reports_on_each_once_in_steps() {
        let mut p = Pair::new();
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        let room = p.tx.remaining();
        let n = 3 * room + 5;
        for i in 0..n as u16 {
            let (_, slot) = p.leg(u64::from(i) + 1, MediaKind::Audio, 10_000 + 2 * i);
            p.recv(slot, 10_000 + 2 * i, &rtp(0, 1, 0x7700 + u32::from(i)));
        }
        let mut sent = tick(&mut p, t0, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let first = sent.len();
        assert!(first <= room && first < n, "one step: {first}");
        let mut steps = 1;
        loop {
            p.tx.clear();
            let more = p.fwd.poll_tick(&mut p.tx);
            sent.extend(p.tx.iter().map(|(s, a, d)| (s, a, d.to_vec())));
            steps += 1;
            if !more {
                break;
            }
            assert!(steps <= n, "the walk ends");
        }
        assert!(steps > 3);
        let mut reported: Vec<u32> = sent
            .iter()
            .filter(|(_, _, d)| d[1] == 201)
            .map(|(_, _, d)| u32::from_be_bytes([d[8], d[9], d[10], d[11]]))
            .collect();
        reported.sort_unstable();
        let expected: Vec<u32> = (0..n as u32).map(|i| 0x7700 + i).collect();
        assert_eq!(reported, expected, "every stream reported once");
        p.tx.clear();
        assert!(!p.fwd.poll_tick(&mut p.tx), "nothing left");
        assert!(p.tx.is_empty());
    }

    /// Media up/down as the tick watches it: up at the first packet, down once after
    /// `MEDIA_SILENT_TICKS` ticks without one, up again at the next; a stream that never
    /// sent and one that keeps sending report nothing more.
    #[test]
    fn silence_over_two_ticks_reports_media_down_once() {
        use crate::api::MEDIA_SILENT_TICKS;
        let mut p = Pair::new();
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        let (quiet, qs) = p.leg(1, MediaKind::Audio, 4000);
        let (busy, bs) = p.leg(2, MediaKind::Audio, 5000);
        // Never sends: never named below.
        p.leg(3, MediaKind::Audio, 6000);
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut seq = 1u16;
        let media = |p: &mut Pair| {
            let mut got = vec![];
            while let Some(e) = p.fwd.poll_event() {
                match e {
                    Event::MediaUp { leg, .. } => got.push((leg, "up")),
                    Event::MediaDown { leg, kind } => {
                        assert_eq!(kind, MediaKind::Audio);
                        got.push((leg, "down"))
                    }
                    _ => {}
                }
            }
            got.sort();
            got
        };
        p.recv(qs, 4000, &rtp(0, 1, 0x1111));
        p.recv(bs, 5000, &rtp(0, 1, 0x2222));
        assert_eq!(media(&mut p), vec![(quiet, "up"), (busy, "up")]);
        let mut downs = vec![];
        for i in 1..=u64::from(MEDIA_SILENT_TICKS) + 3 {
            seq += 1;
            p.recv(bs, 5000, &rtp(0, seq, 0x2222));
            let at = Duration::from_secs(i);
            tick(&mut p, t0 + at, wall + at);
            let got = media(&mut p);
            if !got.is_empty() {
                downs.push((i, got));
            }
        }
        // Tick 1 saw the first packet; ticks 2 and 3 saw none.
        let down_at = 1 + u64::from(MEDIA_SILENT_TICKS);
        assert_eq!(downs, vec![(down_at, vec![(quiet, "down")])]);
        p.recv(qs, 4000, &rtp(0, 2, 0x1111));
        assert_eq!(media(&mut p), vec![(quiet, "up")], "up again, once");
        p.recv(qs, 4000, &rtp(0, 3, 0x1111));
        assert_eq!(media(&mut p), vec![]);
    }

    #[test]
    fn many_nacks_report_a_slow_link() {
        let mut p = Pair::new();
        let t0 = Instant::now();
        p.fwd.set_now(t0);
        let (s1, l, sl, _) = switched_listener(&mut p, false);
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        tick(&mut p, t0, wall);
        while p.fwd.poll_event().is_some() {}
        for seq in 30..70u16 {
            p.recv(s1, 4000, &video_rtp(seq, u32::from(seq) * 3000, s1 + 100));
        }
        // 40 packets sent; 3 NACKed numbers is 7.5 %.
        rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1030, 1031, 1032]));
        tick(
            &mut p,
            t0 + Duration::from_secs(1),
            wall + Duration::from_secs(1),
        );
        let mut events = vec![];
        while let Some(e) = p.fwd.poll_event() {
            events.push(e);
        }
        assert!(
            events.contains(&Event::SlowLink {
                leg: l,
                nacks: 3,
                packets: 40
            }),
            "{events:?}"
        );
        // One NACKed number in the next 40 is below 5 %: nothing.
        for seq in 70..110u16 {
            p.recv(s1, 4000, &video_rtp(seq, u32::from(seq) * 3000, s1 + 100));
        }
        rtcp_in(&mut p, sl, 6001, &nack_for(42, &[1080]));
        tick(
            &mut p,
            t0 + Duration::from_secs(2),
            wall + Duration::from_secs(2),
        );
        while let Some(e) = p.fwd.poll_event() {
            assert!(!matches!(e, Event::SlowLink { .. }), "{e:?}");
        }
    }

    /// The data plane keeps its own time: with nothing from control after set-up, driven
    /// only by `poll_timeout` / `handle_timeout` as a driver would, a capped publisher gets
    /// a receiver report and a REMB every tick, and its silence is reported once.
    #[test]
    fn reports_remb_and_silence_need_no_command() {
        use crate::api::MEDIA_SILENT_TICKS;
        let mut p = Pair::new();
        let t0 = Instant::now();
        let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (id, slot) = p.leg(1, MediaKind::Audio, 4000);
        assert_eq!(p.fwd.poll_timeout(), None, "no time yet");
        p.handle(Command::SetBitrate {
            leg: id,
            bps: 64_000,
        })
        .unwrap();
        for i in 0..5u16 {
            p.fwd.set_now(t0 + Duration::from_millis(20 * u64::from(i)));
            p.recv(slot, 4000, &rtp(0, i, 0x7777));
        }
        while p.fwd.poll_event().is_some() {}
        let mut ticks = Vec::new();
        for _ in 0..4 {
            let due = p.fwd.poll_timeout().expect("a deadline once time is known");
            assert!(due > t0);
            p.tx.clear();
            p.fwd
                .handle_timeout(due, wall0 + due.duration_since(t0), &mut p.tx);
            let kinds: Vec<u8> = p.tx.iter().map(|(_, _, d)| d[1]).collect();
            let events: Vec<Event> = std::iter::from_fn(|| p.fwd.poll_event()).collect();
            ticks.push((due.duration_since(t0), kinds, events));
        }
        let down = Event::MediaDown {
            leg: id,
            kind: MediaKind::Audio,
        };
        for (i, (at, kinds, events)) in ticks.iter().enumerate() {
            assert_eq!(*at, Duration::from_secs(i as u64 + 1), "one tick a second");
            assert!(kinds.contains(&201), "tick {i}: an RR ({kinds:?})");
            assert!(kinds.contains(&206), "tick {i}: a REMB ({kinds:?})");
            let want = if i == usize::from(MEDIA_SILENT_TICKS) {
                vec![down.clone()]
            } else {
                vec![]
            };
            assert_eq!(*events, want, "tick {i}");
        }
        // A deadline not yet due does nothing.
        let due = p.fwd.poll_timeout().unwrap();
        p.tx.clear();
        p.fwd
            .handle_timeout(due - Duration::from_millis(1), wall0, &mut p.tx);
        assert!(p.tx.is_empty());
        assert_eq!(p.fwd.poll_timeout(), Some(due));
    }

    /// Events leave in the order they happened: a stream found silent by a tick and heard
    /// again in the same round reaches control as down, then up (newest-first would leave
    /// the API reporting media down while it flows).
    #[test]
    fn events_leave_in_the_order_they_happened() {
        use crate::api::MEDIA_SILENT_TICKS;
        let mut p = Pair::new();
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        p.fwd.set_now(t0);
        let (id, slot) = p.leg(1, MediaKind::Audio, 4000);
        p.recv(slot, 4000, &rtp(0, 1, 0x1111));
        while p.fwd.poll_event().is_some() {}
        // The first tick sees the packet; the next ones see silence.
        for i in 1..=u64::from(MEDIA_SILENT_TICKS) + 1 {
            let at = Duration::from_secs(i);
            tick(&mut p, t0 + at, wall + at);
        }
        // One round: the tick's verdict is still queued when the next packet arrives.
        p.recv(slot, 4000, &rtp(0, 2, 0x1111));
        let media: Vec<Event> = std::iter::from_fn(|| p.fwd.poll_event())
            .filter(|e| matches!(e, Event::MediaUp { .. } | Event::MediaDown { .. }))
            .collect();
        let kind = MediaKind::Audio;
        assert_eq!(
            media,
            vec![
                Event::MediaDown { leg: id, kind },
                Event::MediaUp { leg: id, kind }
            ]
        );
    }

    /// The jitter of a receiver report (RFC 3550 §A.8) is in the stream's own clock units:
    /// perfectly paced 20 ms packets report none whatever the codec's clock, as long as
    /// the negotiated rate is used (assuming 48 kHz for an 8 kHz codec reported 800).
    #[test]
    fn receiver_report_jitter_uses_the_negotiated_clock() {
        // (payload type, clock rate, timestamp step per 20 ms): PCMU, G.722 (an 8 kHz RTP
        // clock for 16 kHz audio, RFC 3551 §4.5.2), Opus, and Opus left at the default.
        for (pt, rate, step) in [
            (0u8, 8000, 160u32),
            (9, 8000, 160),
            (111, 48_000, 960),
            (111, 0, 960),
        ] {
            let mut p = Pair::new();
            let t0 = Instant::now();
            let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let (id, slot) = p.leg(1, MediaKind::Audio, 4000);
            p.handle(Command::SetFeedback {
                leg: id,
                kind: MediaKind::Audio,
                feedback: Feedback {
                    clock_rate: rate,
                    ..Feedback::default()
                },
            })
            .unwrap();
            for i in 0..50u16 {
                p.fwd.set_now(t0 + Duration::from_millis(20 * u64::from(i)));
                let mut pkt = rtp(pt, i, 0x5150);
                RtpHeader {
                    pt,
                    seq: i,
                    ts: 7 + u32::from(i) * step,
                    ssrc: 0x5150,
                }
                .write(&mut pkt);
                p.recv(slot, 4000, &pkt);
            }
            let sent = tick(&mut p, t0 + Duration::from_secs(1), wall);
            let (_, _, rr) = sent
                .iter()
                .find(|(_, _, d)| d[1] == 201)
                .expect("a receiver report to the sender");
            let jitter = u32::from_be_bytes([rr[20], rr[21], rr[22], rr[23]]);
            assert_eq!(jitter, 0, "pt {pt} at {rate} Hz");
        }
    }

    /// A sender report towards a listener of an 8 kHz stream extrapolates the source's RTP
    /// clock at 8 kHz: 100 ms after the source's report is 800 ticks on, not 4800.
    #[test]
    fn listener_sender_reports_count_the_codec_clock() {
        for (pt, rate) in [(0u8, 8000u32), (9, 8000)] {
            let mut p = Pair::new();
            let (src, ss) = p.leg(1, MediaKind::Audio, 4000);
            let (l, _) = p.leg(2, MediaKind::Audio, 6000);
            for leg in [src, l] {
                p.handle(Command::SetFeedback {
                    leg,
                    kind: MediaKind::Audio,
                    feedback: Feedback {
                        clock_rate: rate,
                        ..Feedback::default()
                    },
                })
                .unwrap();
            }
            p.handle(Command::Connect {
                from: src,
                to: l,
                kind: MediaKind::Audio,
                rewrite: listener_rewrite(),
            })
            .unwrap();
            let t0 = Instant::now();
            let wall0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            let wall = |ms: u64| wall0 + Duration::from_millis(ms);
            // `rtp` stamps seq × 160: packet 1 carries timestamp 160.
            p.fwd.set_now(at(0));
            let out = p.recv(ss, 4000, &rtp(pt, 1, 0x8000));
            let first_out = RtpHeader::read(&out[0].2).unwrap().ts;
            p.fwd.set_now(at(100));
            rtcp_in(&mut p, ss, 4001, &sr(0x8000, ntp_of(wall(100)), 960));
            let sent = tick(&mut p, at(200), wall(200));
            let (ssrc, ntp, ts) = sr_to(&sent, addr(6001));
            assert_eq!((ssrc, ntp), (42, ntp_of(wall(200))));
            // The source's clock 100 ms after its report, through the listener's offset.
            let expected = first_out.wrapping_sub(160).wrapping_add(960 + 800);
            assert!(ts.abs_diff(expected) <= 1, "pt {pt}: {ts} vs {expected}");
        }
    }

    /// Keys the leg cannot use are not silently dropped: control hears of it, and the leg
    /// stays unsecured.
    #[test]
    fn refused_srtp_keys_are_reported() {
        let mut p = Pair::new();
        let (id, slot) = p.leg(1, MediaKind::Audio, 4000);
        p.fwd.set_transport(slot, true, &[]);
        let of = |profile: Profile| {
            let len = SessionKeys::keying_material_len(profile);
            SessionKeys::from_keying_material(profile, &vec![7; len], true).unwrap()
        };
        let keys = SessionKeys {
            local: of(Profile::AeadAes128Gcm).local,
            remote: of(Profile::AesCm128HmacSha1_80).remote,
        };
        p.handle(Command::SetSrtp {
            leg: id,
            keys: Box::new(keys),
        })
        .unwrap();
        assert_eq!(
            p.fwd.poll_event(),
            Some(Event::SrtpRefused {
                leg: id,
                error: crate::srtp::SrtpError::ProfileMismatch
            })
        );
        assert!(p.recv(slot, 4000, &rtp(0, 1, 9)).is_empty());
        assert_eq!(p.stats(slot).drop_count(DropReason::NotSecured), 1);
        // Good keys later are taken without a word.
        p.handle(Command::SetSrtp {
            leg: id,
            keys: Box::new(of(Profile::AeadAes128Gcm)),
        })
        .unwrap();
        assert_eq!(p.fwd.poll_event(), None);
    }

    /// A STUN flood at one secure leg reaches control as at most a burst plus a rate of
    /// events; the rest are counted drops. The same leg's DTLS handshake and every other
    /// leg keep their own budgets.
    #[test]
    fn slow_path_is_bounded_per_leg_and_kind() {
        use super::police::SlowPathBudget as B;
        let mut p = Pair::new();
        let t0 = Instant::now();
        let (flooded, fs) = p.leg(1, MediaKind::Audio, 4000);
        let (other, os) = p.leg(2, MediaKind::Audio, 5000);
        p.fwd.set_transport(fs, true, &[]);
        p.fwd.set_transport(os, true, &[]);
        let stun = [
            0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let dtls = [22u8, 254, 253, 0, 0];
        let slow_events = |p: &mut Pair| {
            let mut per_leg = HashMap::new();
            while let Some(e) = p.fwd.poll_event() {
                if let Event::SlowPath { leg, .. } = e {
                    *per_leg.entry(leg).or_insert(0u64) += 1;
                }
            }
            per_leg
        };
        p.fwd.set_now(t0);
        for _ in 0..10_000 {
            p.recv(fs, 6000, &stun);
        }
        for _ in 0..10 {
            p.recv(fs, 6000, &dtls);
            p.recv(os, 7000, &stun);
        }
        let got = slow_events(&mut p);
        assert_eq!(got.get(&flooded), Some(&(B::STUN_BURST + 10)));
        assert_eq!(got.get(&other), Some(&10));
        assert_eq!(
            p.stats(fs).drop_count(DropReason::SlowPathLimit),
            10_000 - B::STUN_BURST
        );
        assert_eq!(p.stats(os).drop_count(DropReason::SlowPathLimit), 0);
        // A second later the flooded leg may hand over one second's rate again.
        p.fwd.set_now(t0 + Duration::from_secs(1));
        for _ in 0..1_000 {
            p.recv(fs, 6000, &stun);
        }
        assert_eq!(slow_events(&mut p).get(&flooded), Some(&B::STUN_RATE));
        // Once the handshake gave keys, DTLS is data-channel traffic, with its own budget.
        for _ in 0..B::DTLS_BURST + 10 {
            p.recv(os, 7000, &dtls);
        }
        assert_eq!(slow_events(&mut p).get(&other), Some(&B::DTLS_BURST));
        let len = SessionKeys::keying_material_len(Profile::AeadAes128Gcm);
        let material = vec![9; len];
        let keys = SessionKeys::from_keying_material(Profile::AeadAes128Gcm, &material, false);
        p.handle(Command::SetSrtp {
            leg: other,
            keys: Box::new(keys.unwrap()),
        })
        .unwrap();
        for _ in 0..B::DATA_BURST {
            p.recv(os, 7000, &dtls);
        }
        assert_eq!(slow_events(&mut p).get(&other), Some(&B::DATA_BURST));
        p.recv(os, 7000, &dtls);
        assert_eq!(
            slow_events(&mut p).get(&other),
            None,
            "the data budget is spent"
        );
    }
}

#[test]
fn payload_type_kinds_cover_every_type_and_follow_the_last_set() {
    let audio = PtKinds::all(MediaKind::Audio);
    let video = PtKinds::all(MediaKind::Video);
    for pt in [0, 63, 64, 127] {
        assert_eq!(audio.get(pt), Some(0));
        assert_eq!(video.get(pt), Some(1));
    }
    let mut bundle = PtKinds::none();
    assert_eq!(bundle.get(111), None);
    bundle.set(111, 0);
    bundle.set(96, 1);
    bundle.set(127, 1);
    assert_eq!(
        (
            bundle.get(111),
            bundle.get(96),
            bundle.get(127),
            bundle.get(97)
        ),
        (Some(0), Some(1), Some(1), None)
    );
    // RTX types taken over by the other stream move; the marker bit never counts.
    bundle.set(96, 0);
    assert_eq!(bundle.get(96), Some(0));
    assert_eq!(bundle.get(96 | 0x80), Some(0));
}
