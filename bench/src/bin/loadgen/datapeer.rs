//! A data-channel peer for `loadgen data`: str0m 0.25 (an independent WebRTC stack, the one
//! the tests play the browser with) over one non-blocking UDP socket on loopback, driven by
//! [`Driver`] in loadgen's own thread: full ICE (controlling against the ICE-lite server),
//! DTLS, SCTP and DCEP all in str0m.
//!
//! Messages carry a [`Stamp`] (magic, sender, sequence number, send time in ns since the
//! run's epoch) in their first [`STAMP_LEN`] bytes, so echo and relay are measured alike:
//! round trip for echo, publisher → listener for the relay. A message is stamped on arrival
//! with the time its datagram was read, before str0m handles it.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use sluice_bench::sys;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Bytes of the stamp at the start of each message.
pub const STAMP_LEN: usize = 24;
const MAGIC: u32 = 0x534c_4443; // "SLDC"
/// Kernel buffers per peer socket.
const SOCKET_BUFFER: usize = 1 << 20;
/// str0m's send buffer: well above what a 30 s run at the rates we offer leaves unacknowledged.
const SCTP_BUFFER: usize = 1 << 20;

/// What the first bytes of a message say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

impl Stamp {
    /// A message of `size` bytes (at least [`STAMP_LEN`]) starting with the stamp.
    pub fn message(&self, size: usize) -> Vec<u8> {
        let mut m = vec![0x5a; size.max(STAMP_LEN)];
        m[..4].copy_from_slice(&MAGIC.to_be_bytes());
        m[4..8].copy_from_slice(&self.sender.to_be_bytes());
        m[8..16].copy_from_slice(&self.seq.to_be_bytes());
        m[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
        m
    }

    pub fn read(m: &[u8]) -> Option<Stamp> {
        let m = m.get(..STAMP_LEN)?;
        let u32_at = |i: usize| u32::from_be_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) << 32 | u64::from(u32_at(i + 4));
        (u32_at(0) == MAGIC).then(|| Stamp {
            sender: u32_at(4),
            seq: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

/// One message that arrived: when its datagram was read (ns since the epoch) and its stamp
/// (`None`: not one of ours).
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub at_ns: u64,
    pub stamp: Option<Stamp>,
}

pub struct DataPeer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    next_timeout: Instant,
    epoch: Instant,
    connected: bool,
    failure: Option<String>,
    /// Our channel (offerer) or the first channel the server opened to us (answerer).
    pub channel: Option<ChannelId>,
    open: bool,
    arrivals: Vec<Arrival>,
    /// Arrival time of the datagram being handled.
    rx_ns: u64,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    /// Sends the kernel refused (its buffer full): str0m's SCTP retransmits them.
    pub send_failed: u64,
    buf: Vec<u8>,
}

impl DataPeer {
    /// A peer with one host candidate on a fresh loopback socket.
    pub fn new(epoch: Instant) -> anyhow::Result<DataPeer> {
        let mut rtc = Rtc::builder()
            .set_sctp_max_buffered_amount(SCTP_BUFFER)
            .build(Instant::now());
        let socket = sys::bind_udp("127.0.0.1:0".parse()?, SOCKET_BUFFER)?;
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let host = Candidate::host(local, "udp").map_err(|e| anyhow!("host candidate: {e}"))?;
        rtc.add_local_candidate(host)
            .context("str0m refused the loopback candidate")?;
        let mut p = DataPeer {
            rtc,
            socket,
            local,
            pending: None,
            next_timeout: Instant::now(),
            epoch,
            connected: false,
            failure: None,
            channel: None,
            open: false,
            arrivals: Vec::new(),
            rx_ns: 0,
            datagrams_in: 0,
            datagrams_out: 0,
            send_failed: 0,
            buf: vec![0; 2048],
        };
        p.drain();
        Ok(p)
    }

    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// An offer of data channels alone (one channel `label`, ordered and reliable), pending
    /// for [`DataPeer::accept_answer`].
    pub fn offer(&mut self, label: &str) -> String {
        let mut api = self.rtc.sdp_api();
        let channel = api.add_channel(label.to_owned());
        let (offer, pending) = api.apply().expect("a channel is a change");
        self.channel = Some(channel);
        self.pending = Some(pending);
        self.drain();
        offer.to_sdp_string()
    }

    pub fn accept_answer(&mut self, sdp: &str) -> anyhow::Result<()> {
        let pending = self.pending.take().context("no pending offer")?;
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| anyhow!("answer SDP: {e}"))?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| anyhow!("accept_answer: {e}"))?;
        self.drain();
        Ok(())
    }

