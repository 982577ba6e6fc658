//! Port steering: every datagram for a worker's media ports lands on ONE socket of that
//! worker, whatever leg it is for, through a BPF `sk_lookup` program (Linux 5.9+, needs
//! CAP_NET_ADMIN and CAP_BPF).
//!
//! Why: with one socket per leg, the kernel wakes and runs a receive per socket, so at 100
//! calls nearly every datagram costs its own wake-up and task-work item, and at 10,000 calls
//! each one also misses the cache on its socket. A single receive socket per worker takes
//! them in batches, as a one-socket reflector does. Legs keep their own sockets: they hold
//! the port (nothing else can bind it), send with it as their source, and still receive
//! whatever is not steered, so steering is only ever an optimisation.
//!
//! The program, built here instruction by instruction, does per UDP datagram to the media
//! address: `worker = ports[local_port]` (an array map, 0 = not ours), then assigns the
//! datagram to `sockets[worker - 1]` (a sockmap). The worker learns the leg from the
//! original destination port (`IP_ORIGDSTADDR` / `IPV6_ORIGDSTADDR` control message).

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer of a worker's steering socket: it takes all of the worker's traffic.
const STEER_BUFFER: usize = 16 << 20;
/// Entries in the port map: every UDP port.
const PORTS: u32 = 1 << 16;

// bpf(2) commands, map and program types (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_SOCKMAP: u32 = 15;
const BPF_PROG_TYPE_SK_LOOKUP: u32 = 30;
const BPF_SK_LOOKUP: u32 = 36;

/// `struct bpf_sk_lookup` field offsets.
const CTX_FAMILY: i16 = 8;
const CTX_PROTOCOL: i16 = 12;
const CTX_LOCAL_IP4: i16 = 40;
const CTX_LOCAL_IP6: i16 = 44;
const CTX_LOCAL_PORT: i16 = 60;

// Helper ids.
const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_SK_RELEASE: i32 = 86;
const FN_SK_ASSIGN: i32 = 124;
const SK_PASS: i32 = 1;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes used below (class | op | source).
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const LDX_W: u8 = 0x61;
const STX_W: u8 = 0x63;
const JNE32_K: u8 = 0x56;
const JEQ_K: u8 = 0x15;
const JEQ32_K: u8 = 0x16;
const JLT32_K: u8 = 0xa6;
const JGT32_K: u8 = 0x26;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const LD_IMM64: u8 = 0x18;
const PSEUDO_MAP_FD: u8 = 1;

/// A program being assembled, with forward jumps to one label ("pass") patched at the end.
struct Asm {
    code: Vec<Insn>,
    to_pass: Vec<usize>,
}

impl Asm {
    fn op(&mut self, i: Insn) {
        self.code.push(i);
    }

    /// `if dst <op> imm goto pass`.
    fn jump_to_pass(&mut self, code: u8, dst: u8, imm: i32) {
        self.to_pass.push(self.code.len());
        self.op(insn(code, dst, 0, 0, imm));
    }

    /// `r0 = map_lookup_elem(map, r10 + key)`, then `if r0 == NULL goto pass`: the key is
    /// the u32 already stored at stack offset `key`.
    fn lookup_or_pass(&mut self, map: RawFd, key: i32) {
        self.op(insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, map));
        self.op(insn(0, 0, 0, 0, 0));
        self.op(insn(MOV64_X, 2, 10, 0, 0));
        self.op(insn(ADD64_K, 2, 0, 0, key));
        self.op(insn(CALL, 0, 0, 0, FN_MAP_LOOKUP_ELEM));
        self.jump_to_pass(JEQ_K, 0, 0);
    }

    fn finish(mut self) -> Vec<Insn> {
        let pass = self.code.len();
        for at in self.to_pass {
            self.code[at].off = (pass - at - 1) as i16;
        }
        self.code.push(insn(MOV64_K, 0, 0, 0, SK_PASS));
        self.code.push(insn(EXIT, 0, 0, 0, 0));
        self.code
    }
}

