//! The datagram path: classify, unprotect, latch, then forward, terminate or count.

use std::net::SocketAddr;

use super::leg::kind_of_index;
use super::police::SlowKind;
use super::{Forwarder, Slot, SocketRef, reports, rtcp, rtx};
use crate::api::bump;
use crate::api::{DropReason, Event};
use crate::batch::TxBatch;
use crate::egress::Verdict;
use crate::keyframe::{rtp_payload, starts_keyframe};
use crate::packet::{Class, RtpHeader, classify};
use crate::record::Tap;

/// Fanouts larger than this prefetch their listeners ahead (smaller ones stay in cache).
const FANOUT_PREFETCH_MIN: usize = 16;

impl Forwarder {
    /// One received datagram: classify, (unprotect), latch, then forward into `tx` or count a
    /// drop. `data` is the receive buffer: SRTP is decrypted in place.
    pub fn handle_datagram(
        &mut self,
        at: SocketRef,
        src: SocketAddr,
        data: &mut [u8],
        tx: &mut TxBatch,
    ) {
        let Some(leg) = self.legs.get_mut(at.slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let class = classify(data);
        let drop = match class {
            Class::Rtp if !at.rtcp => None,
            Class::Rtcp => None,
            Class::Stun | Class::Dtls if leg.secure => {
                // The slow path (ICE-lite, DTLS) lives in control; a copy is fine off the
                // forwarding path, within the leg's budget.
                let kind = match class {
                    Class::Stun => SlowKind::Stun,
                    // After the handshake (keys installed), DTLS carries application data:
                    // the data channels' SCTP.
                    _ if leg.srtp.is_some() => SlowKind::Data,
                    _ => SlowKind::Handshake,
                };
                let admitted = match (&mut leg.slow_path, self.now) {
                    (Some(budget), Some(now)) => budget.admit(now, kind),
                    _ => true,
                };
                if !admitted {
                    leg.stats.count_drop(DropReason::SlowPathLimit);
                    return;
                }
                bump(&leg.stats.slow_path_packets, 1);
                self.events.push_back(Event::SlowPath {
                    leg: leg.id,
                    from: src,
                    data: data.to_vec(),
                });
                return;
            }
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
            if leg.secure {
                // SRTCP is authenticated and terminated here: sender reports are noted,
                // NACKs answered, keyframe requests reach the stream's source.
                let len = match leg.srtp.as_mut().map(|s| s.rx.unprotect_rtcp(data)) {
                    Some(Ok(len)) => len,
                    None => return leg.stats.count_drop(DropReason::NotSecured),
                    Some(Err(_)) => return leg.stats.count_drop(DropReason::SrtpAuth),
                };
                self.terminated_rtcp(at.slot, &data[..len], tx);
                return;
            }
            if at.rtcp && leg.latched_rtcp != Some(src) {
                leg.latched_rtcp = Some(src);
                self.events.push_back(Event::Latched {
                    leg: leg.id,
                    addr: src,
                    rtcp: true,
                });
            }
            // A listener's feedback cannot pass through (its SSRCs are rewritten): it is
            // answered or translated here.
            if leg.streams.iter().any(|s| s.egress.rewrites_ssrc()) {
                self.terminated_rtcp(at.slot, data, tx);
                return;
            }
            self.note_sender_reports(at.slot, data);
            self.forward_rtcp(at.slot, data, tx);
            return;
        }
        let mut len = if leg.secure {
            match leg.srtp.as_mut().map(|s| s.rx.unprotect_rtp(data)) {
                Some(Ok(len)) => len,
                Some(Err(_)) => {
                    leg.stats.count_drop(DropReason::SrtpAuth);
                    return;
                }
                None => {
                    leg.stats.count_drop(DropReason::NotSecured);
                    return;
                }
            }
        } else {
            data.len()
        };
        let Some(mut header) = RtpHeader::read(&data[..len]) else {
            leg.stats.count_drop(DropReason::Malformed);
            return;
        };
        let Some(k) = leg.pt_kinds.get(header.pt) else {
            leg.stats.count_drop(DropReason::UnknownPt);
            return;
        };
        // RFC 4588: a retransmission the peer sent on its RTX stream becomes the original
        // packet again (its media SSRC is the one last heard on the stream).
        if let Some(repair) = &leg.streams[k].repair
            && let Some(pt) = repair.repaired_pt(header.pt)
        {
            let unwrapped = leg.streams[k]
                .last_in_ssrc
                .and_then(|ssrc| rtx::unwrap(data, len, pt, ssrc));
            let Some(n) = unwrapped else {
                leg.stats.count_drop(DropReason::RtxPadding);
                return;
            };
            len = n;
            header = match RtpHeader::read(&data[..len]) {
                Some(h) => h,
                None => return leg.stats.count_drop(DropReason::Malformed),
            };
        }
        let data = &data[..len];
        if let (Some(bucket), Some(now)) = (&mut leg.police, self.now)
            && !bucket.admit(now, 8 * data.len() as u64)
        {
            leg.stats.count_drop(DropReason::Policed);
            return;
        }
        bump(&leg.stats.rx_packets, 1);
        bump(&leg.stats.rx_bytes, data.len() as u64);
        bump(&leg.stats.rx_kind_packets[k], 1);
        if leg.latched_rtp != Some(src) {
            // Symmetric RTP: answer where the peer really is (NAT), not where its SDP said.
            // On a secure leg only authenticated packets get here.
            leg.latched_rtp = Some(src);
            self.events.push_back(Event::Latched {
                leg: leg.id,
                addr: src,
                rtcp: false,
            });
        }
        let stream = &mut leg.streams[k];
        stream.last_in_ssrc = Some(header.ssrc);
        stream.heard = true;
        stream.rx.on_packet(
            &header,
            reports::arrival_units(self.now, self.epoch, stream.clock_rate),
        );
        if !stream.media_up {
            stream.media_up = true;
            self.events.push_back(Event::MediaUp {
                leg: leg.id,
                kind: kind_of_index(k),
            });
        }
        // Recording tap (what the peer sends, as Janus records it: not while muted).
        if let Some(sink) = &mut stream.record
            && sink.tap() == Tap::Received
            && !stream.mute_in
            && sink.accepts(header.pt)
        {
            sink.push(self.now, data);
        }
        if stream.outputs.is_empty() && stream.mirrors.is_empty() {
            leg.stats.count_drop(DropReason::NoRoute);
            return;
        }
        if let Some(cache) = &mut stream.rtx {
            cache.insert(self.now, &header, data);
        }
        let mute_in = stream.mute_in;
        if !stream.mirrors.is_empty() {
            self.push_mirrors(at.slot, k, mute_in, data);
        }
        self.fan_out(at.slot, k, &header, data, mute_in, tx);
    }

    /// Stream `k`'s packet of `src` (a leg here, or a shadow of one elsewhere) to each of
    /// its outputs: held, muted, rewritten, (re)protected, recorded or counted.
    #[inline]
    pub(super) fn fan_out(
        &mut self,
        src: Slot,
        k: usize,
        header: &crate::packet::RtpHeader,
        data: &[u8],
        mute_in: bool,
        tx: &mut TxBatch,
    ) {
        let n_outputs = self
            .legs
            .get(src as usize)
            .and_then(Option::as_ref)
            .map_or(0, |l| l.streams[k].outputs.len());
        if n_outputs == 0 {
            return;
        }
        // Drops are tallied locally and booked on the source leg after the loop.
        let mut drops = [0u64; DropReason::COUNT];
        // Index loop: `outputs` does not change while forwarding, and each destination is a
        // different table entry than the source (or the same, for echo).
        let now = self.now;
        for i in 0..n_outputs {
            let out = match self.legs[src as usize].as_ref() {
                Some(l) => {
                    let outputs = &l.streams[k].outputs;
                    if n_outputs > FANOUT_PREFETCH_MIN {
                        self.prefetch_fanout(outputs, i, k);
                    }
                    outputs[i]
                }
                None => Slot::MAX,
            };
            let Some(dst) = self.legs.get_mut(out as usize).and_then(Option::as_mut) else {
                continue;
            };
            let dest = dst.rtp_dest();
            let keyless = dst.secure && dst.srtp.is_none();
            let dst_stream = &mut dst.streams[k];
            if mute_in || dst_stream.mute_out {
                dst_stream.egress.skip(header);
                drops[DropReason::Muted as usize] += 1;
                continue;
            }
            if let Some(codec) = dst_stream.hold {
                if rtp_payload(data).is_some_and(|p| starts_keyframe(codec, p)) {
                    dst_stream.hold = None;
                } else {
                    // Skipped like a muted packet: the receiver sees no sequence gap.
                    dst_stream.egress.skip(header);
                    drops[DropReason::WaitingKeyframe as usize] += 1;
                    continue;
                }
            }
            let Some(dest) = dest else {
                drops[DropReason::NoDestination as usize] += 1;
                continue;
            };
            if keyless {
                drops[DropReason::NotSecured as usize] += 1;
                continue;
            }
            let rewritten = match dst_stream.egress.forward(header) {
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
            let srtp = &mut dst.srtp;
            let sent = tx.push(via, dest, data, |buf, len| {
                rewritten.write(buf);
                match srtp {
                    Some(s) => s.tx.protect_rtp(buf, len).ok(),
                    None => Some(len),
                }
            });
            if sent {
                bump(&dst.stats.tx_packets, 1);
                bump(&dst.stats.tx_bytes, data.len() as u64);
                reports::count_sent(&mut dst_stream.tx_report, data.len());
                // Recording tap of a listener: the packet as sent, before SRTP.
                if let Some(sink) = &mut dst_stream.record
                    && sink.tap() == Tap::Sent
                    && sink.accepts(rewritten.pt)
                {
                    sink.push_with(now, data, |buf| rewritten.write(buf));
                }
            } else {
                drops[DropReason::SendFailed as usize] += 1;
            }
        }
        if drops.iter().any(|&n| n != 0)
            && let Some(leg) = self.legs.get(src as usize).and_then(Option::as_ref)
        {
            // A shadow books them on its publisher's leg, in this worker's own row.
            let counters = if leg.id.worker() == self.worker {
                &leg.stats.drops
            } else {
                leg.stats.drops_elsewhere(self.worker, self.peers.len())
            };
            for (counter, n) in counters.iter().zip(drops) {
                bump(counter, n);
            }
        }
    }

    /// RTCP from a peer whose RTCP stops here (secure legs, listeners): sender reports are
    /// noted, NACKs answered from the cache, keyframe requests passed on coalesced.
    fn terminated_rtcp(&mut self, slot: Slot, data: &[u8], tx: &mut TxBatch) {
        self.note_sender_reports(slot, data);
        self.handle_nacks(slot, data, tx);
        let source = self.leg_mut(slot).and_then(|l| l.streams[1].source);
        if let Some(source) = source
            && rtcp::requests_keyframe(data)
        {
            self.forward_keyframe_request(source, 1, tx);
        }
    }

    /// RTCP between plain legs of a proxy or echo passes through; towards rewritten streams
    /// (listeners) and secure legs it is terminated here (`reports` regenerates SR/RR).
    fn forward_rtcp(&mut self, slot: Slot, data: &[u8], tx: &mut TxBatch) {
        for k in 0..2 {
            let n = self.legs[slot as usize]
                .as_ref()
                .map_or(0, |l| l.streams[k].outputs.len());
            for i in 0..n {
                let out = self.legs[slot as usize]
                    .as_ref()
                    .map_or(Slot::MAX, |l| l.streams[k].outputs[i]);
                let Some(dst) = self.legs.get_mut(out as usize).and_then(Option::as_mut) else {
                    continue;
                };
                if dst.secure || dst.streams[k].egress.rewrites_ssrc() {
                    continue;
                }
                let Some((rtcp_socket, dest)) = dst.rtcp_dest() else {
                    continue;
                };
                let via = SocketRef {
                    slot: out,
                    rtcp: rtcp_socket,
                };
                if tx.push(via, dest, data, |_, len| Some(len)) {
                    bump(&dst.stats.rtcp_tx_packets, 1);
                }
            }
        }
    }
}
