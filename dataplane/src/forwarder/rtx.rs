//! RTX (RFC 4588): retransmissions in their own stream.
//!
//! An RTX packet carries the original packet's payload behind a 2-byte original sequence
//! number (OSN), with its own payload type (`a=fmtp:RTX apt=MEDIA`), its own SSRC
//! (`a=ssrc-group:FID MEDIA RTX`) and its own sequence numbers; timestamp and marker are the
//! original's (§4). Both directions work in place on caller buffers:
//! - [`unwrap`]: what a publisher sends on RTX (answering our upstream NACK) becomes the
//!   original packet again, so listeners get a normal retransmission and the cache fills;
//! - [`wrap`]: a cached packet served to a listener that negotiated RTX goes out as RTX, so
//!   its SRTP index is fresh and its receiver can tell a repair from a duplicate.

use crate::packet::rtp_header_len;

/// Sentinel in the payload-type tables: no RTX for this payload type.
const NO_PT: u8 = 0xff;

/// What one stream's peer negotiated for RTX, and the state of the RTX stream we send it.
#[derive(Clone, Debug)]
pub(crate) struct Repair {
    /// `apt[rtx pt]` = the media payload type it repairs (what the peer sends), or `NO_PT`.
    apt: [u8; 128],
    /// `rtx_pt[media pt]` = the RTX payload type for it (what we send), or `NO_PT`.
    rtx_pt: [u8; 128],
    /// Our RTX SSRC towards the peer, as announced in our SDP.
    ssrc: Option<u32>,
    /// Next RTX sequence number we send.
    seq: u16,
}

impl Repair {
    /// `None` when nothing about RTX was negotiated.
    pub(crate) fn new(pairs: &[(u8, u8)], ssrc: Option<u32>, seq0: u16) -> Option<Box<Self>> {
        if pairs.is_empty() {
            return None;
        }
        let mut r = Repair {
            apt: [NO_PT; 128],
            rtx_pt: [NO_PT; 128],
            ssrc,
            seq: seq0,
        };
        for &(media, rtx) in pairs {
            r.apt[usize::from(rtx & 0x7f)] = media & 0x7f;
            r.rtx_pt[usize::from(media & 0x7f)] = rtx & 0x7f;
        }
        Some(Box::new(r))
    }

    /// The RTX payload types the peer may send (for the leg's payload-type table).
    pub(crate) fn rtx_pts(&self) -> impl Iterator<Item = u8> + '_ {
        (0..128u8).filter(|&pt| self.apt[usize::from(pt)] != NO_PT)
    }

    /// The media payload type that RTX payload type `pt` repairs, if it is one.
    #[inline]
    pub(crate) fn repaired_pt(&self, pt: u8) -> Option<u8> {
        match self.apt[usize::from(pt & 0x7f)] {
            NO_PT => None,
            media => Some(media),
        }
    }

    /// The RTX payload type, SSRC and sequence number for a retransmission of a packet
    /// with payload type `media_pt` (as the peer numbers it); advances the sequence.
    pub(crate) fn next(&mut self, media_pt: u8) -> Option<(u8, u32, u16)> {
        let ssrc = self.ssrc?;
        let pt = match self.rtx_pt[usize::from(media_pt & 0x7f)] {
            NO_PT => return None,
            pt => pt,
        };
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        Some((pt, ssrc, seq))
    }
}

