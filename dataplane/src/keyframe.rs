//! Keyframe detection for the video codecs a listener switch waits on.

use crate::api::VideoCodec;

/// The RTP payload of a packet: after the fixed header, CSRCs and any header extension
/// (RFC 3550 §5.1, §5.3.1). `None` when the lengths do not fit.
pub fn rtp_payload(packet: &[u8]) -> Option<&[u8]> {
    packet.get(crate::packet::rtp_header_len(packet)?..)
}

/// Whether this RTP payload starts a keyframe of `codec`.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8(payload),
        VideoCodec::Vp9 => vp9(payload),
        VideoCodec::H264 => h264(payload),
    }
}

/// RFC 7741 §4.2: payload descriptor, then (at a partition start) the VP8 payload header,
/// whose P bit is 0 for a key frame (RFC 6386 §9.1).
fn vp8(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let (x, s, pid) = (b0 & 0x80 != 0, b0 & 0x10 != 0, b0 & 0x07);
    if !s || pid != 0 {
        return false;
    }
    let mut at = 1;
    if x {
        let Some(&ext) = p.get(1) else { return false };
        at = 2;
        if ext & 0x80 != 0 {
            // PictureID: 7 or 15 bits (M bit).
            let Some(&pic) = p.get(at) else { return false };
            at += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            at += 1; // TL0PICIDX
        }
        if ext & 0x30 != 0 {
            at += 1; // TID/Y/KEYIDX
        }
    }
    p.get(at).is_some_and(|h| h & 0x01 == 0)
}

/// RFC 9628 §4.2: B (start of frame) set and P (inter-picture predicted) clear.
fn vp9(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x08 != 0 && b & 0x40 == 0)
}

/// RFC 6184: an IDR slice (5) or a sequence parameter set (7), alone, in a STAP-A (24) or at
/// the start of an FU-A (28).
fn h264(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let key = |t: u8| t == 5 || t == 7;
    match b0 & 0x1f {
        24 => {
            let mut at = 1;
            while let Some(size) = p.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                if p.get(at + 2).is_some_and(|n| key(n & 0x1f)) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && key(fu & 0x1f)),
        t => key(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_key_and_delta_frames() {
        // S=1 PID=0, no extension; payload header P=0 (key) / P=1 (delta).
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x10, 0x00, 0x9d, 0x01, 0x2a]
        ));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
        // Not the start of a partition.
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
        // X=1 with a 15-bit PictureID, then a key frame header.
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x00]
        ));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x90, 0x80]));
    }

    #[test]
    fn vp9_and_h264_keyframes() {
        assert!(starts_keyframe(VideoCodec::Vp9, &[0x08]));
        assert!(!starts_keyframe(VideoCodec::Vp9, &[0x48]));
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(VideoCodec::H264, &[0x67]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41]));
        // STAP-A with SPS inside; FU-A start of an IDR; FU-A middle.
        assert!(starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]
        ));
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05]));
    }

    #[test]
    fn payload_skips_csrcs_and_extension() {
        let mut p = vec![0x91, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
        p.extend_from_slice(&[0, 0, 0, 5]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]); // extension, 1 word
        p.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(rtp_payload(&p), Some(&[0xaa, 0xbb][..]));
        assert_eq!(rtp_payload(&p[..14]), None);
    }
}
