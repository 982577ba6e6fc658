//! io_uring driver: one ring per worker thread, created on it and never shared.
//!
//! Receive: one provided buffer ring shared by all of the worker's sockets and one multishot
//! recvmsg per socket; a receive that ends (no `MORE` flag, e.g. `-ENOBUFS` when the buffer ring
//! ran dry) is re-armed. Commands: a multishot poll on the worker's eventfd. Send: after each
//! batch of completions, one send per queued datagram (one sendmsg with UDP GSO for a run of
//! datagrams to the same destination), all submitted together and waited for,
//! so the transmit batch can be reused at once. Completions that arrive meanwhile are kept, in
//! order, for the next round. Behaves like [`crate::mmsg`]: same drops, same flush points.
//!
//! Steering (where [`crate::steer`] is attached): the worker also has one socket to which the
//! kernel delivers every datagram for the worker's ports, with its original destination; the
//! port names the leg socket it was meant for, and from there on it is that socket's datagram.
//! Leg sockets stay armed for whatever is not steered.
//!
//! `user_data` = kind (top 8 bits) | generation (24 bits) | token or transmit slot (32 bits).
//! A socket's generation changes whenever its token is reused, so completions of a removed
//! socket's receive are recognised as stale.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};

use crate::api::DropReason;
use crate::batch::{MAX_DATAGRAM, TxBatch};
use crate::forwarder::{PREFETCH_DEPTH, SocketRef, Upcoming};
use crate::rawsend;
use crate::steer::SteerSocket;
use crate::sys::{SegmentCmsg, read_sockaddr, udp_gso_supported, write_sockaddr};
use crate::worker::{Change, Flow, LegClosed, WorkerCore};

/// Submission queue depth (the transmit batch is flushed through it in chunks if larger).
const SQ_ENTRIES: u32 = 1024;
/// Completion queue depth: every buffer plus a full transmit batch, with room to spare.
const CQ_ENTRIES: u32 = 4096;
/// Provided buffers: count (a power of two) and size of each.
const BUF_COUNT: u16 = 1024;
const BUF_SIZE: usize = 2048;
/// Buffer group id of the receive buffer ring.
const BGID: u16 = 0;
/// Datagrams queued for sending before a flush is forced (as in mmsg).
const TX_CAPACITY: usize = 1024;
/// Completions one batched round aims for before its bounded wait ends.
const BATCH_TARGET: usize = 64;
/// Receives that end in an error (other than `-ENOBUFS`) in a row before a socket is given up.
const MAX_RECV_FAILURES: u8 = 16;

const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;
const KIND_STEER: u64 = 5;
/// One-shot polls on the wake eventfd that end a bounded wait (see `Driver::breakers`).
const KIND_BREAK: u64 = 6;
const GEN_MASK: u32 = 0x00FF_FFFF;

fn user_data(kind: u64, generation: u32, index: usize) -> u64 {
    (kind << 56) | (u64::from(generation & GEN_MASK) << 32) | (index as u64 & 0xFFFF_FFFF)
}

fn kind_of(ud: u64) -> u64 {
    ud >> 56
}

fn generation_of(ud: u64) -> u32 {
    (ud >> 32) as u32 & GEN_MASK
}

fn index_of(ud: u64) -> usize {
    (ud & 0xFFFF_FFFF) as usize
}

/// Checks that this kernel and sandbox let the worker run on io_uring: creates a tiny ring,
/// registers a buffer ring and receives one datagram with a multishot recvmsg over loopback.
pub(crate) fn probe() -> Result<(), String> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if disabled == "2" {
        return Err("disabled by kernel.io_uring_disabled = 2".into());
    }
    let ring = new_ring(8, 16).map_err(|e| match disabled.as_str() {
        "1" => format!(
            "io_uring_setup: {e} (kernel.io_uring_disabled = 1 limits it to io_uring_group)"
        ),
        _ => format!("io_uring_setup: {e}"),
    })?;
    let mut ops = Probe::new();
    ring.submitter()
        .register_probe(&mut ops)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "recvmsg"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ] {
        if !ops.is_supported(code) {
            return Err(format!("the kernel lacks the {name} operation"));
        }
    }
    let mut bufs = BufRing::new(2, 256).map_err(|e| format!("mmap: {e}"))?;
    bufs.register(&ring)
        .map_err(|e| format!("provided buffer ring refused (kernel < 5.19?): {e}"))?;
    let result = probe_multishot_recv(ring, &bufs);
    // `ring` was consumed (and closed) above, so the buffer memory can go.
    drop(bufs);
    result
}