    /// Answers the server's offer (a listener's).
    pub fn answer(&mut self, sdp: &str) -> anyhow::Result<String> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| anyhow!("offer SDP: {e}"))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| anyhow!("accept_offer: {e}"))?;
        self.drain();
        // str0m 0.25 arms no timer after accepting an offer of data channels alone: without
        // this nudge (a timeout at once, after the drain) ICE never starts (see
        // tests/webrtc_peer.rs).
        self.next_timeout = Instant::now();
        Ok(answer.to_sdp_string())
    }

    /// Connected and the channel open.
    pub fn ready(&self) -> bool {
        self.connected && self.open
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    pub fn next_timeout(&self) -> Instant {
        self.next_timeout
    }

    pub fn describe(&self) -> String {
        format!(
            "peer {} connected={} channel open={} failure={:?} datagrams in/out={}/{}",
            self.local,
            self.connected,
            self.open,
            self.failure,
            self.datagrams_in,
            self.datagrams_out
        )
    }

    /// Writes one message on the channel; false when it was not taken (not open, or str0m's
    /// buffer full).
    pub fn write(&mut self, data: &[u8]) -> bool {
        debug_assert!(!data.is_empty(), "str0m 0.25 mishandles an empty write");
        let Some(id) = self.channel.filter(|_| self.open) else {
            return false;
        };
        let Some(mut ch) = self.rtc.channel(id) else {
            return false;
        };
        let written = ch.write(true, data).unwrap_or(false);
        self.drain();
        written
    }

    /// Reads every datagram waiting on the socket, then fires str0m's timer if it is due.
    pub fn poll(&mut self) {
        while self.failure.is_none() {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, source)) => {
                    self.datagrams_in += 1;
                    self.rx_ns = self.epoch.elapsed().as_nanos() as u64;
                    let Ok(receive) =
                        Receive::new(Protocol::Udp, source, self.local, &self.buf[..n])
                    else {
                        continue;
                    };
                    let r = self
                        .rtc
                        .handle_input(Input::Receive(Instant::now(), receive));
                    self.after(r);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    self.fail(format!("UDP receive: {e}"));
                    break;
                }
            }
        }
        self.timeout(Instant::now());
    }

    /// Fires str0m's timer when it is due.
    pub fn timeout(&mut self, now: Instant) {
        if self.failure.is_none() && self.next_timeout <= now {
            let r = self.rtc.handle_input(Input::Timeout(now));
            self.after(r);
        }
    }

    /// Messages that arrived since the last call.
    pub fn take_arrivals(&mut self, into: &mut Vec<Arrival>) {
        into.append(&mut self.arrivals);
    }

    fn after(&mut self, r: Result<(), str0m::RtcError>) {
        match r {
            Ok(()) => self.drain(),
            Err(e) => self.fail(format!("handle_input: {e}")),
        }
    }

    fn fail(&mut self, why: String) {
        self.failure.get_or_insert(why);
    }

    fn drain(&mut self) {
        while self.failure.is_none() {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.next_timeout = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    self.datagrams_out += 1;
                    if self.socket.send_to(&t.contents, t.destination).is_err() {
                        self.send_failed += 1;
                    }
                }
                Ok(Output::Event(e)) => self.event(e),
                Err(e) => self.fail(format!("poll_output: {e}")),
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Connected => self.connected = true,
            Event::ChannelOpen(id, _) => {
                if self.channel.is_none() {
                    self.channel = Some(id);
                }
                if self.channel == Some(id) {
                    self.open = true;
                }
            }
            Event::ChannelClose(id) if self.channel == Some(id) => self.open = false,
            Event::ChannelData(d) => self.arrivals.push(Arrival {
                at_ns: self.rx_ns,
                stamp: Stamp::read(&d.data),
            }),
            _ => {}
        }
    }
}

/// Drives `peers` (poll on all sockets, str0m timers) until `done` holds; fails after
/// `within` or when a peer fails.
pub fn drive_until(
    peers: &mut [DataPeer],
    within: Duration,
    what: &str,
    mut done: impl FnMut(&[DataPeer]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut ready = Vec::new();
    loop {
        if done(peers) {
            return Ok(());
        }
        if let Some(p) = peers.iter().find(|p| p.failure.is_some()) {
            bail!("{what}: {}", p.describe());
        }
        let now = Instant::now();
        if now >= deadline {
            let stuck: Vec<String> = peers
                .iter()
                .filter(|p| !p.ready())
                .take(3)
                .map(DataPeer::describe)
                .collect();
            bail!("{what}: not done within {within:?}; e.g. {stuck:?}");
        }
        wait(peers, now, Duration::from_millis(5), &mut ready)?;
        for (p, r) in peers.iter_mut().zip(&ready) {
            if *r {
                p.poll();
            } else {
                p.timeout(Instant::now());
            }
        }
    }
}

/// Waits until a socket is readable, a peer's timer is due, or `max` has passed.
pub fn wait(
    peers: &[DataPeer],
    now: Instant,
    max: Duration,
    ready: &mut Vec<bool>,
) -> anyhow::Result<()> {
    let next = peers
        .iter()
        .map(DataPeer::next_timeout)
        .min()
        .unwrap_or(now + max);
    let timeout = next.saturating_duration_since(now).min(max);
    let socks: Vec<&UdpSocket> = peers.iter().map(DataPeer::socket).collect();
    sys::poll_readable(&socks, timeout, ready).context("poll")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let s = Stamp {
            sender: 7,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        let m = s.message(1024);
        assert_eq!(m.len(), 1024);
        assert_eq!(Stamp::read(&m), Some(s));
        assert_eq!(s.message(3).len(), STAMP_LEN);
        assert_eq!(Stamp::read(&m[..20]), None);
        assert_eq!(Stamp::read(b"hello, not a stamp at all"), None);
    }
}