/// Turns the RTX packet in `buf[..len]` back into the packet it repairs, in place: the OSN
/// becomes the sequence number, `pt` and `ssrc` the media stream's. Returns the new length,
/// `None` when the packet holds no OSN (padding only) or does not parse.
pub(crate) fn unwrap(buf: &mut [u8], len: usize, pt: u8, ssrc: u32) -> Option<usize> {
    let packet = buf.get(..len)?;
    let at = rtp_header_len(packet)?;
    let padding = if packet[0] & 0x20 != 0 {
        usize::from(*packet.last()?)
    } else {
        0
    };
    if at + 2 + padding > len {
        return None;
    }
    let osn = u16::from_be_bytes([packet[at], packet[at + 1]]);
    buf.copy_within(at + 2..len, at);
    buf[1] = (buf[1] & 0x80) | (pt & 0x7f);
    buf[2..4].copy_from_slice(&osn.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(len - 2)
}

/// Turns the packet in `buf[..len]` into an RTX packet in place (`buf` has room for two more
/// bytes): the OSN is its current sequence number; payload type, SSRC and sequence number
/// become the RTX stream's. Returns the new length.
pub(crate) fn wrap(buf: &mut [u8], len: usize, rtx: (u8, u32, u16)) -> Option<usize> {
    let at = rtp_header_len(buf.get(..len)?)?;
    if len + 2 > buf.len() {
        return None;
    }
    let osn = [buf[2], buf[3]];
    buf.copy_within(at..len, at + 2);
    buf[at..at + 2].copy_from_slice(&osn);
    let (pt, ssrc, seq) = rtx;
    buf[1] = (buf[1] & 0x80) | (pt & 0x7f);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(len + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marker set, one CSRC, a one-word extension, payload `pay`.
    fn packet(pt: u8, seq: u16, ssrc: u32, pay: &[u8]) -> Vec<u8> {
        let mut p = vec![0x91, 0x80 | pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 9]); // CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // extension
        p.extend_from_slice(pay);
        p
    }

    #[test]
    fn wrap_then_unwrap_gives_the_original_back() {
        let original = packet(96, 700, 0x1111, b"payload");
        let mut buf = original.clone();
        buf.resize(original.len() + 2, 0);
        let len = wrap(&mut buf, original.len(), (97, 0x2222, 5)).expect("room for the OSN");
        assert_eq!(len, original.len() + 2);
        let rtx = &buf[..len];
        assert_eq!(rtx[1], 0x80 | 97, "marker kept, RTX payload type");
        assert_eq!(&rtx[2..4], &5u16.to_be_bytes(), "RTX sequence number");
        assert_eq!(&rtx[4..8], &1234u32.to_be_bytes(), "original timestamp");
        assert_eq!(&rtx[8..12], &0x2222u32.to_be_bytes(), "RTX SSRC");
        assert_eq!(
            &rtx[24..26],
            &700u16.to_be_bytes(),
            "OSN after the extension"
        );
        assert!(rtx.ends_with(b"payload"));

        let back = unwrap(&mut buf, len, 96, 0x1111).expect("an OSN");
        assert_eq!(&buf[..back], &original[..]);
    }

    #[test]
    fn padding_only_rtx_is_refused() {
        // Header, then 4 bytes of padding (P bit), no OSN.
        let mut p = packet(97, 1, 0x2222, &[0, 0, 0, 4]);
        p[0] |= 0x20;
        let len = p.len();
        assert_eq!(unwrap(&mut p, len, 96, 0x1111), None);
        let mut short = packet(97, 1, 0x2222, &[7]);
        let len = short.len();
        assert_eq!(unwrap(&mut short, len, 96, 0x1111), None);
    }

    #[test]
    fn repair_maps_both_ways_and_counts_its_own_sequence() {
        let mut r = Repair::new(&[(96, 97), (98, 99)], Some(0xabc), 65535).expect("negotiated");
        assert_eq!(r.repaired_pt(97), Some(96));
        assert_eq!(r.repaired_pt(96), None);
        assert_eq!(r.rtx_pts().collect::<Vec<_>>(), [97, 99]);
        assert_eq!(r.next(98), Some((99, 0xabc, 65535)));
        assert_eq!(r.next(96), Some((97, 0xabc, 0)), "wraps");
        assert_eq!(r.next(111), None, "no RTX for that payload type");
        assert!(Repair::new(&[], Some(1), 0).is_none());
        let mut no_ssrc = Repair::new(&[(96, 97)], None, 0).expect("receive side only");
        assert_eq!(no_ssrc.next(96), None);
    }
}
