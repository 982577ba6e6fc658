//! RTCP wire format: one reader for every compound packet the data plane reacts to, and the
//! writers of what it sends (RFC 3550 §6.4, RFC 4585 §6, RFC 5104 §4.3.1,
//! draft-alvestrand-rmcat-remb §2.2).
//!
//! [`Compound`] walks a compound packet by its length fields and yields one typed [`Packet`]
//! per part, borrowing the datagram: it allocates nothing and never panics. The walk ends at
//! the first header that is not RTCP version 2, whose length runs past the datagram or whose
//! padding does not fit ([`Compound::malformed`] then says so): nothing after a broken length
//! can be trusted. A part of a known type that is too short for its fixed fields is yielded as
//! [`Packet::Other`], like any type not read here, and the walk goes on.

/// Packet types (RFC 3550 §12.1, RFC 4585 §6.1).
pub const SR: u8 = 200;
pub const RR: u8 = 201;
pub const RTPFB: u8 = 205;
pub const PSFB: u8 = 206;
/// Feedback message types: generic NACK under RTPFB; PLI, FIR and application layer
/// feedback (REMB) under PSFB.
pub const FMT_NACK: u8 = 1;
pub const FMT_PLI: u8 = 1;
pub const FMT_FIR: u8 = 4;
pub const FMT_AFB: u8 = 15;

/// Bytes of a report block (RFC 3550 §6.4.1).
pub const REPORT_BLOCK_LEN: usize = 24;
/// Longest REMB [`remb`] builds: two SSRCs (audio and video of one leg).
pub const REMB_MAX: usize = 28;
/// Sequence numbers one [`nack`] covers at most (each may need an FCI entry of its own).
pub const NACK_MAX_SEQS: usize = 128;
/// Longest NACK [`nack`] builds.
pub const NACK_MAX: usize = 12 + 4 * NACK_MAX_SEQS;

/// One part of a compound RTCP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    SenderReport(SenderReport<'a>),
    ReceiverReport {
        ssrc: u32,
        blocks: ReportBlocks<'a>,
    },
    Nack(Nack<'a>),
    /// Picture Loss Indication (RFC 4585 §6.3.1).
    Pli {
        sender: u32,
        media: u32,
    },
    /// Full Intra Request (RFC 5104 §4.3.1): the SSRCs asked are in the FCI entries.
    Fir(Fir<'a>),
    Remb(Remb<'a>),
    /// A type not read here (SDES, BYE, APP, other feedback), or a known type too short for
    /// its fixed fields.
    Other {
        pt: u8,
        fmt: u8,
    },
}

/// A sender report (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderReport<'a> {
    pub ssrc: u32,
    /// NTP timestamp, 32.32 fixed point.
    pub ntp: u64,
    pub rtp: u32,
    pub packets: u32,
    pub octets: u32,
    pub blocks: ReportBlocks<'a>,
}

/// What a receiver reports about one source (RFC 3550 §6.4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative number of packets lost: 24 bits, signed (duplicates make it negative).
    pub lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

impl ReportBlock {
    fn read(b: &[u8; REPORT_BLOCK_LEN]) -> Self {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            // Sign-extends the 24-bit field.
            lost: i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8,
            highest_seq: word(8),
            jitter: word(12),
            lsr: word(16),
            dlsr: word(20),
        }
    }

    /// Writes the block; `lost` is clamped to 24 bits.
    pub fn write(&self, out: &mut [u8; REPORT_BLOCK_LEN]) {
        let lost = self.lost.clamp(-0x80_0000, 0x7f_ffff);
        out[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        out[4] = self.fraction_lost;
        out[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        out[8..12].copy_from_slice(&self.highest_seq.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        out[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }
}

/// The report blocks of an SR or RR, read one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportBlocks<'a>(&'a [u8]);

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (block, rest) = self.0.split_first_chunk::<REPORT_BLOCK_LEN>()?;
        self.0 = rest;
        Some(ReportBlock::read(block))
    }
}

/// A generic NACK (RFC 4585 §6.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack<'a> {
    pub sender: u32,
    pub media: u32,
    fci: &'a [u8],
}

impl<'a> Nack<'a> {
    /// The FCI entries: a packet ID and the bitmask of the 16 numbers after it.
    pub fn entries(self) -> impl Iterator<Item = (u16, u16)> + 'a {
        self.fci.chunks_exact(4).map(|e| {
            (
                u16::from_be_bytes([e[0], e[1]]),
                u16::from_be_bytes([e[2], e[3]]),
            )
        })
    }

    /// Every sequence number named, entry by entry (repeats included).
    pub fn seqs(self) -> impl Iterator<Item = u16> + 'a {
        self.entries().flat_map(|(pid, blp)| {
            (0..17u16)
                .filter(move |&bit| bit == 0 || blp & (1 << (bit - 1)) != 0)
                .map(move |bit| pid.wrapping_add(bit))
        })
    }
}

