//! Token-bucket policing of what a peer sends (the `bitrate` cap).

use std::time::Instant;

/// A token bucket in bits: refills at `rate` bits per second up to `burst` bits; a packet
/// passes when the bucket holds its size. Never admits more than `burst + rate·t` over any
/// interval `t`.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    last: Option<Instant>,
}

/// Smallest burst allowance: a few full-size packets must always fit.
const MIN_BURST_BITS: u64 = 64_000;

impl TokenBucket {
    /// A bucket for `rate` bits per second with half a second of burst allowance, full.
    pub(crate) fn new(rate: u64) -> Self {
        let burst = (rate / 2).max(MIN_BURST_BITS);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// A bucket for `rate` units per second holding at most `burst`, full.
    pub(crate) fn with_burst(rate: u64, burst: u64) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: None,
        }
    }

    pub(crate) fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes `bits` from the bucket if they are there.
    pub(crate) fn admit(&mut self, now: Instant, bits: u64) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_nanos();
            let refill = (u128::from(self.rate) * elapsed / 1_000_000_000) as u64;
            if refill > 0 {
                self.tokens = self.tokens.saturating_add(refill).min(self.burst);
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
        if self.tokens >= bits {
            self.tokens -= bits;
            true
        } else {
            false
        }
    }
}

/// What a slow-path datagram is, for its budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlowKind {
    Stun,
    /// DTLS before the leg has keys: the handshake.
    Handshake,
    /// DTLS after it: application data (data channels).
    Data,
}

/// What one secure leg's peer may hand the control plane: every STUN and DTLS datagram there
/// is a copy and an event in the manager's inbox, which API requests share. A bucket per kind,
/// so that a flood of STUN (anyone who knows the port can send it) cannot starve the DTLS
/// handshake of the same leg, nor anything of any other leg.
#[derive(Clone, Debug)]
pub(crate) struct SlowPathBudget {
    stun: TokenBucket,
    dtls: TokenBucket,
    data: TokenBucket,
}

impl SlowPathBudget {
    /// STUN: a browser's connectivity checks over a few candidate pairs, their retransmissions
    /// and consent checks stay far below 20 a second after a first burst.
    pub(crate) const STUN_RATE: u64 = 20;
    pub(crate) const STUN_BURST: u64 = 50;
    /// DTLS: a handshake is a dozen records, retransmitted at most a few times.
    pub(crate) const DTLS_RATE: u64 = 30;
    pub(crate) const DTLS_BURST: u64 = 60;
    /// Data-channel records (up to ~1,200 bytes each) once the handshake is done: a ceiling
    /// of about 12 MB/s per leg, far above what the per-session message limits allow.
    pub(crate) const DATA_RATE: u64 = 10_000;
    pub(crate) const DATA_BURST: u64 = 2_000;

    pub(crate) fn new() -> Self {
        SlowPathBudget {
            stun: TokenBucket::with_burst(Self::STUN_RATE, Self::STUN_BURST),
            dtls: TokenBucket::with_burst(Self::DTLS_RATE, Self::DTLS_BURST),
            data: TokenBucket::with_burst(Self::DATA_RATE, Self::DATA_BURST),
        }
    }

    /// Whether one more datagram of this kind may go to the slow path now.
    pub(crate) fn admit(&mut self, now: Instant, kind: SlowKind) -> bool {
        let bucket = match kind {
            SlowKind::Stun => &mut self.stun,
            SlowKind::Handshake => &mut self.dtls,
            SlowKind::Data => &mut self.data,
        };
        bucket.admit(now, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn never_admits_more_than_burst_plus_rate_times_t() {
        let start = Instant::now();
        for (seed, rate) in [(1u64, 64_000u64), (7, 500_000), (13, 2_000_000)] {
            let mut b = TokenBucket::new(rate);
            let mut x = seed;
            let mut admitted = 0u64;
            let mut t = Duration::ZERO;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                t += Duration::from_micros(x % 2_000);
                let bits = 8 * (100 + x % 1_300);
                if b.admit(start + t, bits) {
                    admitted += bits;
                }
                let bound = b.burst + (u128::from(rate) * t.as_nanos() / 1_000_000_000) as u64;
                assert!(admitted <= bound, "rate {rate}: {admitted} > {bound}");
            }
            // And it does let traffic through at about the rate.
            let expected = (u128::from(rate) * t.as_nanos() / 1_000_000_000) as u64;
            assert!(
                admitted + 8 * 1_400 * 10 >= expected.min(admitted + 1),
                "starved"
            );
        }
    }

    #[test]
    fn a_burst_above_the_allowance_is_cut() {
        let now = Instant::now();
        let mut b = TokenBucket::new(64_000);
        let passed = (0..100).filter(|_| b.admit(now, 8_000)).count();
        assert_eq!(passed, 8, "64 kbit of burst holds eight 1000-byte packets");
    }
}
