//! [`SrtpContext`]: one direction of one leg, with per-SSRC packet-index state.

use std::fmt;

use super::replay::ReplayWindow;
use super::transform::{RTCP_CLEAR, Session};
use super::{MasterKey, Profile, SrtpError};

/// SSRCs one context tracks: a leg carries a handful (audio, video, RTX, simulcast layers);
/// the cap bounds what an authenticated but hostile peer can make us hold.
pub const MAX_STREAMS: usize = 64;
/// Largest SRTCP index (31 bits, RFC 3711 §3.4).
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;
/// Fixed RTP header (RFC 3550 §5.1).
const RTP_FIXED: usize = 12;

/// Per-SSRC state.
#[derive(Clone, Copy, Debug)]
struct Stream {
    ssrc: u32,
    /// SRTP indexes sent or received.
    rtp: ReplayWindow,
    /// SRTCP indexes received.
    rtcp: ReplayWindow,
    /// Next SRTCP index to send: starts at 0 (RFC 3711 §3.3.2).
    rtcp_next: u32,
}

impl Stream {
    fn new(ssrc: u32) -> Stream {
        Stream {
            ssrc,
            rtp: ReplayWindow::default(),
            rtcp: ReplayWindow::default(),
            rtcp_next: 0,
        }
    }
}

/// SRTP/SRTCP state for one direction of one leg: use a context either to protect (with
/// [`SessionKeys::local`](super::SessionKeys)) or to unprotect (with `remote`), never both,
/// since both directions under one key would reuse keystream.
///
/// Every method works in the caller's buffer and allocates only when a new SSRC is first
/// seen (after it authenticated, when unprotecting). After an `Err` the buffer's contents are
/// unspecified (a failed GCM open may have decrypted in place): drop the packet.
pub struct SrtpContext {
    profile: Profile,
    rtp: Session,
    rtcp: Session,
    streams: Vec<Stream>,
    /// Index into `streams` of the last SSRC used: packets come in runs of one SSRC.
    last: usize,
    allow_repeat_tx: bool,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Asks the CPU for what protecting the next packet reads (the context, its streams'
    /// counters): a fanout calls it a few listeners ahead.
    #[inline]
    pub(crate) fn prefetch(&self) {
        let base = (self as *const Self).cast::<u8>();
        crate::forwarder::prefetch(base);
        crate::forwarder::prefetch(base.wrapping_add(64));
        crate::forwarder::prefetch(self.streams.as_ptr().cast());
    }

    /// Derives the SRTP and SRTCP session keys from `master` (RFC 3711 §4.3, rate 0).
    pub fn new(master: &MasterKey) -> Result<SrtpContext, SrtpError> {
        Ok(SrtpContext {
            profile: master.profile,
            rtp: Session::new(master, false)?,
            rtcp: Session::new(master, true)?,
            streams: Vec::with_capacity(4),
            last: 0,
            allow_repeat_tx: false,
        })
    }

    /// A context over session keys given directly, as RFC 3711 B.2 and RFC 7714 §16-17 do.
    #[cfg(test)]
    pub(super) fn from_sessions(profile: Profile, rtp: Session, rtcp: Session) -> SrtpContext {
        SrtpContext {
            profile,
            rtp,
            rtcp,
            streams: Vec::new(),
            last: 0,
            allow_repeat_tx: false,
        }
    }

    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// By default protecting an RTP packet whose index was already sent (or is older than the
    /// replay window) fails with [`SrtpError::Replayed`]: under GCM a reused nonce with a
    /// different payload leaks the authentication key. Allow it only for retransmissions of
    /// byte-identical packets (RFC 4588 without RTX), which then encrypt identically.
    pub fn set_allow_repeat_tx(&mut self, allow: bool) {
        self.allow_repeat_tx = allow;
    }

    /// Encrypts the RTP packet in `buf[..len]` in place and appends the tag; `buf` needs
    /// [`Profile::rtp_overhead`] spare bytes after `len`. Returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let header = rtp_header_len(packet)?;
        let (seq, ssrc) = rtp_seq_ssrc(packet);
        if buf.len() < len + self.profile.rtp_overhead() {
            return Err(SrtpError::BufferTooSmall);
        }
        let slot = self.slot_or_insert(ssrc)?;
        let window = &mut self.streams[slot].rtp;
        let index = window.estimate_rtp(seq)?;
        if !self.allow_repeat_tx {
            window.check(index)?;
        }
        let out = self.rtp.protect_rtp(buf, header, len, ssrc, index)?;
        window.update(index);
        Ok(out)
    }

