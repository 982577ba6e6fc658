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
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::batch::{MAX_DATAGRAM, TxBatch};
use crate::forwarder::{SocketRef, Upcoming};
use crate::steer::SteerSocket;
use crate::sys::{read_sockaddr, udp_gso_supported};
use crate::worker::{Change, Flow, LegClosed, Mirrors, Received, WorkerCore};

mod bufring;
mod probe;
mod send;

use bufring::BufRing;
pub(crate) use probe::{probe, probe_send_to};
use send::SendSlots;

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
        let waiting = Instant::now();
        // Parked: other workers wake this one for what they mirror to it (else they need not).
        let may_sleep = core.park();
        match deadline {
            _ if !d.cqes.is_empty() || !may_sleep => d.submit_and_wait(0)?,
            None => d.submit_and_wait(1)?,
            Some(t) => match t.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => d.wait_for_more(1, left)?,
                _ => d.submit_and_wait(0)?,
            },
        }
        core.unpark();
        let mut woke = core.load.waited(waiting);
        d.reap();
        // Adaptive batching: when the previous round carried several datagrams, traffic is
        // steady, so wait (boundedly) for more before handling this round. An isolated packet
        // never waits: a single-datagram round turns batching off until the next burst.
        // A round that holds anything but datagrams (a command, a close) does not wait.
        if !core.batch_wait.is_zero()
            && last_round >= 2
            && d.cqes.len() < BATCH_TARGET
            && d.cqes.iter().all(is_datagram)
            && core.park()
        {
            d.arm_breakers(core.wake.raw())?;
            let waiting = Instant::now();
            d.wait_for_more(BATCH_TARGET - d.cqes.len(), core.batch_wait)?;
            core.unpark();
            woke = core.load.waited(waiting);
            d.reap();
        }
        // Datagrams only: a round of commands, cancels and closes (session churn, no media)
        // must not make the next round wait, or every `close_leg` pays for the wait.
        last_round = d.cqes.iter().filter(|c| is_datagram(c)).count();
        // Only what is here now: completions reaped while flushing wait for the next round.
        d.look_ahead();
        core.begin_round(&d.ahead, woke);
        // Until a command changes which port is whose, the round's steered datagrams keep
        // the socket `look_ahead` found for them.
        let mut resolved = true;
        for i in 0..d.ahead.len() {
            core.next_in_round(&d.ahead, i);
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
        // Other workers' publishers' packets for listeners here; commands queued before them
        // first (whether or not their wake-up was reaped yet).
        loop {
            match core.forward_mirrored(&mut d.tx) {
                Mirrors::Done => break,
                Mirrors::Flush => d.flush(&core)?,
                Mirrors::Commands => {
                    d.flush(&core)?;
                    if apply_commands(&mut core, &mut d, &mut changes)? == Flow::Shutdown {
                        return Ok(());
                    }
                }
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
        let send = SendSlots::new();
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
        if core.needs_room(at, &self.tx) {
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
        let received = match parsed {
            Ok((_, _, true, _)) => Received::Truncated,
            Ok((offset, n, false, Some(src))) => {
                let buf = self.bufs.buf_mut(bid, len);
                Received::Datagram {
                    src,
                    data: &mut buf[offset..offset + n],
                }
            }
            Ok((_, _, false, None)) | Err(()) => Received::Malformed,
        };
        core.forward(at, received, &mut self.tx);
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
