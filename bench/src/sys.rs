//! The only module with `unsafe`: recvmmsg/sendmmsg batches, poll, CPU pinning, thread ids,
//! clock ticks and signals, each a thin wrapper over libc.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::Duration;

/// Datagrams per recvmmsg/sendmmsg call.
pub const BATCH: usize = 64;
/// Receive slot size: any UDP datagram over an Ethernet-sized MTU fits.
pub const SLOT: usize = 2048;
/// Most datagrams in one UDP GSO send (the kernel's limit is 64 or 128, by version).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one UDP GSO send: a 64 KiB IP packet, less headers.
const GSO_MAX_BYTES: usize = 65_000;

/// A control message carrying `UDP_SEGMENT` (the GSO segment size), laid out as
/// `CMSG_SPACE(sizeof(u16))`.
#[repr(C)]
#[derive(Clone, Copy)]
struct SegmentCmsg {
    hdr: libc::cmsghdr,
    size: u16,
    _pad: [u8; 6],
}

/// Binds a UDP socket and asks for big kernel buffers (bursts of a few thousand packets).
pub fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(addr)?;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // The FORCE variants need CAP_NET_ADMIN; the plain ones are capped by rmem_max/wmem_max.
        if setsockopt_int(sock.as_raw_fd(), force, buffer_bytes).is_err() {
            setsockopt_int(sock.as_raw_fd(), plain, buffer_bytes)?;
        }
    }
    Ok(sock)
}

fn setsockopt_int(fd: RawFd, opt: libc::c_int, value: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: `v` is a live c_int and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: CPU_SET only writes inside `set`; it ignores out-of-range cpus.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 = the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Lets the calling thread's timed waits end within `slack_ns` of their deadline (the default
/// 50 µs is coarse next to sub-millisecond pacing).
pub fn set_timer_slack(slack_ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes its argument by value.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack_ns as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Kernel id of the calling thread (for /proc/self/task/TID/stat).
pub fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

/// Clock ticks per second, the unit of utime/stime in /proc/PID/stat.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// Raises this process's soft limit on open files to its hard limit (children inherit it);
/// returns the soft limit in force afterwards.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the call fills.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= lim.rlim_max {
        return Ok(lim.rlim_cur);
    }
    // An unlimited hard limit is still capped by fs.nr_open (1 Mi by default).
    let want = libc::rlimit {
        rlim_cur: lim.rlim_max.min(1 << 20),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `want` is a live rlimit the call only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(want.rlim_cur)
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes no pointers; the pid is one we spawned.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits up to `timeout` (microsecond precision) for any of `socks` to become readable;
/// fills `ready` with one flag per socket.
pub fn poll_readable(
    socks: &[&UdpSocket],
    timeout: Duration,
    ready: &mut Vec<bool>,
) -> io::Result<()> {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a live array of `fds.len()` pollfds, `ts` a live timespec; no sigmask.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            ptr::null(),
        )
    };
    ready.clear();
    if rc < 0 {
        let e = io::Error::last_os_error();
        ready.resize(socks.len(), false);
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(e)
        };
    }
    ready.extend(fds.iter().map(|p| p.revents & libc::POLLIN != 0));
    Ok(())
}

fn write_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
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
            unsafe { ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn read_sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `BATCH` datagram slots with their addresses and the kernel headers pointing at them.
/// Pointers are rebuilt before every call, so the struct may move freely between calls.
pub struct MmsgBatch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    lens: Vec<usize>,
    /// Per queued datagram: the length of its address in `names`.
    namelens: Vec<libc::socklen_t>,
    /// Per send header: how many datagrams it carries (more than one with GSO).
    segments: Vec<usize>,
    cmsgs: Vec<SegmentCmsg>,
    /// Filled slots (received, or queued for sending).
    len: usize,
}

impl Default for MmsgBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MmsgBatch {
    pub fn new() -> Self {
        MmsgBatch {
            bufs: vec![0; BATCH * SLOT],
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C data; all-zero is valid
            // (null pointers are replaced before any call).
            names: vec![unsafe { mem::zeroed() }; BATCH],
            iovs: vec![unsafe { mem::zeroed() }; BATCH],
            hdrs: vec![unsafe { mem::zeroed() }; BATCH],
            lens: vec![0; BATCH],
            namelens: vec![0; BATCH],
            segments: vec![1; BATCH],
            // SAFETY: as above, plain C data.
            cmsgs: vec![unsafe { mem::zeroed() }; BATCH],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Slot `i`: source (after a receive) and bytes.
    pub fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        let start = i * SLOT;
        (
            read_sockaddr(&self.names[i]),
            &self.bufs[start..start + self.lens[i]],
        )
    }

    /// Slot `i`'s bytes, writable (to decrypt a received datagram in place).
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * SLOT;
        &mut self.bufs[start..start + self.lens[i]]
    }