/// Sends one datagram to a loopback socket and receives it through a multishot recvmsg.
fn probe_multishot_recv(mut ring: IoUring, bufs: &BufRing) -> Result<(), String> {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        // No loopback to try it on: the checks above have to do.
        return Ok(());
    };
    if socket
        .local_addr()
        .and_then(|addr| socket.send_to(b"probe", addr))
        .is_err()
    {
        return Ok(());
    }
    let hdr = recv_template();
    let sqe = opcode::RecvMsgMulti::new(types::Fd(socket.as_raw_fd()), &hdr, BGID)
        .build()
        .user_data(1);
    // SAFETY: `hdr` and `socket` outlive the ring (dropped after it, below); the buffers live
    // in `bufs`, which the caller drops after the ring.
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return Err("submission queue full on a fresh ring".into());
    }
    let timeout = types::Timespec::new().sec(1);
    let args = types::SubmitArgs::new().timespec(&timeout);
    let outcome = match ring.submitter().submit_with_args(1, &args) {
        Err(e) if e.raw_os_error() == Some(libc::ETIME) => {
            Err("a multishot recvmsg received nothing in 1 s".into())
        }
        Err(e) => Err(format!("io_uring_enter: {e}")),
        Ok(_) => match ring.completion().next() {
            Some(cqe) if cqe.result() >= 0 && cqueue::buffer_select(cqe.flags()).is_some() => {
                let bid = cqueue::buffer_select(cqe.flags()).unwrap_or(0);
                let data = bufs.buf(bid, cqe.result() as usize);
                match types::RecvMsgOut::parse(data, &hdr) {
                    Ok(out) if out.payload_data() == b"probe" => Ok(()),
                    _ => Err("a multishot recvmsg returned an unexpected layout".into()),
                }
            }
            Some(cqe) => Err(format!(
                "multishot recvmsg failed (kernel < 6.0?): {}",
                io::Error::from_raw_os_error(-cqe.result())
            )),
            None => Err("a multishot recvmsg completed with nothing".into()),
        },
    };
    drop(ring);
    drop(socket);
    outcome
}

/// Whether IORING_OP_SEND takes a destination address on this kernel (6.0+; older ones
/// refuse the SQE with EINVAL): one datagram between two loopback sockets on the fresh `ring`
/// tells. Any doubt means no, and the driver keeps using sendmsg.
pub(crate) fn probe_send_to(ring: &mut IoUring) -> bool {
    let (Ok(from), Ok(to)) = (
        UdpSocket::bind("127.0.0.1:0"),
        UdpSocket::bind("127.0.0.1:0"),
    ) else {
        return false;
    };
    let Ok(dest) = to.local_addr() else {
        return false;
    };
    // SAFETY: plain C data; all-zero is valid.
    let mut probe = Box::new((
        unsafe { mem::zeroed::<libc::sockaddr_storage>() },
        *b"probe",
    ));
    let namelen = write_sockaddr(&dest, &mut probe.0);
    let sqe = opcode::Send::new(types::Fd(from.as_raw_fd()), probe.1.as_ptr(), 5)
        .flags(libc::MSG_DONTWAIT)
        .dest_addr((&probe.0 as *const libc::sockaddr_storage).cast())
        .dest_addr_len(namelen)
        .build()
        .user_data(u64::MAX);
    // SAFETY: the address and payload are in `probe`, which is freed only once the send has
    // completed and leaked otherwise (below).
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return false;
    }
    let timeout = types::Timespec::new().sec(1);
    let args = types::SubmitArgs::new().timespec(&timeout);
    let completed = ring.submitter().submit_with_args(1, &args).is_ok();
    let cqe = ring.completion().next();
    if cqe.is_none() {
        // Still in flight (never seen on loopback): the kernel may yet read `probe`.
        Box::leak(probe);
        return false;
    }
    let sent = completed && matches!(cqe, Some(cqe) if cqe.result() == 5);
    let mut buf = [0u8; 8];
    to.set_nonblocking(true).is_ok() && sent && matches!(to.recv(&mut buf), Ok(5))
}

/// Creates a ring tuned for one thread, falling back to plainer setups on older kernels.
fn new_ring(sq: u32, cq: u32) -> io::Result<IoUring> {
    let tuned = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_submit_all()
        .setup_cqsize(cq)
        .build(sq);
    match tuned {
        Ok(ring) => Ok(ring),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::debug!("io_uring refused single-issuer/defer-taskrun ({e}); plain setup");
            IoUring::builder().setup_cqsize(cq).build(sq)
        }
        Err(e) => Err(e),
    }
}

/// The msghdr a multishot recvmsg is armed with: room for an IPv6 source, no control data.
fn recv_template() -> libc::msghdr {
    // SAFETY: msghdr is plain C data; all-zero is a valid value (null pointers, zero lengths).
    let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
    hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    hdr
}

