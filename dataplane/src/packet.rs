//! Datagram classification (RFC 7983) and the few RTP header fields the forwarder touches.

/// What a datagram on a media port is, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    /// Too short or not version 2.
    Malformed,
    Unknown,
}

pub const RTP_HEADER_LEN: usize = 12;

/// RFC 7983 §7 demultiplexing, then RFC 5761 §4 to tell RTCP from RTP on a muxed port.
#[inline]
pub fn classify(data: &[u8]) -> Class {
    let Some(&b0) = data.first() else {
        return Class::Malformed;
    };
    match b0 {
        0..=3 => Class::Stun,
        20..=63 => Class::Dtls,
        128..=191 => {
            if data.len() < 8 {
                return Class::Malformed;
            }
            // RFC 5761 §4: RTCP packet types 192..=223 collide with RTP payload types 64..=95.
            let pt = data[1] & 0x7f;
            if (64..=95).contains(&pt) {
                Class::Rtcp
            } else if data.len() < RTP_HEADER_LEN {
                Class::Malformed
            } else {
                Class::Rtp
            }
        }
        _ => Class::Unknown,
    }
}

/// Length of an RTP packet's header: the fixed part, CSRCs and any header extension
/// (RFC 3550 §5.1, §5.3.1). `None` when it would run past the packet.
#[inline]
pub fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    let b0 = *packet.first()?;
    let mut at = RTP_HEADER_LEN + 4 * usize::from(b0 & 0x0f);
    if b0 & 0x10 != 0 {
        let ext = packet.get(at + 2..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    (at <= packet.len()).then_some(at)
}

/// Read-only view of a fixed RTP header (RFC 3550 §5.1). The caller has classified it as RTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    #[inline]
    pub fn read(data: &[u8]) -> Option<Self> {
        let h: &[u8; RTP_HEADER_LEN] = data.get(..RTP_HEADER_LEN)?.try_into().ok()?;
        Some(RtpHeader {
            pt: h[1] & 0x7f,
            seq: u16::from_be_bytes([h[2], h[3]]),
            ts: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        })
    }

    /// Writes pt, seq, ts and ssrc into `out`, keeping the marker bit and everything else.
    #[inline]
    pub fn write(&self, out: &mut [u8]) {
        out[1] = (out[1] & 0x80) | (self.pt & 0x7f);
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.ts.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8) -> [u8; 12] {
        [0x80, 0x80 | pt, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]
    }

    #[test]
    fn rfc7983_ranges_are_told_apart() {
        assert_eq!(classify(&[0, 1, 0, 0]), Class::Stun);
        assert_eq!(classify(&[22, 254, 253]), Class::Dtls);
        assert_eq!(classify(&rtp(0)), Class::Rtp);
        assert_eq!(classify(&[0x80, 200, 0, 6, 0, 0, 0, 1]), Class::Rtcp);
        assert_eq!(classify(&[70, 0, 0]), Class::Unknown);
        assert_eq!(classify(&[]), Class::Malformed);
        assert_eq!(classify(&[0x80, 0]), Class::Malformed);
    }

    #[test]
    fn rtp_with_high_payload_type_is_not_rtcp() {
        assert_eq!(classify(&rtp(111)), Class::Rtp);
        assert_eq!(classify(&rtp(96)), Class::Rtp);
    }

    #[test]
    fn header_write_keeps_marker_bit() {
        let mut p = rtp(0);
        let h = RtpHeader::read(&p).unwrap();
        assert_eq!((h.pt, h.seq, h.ts, h.ssrc), (0, 1, 160, 0x01020304));
        RtpHeader {
            pt: 8,
            seq: 7,
            ts: 9,
            ssrc: 5,
        }
        .write(&mut p);
        assert_eq!(p[1], 0x88);
        assert_eq!(
            RtpHeader::read(&p).unwrap(),
            RtpHeader {
                pt: 8,
                seq: 7,
                ts: 9,
                ssrc: 5
            }
        );
    }
}
