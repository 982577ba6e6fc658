//! recvmmsg/sendmmsg driver over epoll: the fallback where io_uring is missing or blocked.
//!
//! Each round: wait for readiness, drain every ready socket in batches of `BATCH` datagrams
//! (bounded rounds per socket, for fairness), forward into the transmit batch, send it with
//! one sendmmsg per run of datagrams leaving the same socket (UDP GSO for runs to one
//! destination), then apply queued commands. With port steering ([`crate::steer`]) the
//! worker's steering socket is one more ready socket: its datagrams belong to the leg socket
//! their original destination port names.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::Instant;

use crate::api::DropReason;
use crate::batch::{MAX_DATAGRAM, TxBatch};
use crate::forwarder::{SocketRef, Upcoming};
use crate::rawsend;
use crate::steer::SteerSocket;
use crate::sys::{SegmentCmsg, read_sockaddr, udp_gso_supported, write_sockaddr};
use crate::worker::{Change, Flow, Mirrors, Received, WorkerCore};

/// Datagrams per recvmmsg call.
const BATCH: usize = 64;
/// recvmmsg calls per ready socket per round before others get a turn.
const ROUNDS_PER_SOCKET: usize = 8;
/// Datagrams queued for sending before a flush is forced.
const TX_CAPACITY: usize = 1024;
/// epoll data value of the wake-up eventfd.
const WAKE_TOKEN: u64 = u64::MAX;
/// epoll data value of the steering socket.
const STEER_TOKEN: u64 = u64::MAX - 1;
/// Control bytes per received datagram: one `IP(V6)_ORIGDSTADDR` message, with room.
const CONTROL_LEN: usize = 64;

