//! What this kernel and sandbox allow: io_uring at all (multishot recvmsg over a provided
//! buffer ring), and IORING_OP_SEND with a destination address.

use std::io;
use std::mem;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, Probe, cqueue, opcode, types};

use super::bufring::BufRing;
use super::{BGID, new_ring, recv_template};
use crate::sys::write_sockaddr;

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
