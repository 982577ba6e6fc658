//! Raw sockets (one per address family and worker) that send every leg's datagrams.
//!
//! Sent from its own leg's UDP socket, each datagram costs the kernel that socket: its file
//! looked up, its send path and its write-buffer accounting, cache misses all once there are
//! thousands of legs (at 9,000 calls `fget`, `sock_sendmsg`, `inet_send_prepare`,
//! `skb_set_owner_w` and `sock_wfree` took ≈ 0.9 µs of cpu 0 per packet). An `IPPROTO_RAW`
//! socket takes the IP and UDP headers from us, so one socket, always hot, can send for every
//! leg with each leg's own source address and port: the peer sees exactly what the leg's
//! socket would have sent. The driver writes the headers into the room `TxBatch` keeps before
//! every datagram ([`crate::batch::HEADROOM`]) and sends the frame to the destination.
//! IPv6 works the same way (an `IPPROTO_RAW` socket of that family includes headers too).
//!
//! It needs CAP_NET_RAW, and CAP_NET_ADMIN for a send buffer past net.core.wmem_max; without
//! them, and for a leg bound to the unspecified address (the source would be the kernel's
//! choice, and the UDP checksum covers it), for multicast, broadcast, IPv6 link-local and
//! IPv4-mapped destinations, for runs the kernel would segment with UDP GSO, and for
//! datagrams larger than [`RAW_MAX_PAYLOAD`] (the kernel never fragments a raw frame), the
//! leg's socket sends; so it does on io_uring before Linux 6.0, whose send takes no
//! destination.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

use crate::batch::HEADROOM;

/// Largest payload sent raw: like a GSO segment, it fits every path's MTU (1,200 bytes plus
/// headers is below IPv6's minimum of 1,280), where the leg's socket would fragment.
pub(crate) const RAW_MAX_PAYLOAD: usize = 1200;
/// What the kernel gives UDP sockets (net.ipv4.ip_default_ttl, net.ipv6.conf.*.hop_limit).
const TTL: u8 = 64;
/// The send buffer of each raw socket, which sends for every leg of its worker and family.
const SEND_BUFFER: usize = 4 << 20;

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const UDP_HEADER: usize = 8;
const _: () = assert!(HEADROOM >= IPV6_HEADER + UDP_HEADER);

/// A worker's raw sending sockets and the count of datagrams they were handed.
#[derive(Debug)]
pub(crate) struct RawSender {
    v4: Socket,
    /// `None` where the host has no IPv6.
    v6: Option<Socket>,
    sent: Arc<RawCounter>,
}

/// Where a datagram leaves through a raw socket: from its leg's address to its destination,
/// both of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RawRoute {
    V4 {
        src: SocketAddrV4,
        dst: SocketAddrV4,
    },
    V6 {
        src: SocketAddrV6,
        dst: SocketAddrV6,
    },
}

impl RawRoute {
    /// The address to hand the kernel: the destination with port 0 (an IPv6 raw socket reads
    /// the port as the protocol; an IPv4 one ignores it).
    pub(crate) fn to(&self) -> SocketAddr {
        match self {
            RawRoute::V4 { dst, .. } => SocketAddr::new(IpAddr::V4(*dst.ip()), 0),
            RawRoute::V6 { dst, .. } => SocketAddr::new(IpAddr::V6(*dst.ip()), 0),
        }
    }
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
    /// `IPPROTO_RAW` sockets (headers included), non-blocking, with a send buffer sized for
    /// every leg's traffic: IPv4 or nothing, IPv6 where the host has it.
    pub(crate) fn open() -> io::Result<Self> {
        let v4 = raw_socket(Domain::IPV4)?;
        let v6 = raw_socket(Domain::IPV6).ok();
        Ok(RawSender {
            v4,
            v6,
            sent: Arc::default(),
        })
    }

