//! Limits on what one API connection may do, as sans-IO state the WebSocket edge drives
//! with its clock: the request rate ([`TokenBucket`]) and consecutive failed logins
//! ([`LoginGuard`]).

use std::time::{Duration, Instant};

/// A token bucket (requests per second with a burst): a request takes one token; tokens come
/// back at `rate` per second up to `burst`. Over any interval `t` it admits at most
/// `burst + rate·t` requests.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens per second; `None` = unlimited.
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` 0 (or not finite) = unlimited; `burst` at least 1. Starts full.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: (rate.is_finite() && rate > 0.0).then_some(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        self.take_n(now, 1)
    }

    /// Takes `n` tokens at once if there are that many at `now`; none otherwise. More than
    /// the burst never passes.
    pub fn take_n(&mut self, now: Instant, n: u64) -> bool {
        if !self.has(now, n) {
            return false;
        }
        if self.rate.is_some() {
            self.tokens -= n as f64;
        }
        true
    }

    /// Whether `n` tokens are there at `now`; nothing is taken.
    pub fn has(&mut self, now: Instant, n: u64) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(self.burst);
        self.tokens >= n as f64
    }
}

/// Consecutive failed logins on one connection; a success resets the count.
#[derive(Clone, Copy, Debug)]
pub struct LoginGuard {
    /// 0 = unlimited.
    max: u32,
    failed: u32,
}

impl LoginGuard {
    pub fn new(max: u32) -> Self {
        LoginGuard { max, failed: 0 }
    }

    pub fn succeeded(&mut self) {
        self.failed = 0;
    }

    /// Counts a failure; true when the connection has now failed too often and must close.
    pub fn failed(&mut self) -> bool {
        self.failed = self.failed.saturating_add(1);
        self.max > 0 && self.failed >= self.max
    }
}

/// The deadline of a connection that has not logged in yet (`None`: no deadline).
pub fn login_deadline(opened: Instant, timeout: Duration) -> Option<Instant> {
    (!timeout.is_zero()).then(|| opened + timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_its_burst_then_refuses() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.001, 5, t0);
        for i in 0..5 {
            assert!(b.take(t0), "request {i}");
        }
        assert!(!b.take(t0));
        assert!(!b.take(t0 + Duration::from_millis(10)));
    }

    #[test]
    fn tokens_come_back_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2, t0);
        assert!(b.take(t0) && b.take(t0) && !b.take(t0));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later) && b.take(later) && !b.take(later));
    }

    #[test]
    fn never_admits_more_than_burst_plus_rate_times_t() {
        // A fixed pseudo-random walk of arrival times (xorshift, fixed seed).
        let t0 = Instant::now();
        let (rate, burst) = (50.0, 7);
        let mut b = TokenBucket::new(rate, burst, t0);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = t0;
        let mut admitted = 0u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += Duration::from_micros(x % 3000);
            if b.take(now) {
                admitted += 1;
            }
            let bound = f64::from(burst) + rate * (now - t0).as_secs_f64();
            assert!(admitted as f64 <= bound + 1e-9, "{admitted} > {bound}");
        }
        assert!(admitted > 0);
    }

    #[test]
    fn many_tokens_are_taken_at_once_or_not_at_all() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 1000, t0);
        assert!(b.take_n(t0, 600));
        assert!(!b.take_n(t0, 600), "400 left: nothing taken");
        assert!(b.has(t0, 400) && !b.has(t0, 401));
        assert!(b.take_n(t0, 400));
        // One second later 100 came back; more than the burst never passes.
        let t1 = t0 + Duration::from_secs(1);
        assert!(!b.take_n(t1, 101) && b.take_n(t1, 100));
        assert!(!b.take_n(t0 + Duration::from_secs(3600), 1001));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 1, t0);
        assert!((0..10_000).all(|_| b.take(t0)));
    }

    #[test]
    fn the_nth_consecutive_failure_closes_and_success_resets() {
        let mut g = LoginGuard::new(3);
        assert!(!g.failed());
        assert!(!g.failed());
        g.succeeded();
        assert!(!g.failed());
        assert!(!g.failed());
        assert!(g.failed());
        let mut unlimited = LoginGuard::new(0);
        assert!((0..100).all(|_| !unlimited.failed()));
    }
}
