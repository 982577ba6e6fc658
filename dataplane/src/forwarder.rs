//! The sans-IO forwarding core of one worker: its legs, their routes, and per-packet decisions.
//!
//! A driver (mmsg or io_uring) feeds it datagrams with [`Forwarder::handle_datagram`] and sends
//! what it leaves in the caller-owned [`TxBatch`]. Nothing here touches a socket or a clock, and
//! nothing allocates per packet: legs and routes change only through commands between batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::api::{Command, DropReason, Event, LegId, LegStats, MediaKind, Remote, bump};
use crate::batch::TxBatch;
use crate::egress::{Egress, Verdict};
use crate::packet::{Class, RtpHeader, classify};

/// Index of a leg in the worker's table; the driver maps sockets to `(Slot, is_rtcp_socket)`.
pub type Slot = u32;

/// A socket owned by a driver: the leg's slot and whether it is the RTCP (port + 1) socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketRef {
    pub slot: Slot,
    pub rtcp: bool,
}

impl SocketRef {
    /// Dense token for driver tables: `slot * 2 + rtcp`.
    pub fn token(self) -> usize {
        self.slot as usize * 2 + usize::from(self.rtcp)
    }

    pub fn from_token(token: usize) -> Self {
        SocketRef {
            slot: (token / 2) as Slot,
            rtcp: token % 2 == 1,
        }
    }
}

#[derive(Debug)]
struct Leg {
    id: LegId,
    kind: MediaKind,
    remote: Remote,
    /// Where the peer's packets actually come from (symmetric RTP), once seen.
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    media_up: bool,
    mute_in: bool,
    mute_out: bool,
    /// Legs fed by this leg's peer.
    outputs: Vec<Slot>,
    /// This leg's feed and how it is rewritten.
    source: Option<Slot>,
    egress: Egress,
    stats: Arc<LegStats>,
}

impl Leg {
    fn rtp_dest(&self) -> Option<SocketAddr> {
        self.latched_rtp.or(self.remote.rtp)
    }

    /// RTCP goes to the RTP socket when muxed (RFC 5761), else to the RTCP socket.
    fn rtcp_dest(&self) -> Option<(bool, SocketAddr)> {
        if self.remote.rtcp_mux {
            self.rtp_dest().map(|a| (false, a))
        } else {
            self.latched_rtcp.or(self.remote.rtcp).map(|a| (true, a))
        }
    }
}

#[derive(Debug, Default)]
pub struct Forwarder {
    legs: Vec<Option<Leg>>,
    free: Vec<Slot>,
    by_id: HashMap<LegId, Slot>,
    events: Vec<Event>,
}