/// The sk_lookup program for media address `ip` (any local address if unspecified) and the
/// media ports `range`.
fn program(ip: IpAddr, range: (u16, u16), ports: RawFd, sockets: RawFd) -> Vec<Insn> {
    let mut a = Asm {
        code: Vec::new(),
        to_pass: Vec::new(),
    };
    a.op(insn(MOV64_X, 6, 1, 0, 0)); // r6 = ctx
    a.op(insn(LDX_W, 2, 6, CTX_PROTOCOL, 0));
    a.jump_to_pass(JNE32_K, 2, libc::IPPROTO_UDP);
    if !ip.is_unspecified() {
        // Addresses are in network order in the context, as in `octets()`.
        let (family, words): (i32, Vec<[u8; 4]>) = match ip {
            IpAddr::V4(v4) => (libc::AF_INET, vec![v4.octets()]),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let words = o.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
                (libc::AF_INET6, words)
            }
        };
        a.op(insn(LDX_W, 2, 6, CTX_FAMILY, 0));
        a.jump_to_pass(JNE32_K, 2, family);
        let base = if family == libc::AF_INET {
            CTX_LOCAL_IP4
        } else {
            CTX_LOCAL_IP6
        };
        for (i, w) in words.iter().enumerate() {
            a.op(insn(LDX_W, 2, 6, base + 4 * i as i16, 0));
            a.jump_to_pass(JNE32_K, 2, i32::from_ne_bytes(*w));
        }
    }
    // Every datagram to this host runs the program: others leave before the map lookup.
    a.op(insn(LDX_W, 2, 6, CTX_LOCAL_PORT, 0));
    a.jump_to_pass(JLT32_K, 2, i32::from(range.0));
    a.jump_to_pass(JGT32_K, 2, i32::from(range.1));
    // worker + 1 = ports[local_port]
    a.op(insn(STX_W, 10, 2, -4, 0));
    a.lookup_or_pass(ports, -4);
    a.op(insn(LDX_W, 2, 0, 0, 0));
    a.jump_to_pass(JEQ32_K, 2, 0);
    a.op(insn(ADD64_K, 2, 0, 0, -1));
    a.op(insn(STX_W, 10, 2, -8, 0));
    // sk = sockets[worker]; assign; release
    a.lookup_or_pass(sockets, -8);
    a.op(insn(MOV64_X, 7, 0, 0, 0));
    a.op(insn(MOV64_X, 1, 6, 0, 0));
    a.op(insn(MOV64_X, 2, 7, 0, 0));
    a.op(insn(MOV64_K, 3, 0, 0, 0));
    // A refused assignment (say, an IPv4 datagram and an IPv6 socket) leaves the datagram
    // to the ordinary lookup: the leg's own socket.
    a.op(insn(CALL, 0, 0, 0, FN_SK_ASSIGN));
    a.op(insn(MOV64_X, 1, 7, 0, 0));
    a.op(insn(CALL, 0, 0, 0, FN_SK_RELEASE));
    a.finish()
}

