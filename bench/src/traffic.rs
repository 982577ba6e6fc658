//! The load itself: one thread, pinned, that sends paced RTP (small bursts every 100 µs,
//! sendmmsg, with UDP GSO for each stream's packets of a burst) and between bursts receives (ppoll + recvmmsg) what comes back. Each packet
//! carries its run, stream, sequence number and send time in the payload, so any forwarding
//! that keeps the payload (echo, SFU fanout, a reflector) is measured the same way. A
//! [`Transform`] (SRTP in `srtp-echo`) protects each packet after the probe is written and
//! unprotects each reply before it is read.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::hist::Histogram;
use crate::procstat::CpuSource;
use crate::sys::{self, MmsgBatch};

/// Tag of the next `run`.
static NEXT_RUN: AtomicU32 = AtomicU32::new(1);
/// Marks our probes in the payload.
const MAGIC: [u8; 4] = *b"SLLG";
const RTP_HEADER: usize = 12;
/// RTP header + magic + run (u32) + stream (u32) + sequence (u64) + send time (u64).
pub const MIN_SIZE: usize = RTP_HEADER + 4 + 4 + 4 + 8 + 8;
/// The largest UDP payload that fits a 1500-byte IPv4 packet.
pub const MAX_SIZE: usize = 1472;
/// Pacing period: every tick sends what is due since the start. Short, so that replies do not
/// queue behind a long burst of our own sends (which would count as latency).
const TICK: Duration = Duration::from_micros(100);
/// How long past `duration` a generator that fell behind may keep sending.
const CATCH_UP: Duration = Duration::from_millis(100);
/// Upper bound of one burst: a generator that fell behind catches up in steps, and replies
/// are read between them rather than queueing up (which would count as latency).
const MAX_BURST: u64 = 512;
/// recvmmsg calls per readable socket before polling again.
const RECV_ROUNDS: usize = 32;
/// Poll timeout while only waiting for the last replies.
const POLL_IDLE: Duration = Duration::from_millis(10);
/// RTP timestamp step per packet: 20 ms at 8 kHz.
const TS_STEP: u32 = 160;

/// What [`Transform::unprotect`] made of a received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unprotected {
    /// A media packet, now `len` bytes of plain RTP at the start of the buffer.
    Media(usize),
    /// Not media (STUN, DTLS, RTCP): counted as stray.
    Other,
    /// Media that failed to authenticate or was refused (replay).
    Failed,
}

/// Per-stream packet protection applied by the generator thread, e.g. SRTP with one context
/// per stream and direction.
pub trait Transform: Send {
    /// Bytes `protect` appends to each packet.
    fn overhead(&self) -> usize;
    /// Protects the RTP packet `buf[..len]` of `stream` in place (`buf` holds `overhead`
    /// more bytes); returns the wire length, `None` if it cannot be sent.
    ///
    /// The transform owns the RTP sequence number: it rewrites bytes 2..4 so that a stream's
    /// numbers keep increasing across runs (the warm-up, then the measurement), as SRTP's
    /// replay protection requires on both ends.
    fn protect(&mut self, stream: usize, buf: &mut [u8], len: usize) -> Option<usize>;
    /// Unprotects a datagram received on `socket` (an index into `recv`) in place.
    fn unprotect(&mut self, socket: usize, buf: &mut [u8]) -> Unprotected;
}

/// One stream: where its packets go and which of our sockets sends them.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub dest: SocketAddr,
    pub socket: usize,
}

#[derive(Clone, Debug)]
pub struct Load {
    /// Packets per second over all targets.
    pub rate: u64,
    pub size: usize,
    pub duration: Duration,
    /// How long to keep receiving after the last send.
    pub drain: Duration,
    /// Packets expected back per packet sent (1 for echo, N for an N-listener fanout).
    pub copies: u64,
    /// CPU the generator and receiver threads are pinned to.
    pub cpu: Option<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub sent: u64,
    /// Packets the kernel refused to send (buffer full): never counted as sent.
    pub send_failed: u64,
    pub received: u64,
    /// Datagrams that were not this run's probes (RTCP, late replies to the warm-up).
    pub stray: u64,
    /// Time from the first to the last send.
    pub send_time: Duration,
    /// One-way-plus-back latency per received probe, nanoseconds.
    pub latency: Histogram,
    /// CPU time of the generator thread itself.
    pub own_cpu_ns: Option<u64>,
    /// Packets the transform would not protect (never sent, not counted as sent).
    pub protect_failed: u64,
    /// Received media that failed to unprotect (not counted as received).
    pub unprotect_failed: u64,
    /// Streams (targets) of which at least one probe came back.
    pub streams_seen: usize,
}

