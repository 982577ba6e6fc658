//! The send path: the transmit batch leaves as one send SQE per datagram (IORING_OP_SEND
//! with a destination where the kernel has it) or one sendmsg per UDP GSO run, all submitted
//! together and waited for, so the batch can be reused at once.

use std::io;
use std::mem;
use std::os::fd::RawFd;
use std::ptr;

use io_uring::{opcode, types};

use super::{Driver, KIND_SEND, TX_CAPACITY, user_data};
use crate::api::DropReason;
use crate::rawsend;
use crate::sys::{SegmentCmsg, write_sockaddr};
use crate::worker::WorkerCore;

/// sendmsg arguments, one per transmit slot, allocated once.
pub(super) struct SendSlots {
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::msghdr]>,
    cmsgs: Box<[SegmentCmsg]>,
    /// Datagrams the send of slot `i` carries (more than one: a GSO run from `i` on).
    segments: Box<[usize]>,
}

impl SendSlots {
    /// Every slot's arguments, allocated once.
    pub(super) fn new() -> Self {
        // SAFETY: plain C data; all-zero is valid (null pointers, zero lengths).
        let zero_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        SendSlots {
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
        }
    }
}

impl Driver {
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
    pub(super) fn flush(&mut self, core: &WorkerCore) -> io::Result<()> {
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