pub(crate) fn run(mut core: WorkerCore) -> io::Result<()> {
    // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we own.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nobody else.
    let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
    epoll_ctl(
        epoll.as_raw_fd(),
        libc::EPOLL_CTL_ADD,
        core.wake.raw(),
        WAKE_TOKEN,
    )?;

    let mut rx = RxBatch::new();
    let mut ahead: Vec<Upcoming> = Vec::with_capacity(BATCH);
    let mut tx = TxBatch::new(TX_CAPACITY);
    let mut sender = Sender::new(TX_CAPACITY);
    let mut changes = Vec::new();
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut steer = match core
        .steering
        .clone()
        .map(|s| SteerSocket::open(s, core.index))
    {
        Some(Ok(st)) => {
            epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                st.socket.as_raw_fd(),
                STEER_TOKEN,
            )?;
            Some(st)
        }
        Some(Err(e)) => {
            tracing::warn!(worker = core.index, "no steering socket: {e}");
            None
        }
        None => None,
    };
    // When the forwarder next has work of its own (reports, REMB, checks).
    let mut deadline: Option<Instant> = None;

    loop {
        let waiting = Instant::now();
        // Parked: other workers wake this one for what they mirror to it (else they need not).
        let timeout = if core.park() { wait_ms(deadline) } else { 0 };
        // SAFETY: `ready` is a live array of `ready.len()` epoll_events.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                ready.as_mut_ptr(),
                ready.len() as i32,
                timeout,
            )
        };
        core.unpark();
        core.load.waited(waiting);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Commands first: one posted before these datagrams were sent must apply to them.
        if ready[..n as usize].iter().any(|ev| ev.u64 == WAKE_TOKEN)
            && apply_commands(
                &mut core,
                epoll.as_raw_fd(),
                &mut changes,
                &mut tx,
                &mut steer,
            )? == Flow::Shutdown
        {
            return Ok(());
        }
        for ev in &ready[..n as usize] {
            let token = ev.u64;
            if token == WAKE_TOKEN {
                continue;
            }
            let steered = token == STEER_TOKEN;
            for _ in 0..ROUNDS_PER_SOCKET {
                if core.has_msgs() {
                    sender.flush(&core, &mut tx);
                    if apply_commands(
                        &mut core,
                        epoll.as_raw_fd(),
                        &mut changes,
                        &mut tx,
                        &mut steer,
                    )? == Flow::Shutdown
                    {
                        return Ok(());
                    }
                }
                let fd = if steered {
                    steer.as_ref().map(|st| st.socket.as_raw_fd())
                } else {
                    core.fd(token as usize)
                };
                let Some(fd) = fd else { break };
                let got = rx.recv(fd, steered);
                // Which leg each datagram is for, first: handling one prefetches for those
                // behind it (`Forwarder::prefetch_ahead`).
                ahead.clear();
                for i in 0..got {
                    let at = match &steer {
                        // A port no live socket of ours holds (its leg closed while the
                        // datagram was queued) loses it, as the closed socket would have.
                        Some(st) if steered => match st.token(rx.control(i)) {
                            Some(t) if core.fd(t).is_some() => Some(SocketRef::from_token(t)),
                            _ => None,
                        },
                        _ => Some(SocketRef::from_token(token as usize)),
                    };
                    ahead.push(at.map_or(Upcoming::NONE, |at| Upcoming::new(at, rx.payload(i))));
                }
                if steered && let Some(st) = &steer {
                    st.count(ahead.iter().filter(|u| u.socket().is_some()).count() as u64);
                }
                if got > 0 {
                    // Each batch of an epoll round arrived at its own time.
                    core.begin_round(&ahead, Instant::now());
                }
                for i in 0..got {
                    core.next_in_round(&ahead, i);
                    let Some(at) = ahead[i].socket() else {
                        continue;
                    };
                    if core.needs_room(at, &tx) {
                        sender.flush(&core, &mut tx);
                    }
                    let received = match rx.get(i) {
                        (_, _, true) => Received::Truncated,
                        (Some(src), data, false) => Received::Datagram { src, data },
                        (None, _, false) => Received::Malformed,
                    };
                    core.forward(at, received, &mut tx);
                }
                if got < BATCH {
                    break;
                }
            }
        }
        // Other workers' publishers' packets for listeners here; commands queued before them
        // first (whether or not their wake-up was seen yet).
        loop {
            match core.forward_mirrored(&mut tx) {
                Mirrors::Done => break,
                Mirrors::Flush => sender.flush(&core, &mut tx),
                Mirrors::Commands => {
                    sender.flush(&core, &mut tx);
                    if apply_commands(
                        &mut core,
                        epoll.as_raw_fd(),
                        &mut changes,
                        &mut tx,
                        &mut steer,
                    )? == Flow::Shutdown
                    {
                        return Ok(());
                    }
                }
            }
        }
        deadline = core.handle_timers(&mut tx);
        sender.flush(&core, &mut tx);
        core.flush_events();
    }
}

/// epoll's timeout until `deadline`: rounded up to whole milliseconds (never early), -1 for
/// none.
fn wait_ms(deadline: Option<Instant>) -> i32 {
    deadline.map_or(-1, |d| {
        let left = d.saturating_duration_since(Instant::now());
        left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    })
}

/// Drains the command queue and (un)registers sockets. The transmit batch must be empty: it
/// names sockets by token.
fn apply_commands(
    core: &mut WorkerCore,
    epfd: RawFd,
    changes: &mut Vec<Change>,
    tx: &mut TxBatch,
    steer: &mut Option<SteerSocket>,
) -> io::Result<Flow> {
    core.wake.drain();
    let flow = core.apply_msgs(changes, tx);
    for change in changes.drain(..) {
        match change {
            Change::Added { token, fd, port } => {
                epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, token as u64)?;
                if let Some(st) = steer {
                    st.add(port, token);
                }
            }
            Change::Removed { socket, done, .. } => {
                // Before the socket closes: its port may be bound again, by anyone.
                if let (Some(st), Ok(addr)) = (steer.as_mut(), socket.local_addr()) {
                    st.remove(addr.port());
                }
                let _ = epoll_ctl(epfd, libc::EPOLL_CTL_DEL, socket.as_raw_fd(), 0);
                drop(socket);
                // Finishes the leg's closing, if this was its last socket.
                drop(done);
            }
        }
    }
    Ok(flow)
}

fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: `ev` is a live epoll_event; the kernel copies it.
    let rc = unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Receive-side arrays for recvmmsg, allocated once. Boxed so the self-referential pointers
/// (headers → iovecs → buffers) stay valid.
struct RxBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    names: Box<[libc::sockaddr_storage]>,
    controls: Box<[[u8; CONTROL_LEN]]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

impl RxBatch {
    fn new() -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C data; all-zero is valid.
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let mut rx = RxBatch {
            bufs: vec![[0u8; MAX_DATAGRAM]; BATCH].into_boxed_slice(),
            names: vec![zero_name; BATCH].into_boxed_slice(),
            controls: vec![[0u8; CONTROL_LEN]; BATCH].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            // SAFETY: as above.
            hdrs: (0..BATCH)
                .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
                .collect(),
        };
        for i in 0..BATCH {
            rx.iovs[i] = libc::iovec {
                iov_base: rx.bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            let h = &mut rx.hdrs[i].msg_hdr;
            h.msg_name = (&mut rx.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut rx.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = rx.controls[i].as_mut_ptr().cast();
        }
        rx
    }

    /// One recvmmsg, with control messages where `control` (the steering socket); returns
    /// how many datagrams arrived (0 on EAGAIN or error).
    fn recv(&mut self, fd: RawFd, control: bool) -> usize {
        for h in self.hdrs.iter_mut() {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = if control { CONTROL_LEN } else { 0 };
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at live buffers owned by `self` for the whole call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n < 0 { 0 } else { n as usize }
    }

    /// The control messages of datagram `i` of the last `recv`.
    fn control(&self, i: usize) -> &[u8] {
        let len = self.hdrs[i].msg_hdr.msg_controllen.min(CONTROL_LEN);
        &self.controls[i][..len]
    }

    /// Datagram `i` of the last `recv`, read-only.
    fn payload(&self, i: usize) -> &[u8] {
        &self.bufs[i][..(self.hdrs[i].msg_len as usize).min(MAX_DATAGRAM)]
    }

    /// Datagram `i` of the last `recv`: source, payload (mutable: SRTP decrypts in place),
    /// whether the kernel truncated it.
    fn get(&mut self, i: usize) -> (Option<std::net::SocketAddr>, &mut [u8], bool) {
        let h = &self.hdrs[i];
        let namelen =
            (h.msg_hdr.msg_namelen as usize).min(mem::size_of::<libc::sockaddr_storage>());
        // SAFETY: the kernel wrote `namelen` bytes of address into names[i].
        let name = unsafe {
            std::slice::from_raw_parts(
                (&self.names[i] as *const libc::sockaddr_storage).cast::<u8>(),
                namelen,
            )
        };
        let len = (h.msg_len as usize).min(MAX_DATAGRAM);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (read_sockaddr(name), &mut self.bufs[i][..len], truncated)
    }
}

/// The socket a send leaves from: its leg's, or a raw one (`rawsend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaves {
    Leg(SocketRef),
    Raw(RawFd),
}

fn iovec_of(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    }
}

/// Send-side arrays for sendmmsg, allocated once. `names`/`iovs` are per transmit slot;
/// `hdrs`, `cmsgs` and `segments` per send (one slot, or a GSO run of several).
struct Sender {
    names: Vec<libc::sockaddr_storage>,
    namelens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    cmsgs: Vec<SegmentCmsg>,
    /// Datagrams each header carries.
    segments: Vec<usize>,
    /// Per header: the leg whose datagram it carries (drops are booked on it).
    owners: Vec<crate::forwarder::Slot>,
    /// Per header: the socket it leaves from.
    routes: Vec<Leaves>,
    /// The kernel takes UDP GSO sends: runs of datagrams for one destination leave as one.
    gso: bool,
}