/// A Full Intra Request (RFC 5104 §4.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fir<'a> {
    pub sender: u32,
    fci: &'a [u8],
}

impl<'a> Fir<'a> {
    /// The FCI entries: the SSRC asked for a keyframe and the request's sequence number.
    pub fn entries(self) -> impl Iterator<Item = (u32, u8)> + 'a {
        self.fci
            .chunks_exact(8)
            .map(|e| (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), e[4]))
    }
}

/// Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remb<'a> {
    pub sender: u32,
    /// Bits per second; saturates where mantissa and exponent exceed `u64`.
    pub bitrate: u64,
    ssrcs: &'a [u8],
}

impl<'a> Remb<'a> {
    /// The SSRCs the estimate applies to.
    pub fn ssrcs(self) -> impl Iterator<Item = u32> + 'a {
        self.ssrcs
            .chunks_exact(4)
            .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// The parts of a compound RTCP packet, in order (see the module docs).
#[derive(Clone, Debug)]
pub struct Compound<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> Compound<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Compound {
            rest: data,
            malformed: false,
        }
    }

    /// Whether the walk stopped before the end of the datagram: a broken header or length.
    /// Meaningful once the iterator returned `None`.
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for Compound<'a> {
    type Item = Packet<'a>;

    fn next(&mut self) -> Option<Packet<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((header, body, rest)) = split_packet(self.rest) else {
            self.malformed = true;
            self.rest = &[];
            return None;
        };
        self.rest = rest;
        Some(typed(header[0] & 0x1f, header[1], body))
    }
}

/// The first packet of `data`: its header, its body (padding removed) and what follows.
/// RFC 3550 §6.4.1: version 2, length in 32-bit words minus one, and with the P bit, the
/// last octet counts the padding (itself included).
fn split_packet(data: &[u8]) -> Option<(&[u8; 4], &[u8], &[u8])> {
    let header: &[u8; 4] = data.first_chunk()?;
    if header[0] >> 6 != 2 {
        return None;
    }
    let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
    let (packet, rest) = data.split_at_checked(len)?;
    let mut end = len;
    if header[0] & 0x20 != 0 {
        let pad = usize::from(packet[len - 1]);
        if pad == 0 || pad > len - 4 {
            return None;
        }
        end -= pad;
    }
    Some((header, &packet[4..end], rest))
}