/// `union bpf_attr`, as bytes: every command's fields are written at their offsets.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }

    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// bpf(2); a new descriptor for the commands that return one.
    fn call(&mut self, cmd: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: `self` is a zero-padded bpf_attr the size we pass; the kernel reads (and for
        // some commands writes) only within it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                mem::size_of::<Attr>() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }

    fn call_fd(&mut self, cmd: libc::c_long) -> io::Result<OwnedFd> {
        let fd = self.call(cmd)?;
        // SAFETY: the command returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

fn map_create(kind: u32, value_size: u32, entries: u32) -> io::Result<OwnedFd> {
    Attr::new()
        .u32(0, kind)
        .u32(4, 4)
        .u32(8, value_size)
        .u32(12, entries)
        .call_fd(BPF_MAP_CREATE)
}

fn map_update<V>(map: &OwnedFd, key: u32, value: &V) -> io::Result<()> {
    Attr::new()
        .u32(0, map.as_raw_fd() as u32)
        .u64(8, &key as *const u32 as u64)
        .u64(16, value as *const V as u64)
        .call(BPF_MAP_UPDATE_ELEM)
        .map(drop)
}

#[repr(align(64))]
struct Counter(AtomicU64);

/// The loaded and attached program with its two maps; dropping it detaches the program.
pub(crate) struct Steering {
    ports: OwnedFd,
    sockets: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    ip: IpAddr,
    /// Per worker: datagrams its steering socket delivered (written by that worker only, on
    /// a cache line of its own: it is bumped per datagram).
    steered: Box<[Counter]>,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering").field("ip", &self.ip).finish()
    }
}

impl Steering {
    /// Loads the program for `workers` workers on media address `ip` and ports `range`, and
    /// attaches it to this network namespace. Fails without privileges, or on kernels
    /// without sk_lookup.
    pub(crate) fn attach(ip: IpAddr, range: (u16, u16), workers: usize) -> io::Result<Steering> {
        let ports = map_create(BPF_MAP_TYPE_ARRAY, 4, PORTS)?;
        let sockets = map_create(BPF_MAP_TYPE_SOCKMAP, 8, workers.max(1) as u32)?;
        let code = program(ip, range, ports.as_raw_fd(), sockets.as_raw_fd());
        let license = c"GPL";
        let mut attr = Attr::new();
        attr.u32(0, BPF_PROG_TYPE_SK_LOOKUP)
            .u32(4, code.len() as u32)
            .u64(8, code.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(68, BPF_SK_LOOKUP);
        attr.0[48..54].copy_from_slice(b"sluice");
        let prog = attr.call_fd(BPF_PROG_LOAD)?;
        let netns = std::fs::File::open("/proc/self/ns/net")?;
        let link = Attr::new()
            .u32(0, prog.as_raw_fd() as u32)
            .u32(4, netns.as_raw_fd() as u32)
            .u32(8, BPF_SK_LOOKUP)
            .call_fd(BPF_LINK_CREATE)?;
        Ok(Steering {
            ports,
            sockets,
            _prog: prog,
            _link: link,
            ip,
            steered: (0..workers.max(1))
                .map(|_| Counter(AtomicU64::new(0)))
                .collect(),
        })
    }

    /// Books `n` more datagrams delivered by worker `worker`'s steering socket (called by
    /// that worker only: a relaxed load and store).
    fn count(&self, worker: usize, n: u64) {
        if let Some(Counter(c)) = self.steered.get(worker) {
            c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        }
    }

    /// Datagrams delivered through steering so far, all workers.
    pub(crate) fn steered(&self) -> u64 {
        self.steered
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// Binds worker `worker`'s receiving socket (media address, any port), asks for the
    /// original destination of each datagram, and makes it the target for that worker.
    fn worker_socket(&self, worker: usize) -> io::Result<UdpSocket> {
        let addr = SocketAddr::new(self.ip, 0);
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        // It holds every leg's backlog during a stall: past net.core.rmem_max where we may
        // (steering already needs CAP_NET_ADMIN), else as much as that allows.
        if set_int(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            STEER_BUFFER as i32,
        )
        .is_err()
            && socket.set_recv_buffer_size(STEER_BUFFER).is_err()
        {
            tracing::debug!("steering socket: SO_RCVBUF refused");
        }
        socket.set_nonblocking(true)?;
        match addr {
            SocketAddr::V4(_) => set_int(&socket, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)?,
            SocketAddr::V6(_) => {
                set_int(&socket, libc::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, 1)?;
                // A dual-stack socket (media on `::`) reports IPv4 datagrams at the IP level.
                let _ = set_int(&socket, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1);
            }
        }
        socket.bind(&addr.into())?;
        let fd = u64::from(socket.as_raw_fd() as u32);
        map_update(&self.sockets, worker as u32, &fd)?;
        Ok(socket.into())
    }

    /// Steers datagrams for `port` to worker `worker`'s socket.
    fn steer(&self, port: u16, worker: usize) -> io::Result<()> {
        map_update(&self.ports, u32::from(port), &(worker as u32 + 1))
    }

    /// Leaves datagrams for `port` to the ordinary lookup again.
    fn unsteer(&self, port: u16) -> io::Result<()> {
        map_update(&self.ports, u32::from(port), &0u32)
    }
}

fn set_int(socket: &Socket, level: libc::c_int, name: libc::c_int, value: i32) -> io::Result<()> {
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A worker's end of steering, for either driver: its steering socket, and which of its
/// sockets holds each port (the datagram is that socket's from then on).
pub(crate) struct SteerSocket {
    steering: Arc<Steering>,
    pub(crate) socket: UdpSocket,
    worker: usize,
    /// Per local port: the token of this worker's socket bound to it, or `NO_TOKEN`.
    port_token: Box<[u32]>,
}

const NO_TOKEN: u32 = u32::MAX;

impl SteerSocket {
    pub(crate) fn open(steering: Arc<Steering>, worker: usize) -> io::Result<SteerSocket> {
        Ok(SteerSocket {
            socket: steering.worker_socket(worker)?,
            steering,
            worker,
            port_token: vec![NO_TOKEN; PORTS as usize].into_boxed_slice(),
        })
    }

    /// Socket `token` holds `port`: steer its datagrams here. Not fatal if the kernel
    /// refuses: the socket itself receives what is not steered.
    pub(crate) fn add(&mut self, port: u16, token: usize) {
        if port == 0 {
            return;
        }
        self.port_token[usize::from(port)] = token as u32;
        if let Err(e) = self.steering.steer(port, self.worker) {
            tracing::warn!(worker = self.worker, port, "steering a port failed: {e}");
        }
    }

    /// `port`'s socket is about to close: stop steering it (before anyone can bind it).
    pub(crate) fn remove(&mut self, port: u16) {
        if port == 0 {
            return;
        }
        if let Err(e) = self.steering.unsteer(port) {
            tracing::warn!(worker = self.worker, port, "unsteering a port failed: {e}");
        }
        self.port_token[usize::from(port)] = NO_TOKEN;
    }

    /// The token of the socket a steered datagram was meant for, from its control messages.
    #[inline]
    pub(crate) fn token(&self, control: &[u8]) -> Option<usize> {
        let token = self.port_token[usize::from(original_port(control)?)];
        (token != NO_TOKEN).then_some(token as usize)
    }

    /// Books `n` datagrams delivered through this socket.
    #[inline]
    pub(crate) fn count(&self, n: u64) {
        self.steering.count(self.worker, n);
    }
}

/// The destination port in an `IP_ORIGDSTADDR` / `IPV6_ORIGDSTADDR` control message among
/// `control` (a received msghdr's control bytes).
fn original_port(control: &[u8]) -> Option<u16> {
    const HDR: usize = mem::size_of::<libc::cmsghdr>();
    let mut rest = control;
    while rest.len() >= HDR {
        // SAFETY: at least a cmsghdr's worth of bytes; read unaligned.
        let h: libc::cmsghdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
        let len = h.cmsg_len;
        if len < HDR || len > rest.len() {
            return None;
        }
        let data = &rest[HDR..len];
        let ours = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_ORIGDSTADDR)
            || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_ORIGDSTADDR);
        // sockaddr_in and sockaddr_in6 both keep the port, big-endian, at bytes 2..4.
        if ours && data.len() >= 4 {
            return Some(u16::from_be_bytes([data[2], data[3]]));
        }
        let step = len.div_ceil(mem::size_of::<usize>()) * mem::size_of::<usize>();
        rest = rest.get(step..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    /// Where the sandbox refuses BPF (no CAP_BPF, or an old kernel), say so and skip.
    fn attach_or_skip(ip: IpAddr) -> Option<Steering> {
        match Steering::attach(ip, (1024, 65535), 1) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("skipping: sk_lookup steering unavailable here: {e}");
                None
            }
        }
    }

    fn recv_with_port(socket: &UdpSocket) -> (Vec<u8>, Option<u16>) {
        let mut buf = [0u8; 256];
        let mut control = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: plain C data; all-zero is valid.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = control.len();
        // SAFETY: the msghdr points at live buffers of the sizes given.
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut hdr, 0) };
        assert!(n >= 0, "recvmsg: {}", io::Error::last_os_error());
        (
            buf[..n as usize].to_vec(),
            original_port(&control[..hdr.msg_controllen]),
        )
    }

    #[test]
    fn steered_port_arrives_on_the_worker_socket_with_its_port() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let Some(steering) = attach_or_skip(ip) else {
            return;
        };
        let worker = steering.worker_socket(0).unwrap();
        worker
            .set_nonblocking(false)
            .and_then(|()| worker.set_read_timeout(Some(Duration::from_secs(5))))
            .unwrap();
        let leg = UdpSocket::bind("127.0.0.1:0").unwrap();
        leg.set_nonblocking(true).unwrap();
        let port = leg.local_addr().unwrap().port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();

        steering.steer(port, 0).unwrap();
        peer.send_to(b"steered", ("127.0.0.1", port)).unwrap();
        assert_eq!(recv_with_port(&worker), (b"steered".to_vec(), Some(port)));
        let mut buf = [0u8; 16];
        assert!(leg.recv(&mut buf).is_err(), "the leg's socket got nothing");

        // Unsteered, the port's own socket receives again.
        steering.unsteer(port).unwrap();
        leg.set_nonblocking(false).unwrap();
        leg.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        peer.send_to(b"direct", ("127.0.0.1", port)).unwrap();
        assert_eq!(leg.recv(&mut buf).unwrap(), 6);
    }

    /// Media on `::` (dual stack): an IPv4 datagram to a steered port is never lost. Where
    /// the kernel assigns it to the IPv6 steering socket, its port comes with it; where it
    /// refuses, the leg's own socket has it.
    #[test]
    fn dual_stack_ipv4_datagram_arrives_with_its_port_or_at_the_leg() {
        let Some(steering) = attach_or_skip(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)) else {
            return;
        };
        let worker = steering.worker_socket(0).unwrap();
        let Ok(leg) = UdpSocket::bind("[::]:0") else {
            eprintln!("skipping: no IPv6 here");
            return;
        };
        let port = leg.local_addr().unwrap().port();
        steering.steer(port, 0).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"v4", ("127.0.0.1", port)).unwrap();
        let mut fds = [worker.as_raw_fd(), leg.as_raw_fd()].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two live pollfds; a 5 s bound on a broken test.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, 5000) };
        assert!(ready > 0, "the datagram arrived somewhere");
        if fds[0].revents & libc::POLLIN != 0 {
            worker.set_nonblocking(false).unwrap();
            assert_eq!(recv_with_port(&worker), (b"v4".to_vec(), Some(port)));
        } else {
            let mut buf = [0u8; 4];
            assert_eq!(leg.recv(&mut buf).unwrap(), 2);
        }
        steering.unsteer(port).unwrap();
    }

    #[test]
    fn other_local_addresses_are_not_steered() {
        let Some(steering) = attach_or_skip(IpAddr::V4(Ipv4Addr::LOCALHOST)) else {
            return;
        };
        let _worker = steering.worker_socket(0).unwrap();
        // Bound to 127.0.0.2, a loopback address that is not the media address.
        let other = UdpSocket::bind("127.0.0.2:0").unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let port = other.local_addr().unwrap().port();
        steering.steer(port, 0).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"x", ("127.0.0.2", port)).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(other.recv(&mut buf).unwrap(), 1);
        steering.unsteer(port).unwrap();
    }

    #[test]
    fn original_port_is_found_after_other_control_messages_and_not_in_garbage() {
        const HDR: usize = mem::size_of::<libc::cmsghdr>();
        let mut bytes = Vec::new();
        let mut push = |level: i32, kind: i32, data: &[u8]| {
            let h = libc::cmsghdr {
                cmsg_len: HDR + data.len(),
                cmsg_level: level,
                cmsg_type: kind,
            };
            // SAFETY: cmsghdr is plain data; viewed as its bytes.
            let raw: [u8; HDR] = unsafe { mem::transmute(h) };
            bytes.extend_from_slice(&raw);
            bytes.extend_from_slice(data);
            while bytes.len() % 8 != 0 {
                bytes.push(0);
            }
        };
        push(libc::SOL_SOCKET, libc::SO_TIMESTAMP, &[0; 16]);
        push(
            libc::SOL_IP,
            libc::IP_ORIGDSTADDR,
            &[2, 0, 0x4e, 0x20, 127, 0, 0, 1],
        );
        assert_eq!(original_port(&bytes), Some(20000));
        assert_eq!(original_port(&bytes[..HDR + 3]), None);
        assert_eq!(original_port(&[0xff; 40]), None);
        assert_eq!(original_port(&[]), None);
    }
}