    /// Authenticates the SRTP packet filling `buf`, checks replay, and decrypts in place.
    /// Returns the RTP length (the tag is dropped). A new SSRC gets state only once a packet
    /// of it authenticates.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag = self.profile.tag_len();
        if buf.len() < RTP_FIXED + tag {
            return Err(SrtpError::TooShort);
        }
        let header = rtp_header_len(&buf[..buf.len() - tag])?;
        let (seq, ssrc) = rtp_seq_ssrc(buf);
        let slot = self.slot(ssrc)?;
        let mut window = slot.map_or_else(ReplayWindow::default, |i| self.streams[i].rtp);
        let index = window.estimate_rtp(seq)?;
        window.check(index)?;
        let out = self.rtp.unprotect_rtp(buf, header, ssrc, index)?;
        window.update(index);
        self.store(slot, ssrc, |s| s.rtp = window);
        Ok(out)
    }

    /// Encrypts the (compound) RTCP packet in `buf[..len]` in place and appends the SRTCP
    /// index (E flag set) and tag; `buf` needs [`Profile::rtcp_overhead`] spare bytes.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let packet = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let ssrc = rtcp_ssrc(packet)?;
        if buf.len() < len + self.profile.rtcp_overhead() {
            return Err(SrtpError::BufferTooSmall);
        }
        let slot = self.slot_or_insert(ssrc)?;
        let index = self.streams[slot].rtcp_next;
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let out = self.rtcp.protect_rtcp(buf, len, ssrc, index)?;
        self.streams[slot].rtcp_next = index + 1;
        Ok(out)
    }

    /// Authenticates the SRTCP packet filling `buf`, checks replay, and decrypts in place if
    /// its E flag is set. Returns the RTCP length (index and tag dropped).
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        if buf.len() < RTCP_CLEAR + self.profile.rtcp_overhead() {
            return Err(SrtpError::TooShort);
        }
        let ssrc = rtcp_ssrc(buf)?;
        let at = self.rtcp.srtcp_index_at(buf.len());
        let word = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let index = u64::from(word & MAX_SRTCP_INDEX);
        let slot = self.slot(ssrc)?;
        let mut window = slot.map_or_else(ReplayWindow::default, |i| self.streams[i].rtcp);
        window.check(index)?;
        let out = self.rtcp.unprotect_rtcp(buf, ssrc, word)?;
        window.update(index);
        self.store(slot, ssrc, |s| s.rtcp = window);
        Ok(out)
    }

    /// Where `ssrc`'s state is, if it has any; `Err` if it has none and there is no room.
    fn slot(&mut self, ssrc: u32) -> Result<Option<usize>, SrtpError> {
        if self.streams.get(self.last).is_some_and(|s| s.ssrc == ssrc) {
            return Ok(Some(self.last));
        }
        match self.streams.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => {
                self.last = i;
                Ok(Some(i))
            }
            None if self.streams.len() >= MAX_STREAMS => Err(SrtpError::TooManyStreams),
            None => Ok(None),
        }
    }

    fn slot_or_insert(&mut self, ssrc: u32) -> Result<usize, SrtpError> {
        match self.slot(ssrc)? {
            Some(i) => Ok(i),
            None => {
                self.streams.push(Stream::new(ssrc));
                self.last = self.streams.len() - 1;
                Ok(self.last)
            }
        }
    }

    /// Writes back state for `ssrc` after a packet authenticated.
    fn store(&mut self, slot: Option<usize>, ssrc: u32, set: impl FnOnce(&mut Stream)) {
        match slot {
            Some(i) => set(&mut self.streams[i]),
            None => {
                let mut stream = Stream::new(ssrc);
                set(&mut stream);
                self.streams.push(stream);
                self.last = self.streams.len() - 1;
            }
        }
    }

    /// Test hook: RFC 7714's SRTCP vectors start at index 0x5d4.
    #[cfg(test)]
    pub(super) fn set_srtcp_index(&mut self, ssrc: u32, index: u32) {
        let slot = self.slot_or_insert(ssrc).expect("room for one stream");
        self.streams[slot].rtcp_next = index;
    }

    #[cfg(test)]
    pub(super) fn rtp_highest(&self, ssrc: u32) -> Option<u64> {
        let stream = self.streams.iter().find(|s| s.ssrc == ssrc)?;
        stream.rtp.highest()
    }
}

/// RTP header length including CSRCs and the header extension (RFC 3550 §5.1, §5.3.1).
fn rtp_header_len(packet: &[u8]) -> Result<usize, SrtpError> {
    if packet.len() < RTP_FIXED {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    crate::packet::rtp_header_len(packet).ok_or(SrtpError::Malformed)
}

/// Sequence number and SSRC of a packet at least `RTP_FIXED` long.
fn rtp_seq_ssrc(packet: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([packet[2], packet[3]]),
        u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
    )
}

/// Sender SSRC of the first packet of a compound RTCP packet (RFC 3550 §6.4).
fn rtcp_ssrc(packet: &[u8]) -> Result<u32, SrtpError> {
    if packet.len() < RTCP_CLEAR {
        return Err(SrtpError::TooShort);
    }
    if packet[0] >> 6 != 2 {
        return Err(SrtpError::Malformed);
    }
    Ok(u32::from_be_bytes([
        packet[4], packet[5], packet[6], packet[7],
    ]))
}
