//! One raw socket per worker that sends every leg's IPv4 datagrams.
//!
//! Sent from its own leg's UDP socket, each datagram costs the kernel that socket: its file
//! looked up, its send path and its write-buffer accounting, cache misses all once there are
//! thousands of legs (at 9,000 calls `fget`, `sock_sendmsg`, `inet_send_prepare`,
//! `skb_set_owner_w` and `sock_wfree` took ≈ 0.9 µs of cpu 0 per packet). An `IPPROTO_RAW`
//! socket takes the IP and UDP headers from us, so one socket, always hot, can send for every
//! leg with each leg's own source address and port: the peer sees exactly what the leg's
//! socket would have sent. The driver writes the headers into the room `TxBatch` keeps before
//! every datagram ([`crate::batch::HEADROOM`]) and sends the frame to the destination.
//!
//! It needs CAP_NET_RAW, and CAP_NET_ADMIN for a send buffer past net.core.wmem_max; without
//! them, and for IPv6, for a leg bound to the unspecified address (the source would be the
//! kernel's choice, and the UDP checksum covers it), for multicast and broadcast, for runs the
//! kernel would segment with UDP GSO, and for datagrams larger than [`RAW_MAX_PAYLOAD`] (the
//! kernel never fragments a raw frame), the leg's socket sends.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

use crate::batch::HEADROOM;

/// Largest payload sent raw: like a GSO segment, it fits every path's MTU (1,200 bytes plus
/// headers is below IPv6's minimum of 1,280), where the leg's socket would fragment.
pub(crate) const RAW_MAX_PAYLOAD: usize = 1200;
/// What the kernel gives UDP sockets (net.ipv4.ip_default_ttl).
const TTL: u8 = 64;
/// The send buffer of the one socket that now sends for every leg.
const SEND_BUFFER: usize = 4 << 20;

const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const _: () = assert!(HEADROOM >= IPV4_HEADER + UDP_HEADER);

/// A worker's raw sending socket and the count of datagrams it was handed.
#[derive(Debug)]
pub(crate) struct RawSender {
    socket: Socket,
    sent: Arc<RawCounter>,
}

/// On its own cache line: each worker writes its own.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct RawCounter(AtomicU64);

impl RawCounter {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl RawSender {
    /// An `IPPROTO_RAW` socket (headers included), non-blocking, with a send buffer sized for
    /// every leg's traffic.
    pub(crate) fn open() -> io::Result<Self> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )?;
        socket.set_nonblocking(true)?;
        // One socket now holds what every leg's socket held in flight: without room past
        // net.core.wmem_max (CAP_NET_ADMIN) a busy round would find it full, and a full
        // socket drops, so the legs keep sending for themselves.
        force_send_buffer(&socket)?;
        Ok(RawSender {
            socket,
            sent: Arc::default(),
        })
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    pub(crate) fn counter(&self) -> Arc<RawCounter> {
        self.sent.clone()
    }

    /// Books `n` datagrams handed to the socket.
    #[inline]
    pub(crate) fn count(&self, n: u64) {
        let c = &self.sent.0;
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// The source and destination of a datagram of `len` bytes from a leg socket bound to
    /// `source`, if this socket can send it.
    #[inline]
    pub(crate) fn route(
        source: Option<SocketAddrV4>,
        dest: &SocketAddr,
        len: usize,
    ) -> Option<(SocketAddrV4, SocketAddrV4)> {
        match (source, dest) {
            // Multicast and broadcast keep the socket's own rules (TTL 1, SO_BROADCAST).
            (Some(src), SocketAddr::V4(dst))
                if len <= RAW_MAX_PAYLOAD
                    && !dst.ip().is_multicast()
                    && !dst.ip().is_broadcast() =>
            {
                Some((src, *dst))
            }
            _ => None,
        }
    }
}

fn force_send_buffer(socket: &Socket) -> io::Result<()> {
    let size = SEND_BUFFER as libc::c_int;
    // SAFETY: a valid socket and a c_int option value of the stated length.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The address a leg socket bound to `local` sends raw from: IPv4 and a specific address.
pub(crate) fn raw_source(local: SocketAddr) -> Option<SocketAddrV4> {
    match local {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(a),
        _ => None,
    }
}

/// Writes the IPv4 and UDP headers into the first `HEADROOM` bytes of `frame`, ahead of the
/// payload that fills the rest, and returns the frame (from the IP header on). The kernel
/// fills in the IP header checksum and, as the zero says, the identification.
pub(crate) fn write_headers(frame: &mut [u8], src: SocketAddrV4, dst: SocketAddrV4) -> &[u8] {
    let start = HEADROOM - IPV4_HEADER - UDP_HEADER;
    let frame = &mut frame[start..];
    let total = frame.len();
    let udp_len = (total - IPV4_HEADER) as u16;
    let ip = &mut frame[..IPV4_HEADER];
    ip[0] = 0x45; // version 4, 5 words
    ip[1] = 0; // DSCP/ECN, as a UDP socket sends by default
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].fill(0); // identification: the kernel's
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment, as PMTU discovery does
    ip[8] = TTL;
    ip[9] = libc::IPPROTO_UDP as u8;
    ip[10..12].fill(0); // header checksum: the kernel's
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let udp = &mut frame[IPV4_HEADER..IPV4_HEADER + UDP_HEADER];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].fill(0);
    // RFC 768: over the pseudo-header (addresses, protocol, length), header and payload;
    // the addresses sit at 12..20 of the IP header, right before the UDP header.
    let pseudo = u64::from(libc::IPPROTO_UDP as u8) + u64::from(udp_len);
    // A computed zero is sent as all ones: zero means "no checksum".
    let checksum = match !(fold(ones_sum(&frame[12..], pseudo)) as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[IPV4_HEADER + 6..IPV4_HEADER + 8].copy_from_slice(&checksum.to_be_bytes());
    frame
}

/// The one's-complement sum of `data` as big-endian 16-bit words (a last odd byte padded
/// with zero), plus `initial`, not yet folded to 16 bits.
fn ones_sum(data: &[u8], initial: u64) -> u64 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks(2);
    for w in &mut words {
        let hi = u64::from(w[0]) << 8;
        sum += hi | w.get(1).map_or(0, |&b| u64::from(b));
    }
    sum
}