impl Forwarder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_leg(
        &mut self,
        id: LegId,
        kind: MediaKind,
        remote: Remote,
        stats: Arc<LegStats>,
    ) -> Slot {
        let leg = Leg {
            id,
            kind,
            remote,
            latched_rtp: None,
            latched_rtcp: None,
            media_up: false,
            mute_in: false,
            mute_out: false,
            outputs: Vec::new(),
            source: None,
            egress: Egress::new(&Default::default(), 0),
            stats,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.legs[slot as usize] = Some(leg);
                slot
            }
            None => {
                self.legs.push(Some(leg));
                (self.legs.len() - 1) as Slot
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    /// Removes a leg and every route into or out of it. Returns its slot for the driver.
    pub fn remove_leg(&mut self, id: LegId) -> Option<Slot> {
        let slot = self.by_id.remove(&id)?;
        self.disconnect(slot);
        let leg = self.legs[slot as usize].take()?;
        for out in leg.outputs {
            if let Some(dst) = self.leg_mut(out) {
                dst.source = None;
            }
        }
        self.free.push(slot);
        Some(slot)
    }

    pub fn slot(&self, id: LegId) -> Option<Slot> {
        self.by_id.get(&id).copied()
    }

    pub fn leg_count(&self) -> usize {
        self.by_id.len()
    }

    pub fn handle_command(&mut self, cmd: Command) -> Result<(), crate::api::Error> {
        use crate::api::Error::UnknownLeg;
        match cmd {
            Command::SetRemote { leg, remote } => {
                let slot = self.slot(leg).ok_or(UnknownLeg(leg))?;
                let l = self.leg_mut(slot).ok_or(UnknownLeg(leg))?;
                l.remote = remote;
            }
            Command::Connect { from, to, rewrite } => {
                let src = self.slot(from).ok_or(UnknownLeg(from))?;
                let dst = self.slot(to).ok_or(UnknownLeg(to))?;
                self.disconnect(dst);
                let clock_rate = match self.legs[dst as usize].as_ref().map(|l| l.kind) {
                    Some(MediaKind::Video) => 90_000,
                    _ => 48_000,
                };
                if let Some(d) = self.leg_mut(dst) {
                    d.source = Some(src);
                    d.egress.reconfigure(&rewrite, clock_rate);
                }
                if let Some(s) = self.leg_mut(src) {
                    s.outputs.push(dst);
                }
            }
            Command::Disconnect { to } => {
                let dst = self.slot(to).ok_or(UnknownLeg(to))?;
                self.disconnect(dst);
            }
            Command::SetMute {
                leg,
                mute_in,
                mute_out,
            } => {
                let slot = self.slot(leg).ok_or(UnknownLeg(leg))?;
                let l = self.leg_mut(slot).ok_or(UnknownLeg(leg))?;
                l.mute_in = mute_in;
                l.mute_out = mute_out;
            }
        }
        Ok(())
    }

    /// How many datagrams one packet on `slot` can turn into (drivers keep that much room).
    pub fn fanout(&self, slot: Slot) -> usize {
        leg_outputs_len(&self.legs, slot).max(1)
    }

    /// Books a drop the driver saw (truncation, a send the kernel refused).
    pub fn count_drop(&self, slot: Slot, reason: DropReason) {
        if let Some(leg) = self.legs.get(slot as usize).and_then(Option::as_ref) {
            leg.stats.count_drop(reason);
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    fn disconnect(&mut self, dst: Slot) {
        let Some(src) = self.leg_mut(dst).and_then(|d| d.source.take()) else {
            return;
        };
        if let Some(s) = self.leg_mut(src) {
            s.outputs.retain(|&o| o != dst);
        }
    }

    fn leg_mut(&mut self, slot: Slot) -> Option<&mut Leg> {
        self.legs.get_mut(slot as usize).and_then(Option::as_mut)
    }

    /// One received datagram: classify, latch, then forward into `tx` or count a drop.
    pub fn handle_datagram(
        &mut self,
        at: SocketRef,
        src: SocketAddr,
        data: &[u8],
        tx: &mut TxBatch,
    ) {
        let Some(leg) = self.legs.get_mut(at.slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let class = classify(data);
        let drop = match class {
            Class::Rtp if !at.rtcp => None,
            Class::Rtcp => None,
            Class::Stun => Some(DropReason::Stun),
            Class::Dtls => Some(DropReason::Dtls),
            Class::Unknown => Some(DropReason::Unclassified),
            Class::Rtp | Class::Malformed => Some(DropReason::Malformed),
        };
        if let Some(reason) = drop {
            leg.stats.count_drop(reason);
            return;
        }
        if class == Class::Rtcp {
            bump(&leg.stats.rtcp_rx_packets, 1);
            // Symmetric RTCP: latch where the peer's RTCP comes from.
            if !at.rtcp {
                // Muxed RTCP follows the RTP latch.
            } else if leg.latched_rtcp != Some(src) {
                leg.latched_rtcp = Some(src);
                self.events.push(Event::Latched {
                    leg: leg.id,
                    addr: src,
                    rtcp: true,
                });
            }
            self.forward_rtcp(at.slot, data, tx);
            return;
        }
        let Some(header) = RtpHeader::read(data) else {
            leg.stats.count_drop(DropReason::Malformed);
            return;
        };
        bump(&leg.stats.rx_packets, 1);
        bump(&leg.stats.rx_bytes, data.len() as u64);
        if leg.latched_rtp != Some(src) {
            // Symmetric RTP: answer where the peer really is (NAT), not where its SDP said.
            leg.latched_rtp = Some(src);
            self.events.push(Event::Latched {
                leg: leg.id,
                addr: src,
                rtcp: false,
            });
        }
        if !leg.media_up {
            leg.media_up = true;
            self.events.push(Event::MediaUp {
                leg: leg.id,
                kind: leg.kind,
            });
        }
        if leg.outputs.is_empty() {
            leg.stats.count_drop(DropReason::NoRoute);
            return;
        }
        let mute_in = leg.mute_in;
        // Drops are tallied locally and booked on the source leg after the loop.
        let mut drops = [0u64; DropReason::COUNT];
        // Index loop: `outputs` is not changed while forwarding, and each destination is a
        // different table entry than the one borrowed above (or the same, for echo).
        for i in 0..leg_outputs_len(&self.legs, at.slot) {
            let out = self.legs[at.slot as usize]
                .as_ref()
                .map_or(Slot::MAX, |l| l.outputs[i]);
            let Some(dst) = self.legs.get_mut(out as usize).and_then(Option::as_mut) else {
                continue;
            };
            if mute_in || dst.mute_out {
                dst.egress.skip(&header);
                drops[DropReason::Muted as usize] += 1;
                continue;
            }
            let Some(dest) = dst.rtp_dest() else {
                drops[DropReason::NoDestination as usize] += 1;
                continue;
            };
            let rewritten = match dst.egress.forward(&header) {
                Verdict::Send(h) => h,
                Verdict::UnknownPt => {
                    drops[DropReason::UnknownPt as usize] += 1;
                    continue;
                }
            };
            let via = SocketRef {
                slot: out,
                rtcp: false,
            };
            if tx.push(via, dest, data, |buf| rewritten.write(buf)) {
                bump(&dst.stats.tx_packets, 1);
                bump(&dst.stats.tx_bytes, data.len() as u64);
            } else {
                drops[DropReason::SendFailed as usize] += 1;
            }
        }
        if drops.iter().any(|&n| n != 0)
            && let Some(leg) = self.leg_mut(at.slot)
        {
            for (counter, n) in leg.stats.drops.iter().zip(drops) {
                bump(counter, n);
            }
        }
    }

    /// RTCP between the legs of a proxy or echo passes through; towards rewritten streams
    /// (listeners) it is terminated here until RTCP translation exists.
    fn forward_rtcp(&mut self, slot: Slot, data: &[u8], tx: &mut TxBatch) {
        for i in 0..leg_outputs_len(&self.legs, slot) {
            let out = self.legs[slot as usize]
                .as_ref()
                .map_or(Slot::MAX, |l| l.outputs[i]);
            let Some(dst) = self.legs.get_mut(out as usize).and_then(Option::as_mut) else {
                continue;
            };
            if dst.egress.rewrites_ssrc() {
                continue;
            }
            let Some((rtcp_socket, dest)) = dst.rtcp_dest() else {
                continue;
            };
            let via = SocketRef {
                slot: out,
                rtcp: rtcp_socket,
            };
            if tx.push(via, dest, data, |_| {}) {
                bump(&dst.stats.rtcp_tx_packets, 1);
            }
        }
    }
}

fn leg_outputs_len(legs: &[Option<Leg>], slot: Slot) -> usize {
    legs.get(slot as usize)
        .and_then(Option::as_ref)
        .map_or(0, |l| l.outputs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Pt, Rewrite, Ssrc};

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
                data,
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
        p.fwd
            .handle_command(Command::Connect {
                from: a,
                to: a,
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
            p.fwd
                .handle_command(Command::Connect {
                    from: publ,
                    to: l,
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
        p.fwd
            .handle_command(Command::Connect {
                from: a,
                to: b,
                rewrite: Rewrite::default(),
            })
            .unwrap();
        let mut seqs = vec![];
        for seq in 0..30u16 {
            let mute = (10..20).contains(&seq);
            p.fwd
                .handle_command(Command::SetMute {
                    leg: a,
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
        p.fwd
            .handle_command(Command::Connect {
                from: a,
                to: b,
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
        p.fwd
            .handle_command(Command::Connect {
                from: a,
                to: b,
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
            &rr,
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
        p.fwd
            .handle_command(Command::Connect {
                from: a,
                to: c,
                rewrite,
            })
            .unwrap();
        p.fwd.handle_command(Command::Disconnect { to: b }).unwrap();
        p.tx.clear();
        p.fwd.handle_datagram(
            SocketRef {
                slot: sa,
                rtcp: true,
            },
            addr(4001),
            &rr,
            &mut p.tx,
        );
        assert_eq!(p.tx.len(), 0);
    }
}
