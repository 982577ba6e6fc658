//! The kernel-stack baseline: the least a forwarder can do. One pinned thread, one socket,
//! recvmmsg a batch of 64, sendmmsg each datagram back to where it came from, unchanged.
//! Whatever Sluice spends per packet above this is its own cost.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::procstat::CpuSource;
use crate::sys::{self, MmsgBatch};

/// Receive timeout, so the thread notices `stop` while idle.
const IDLE: Duration = Duration::from_millis(50);

pub struct Reflector {
    addr: SocketAddr,
    tid: u32,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Reflector {
    /// Binds `ip:0` and starts reflecting, pinned to `cpu` when given.
    pub fn start(
        ip: std::net::IpAddr,
        cpu: Option<usize>,
        buffer_bytes: usize,
    ) -> io::Result<Reflector> {
        let sock = sys::bind_udp(SocketAddr::new(ip, 0), buffer_bytes)?;
        sock.set_read_timeout(Some(IDLE))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("reflector".into())
            .spawn(move || {
                if let Some(cpu) = cpu
                    && let Err(e) = sys::pin_current_thread(cpu)
                {
                    eprintln!("reflector: could not pin to cpu {cpu}: {e}");
                }
                let _ = tid_tx.send(sys::gettid());
                reflect(&sock, &flag)
            })?;
        let tid = tid_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| io::Error::other("reflector thread did not start"))?;
        Ok(Reflector {
            addr,
            tid,
            stop,
            thread,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The reflector thread's CPU clock.
    pub fn cpu(&self) -> CpuSource {
        CpuSource::OwnThread(self.tid)
    }

    /// Stops the thread; returns how many datagrams it sent back.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn reflect(sock: &UdpSocket, stop: &AtomicBool) -> u64 {
    let mut batch = MmsgBatch::new();
    let mut reflected = 0;
    while !stop.load(Ordering::Relaxed) {
        match batch.recv(sock, true) {
            Ok(0) => {}
            Ok(_) => reflected += batch.reflect(sock).0 as u64,
            Err(e) => {
                eprintln!("reflector: {e}");
                break;
            }
        }
    }
    reflected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_come_back_unchanged() {
        let r = Reflector::start("127.0.0.1".parse().unwrap(), None, 1 << 20).unwrap();
        let me = UdpSocket::bind("127.0.0.1:0").unwrap();
        me.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            me.send_to(&[i; 20], r.addr()).unwrap();
            let (n, from) = me.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&[i; 20][..], r.addr()));
        }
        assert!(r.cpu().cpu_ns().is_ok());
        assert_eq!(r.stop(), 5);
    }
}