impl Outcome {
    pub fn expected(&self, copies: u64) -> u64 {
        self.sent * copies
    }

    /// Offered packets per second actually achieved by the generator.
    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.send_time.as_secs_f64().max(1e-9)
    }

    /// Whether the generator fell behind the requested rate (then it, not the target, limits).
    pub fn generator_limited(&self, rate: u64) -> bool {
        self.offered_pps() < 0.97 * rate as f64
    }

    pub fn delivered_pps(&self) -> f64 {
        self.received as f64 / self.send_time.as_secs_f64().max(1e-9)
    }

    pub fn loss_pct(&self, copies: u64) -> f64 {
        let expected = self.expected(copies);
        if expected == 0 {
            return 0.0;
        }
        100.0 * expected.saturating_sub(self.received) as f64 / expected as f64
    }
}

/// The fields the receiver reads back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Which `run` sent it: late replies to an earlier run (the warm-up) are not counted.
    pub run: u32,
    pub stream: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Writes an RTP packet (PCMU, marker clear) carrying `probe` into `out` (at least MIN_SIZE).
pub fn write_probe(out: &mut [u8], rtp_seq: u16, ssrc: u32, p: Probe) {
    let ts = (p.seq as u32).wrapping_mul(TS_STEP);
    out[0] = 0x80;
    out[1] = 0;
    out[2..4].copy_from_slice(&rtp_seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let b = &mut out[RTP_HEADER..];
    b[..4].copy_from_slice(&MAGIC);
    b[4..8].copy_from_slice(&p.run.to_be_bytes());
    b[8..12].copy_from_slice(&p.stream.to_be_bytes());
    b[12..20].copy_from_slice(&p.seq.to_be_bytes());
    b[20..28].copy_from_slice(&p.sent_ns.to_be_bytes());
    b[28..].fill(0xd5); // PCMU silence
}

/// Reads a probe back; `None` for anything that is not one (RTCP, stray traffic). The RTP
/// header may have been rewritten on the way; only the payload is trusted.
pub fn read_probe(data: &[u8]) -> Option<Probe> {
    if data.len() < MIN_SIZE || data[0] >> 6 != 2 || data[RTP_HEADER..RTP_HEADER + 4] != MAGIC {
        return None;
    }
    let b = &data[RTP_HEADER..];
    Some(Probe {
        run: u32::from_be_bytes(b[4..8].try_into().ok()?),
        stream: u32::from_be_bytes(b[8..12].try_into().ok()?),
        seq: u64::from_be_bytes(b[12..20].try_into().ok()?),
        sent_ns: u64::from_be_bytes(b[20..28].try_into().ok()?),
    })
}

/// Sends at `load.rate` from `send` sockets to `targets` (round robin) and receives on `recv`
/// sockets until everything is back or `load.drain` after the last send.
///
/// One thread does both, pinned to `load.cpu`: between bursts it waits in poll for the
/// replies, so a reply is stamped as soon as it arrives and no second thread competes for
/// the core.
pub fn run(send: &[UdpSocket], recv: &[UdpSocket], targets: &[Target], load: &Load) -> Outcome {
    run_with(send, recv, targets, load, None)
}

/// [`run`] with every packet going through `transform` (protect before sending, unprotect
/// after receiving). Its cost lands on the generator's own CPU, not the target's.
pub fn run_with(
    send: &[UdpSocket],
    recv: &[UdpSocket],
    targets: &[Target],
    load: &Load,
    transform: Option<&mut dyn Transform>,
) -> Outcome {
    assert!(!targets.is_empty() && targets.iter().all(|t| t.socket < send.len()));
    assert!((MIN_SIZE..=MAX_SIZE).contains(&load.size));
    thread::scope(|s| {
        s.spawn(|| {
            if let Some(cpu) = load.cpu
                && let Err(e) = sys::pin_current_thread(cpu)
            {
                eprintln!("loadgen: could not pin to cpu {cpu}: {e}");
            }
            let _ = sys::set_timer_slack(1_000);
            let clock = CpuSource::OwnThread(sys::gettid());
            let cpu0 = clock.cpu_ns().ok();
            let mut out = Run::new(send, recv, targets, load, transform).go();
            out.own_cpu_ns = cpu0
                .zip(clock.cpu_ns().ok())
                .map(|(a, b)| b.saturating_sub(a));
            out
        })
        .join()
        .unwrap_or_default()
    })
}

/// The state of one `run`.
struct Run<'a, 't> {
    send: &'a [UdpSocket],
    recv: Vec<&'a UdpSocket>,
    targets: &'a [Target],
    load: &'a Load,
    transform: Option<&'t mut dyn Transform>,
    tx: Vec<MmsgBatch>,
    rx: MmsgBatch,
    rtp_seq: Vec<u16>,
    /// Per stream: whether any of its probes came back.
    seen: Vec<bool>,
    /// This run's tag in every probe.
    id: u32,
    /// Packets handed to the kernel or refused by it.
    attempted: u64,
    start: Instant,
    out: Outcome,
}

impl<'a, 't> Run<'a, 't> {
    fn new(
        send: &'a [UdpSocket],
        recv: &'a [UdpSocket],
        targets: &'a [Target],
        load: &'a Load,
        transform: Option<&'t mut dyn Transform>,
    ) -> Self {
        Run {
            send,
            recv: recv.iter().collect(),
            targets,
            load,
            transform,
            tx: send.iter().map(|_| MmsgBatch::new()).collect(),
            rx: MmsgBatch::new(),
            rtp_seq: vec![0; targets.len()],
            seen: vec![false; targets.len()],
            id: NEXT_RUN.fetch_add(1, Ordering::Relaxed),
            attempted: 0,
            start: Instant::now(),
            out: Outcome::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn go(mut self) -> Outcome {
        let total = (self.load.rate as f64 * self.load.duration.as_secs_f64()) as u64;
        // A generator that fell behind gets this long to catch up, then stops regardless.
        let send_until = self.load.duration + CATCH_UP;
        let hard_stop = self.load.duration * 2 + self.load.drain + Duration::from_secs(5);
        let mut next_tick = Duration::ZERO;
        let mut done_at: Option<Duration> = None;
        let mut ready = Vec::new();
        loop {
            let now = self.start.elapsed();
            let wait = match done_at {
                None if self.attempted >= total || now >= send_until => {
                    self.out.send_time = now;
                    done_at = Some(now);
                    Duration::ZERO
                }
                None if now >= next_tick => {
                    let due = if now >= self.load.duration {
                        total
                    } else {
                        ((self.load.rate as f64 * now.as_secs_f64()) as u64).min(total)
                    };
                    self.burst(due.saturating_sub(self.attempted).min(MAX_BURST));
                    // Behind schedule: the next tick is now, and the burst size catches up.
                    next_tick = (next_tick + TICK).max(now);
                    Duration::ZERO
                }
                None => next_tick - now,
                Some(done) => {
                    let expected = self.out.expected(self.load.copies);
                    if self.out.received >= expected
                        || now >= done + self.load.drain
                        || now >= hard_stop
                    {
                        break;
                    }
                    POLL_IDLE.min(done + self.load.drain - now)
                }
            };
            if sys::poll_readable(&self.recv, wait, &mut ready).is_err() {
                break;
            }
            for (socket, _) in ready.iter().enumerate().filter(|(_, r)| **r) {
                self.receive(socket);
            }
        }
        self.out
    }

    /// Queues `n` packets round robin over the targets and sends them, batch by batch.
    fn burst(&mut self, n: u64) {
        for _ in 0..n {
            let stream = (self.attempted % self.targets.len() as u64) as usize;
            let t = self.targets[stream];
            if self.tx[t.socket].is_full() {
                self.flush(t.socket);
            }
            let probe = Probe {
                run: self.id,
                stream: stream as u32,
                seq: self.attempted,
                sent_ns: self.now_ns(),
            };
            let ssrc = 0x5100_0000 + stream as u32;
            let size = self.load.size;
            let overhead = self.transform.as_ref().map_or(0, |t| t.overhead());
            let slot = self.tx[t.socket].push(t.dest, size + overhead);
            write_probe(slot, self.rtp_seq[stream], ssrc, probe);
            self.rtp_seq[stream] = self.rtp_seq[stream].wrapping_add(1);
            self.attempted += 1;
            if let Some(tr) = self.transform.as_deref_mut() {
                match tr.protect(stream, slot, size) {
                    Some(n) => self.tx[t.socket].set_last_len(n),
                    None => {
                        self.tx[t.socket].pop();
                        self.out.protect_failed += 1;
                    }
                }
            }
        }
        for socket in 0..self.send.len() {
            if !self.tx[socket].is_empty() {
                self.flush(socket);
            }
        }
    }

    fn flush(&mut self, socket: usize) {
        // GSO: the generator's own cost per packet drops, so at one stream it can offer more
        // than a forwarder can take (without it, it tops out near the reflector's maximum).
        let (ok, refused) = self.tx[socket].send_segmented(&self.send[socket], false);
        self.out.sent += ok as u64;
        self.out.send_failed += refused as u64;
    }

    fn receive(&mut self, socket: usize) {
        for _ in 0..RECV_ROUNDS {
            let n = self.rx.recv(self.recv[socket], false).unwrap_or(0);
            let now = self.now_ns();
            for i in 0..n {
                let data = self.rx.get_mut(i);
                let data = match self.transform.as_deref_mut() {
                    None => data,
                    Some(tr) => match tr.unprotect(socket, data) {
                        Unprotected::Media(len) => &data[..len],
                        Unprotected::Other => {
                            self.out.stray += 1;
                            continue;
                        }
                        Unprotected::Failed => {
                            self.out.unprotect_failed += 1;
                            continue;
                        }
                    },
                };
                match read_probe(data) {
                    Some(p) if p.run == self.id => {
                        self.out.received += 1;
                        if let Some(seen) = self.seen.get_mut(p.stream as usize)
                            && !*seen
                        {
                            *seen = true;
                            self.out.streams_seen += 1;
                        }
                        self.out.latency.record(now.saturating_sub(p.sent_ns));
                    }
                    _ => self.out.stray += 1,
                }
            }
            if n < sys::BATCH {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips_and_survives_header_rewrite() {
        let mut buf = vec![0u8; 172];
        let p = Probe {
            run: 9,
            stream: 3,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        write_probe(&mut buf, 7, 0xdead_beef, p);
        assert_eq!(buf[0], 0x80);
        buf[8..12].copy_from_slice(&[1, 2, 3, 4]); // an SFU rewrites the SSRC
        assert_eq!(read_probe(&buf), Some(p));
        assert_eq!(read_probe(&buf[..MIN_SIZE - 1]), None);
        buf[RTP_HEADER] = b'X';
        assert_eq!(read_probe(&buf), None);
    }

    #[test]
    fn loopback_self_send_is_counted_with_latency() {
        let a = sys::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let b = sys::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let targets = [Target {
            dest: b.local_addr().unwrap(),
            socket: 0,
        }];
        let load = Load {
            rate: 5_000,
            size: 172,
            duration: Duration::from_millis(200),
            drain: Duration::from_millis(200),
            copies: 1,
            cpu: None,
        };
        let out = run(
            std::slice::from_ref(&a),
            std::slice::from_ref(&b),
            &targets,
            &load,
        );
        assert_eq!(out.sent + out.send_failed, 1_000);
        assert_eq!(
            out.received, out.sent,
            "loopback to an idle socket loses nothing"
        );
        assert_eq!(out.latency.count(), out.received);
        assert!(out.latency.quantile(0.5) > 0);
        assert_eq!(out.loss_pct(1), 0.0);
        assert_eq!(out.streams_seen, 1);
    }
}