/// The typed view of one packet's body (after the 4-byte header).
fn typed(count: u8, pt: u8, body: &[u8]) -> Packet<'_> {
    let word = |i: usize| u32::from_be_bytes([body[i], body[i + 1], body[i + 2], body[i + 3]]);
    let blocks = |at: usize| {
        let end = at + REPORT_BLOCK_LEN * usize::from(count);
        body.get(at..end).map(ReportBlocks)
    };
    let other = Packet::Other { pt, fmt: count };
    match (pt, count) {
        (SR, _) if body.len() >= 24 => match blocks(24) {
            Some(blocks) => Packet::SenderReport(SenderReport {
                ssrc: word(0),
                ntp: (u64::from(word(4)) << 32) | u64::from(word(8)),
                rtp: word(12),
                packets: word(16),
                octets: word(20),
                blocks,
            }),
            None => other,
        },
        (RR, _) if body.len() >= 4 => match blocks(4) {
            Some(blocks) => Packet::ReceiverReport {
                ssrc: word(0),
                blocks,
            },
            None => other,
        },
        (RTPFB, FMT_NACK) if body.len() >= 8 => Packet::Nack(Nack {
            sender: word(0),
            media: word(4),
            fci: &body[8..],
        }),
        (PSFB, FMT_PLI) if body.len() >= 8 => Packet::Pli {
            sender: word(0),
            media: word(4),
        },
        (PSFB, FMT_FIR) if body.len() >= 8 => Packet::Fir(Fir {
            sender: word(0),
            fci: &body[8..],
        }),
        (PSFB, FMT_AFB) if body.len() >= 16 && &body[8..12] == b"REMB" => {
            let n = usize::from(body[12]);
            let Some(ssrcs) = body.get(16..16 + 4 * n) else {
                return other;
            };
            let exp = u32::from(body[13] >> 2);
            let mantissa = u32::from_be_bytes([0, body[13] & 0x03, body[14], body[15]]);
            let bitrate = u64::try_from(u128::from(mantissa) << exp).unwrap_or(u64::MAX);
            Packet::Remb(Remb {
                sender: word(0),
                bitrate,
                ssrcs,
            })
        }
        _ => other,
    }
}

/// The 4-byte header of a packet of `len` bytes (a multiple of 4).
fn header(count: u8, pt: u8, len: usize, out: &mut [u8]) {
    out[0] = 0x80 | (count & 0x1f);
    out[1] = pt;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
}

/// A sender report without report blocks (28 bytes).
pub fn sender_report(ssrc: u32, ntp: u64, rtp: u32, packets: u32, octets: u32) -> [u8; 28] {
    let mut p = [0u8; 28];
    header(0, SR, p.len(), &mut p);
    p[4..8].copy_from_slice(&ssrc.to_be_bytes());
    p[8..16].copy_from_slice(&ntp.to_be_bytes());
    p[16..20].copy_from_slice(&rtp.to_be_bytes());
    p[20..24].copy_from_slice(&packets.to_be_bytes());
    p[24..28].copy_from_slice(&octets.to_be_bytes());
    p
}

/// A receiver report from `sender` with one report block (32 bytes).
pub fn receiver_report(sender: u32, block: &ReportBlock) -> [u8; 32] {
    let mut p = [0u8; 32];
    header(1, RR, p.len(), &mut p);
    p[4..8].copy_from_slice(&sender.to_be_bytes());
    let (_, b) = p.split_at_mut(8);
    block.write(b.try_into().expect("8 + 24 = 32"));
    p
}

/// Picture Loss Indication (RFC 4585 §6.3.1): no FCI.
pub fn pli(sender: u32, media: u32) -> [u8; 12] {
    let mut p = [0u8; 12];
    header(FMT_PLI, PSFB, p.len(), &mut p);
    p[4..8].copy_from_slice(&sender.to_be_bytes());
    p[8..12].copy_from_slice(&media.to_be_bytes());
    p
}

