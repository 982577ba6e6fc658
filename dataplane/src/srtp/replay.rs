//! Packet-index estimation and the replay window (RFC 3711 §3.3.1, §3.3.2, Appendix A).

use super::SrtpError;

/// Replay window width in packets: RFC 3711 §3.3.2 requires at least 64.
pub(super) const WINDOW: u64 = 64;
/// Largest SRTP packet index: 32-bit ROC, 16-bit SEQ.
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;

/// The highest index accepted (authenticated, or sent) so far and which of the `WINDOW`
/// indexes at and below it have been seen. Used for SRTP (48-bit index) and SRTCP (31-bit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    started: bool,
    highest: u64,
    /// Bit `d` set: index `highest - d` has been seen.
    seen: u64,
}

impl ReplayWindow {
    /// The 48-bit index of an RTP packet with sequence number `seq` (RFC 3711 Appendix A):
    /// the ROC guess `v` is ROC-1, ROC or ROC+1, whichever puts the packet closest to the
    /// highest index so far. A stream starts with ROC 0 at its first packet (§3.3.1).
    pub(super) fn estimate_rtp(&self, seq: u16) -> Result<u64, SrtpError> {
        if !self.started {
            return Ok(u64::from(seq));
        }
        let roc = self.highest >> 16;
        let s_l = (self.highest & 0xffff) as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 {
                // From before the last wrap; before index 0 it can only be stale.
                roc.checked_sub(1).ok_or(SrtpError::Replayed)?
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        let index = (v << 16) | u64::from(seq);
        if index > MAX_RTP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        Ok(index)
    }

    /// `Err(Replayed)` if `index` was seen already or is too old to tell.
    pub(super) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.highest {
            return Ok(());
        }
        let delta = self.highest - index;
        if delta >= WINDOW || self.seen & (1 << delta) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records `index` as seen; call only after the packet authenticated (or was sent).
    pub(super) fn update(&mut self, index: u64) {
        if !self.started {
            *self = ReplayWindow {
                started: true,
                highest: index,
                seen: 1,
            };
        } else if index > self.highest {
            let shift = index - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            let delta = self.highest - index;
            if delta < WINDOW {
                self.seen |= 1 << delta;
            }
        }
    }

    #[cfg(test)]
    pub(super) fn highest(&self) -> Option<u64> {
        self.started.then_some(self.highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(seqs: &[u64]) -> ReplayWindow {
        let mut w = ReplayWindow::default();
        for &i in seqs {
            w.update(i);
        }
        w
    }

    #[test]
    fn first_packet_starts_roc_at_zero() {
        assert_eq!(ReplayWindow::default().estimate_rtp(40000), Ok(40000));
    }

    #[test]
    fn wrap_forward_increments_roc() {
        let w = after(&[0xfff0]);
        assert_eq!(w.estimate_rtp(0x0005), Ok(0x1_0005));
        assert_eq!(w.estimate_rtp(0xfff5), Ok(0xfff5));
    }

    #[test]
    fn late_packet_from_before_wrap_takes_previous_roc() {
        let w = after(&[0x1_0002]);
        assert_eq!(w.estimate_rtp(0xfffe), Ok(0xfffe));
        assert_eq!(w.estimate_rtp(0x0003), Ok(0x1_0003));
    }

    #[test]
    fn before_index_zero_is_stale() {
        let w = after(&[5]);
        assert_eq!(w.estimate_rtp(0xfff0), Err(SrtpError::Replayed));
    }

    #[test]
    fn rtp_index_cannot_pass_48_bits() {
        let w = after(&[MAX_RTP_INDEX - 5]);
        assert_eq!(w.estimate_rtp(0xffff), Ok(MAX_RTP_INDEX));
        let w = after(&[MAX_RTP_INDEX]);
        assert_eq!(w.estimate_rtp(0x0001), Err(SrtpError::IndexExhausted));
    }

    #[test]
    fn window_rejects_repeats_and_stale_but_accepts_reordered() {
        let w = after(&[100, 98]);
        assert_eq!(w.check(98), Err(SrtpError::Replayed));
        assert_eq!(w.check(100), Err(SrtpError::Replayed));
        assert_eq!(w.check(99), Ok(()));
        assert_eq!(w.check(100 - 63), Ok(()));
        assert_eq!(w.check(100 - 64), Err(SrtpError::Replayed));
        assert_eq!(w.check(101), Ok(()));
    }

    #[test]
    fn big_jump_clears_window() {
        let w = after(&[10, 11, 500]);
        assert_eq!(w.check(499), Ok(()));
        assert_eq!(w.check(500), Err(SrtpError::Replayed));
        assert_eq!(w.check(11), Err(SrtpError::Replayed));
        assert_eq!(w.highest(), Some(500));
    }
}