    /// Changes the length of the datagram queued last (e.g. after protecting it in place).
    pub fn set_last_len(&mut self, len: usize) {
        assert!(self.len > 0 && len <= SLOT, "a datagram is queued");
        self.lens[self.len - 1] = len;
    }

    /// Drops the datagram queued last.
    pub fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    /// Queues a datagram of `len` bytes for `dest`; the caller writes it into the returned slot.
    /// The caller checks `is_full` first.
    pub fn push(&mut self, dest: SocketAddr, len: usize) -> &mut [u8] {
        assert!(
            self.len < BATCH && len <= SLOT,
            "caller checks is_full and the size"
        );
        let i = self.len;
        self.namelens[i] = write_sockaddr(dest, &mut self.names[i]);
        self.lens[i] = len;
        self.len += 1;
        &mut self.bufs[i * SLOT..i * SLOT + len]
    }

    /// Points every header at its slot; `receive` sizes the iovecs for a full slot.
    fn prepare(&mut self, count: usize, receive: bool) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..count {
            self.iovs[i] = libc::iovec {
                // SAFETY: i < BATCH, so the offset stays inside `bufs`.
                iov_base: unsafe { base.add(i * SLOT) }.cast(),
                iov_len: if receive { SLOT } else { self.lens[i] },
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = if receive {
                mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t
            } else {
                self.namelens[i]
            };
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
    }

    /// One recvmmsg of up to `BATCH` datagrams. `wait`: block (up to the socket's receive
    /// timeout) for the first one; otherwise return 0 at once when nothing is queued.
    pub fn recv(&mut self, sock: &UdpSocket, wait: bool) -> io::Result<usize> {
        self.prepare(BATCH, true);
        let flags = if wait {
            libc::MSG_WAITFORONE
        } else {
            libc::MSG_DONTWAIT
        };
        // SAFETY: headers point into buffers owned by `self`, which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            self.len = 0;
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::Interrupted
                | io::ErrorKind::TimedOut => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(SLOT);
            self.namelens[i] = self.hdrs[i].msg_hdr.msg_namelen;
        }
        self.len = n;
        Ok(n)
    }

    /// Sends the queued datagrams (sendmmsg) and empties the batch. Returns (sent, failed);
    /// datagrams the kernel refuses for lack of room are counted as failed, not retried.
    pub fn send(&mut self, sock: &UdpSocket, block: bool) -> (usize, usize) {
        let count = mem::take(&mut self.len);
        self.prepare(count, false);
        self.segments[..count].fill(1);
        self.send_headers(sock, count, block)
    }

    /// [`send`](Self::send) with UDP GSO: each run of consecutive datagrams of one size for
    /// one destination leaves in a single send with a `UDP_SEGMENT` control message, and
    /// the kernel splits it (on loopback, at the receiving socket). The wire carries the
    /// same datagrams; the sender saves a trip through the stack per datagram.
    pub fn send_segmented(&mut self, sock: &UdpSocket, block: bool) -> (usize, usize) {
        let count = mem::take(&mut self.len);
        self.prepare(count, false);
        let mut headers = 0;
        let mut first = 0;
        while first < count {
            let size = self.lens[first];
            let mut n = 1;
            while first + n < count
                && n < GSO_MAX_SEGMENTS
                && (n + 1) * size <= GSO_MAX_BYTES
                && self.lens[first + n] == size
                && self.same_dest(first, first + n)
            {
                n += 1;
            }
            // Header `headers` (≤ first) takes over slot `first`'s address and iovecs.
            let h = self.hdrs[first].msg_hdr;
            let out = &mut self.hdrs[headers];
            out.msg_hdr = h;
            out.msg_hdr.msg_iovlen = n;
            out.msg_len = 0;
            if n > 1 {
                let c = &mut self.cmsgs[headers];
                // SAFETY: CMSG_LEN only computes a length.
                c.hdr.cmsg_len = unsafe { libc::CMSG_LEN(mem::size_of::<u16>() as u32) } as _;
                c.hdr.cmsg_level = libc::SOL_UDP;
                c.hdr.cmsg_type = libc::UDP_SEGMENT;
                c.size = size as u16;
                out.msg_hdr.msg_control = (c as *mut SegmentCmsg).cast();
                out.msg_hdr.msg_controllen = mem::size_of::<SegmentCmsg>() as _;
            }
            self.segments[headers] = n;
            headers += 1;
            first += n;
        }
        self.send_headers(sock, headers, block)
    }