/// A REMB from `sender` for `ssrcs` (at most two are written), into `out`; returns its
/// length. The bitrate is rounded down to what an 18-bit mantissa can say.
pub fn remb(sender: u32, bps: u64, ssrcs: &[u32], out: &mut [u8; REMB_MAX]) -> usize {
    let ssrcs = &ssrcs[..ssrcs.len().min(2)];
    let len = 20 + 4 * ssrcs.len();
    let (mut mantissa, mut exp) = (bps, 0u32);
    while mantissa > 0x3_ffff {
        mantissa >>= 1;
        exp += 1;
    }
    header(FMT_AFB, PSFB, len, out);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&0u32.to_be_bytes());
    out[12..16].copy_from_slice(b"REMB");
    out[16] = ssrcs.len() as u8;
    // `mantissa` fits 18 bits; `exp` is at most 46 (u64 input).
    let packed = (exp << 18) | mantissa as u32;
    out[17..20].copy_from_slice(&packed.to_be_bytes()[1..]);
    for (i, s) in ssrcs.iter().enumerate() {
        out[20 + 4 * i..24 + 4 * i].copy_from_slice(&s.to_be_bytes());
    }
    len
}

/// A generic NACK from `sender` for the first [`NACK_MAX_SEQS`] of `seqs` of `media`, into
/// `out`; returns its length. Each FCI entry covers a PID and the 16 numbers after it.
pub fn nack(sender: u32, media: u32, seqs: &[u16], out: &mut [u8; NACK_MAX]) -> usize {
    let mut entries = 0usize;
    for &seq in seqs.iter().take(NACK_MAX_SEQS) {
        let covered = (0..entries).find_map(|e| {
            let at = 12 + 4 * e;
            let d = seq.wrapping_sub(u16::from_be_bytes([out[at], out[at + 1]]));
            (d <= 16).then_some((at, d))
        });
        match covered {
            Some((_, 0)) => {}
            Some((at, d)) => {
                let blp = u16::from_be_bytes([out[at + 2], out[at + 3]]) | 1 << (d - 1);
                out[at + 2..at + 4].copy_from_slice(&blp.to_be_bytes());
            }
            None => {
                let at = 12 + 4 * entries;
                out[at..at + 2].copy_from_slice(&seq.to_be_bytes());
                out[at + 2..at + 4].copy_from_slice(&0u16.to_be_bytes());
                entries += 1;
            }
        }
    }
    let len = 12 + 4 * entries;
    header(FMT_NACK, RTPFB, len, out);
    out[4..8].copy_from_slice(&sender.to_be_bytes());
    out[8..12].copy_from_slice(&media.to_be_bytes());
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: fixed seeds, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn all(data: &[u8]) -> (Vec<Packet<'_>>, bool) {
        let mut c = Compound::new(data);
        let parts: Vec<_> = c.by_ref().collect();
        (parts, c.malformed())
    }

    fn nack_seqs(data: &[u8]) -> Vec<(u32, u16)> {
        Compound::new(data)
            .filter_map(|p| match p {
                Packet::Nack(n) => Some(n),
                _ => None,
            })
            .flat_map(|n| n.seqs().map(move |s| (n.media, s)))
            .collect()
    }

    fn block(rng: &mut Rng) -> ReportBlock {
        ReportBlock {
            ssrc: rng.next() as u32,
            fraction_lost: rng.next() as u8,
            lost: (rng.next() as i32) >> 8,
            highest_seq: rng.next() as u32,
            jitter: rng.next() as u32,
            lsr: rng.next() as u32,
            dlsr: rng.next() as u32,
        }
    }

    /// One packet of every kind the data plane builds, from random fields, with what reading
    /// it must give back.
    fn built(rng: &mut Rng) -> (Vec<u8>, Packet<'static>, Vec<u64>) {
        match rng.below(5) {
            0 => {
                let (ssrc, ntp, rtp) = (rng.next() as u32, rng.next(), rng.next() as u32);
                let (packets, octets) = (rng.next() as u32, rng.next() as u32);
                let want = Packet::SenderReport(SenderReport {
                    ssrc,
                    ntp,
                    rtp,
                    packets,
                    octets,
                    blocks: ReportBlocks(&[]),
                });
                let p = sender_report(ssrc, ntp, rtp, packets, octets);
                (p.to_vec(), want, vec![])
            }
            1 => {
                let (sender, b) = (rng.next() as u32, block(rng));
                let p = receiver_report(sender, &b);
                let want = Packet::ReceiverReport {
                    ssrc: sender,
                    blocks: ReportBlocks(&[]),
                };
                let fields = [b.ssrc, b.highest_seq, b.jitter, b.lsr, b.dlsr];
                let mut extra: Vec<u64> = fields.iter().map(|&v| u64::from(v)).collect();
                extra.extend([u64::from(b.fraction_lost), b.lost as u64]);
                (p.to_vec(), want, extra)
            }
            2 => {
                let (sender, media) = (rng.next() as u32, rng.next() as u32);
                (
                    pli(sender, media).to_vec(),
                    Packet::Pli { sender, media },
                    vec![],
                )
            }
            3 => {
                let (sender, bps) = (rng.next() as u32, rng.next() >> rng.below(64));
                let ssrcs: Vec<u32> = (0..rng.below(3)).map(|_| rng.next() as u32).collect();
                let mut buf = [0u8; REMB_MAX];
                let n = remb(sender, bps, &ssrcs, &mut buf);
                let want = Packet::Remb(Remb {
                    sender,
                    bitrate: bps,
                    ssrcs: &[],
                });
                let mut extra = vec![bps];
                extra.extend(ssrcs.iter().map(|&s| u64::from(s)));
                (buf[..n].to_vec(), want, extra)
            }
            _ => {
                let (sender, media) = (rng.next() as u32, rng.next() as u32);
                let base = rng.next() as u16;
                let seqs: Vec<u16> = (0..1 + rng.below(40))
                    .map(|_| base.wrapping_add(rng.below(200) as u16))
                    .collect();
                let mut buf = [0u8; NACK_MAX];
                let n = nack(sender, media, &seqs, &mut buf);
                let want = Packet::Nack(Nack {
                    sender,
                    media,
                    fci: &[],
                });
                (
                    buf[..n].to_vec(),
                    want,
                    seqs.iter().map(|&s| u64::from(s)).collect(),
                )
            }
        }
    }

    /// Compares what was read with what was built; the borrowed parts through `extra`.
    fn check(got: &Packet<'_>, want: &Packet<'static>, extra: &[u64]) {
        match (got, want) {
            (Packet::SenderReport(g), Packet::SenderReport(w)) => {
                assert_eq!(g.blocks.count(), 0);
                assert_eq!(
                    (g.ssrc, g.ntp, g.rtp, g.packets, g.octets),
                    (w.ssrc, w.ntp, w.rtp, w.packets, w.octets)
                );
            }
            (
                Packet::ReceiverReport { ssrc, blocks },
                Packet::ReceiverReport { ssrc: want, .. },
            ) => {
                assert_eq!(ssrc, want);
                let b: Vec<ReportBlock> = blocks.collect();
                assert_eq!(b.len(), 1);
                let b = b[0];
                let fields = [b.ssrc, b.highest_seq, b.jitter, b.lsr, b.dlsr];
                let mut got: Vec<u64> = fields.iter().map(|&v| u64::from(v)).collect();
                got.extend([u64::from(b.fraction_lost), b.lost as u64]);
                assert_eq!(got, extra);
            }
            (Packet::Remb(g), Packet::Remb(w)) => {
                assert_eq!(g.sender, w.sender);
                let bps = extra[0];
                // Rounded down by at most the bits the mantissa drops.
                assert!(
                    g.bitrate <= bps && bps - g.bitrate < (bps >> 17).max(1),
                    "{bps}"
                );
                let ssrcs: Vec<u64> = g.ssrcs().map(u64::from).collect();
                assert_eq!(ssrcs, extra[1..]);
            }
            (Packet::Nack(g), Packet::Nack(w)) => {
                assert_eq!((g.sender, g.media), (w.sender, w.media));
                let mut got: Vec<u64> = g.seqs().map(u64::from).collect();
                let mut want = extra.to_vec();
                got.sort_unstable();
                got.dedup();
                want.sort_unstable();
                want.dedup();
                assert_eq!(got, want);
            }
            (g, w) => assert_eq!(g, w),
        }
    }

    #[test]
    fn built_compound_packets_read_back_part_by_part() {
        let mut rng = Rng(0x5eed_0f0f_1234_5678);
        for _ in 0..2000 {
            let parts: Vec<_> = (0..1 + rng.below(4)).map(|_| built(&mut rng)).collect();
            let compound: Vec<u8> = parts.iter().flat_map(|(p, _, _)| p.clone()).collect();
            let (read, malformed) = all(&compound);
            assert!(!malformed);
            assert_eq!(read.len(), parts.len());
            for (got, (_, want, extra)) in read.iter().zip(&parts) {
                check(got, want, extra);
            }
        }
    }

    #[test]
    fn every_cut_of_a_compound_packet_stops_cleanly() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let parts: Vec<_> = (0..1 + rng.below(4)).map(|_| built(&mut rng)).collect();
            let compound: Vec<u8> = parts.iter().flat_map(|(p, _, _)| p.clone()).collect();
            let mut ends = vec![0];
            for (p, _, _) in &parts {
                ends.push(ends.last().unwrap() + p.len());
            }
            for cut in 0..compound.len() {
                let (read, malformed) = all(&compound[..cut]);
                // Whole parts before the cut are read; the cut one ends the walk.
                let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
                assert_eq!(read.len(), whole, "cut {cut}");
                assert_eq!(malformed, !ends.contains(&cut), "cut {cut}");
            }
        }
    }

    #[test]
    fn nack_names_each_number_once_per_bit() {
        let seqs = [65530u16, 65535, 3, 4, 100, 65531];
        let mut buf = [0u8; NACK_MAX];
        let len = nack(1, 7, &seqs, &mut buf);
        assert_eq!(len, 12 + 4 * 2, "two FCI entries: 65530..=10 and 100");
        let mut got: Vec<u16> = nack_seqs(&buf[..len]).iter().map(|&(_, s)| s).collect();
        got.sort_unstable();
        let mut want = seqs.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
        // A repeated number is named once.
        let len = nack(1, 7, &[5, 5, 5], &mut buf);
        assert_eq!(nack_seqs(&buf[..len]), [(7, 5)]);
    }

    #[test]
    fn nack_covers_at_most_its_capacity() {
        let seqs: Vec<u16> = (0..1000).map(|i| i * 17).collect();
        let mut buf = [0u8; NACK_MAX];
        let len = nack(1, 7, &seqs, &mut buf);
        assert_eq!(len, NACK_MAX);
        assert_eq!(nack_seqs(&buf[..len]).len(), NACK_MAX_SEQS);
    }

    #[test]
    fn remb_encodes_exponent_and_mantissa() {
        let mut buf = [0u8; REMB_MAX];
        let n = remb(1, 64_000, &[7], &mut buf);
        assert_eq!(n, 24);
        assert_eq!(&buf[..4], &[0x8f, 206, 0, 5]);
        assert_eq!(&buf[12..16], b"REMB");
        let (read, _) = all(&buf[..n]);
        let Packet::Remb(r) = read[0] else {
            panic!("{read:?}")
        };
        assert_eq!(r.bitrate, 64_000, "exact below 2^18");
        assert_eq!(r.ssrcs().collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn remb_with_the_largest_exponent_saturates() {
        // Exponent 63, mantissa 2^18 - 1: far beyond u64.
        let p = [
            0x8f, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 0, 0xff, 0xff, 0xff,
        ];
        let (read, _) = all(&p);
        assert!(matches!(read[0], Packet::Remb(r) if r.bitrate == u64::MAX));
    }

    #[test]
    fn keyframe_requests_are_read_in_compound_packets() {
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let mut compound = rr.to_vec();
        compound.extend_from_slice(&pli(1, 9));
        let (read, malformed) = all(&compound);
        assert!(!malformed);
        assert_eq!(
            read[1],
            Packet::Pli {
                sender: 1,
                media: 9
            }
        );
        let fir = [
            0x84, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 3, 0, 0, 0,
        ];
        let (read, _) = all(&fir);
        let Packet::Fir(f) = read[0] else {
            panic!("{read:?}")
        };
        assert_eq!(f.entries().collect::<Vec<_>>(), [(9, 3)]);
    }

    #[test]
    fn malformed_headers_end_the_walk() {
        let pli = pli(1, 9);
        // Version 1; a length beyond the datagram; a header cut short.
        for bad in [
            &[0x40, 206, 0, 2, 0, 0, 0, 0][..],
            &[0x80, 206, 0xff, 0xff],
            &[0x80],
        ] {
            let mut data = bad.to_vec();
            data.extend_from_slice(&pli);
            let (read, malformed) = all(&data);
            assert!(read.is_empty() && malformed, "{bad:?}");
        }
        let mut data = pli.to_vec();
        data.extend_from_slice(&[0x80, 206, 0, 9]);
        let (read, malformed) = all(&data);
        assert_eq!((read.len(), malformed), (1, true));
    }

    #[test]
    fn padding_is_removed_and_checked() {
        // A PLI with 4 bytes of padding (P bit, count in the last octet).
        let mut p = pli(1, 9).to_vec();
        p[0] |= 0x20;
        p[3] = 3;
        p.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(
            all(&p),
            (
                vec![Packet::Pli {
                    sender: 1,
                    media: 9
                }],
                false
            )
        );
        // The padding eats into the fixed fields: too short to be a PLI.
        *p.last_mut().unwrap() = 8;
        assert_eq!(all(&p), (vec![Packet::Other { pt: PSFB, fmt: 1 }], false));
        // Zero, or more than the packet holds.
        for count in [0, 13] {
            *p.last_mut().unwrap() = count;
            assert_eq!(all(&p), (vec![], true), "{count}");
        }
    }

    #[test]
    fn parts_too_short_for_their_type_are_other() {
        // A PLI without SSRCs, an SR shorter than its sender info, an RR whose count of
        // report blocks does not fit, a NACK with one SSRC, a REMB without its SSRC list.
        let short = [
            &[0x81, 206, 0, 0][..],
            &[0x80, 200, 0, 1, 0, 0, 0, 1],
            &[0x81, 201, 0, 1, 0, 0, 0, 1],
            &[0x81, 205, 0, 1, 0, 0, 0, 1],
            &[
                0x8f, 206, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, b'R', b'E', b'M', b'B', 2, 0, 0, 1,
            ],
        ];
        for p in short {
            let (read, malformed) = all(p);
            assert!(!malformed);
            assert_eq!(
                read,
                [Packet::Other {
                    pt: p[1],
                    fmt: p[0] & 0x1f
                }]
            );
        }
    }

    #[test]
    fn report_block_loss_is_signed_24_bits() {
        for lost in [0, 1, -1, 0x7f_ffff, -0x80_0000] {
            let b = ReportBlock {
                lost,
                ..ReportBlock::default()
            };
            let p = receiver_report(1, &b);
            let (read, _) = all(&p);
            let Packet::ReceiverReport { mut blocks, .. } = read[0] else {
                panic!("{read:?}")
            };
            assert_eq!(blocks.next().unwrap().lost, lost);
        }
        let b = ReportBlock {
            lost: i32::MAX,
            ..ReportBlock::default()
        };
        let p = receiver_report(1, &b);
        let Packet::ReceiverReport { mut blocks, .. } = all(&p).0[0] else {
            panic!()
        };
        assert_eq!(blocks.next().unwrap().lost, 0x7f_ffff, "clamped");
    }
}