    /// The socket for `route`'s family, if there is one.
    #[inline]
    pub(crate) fn fd(&self, route: &RawRoute) -> Option<RawFd> {
        match route {
            RawRoute::V4 { .. } => Some(self.v4.as_raw_fd()),
            RawRoute::V6 { .. } => self.v6.as_ref().map(AsRawFd::as_raw_fd),
        }
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

    /// How a datagram of `len` bytes from a leg socket bound to `source` leaves raw, if it can:
    /// the family has a socket, and the destination is one the leg's socket would treat
    /// plainly (multicast, broadcast, link-local scopes and IPv4-mapped addresses keep the
    /// socket's own rules).
    #[inline]
    pub(crate) fn route(
        &self,
        source: Option<SocketAddr>,
        dest: &SocketAddr,
        len: usize,
    ) -> Option<RawRoute> {
        let src = source?;
        if len > RAW_MAX_PAYLOAD {
            return None;
        }
        match (src, *dest) {
            (SocketAddr::V4(src), SocketAddr::V4(dst))
                if !dst.ip().is_multicast() && !dst.ip().is_broadcast() =>
            {
                Some(RawRoute::V4 { src, dst })
            }
            (SocketAddr::V6(src), SocketAddr::V6(dst))
                if self.v6.is_some()
                    && !dst.ip().is_multicast()
                    && !dst.ip().is_unicast_link_local()
                    && dst.ip().to_ipv4_mapped().is_none() =>
            {
                Some(RawRoute::V6 { src, dst })
            }
            _ => None,
        }
    }
}

fn raw_socket(domain: Domain) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
    socket.set_nonblocking(true)?;
    // One socket now holds what every leg's socket held in flight: without room past
    // net.core.wmem_max (CAP_NET_ADMIN) a busy round would find it full, and a full socket
    // drops, so the legs keep sending for themselves.
    force_send_buffer(&socket)?;
    Ok(socket)
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

/// The address a leg socket bound to `local` sends raw from: a specific address, not the
/// unspecified one (nor, for IPv6, a link-local one, whose scope the socket keeps).
pub(crate) fn raw_source(local: SocketAddr) -> Option<SocketAddr> {
    match local.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => Some(local),
        IpAddr::V6(ip) if !ip.is_unspecified() && !ip.is_unicast_link_local() => Some(local),
        _ => None,
    }
}

