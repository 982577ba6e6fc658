//! The io_uring kernel-stack baseline, next to [`crate::reflector`]'s recvmmsg/sendmmsg one:
//! one pinned thread, one socket, one ring. A multishot recvmsg fills buffers from a provided
//! buffer ring; each datagram goes back unchanged to its source with an `IORING_OP_SEND` whose
//! payload and destination address both point into that same buffer (so nothing is copied),
//! and the buffer returns to the ring when the send completes. Each round submits and waits
//! for 64 completions or 2 ms (`IORING_ENTER_EXT_ARG`), whichever comes first.
//!
//! Latency is about a round: a datagram goes back at the next submit. And with DEFER_TASKRUN
//! the kernel wakes the waiter lazily, counting queued requests rather than completions; one
//! multishot receive is one request, so a round often lasts the full 2 ms (p50 ≈ 1.3 ms at
//! 100k pkt/s on the 2-core VM, against ≈ 60 µs for the recvmmsg reflector).
//!
//! Deliberately minimal and independent of sluice-dataplane's io_uring driver: no fallbacks
//! beyond a plainer ring setup, so a kernel without multishot recvmsg (6.0) or
//! `IORING_OP_SEND` with an address (6.0) makes it fail, loudly. Besides [`crate::sys`], the
//! only module with `unsafe`: the ring and its buffers.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use io_uring::{IoUring, Submitter, cqueue, opcode, squeue, types};

use crate::procstat::CpuSource;
use crate::sys;

/// Completions one round waits for, and for how long at most.
const BATCH: usize = 64;
const WAIT: Duration = Duration::from_millis(2);
/// Provided buffers (a power of two) and their size: a 1472-byte datagram plus the
/// `io_uring_recvmsg_out` header and the source address fit.
const BUF_COUNT: u16 = 1024;
const BUF_SIZE: usize = 2048;
const BGID: u16 = 0;
/// Every buffer can be in one send at a time: the submission queue holds a round's worth of
/// sends and the completion queue every completion that can be outstanding, with room to spare.
const SQ_ENTRIES: u32 = 2048;
const CQ_ENTRIES: u32 = 4096;
/// `user_data` of the receive; a send's is its buffer id.
const RECV: u64 = u64::MAX;
/// How long stopping waits for the kernel to let go of the buffers.
const CANCEL_TIMEOUT: Duration = Duration::from_millis(100);

