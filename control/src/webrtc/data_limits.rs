//! The limits on one session's data channels (`--data-*` settings). Each overflow is a
//! counted drop, never a wait: a message too large, beyond the channel count, beyond the
//! bytes queued towards a slow peer, or beyond the per-second rates is dropped and counted
//! in the association's [`super::sctp::SctpStats`].

use std::time::Instant;

use crate::limits::TokenBucket;

/// What we advertise in `a=max-message-size` and accept by default (RFC 8841 §6).
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 65_536;
/// Channels one session carries by default.
pub const DEFAULT_MAX_CHANNELS: usize = 16;
/// Bytes queued towards one peer (not yet acknowledged) by default.
pub const DEFAULT_MAX_BUFFERED: usize = 256 * 1024;
/// Messages per second a peer may send by default ...
pub const DEFAULT_RATE: f64 = 1000.0;
/// ... and at once.
pub const DEFAULT_BURST: u32 = 2000;
/// Bytes per second a peer may send by default (8 MB/s).
pub const DEFAULT_BYTES_RATE: u64 = 8_000_000;

/// The data-channel limits of every session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataLimits {
    /// Advertised in `a=max-message-size`; a larger message from the peer is dropped.
    pub max_message_size: u32,
    /// Open channels per session: a peer's OPEN beyond it is refused (its stream reset,
    /// RFC 8832 §6), as is a mirror the server would open.
    pub max_channels: usize,
    /// Bytes queued towards the peer beyond which a message to it is dropped: a slow or
    /// vanished peer loses messages instead of growing our memory or stalling its source.
    pub max_buffered: usize,
    /// Messages per second the peer may send; 0 = unlimited.
    pub rate: f64,
    /// Messages the peer may send at once before `rate` applies (at least 1).
    pub burst: u32,
    /// Bytes per second the peer may send; 0 = unlimited.
    pub bytes_rate: u64,
}

impl Default for DataLimits {
    fn default() -> Self {
        DataLimits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_channels: DEFAULT_MAX_CHANNELS,
            max_buffered: DEFAULT_MAX_BUFFERED,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            bytes_rate: DEFAULT_BYTES_RATE,
        }
    }
}

/// Which rate refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDrop {
    Messages,
    Bytes,
}

/// The per-session rates on what the peer sends: messages per second (with a burst) and
/// bytes per second (with a burst of one second's worth, and at least one largest message,
/// so that every message of an accepted size can pass).
#[derive(Debug, Clone)]
pub struct DataRate {
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl DataRate {
    pub fn new(limits: &DataLimits, now: Instant) -> Self {
        let byte_burst = limits
            .bytes_rate
            .max(u64::from(limits.max_message_size))
            .min(u64::from(u32::MAX));
        DataRate {
            messages: TokenBucket::new(limits.rate, limits.burst, now),
            bytes: TokenBucket::new(
                limits.bytes_rate as f64,
                u32::try_from(byte_burst).unwrap_or(u32::MAX),
                now,
            ),
        }
    }

    /// Admits one message of `len` bytes at `now`, or says which rate refuses it (then
    /// nothing is taken from either).
    pub fn admit(&mut self, now: Instant, len: usize) -> Result<(), RateDrop> {
        if !self.messages.has(now, 1) {
            return Err(RateDrop::Messages);
        }
        if !self.bytes.take_n(now, len as u64) {
            return Err(RateDrop::Bytes);
        }
        self.messages.take(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn limits(rate: f64, burst: u32, bytes_rate: u64) -> DataLimits {
        DataLimits {
            max_message_size: 1000,
            rate,
            burst,
            bytes_rate,
            ..DataLimits::default()
        }
    }

    #[test]
    fn a_burst_passes_then_exactly_the_excess_is_refused() {
        let t0 = Instant::now();
        let mut r = DataRate::new(&limits(0.001, 5, 0), t0);
        let refused = (0..8).filter(|_| r.admit(t0, 10).is_err()).count();
        assert_eq!(refused, 3);
        assert_eq!(r.admit(t0, 0), Err(RateDrop::Messages));
    }

    #[test]
    fn messages_come_back_at_the_rate() {
        let t0 = Instant::now();
        let mut r = DataRate::new(&limits(10.0, 1, 0), t0);
        assert!(r.admit(t0, 1).is_ok());
        assert_eq!(r.admit(t0, 1), Err(RateDrop::Messages));
        assert!(r.admit(t0 + Duration::from_millis(100), 1).is_ok());
    }

    #[test]
    fn bytes_are_limited_and_a_refused_message_takes_no_message_token() {
        let t0 = Instant::now();
        // 2000 bytes/s: the burst is one second's worth.
        let mut r = DataRate::new(&limits(0.001, 3, 2000), t0);
        assert!(r.admit(t0, 1000).is_ok());
        assert!(r.admit(t0, 1000).is_ok());
        assert_eq!(r.admit(t0, 1), Err(RateDrop::Bytes));
        // Half a second brings 1000 bytes back; the third message token was kept.
        let t1 = t0 + Duration::from_millis(500);
        assert!(r.admit(t1, 1000).is_ok());
        assert_eq!(r.admit(t1, 0), Err(RateDrop::Messages));
    }

    #[test]
    fn a_byte_rate_below_the_message_size_still_passes_one_message() {
        let t0 = Instant::now();
        let mut r = DataRate::new(&limits(0.0, 1, 10), t0);
        assert!(
            r.admit(t0, 1000).is_ok(),
            "the burst holds one largest message"
        );
        assert_eq!(r.admit(t0, 1000), Err(RateDrop::Bytes));
    }

    #[test]
    fn zero_rates_are_unlimited() {
        let t0 = Instant::now();
        let mut r = DataRate::new(&limits(0.0, 1, 0), t0);
        assert!((0..10_000).all(|_| r.admit(t0, 1000).is_ok()));
    }
}