/// The steering socket's template: also room for one `IP(V6)_ORIGDSTADDR` control message.
fn steer_template() -> libc::msghdr {
    let mut hdr = recv_template();
    // SAFETY: CMSG_SPACE only computes an aligned size.
    hdr.msg_controllen =
        unsafe { libc::CMSG_SPACE(mem::size_of::<libc::sockaddr_in6>() as u32) } as usize;
    hdr
}

/// The worker's steering socket with the msghdr its receive is armed with.
struct Steer {
    socket: SteerSocket,
    hdr: Box<libc::msghdr>,
    failures: u8,
}

/// A provided buffer ring (`IORING_REGISTER_PBUF_RING`): `count` ring entries followed by
/// `count` buffers of `size` bytes, in one anonymous mapping that outlives its registration.
struct BufRing {
    base: *mut u8,
    map_len: usize,
    ring_len: usize,
    count: u16,
    size: usize,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
}

/// `struct io_uring_buf`: the first entry's `resv` field is the ring's tail.
#[repr(C)]
struct RingEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

impl BufRing {
    fn new(count: u16, size: usize) -> io::Result<Self> {
        debug_assert!(count.is_power_of_two());
        // Buffers start on a 4 KiB boundary after the ring; mmap page-aligns the ring itself.
        let page = 4096;
        let ring_len = (usize::from(count) * mem::size_of::<RingEntry>()).div_ceil(page) * page;
        let map_len = ring_len + usize::from(count) * size;
        // SAFETY: anonymous private mapping, no fd or address hint; checked for MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            base: base.cast(),
            map_len,
            ring_len,
            count,
            size,
            tail: 0,
        };
        for bid in 0..count {
            ring.provide(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Registers the ring as buffer group `BGID` of `ring`. The mapping must outlive `ring`.
    fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: `base` is a page-aligned mapping of `count` entries that lives until `self`
        // is dropped; callers drop the IoUring first.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(self.base as u64, self.count, BGID, 0)
        }
    }