pub struct ReflectorUring {
    addr: SocketAddr,
    tid: u32,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl ReflectorUring {
    /// Binds `ip:0` and starts reflecting, pinned to `cpu` when given. Fails if this kernel
    /// (or sandbox) refuses the ring or the buffer ring.
    pub fn start(
        ip: IpAddr,
        cpu: Option<usize>,
        buffer_bytes: usize,
    ) -> io::Result<ReflectorUring> {
        Self::with_buffers(ip, cpu, buffer_bytes, BUF_COUNT)
    }

    fn with_buffers(
        ip: IpAddr,
        cpu: Option<usize>,
        buffer_bytes: usize,
        buffers: u16,
    ) -> io::Result<ReflectorUring> {
        let sock = sys::bind_udp(SocketAddr::new(ip, 0), buffer_bytes)?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("reflector-uring".into())
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(e) = sys::pin_current_thread(cpu)
                {
                    eprintln!("reflector-uring: could not pin to cpu {cpu}: {e}");
                }
                // Created here, after pinning: with SINGLE_ISSUER only this thread may submit.
                let mut uring = match Uring::new(buffers) {
                    Ok(u) => u,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return 0;
                    }
                };
                let _ = ready_tx.send(Ok(sys::gettid()));
                uring
                    .reflect(sock.as_raw_fd(), &flag)
                    .unwrap_or_else(|(e, n)| {
                        eprintln!("reflector-uring: {e}");
                        n
                    })
                // `uring` drops before `sock`: the socket outlives every request on it.
            })?;
        let tid = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| {
                // Should it start after all, it stops after one round.
                stop.store(true, Ordering::Relaxed);
                io::Error::other("reflector-uring thread did not start")
            })??;
        Ok(ReflectorUring {
            addr,
            tid,
            stop,
            thread,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The reflector thread's CPU clock (the ring's work runs on it: DEFER_TASKRUN).
    pub fn cpu(&self) -> CpuSource {
        CpuSource::OwnThread(self.tid)
    }

    /// Stops the thread (within one wait, 2 ms); returns how many datagrams it sent back.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Field order is drop order: the ring closes before the buffer memory goes.
struct Uring {
    ring: IoUring,
    bufs: BufRing,
    /// The receive's msghdr template (only its name and control lengths matter).
    hdr: Box<libc::msghdr>,
}

impl Uring {
    fn new(buffers: u16) -> io::Result<Uring> {
        let ring = new_ring()?;
        let bufs = BufRing::new(buffers)?;
        // SAFETY: the entries live in `bufs`, which is dropped after `ring` (field order), and
        // after every request is cancelled (`Drop for Uring`) or, failing that, never.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.base as u64, bufs.count, BGID, 0)?;
        }
        // SAFETY: msghdr is plain C data; all-zero is valid (null pointers, zero lengths).
        let mut hdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        Ok(Uring { ring, bufs, hdr })
    }

    /// Reflects until `stop`; the count of datagrams sent back, also with an error.
    fn reflect(&mut self, fd: RawFd, stop: &AtomicBool) -> Result<u64, (io::Error, u64)> {
        let Uring { ring, bufs, hdr } = self;
        let (submitter, mut sq, mut cq) = ring.split();
        let recv = opcode::RecvMsgMulti::new(types::Fd(fd), &**hdr, BGID)
            .build()
            .user_data(RECV);
        let ts = types::Timespec::from(WAIT);
        let args = types::SubmitArgs::new().timespec(&ts);
        let mut reflected = 0u64;
        let mut failed_sends = 0u64;
        // SAFETY: `hdr` and the buffers live as long as the ring; `fd` outlives it (the caller
        // closes the socket after dropping `self`).
        unsafe { push(&submitter, &mut sq, &recv) }.map_err(|e| (e, 0))?;
        while !stop.load(Ordering::Relaxed) {
            bufs.publish();
            sq.sync();
            match submitter.submit_with_args(BATCH, &args) {
                Ok(_) => {}
                Err(e) if transient(&e) => {}
                Err(e) => return Err((e, reflected)),
            }
            cq.sync();
            for cqe in &mut cq {
                let (res, flags) = (cqe.result(), cqe.flags());
                if cqe.user_data() != RECV {
                    // A send: its buffer (the id in `user_data`) goes back to the ring.
                    bufs.provide(cqe.user_data() as u16);
                    if res >= 0 {
                        reflected += 1;
                    } else {
                        if failed_sends == 0 {
                            let e = io::Error::from_raw_os_error(-res);
                            eprintln!("reflector-uring: send failed: {e} (further ones counted)");
                        }
                        failed_sends += 1;
                    }
                    continue;
                }
                if let Some(bid) = cqueue::buffer_select(flags) {
                    let send = (res >= 0)
                        .then(|| send_back(fd, bufs.buf(bid, res as usize), hdr, bid))
                        .flatten();
                    match send {
                        // SAFETY: payload and address lie in buffer `bid`, which is not provided
                        // again before this send's completion (above).
                        Some(sqe) => unsafe { push(&submitter, &mut sq, &sqe) }
                            .map_err(|e| (e, reflected))?,
                        // Truncated or malformed: dropped, the buffer goes straight back.
                        None => bufs.provide(bid),
                    }
                }
                if cqueue::more(flags) {
                    continue;
                }
                // The multishot receive ended: -ENOBUFS when the buffer ring ran dry (buffers
                // return as sends complete), anything else is an error.
                if res < 0 && res != -libc::ENOBUFS {
                    return Err((io::Error::from_raw_os_error(-res), reflected));
                }
                // SAFETY: as for the first arming.
                unsafe { push(&submitter, &mut sq, &recv) }.map_err(|e| (e, reflected))?;
            }
        }
        if failed_sends > 0 {
            eprintln!("reflector-uring: {failed_sends} sends failed");
        }
        Ok(reflected)
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Cancel the receive and any send still waiting for socket space, and wait for them,
        // so the kernel is done with the buffers before they are unmapped.
        let ts = types::Timespec::from(CANCEL_TIMEOUT);
        match self
            .ring
            .submitter()
            .register_sync_cancel(Some(ts), types::CancelBuilder::any())
        {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                eprintln!("reflector-uring: cancelling at stop: {e}; leaking the buffers");
                self.bufs.leak = true;
            }
        }
    }
}