impl Sender {
    fn new(capacity: usize) -> Self {
        // SAFETY: plain C data, all-zero is valid.
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        Sender {
            names: vec![zero_name; capacity],
            namelens: vec![0; capacity],
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ],
            // SAFETY: as above.
            hdrs: (0..capacity)
                .map(|_| unsafe { mem::zeroed::<libc::mmsghdr>() })
                .collect(),
            cmsgs: vec![SegmentCmsg::new(); capacity],
            segments: vec![1; capacity],
            owners: vec![0; capacity],
            routes: vec![Leaves::Raw(-1); capacity],
            gso: udp_gso_supported(),
        }
    }

    /// Sends everything queued, one sendmmsg per run of datagrams from the same socket; with
    /// GSO, one header per run of datagrams for the same destination within it. Datagrams the
    /// raw socket can send (`rawsend`) leave from it, so runs span legs.
    fn flush(&mut self, core: &WorkerCore, tx: &mut TxBatch) {
        let n = tx.len();
        let mut i = 0;
        let mut h = 0;
        while i < n {
            let (via, dest, len) = {
                let (via, dest, data) = tx.get(i);
                (via, dest, data.len())
            };
            let k = if self.gso { tx.gso_run(i) } else { 1 };
            let raw = (k == 1)
                .then(|| core.raw_route(via.token(), &dest, len))
                .flatten()
                .and_then(|route| Some((route, core.raw.as_ref()?.fd(&route)?)));
            let to = raw.map_or(dest, |(route, _)| route.to());
            self.namelens[i] = write_sockaddr(&to, &mut self.names[i]);
            if let Some((route, _)) = &raw {
                let frame = tx.frame(i, |f| rawsend::write_headers(f, route));
                self.iovs[i] = iovec_of(frame);
            } else {
                for j in i..i + k {
                    self.iovs[j] = iovec_of(tx.get(j).2);
                }
            }
            let hdr = &mut self.hdrs[h].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.namelens[i];
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = k;
            if k > 1 {
                self.cmsgs[h].attach(hdr, len);
            } else {
                hdr.msg_control = ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            self.segments[h] = k;
            self.owners[h] = via.slot;
            self.routes[h] = raw.map_or(Leaves::Leg(via), |(_, fd)| Leaves::Raw(fd));
            h += 1;
            i += k;
        }
        let mut first = 0;
        while first < h {
            let route = self.routes[first];
            let mut end = first + 1;
            while end < h && self.routes[end] == route {
                end += 1;
            }
            let fd = match route {
                Leaves::Raw(fd) => Some(fd),
                Leaves::Leg(via) => core.fd(via.token()),
            };
            match fd {
                Some(fd) => {
                    // Booked before the send, as the peer may answer before it returns.
                    if let (Leaves::Raw(_), Some(raw)) = (route, &core.raw) {
                        raw.count((end - first) as u64);
                    }
                    self.send_run(core, fd, first, end);
                }
                None => {
                    for j in first..end {
                        for _ in 0..self.segments[j] {
                            core.fwd.count_drop(self.owners[j], DropReason::SendFailed);
                        }
                    }
                }
            }
            first = end;
        }
        tx.clear();
    }

    /// Sends headers `start..end` on `fd`; what the kernel refuses is counted as dropped.
    fn send_run(&mut self, core: &WorkerCore, fd: RawFd, mut start: usize, end: usize) {
        while start < end {
            // SAFETY: headers start..end point at `names`/`iovs`/`cmsgs` entries filled above
            // and at transmit buffers that live until `tx.clear()`.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs[start..].as_mut_ptr(),
                    (end - start) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                start += rc as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // A full socket buffer drops the rest of the run; any other error drops one send
            // and moves on (e.g. an unreachable destination).
            let lost = if err.kind() == io::ErrorKind::WouldBlock {
                end - start
            } else {
                1
            };
            for j in start..start + lost {
                for _ in 0..self.segments[j] {
                    core.fwd.count_drop(self.owners[j], DropReason::SendFailed);
                }
            }
            start += lost;
        }
    }
}