    /// Hands buffer `bid` (back) to the kernel; visible after the next [`BufRing::publish`].
    #[inline]
    fn provide(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, inside the ring part of the mapping. The kernel reads only the
        // entries between its head and the published tail, never this one; only `addr`, `len`
        // and `bid` are written, so entry 0's `resv` (the tail) is left alone.
        unsafe {
            let entry = self.base.cast::<RingEntry>().add(index);
            ptr::addr_of_mut!((*entry).addr)
                .write(self.base as u64 + (self.ring_len + usize::from(bid) * self.size) as u64);
            ptr::addr_of_mut!((*entry).len).write(self.size as u32);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the entries written since the last call (release store of the tail).
    #[inline]
    fn publish(&self) {
        // SAFETY: the tail is entry 0's `resv`, a u16 at offset 14 of a page-aligned mapping,
        // which the kernel only reads (with acquire semantics).
        let tail = unsafe {
            AtomicU16::from_ptr(ptr::addr_of_mut!((*self.base.cast::<RingEntry>()).resv))
        };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which the kernel filled and handed to us.
    #[inline]
    /// Buffer `bid` as the kernel filled it, for in-place edits before it is provided again.
    fn buf_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        if bid >= self.count {
            return &mut [];
        }
        // SAFETY: as in `buf`; `&mut self` makes this the only view of the buffer.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.add(self.ring_len + usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }

    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.count {
            return &[];
        }
        // SAFETY: the range lies inside buffer `bid` of the mapping; the kernel no longer writes
        // to it until it is provided again, which needs `&mut self`.
        unsafe {
            std::slice::from_raw_parts(
                self.base.add(self.ring_len + usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; nothing refers to it any more.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

/// The driver's view of one socket token.
#[derive(Clone, Copy, Debug, Default)]
struct SockState {
    generation: u32,
    /// The token currently names a socket of `core.sockets`.
    live: bool,
    /// A multishot receive for (token, generation) is in flight.
    armed: bool,
    failures: u8,
}

/// A removed socket kept open until its receive is known to be over.
struct Closing {
    recv_ud: u64,
    socket: UdpSocket,
    /// Removals are grouped per `done` (a leg's two sockets); see `Driver::apply`.
    group: u64,
}

/// sendmsg arguments, one per transmit slot, allocated once.
struct SendSlots {
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::msghdr]>,
    cmsgs: Box<[SegmentCmsg]>,
    /// Datagrams the send of slot `i` carries (more than one: a GSO run from `i` on).
    segments: Box<[usize]>,
}

/// Field order is drop order: the ring goes first, so the kernel lets go of the buffer
/// memory, the msghdrs and the sockets being closed before they are freed.
struct Driver {
    ring: IoUring,
    bufs: BufRing,
    steer: Option<Steer>,
    recv_hdr: Box<libc::msghdr>,
    send: SendSlots,
    tx: TxBatch,
    socks: Vec<SockState>,
    closing: Vec<Closing>,
    /// Closings waiting for their group's sockets to close.
    dones: Vec<(u64, LegClosed)>,
    group: u64,
    /// Completions reaped but not handled yet, oldest first (sends are not queued here).
    cqes: VecDeque<cqueue::Entry>,
    /// What each completion of the round being handled is for (`Forwarder::prefetch_ahead`).
    ahead: Vec<Upcoming>,
    /// Sends submitted and not completed yet.
    sends_in_flight: usize,
    /// Transmit slots whose send failed, booked by `flush`.
    failed_sends: Vec<usize>,
    /// The kernel takes a destination on IORING_OP_SEND (6.0+): a datagram then needs no
    /// msghdr for the kernel to copy in and parse, ≈ 4 % less CPU per egress packet in fanout.
    send_to: bool,
    /// The kernel takes UDP GSO sends: a run of datagrams for one destination leaves as one.
    gso: bool,
    /// One-shot polls on the wake eventfd armed now. A bounded wait ends after a number of
    /// completions, whatever they are: with `BATCH_TARGET` of these armed, a command fires
    /// them all and ends any wait at once, so commands never wait for the batching bound.
    /// Armed only before a bounded wait (steady traffic) and re-armed after a command.
    breakers: usize,
}

pub(crate) fn run(mut core: WorkerCore) -> io::Result<()> {
    let mut d = Driver::new()?;
    d.arm_wake(core.wake.raw())?;
    if let Some(steering) = core.steering.clone() {
        match SteerSocket::open(steering, core.index) {
            Ok(socket) => {
                d.steer = Some(Steer {
                    socket,
                    hdr: Box::new(steer_template()),
                    failures: 0,
                });
                d.arm_steer()?;
            }
            Err(e) => tracing::warn!(worker = core.index, "no steering socket: {e}"),
        }
    }
    let mut changes = Vec::new();
    // Commands may have been queued before the ring existed.
    if apply_commands(&mut core, &mut d, &mut changes)? == Flow::Shutdown {
        return Ok(());
    }
    let mut last_round = 0usize;
    // When the forwarder next has work of its own (reports, REMB, checks).
    let mut deadline: Option<Instant> = None;
    loop {
        // Sleep only with nothing to handle, and only until the forwarder's next deadline.
        match deadline {
            _ if !d.cqes.is_empty() => d.submit_and_wait(0)?,
            None => d.submit_and_wait(1)?,
            Some(t) => match t.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => d.wait_for_more(1, left)?,
                _ => d.submit_and_wait(0)?,
            },
        }
        d.reap();
        // Adaptive batching: when the previous round carried several datagrams, traffic is
        // steady, so wait (boundedly) for more before handling this round. An isolated packet
        // never waits: a single-datagram round turns batching off until the next burst.
        // A round that holds anything but datagrams (a command, a close) does not wait.
        if !core.batch_wait.is_zero()
            && last_round >= 2
            && d.cqes.len() < BATCH_TARGET
            && d.cqes.iter().all(is_datagram)
        {
            d.arm_breakers(core.wake.raw())?;
            d.wait_for_more(BATCH_TARGET - d.cqes.len(), core.batch_wait)?;
            d.reap();
        }
        // Datagrams only: a round of commands, cancels and closes (session churn, no media)
        // must not make the next round wait, or every `close_leg` pays for the wait.
        last_round = d.cqes.iter().filter(|c| is_datagram(c)).count();
        // One clock read per batch: the arrival time of recorded packets.
        core.fwd.set_now(Instant::now());
        // Only what is here now: completions reaped while flushing wait for the next round.
        d.look_ahead();
        for i in -(PREFETCH_DEPTH as isize)..0 {
            core.fwd.prefetch_ahead(&d.ahead, i);
        }
        // Until a command changes which port is whose, the round's steered datagrams keep
        // the socket `look_ahead` found for them.
        let mut resolved = true;
        for i in 0..d.ahead.len() {
            core.fwd.prefetch_ahead(&d.ahead, i as isize);
            let Some(cqe) = d.cqes.pop_front() else { break };
            match kind_of(cqe.user_data()) {
                KIND_RECV => d.on_recv(&mut core, &cqe)?,
                KIND_STEER => {
                    let known = resolved.then_some(d.ahead[i]);
                    d.on_steered(&mut core, &cqe, known)?
                }
                KIND_WAKE => {
                    if !cqueue::more(cqe.flags()) {
                        d.arm_wake(core.wake.raw())?;
                    }
                    // Completions are in arrival order: a command posted before a datagram
                    // was sent takes effect before that datagram is forwarded.
                    d.flush(&core)?;
                    if apply_commands(&mut core, &mut d, &mut changes)? == Flow::Shutdown {
                        return Ok(());
                    }
                    resolved = false;
                }
                // `reap` accounts for sends; cancels need no answer.
                _ => {}
            }
        }
        deadline = core.handle_timers(&mut d.tx);
        d.flush(&core)?;
        core.flush_events();
    }
}

/// A received datagram (it took a provided buffer), not a command, close or cancel.
fn is_datagram(c: &cqueue::Entry) -> bool {
    cqueue::buffer_select(c.flags()).is_some()
}

/// Drains the command queue; the transmit batch must be empty (it names sockets by token).
fn apply_commands(
    core: &mut WorkerCore,
    d: &mut Driver,
    changes: &mut Vec<Change>,
) -> io::Result<Flow> {
    core.wake.drain();
    let flow = core.apply_msgs(changes, &mut d.tx);
    for change in changes.drain(..) {
        d.apply(change)?;
    }
    Ok(flow)
}

impl Driver {
    fn new() -> io::Result<Self> {
        let mut ring = new_ring(SQ_ENTRIES, CQ_ENTRIES)?;
        let send_to = probe_send_to(&mut ring);
        let mut bufs = BufRing::new(BUF_COUNT, BUF_SIZE)?;
        bufs.register(&ring)?;
        // SAFETY: plain C data; all-zero is valid (null pointers, zero lengths).
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let send = SendSlots {
            names: vec![zero_name; TX_CAPACITY].into_boxed_slice(),
            iovs: vec![
                libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0
                };
                TX_CAPACITY
            ]
            .into_boxed_slice(),
            // SAFETY: as above.
            hdrs: (0..TX_CAPACITY)
                .map(|_| unsafe { mem::zeroed::<libc::msghdr>() })
                .collect(),
            cmsgs: vec![SegmentCmsg::new(); TX_CAPACITY].into_boxed_slice(),
            segments: vec![1; TX_CAPACITY].into_boxed_slice(),
        };
        Ok(Driver {
            ring,
            bufs,
            steer: None,
            recv_hdr: Box::new(recv_template()),
            send,
            tx: TxBatch::new(TX_CAPACITY),
            socks: Vec::new(),
            closing: Vec::new(),
            dones: Vec::new(),
            send_to,
            gso: udp_gso_supported(),
            breakers: 0,
            group: 0,
            cqes: VecDeque::with_capacity(2 * CQ_ENTRIES as usize),
            ahead: Vec::with_capacity(2 * CQ_ENTRIES as usize),
            sends_in_flight: 0,
            failed_sends: Vec::with_capacity(TX_CAPACITY),
        })
    }

    /// Queues `sqe`, submitting first if the submission queue is full.
    ///
    /// # Safety
    /// Every pointer in `sqe` must stay valid until its last completion is reaped.
    unsafe fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.submit_and_wait(0)?;
            self.reap();
        }
    }

    /// Publishes returned buffers, submits, and waits for `want` completions. Interruptions
    /// and a busy completion queue are not errors: the caller reaps and comes back.
    fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        self.bufs.publish();
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until `want` more completions arrived or `timeout` passed, whichever is first.
    fn wait_for_more(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        self.bufs.publish();
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves completions off the ring: sends are accounted for at once, the rest queued.
    fn reap(&mut self) {
        for cqe in self.ring.completion() {
            match kind_of(cqe.user_data()) {
                KIND_SEND => {}
                // Its work is done: the wait it ended is over. The wake poll's own
                // completion carries the command.
                KIND_BREAK => {
                    self.breakers = self.breakers.saturating_sub(1);
                    continue;
                }
                _ => {
                    self.cqes.push_back(cqe);
                    continue;
                }
            }
            self.sends_in_flight = self.sends_in_flight.saturating_sub(1);
            if cqe.result() < 0 {
                self.failed_sends.push(index_of(cqe.user_data()));
            }
        }
    }

    /// Tops the wait breakers up to `BATCH_TARGET` (see `breakers`).
    fn arm_breakers(&mut self, fd: RawFd) -> io::Result<()> {
        while self.breakers < BATCH_TARGET {
            let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .build()
                .user_data(user_data(KIND_BREAK, 0, 0));
            // SAFETY: a poll holds no pointers; the eventfd lives in `WorkerCore` for the
            // whole run.
            unsafe { self.push(&sqe) }?;
            self.breakers += 1;
        }
        Ok(())
    }

    fn arm_wake(&mut self, fd: RawFd) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(KIND_WAKE, 0, 0));
        // SAFETY: a poll holds no pointers; the eventfd lives in `WorkerCore` for the whole run.
        unsafe { self.push(&sqe) }
    }

    fn arm_recv(&mut self, token: usize, fd: RawFd) -> io::Result<()> {
        let generation = self.socks[token].generation;
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_hdr, BGID)
            .build()
            .user_data(user_data(KIND_RECV, generation, token));
        // SAFETY: `recv_hdr` is boxed and lives as long as the ring; buffers come from `bufs`,
        // which too outlives the ring; the socket stays open (in `core.sockets`, then in
        // `closing`) until this receive's final completion.
        unsafe { self.push(&sqe)? };
        self.socks[token].armed = true;
        Ok(())
    }