/// The send of a received datagram back to its source: `buf` is the buffer as the multishot
/// receive filled it (header, source address, payload). `None` if it cannot go back unchanged.
fn send_back(fd: RawFd, buf: &[u8], hdr: &libc::msghdr, bid: u16) -> Option<squeue::Entry> {
    let out = types::RecvMsgOut::parse(buf, hdr).ok()?;
    let name = out.name_data();
    if out.is_payload_truncated() || out.is_name_data_truncated() || name.is_empty() {
        return None;
    }
    let payload = out.payload_data();
    Some(
        opcode::Send::new(types::Fd(fd), payload.as_ptr(), payload.len() as u32)
            .dest_addr(name.as_ptr().cast())
            .dest_addr_len(name.len() as libc::socklen_t)
            .build()
            .user_data(u64::from(bid)),
    )
}

/// Queues `sqe`, submitting first if the submission queue is full.
///
/// # Safety
/// Every pointer in `sqe` must stay valid until its last completion is reaped.
unsafe fn push(
    submitter: &Submitter<'_>,
    sq: &mut squeue::SubmissionQueue<'_>,
    sqe: &squeue::Entry,
) -> io::Result<()> {
    // SAFETY: forwarded from the caller.
    while unsafe { sq.push(sqe) }.is_err() {
        sq.sync();
        match submitter.submit() {
            Ok(_) => {}
            Err(e) if transient(&e) => {}
            Err(e) => return Err(e),
        }
        sq.sync();
    }
    Ok(())
}

/// Ends of a wait that are no failure: the timeout, a signal, a full completion queue.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY)
    )
}

/// A ring for one thread (completions are processed only when it waits: DEFER_TASKRUN),
/// or a plain one if the kernel refuses those flags.
fn new_ring() -> io::Result<IoUring> {
    let tuned = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_submit_all()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES);
    match tuned {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES),
        other => other,
    }
}

/// `struct io_uring_buf`; entry 0's `resv` is the ring's tail.
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// A provided buffer ring: `count` entries on their own pages, then `count` buffers of
/// `BUF_SIZE` bytes, in one anonymous mapping.
struct BufRing {
    base: *mut u8,
    map_len: usize,
    ring_len: usize,
    count: u16,
    /// Our tail; the kernel sees it at [`BufRing::publish`].
    tail: u16,
    /// Set if the kernel may still write into the buffers: then they are never unmapped.
    leak: bool,
}

impl BufRing {
    fn new(count: u16) -> io::Result<BufRing> {
        assert!(count.is_power_of_two(), "the kernel wants a power of two");
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let ring_len = (usize::from(count) * mem::size_of::<Entry>()).div_ceil(page) * page;
        let map_len = ring_len + usize::from(count) * BUF_SIZE;
        // SAFETY: an anonymous private mapping, no address hint; checked for MAP_FAILED.
        // Pre-faulted, so no page faults land in a measurement.
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
        let mut bufs = BufRing {
            base: base.cast(),
            map_len,
            ring_len,
            count,
            tail: 0,
            leak: false,
        };
        for bid in 0..count {
            bufs.provide(bid);
        }
        bufs.publish();
        Ok(bufs)
    }