/// Folds a wide one's-complement sum to 16 bits.
fn fold(mut sum: u64) -> u64 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, UdpSocket};

    /// The checksum of a packet with its checksum field filled in: zero when it is right.
    fn verify(frame: &[u8]) -> u16 {
        let udp_len = frame.len() - IPV4_HEADER;
        let pseudo = u64::from(libc::IPPROTO_UDP as u8) + udp_len as u64;
        !(fold(ones_sum(&frame[12..], pseudo)) as u16)
    }

    fn frame_for(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADROOM];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn headers_carry_the_legs_address_and_a_checksum_that_verifies() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40_000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 9), 5004);
        for len in [0, 1, 12, 13, 171, 172, 1200] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut f = frame_for(&payload);
            let out = write_headers(&mut f, src, dst).to_vec();
            assert_eq!(out.len(), IPV4_HEADER + UDP_HEADER + len);
            assert_eq!(out[0], 0x45);
            assert_eq!(u16::from_be_bytes([out[2], out[3]]) as usize, out.len());
            assert_eq!(out[9], 17);
            assert_eq!(&out[12..16], &[10, 0, 0, 1]);
            assert_eq!(&out[16..20], &[192, 168, 1, 9]);
            assert_eq!(u16::from_be_bytes([out[20], out[21]]), 40_000);
            assert_eq!(u16::from_be_bytes([out[22], out[23]]), 5004);
            assert_eq!(u16::from_be_bytes([out[24], out[25]]) as usize, 8 + len);
            assert_ne!(
                u16::from_be_bytes([out[26], out[27]]),
                0,
                "a checksum is sent"
            );
            assert_eq!(verify(&out), 0, "len {len}");
            assert_eq!(&out[28..], &payload[..]);
        }
    }

    #[test]
    fn checksum_matches_a_worked_example() {
        // 127.0.0.1:1 -> 127.0.0.1:2, payload "hi": the pseudo-header's words (addresses,
        // protocol, UDP length 10), the UDP header's (ports, length) and the payload's.
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let b = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2);
        let mut f = frame_for(b"hi");
        let out = write_headers(&mut f, a, b);
        let words: u64 = [0x7f00u64, 0x0001, 0x7f00, 0x0001, 0x0011, 0x000a]
            .iter()
            .chain(&[0x0001, 0x0002, 0x000a, 0x6869])
            .sum();
        let expected = !(fold(words) as u16);
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), expected);
    }

    #[test]
    fn only_ipv4_legs_with_an_address_and_small_datagrams_go_raw() {
        let v4 = SocketAddr::from(([127, 0, 0, 1], 4000));
        let v6 = SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 4000));
        let any = SocketAddr::from(([0, 0, 0, 0], 4000));
        assert!(raw_source(any).is_none());
        assert!(raw_source(v6).is_none());
        let src = raw_source(v4);
        assert!(src.is_some());
        assert!(RawSender::route(src, &v4, 172).is_some());
        assert!(RawSender::route(src, &v4, RAW_MAX_PAYLOAD + 1).is_none());
        assert!(RawSender::route(src, &v6, 172).is_none());
        assert!(RawSender::route(None, &v4, 172).is_none());
        for group in [[239, 1, 2, 3], [224, 0, 0, 1], [255, 255, 255, 255]] {
            let to = SocketAddr::from((group, 5004));
            assert!(RawSender::route(src, &to, 172).is_none(), "{to}");
        }
    }

    #[test]
    fn a_raw_frame_arrives_as_the_legs_own_datagram() {
        let Ok(raw) = RawSender::open() else {
            eprintln!("skipped: no CAP_NET_RAW for a raw socket");
            return;
        };
        let leg = UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) =
            (leg.local_addr().unwrap(), peer.local_addr().unwrap())
        else {
            unreachable!()
        };
        let mut f = frame_for(b"through the raw socket");
        let frame = write_headers(&mut f, src, dst);
        let to = socket2::SockAddr::from(SocketAddr::V4(dst));
        assert_eq!(raw.socket.send_to(frame, &to).unwrap(), frame.len());
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"through the raw socket");
        assert_eq!(
            from,
            SocketAddr::V4(src),
            "the peer sees the leg's address and port"
        );
    }
}