    fn arm_steer(&mut self) -> io::Result<()> {
        let Some(st) = &self.steer else { return Ok(()) };
        let fd = st.socket.socket.as_raw_fd();
        let sqe = opcode::RecvMsgMulti::new(types::Fd(fd), &*st.hdr, BGID)
            .build()
            .user_data(user_data(KIND_STEER, 0, 0));
        // SAFETY: the socket and `hdr` live in `steer`, dropped after the ring; the buffers
        // come from `bufs`, which outlives the ring too.
        unsafe { self.push(&sqe) }
    }

    fn apply(&mut self, change: Change) -> io::Result<()> {
        match change {
            Change::Added { token, fd, port } => {
                if self.socks.len() <= token {
                    self.socks.resize(token + 1, SockState::default());
                }
                let s = &mut self.socks[token];
                s.generation = s.generation.wrapping_add(1) & GEN_MASK;
                s.live = true;
                s.failures = 0;
                self.arm_recv(token, fd)?;
                if let Some(st) = &mut self.steer {
                    st.socket.add(port, token);
                }
            }
            Change::Removed {
                token,
                socket,
                done,
            } => {
                // Before the socket closes: its port may be bound again, by anyone.
                if let (Some(st), Ok(addr)) = (&mut self.steer, socket.local_addr()) {
                    st.socket.remove(addr.port());
                }
                let group = self.group;
                match self.socks.get_mut(token) {
                    Some(s) if s.live && s.armed => {
                        s.live = false;
                        s.armed = false;
                        let recv_ud = user_data(KIND_RECV, s.generation, token);
                        let sqe = opcode::AsyncCancel::new(recv_ud)
                            .build()
                            .user_data(user_data(KIND_CANCEL, 0, 0));
                        // SAFETY: a cancel holds no pointers.
                        unsafe { self.push(&sqe)? };
                        self.closing.push(Closing {
                            recv_ud,
                            socket,
                            group,
                        });
                    }
                    Some(s) => {
                        s.live = false;
                        drop(socket);
                    }
                    None => drop(socket),
                }
                // `done` comes with a leg's last socket: it waits for the whole group.
                if let Some(done) = done {
                    self.group += 1;
                    if self.closing.iter().any(|c| c.group == group) {
                        self.dones.push((group, done));
                    } else {
                        drop(done);
                    }
                }
            }
        }
        Ok(())
    }