    /// Hands buffer `bid` (back) to the kernel, from the next [`BufRing::publish`] on.
    fn provide(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`, inside the ring pages. The kernel reads only entries between
        // its head and the published tail, never this one; `resv` (entry 0's is the tail) is
        // not written.
        unsafe {
            let entry = self.base.cast::<Entry>().add(index);
            ptr::addr_of_mut!((*entry).addr).write(self.buf_ptr(bid) as u64);
            ptr::addr_of_mut!((*entry).len).write(BUF_SIZE as u32);
            ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the buffers provided since the last call (a release store of the tail).
    fn publish(&self) {
        // SAFETY: entry 0's `resv` is an aligned u16 in the mapping, which the kernel only
        // reads (with acquire semantics); we write it only here.
        let tail =
            unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*self.base.cast::<Entry>()).resv)) };
        tail.store(self.tail, Ordering::Release);
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: `bid < count` (checked by the callers): inside the mapping.
        unsafe { self.base.add(self.ring_len + usize::from(bid) * BUF_SIZE) }
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed to us.
    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        if bid >= self.count {
            return &[];
        }
        // SAFETY: inside buffer `bid`; the kernel does not write to it again until it is
        // provided again, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len.min(BUF_SIZE)) }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: exactly the mapping made in `new`; the ring that used it is closed.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// Kernel-dependent: false (with a message) where io_uring is unavailable. The probe ring
    /// lives on a thread of its own: tearing a ring down later queues task work to the thread
    /// that created it, which interrupts that thread's timed socket calls (EINTR).
    fn io_uring_available() -> bool {
        let probe = thread::spawn(|| IoUring::new(2).map(drop)).join();
        match probe.expect("creating a ring does not panic") {
            Ok(()) => true,
            Err(e) => {
                eprintln!("skipping: io_uring unavailable here: {e}");
                false
            }
        }
    }

    #[test]
    fn datagrams_come_back_unchanged_over_io_uring() {
        if !io_uring_available() {
            return;
        }
        for ip in ["127.0.0.1", "::1"] {
            let Ok(me) = UdpSocket::bind((ip, 0)) else {
                eprintln!("skipping {ip}: no loopback address");
                continue;
            };
            let r = ReflectorUring::start(ip.parse().unwrap(), None, 1 << 20).unwrap();
            me.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2048];
            for (i, len) in [(0u8, 20), (1, 1), (2, 172), (3, 1472), (4, 20)] {
                me.send_to(&vec![i; len], r.addr()).unwrap();
                let (n, from) = me.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (&vec![i; len][..], r.addr()), "{ip}");
            }
            assert!(r.cpu().cpu_ns().is_ok());
            assert_eq!(r.stop(), 5, "{ip}");
        }
    }

    #[test]
    fn a_burst_larger_than_the_buffer_ring_all_comes_back() {
        if !io_uring_available() {
            return;
        }
        // Four buffers for 200 datagrams: each is reused, and the multishot receive runs dry
        // (-ENOBUFS) and is re-armed whenever the burst outpaces the sends.
        let r =
            ReflectorUring::with_buffers("127.0.0.1".parse().unwrap(), None, 1 << 20, 4).unwrap();
        let me = sys::bind_udp("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        me.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for i in 0..200u16 {
            me.send_to(&i.to_be_bytes(), r.addr()).unwrap();
        }
        let mut got: Vec<u16> = (0..200)
            .map(|_| {
                let mut buf = [0u8; 8];
                let (n, from) = me.recv_from(&mut buf).unwrap();
                assert_eq!((n, from), (2, r.addr()));
                u16::from_be_bytes([buf[0], buf[1]])
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert_eq!(r.stop(), 200);
    }
}