/// Writes the IP and UDP headers of `route` into the first `HEADROOM` bytes of `frame`, ahead
/// of the payload that fills the rest, and returns the frame (from the IP header on). For
/// IPv4 the kernel fills in the header checksum and, as the zero says, the identification.
pub(crate) fn write_headers<'a>(frame: &'a mut [u8], route: &RawRoute) -> &'a [u8] {
    let (ip_header, src_port, dst_port) = match route {
        RawRoute::V4 { src, dst } => (IPV4_HEADER, src.port(), dst.port()),
        RawRoute::V6 { src, dst } => (IPV6_HEADER, src.port(), dst.port()),
    };
    let frame = &mut frame[HEADROOM - ip_header - UDP_HEADER..];
    let total = frame.len();
    let udp_len = (total - ip_header) as u16;
    // Where the pseudo-header's addresses sit in the IP header, right before the UDP header.
    let addresses = match route {
        RawRoute::V4 { src, dst } => {
            let ip = &mut frame[..IPV4_HEADER];
            ip[0] = 0x45; // version 4, 5 words
            ip[1] = 0; // DSCP/ECN, as a UDP socket sends by default
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip[4..6].fill(0); // identification: the kernel's
            // Don't fragment, as PMTU discovery does for a UDP socket.
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
            ip[8] = TTL;
            ip[9] = libc::IPPROTO_UDP as u8;
            ip[10..12].fill(0); // header checksum: the kernel's
            ip[12..16].copy_from_slice(&src.ip().octets());
            ip[16..20].copy_from_slice(&dst.ip().octets());
            12
        }
        RawRoute::V6 { src, dst } => {
            let ip = &mut frame[..IPV6_HEADER];
            ip[0..4].copy_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, no class or label
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = libc::IPPROTO_UDP as u8;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&src.ip().octets());
            ip[24..40].copy_from_slice(&dst.ip().octets());
            8
        }
    };
    let udp = &mut frame[ip_header..ip_header + UDP_HEADER];
    udp[0..2].copy_from_slice(&src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].fill(0);
    // RFC 768 / RFC 8200 8.1: over the pseudo-header (addresses, protocol, UDP length),
    // header and payload. A computed zero is sent as all ones: zero means "no checksum".
    let pseudo = u64::from(libc::IPPROTO_UDP as u8) + u64::from(udp_len);
    let checksum = match !(fold(ones_sum(&frame[addresses..], pseudo)) as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[ip_header + 6..ip_header + 8].copy_from_slice(&checksum.to_be_bytes());
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
    use std::net::UdpSocket;

    /// The checksum of a frame with its checksum field filled in: zero when it is right.
    fn verify(frame: &[u8], ip_header: usize, addresses: usize) -> u16 {
        let udp_len = frame.len() - ip_header;
        let pseudo = u64::from(libc::IPPROTO_UDP as u8) + udp_len as u64;
        !(fold(ones_sum(&frame[addresses..], pseudo)) as u16)
    }

    fn frame_for(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; HEADROOM];
        f.extend_from_slice(payload);
        f
    }

    fn route(src: &str, dst: &str) -> RawRoute {
        match (src.parse().unwrap(), dst.parse().unwrap()) {
            (SocketAddr::V4(src), SocketAddr::V4(dst)) => RawRoute::V4 { src, dst },
            (SocketAddr::V6(src), SocketAddr::V6(dst)) => RawRoute::V6 { src, dst },
            _ => panic!("one family in a test route"),
        }
    }

    #[test]
    fn ipv4_headers_carry_the_legs_address_and_a_checksum_that_verifies() {
        let r = route("10.0.0.1:40000", "192.168.1.9:5004");
        for len in [0, 1, 12, 13, 171, 172, 1200] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut f = frame_for(&payload);
            let out = write_headers(&mut f, &r).to_vec();
            assert_eq!(out.len(), IPV4_HEADER + UDP_HEADER + len);
            assert_eq!(out[0], 0x45);
            assert_eq!(u16::from_be_bytes([out[2], out[3]]) as usize, out.len());
            assert_eq!(out[9], 17);
            assert_eq!(&out[12..16], &[10, 0, 0, 1]);
            assert_eq!(&out[16..20], &[192, 168, 1, 9]);
            assert_eq!(u16::from_be_bytes([out[20], out[21]]), 40_000);
            assert_eq!(u16::from_be_bytes([out[22], out[23]]), 5004);
            assert_eq!(u16::from_be_bytes([out[24], out[25]]) as usize, 8 + len);
            let sent = u16::from_be_bytes([out[26], out[27]]);
            assert_ne!(sent, 0, "a checksum is sent");
            assert_eq!(verify(&out, IPV4_HEADER, 12), 0, "len {len}");
            assert_eq!(&out[28..], &payload[..]);
        }
    }

    #[test]
    fn ipv6_headers_carry_the_legs_address_and_a_checksum_that_verifies() {
        let r = route("[2001:db8::1]:40000", "[2001:db8::9]:5004");
        for len in [0, 1, 13, 172, 1200] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 5 + 1) as u8).collect();
            let mut f = frame_for(&payload);
            let out = write_headers(&mut f, &r).to_vec();
            assert_eq!(out.len(), IPV6_HEADER + UDP_HEADER + len);
            assert_eq!(out[0] >> 4, 6);
            assert_eq!(u16::from_be_bytes([out[4], out[5]]) as usize, 8 + len);
            assert_eq!((out[6], out[7]), (17, TTL));
            assert_eq!(&out[8..10], &[0x20, 0x01]);
            assert_eq!(out[23], 1);
            assert_eq!(out[39], 9);
            assert_eq!(u16::from_be_bytes([out[40], out[41]]), 40_000);
            assert_eq!(u16::from_be_bytes([out[42], out[43]]), 5004);
            assert_eq!(u16::from_be_bytes([out[44], out[45]]) as usize, 8 + len);
            assert_ne!(u16::from_be_bytes([out[46], out[47]]), 0);
            assert_eq!(verify(&out, IPV6_HEADER, 8), 0, "len {len}");
            assert_eq!(&out[48..], &payload[..]);
        }
    }

    #[test]
    fn checksum_matches_a_worked_example() {
        // 127.0.0.1:1 -> 127.0.0.1:2, payload "hi": the pseudo-header's words (addresses,
        // protocol, UDP length 10), the UDP header's (ports, length) and the payload's.
        let mut f = frame_for(b"hi");
        let out = write_headers(&mut f, &route("127.0.0.1:1", "127.0.0.1:2"));
        let words: u64 = [0x7f00u64, 0x0001, 0x7f00, 0x0001, 0x0011, 0x000a]
            .iter()
            .chain(&[0x0001, 0x0002, 0x000a, 0x6869])
            .sum();
        let expected = !(fold(words) as u16);
        assert_eq!(u16::from_be_bytes([out[26], out[27]]), expected);
    }

    #[test]
    fn only_plain_unicast_from_a_specific_address_and_small_datagrams_go_raw() {
        let Ok(raw) = RawSender::open() else {
            eprintln!("skipped: no raw socket here (needs CAP_NET_RAW + CAP_NET_ADMIN)");
            return;
        };
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        for unspecified in ["0.0.0.0:4000", "[::]:4000", "[fe80::1]:4000"] {
            assert!(raw_source(a(unspecified)).is_none(), "{unspecified}");
        }
        let v4 = raw_source(a("127.0.0.1:4000"));
        let route = raw
            .route(v4, &a("127.0.0.1:5000"), 172)
            .expect("plain unicast");
        assert_eq!(route.to(), a("127.0.0.1:0"));
        assert!(
            raw.route(v4, &a("127.0.0.1:5000"), RAW_MAX_PAYLOAD + 1)
                .is_none()
        );
        assert!(
            raw.route(v4, &a("[::1]:5000"), 172).is_none(),
            "families differ"
        );
        assert!(raw.route(None, &a("127.0.0.1:5000"), 172).is_none());
        for group in ["239.1.2.3:5004", "224.0.0.1:5004", "255.255.255.255:5004"] {
            assert!(raw.route(v4, &a(group), 172).is_none(), "{group}");
        }
        let v6 = raw_source(a("[::1]:4000"));
        if raw.v6.is_some() {
            assert!(raw.route(v6, &a("[::1]:5000"), 172).is_some());
        }
        for odd in [
            "[ff02::1]:5004",
            "[fe80::2]:5004",
            "[::ffff:127.0.0.1]:5004",
        ] {
            assert!(raw.route(v6, &a(odd), 172).is_none(), "{odd}");
        }
    }

    /// A frame written here and sent raw arrives at a plain UDP socket as the leg's own
    /// datagram: the kernel found the headers and the checksum right.
    fn arrives_as_the_legs_own(ip: &str) {
        let Ok(raw) = RawSender::open() else {
            eprintln!("skipped: no raw socket here (needs CAP_NET_RAW + CAP_NET_ADMIN)");
            return;
        };
        let (Ok(leg), Ok(peer)) = (UdpSocket::bind((ip, 0)), UdpSocket::bind((ip, 0))) else {
            eprintln!("skipped: no loopback for {ip}");
            return;
        };
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (src, dst) = (leg.local_addr().unwrap(), peer.local_addr().unwrap());
        let Some(route) = raw.route(raw_source(src), &dst, 22) else {
            eprintln!("skipped: no raw socket for {ip}");
            return;
        };
        let mut f = frame_for(b"through the raw socket");
        let frame = write_headers(&mut f, &route);
        let fd = raw.fd(&route).expect("a socket for the family");
        // SAFETY: `fd` is the raw socket's; the buffer and address are live locals.
        let sent = unsafe {
            let to = socket2::SockAddr::from(route.to());
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                to.as_ptr().cast(),
                to.len(),
            )
        };
        assert_eq!(sent, frame.len() as isize, "{}", io::Error::last_os_error());
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"through the raw socket");
        assert_eq!(from, src, "the peer sees the leg's address and port");
    }

    #[test]
    fn a_raw_ipv4_frame_arrives_as_the_legs_own_datagram() {
        arrives_as_the_legs_own("127.0.0.1");
    }

    #[test]
    fn a_raw_ipv6_frame_arrives_as_the_legs_own_datagram() {
        arrives_as_the_legs_own("::1");
    }
}