    /// The final completion of a removed socket's receive: close it, answer `close_leg`.
    fn finish_closing(&mut self, recv_ud: u64) {
        let Some(i) = self.closing.iter().position(|c| c.recv_ud == recv_ud) else {
            return;
        };
        let closed = self.closing.swap_remove(i);
        drop(closed.socket);
        let closing = &self.closing;
        // A closing is finished by dropping it.
        self.dones
            .retain(|(group, _)| closing.iter().any(|c| c.group == *group));
    }

    fn on_recv(&mut self, core: &mut WorkerCore, cqe: &cqueue::Entry) -> io::Result<()> {
        let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
        let token = index_of(ud);
        let live = self
            .socks
            .get(token)
            .is_some_and(|s| s.live && s.generation == generation_of(ud));
        if let Some(bid) = cqueue::buffer_select(flags) {
            if live && res >= 0 {
                self.deliver(core, token, bid, res as usize, false)?;
                self.socks[token].failures = 0;
            }
            self.bufs.provide(bid);
        }
        if cqueue::more(flags) {
            return Ok(());
        }
        if !live {
            self.finish_closing(ud);
            return Ok(());
        }
        // The multishot receive ended: re-arm it, unless the socket keeps failing.
        self.socks[token].armed = false;
        if res < 0 && res != -libc::ENOBUFS {
            let s = &mut self.socks[token];
            s.failures += 1;
            let err = io::Error::from_raw_os_error(-res);
            if s.failures >= MAX_RECV_FAILURES {
                tracing::error!(
                    worker = core.index,
                    token,
                    "giving up receiving on a socket: {err}"
                );
                return Ok(());
            }
            tracing::warn!(worker = core.index, token, "multishot recvmsg ended: {err}");
        }
        match core.fd(token) {
            Some(fd) => self.arm_recv(token, fd),
            None => Ok(()),
        }
    }

