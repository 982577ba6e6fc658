//! The RTCP the forwarder originates (PLI, REMB) and the feedback it reacts to.

/// SSRC the server uses as the sender of the RTCP it originates ("SLCE").
pub const SERVER_SSRC: u32 = 0x534c_4345;

/// RTCP payload-specific feedback (RFC 4585 §6.1).
const PSFB: u8 = 206;
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;
const FMT_AFB: u8 = 15;

/// Picture Loss Indication (RFC 4585 §6.3.1): no FCI.
pub(crate) fn pli(media_ssrc: u32) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[0] = 0x80 | FMT_PLI;
    p[1] = PSFB;
    p[2..4].copy_from_slice(&2u16.to_be_bytes());
    p[4..8].copy_from_slice(&SERVER_SSRC.to_be_bytes());
    p[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    p
}

/// Longest REMB we build: two SSRCs (audio and video of one leg).
pub(crate) const REMB_MAX: usize = 28;

/// Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb §2.2) for `ssrcs`
/// (at most two), written into `out`; returns its length.
pub(crate) fn remb(bps: u64, ssrcs: &[u32], out: &mut [u8; REMB_MAX]) -> usize {
    let ssrcs = &ssrcs[..ssrcs.len().min(2)];
    let len = 20 + 4 * ssrcs.len();
    let (mut mantissa, mut exp) = (bps, 0u32);
    while mantissa > 0x3_ffff {
        mantissa >>= 1;
        exp += 1;
    }
    out[0] = 0x80 | FMT_AFB;
    out[1] = PSFB;
    out[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    out[4..8].copy_from_slice(&SERVER_SSRC.to_be_bytes());
    out[8..12].copy_from_slice(&0u32.to_be_bytes());
    out[12..16].copy_from_slice(b"REMB");
    out[16] = ssrcs.len() as u8;
    let packed = (exp << 18) | mantissa as u32;
    out[17..20].copy_from_slice(&packed.to_be_bytes()[1..]);
    for (i, s) in ssrcs.iter().enumerate() {
        out[20 + 4 * i..24 + 4 * i].copy_from_slice(&s.to_be_bytes());
    }
    len
}

/// Whether a (compound) RTCP packet asks for a keyframe: PLI or FIR (RFC 5104 §4.3.1).
/// Walks the packets by their length fields; anything malformed ends the walk.
pub(crate) fn requests_keyframe(mut data: &[u8]) -> bool {
    while data.len() >= 4 {
        let fmt = data[0] & 0x1f;
        let len = (usize::from(u16::from_be_bytes([data[2], data[3]])) + 1) * 4;
        if data[0] >> 6 != 2 || len > data.len() {
            return false;
        }
        if data[1] == PSFB && (fmt == FMT_PLI || fmt == FMT_FIR) {
            return true;
        }
        data = &data[len..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remb_encodes_exponent_and_mantissa() {
        let mut buf = [0u8; REMB_MAX];
        let n = remb(64_000, &[7], &mut buf);
        assert_eq!(n, 24);
        assert_eq!(&buf[..4], &[0x8f, 206, 0, 5]);
        assert_eq!(&buf[12..16], b"REMB");
        assert_eq!(buf[16], 1);
        let packed = u32::from_be_bytes([0, buf[17], buf[18], buf[19]]);
        assert_eq!(u64::from(packed & 0x3_ffff) << (packed >> 18), 64_000);
        let n = remb(5_000_000, &[1, 2], &mut buf);
        assert_eq!(n, 28);
        let packed = u32::from_be_bytes([0, buf[17], buf[18], buf[19]]);
        let decoded = u64::from(packed & 0x3_ffff) << (packed >> 18);
        assert!(decoded <= 5_000_000 && decoded > 4_999_900, "{decoded}");
    }

    #[test]
    fn keyframe_requests_are_found_in_compound_packets() {
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let mut compound = rr.to_vec();
        compound.extend_from_slice(&pli(9));
        assert!(requests_keyframe(&compound));
        assert!(!requests_keyframe(&rr));
        let mut fir = pli(9).to_vec();
        fir[0] = 0x80 | FMT_FIR;
        assert!(requests_keyframe(&fir));
        assert!(
            !requests_keyframe(&[0x80, 206, 0xff, 0xff]),
            "length beyond the datagram"
        );
    }
}
