//! Any datagram as a compound RTCP packet through the data plane's one RTCP reader: never a
//! panic, and every part the data plane also writes reads back the same once written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_dataplane::fuzzing::{
    Compound, NACK_MAX, Packet, REMB_MAX, nack, pli, receiver_report, remb, sender_report,
};

/// The only part of `data`; panics if it holds anything else.
fn single(data: &[u8]) -> Packet<'_> {
    let mut parts = Compound::new(data);
    let part = parts.next().expect("one part");
    assert_eq!(parts.next(), None);
    assert!(!parts.malformed());
    part
}

fn sorted(seqs: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut v: Vec<u16> = seqs.collect();
    v.sort_unstable();
    v.dedup();
    v
}

fuzz_target!(|data: &[u8]| {
    let mut parts = Compound::new(data);
    for part in parts.by_ref() {
        match part {
            Packet::SenderReport(sr) => {
                let p = sender_report(sr.ssrc, sr.ntp, sr.rtp, sr.packets, sr.octets);
                let Packet::SenderReport(again) = single(&p) else {
                    panic!("an SR reads as an SR")
                };
                assert_eq!(again.blocks.count(), 0);
                assert_eq!(
                    (
                        again.ssrc,
                        again.ntp,
                        again.rtp,
                        again.packets,
                        again.octets
                    ),
                    (sr.ssrc, sr.ntp, sr.rtp, sr.packets, sr.octets)
                );
                for b in sr.blocks {
                    receiver_report(sr.ssrc, &b);
                }
            }
            Packet::ReceiverReport { ssrc, blocks } => {
                for b in blocks {
                    let p = receiver_report(ssrc, &b);
                    let Packet::ReceiverReport { ssrc: s, blocks } = single(&p) else {
                        panic!("an RR reads as an RR")
                    };
                    assert_eq!(s, ssrc);
                    assert_eq!(blocks.collect::<Vec<_>>(), [b]);
                }
            }
            Packet::Nack(n) => {
                let seqs: Vec<u16> = n.seqs().take(128).collect();
                let mut buf = [0u8; NACK_MAX];
                let len = nack(n.sender, n.media, &seqs, &mut buf);
                let Packet::Nack(again) = single(&buf[..len]) else {
                    panic!("a NACK reads as a NACK")
                };
                assert_eq!((again.sender, again.media), (n.sender, n.media));
                assert_eq!(sorted(again.seqs()), sorted(seqs.into_iter()));
            }
            Packet::Pli { sender, media } => {
                assert_eq!(single(&pli(sender, media)), part);
            }
            Packet::Remb(r) => {
                let ssrcs: Vec<u32> = r.ssrcs().take(2).collect();
                let mut buf = [0u8; REMB_MAX];
                let len = remb(r.sender, r.bitrate, &ssrcs, &mut buf);
                let Packet::Remb(again) = single(&buf[..len]) else {
                    panic!("a REMB reads as a REMB")
                };
                assert_eq!(again.sender, r.sender);
                assert_eq!(again.ssrcs().collect::<Vec<_>>(), ssrcs);
                // What was read is exactly representable, unless it saturated.
                if r.bitrate != u64::MAX {
                    assert_eq!(again.bitrate, r.bitrate);
                }
            }
            Packet::Fir(f) => {
                f.entries().count();
            }
            Packet::Other { .. } => {}
        }
    }
    // A walk that ended early read a bad header: the datagram was not empty.
    assert!(!parts.malformed() || !data.is_empty());
});