    /// Notes which leg and payload type each datagram of the round is for, so that handling
    /// one can prefetch for those behind it.
    fn look_ahead(&mut self) {
        self.ahead.clear();
        for cqe in &self.cqes {
            let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let upcoming = match (cqueue::buffer_select(flags), kind_of(ud)) {
                (Some(bid), kind @ (KIND_RECV | KIND_STEER))
                    if res >= 0 && (kind == KIND_RECV || self.steer.is_some()) =>
                {
                    let data = self.bufs.buf(bid, res as usize);
                    let steer = self.steer.as_ref().filter(|_| kind == KIND_STEER);
                    let hdr = steer.map_or(&*self.recv_hdr, |st| &*st.hdr);
                    types::RecvMsgOut::parse(data, hdr)
                        .ok()
                        .and_then(|out| {
                            let token = match steer {
                                Some(st) => st.socket.token(out.control_data())?,
                                None => index_of(ud),
                            };
                            Some(Upcoming::new(
                                SocketRef::from_token(token),
                                out.payload_data(),
                            ))
                        })
                        .unwrap_or(Upcoming::NONE)
                }
                _ => Upcoming::NONE,
            };
            self.ahead.push(upcoming);
        }
    }

    /// Hands the datagram in buffer `bid` (`len` bytes, received by the steering socket or
    /// by socket `token` itself) to the forwarder as one received on socket `token`.
    fn deliver(
        &mut self,
        core: &mut WorkerCore,
        token: usize,
        bid: u16,
        len: usize,
        steered: bool,
    ) -> io::Result<()> {
        let at = SocketRef::from_token(token);
        if self.tx.remaining() < core.fwd.fanout(at.slot) {
            self.flush(core)?;
        }
        let hdr = match &self.steer {
            Some(st) if steered => &*st.hdr,
            _ => &*self.recv_hdr,
        };
        let data = self.bufs.buf(bid, len);
        let base = data.as_ptr() as usize;
        // Where the payload sits in the buffer, so it can be borrowed mutably (SRTP
        // decrypts in place).
        let parsed = types::RecvMsgOut::parse(data, hdr).map(|out| {
            let payload = out.payload_data();
            let truncated = out.is_payload_truncated() || payload.len() > MAX_DATAGRAM;
            let src = read_sockaddr(out.name_data());
            (
                payload.as_ptr() as usize - base,
                payload.len(),
                truncated,
                src,
            )
        });
        match parsed {
            Ok((_, _, true, _)) => core.fwd.count_drop(at.slot, DropReason::Truncated),
            Ok((offset, n, false, Some(src))) => {
                let buf = self.bufs.buf_mut(bid, len);
                let payload = &mut buf[offset..offset + n];
                core.fwd.handle_datagram(at, src, payload, &mut self.tx)
            }
            Ok((_, _, false, None)) | Err(()) => {
                core.fwd.count_drop(at.slot, DropReason::Malformed)
            }
        }
        Ok(())
    }

    /// A completion of the steering socket's receive: the datagram's original destination
    /// port names the socket it was meant for (`known`: as `look_ahead` found it, while no
    /// command has changed the ports since).
    fn on_steered(
        &mut self,
        core: &mut WorkerCore,
        cqe: &cqueue::Entry,
        known: Option<Upcoming>,
    ) -> io::Result<()> {
        let (res, flags) = (cqe.result(), cqe.flags());
        let Some(st) = &self.steer else { return Ok(()) };
        if let Some(bid) = cqueue::buffer_select(flags) {
            if res >= 0 {
                let token = match known {
                    Some(u) => u.socket().map(SocketRef::token),
                    None => {
                        let data = self.bufs.buf(bid, res as usize);
                        types::RecvMsgOut::parse(data, &st.hdr)
                            .ok()
                            .and_then(|out| st.socket.token(out.control_data()))
                    }
                };
                // A port no live socket of ours holds (its leg closed while the datagram was
                // queued) loses the datagram, as the closed socket's queue would have.
                if let Some(token) = token
                    && self.socks.get(token).is_some_and(|s| s.live)
                {
                    st.socket.count(1);
                    self.deliver(core, token, bid, res as usize, true)?;
                }
            }
            self.bufs.provide(bid);
        }
        if cqueue::more(flags) {
            return Ok(());
        }
        let Some(st) = &mut self.steer else {
            return Ok(());
        };
        if res < 0 && res != -libc::ENOBUFS {
            st.failures += 1;
            let err = io::Error::from_raw_os_error(-res);
            if st.failures >= MAX_RECV_FAILURES {
                // Closing the socket takes it out of the sockmap: from then on the program
                // finds no target and every leg socket receives its own datagrams again.
                tracing::error!(worker = core.index, "giving up the steering socket: {err}");
                self.steer = None;
                return Ok(());
            }
            tracing::warn!(worker = core.index, "steering recvmsg ended: {err}");
        } else {
            st.failures = 0;
        }
        self.arm_steer()
    }

