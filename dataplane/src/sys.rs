//! Thin, audited wrappers over the libc calls the drivers share: eventfd, sockaddr conversion,
//! CPU pinning. Every `unsafe` block states why it is sound.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Wakes a worker sleeping in epoll or io_uring when a command is queued.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative return is a fresh fd we now own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own fd. EAGAIN (counter saturated) still
        // leaves the fd readable, which is all a wake-up needs.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter so the next wake-up is seen.
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN just means nothing was pending.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A control message carrying `UDP_SEGMENT`, the segment size of a UDP GSO send, laid out as
/// `CMSG_SPACE(sizeof(u16))`: one per transmit slot, so a send can point at it until it
/// completes.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct SegmentCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    _pad: [u8; 6],
}

impl SegmentCmsg {
    pub(crate) fn new() -> Self {
        // SAFETY: plain C data; all-zero is valid.
        let mut c: SegmentCmsg = unsafe { mem::zeroed() };
        // SAFETY: CMSG_LEN only computes a length.
        c.hdr.cmsg_len = unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as u32) } as _;
        c.hdr.cmsg_level = libc::SOL_UDP;
        c.hdr.cmsg_type = libc::UDP_SEGMENT;
        c
    }

    /// Sets the segment size and makes `h` carry this control message.
    pub(crate) fn attach(&mut self, h: &mut libc::msghdr, size: usize) {
        self.size = size as u16;
        h.msg_control = (self as *mut SegmentCmsg).cast();
        h.msg_controllen = mem::size_of::<SegmentCmsg>() as _;
    }
}

/// Whether the kernel takes UDP GSO sends (`UDP_SEGMENT`, Linux 4.18+).
pub(crate) fn udp_gso_supported() -> bool {
    let Ok(sock) =
        std::net::UdpSocket::bind("127.0.0.1:0").or_else(|_| std::net::UdpSocket::bind("[::1]:0"))
    else {
        return false;
    };
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: reads at most `len` bytes into a live c_int.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_SEGMENT,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0
}

/// Writes `addr` into `storage`, returning the length to pass to the kernel.
#[inline]
pub(crate) fn write_sockaddr(
    addr: &SocketAddr,
    storage: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe {
                (storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe {
                (storage as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6)
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a socket address the kernel wrote (recvmsg's `msg_name`).
#[inline]
pub(crate) fn read_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    if name.len() >= mem::size_of::<libc::sockaddr_in>() {
        // SAFETY: the buffer holds at least a sockaddr_in; read_unaligned copes with any alignment.
        let family = unsafe { name.as_ptr().cast::<libc::sa_family_t>().read_unaligned() };
        if family == libc::AF_INET as libc::sa_family_t {
            // SAFETY: length checked above, family says it is a sockaddr_in.
            let sin = unsafe { name.as_ptr().cast::<libc::sockaddr_in>().read_unaligned() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            return Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )));
        }
        if family == libc::AF_INET6 as libc::sa_family_t
            && name.len() >= mem::size_of::<libc::sockaddr_in6>()
        {
            // SAFETY: length checked, family says it is a sockaddr_in6.
            let sin6 = unsafe { name.as_ptr().cast::<libc::sockaddr_in6>().read_unaligned() };
            return Some(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )));
        }
    }
    None
}

/// Pins the calling thread to one CPU. Failure is logged by the caller and is not fatal.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: CPU_SET writes inside the set; `cpu` is reduced modulo the set size.
    unsafe { libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set) };
    // SAFETY: passes a valid pointer to a cpu_set_t of the size given; 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft limit on open files to the hard limit: every leg holds two sockets, and
/// the usual soft default (1024) would cap a server at a few hundred calls. Returns the limit
/// now in force.
pub(crate) fn raise_fd_limit() -> io::Result<u64> {
    // SAFETY: rlimit is plain data, filled in by getrlimit.
    let mut lim: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: passes a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: passes a valid pointer to an rlimit; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let now = raise_fd_limit().unwrap();
        // SAFETY: as in raise_fd_limit.
        let mut lim: libc::rlimit = unsafe { mem::zeroed() };
        // SAFETY: valid pointer.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!((now, lim.rlim_cur), (lim.rlim_max, lim.rlim_max));
    }

    #[test]
    fn sockaddr_round_trips_v4_and_v6() {
        for addr in ["127.0.0.1:20000", "[::1]:40000"] {
            let addr: SocketAddr = addr.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut st: libc::sockaddr_storage = unsafe { mem::zeroed() };
            let len = write_sockaddr(&addr, &mut st);
            // SAFETY: viewing the storage's first `len` initialised bytes.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&st as *const libc::sockaddr_storage).cast::<u8>(),
                    len as usize,
                )
            };
            assert_eq!(read_sockaddr(bytes), Some(addr));
        }
    }

    #[test]
    fn eventfd_wakes_and_drains() {
        let e = EventFd::new().unwrap();
        e.wake();
        e.drain();
        e.drain();
    }
}
