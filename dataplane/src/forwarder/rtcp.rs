//! The RTCP the forwarder originates as the server (PLI, REMB) and the keyframe requests it
//! reacts to. The wire format, and the one reader of received RTCP, are [`crate::rtcp`].

use crate::rtcp::{self as wire, Compound, Packet};

pub(crate) use crate::rtcp::REMB_MAX;

/// SSRC the server uses as the sender of the RTCP it originates ("SLCE").
pub const SERVER_SSRC: u32 = 0x534c_4345;

/// Picture Loss Indication (RFC 4585 §6.3.1) from the server.
pub(crate) fn pli(media_ssrc: u32) -> [u8; 12] {
    wire::pli(SERVER_SSRC, media_ssrc)
}

/// REMB from the server for `ssrcs` (at most two), written into `out`; returns its length.
pub(crate) fn remb(bps: u64, ssrcs: &[u32], out: &mut [u8; REMB_MAX]) -> usize {
    wire::remb(SERVER_SSRC, bps, ssrcs, out)
}

/// Whether a (compound) RTCP packet asks for a keyframe: PLI or FIR (RFC 5104 §4.3.1).
pub(crate) fn requests_keyframe(data: &[u8]) -> bool {
    Compound::new(data).any(|p| matches!(p, Packet::Pli { .. } | Packet::Fir(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_found_in_compound_packets() {
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let mut compound = rr.to_vec();
        compound.extend_from_slice(&pli(9));
        assert!(requests_keyframe(&compound));
        assert!(!requests_keyframe(&rr));
        let mut fir = pli(9).to_vec();
        fir[0] = 0x80 | wire::FMT_FIR;
        assert!(requests_keyframe(&fir));
        assert!(
            !requests_keyframe(&[0x80, 206, 0xff, 0xff]),
            "length beyond the datagram"
        );
        let mut after_garbage = vec![0x80, 206, 0, 9];
        after_garbage.extend_from_slice(&pli(9));
        assert!(
            !requests_keyframe(&after_garbage),
            "nothing after a broken length"
        );
    }

    #[test]
    fn the_server_signs_what_it_originates() {
        assert_eq!(&pli(9)[4..8], &SERVER_SSRC.to_be_bytes());
        let mut buf = [0u8; REMB_MAX];
        let n = remb(64_000, &[7, 8], &mut buf);
        assert_eq!(n, REMB_MAX);
        assert_eq!(&buf[4..8], &SERVER_SSRC.to_be_bytes());
    }
}