    /// Queues one `IORING_OP_SEND` of `len` bytes at `bytes` from `fd` to `dest`, as transmit
    /// slot `i` (its address is kept in slot `i` of `send`).
    ///
    /// # Safety
    /// The bytes must stay valid and unchanged until the send's completion is reaped.
    unsafe fn push_send_to(
        &mut self,
        fd: RawFd,
        bytes: *const u8,
        len: u32,
        i: usize,
        dest: &std::net::SocketAddr,
    ) -> io::Result<()> {
        let s = &mut self.send;
        let namelen = write_sockaddr(dest, &mut s.names[i]);
        s.segments[i] = 1;
        let sqe = opcode::Send::new(types::Fd(fd), bytes, len)
            .flags(libc::MSG_DONTWAIT)
            .dest_addr((&s.names[i] as *const libc::sockaddr_storage).cast())
            .dest_addr_len(namelen)
            .build()
            .user_data(user_data(KIND_SEND, 0, i));
        // SAFETY: the address is slot `i` of `send`, which only the next flush rewrites, and
        // the caller vouches for the bytes.
        unsafe { self.push(&sqe)? };
        self.sends_in_flight += 1;
        Ok(())
    }

    /// Sends everything in `tx` (one send per datagram, or per GSO run of datagrams for one
    /// destination), waits for all of it, then clears `tx`.
    fn flush(&mut self, core: &WorkerCore) -> io::Result<()> {
        let mut i = 0;
        while i < self.tx.len() {
            let (via, dest, len) = {
                let (via, dest, data) = self.tx.get(i);
                (via, dest, data.len())
            };
            let run = if self.gso { self.tx.gso_run(i) } else { 1 };
            if run == 1
                && self.send_to
                && let Some(raw) = &core.raw
                && let Some(route) = core.raw_route(via.token(), &dest, len)
                && let Some(fd) = raw.fd(&route)
            {
                let frame = self.tx.frame(i, |f| rawsend::write_headers(f, &route));
                let (bytes, len) = (frame.as_ptr(), frame.len() as u32);
                // SAFETY: slot `i` of `tx`, headroom included, stays as it is until this
                // send's completion is reaped below.
                unsafe { self.push_send_to(fd, bytes, len, i, &route.to())? };
                raw.count(1);
                i += 1;
                continue;
            }
            let (_, _, data) = self.tx.get(i);
            let Some(fd) = core.fd(via.token()) else {
                for _ in 0..run {
                    core.fwd.count_drop(via.slot, DropReason::SendFailed);
                }
                i += run;
                continue;
            };
            if run == 1 && self.send_to {
                let (bytes, len) = (data.as_ptr(), data.len() as u32);
                // SAFETY: the bytes are slot `i` of `tx`, unchanged until this send's
                // completion is reaped below.
                unsafe { self.push_send_to(fd, bytes, len, i, &dest)? };
                i += 1;
                continue;
            }
            let s = &mut self.send;
            let namelen = write_sockaddr(&dest, &mut s.names[i]);
            s.segments[i] = run;
            for j in i..i + run {
                let bytes = self.tx.get(j).2;
                s.iovs[j] = libc::iovec {
                    iov_base: bytes.as_ptr() as *mut libc::c_void,
                    iov_len: bytes.len(),
                };
            }
            let h = &mut s.hdrs[i];
            h.msg_name = (&mut s.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut s.iovs[i];
            h.msg_iovlen = run;
            if run > 1 {
                s.cmsgs[i].attach(h, data.len());
            } else {
                h.msg_control = ptr::null_mut();
                h.msg_controllen = 0;
            }
            let sqe = opcode::SendMsg::new(types::Fd(fd), &s.hdrs[i])
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(user_data(KIND_SEND, 0, i));
            // SAFETY: the msghdr, control message, iovecs and address are slots `i..i + run`
            // of `send`, the bytes slots of `tx`; none changes before this send's completion
            // is reaped below.
            unsafe { self.push(&sqe)? };
            self.sends_in_flight += 1;
            i += run;
        }
        while self.sends_in_flight > 0 {
            self.submit_and_wait(1)?;
            self.reap();
        }
        for &i in &self.failed_sends {
            for j in i..(i + self.send.segments[i]).min(self.tx.len()) {
                core.fwd
                    .count_drop(self.tx.get(j).0.slot, DropReason::SendFailed);
            }
        }
        self.failed_sends.clear();
        self.tx.clear();
        Ok(())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Stop every receive before the ring closes, so nothing lands in the buffers after.
        let timeout = types::Timespec::new().nsec(100_000_000);
        let _ = self
            .ring
            .submitter()
            .register_sync_cancel(Some(timeout), types::CancelBuilder::any());
        self.closing.clear();
        self.dones.clear();
    }
}

#[cfg(test)]
mod tests;