    fn same_dest(&self, a: usize, b: usize) -> bool {
        let len = self.namelens[a] as usize;
        if self.namelens[b] as usize != len {
            return false;
        }
        // SAFETY: both are initialised sockaddr_storage values; `len` ≤ their size.
        let bytes = |s: &libc::sockaddr_storage| unsafe {
            std::slice::from_raw_parts((s as *const libc::sockaddr_storage).cast::<u8>(), len)
        };
        bytes(&self.names[a]) == bytes(&self.names[b])
    }

    /// sendmmsg of the first `headers` prepared headers; counts datagrams, not headers.
    fn send_headers(&mut self, sock: &UdpSocket, headers: usize, block: bool) -> (usize, usize) {
        let flags = if block { 0 } else { libc::MSG_DONTWAIT };
        let (mut sent, mut failed) = (0, 0);
        let mut off = 0;
        while off < headers {
            // SAFETY: headers `off..headers` point into buffers owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    sock.as_raw_fd(),
                    self.hdrs[off..].as_mut_ptr(),
                    (headers - off) as libc::c_uint,
                    flags,
                )
            };
            let skipped = if n > 0 {
                let n = n as usize;
                sent += self.segments[off..off + n].iter().sum::<usize>();
                off += n;
                continue;
            } else if n == 0 {
                headers - off
            } else {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => 0,
                    io::ErrorKind::WouldBlock => headers - off,
                    // ENOBUFS, ECONNREFUSED (a stale ICMP error), ...: skip this header.
                    _ => 1,
                }
            };
            failed += self.segments[off..off + skipped].iter().sum::<usize>();
            off += skipped;
        }
        (sent, failed)
    }

    /// Sends every received datagram back to its source, in place (the reflector).
    pub fn reflect(&mut self, sock: &UdpSocket) -> (usize, usize) {
        self.send(sock, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips() {
        // SAFETY: plain C data.
        let mut s: libc::sockaddr_storage = unsafe { mem::zeroed() };
        for a in ["127.0.0.1:4000", "[::1]:5000"] {
            let a: SocketAddr = a.parse().unwrap();
            write_sockaddr(a, &mut s);
            assert_eq!(read_sockaddr(&s), Some(a));
        }
    }

    #[test]
    fn batch_sends_and_receives_and_reflects() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut tx = MmsgBatch::new();
        for i in 0..10u8 {
            tx.push(b.local_addr().unwrap(), 3)
                .copy_from_slice(&[i, i, i]);
        }
        assert_eq!(tx.send(&a, false), (10, 0));
        assert!(tx.is_empty());
        let mut rx = MmsgBatch::new();
        let mut got = 0;
        for _ in 0..10 {
            got += rx.recv(&b, true).unwrap();
            if got == 10 {
                break;
            }
        }
        assert_eq!(got, 10);
        let (src, data) = rx.get(rx.len() - 1);
        assert_eq!(src, Some(a.local_addr().unwrap()));
        assert_eq!(data.len(), 3);
        let n = rx.len();
        assert_eq!(rx.reflect(&b), (n, 0));
        assert!(rx.recv(&a, true).unwrap() > 0);
        assert_eq!(rx.get(0).0, Some(b.local_addr().unwrap()));
    }

    #[test]
    fn segmented_send_arrives_as_separate_datagrams() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let c = bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        // Runs: 5 × 100 B to b, 1 × 60 B to b, 3 × 100 B to c, 2 × 100 B to b.
        let plan: Vec<(&UdpSocket, usize)> = [(&b, 100); 5]
            .into_iter()
            .chain([(&b, 60)])
            .chain([(&c, 100); 3])
            .chain([(&b, 100); 2])
            .collect();
        let mut tx = MmsgBatch::new();
        for (i, (to, len)) in plan.iter().enumerate() {
            tx.push(to.local_addr().unwrap(), *len).fill(i as u8);
        }
        assert_eq!(tx.send_segmented(&a, false), (plan.len(), 0));
        let mut got = Vec::new();
        for sock in [&b, &c] {
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut rx = MmsgBatch::new();
            let want = plan
                .iter()
                .filter(|(to, _)| std::ptr::eq(*to, sock))
                .count();
            let mut n = 0;
            while n < want {
                let k = rx.recv(sock, true).unwrap();
                assert!(k > 0, "datagrams missing");
                for i in 0..k {
                    let (from, data) = rx.get(i);
                    assert_eq!(from, Some(a.local_addr().unwrap()));
                    assert!(data.iter().all(|&x| x == data[0]), "one datagram per slot");
                    got.push((data[0], data.len()));
                }
                n += k;
            }
        }
        got.sort();
        let want: Vec<(u8, usize)> = plan
            .iter()
            .enumerate()
            .map(|(i, (_, len))| (i as u8, *len))
            .collect();
        assert_eq!(got, want);
    }
}
